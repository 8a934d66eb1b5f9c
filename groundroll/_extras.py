"""Optional model libraries: which extra installs each, and the error when one is missing.

groundroll's core (rollout, masks, evaluation) needs torch and numpy only; the model
libraries come with extras (``pip install "groundroll[open_clip]"``, ``"groundroll[hf]"``)
because they pin torch and torchvision tightly and would impose those pins on every user.
A call that needs a missing one says which extra to install instead of ending in a bare
``ModuleNotFoundError`` from deep inside a loader.
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["MissingExtraError", "EXTRA_MODULES", "require_extra"]

#: The modules groundroll imports from each model extra, in the order they are checked.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "open_clip": ("open_clip", "tokenizers"),
    "hf": ("transformers", "tokenizers"),
}


class MissingExtraError(ImportError):
    """A model library groundroll needs for this call is not installed.

    The message names the extra that installs it (``pip install "groundroll[hf]"``).
    A subclass of :class:`ImportError`, so ``except ImportError`` still catches it.
    """


def require_extra(extra: str, what: str) -> None:
    """Import the modules of ``extra``, or raise :class:`MissingExtraError` naming it.

    Parameters
    ----------
    extra : str
        A key of :data:`EXTRA_MODULES` (``"open_clip"`` or ``"hf"``).
    what : str
        What needs them, for the message (``"model 'bundled:toy-mt'"``).

    Raises
    ------
    MissingExtraError
        One of the modules cannot be imported; the original error is chained.

    Examples
    --------
    >>> require_extra("hf", "model 'bundled:toy-mt'")     # doctest: +SKIP
    Traceback (most recent call last):
    MissingExtraError: model 'bundled:toy-mt' needs transformers, which is not installed: \
pip install "groundroll[hf]"
    """
    for module in EXTRA_MODULES[extra]:
        try:
            import_module(module)
        except ImportError as err:
            if err.name == module:
                why = "which is not installed"
            else:
                # It is there but does not import: a dependency of its own is missing or
                # too old (torchvision for open_clip). Say what failed, on one line.
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                why = f"which cannot be imported ({reason})"
            raise MissingExtraError(
                f'{what} needs {module}, {why}: pip install "groundroll[{extra}]"') from err

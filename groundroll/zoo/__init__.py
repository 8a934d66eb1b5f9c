"""Model zoo: ``load(name)`` for bundled models, open_clip and Hugging Face models.

Accepted names:

* ``"bundled:NAME"``: a model shipped with groundroll (see :func:`bundled`);
* ``"open_clip:ARCH/TAG"``: open_clip registry weights (``ViT-B-16/openai``);
* ``"open_clip:ARCH@/path/to/checkpoint"``: an open_clip architecture with local weights;
* ``"hf:REPO"``: a Hugging Face hub repository (``Helsinki-NLP/opus-mt-de-en``);
* ``"hf:/path/to/folder"``: a folder written by ``save_pretrained``.

Model libraries are imported only when a model of theirs is loaded.
"""

from __future__ import annotations

from pathlib import Path

from groundroll.zoo.bundle import Bundle

__all__ = ["load", "bundled", "Bundle", "BUNDLED_DIR", "ACCEPTED_FORMS"]

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"

ACCEPTED_FORMS = (
    "'bundled:NAME'",
    "'open_clip:ARCH/TAG'",
    "'open_clip:ARCH@/path/to/checkpoint'",
    "'hf:REPO'",
    "'hf:/path/to/folder'",
)


def bundled() -> list[str]:
    """Names of the bundled models, for ``load("bundled:NAME")``.

    Examples
    --------
    >>> "toy-mt" in bundled()
    True
    """
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if p.is_dir() and any(p.iterdir()))


def _load_bundled(name: str, device: str) -> Bundle:
    path = BUNDLED_DIR / name
    if name not in bundled():
        raise ValueError(f"no bundled model {name!r}; bundled models: {bundled()}")
    # Hugging Face folders have config.json; open_clip folders open_clip_config.json.
    if (path / "config.json").is_file():
        from groundroll.zoo.hf import load_hf

        return load_hf(path, device=device)
    from groundroll.zoo.openclip import load_open_clip_dir

    return load_open_clip_dir(path, device=device)


def load(name: str, *, device: str = "cpu") -> Bundle:
    """Load a model with its tokenizer, preprocess and adapter family.

    Parameters
    ----------
    name : str
        ``"bundled:NAME"``, ``"open_clip:ARCH/TAG"``, ``"open_clip:ARCH@/path"``,
        ``"hf:REPO"`` or ``"hf:/path/to/folder"``.
    device : str
        Torch device for the model.

    Returns
    -------
    Bundle
        The model in eval mode; ``Bundle.name`` is ``name``.

    Raises
    ------
    ValueError
        Unknown form or bundled name; the message lists the accepted forms.
    RuntimeError
        Hub weights are unavailable offline; the message says how to load a local copy.

    Examples
    --------
    >>> from groundroll.zoo import load
    >>> mt = load("bundled:toy-mt")
    >>> mt.adapter, mt.meta["family"]
    ('hf_marian', 'hf_seq2seq')
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    scheme, sep, rest = name.partition(":")
    if not sep or not rest:
        scheme = ""
    if scheme == "bundled":
        bundle = _load_bundled(rest, device)
    elif scheme == "open_clip":
        from groundroll.zoo.openclip import load_open_clip

        bundle = load_open_clip(rest, device=device)
    elif scheme == "hf":
        from groundroll.zoo.hf import load_hf

        bundle = load_hf(rest, device=device)
    else:
        raise ValueError(
            f"cannot load {name!r}: accepted forms are {', '.join(ACCEPTED_FORMS)}; "
            f"bundled models: {bundled()}"
        )
    bundle.name = name
    return bundle

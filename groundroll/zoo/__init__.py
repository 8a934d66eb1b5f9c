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

import threading
from collections import OrderedDict
from pathlib import Path

from groundroll._extras import MissingExtraError, require_extra
from groundroll.zoo.bundle import Bundle
from groundroll.zoo.hf import load_hf
from groundroll.zoo.openclip import load_open_clip, load_open_clip_dir

__all__ = ["load", "cached", "clear_cache", "bundled", "Bundle", "BUNDLED_DIR",
           "ACCEPTED_FORMS", "CACHE_SIZE", "MissingExtraError"]

#: Most models :func:`cached` keeps loaded at once (least recently used dropped first).
CACHE_SIZE = 4

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
        require_extra("hf", f"the bundled model 'bundled:{name}'")
        return _quiet(load_hf, path, device=device)
    require_extra("open_clip", f"the bundled model 'bundled:{name}'")
    return load_open_clip_dir(path, device=device)


def _quiet(loader, *args, **kwargs):
    """Run ``loader`` with transformers' per-load progress bars and info logs off.

    transformers 5 shows a "Loading weights" bar for every ``from_pretrained``; for
    the tiny bundled models it is noise. The switch is transformers' own and is put
    back as it was.
    """
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return loader(*args, **kwargs)
    with _QUIET_LOCK:
        was_enabled = hf_logging.is_progress_bar_enabled()
        verbosity = hf_logging.get_verbosity()
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        try:
            return loader(*args, **kwargs)
        finally:
            hf_logging.set_verbosity(verbosity)
            if was_enabled:
                hf_logging.enable_progress_bar()


_QUIET_LOCK = threading.Lock()
_CACHE: "OrderedDict[tuple[str, str], Bundle]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
_LOADING: dict[tuple[str, str], threading.Lock] = {}


def cached(name: str, *, device: str = "cpu") -> Bundle:
    """The model ``name`` loaded once per process and shared.

    Like :func:`load`, but the first call loads and later calls (from any thread)
    return the same :class:`Bundle`. Two threads asking for the same name at the same
    time load it once; different names load in parallel. At most
    :data:`CACHE_SIZE` models are kept (least recently used dropped first).

    The shared model must not be changed by the caller; groundroll's own calls
    (``segment``, ``align``, ``capture``, ...) leave it as loaded and are safe to
    run from several threads at once.

    Parameters
    ----------
    name : str
        A spec for :func:`load`.
    device : str
        Torch device; part of the cache key.

    Returns
    -------
    Bundle

    Examples
    --------
    >>> from groundroll.zoo import cached
    >>> cached("bundled:toy-mt") is cached("bundled:toy-mt")
    True
    """
    key = (str(name), str(device))
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        loading = _LOADING.setdefault(key, threading.Lock())
    with loading:
        with _CACHE_LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _CACHE[key]
        bundle = load(name, device=device)
        with _CACHE_LOCK:
            _CACHE[key] = bundle
            _LOADING.pop(key, None)
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
        return bundle


def clear_cache() -> None:
    """Drop every model :func:`cached` holds (they are freed once no one uses them).

    Examples
    --------
    >>> clear_cache()
    """
    with _CACHE_LOCK:
        _CACHE.clear()


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
        A new copy of the model in eval mode; ``Bundle.name`` is ``name``. Library
        calls given the name as a string (``gr.segment(..., model="bundled:...")``)
        use :func:`cached` instead and load each name once per process.

    Raises
    ------
    ValueError
        Unknown form or bundled name; the message lists the accepted forms.
    RuntimeError
        Hub weights are unavailable offline; the message says how to load a local copy.
    MissingExtraError
        The model's library is not installed; the message names the extra to install
        (``pip install "groundroll[open_clip]"`` or ``"groundroll[hf]"``).

    Examples
    --------
    >>> from groundroll.zoo import load
    >>> mt = load("bundled:toy-mt")
    >>> mt.adapter, mt.meta["family"], mt.meta["kind"]
    ('hf_marian', 'hf_marian', 'hf_seq2seq')
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    scheme, sep, rest = name.partition(":")
    if not sep or not rest:
        scheme = ""
    if scheme == "bundled":
        bundle = _load_bundled(rest, device)
    elif scheme == "open_clip":
        require_extra("open_clip", f"model {name!r}")
        bundle = load_open_clip(rest, device=device)
    elif scheme == "hf":
        require_extra("hf", f"model {name!r}")
        bundle = load_hf(rest, device=device)
    else:
        raise ValueError(
            f"cannot load {name!r}: accepted forms are {', '.join(ACCEPTED_FORMS)}; "
            f"bundled models: {bundled()}"
        )
    bundle.name = name
    return bundle

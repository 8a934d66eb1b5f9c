"""Synthetic benchmark data with exact ground truth.

Submodules (imported lazily, so ``import groundroll.data`` stays cheap):

- ``shapes``: scenes of coloured shapes with exact per-object masks, labels and captions,
  used to train and evaluate the bundled open_clip models and segmentation.
- ``toy_translation``: a toy language pair with gold word alignments.
"""

from __future__ import annotations

import importlib

__all__ = ["shapes", "toy_translation"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

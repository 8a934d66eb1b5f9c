"""``ensemble``: a weighted mean of normalised maps from several sources.

Each source's maps are min-max normalised per prompt, resized to the model input
resolution and averaged with the given weights; the result is again a
``[P, h, w]`` map that the usual postprocessing turns into masks.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .. import masks as M
from ._model import ModelHandle
from .registry import METHODS
from .sources import prompt_maps

__all__ = ["DEFAULT_WEIGHTS", "ensemble_maps"]

#: Sources and weights used when neither the caller nor a profile gives any.
DEFAULT_WEIGHTS: dict[str, float] = {"legrad": 1.0, "relevance": 1.0, "naclip": 1.0}


def ensemble_maps(handle: ModelHandle, image: np.ndarray, prompts: Sequence[str], *,
                  templates: Sequence[str] | None = None,
                  weights: Mapping[str, float] | None = None,
                  options: Mapping[str, dict] | None = None) -> np.ndarray:
    """Weighted mean ``[P, h, w]`` (float32 in [0, 1]) of min-max normalised maps.

    Parameters
    ----------
    handle : ModelHandle
    image : ndarray of uint8, shape [h, w, 3]
        At the model's input size.
    prompts : sequence of str
    templates : sequence of str, optional
        Passed to every source that takes templates.
    weights : mapping of str to float, optional
        Source name -> non-negative weight (default :data:`DEFAULT_WEIGHTS`).
    options : mapping of str to dict, optional
        Source name -> keyword options of that source.

    Examples
    --------
    >>> ensemble_maps(handle, image, ["a red circle"],
    ...               weights={"legrad": 2.0, "naclip": 1.0}).shape  # doctest: +SKIP
    (1, 96, 96)
    """
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    options = dict(options or {})
    if not weights:
        raise ValueError("an ensemble needs at least one source in weights")
    for name, w in weights.items():
        if name == "ensemble" or name not in METHODS:
            raise ValueError(f"ensemble source {name!r} is not a map source; choose from"
                             f" {[m for m in METHODS if m != 'ensemble']}")
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"ensemble weight of {name!r} must be finite and >= 0, got {w}")
    unknown = set(options) - set(weights)
    if unknown:
        raise ValueError(f"options given for sources not in the ensemble: {sorted(unknown)}")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError("ensemble weights sum to zero")
    size = tuple(image.shape[:2])
    out = np.zeros((len(prompts),) + size, np.float32)
    for name, w in weights.items():
        if w == 0:
            continue
        maps = prompt_maps(handle, image, prompts, method=name,
                           templates=None if name == "cross" else templates,
                           **dict(options.get(name, {})))
        maps = M.normalize_maps(maps.astype(np.float32), how="minmax")
        out += (w / total) * M.resize_maps(maps, size, order=1).astype(np.float32)
    return out

"""Array coercions shared by the masks modules."""

from __future__ import annotations

import numpy as np


def _float(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype in (np.float32, np.float64):
        return a
    if a.dtype == np.float16:
        return a.astype(np.float32)
    return a.astype(np.float64)


def _as_maps(maps) -> tuple[np.ndarray, bool]:
    """Return ``[P, h, w]`` float maps and whether the input was a single 2-D map."""
    maps = _float(maps)
    if maps.ndim == 2:
        return maps[None], True
    if maps.ndim != 3:
        raise ValueError(f"expected maps [P, h, w] or [h, w], got shape {maps.shape}")
    return maps, False


def _pair(v, name: str) -> tuple[int, int]:
    if np.isscalar(v):
        v = (v, v)
    v = tuple(int(x) for x in v)
    if len(v) != 2 or min(v) < 1:
        raise ValueError(f"{name} must be a positive int or (height, width), got {v}")
    return v

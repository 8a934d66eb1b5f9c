"""Colours for label maps."""

from __future__ import annotations

import numpy as np

__all__ = ["palette"]


def palette(n: int) -> np.ndarray:
    """``n`` distinct colours, index 0 black (the PASCAL VOC colour map).

    Returns
    -------
    ndarray of uint8, shape [n, 3]

    Examples
    --------
    >>> palette(3)
    array([[  0,   0,   0],
           [128,   0,   0],
           [  0, 128,   0]], dtype=uint8)
    """
    idx = np.arange(n, dtype=np.int64)
    out = np.zeros((n, 3), dtype=np.int64)
    c = idx.copy()
    for shift in range(7, -1, -1):
        for ch in range(3):
            out[:, ch] |= ((c >> ch) & 1) << shift
        c >>= 3
    return out.astype(np.uint8)

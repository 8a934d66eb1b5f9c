"""Agreement metrics between two maps of the same shape (numpy in, float out).

:func:`spearman`, :func:`top_iou` and :func:`mass_moved` work on maps from anywhere;
:data:`TASKS` lists what an audit compares and which metrics it reports for each.
"""

from __future__ import annotations

import numpy as np

__all__ = ["spearman", "top_iou", "mass_moved", "TASKS"]

TASKS = ("align", "segment")
_METRICS = {
    "align": ("spearman", "iou_top", "mass_moved", "aer"),
    "segment": ("spearman", "iou_top", "mass_moved", "label_agreement"),
}
_HIGHER_IS_AGREEMENT = {"spearman": True, "iou_top": True, "mass_moved": False, "aer": False,
                        "label_agreement": True}


def spearman(a, b) -> float:
    """Spearman rank correlation of two maps of the same shape (ties: average ranks).

    Two identical maps give 1 even when constant; a constant map against a varying one
    gives 0 (no rank information).

    Examples
    --------
    >>> spearman([1, 2, 3], [10, 20, 30]), spearman([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    """
    from scipy.stats import rankdata

    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"maps differ in size: {np.shape(a)} and {np.shape(b)}")
    if x.size == 0 or np.array_equal(x, y):
        return 1.0
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else 0.0


def _top_set(x: np.ndarray, top: float) -> np.ndarray:
    k = max(1, int(round(top * x.size)))
    order = np.argsort(-x.ravel(), kind="stable")
    chosen = np.zeros(x.size, dtype=bool)
    chosen[order[:k]] = True
    return chosen


def top_iou(a, b, *, top: float = 0.1) -> float:
    """IoU of the top ``top`` fraction (at least one cell) of two maps.

    Ties are broken by position, so identical maps give exactly 1.

    Examples
    --------
    >>> top_iou([[0, 1], [2, 3]], [[0, 1], [3, 2]], top=0.5)
    1.0
    >>> top_iou([0, 0, 1, 2], [2, 1, 0, 0], top=0.5)
    0.0
    """
    if not 0 < top <= 1:
        raise ValueError(f"top must be in (0, 1], got {top}")
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"maps differ in size: {x.shape} and {y.shape}")
    if x.size == 0:
        return 1.0
    sa, sb = _top_set(x, top), _top_set(y, top)
    union = (sa | sb).sum()
    return float((sa & sb).sum() / union)


def _distributions(m: np.ndarray, axis: int) -> np.ndarray:
    m = np.clip(np.asarray(m, dtype=np.float64), 0, None)
    total = m.sum(axis=axis, keepdims=True)
    return np.divide(m, total, out=np.zeros_like(m), where=total > 0)


def mass_moved(a, b, *, axis: int = -1) -> float:
    """Mean total-variation distance between the rows of two maps, each row normalised
    to sum 1 along ``axis`` (0 = nothing moved, 1 = all mass moved elsewhere).

    Examples
    --------
    >>> mass_moved([[1, 0], [0.5, 0.5]], [[0, 1], [0.5, 0.5]])
    0.5
    """
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"maps differ in size: {x.shape} and {y.shape}")
    if x.size == 0:
        return 0.0
    tv = 0.5 * np.abs(_distributions(x, axis) - _distributions(y, axis)).sum(axis=axis)
    return float(tv.mean())

"""Hard links from a ``[T, S]`` word matrix: extraction and symmetrisation.

Numpy only (no torch, no model library): usable on score matrices from anywhere.
"""

from __future__ import annotations

import numpy as np

from groundroll._options import check_align_options
from groundroll.alignment import links as _links

__all__ = ["extract_links", "mutual_scores", "EXTRACTIONS", "SYMMETRIZATIONS",
           "DEFAULT_THRESHOLD", "DEFAULT_MUTUAL_THRESHOLD"]

EXTRACTIONS = ("argmax", "threshold", "itermax", "mutual")
SYMMETRIZATIONS = ("intersection", "union", "grow-diag", "grow-diag-final",
                   "grow-diag-final-and")
#: Default exclusive lower limit of ``extraction="threshold"`` on row-normalised scores.
DEFAULT_THRESHOLD = 0.3
#: Default exclusive lower limit of ``extraction="mutual"`` (the geometric mean of the
#: two directions' probabilities), used when no profile sets one.
DEFAULT_MUTUAL_THRESHOLD = 0.3

def extract_links(matrix, *, extraction: str = "argmax", link_threshold: float | None = None,
                  symmetrize: str | None = None, backward=None) -> set[tuple[int, int]]:
    """Hard links from a ``[T, S]`` word matrix.

    Parameters
    ----------
    matrix : array_like, shape [T, S]
        Target x source scores (the forward, target-to-source direction).
    extraction : {"argmax", "threshold", "itermax", "mutual"}
        ``"argmax"``: each target word links to its best source word.
        ``"threshold"``: every cell whose row-normalised score is above
        ``link_threshold``.
        ``"itermax"``: SimAlign's IterMax (already uses both directions).
        ``"mutual"``: every cell whose :func:`mutual_scores` (the geometric mean of
        ``P(source | target)`` from the forward rows and ``P(target | source)`` from the
        backward columns) is above ``link_threshold``: a link needs both directions, a
        word may link to several words or to none (no forced link for a word with no
        counterpart).
    link_threshold : float, optional
        Exclusive lower limit for ``"threshold"``, on rows normalised to sum 1 (and, for
        the backward direction, on columns normalised to sum 1; default
        :data:`DEFAULT_THRESHOLD`), and for ``"mutual"`` (default
        :data:`DEFAULT_MUTUAL_THRESHOLD`).
    symmetrize : str, optional
        ``"intersection"``, ``"union"``, ``"grow-diag"``, ``"grow-diag-final"`` or
        ``"grow-diag-final-and"``: also extract the source-to-target direction and
        combine both with this heuristic. None: the forward direction only.
    backward : array_like, shape [T, S], optional
        Source-to-target scores from a reverse model, laid out like ``matrix`` (target
        rows). Default: the columns of ``matrix``.

    Returns
    -------
    set of (int, int)
        ``(s, t)`` links.

    Examples
    --------
    >>> m = [[0.8, 0.2, 0.0], [0.1, 0.1, 0.8]]
    >>> sorted(extract_links(m))
    [(0, 0), (2, 1)]
    >>> sorted(extract_links(m, symmetrize="union"))
    [(0, 0), (1, 0), (2, 1)]
    >>> sorted(extract_links(m, symmetrize="intersection"))
    [(0, 0), (2, 1)]
    >>> sorted(extract_links([[0.5, 0.5, 0.0], [0.1, 0.1, 0.8]], extraction="mutual"))
    [(0, 0), (1, 0), (2, 1)]
    """
    if extraction not in EXTRACTIONS:
        raise ValueError(f"extraction must be one of {EXTRACTIONS}, got {extraction!r}")
    check_align_options(link_threshold=link_threshold)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"expected a [T, S] matrix, got shape {m.shape}")
    if m.size == 0:
        return set()
    if symmetrize is not None:
        key = symmetrize.replace("_", "-")
        if key not in SYMMETRIZATIONS:
            raise ValueError(f"symmetrize must be one of {SYMMETRIZATIONS} or None, got"
                             f" {symmetrize!r}")
    if extraction in ("itermax", "mutual") and symmetrize is not None:
        raise ValueError(f"extraction={extraction!r} combines both directions itself;"
                         " leave symmetrize=None")
    if extraction == "mutual":
        limit = DEFAULT_MUTUAL_THRESHOLD if link_threshold is None else float(link_threshold)
        scores = mutual_scores(m, backward)
        t, s = np.nonzero(scores > limit)
        return _drop_unscored({(int(a), int(b)) for a, b in zip(s, t)}, m)
    if extraction == "itermax":
        if backward is not None:
            m = 0.5 * (_norm_rows(m) + _norm_cols(np.asarray(backward, np.float64)))
        return _drop_unscored(_links.itermax(m), m)
    limit = DEFAULT_THRESHOLD if link_threshold is None else float(link_threshold)
    if extraction == "argmax":
        forward = _links.argmax_links(m, axis=1)
    else:
        forward = _links.threshold_links(_norm_rows(m), threshold=limit)
    if symmetrize is None:
        return _drop_unscored(forward, m)
    b = m if backward is None else np.asarray(backward, dtype=np.float64)
    if b.shape != m.shape:
        raise ValueError(f"backward matrix {b.shape} does not match {m.shape}")
    if extraction == "argmax":
        reverse = _links.argmax_links(b, axis=0)
    else:
        reverse = _links.threshold_links(_norm_cols(b), threshold=limit)
    return _drop_unscored(_links.symmetrize(forward, reverse, how=symmetrize), m)


def mutual_scores(matrix, backward=None) -> np.ndarray:
    """``sqrt(P(s | t) * P(t | s))`` for a ``[T, S]`` word matrix.

    ``P(s | t)``: the forward rows normalised to sum 1; ``P(t | s)``: the columns of
    ``backward`` (a reverse model's scores laid out with target rows; default
    ``matrix`` itself) normalised to sum 1. High only where each word is the other's
    main counterpart, so a threshold on it leaves words with no counterpart unlinked
    and keeps one-to-many links whose shares are both large.

    Examples
    --------
    >>> mutual_scores([[0.5, 0.5], [0.0, 1.0]]).round(3)
    array([[0.707, 0.408],
           [0.   , 0.816]])
    """
    m = np.asarray(matrix, dtype=np.float64)
    b = m if backward is None else np.asarray(backward, dtype=np.float64)
    if b.shape != m.shape:
        raise ValueError(f"backward matrix {b.shape} does not match {m.shape}")
    return np.sqrt(_norm_rows(m) * _norm_cols(b))


def _drop_unscored(found: set, m: np.ndarray) -> set:
    """Links of words whose row or column is all zero (words cut off by the model's
    length limit, or given no score) are dropped: there is no evidence for them."""
    rows, cols = np.any(m != 0, axis=1), np.any(m != 0, axis=0)
    return {(s, t) for s, t in found if rows[t] and cols[s]}


def _norm_rows(m: np.ndarray) -> np.ndarray:
    total = np.clip(m, 0, None).sum(1, keepdims=True)
    return np.divide(np.clip(m, 0, None), total, out=np.zeros_like(m), where=total > 0)


def _norm_cols(m: np.ndarray) -> np.ndarray:
    return _norm_rows(m.T).T

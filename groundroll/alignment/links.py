"""Hard word links from a word-level score matrix, and symmetrisation.

Conventions
-----------
* Score matrices are ``[T, S]``: one row per **target** word, one column per
  **source** word (the layout of decoder-to-encoder cross-attention), so
  ``m[t, s]`` scores target word ``t`` against source word ``s``.
* Links are sets of ``(s, t)`` pairs, **source index first**, 0-indexed: the
  Pharaoh order ``"s-t"``. A matrix entry ``m[t, s]`` therefore becomes the
  link ``(s, t)``; the transposition happens in this module and nowhere else.
"""

from __future__ import annotations

import bisect
from typing import AbstractSet, Iterable

import numpy as np

__all__ = [
    "Link",
    "Links",
    "argmax_links",
    "threshold_links",
    "itermax",
    "links_to_matrix",
    "intersection",
    "union",
    "grow_diag",
    "grow_diag_final",
    "grow_diag_final_and",
    "symmetrize",
]

Link = tuple[int, int]
Links = set[Link]

_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1))
_DIAGONALS = ((-1, -1), (-1, 1), (1, -1), (1, 1))


def _as_matrix(m) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"expected a [T, S] matrix, got shape {m.shape}")
    return m


def _links_from_mask(mask: np.ndarray) -> Links:
    t_idx, s_idx = np.nonzero(mask)
    return {(int(s), int(t)) for t, s in zip(t_idx, s_idx)}


def links_to_matrix(links: Iterable[Link], shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``[T, S]`` matrix of a link set.

    Parameters
    ----------
    links : iterable of (int, int)
        ``(s, t)`` pairs, 0-indexed.
    shape : (int, int)
        ``(T, S)``.

    Returns
    -------
    ndarray of bool, shape [T, S]
        ``out[t, s]`` is True for each link ``(s, t)``.

    Examples
    --------
    >>> links_to_matrix({(1, 0)}, (1, 2)).astype(int)
    array([[0, 1]])
    """
    out = np.zeros(shape, dtype=bool)
    for s, t in links:
        if not (0 <= t < shape[0] and 0 <= s < shape[1]):
            raise IndexError(f"link ({s}, {t}) outside a [T={shape[0]}, S={shape[1]}] matrix")
        out[t, s] = True
    return out


def argmax_links(m, *, axis: int = 1) -> Links:
    """One link per word: the best-scoring word on the other side.

    Parameters
    ----------
    m : array_like, shape [T, S]
        Target x source scores.
    axis : {1, 0, -1}, optional
        Axis that the argmax runs over. ``1`` (or ``-1``, default): for every
        target word the best source word (target-to-source direction, ``T``
        links). ``0``: for every source word the best target word (``S`` links).

    Returns
    -------
    set of (int, int)
        ``(s, t)`` links. Ties go to the lowest index.

    Examples
    --------
    >>> m = [[0.9, 0.1], [0.6, 0.4]]
    >>> sorted(argmax_links(m))
    [(0, 0), (0, 1)]
    >>> sorted(argmax_links(m, axis=0))
    [(0, 0), (1, 1)]
    """
    m = _as_matrix(m)
    if m.size == 0:
        return set()
    if axis in (1, -1):
        return {(int(s), t) for t, s in enumerate(m.argmax(axis=1))}
    if axis == 0:
        return {(s, int(t)) for s, t in enumerate(m.argmax(axis=0))}
    raise ValueError(f"axis must be 0, 1 or -1, got {axis}")


def threshold_links(m, *, threshold: float) -> Links:
    """All pairs whose score is strictly above ``threshold``.

    Parameters
    ----------
    m : array_like, shape [T, S]
        Target x source scores.
    threshold : float
        Exclusive lower limit.

    Returns
    -------
    set of (int, int)
        ``(s, t)`` links with ``m[t, s] > threshold``.

    Examples
    --------
    >>> sorted(threshold_links([[0.7, 0.3], [0.5, 0.5]], threshold=0.4))
    [(0, 0), (0, 1), (1, 1)]
    """
    return _links_from_mask(_as_matrix(m) > threshold)


def itermax(m, *, max_iter: int = 2, alpha: float = 0.9) -> Links:
    """SimAlign's IterMax: repeated intersection of the two argmax directions.

    The first iteration is ArgMax, the intersection of the per-row and
    per-column argmax. Each further iteration looks again only at cells with
    at least one still-unaligned word: cells whose row and column are both
    aligned are masked to zero, cells with exactly one aligned word are scaled
    by ``alpha``, cells with two unaligned words are kept; the intersection of
    the argmax directions of that matrix (restricted to cells with an unaligned
    word) is added. Iteration stops after ``max_iter`` rounds, when nothing is
    added, or when every row or every column is aligned. As in the reference
    implementation, matrices with a side of length at most 2 get ArgMax only.

    Parameters
    ----------
    m : array_like, shape [T, S]
        Target x source similarity or attention scores.
    max_iter : int, optional
        Number of rounds, ArgMax included (SimAlign's default 2).
    alpha : float, optional
        Down-weighting of cells with one aligned word (SimAlign's 0.9).

    Returns
    -------
    set of (int, int)
        ``(s, t)`` links.

    References
    ----------
    .. [1] M. Jalili Sabet, P. Dufter, F. Yvon, H. Schütze, "SimAlign: High
       Quality Word Alignments without Parallel Training Data using Static and
       Contextualized Embeddings", Findings of EMNLP 2020, Sec. 2.3 (IterMax).

    Examples
    --------
    >>> m = [[0.9, 0.5, 0.1], [0.1, 0.7, 0.2], [0.1, 0.8, 0.3]]
    >>> sorted(itermax(m, max_iter=1))
    [(0, 0), (1, 2)]
    >>> sorted(itermax(m))
    [(0, 0), (1, 1), (1, 2), (2, 2)]
    """
    m = _as_matrix(m)
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    rows, cols = m.shape
    if m.size == 0:
        return set()

    def mutual_argmax(scores: np.ndarray) -> np.ndarray:
        out = np.zeros(scores.shape, dtype=bool)
        best_col = scores.argmax(axis=1)
        best_row = scores.argmax(axis=0)
        r = np.arange(rows)
        out[r, best_col] = best_row[best_col] == r
        return out

    aligned = mutual_argmax(m)
    if min(rows, cols) <= 2:
        return _links_from_mask(aligned)
    for _ in range(max_iter - 1):
        row_free = ~aligned.any(axis=1)[:, None]
        col_free = ~aligned.any(axis=0)[None, :]
        if not row_free.any() or not col_free.any():
            break
        weight = np.clip(alpha * row_free + alpha * col_free, 0.0, 1.0)
        open_cells = row_free | col_free
        # Argmax of each direction separately, then intersect, as in the paper.
        scores = m * weight
        forward = np.zeros_like(aligned)
        forward[np.arange(rows), scores.argmax(axis=1)] = True
        backward = np.zeros_like(aligned)
        backward[scores.argmax(axis=0), np.arange(cols)] = True
        new = forward & backward & open_cells
        if not (new & ~aligned).any():
            break
        aligned |= new
    return _links_from_mask(aligned)


# --- symmetrisation (Koehn et al. 2003; Moses' symal) -----------------------


def intersection(forward: AbstractSet[Link], backward: AbstractSet[Link]) -> Links:
    """Links present in both directions (high precision).

    Examples
    --------
    >>> sorted(intersection({(0, 0), (1, 1)}, {(0, 0), (1, 2)}))
    [(0, 0)]
    """
    return set(forward) & set(backward)


def union(forward: AbstractSet[Link], backward: AbstractSet[Link]) -> Links:
    """Links present in either direction (high recall).

    Examples
    --------
    >>> sorted(union({(0, 0)}, {(1, 1)}))
    [(0, 0), (1, 1)]
    """
    return set(forward) | set(backward)


def _grow(
    forward: AbstractSet[Link],
    backward: AbstractSet[Link],
    *,
    diagonal: bool,
    final: bool,
    final_and: bool,
) -> Links:
    # Moses' symal works on points (target, source); so does this function, and
    # links are turned back into (s, t) at the end.
    fwd = {(t, s) for s, t in forward}
    bwd = {(t, s) for s, t in backward}
    both = fwd | bwd
    current = sorted(fwd & bwd)
    alignment = set(current)
    tgt_aligned = {t for t, _ in current}
    src_aligned = {s for _, s in current}
    neighbours = _NEIGHBOURS + (_DIAGONALS if diagonal else ())

    def add(point: tuple[int, int]) -> None:
        alignment.add(point)
        tgt_aligned.add(point[0])
        src_aligned.add(point[1])

    # GROW: scan the current points in (target, source) order; a point added
    # during the scan is visited in the same scan when it sorts after the point
    # being expanded (std::set iteration in symal), and scans repeat until stable.
    added = True
    while added:
        added = False
        k = 0
        while k < len(current):
            t, s = current[k]
            for dt, ds in neighbours:
                point = (t + dt, s + ds)
                if point in both and point not in alignment and (
                    point[0] not in tgt_aligned or point[1] not in src_aligned
                ):
                    add(point)
                    pos = bisect.bisect_left(current, point)
                    current.insert(pos, point)
                    if pos <= k:
                        k += 1
                    added = True
            k += 1

    if final:
        # FINAL(e2f) then FINAL(f2e): symal adds the leftover links of the
        # target-to-source direction first, then those of source-to-target.
        for direction in (bwd, fwd):
            for point in sorted(direction - alignment):
                t, s = point
                if final_and:
                    ok = t not in tgt_aligned and s not in src_aligned
                else:
                    ok = t not in tgt_aligned or s not in src_aligned
                if ok:
                    add(point)
    return {(s, t) for t, s in alignment}


def grow_diag(forward: AbstractSet[Link], backward: AbstractSet[Link]) -> Links:
    """Grow the intersection towards the union through neighbouring links.

    Starting from the intersection, repeatedly add a union link that is a
    neighbour (horizontal, vertical **or diagonal**) of a current link and
    whose source word or target word is not yet aligned (Koehn's GROW-DIAG).

    Parameters
    ----------
    forward : set of (int, int)
        Source-to-target alignment (symal's "direct" alignment; e.g.
        ``argmax_links(m, axis=0)``, one target word per source word).
    backward : set of (int, int)
        Target-to-source alignment (symal's "inverse" alignment; e.g.
        ``argmax_links(m, axis=1)``, one source word per target word).

    Returns
    -------
    set of (int, int)
        ``(s, t)`` links.

    Notes
    -----
    Where the result depends on the order of additions, it is that of Moses'
    ``symal``: links are expanded in ``(t, s)`` order, neighbours tried in the
    ``(dt, ds)`` order ``(-1,0), (0,-1), (1,0), (0,1), (-1,-1), (-1,1), (1,-1), (1,1)``.

    Examples
    --------
    >>> sorted(grow_diag({(0, 0), (1, 1)}, {(0, 0)}))
    [(0, 0), (1, 1)]
    """
    return _grow(forward, backward, diagonal=True, final=False, final_and=False)


def grow_diag_final(forward: AbstractSet[Link], backward: AbstractSet[Link]) -> Links:
    """GROW-DIAG, then FINAL: add leftover union links with an unaligned word.

    After :func:`grow_diag`, every remaining link of ``backward`` (target-to-source)
    and then of ``forward`` (source-to-target), each in ``(t, s)`` order, is added
    if its source word **or** its target word is still unaligned (Koehn et al.,
    IWSLT 2005; Moses ``-alignment grow-diag-final``). Arguments as in
    :func:`grow_diag`.

    Examples
    --------
    >>> forward, backward = {(0, 0), (2, 1)}, {(0, 0)}
    >>> sorted(grow_diag(forward, backward))       # (2, 1) neighbours no link
    [(0, 0)]
    >>> sorted(grow_diag_final(forward, backward))
    [(0, 0), (2, 1)]
    """
    return _grow(forward, backward, diagonal=True, final=True, final_and=False)


def grow_diag_final_and(forward: AbstractSet[Link], backward: AbstractSet[Link]) -> Links:
    """GROW-DIAG, then FINAL-AND: add leftover links whose two words are unaligned.

    Like :func:`grow_diag_final`, but a leftover union link is added only if
    its source word **and** its target word are both unaligned (Moses
    ``-alignment grow-diag-final-and``). Arguments as in :func:`grow_diag`.

    Examples
    --------
    >>> sorted(grow_diag_final_and({(0, 0), (2, 0)}, {(0, 0)}))
    [(0, 0)]
    """
    return _grow(forward, backward, diagonal=True, final=True, final_and=True)


_HEURISTICS = {
    "intersection": intersection,
    "union": union,
    "grow-diag": grow_diag,
    "grow-diag-final": grow_diag_final,
    "grow-diag-final-and": grow_diag_final_and,
}


def symmetrize(
    forward: AbstractSet[Link], backward: AbstractSet[Link], *, how: str = "grow-diag-final-and"
) -> Links:
    """Combine two directional alignments with a named heuristic.

    Parameters
    ----------
    forward, backward : set of (int, int)
        Source-to-target and target-to-source ``(s, t)`` links (see :func:`grow_diag`).
    how : {"intersection", "union", "grow-diag", "grow-diag-final", "grow-diag-final-and"}
        Heuristic (underscores are accepted in place of hyphens).

    Examples
    --------
    >>> sorted(symmetrize({(0, 0)}, {(0, 0), (1, 1)}, how="union"))
    [(0, 0), (1, 1)]
    """
    key = how.replace("_", "-")
    if key not in _HEURISTICS:
        raise ValueError(f"unknown heuristic {how!r}; choose from {sorted(_HEURISTICS)}")
    return _HEURISTICS[key](forward, backward)

"""Labels: scores -> probabilities -> an argmax label map with background -> masks."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._common import _as_maps, _float

__all__ = ["normalize_maps", "softmax_maps", "label_map", "masks_from_labels"]


def normalize_maps(maps, *, how: str = "minmax") -> np.ndarray:
    """Scale each prompt's map to [0, 1].

    Parameters
    ----------
    maps : array_like, shape [P, h, w] or [h, w]
    how : {"minmax", "max", "none"}, optional
        ``"minmax"``: ``(x - min) / (max - min)`` per prompt; a constant map becomes
        all zeros. ``"max"``: ``x / max`` per prompt (for non-negative maps; a map
        with ``max <= 0`` becomes all zeros). ``"none"``: a float copy.

    Returns
    -------
    ndarray
        Same shape and floating dtype; in [0, 1] (for ``"max"``, when the input is
        non-negative).

    Examples
    --------
    >>> normalize_maps(np.array([[[1.0, 3.0]], [[2.0, 2.0]]]))
    array([[[0., 1.]],
    <BLANKLINE>
           [[0., 0.]]])
    """
    maps, single = _as_maps(maps)
    flat = maps.reshape(maps.shape[0], -1)
    if how == "none":
        out = maps.copy()
    elif how == "minmax":
        lo = flat.min(axis=1, keepdims=True)
        span = flat.max(axis=1, keepdims=True) - lo
        safe = np.where(span > 0, span, 1)
        out = np.where(span > 0, (flat - lo) / safe, 0).astype(maps.dtype).reshape(maps.shape)
    elif how == "max":
        hi = flat.max(axis=1, keepdims=True)
        safe = np.where(hi > 0, hi, 1)
        out = np.where(hi > 0, flat / safe, 0).astype(maps.dtype).reshape(maps.shape)
    else:
        raise ValueError(f"how must be 'minmax', 'max' or 'none', got {how!r}")
    return out[0] if single else out


def softmax_maps(maps, *, logit_scale: float = 1.0, axis: int = 0) -> np.ndarray:
    """Softmax of ``logit_scale * maps`` across prompts (numerically stable).

    Parameters
    ----------
    maps : array_like, shape [P, h, w]
        Scores, e.g. cosine similarities of patch and text embeddings.
    logit_scale : float, optional
        Temperature inverse; CLIP uses 100 for cosine similarities. No scaling by default.
    axis : int, optional
        Prompt axis.

    Returns
    -------
    ndarray
        Same shape, floating dtype; values in [0, 1] that sum to 1 along ``axis``.

    Examples
    --------
    >>> p = softmax_maps(np.zeros((4, 2, 2)))
    >>> float(p[:, 0, 0].sum()), float(p[0, 0, 0])
    (1.0, 0.25)
    """
    x = _float(maps) * logit_scale
    x = x - x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True)
    return x


def label_map(probs, *, mask_threshold: float | None = None,
              background: Sequence[int] | None = None) -> np.ndarray:
    """Argmax label map with a background class.

    Parameters
    ----------
    probs : array_like, shape [P, H, W]
        Per-prompt probabilities or scores.
    mask_threshold : float, optional
        Pixels whose best foreground score is below ``mask_threshold`` (exclusive:
        a score equal to it is kept) become background.
    background : sequence of int, optional
        Indices of prompts that mean background ("sky", "wall", ...). Pixels
        whose argmax over all prompts is one of them become background.

    Returns
    -------
    ndarray of int32, shape [H, W]
        ``0`` = background, ``k + 1`` = prompt ``k`` (prompt indices are not
        renumbered, so background prompts' labels never occur).

    Examples
    --------
    >>> probs = np.array([[[0.9, 0.2]], [[0.1, 0.8]]])
    >>> label_map(probs)
    array([[1, 2]], dtype=int32)
    >>> label_map(probs, background=[1])
    array([[1, 0]], dtype=int32)
    >>> label_map(probs, mask_threshold=0.85)
    array([[1, 0]], dtype=int32)
    """
    probs, _ = _as_maps(probs)
    P = probs.shape[0]
    labels = (probs.argmax(axis=0) + 1).astype(np.int32)
    fg = np.ones(P, dtype=bool)
    if background is not None:
        bg = np.asarray(list(background), dtype=int)
        if bg.size and (bg.min() < -P or bg.max() >= P):
            raise IndexError(f"background indices {bg.tolist()} out of range for {P} prompts")
        fg[bg] = False
        labels[~fg[labels - 1]] = 0
    if mask_threshold is not None:
        if not fg.any():
            return np.zeros(probs.shape[1:], dtype=np.int32)
        best_fg = probs[fg].max(axis=0)
        labels[best_fg < mask_threshold] = 0
    return labels


def masks_from_labels(labels, n_prompts: int) -> np.ndarray:
    """One boolean mask per prompt from a label map.

    Parameters
    ----------
    labels : array_like of int, shape [H, W]
        ``0`` background, ``k + 1`` prompt ``k``.
    n_prompts : int

    Returns
    -------
    ndarray of bool, shape [n_prompts, H, W]

    Examples
    --------
    >>> masks_from_labels(np.array([[0, 1, 2]]), 2).astype(int)
    array([[[0, 1, 0]],
    <BLANKLINE>
           [[0, 0, 1]]])
    """
    labels = np.asarray(labels)
    return labels[None] == np.arange(1, n_prompts + 1).reshape(-1, *([1] * labels.ndim))

"""Prompt ensembling: expand prompts with templates and average the results per prompt."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._common import _float

__all__ = ["DEFAULT_TEMPLATES", "ensemble_prompts", "average_groups"]

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of the {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "art of the {}.",
)


def ensemble_prompts(
    prompts: Sequence[str], templates: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Expand every prompt with every template.

    Parameters
    ----------
    prompts : sequence of str
        Class names or short phrases.
    templates : sequence of str, optional
        Format strings with one ``{}``; :data:`DEFAULT_TEMPLATES` if omitted.

    Returns
    -------
    texts : list of str
        ``len(prompts) * len(templates)`` texts, prompt-major.
    groups : ndarray of int64, shape [len(texts)]
        Index of the prompt each text came from (for :func:`average_groups`).

    Examples
    --------
    >>> texts, groups = ensemble_prompts(["cat", "dog"], ["a {}.", "the {}"])
    >>> texts, groups.tolist()
    (['a cat.', 'the cat', 'a dog.', 'the dog'], [0, 0, 1, 1])
    """
    templates = DEFAULT_TEMPLATES if templates is None else tuple(templates)
    if not templates:
        raise ValueError("need at least one template")
    for t in templates:
        if t.count("{}") != 1:
            raise ValueError(f"template {t!r} must contain exactly one '{{}}'")
    texts = [t.format(p) for p in prompts for t in templates]
    groups = np.repeat(np.arange(len(prompts), dtype=np.int64), len(templates))
    return texts, groups


def average_groups(values, groups, *, n_groups: int | None = None, normalize: bool = False) -> np.ndarray:
    """Mean of the rows of ``values`` within each group.

    Parameters
    ----------
    values : array_like, shape [N, ...]
        Text embeddings ``[N, D]`` or score maps ``[N, h, w]``.
    groups : array_like of int, shape [N]
        Group of each row, in ``0 .. n_groups - 1``.
    n_groups : int, optional
        Defaults to ``max(groups) + 1``.
    normalize : bool, optional
        L2-normalise rows along the last axis before averaging and the means
        after (CLIP's prompt ensembling of text embeddings).

    Returns
    -------
    ndarray, shape [n_groups, ...]
        Floating dtype of ``values``.

    Examples
    --------
    >>> average_groups(np.array([[1.0], [3.0], [5.0]]), [0, 0, 1])
    array([[2.],
           [5.]])
    """
    x = _float(values)
    g = np.asarray(groups, dtype=np.int64)
    if g.shape != (x.shape[0],):
        raise ValueError(f"groups must have shape [{x.shape[0]}], got {g.shape}")
    n = int(g.max()) + 1 if n_groups is None else int(n_groups)
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    sums = np.zeros((n,) + x.shape[1:], dtype=x.dtype)
    np.add.at(sums, g, x)
    counts = np.bincount(g, minlength=n)
    if (counts == 0).any():
        raise ValueError(f"groups {np.flatnonzero(counts == 0).tolist()} are empty")
    out = sums / counts.reshape(-1, *([1] * (x.ndim - 1)))
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out.astype(x.dtype, copy=False)

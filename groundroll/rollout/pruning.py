"""Pruning: drop weak attention entries per row, never the read-out rows or the diagonal."""

from __future__ import annotations

import torch

from ._checks import Rows, _check_options, _check_rows, _check_tensor
from .fusion import rownorm

__all__ = ["prune"]


def _keep_mask(keep, a: torch.Tensor, diagonal: bool = True) -> torch.Tensor:
    """Bool mask broadcastable to ``a`` ``[B, ..., Q, K]``: entries pruning must keep.

    ``diagonal=False`` (cross-attention): query ``i`` and key ``i`` are different
    tokens even when ``Q == K``, so neither the diagonal nor the columns of ``keep``
    are protected, only its rows.
    """
    q, k = a.shape[-2], a.shape[-1]
    square = diagonal and q == k
    protect = torch.zeros(q, k, dtype=torch.bool, device=a.device)
    if square:
        protect |= torch.eye(q, dtype=torch.bool, device=a.device)
    if keep is None:
        return protect
    batch = a.shape[0] if a.dim() >= 3 else 1
    if isinstance(keep, torch.Tensor) and keep.dim() == 2 and a.dim() < 3:
        raise ValueError("keep: a [batch, R] tensor needs batched attention")
    idx = _check_rows(keep, batch, q, what="keep").to(a.device)
    rows = torch.zeros(idx.shape[0], q, dtype=torch.bool, device=a.device)
    rows.scatter_(1, idx, True)
    mask = protect | rows[:, :, None]
    if square:
        mask = mask | rows[:, None, :]
    if a.dim() < 3:
        return mask[0]
    return mask.view(mask.shape[0], *([1] * (a.dim() - 3)), q, k)


def _prune(a, *, prune_threshold, top_k, discard_ratio, keep, diagonal=True) -> torch.Tensor:
    n_key = a.shape[-1]
    drop = torch.zeros_like(a, dtype=torch.bool)
    if prune_threshold is not None:
        drop |= a < prune_threshold
    if top_k is not None and top_k < n_key:
        kept = torch.zeros_like(drop).scatter_(-1, a.topk(int(top_k), dim=-1).indices, True)
        drop |= ~kept
    if discard_ratio is not None:
        n_drop = int(discard_ratio * n_key)
        if n_drop > 0:
            lowest = a.topk(n_drop, dim=-1, largest=False).indices
            drop.scatter_(-1, lowest, True)
    drop &= ~_keep_mask(keep, a, diagonal)
    return rownorm(a.masked_fill(drop, 0.0))


def prune(
    a: torch.Tensor, *, prune_threshold: float | None = None, top_k: int | None = None,
    discard_ratio: float | None = None, keep: Rows = None, diagonal: bool = True,
) -> torch.Tensor:
    """Drop weak attention entries per row, then renormalise rows.

    The criteria combine: an entry is dropped if any criterion drops it. The
    diagonal (for square input) and every entry in the rows and columns listed in
    ``keep`` are never dropped; with ``diagonal=False`` only the ``keep`` rows are.

    Parameters
    ----------
    a : torch.Tensor
        ``[batch, ..., query, key]`` non-negative weights (``[query, key]`` also works
        when ``keep`` is a list).
    prune_threshold : float, optional
        Drop entries strictly below this value (the pruning cutoff).
    top_k : int, optional
        Keep the ``top_k`` largest entries of each row (ties broken arbitrarily).
    discard_ratio : float, optional
        Drop the ``int(discard_ratio * key)`` smallest entries of each row; in ``[0, 1)``.
    keep : list of int or torch.Tensor, optional
        Protected positions (the read-out rows such as CLS or EOT): a list, a ``[R]``
        tensor, or a ``[batch, R]`` tensor of per-example positions. Their rows are
        kept whole and, for square input, so are their columns.
    diagonal : bool
        Whether ``a`` is self-attention, whose diagonal (and ``keep`` columns) pruning
        protects when it is square. Pass False for cross-attention: there query ``i``
        and key ``i`` are unrelated tokens even when the query and key counts match.

    Returns
    -------
    torch.Tensor
        Same shape as ``a``, rows renormalised with :func:`rownorm`.

    Examples
    --------
    >>> a = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    >>> prune(a, top_k=1)
    tensor([[1.0000, 0.0000, 0.0000],
            [0.0000, 0.2222, 0.7778],
            [0.8333, 0.0000, 0.1667]])
    """
    _check_options(prune_threshold=prune_threshold, top_k=top_k,
                   discard_ratio=discard_ratio)
    x = _check_tensor(a, what="attention", ranks=tuple(range(2, 9)),
                      shape_hint="[..., query, key]")
    return _prune(x, prune_threshold=prune_threshold, top_k=top_k,
                  discard_ratio=discard_ratio, keep=keep, diagonal=diagonal)


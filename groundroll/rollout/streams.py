"""Composition across streams: the cross-attention block of encoder-decoder rollout.

A decoder token carries a row over ``[source inputs | target inputs]``, starting at
``[0 | I_T]``. Its self-attention block multiplies the row by ``Ã_self``; its
cross-attention block mixes in what the attended tokens carry from the source:
``R <- r R + (1 - r) C [R_src | 0]``. Rows stay row-stochastic.
"""

from __future__ import annotations

import torch

from ._checks import _check_options, _check_tensor

__all__ = ["rollout_cross_update"]


def rollout_cross_update(
    target_rows: torch.Tensor, source_rows: torch.Tensor | None, cross: torch.Tensor,
    keys: torch.Tensor, *, residual: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One cross-attention block of encoder-decoder rollout.

    ``[R_ts | R_tt] <- r [R_ts | R_tt] + (1 - r) [C K | 0]``, where ``C`` is the fused,
    row-normalised cross-attention (target queries x attended keys) and ``K`` what
    each attended key carries from the source (the source rollout ``R_src``, or the
    identity when the keys are the source tokens themselves).

    Parameters
    ----------
    target_rows : torch.Tensor
        ``[..., T, T]`` target part ``R_tt`` of the decoder rows so far.
    source_rows : torch.Tensor or None
        ``[..., T, S]`` source part ``R_ts`` so far; None before the first
        cross-attention block (all zeros).
    cross : torch.Tensor
        ``[..., T, K]`` cross-attention ``C``, rows summing to 1 (or 0 for padding).
    keys : torch.Tensor
        ``[..., K, S]`` source rows of the attended keys.
    residual : float
        Weight ``r`` in ``[0, 1]`` of the residual path around the block.

    Returns
    -------
    source_rows, target_rows : torch.Tensor
        ``[..., T, S]`` and ``[..., T, T]``.

    Examples
    --------
    >>> r_tt = torch.eye(2)
    >>> c = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    >>> r_ts, r_tt = rollout_cross_update(r_tt, None, c, torch.eye(2))
    >>> r_ts
    tensor([[0.5000, 0.0000],
            [0.2500, 0.2500]])
    >>> (r_ts.sum(-1) + r_tt.sum(-1)).tolist()
    [1.0, 1.0]
    """
    _check_options(residual=residual)
    c = _check_tensor(cross, what="cross", ranks=tuple(range(2, 9)),
                      shape_hint="[..., T, K]")
    k = _check_tensor(keys, what="keys", ranks=tuple(range(2, 9)),
                      shape_hint="[..., K, S]")
    if k.shape[-2] != c.shape[-1]:
        raise ValueError(f"keys: shape {tuple(k.shape)} must have K={c.shape[-1]} rows,"
                         f" one per key of cross {tuple(c.shape)}")
    if target_rows.shape[-1] != c.shape[-2] or target_rows.shape[-2] != c.shape[-2]:
        raise ValueError(f"target_rows: shape {tuple(target_rows.shape)} must be"
                         f" [..., T, T] with T={c.shape[-2]} query rows of cross")
    r = float(residual)
    reached = c @ k
    if source_rows is None:
        source_rows = (1.0 - r) * reached
    else:
        source_rows = r * source_rows + (1.0 - r) * reached
    return source_rows, r * target_rows

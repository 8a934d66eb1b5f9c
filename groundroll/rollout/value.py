"""Value-aware contributions: attention weighted by the norm of what each key sends."""

from __future__ import annotations

import torch

from ._checks import _check_tensor
from .fusion import rownorm

__all__ = ["value_weighted"]


def value_weighted(attn: torch.Tensor, value_norms: torch.Tensor) -> torch.Tensor:
    """Norm-based contributions: ``rownorm(A_h[i, j] * ||v_j W_O^h||)``.

    Parameters
    ----------
    attn : torch.Tensor
        ``[batch, head, query, key]`` attention weights.
    value_norms : torch.Tensor
        ``[batch, head, key]`` norms of each key's value vector after the head's slice
        of the output projection.

    Returns
    -------
    torch.Tensor
        ``[batch, head, query, key]``, rows renormalised.

    Examples
    --------
    >>> a = torch.full((1, 1, 1, 2), 0.5)
    >>> value_weighted(a, torch.tensor([[[1.0, 3.0]]]))
    tensor([[[[0.2500, 0.7500]]]])
    """
    a = _check_tensor(attn, what="attention", ranks=(4,))
    v = _check_tensor(value_norms, what="value_norms", ranks=(3,),
                      shape_hint="[batch, head, key]")
    expected = (a.shape[0], a.shape[1], a.shape[3])
    if tuple(v.shape) != expected:
        raise ValueError(
            f"value_norms: shape {tuple(v.shape)} does not match [batch, head, key] ="
            f" {expected} of the attention"
        )
    return rownorm(a * v.to(a.dtype).unsqueeze(-2))


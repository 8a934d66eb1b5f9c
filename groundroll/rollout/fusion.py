"""Head fusion and the residual correction: one layer's attention becomes ``Ã``."""

from __future__ import annotations

import torch

from ._checks import HeadFusion, _check_fusion, _check_grad, _check_options, _check_tensor

__all__ = ["rownorm", "fuse_heads", "gradient_weighted", "residual_correct"]


def rownorm(a: torch.Tensor) -> torch.Tensor:
    """Divide every row by its sum; rows that sum to zero stay zero.

    Parameters
    ----------
    a : torch.Tensor
        ``[..., query, key]`` non-negative weights.

    Returns
    -------
    torch.Tensor
        Same shape; every row sums to 1 or is all zeros (a row summing to zero, which
        for signed input need not be all zeros, is set to zeros). No NaN.

    Examples
    --------
    >>> rownorm(torch.tensor([[1.0, 3.0], [0.0, 0.0]]))
    tensor([[0.2500, 0.7500],
            [0.0000, 0.0000]])
    """
    total = a.sum(-1, keepdim=True)
    zero = total == 0
    return torch.where(zero, torch.zeros_like(a), a / torch.where(zero, 1.0, total))


def _weigh(attn: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """Per-head gradient weighting ``clamp(grad * attn, min=0)`` (identity without grad)."""
    return attn if grad is None else (grad * attn).clamp(min=0)


def _fuse(attn: torch.Tensor, how: HeadFusion, grad: torch.Tensor | None) -> torch.Tensor:
    x = _weigh(attn, grad)
    if x.dim() == 3:
        return x
    if isinstance(how, torch.Tensor):
        w = how.to(device=x.device, dtype=x.dtype)
        return torch.einsum("bhqk,h->bqk", x, w) / w.sum()
    if how == "mean":
        return x.sum(1) / x.shape[1]  # sum then divide: faster than mean on CPU
    if how == "max":
        return x.amax(1)
    return x.amin(1)


def fuse_heads(
    attn: torch.Tensor, head_fusion: HeadFusion = "mean", grad: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fuse the heads of one attention layer.

    Parameters
    ----------
    attn : torch.Tensor
        ``[batch, head, query, key]`` weights. A ``[batch, query, key]`` tensor is taken
        as already fused and returned unchanged (upcast to float32).
    head_fusion : {"mean", "max", "min"} or torch.Tensor
        Reduction over heads, or a ``[head]`` non-negative weight vector giving the
        weighted mean ``sum_h w_h A_h / sum_h w_h``.
    grad : torch.Tensor, optional
        ``d(score)/d(attn)``, same shape as ``attn``. When given the heads are
        gradient-weighted: ``clamp(grad * attn, min=0)`` is taken per head *before*
        the reduction (Chefer et al. 2021), i.e. ``mean_h clamp(grad * attn, min=0)``
        with the default ``head_fusion``.

    Returns
    -------
    torch.Tensor
        ``[batch, query, key]``, float32 (float64 for float64 input). Not
        renormalised: max/min/gradient fusion give rows that need not sum to 1.

    Examples
    --------
    >>> a = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # [1, 2, 1, 2]
    >>> fuse_heads(a)
    tensor([[[0.5000, 0.5000]]])
    >>> fuse_heads(a, "max")
    tensor([[[1., 1.]]])
    """
    a = _check_tensor(attn, what="attention")
    how = _check_fusion(head_fusion)
    g = _check_grad(grad, a, None)
    if isinstance(how, torch.Tensor) and a.dim() == 4 and how.numel() != a.shape[1]:
        raise ValueError(
            f"attention: head weights have length {how.numel()} but the attention has"
            f" {a.shape[1]} heads"
        )
    return _fuse(a, how, g)


def gradient_weighted(attn: torch.Tensor, grad: torch.Tensor, *,
                      per_head: bool = False) -> torch.Tensor:
    """Gradient-weighted head fusion ``mean_h clamp(grad * attn, min=0)``.

    This is the ``Ā`` of Chefer et al. (2021)'s generic relevance rules.

    Parameters
    ----------
    attn, grad : torch.Tensor
        ``[batch, head, query, key]`` weights and ``d(score)/d(weights)``.
    per_head : bool
        Keep the heads apart: return ``clamp(grad * attn, min=0)`` per head.

    Returns
    -------
    torch.Tensor
        ``[batch, query, key]`` (``[batch, head, query, key]`` with ``per_head``),
        non-negative, not renormalised.

    Examples
    --------
    >>> a = torch.full((1, 2, 2, 2), 0.5)
    >>> g = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    >>> gradient_weighted(a, g)
    tensor([[[0.2500, 0.2500],
             [0.2500, 0.2500]]])
    """
    if grad is None:
        raise ValueError("gradient_weighted: grad is required")
    if per_head:
        a = _check_tensor(attn, what="attention", ranks=(4,),
                          shape_hint="[batch, head, query, key]")
        return _weigh(a, _check_grad(grad, a, None))
    return fuse_heads(attn, "mean", grad)


def _residual(a: torch.Tensor, residual: float) -> torch.Tensor:
    n = a.shape[-1]
    eye = torch.eye(n, dtype=a.dtype, device=a.device)
    return rownorm((1.0 - residual) * a + residual * eye)


def residual_correct(a: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """Account for the residual connection: ``rownorm((1 - r) * A + r * I)``.

    Parameters
    ----------
    a : torch.Tensor
        ``[..., N, N]`` non-negative square attention (fused or per head).
    residual : float
        Weight ``r`` in ``[0, 1]`` of the identity; 0.5 is the classic ``(A + I) / 2``.
        ``r = 1`` gives the identity, ``r = 0`` just renormalises ``A``.

    Returns
    -------
    torch.Tensor
        ``[..., N, N]`` row-stochastic (rows of ``A`` that are all zero with ``r = 0``
        stay zero).

    Examples
    --------
    >>> residual_correct(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    tensor([[0.5000, 0.5000],
            [0.5000, 0.5000]])
    """
    _check_options(residual=residual)
    x = _check_tensor(a, what="attention", ranks=tuple(range(2, 9)), square=True,
                      shape_hint="[..., N, N]")
    return _residual(x, float(residual))


def _combine(attn, grad, *, how, per_head) -> torch.Tensor:
    """Head fusion (or per-head gradient weighting) of one validated layer."""
    if per_head:
        return _weigh(attn, grad)
    return _fuse(attn, how, grad)


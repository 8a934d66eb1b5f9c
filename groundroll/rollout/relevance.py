"""Gradient relevance rules of Chefer et al. (2021), generic (bi-modal) form.

Each rule has exactly one implementation here; :func:`groundroll.compose.compose`
calls these functions rather than repeating them.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ._checks import _check_layers, _check_options, _check_tensor
from .fusion import _weigh, gradient_weighted, rownorm

__all__ = ["relevance_self_update", "relevance_normalize",
           "relevance_co_update", "self_relevance"]


def _check_relevance(t, what: str) -> torch.Tensor:
    return _check_tensor(t, what=what, ranks=tuple(range(2, 9)), nonnegative=False,
                         shape_hint="[..., rows, cols]")


def relevance_self_update(R: torch.Tensor, A_bar: torch.Tensor) -> torch.Tensor:
    """Self-attention rule of Chefer et al. (2021): ``R + Ā @ R``.

    Applies to ``R^ss`` (square) and to ``R^sq`` alike, where ``Ā`` is the
    gradient-weighted self-attention of the token stream ``s`` (see
    :func:`gradient_weighted`).

    Parameters
    ----------
    R : torch.Tensor
        ``[..., S, M]`` relevance so far (``R^ss = I`` and ``R^sq = 0`` initially).
    A_bar : torch.Tensor
        ``[..., S, S]`` gradient-weighted self-attention of stream ``s``.

    Returns
    -------
    torch.Tensor
        ``[..., S, M]``.

    Examples
    --------
    >>> relevance_self_update(torch.eye(2), torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    tensor([[1., 1.],
            [0., 1.]])
    """
    r = _check_relevance(R, "R")
    a = _check_relevance(A_bar, "A_bar")
    if a.shape[-1] != a.shape[-2] or a.shape[-1] != r.shape[-2]:
        raise ValueError(
            f"A_bar: shape {tuple(a.shape)} must be [..., S, S] with S = rows of R"
            f" {tuple(r.shape)}"
        )
    dtype = torch.promote_types(r.dtype, a.dtype)
    r, a = r.to(dtype), a.to(dtype)
    return r + a @ r


def relevance_normalize(R: torch.Tensor) -> torch.Tensor:
    """``R̄ = (R - I) / rowsum(R - I) + I`` (Chefer et al. 2021, eq. 8-9).

    Rows of ``R - I`` that sum to zero (a token that gained no relevance) are set to
    zero, giving the identity row instead of NaN or inf.

    Parameters
    ----------
    R : torch.Tensor
        ``[..., N, N]`` self-relevance such as ``R^ss``.

    Returns
    -------
    torch.Tensor
        ``[..., N, N]``, finite.

    Examples
    --------
    >>> relevance_normalize(torch.tensor([[3.0, 2.0], [0.0, 1.0]]))
    tensor([[1.5000, 0.5000],
            [0.0000, 1.0000]])
    """
    r = _check_relevance(R, "R")
    if r.shape[-1] != r.shape[-2]:
        raise ValueError(f"R: must be square [..., N, N], got shape {tuple(r.shape)}")
    eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
    return rownorm(r - eye) + eye


def relevance_co_update(
    R_ss: torch.Tensor, R_qq: torch.Tensor, A_sq: torch.Tensor, *,
    transpose: bool = True, normalize: bool = True,
) -> torch.Tensor:
    """Co-attention increment of Chefer et al. (2021): ``(R̄^ss)^T Ā^sq R̄^qq``.

    Index convention (Chefer's letters): ``s`` is the stream whose tokens *query*
    (the rows of the cross-attention) and ``q`` is the stream being *attended to*
    (the keys). For seq2seq cross-attention ``s`` is the decoder (target) and ``q``
    the encoder (source); for BLIP text-over-image ``s`` is text, ``q`` vision.
    The caller adds the result to ``R^sq`` (``[S, Q]``, rows = querying tokens).

    Parameters
    ----------
    R_ss : torch.Tensor
        ``[..., S, S]`` self-relevance of the querying stream.
    R_qq : torch.Tensor
        ``[..., Q, Q]`` self-relevance of the attended stream. With
        ``normalize=False`` it may be any ``[..., Q, M]`` rows over the attended
        tokens, such as what they carry from an earlier stream through a pooling hop.
    A_sq : torch.Tensor
        ``[..., S, Q]`` gradient-weighted cross-attention (query = ``s``, key = ``q``).
    transpose : bool
        Use ``(R̄^ss)^T`` as in the paper; False uses ``R̄^ss`` (left-multiplication by
        the querying stream's relevance, the rollout-style composition).
    normalize : bool
        Apply :func:`relevance_normalize` to ``R_ss`` and ``R_qq`` first; False uses them
        as given.

    Returns
    -------
    torch.Tensor
        ``[..., S, Q]`` increment for ``R^sq``.

    Examples
    --------
    >>> a = torch.tensor([[0.25, 0.75]])  # one querying token, two keys
    >>> relevance_co_update(torch.eye(1), torch.eye(2), a)
    tensor([[0.2500, 0.7500]])
    """
    r_ss = _check_relevance(R_ss, "R_ss")
    r_qq = _check_relevance(R_qq, "R_qq")
    a = _check_relevance(A_sq, "A_sq")
    s, q = a.shape[-2], a.shape[-1]
    if r_ss.shape[-2:] != (s, s):
        raise ValueError(
            f"R_ss: shape {tuple(r_ss.shape)} must be [..., S, S] with S={s} query rows"
            f" of A_sq {tuple(a.shape)}"
        )
    if r_qq.shape[-2] != q or (normalize and r_qq.shape[-1] != q):
        expected = "[..., Q, Q]" if normalize else "[..., Q, M]"
        raise ValueError(
            f"R_qq: shape {tuple(r_qq.shape)} must be {expected} with Q={q} key columns"
            f" of A_sq {tuple(a.shape)}"
        )
    if normalize:
        r_ss, r_qq = relevance_normalize(r_ss), relevance_normalize(r_qq)
    dtype = torch.promote_types(torch.promote_types(r_ss.dtype, r_qq.dtype), a.dtype)
    left = r_ss.to(dtype).transpose(-1, -2) if transpose else r_ss.to(dtype)
    return left @ a.to(dtype) @ r_qq.to(dtype)


def self_relevance(
    attentions: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], *,
    start_layer: int = 0, per_head: bool = False,
) -> torch.Tensor:
    """``R^ss`` of one self-attention stream: ``R = I``, then ``R += Ā^(l) R`` per layer.

    The single-stream case of Chefer et al. (2021): each layer's gradient-weighted
    attention ``Ā = mean_h clamp(dS/dA * A, min=0)`` (:func:`gradient_weighted`) is folded
    in with :func:`relevance_self_update`, first layer first.

    Parameters
    ----------
    attentions : sequence of torch.Tensor
        Self-attention per layer, first layer first, ``[batch, head, N, N]``.
    grads : sequence of torch.Tensor
        ``d(score)/d(A^(l))``, same shapes, same order.
    start_layer : int
        First layer (0-based) folded in.
    per_head : bool
        Keep heads apart: ``Ā`` per head and a ``[batch, head, N, N]`` result.

    Returns
    -------
    torch.Tensor
        ``[batch, N, N]`` (``[batch, head, N, N]`` with ``per_head``), float32 (float64
        for float64 input). Row ``i`` is token ``i``'s relevance over the input tokens.

    Examples
    --------
    >>> a = torch.tensor([[[[0.5, 0.5], [0.0, 1.0]]]])  # [1, 1, 2, 2]
    >>> self_relevance([a], [torch.ones_like(a)])
    tensor([[[1.5000, 0.5000],
             [0.0000, 2.0000]]])
    """
    _check_options(start_layer=start_layer)
    if grads is None:
        raise ValueError("self_relevance: grads are required, one per layer")
    layers, layer_grads = _check_layers(attentions, grads, per_head=per_head)
    if start_layer >= len(layers):
        raise ValueError(f"start_layer={start_layer} out of range for {len(layers)} layers")
    relevance = None
    for index in range(start_layer, len(layers)):
        attn, grad = layers[index], layer_grads[index]
        if grad is None:
            raise ValueError(f"layer {index}: no gradient; self_relevance needs one per"
                             " layer")
        a_bar = _weigh(attn, grad) if per_head else gradient_weighted(attn, grad)
        if relevance is None:
            eye = torch.eye(a_bar.shape[-1], dtype=a_bar.dtype, device=a_bar.device)
            relevance = eye.expand_as(a_bar).clone()
        relevance = relevance_self_update(relevance, a_bar)
    return relevance

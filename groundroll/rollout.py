"""Attention rollout math: tensors in, tensors out.

Everything here works on plain attention tensors from any source; nothing imports a
model library. Shapes follow one convention: attention weights are
``[batch, head, query, key]`` (or ``[batch, query, key]`` once heads are fused), and
layer lists are ordered first layer first.

Per-layer pipeline used by :func:`rollout`, :class:`RolloutAccumulator` and
:func:`attention_flow`, in this order:

1. head fusion (:func:`fuse_heads`, or gradient weighting when a gradient is given;
   skipped with ``per_head=True``),
2. residual correction ``rownorm((1 - r) * A + r * I)`` (:func:`residual_correct`),
3. pruning (:func:`prune`), which never removes the diagonal nor the rows and columns
   of the read-out positions, and renormalises rows.

Pruning comes after the residual step so that its ``threshold`` acts on the
row-stochastic matrix that is actually multiplied, whatever the fusion was.

Computation is done in float32 (float64 inputs stay float64); float16 and bfloat16
inputs are upcast.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

__all__ = [
    "rownorm",
    "fuse_heads",
    "residual_correct",
    "prune",
    "rollout",
    "RolloutAccumulator",
    "attention_flow",
    "value_weighted",
    "gradient_weighted",
    "relevance_self_update",
    "relevance_normalise",
    "relevance_co_update",
]

HeadFusion = Union[str, torch.Tensor]
Rows = Union[Sequence[int], torch.Tensor, None]

_FUSIONS = ("mean", "max", "min")
_INT32_MAX = 2**31 - 1


# --------------------------------------------------------------------------- checks


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _where(index: int | None, what: str) -> str:
    return what if index is None else f"{what} {index}"


def _check_tensor(
    t, index: int | None = None, *, what: str = "layer", ranks=(3, 4),
    square: bool = False, nonnegative: bool = True, shape_hint: str = "",
    scan: bool = True,
) -> torch.Tensor:
    """Validate one tensor and return it as float32 (or float64).

    ``scan=False`` checks only type, rank and shape; the caller then scans the values
    with :func:`_scan_values` (the rows-only path does it block by block)."""
    where = _where(index, what)
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{where}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() not in ranks:
        hint = shape_hint or " or ".join(
            {2: "[query, key]", 3: "[batch, query, key]", 4: "[batch, head, query, key]"}[r]
            for r in ranks
        )
        raise ValueError(f"{where}: wrong rank, expected {hint}, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{where}: empty tensor of shape {tuple(t.shape)}")
    x = t.to(_compute_dtype(t))
    if scan:
        _scan_values(x, where, nonnegative=nonnegative)
    if square and x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"{where}: self-attention must be square, got query={x.shape[-2]}"
            f" key={x.shape[-1]}"
        )
    return x


def _scan_values(x: torch.Tensor, where: str, *, nonnegative: bool = True) -> None:
    """Raise for NaN/inf (and negative entries when ``nonnegative``)."""
    # NaN propagates to both ends and inf shows at one; two plain reductions are
    # faster than aminmax on CPU
    low, high = float(x.amin()), float(x.amax())
    if not (np.isfinite(low) and np.isfinite(high)):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{where}: contains NaN or inf ({bad} entries)")
    if nonnegative and low < 0:
        raise ValueError(f"{where}: negative attention weights (min {low:.3g})")


def _check_layers(
    attentions, grads=None, *, per_head: bool = False, scan: bool = True,
) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Validate a first-to-last list of self-attention layers (and optional grads).

    ``scan=False`` leaves the value checks (NaN/inf, negatives) to the caller."""
    if isinstance(attentions, torch.Tensor):
        raise ValueError(
            "attentions must be a sequence of per-layer tensors, first layer first;"
            f" got a single tensor of shape {tuple(attentions.shape)}"
        )
    attentions = list(attentions)
    if not attentions:
        raise ValueError("attentions is empty: need at least one layer")
    layers: list[torch.Tensor] = []
    for index, attn in enumerate(attentions):
        a = _check_tensor(attn, index, square=True, scan=scan)
        if per_head and a.dim() != 4:
            raise ValueError(
                f"layer {index}: per_head=True needs [batch, head, query, key] weights,"
                f" got shape {tuple(a.shape)}"
            )
        if layers:
            first = layers[0]
            if a.shape[-1] != first.shape[-1]:
                raise ValueError(
                    f"layer {index}: mismatched N between layers, N={a.shape[-1]} but"
                    f" layer 0 has N={first.shape[-1]}"
                )
            if a.shape[0] != first.shape[0]:
                raise ValueError(
                    f"layer {index}: mismatched batch between layers, batch={a.shape[0]}"
                    f" but layer 0 has batch={first.shape[0]}"
                )
            if per_head and a.shape[1] != first.shape[1]:
                raise ValueError(
                    f"layer {index}: per_head=True needs the same number of heads in"
                    f" every layer, got {a.shape[1]} but layer 0 has {first.shape[1]}"
                )
        layers.append(a)
    if grads is None:
        return layers, [None] * len(layers)
    grads = list(grads)
    if len(grads) != len(layers):
        raise ValueError(
            f"grads has {len(grads)} entries but there are {len(layers)} layers"
        )
    checked = [_check_grad(g, a, i) for i, (g, a) in enumerate(zip(grads, layers))]
    return layers, checked


def _check_grad(grad, attn: torch.Tensor, index: int | None) -> torch.Tensor | None:
    if grad is None:
        return None
    g = _check_tensor(grad, index, what="grad of layer" if index is not None else "grad",
                      ranks=(attn.dim(),), nonnegative=False)
    if g.shape != attn.shape:
        raise ValueError(
            f"{_where(index, 'layer')}: grad shape {tuple(g.shape)} does not match"
            f" weights shape {tuple(attn.shape)}"
        )
    return g.to(attn.dtype)


def _check_fusion(how: HeadFusion) -> HeadFusion:
    if isinstance(how, torch.Tensor):
        w = _check_tensor(how, what="head weights", ranks=(1,),
                          shape_hint="[head]")
        if float(w.sum()) <= 0:
            raise ValueError("head weights: must not all be zero")
        return w
    if how not in _FUSIONS:
        raise ValueError(
            "head_fusion must be 'mean', 'max', 'min' or a [head] weight tensor,"
            f" got {how!r}"
        )
    return how


def _check_options(
    *, residual: float = 0.5, threshold=None, top_k=None, discard_ratio=None,
    start_layer: int = 0,
) -> None:
    if not 0.0 <= float(residual) <= 1.0:
        raise ValueError(f"residual must be in [0, 1], got {residual}")
    if threshold is not None and not np.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1, got {top_k}")
    if discard_ratio is not None and not 0.0 <= float(discard_ratio) < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    if isinstance(start_layer, bool) or int(start_layer) != start_layer or start_layer < 0:
        raise ValueError(f"start_layer must be an integer >= 0, got {start_layer}")


def _check_rows(rows: Rows, batch: int, n: int, *, what: str = "rows") -> torch.Tensor:
    """Return read-out positions as a ``[batch, R]`` long tensor."""
    if isinstance(rows, torch.Tensor):
        if rows.dtype.is_floating_point or rows.dtype == torch.bool or rows.is_complex():
            raise ValueError(f"{what} must hold integer positions, got dtype {rows.dtype}")
        if rows.dim() == 1:
            idx = rows.long().unsqueeze(0).expand(batch, -1)
        elif rows.dim() == 2:
            if rows.shape[0] != batch:
                raise ValueError(
                    f"{what}: [batch, R] tensor has batch {rows.shape[0]} but the"
                    f" attention has batch {batch}"
                )
            idx = rows.long()
        else:
            raise ValueError(
                f"{what} must be a list of positions, a [R] or a [batch, R] tensor,"
                f" got shape {tuple(rows.shape)}"
            )
    elif isinstance(rows, (list, tuple, range)):
        if not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool)
                   for r in rows):
            raise ValueError(f"{what} must hold integer positions, got {list(rows)!r}")
        idx = torch.tensor(list(rows), dtype=torch.long).unsqueeze(0).expand(batch, -1)
    else:
        raise ValueError(
            f"{what} must be a list of positions or a [batch, R] tensor,"
            f" got {type(rows).__name__}"
        )
    if idx.shape[1] == 0:
        raise ValueError(f"{what} is empty")
    bad = (idx < 0) | (idx >= n)
    if bool(bad.any()):
        raise ValueError(
            f"{what} out of range: position {int(idx[bad][0])} not in [0, {n})"
        )
    return idx


# ------------------------------------------------------------------ building blocks


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


def _fuse(attn: torch.Tensor, how: HeadFusion, grad: torch.Tensor | None) -> torch.Tensor:
    x = attn if grad is None else (grad * attn).clamp(min=0)
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
    attn: torch.Tensor, how: HeadFusion = "mean", grad: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fuse the heads of one attention layer.

    Parameters
    ----------
    attn : torch.Tensor
        ``[batch, head, query, key]`` weights. A ``[batch, query, key]`` tensor is taken
        as already fused and returned unchanged (upcast to float32).
    how : {"mean", "max", "min"} or torch.Tensor
        Reduction over heads, or a ``[head]`` non-negative weight vector giving the
        weighted mean ``sum_h w_h A_h / sum_h w_h``.
    grad : torch.Tensor, optional
        ``d(score)/d(attn)``, same shape as ``attn``. When given the heads are
        gradient-weighted: ``clamp(grad * attn, min=0)`` is taken per head *before*
        the reduction (Chefer et al. 2021), i.e. ``mean_h clamp(grad * attn, min=0)``
        with the default ``how``.

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
    how = _check_fusion(how)
    g = _check_grad(grad, a, None)
    if isinstance(how, torch.Tensor) and a.dim() == 4 and how.numel() != a.shape[1]:
        raise ValueError(
            f"attention: head weights have length {how.numel()} but the attention has"
            f" {a.shape[1]} heads"
        )
    return _fuse(a, how, g)


def gradient_weighted(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Gradient-weighted head fusion ``mean_h clamp(grad * attn, min=0)``.

    This is the ``Ā`` of Chefer et al. (2021)'s generic relevance rules.

    Parameters
    ----------
    attn, grad : torch.Tensor
        ``[batch, head, query, key]`` weights and ``d(score)/d(weights)``.

    Returns
    -------
    torch.Tensor
        ``[batch, query, key]``, non-negative, not renormalised.

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


def _prune(a, *, threshold, top_k, discard_ratio, keep, diagonal=True) -> torch.Tensor:
    n_key = a.shape[-1]
    drop = torch.zeros_like(a, dtype=torch.bool)
    if threshold is not None:
        drop |= a < threshold
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
    a: torch.Tensor, *, threshold: float | None = None, top_k: int | None = None,
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
    threshold : float, optional
        Drop entries strictly below this value.
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
    _check_options(threshold=threshold, top_k=top_k, discard_ratio=discard_ratio)
    x = _check_tensor(a, what="attention", ranks=tuple(range(2, 9)),
                      shape_hint="[..., query, key]")
    return _prune(x, threshold=threshold, top_k=top_k, discard_ratio=discard_ratio,
                  keep=keep, diagonal=diagonal)


def _combine(attn, grad, *, how, per_head) -> torch.Tensor:
    """Head fusion (or per-head gradient weighting) of one validated layer."""
    if per_head:
        return attn if grad is None else (grad * attn).clamp(min=0)
    return _fuse(attn, how, grad)


def _rows_step(vectors: torch.Tensor, a: torch.Tensor, residual: float) -> torch.Tensor:
    """``vectors @ residual_correct(a)`` without forming the corrected matrix.

    ``rownorm((1 - r) A + r I) = D^-1 ((1 - r) A + r I)`` with ``D`` the row sums, so
    ``v @ Ã = (1 - r) (w @ A) + r w`` with ``w = v / diag(D)``: two passes over ``A``.
    A zero row of ``(1 - r) A + r I`` contributes nothing either way.
    """
    sums = (1.0 - residual) * a.sum(-1) + residual  # [B, (H,) N]
    w = vectors / torch.where(sums == 0, 1.0, sums).unsqueeze(-2)
    return (1.0 - residual) * (w @ a) + residual * w


# Row blocks of all heads small enough to stay in cache between the value scan, the row
# sums and the product, so each weight is read from memory about once.
_ROW_BLOCK_BYTES = 2 << 20


def _rows_step_heads(vectors, attn, grad, how, residual: float, *,
                     scan_as: str | None = None) -> torch.Tensor:
    """:func:`_rows_step` for a weighted mean over heads, without fusing the heads.

    ``v @ sum_h c_h A_h = sum_h c_h (v @ A_h)``, and the product decomposes over query
    rows: ``w @ A = sum over row blocks of w[block] @ A[block]``. Each block of rows (all
    heads) is scanned for bad values (when ``scan_as`` names the layer), summed and
    multiplied while it is in cache.
    """
    if attn.dim() == 3:
        x = attn if grad is None else (grad * attn).clamp(min=0)
        if scan_as is not None:
            _scan_values(attn, scan_as)
        return _rows_step(vectors, x, residual)
    batch, heads, n, _ = attn.shape
    if isinstance(how, torch.Tensor):
        coef = (how / how.sum()).to(device=attn.device, dtype=attn.dtype)

        def mix(t):  # [B, H, ...] -> [B, ...], weighted over heads
            return (t * coef.view(-1, *([1] * (t.dim() - 2)))).sum(1)
    else:
        def mix(t):
            return t.mean(1)
    step = max(1, _ROW_BLOCK_BYTES // (heads * n * attn.element_size()))
    out = torch.zeros_like(vectors)
    for i0 in range(0, n, step):
        block = attn[:, :, i0:i0 + step]  # [B, H, b, N]
        if scan_as is not None:
            _scan_values(block, scan_as)
        if grad is not None:
            block = (grad[:, :, i0:i0 + step] * block).clamp(min=0)
        sums = (1.0 - residual) * mix(block.sum(-1)) + residual  # [B, b]
        w = vectors[..., i0:i0 + step] / torch.where(sums == 0, 1.0, sums).unsqueeze(-2)
        out += (1.0 - residual) * mix(w.unsqueeze(1) @ block)  # [B, R, N]
        out[..., i0:i0 + step] += residual * w
    return out


def _prepare(attn, grad, *, how, residual, per_head, threshold, top_k, discard_ratio,
             keep) -> torch.Tensor:
    """Fusion -> residual -> pruning for one validated layer."""
    x = _residual(_combine(attn, grad, how=how, per_head=per_head), residual)
    if threshold is not None or top_k is not None or discard_ratio is not None:
        x = _prune(x, threshold=threshold, top_k=top_k, discard_ratio=discard_ratio,
                   keep=keep)
    return x


def _check_head_weights(how: HeadFusion, attn: torch.Tensor, index: int) -> None:
    if isinstance(how, torch.Tensor) and attn.dim() == 4 and how.numel() != attn.shape[1]:
        raise ValueError(
            f"layer {index}: head weights have length {how.numel()} but the layer has"
            f" {attn.shape[1]} heads"
        )


def _take_rows(product: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` ``[B, R]`` of ``product`` ``[B, (H,) N, N]``."""
    idx = idx.to(product.device)
    n = product.shape[-1]
    if product.dim() == 4:
        b, h = product.shape[:2]
        return product.gather(2, idx[:, None, :, None].expand(b, h, idx.shape[1], n))
    return product.gather(1, idx[:, :, None].expand(idx.shape[0], idx.shape[1], n))


# ------------------------------------------------------------------------- rollout


def rollout(
    attentions: Sequence[torch.Tensor], *, head_fusion: HeadFusion = "mean",
    residual: float = 0.5, start_layer: int = 0, rows: Rows = None,
    threshold: float | None = None, top_k: int | None = None,
    discard_ratio: float | None = None, per_head: bool = False,
    grads: Sequence[torch.Tensor | None] | None = None, keep: Rows = None,
) -> torch.Tensor:
    """Attention rollout ``R = Ã^(L) ... Ã^(start)`` (Abnar & Zuidema, 2020).

    Each layer becomes ``Ã = prune(rownorm((1 - r) * fuse(A) + r * I))`` (see the
    module docstring for the order), and layers are multiplied with later layers on
    the left, so ``R[b, i, j]`` is how much output token ``i`` draws on input token
    ``j``.

    Parameters
    ----------
    attentions : sequence of torch.Tensor
        Self-attention per layer, first layer first, each ``[batch, head, N, N]`` or
        already fused ``[batch, N, N]``.
    head_fusion : {"mean", "max", "min"} or torch.Tensor
        See :func:`fuse_heads`. Ignored with ``per_head=True``.
    residual : float
        Identity weight ``r`` in ``[0, 1]`` of :func:`residual_correct`.
    start_layer : int
        First layer (0-based) included in the product; earlier layers are skipped.
    rows : list of int or torch.Tensor, optional
        Read-out positions: a list or ``[R]`` tensor shared by the batch, or a
        ``[batch, R]`` long tensor of per-example positions (e.g. CLIP's EOT). When
        given, only those rows are computed, as row vectors ``r <- r @ Ã^(l)`` from the
        top layer down: O(L n^2) instead of O(L n^3).
    threshold, top_k, discard_ratio : optional
        Pruning per layer, see :func:`prune`. The diagonal and the ``keep`` positions
        are never pruned.
    per_head : bool
        Keep heads apart all the way (each head rolled out with itself); needs
        ``[batch, head, N, N]`` input with the same head count in every layer.
    grads : sequence of torch.Tensor, optional
        ``d(score)/d(A^(l))`` matching ``attentions`` (first layer first), for
        gradient-weighted fusion ``mean_h clamp(grad * A, min=0)``.
    keep : list of int or torch.Tensor, optional
        Positions whose rows and columns pruning must keep; defaults to ``rows``.

    Returns
    -------
    torch.Tensor
        ``[batch, N, N]``; ``[batch, R, N]`` with ``rows``; with ``per_head`` a head
        axis is added: ``[batch, head, N, N]`` or ``[batch, head, R, N]``. Rows sum
        to 1 when ``residual > 0``. float32 (float64 for float64 input).

    Examples
    --------
    >>> attn = [torch.softmax(torch.randn(2, 4, 5, 5), -1) for _ in range(3)]
    >>> rollout(attn).shape
    torch.Size([2, 5, 5])
    >>> cls = rollout(attn, rows=[0])
    >>> torch.allclose(cls, rollout(attn)[:, :1], atol=1e-6)
    True
    """
    _check_options(residual=residual, threshold=threshold, top_k=top_k,
                   discard_ratio=discard_ratio, start_layer=start_layer)
    how = _check_fusion(head_fusion)
    pruning = threshold is not None or top_k is not None or discard_ratio is not None
    # Rows-only with a (weighted) mean over heads scans values block by block.
    blocked = (rows is not None and not pruning and not per_head
               and (isinstance(how, torch.Tensor) or how == "mean"))
    layers, layer_grads = _check_layers(attentions, grads, per_head=per_head,
                                        scan=not blocked)
    for index, attn in enumerate(layers):
        _check_head_weights(how, attn, index)
    if blocked:
        for index in range(min(start_layer, len(layers))):
            _scan_values(layers[index], _where(index, "layer"))
    if start_layer >= len(layers):
        raise ValueError(
            f"start_layer={start_layer} out of range for {len(layers)} layers"
        )
    batch, n = layers[0].shape[0], layers[0].shape[-1]
    idx = None if rows is None else _check_rows(rows, batch, n)
    keep = idx if keep is None else keep

    def prepared(index: int) -> torch.Tensor:
        return _prepare(layers[index], layer_grads[index], how=how,
                        residual=float(residual), per_head=per_head,
                        threshold=threshold, top_k=top_k,
                        discard_ratio=discard_ratio, keep=keep)

    order = range(start_layer, len(layers))
    if idx is None:
        product = None
        for index in order:
            a = prepared(index)
            product = a if product is None else a @ product
        return product
    first = layers[0]
    vectors = torch.nn.functional.one_hot(idx.to(first.device), n).to(first.dtype)
    if per_head:
        vectors = vectors.unsqueeze(1).expand(batch, first.shape[1], -1, -1)
    for index in reversed(order):
        attn, grad = layers[index], layer_grads[index]
        if pruning:
            vectors = vectors @ prepared(index)
        elif blocked:
            vectors = _rows_step_heads(vectors, attn, grad, how, float(residual),
                                       scan_as=_where(index, "layer"))
        else:
            fused = _combine(attn, grad, how=how, per_head=per_head)
            vectors = _rows_step(vectors, fused, float(residual))
    return vectors


class RolloutAccumulator:
    """Streaming rollout: fold one layer at a time, first layer first.

    Keeps only the running product ``R = Ã^(l) ... Ã^(start)``, so memory is
    O(batch n^2) (O(batch head n^2) with ``per_head``) however many layers are added.
    The result equals :func:`rollout` with the same options.

    Because layers arrive first to last, the top-down row-vector shortcut of
    :func:`rollout` is not available: with ``rows`` the full running product is kept
    and the rows are read at :meth:`result` (same memory bound, O(L n^3) time).

    Inputs are detached: streaming is meant for capture without gradients.

    Parameters
    ----------
    head_fusion, residual, start_layer, rows, threshold, top_k, discard_ratio, \
per_head, keep
        As in :func:`rollout`. ``rows`` are validated at the first :meth:`add`.

    Examples
    --------
    >>> attn = [torch.softmax(torch.randn(1, 2, 4, 4), -1) for _ in range(3)]
    >>> acc = RolloutAccumulator(rows=[0])
    >>> for a in attn:
    ...     acc.add(a)
    >>> torch.allclose(acc.result(), rollout(attn, rows=[0]), atol=1e-6)
    True
    """

    def __init__(
        self, *, head_fusion: HeadFusion = "mean", residual: float = 0.5,
        start_layer: int = 0, rows: Rows = None, threshold: float | None = None,
        top_k: int | None = None, discard_ratio: float | None = None,
        per_head: bool = False, keep: Rows = None,
    ) -> None:
        _check_options(residual=residual, threshold=threshold, top_k=top_k,
                       discard_ratio=discard_ratio, start_layer=start_layer)
        self._how = _check_fusion(head_fusion)
        self._residual = float(residual)
        self._start = int(start_layer)
        self._rows = rows
        self._keep = keep
        self._threshold, self._top_k, self._discard = threshold, top_k, discard_ratio
        self._per_head = per_head
        self._idx: torch.Tensor | None = None
        self._first_shape: tuple[int, ...] | None = None
        self._product: torch.Tensor | None = None
        self._count = 0

    @property
    def layers(self) -> int:
        """Number of layers added so far (including skipped ones before start)."""
        return self._count

    def add(self, attn: torch.Tensor, grad: torch.Tensor | None = None) -> None:
        """Fold the next layer, ``[batch, head, N, N]`` or ``[batch, N, N]``.

        Parameters
        ----------
        attn : torch.Tensor
            The next layer's attention weights.
        grad : torch.Tensor, optional
            ``d(score)/d(attn)`` for gradient-weighted fusion.
        """
        index = self._count
        a = _check_tensor(attn.detach() if isinstance(attn, torch.Tensor) else attn,
                          index, square=True)
        g = _check_grad(grad.detach() if isinstance(grad, torch.Tensor) else grad,
                        a, index)
        if self._per_head and a.dim() != 4:
            raise ValueError(
                f"layer {index}: per_head=True needs [batch, head, query, key] weights,"
                f" got shape {tuple(a.shape)}"
            )
        _check_head_weights(self._how, a, index)
        if self._first_shape is None:
            self._first_shape = tuple(a.shape)
            if self._rows is not None:
                self._idx = _check_rows(self._rows, a.shape[0], a.shape[-1])
            if self._keep is None:
                self._keep = self._idx
        else:
            first = self._first_shape
            if a.shape[-1] != first[-1]:
                raise ValueError(
                    f"layer {index}: mismatched N between layers, N={a.shape[-1]} but"
                    f" layer 0 has N={first[-1]}"
                )
            if a.shape[0] != first[0]:
                raise ValueError(
                    f"layer {index}: mismatched batch between layers, batch={a.shape[0]}"
                    f" but layer 0 has batch={first[0]}"
                )
            if self._per_head and a.shape[1] != first[1]:
                raise ValueError(
                    f"layer {index}: per_head=True needs the same number of heads in"
                    f" every layer, got {a.shape[1]} but layer 0 has {first[1]}"
                )
        self._count += 1
        if index < self._start:
            return
        x = _prepare(a, g, how=self._how, residual=self._residual, per_head=self._per_head,
                     threshold=self._threshold, top_k=self._top_k,
                     discard_ratio=self._discard, keep=self._keep)
        self._product = x if self._product is None else x @ self._product

    def result(self) -> torch.Tensor:
        """The rollout of the layers added so far, shaped as :func:`rollout`'s output."""
        if self._product is None:
            raise ValueError(
                f"no layers to roll out: {self._count} added, start_layer={self._start}"
            )
        if self._idx is not None:
            return _take_rows(self._product, self._idx)
        return self._product.clone()


# ------------------------------------------------------------------ attention flow


_FLOW_EDGES_PER_CALL = 1 << 15  # about as many edges per call as fixed cost is worth


def _pair_flows(capacities: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Integer max flows for ``(output i, input j)`` pairs of one example.

    ``capacities`` is ``[L, N, N]`` (``L >= 2``) with ``capacities[l - 1, i, j]`` on the
    edge from node ``(l, i)`` to node ``(l - 1, j)``; level 0 holds the inputs and
    level ``L`` the outputs. Instead of one ``maximum_flow`` call per pair (whose fixed
    cost dominates small graphs), each pair gets its own disjoint copy of the network,
    trimmed to the edges it can use (only row ``i`` leaves the top level, only column
    ``j`` enters the bottom one). A super-source feeds every copy's source and every
    copy's sink drains into a super-sink, both through edges that cannot bind, so one
    call solves many pairs: a max flow of the union restricted to a copy is a max flow
    of that copy, read off the super-source edge. Returns ``[K]`` int64 flows.
    """
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import maximum_flow

    n_layers, n, _ = capacities.shape
    per_copy = (n_layers + 1) * n
    pos = np.arange(n)
    # levels 2..L-1 are copied whole: edges (l, a) -> (l - 1, b)
    levels = np.arange(2, n_layers)[:, None, None]
    mid_src = np.broadcast_to(levels * n + pos[None, :, None], (n_layers - 2, n, n))
    mid_dst = np.broadcast_to((levels - 1) * n + pos[None, None, :], (n_layers - 2, n, n))
    mid_src, mid_dst = mid_src.reshape(-1), mid_dst.reshape(-1)
    mid_cap = capacities[1:n_layers - 1].reshape(-1)
    edges_per_copy = mid_src.size + 4 * n
    # the super-source edge of a copy carries at most its source's out-capacity
    bound = int(capacities[-1].sum(-1).max()) + 1
    chunk = max(1, min(_FLOW_EDGES_PER_CALL // edges_per_copy, _INT32_MAX // bound - 1))
    flows = np.zeros(len(pairs), dtype=np.int64)
    for first in range(0, len(pairs), chunk):
        i, j = pairs[first:first + chunk, 0], pairs[first:first + chunk, 1]
        k = len(i)
        base = 2 + np.arange(k)[:, None] * per_copy  # node 0: super-source, 1: sink
        source = base[:, 0] + n_layers * n + i
        sink = base[:, 0] + j
        out_cap = capacities[-1][i].sum(-1) + 1
        rows = [np.zeros(k, np.int64), (base + mid_src).reshape(-1),
                np.repeat(source, n), (base + n + pos).reshape(-1), sink]
        cols = [source, (base + mid_dst).reshape(-1),
                (base + (n_layers - 1) * n + pos).reshape(-1), np.repeat(sink, n),
                np.ones(k, np.int64)]
        caps = [out_cap, np.tile(mid_cap, k), capacities[-1][i].reshape(-1),
                capacities[0][:, j].T.reshape(-1), out_cap]
        row, col, cap = (np.concatenate(v) for v in (rows, cols, caps))
        live = cap > 0
        n_nodes = 2 + k * per_copy
        graph = csr_array((cap[live].astype(np.int32), (row[live], col[live])),
                          shape=(n_nodes, n_nodes))
        graph.sum_duplicates()
        flow = maximum_flow(graph, 0, 1).flow
        start, stop = flow.indptr[0], flow.indptr[1]
        copy = (flow.indices[start:stop] - 2) // per_copy
        np.add.at(flows, first + copy, np.maximum(flow.data[start:stop], 0))
    return flows


def attention_flow(
    attentions: Sequence[torch.Tensor], *, rows: Rows = None,
    head_fusion: HeadFusion = "mean", residual: float = 0.5, scale: float = 1e6,
) -> torch.Tensor:
    """Attention flow (Abnar & Zuidema, 2020) by exact integer max flow.

    The layers form a flow network with nodes ``(l, i)``, ``l = 0..L``, and an edge
    ``(l, i) -> (l - 1, j)`` of capacity ``Ã^(l)[i, j]`` (fused heads plus residual, as
    in :func:`rollout`). ``F[i, j]`` is the max flow from output node ``(L, i)`` to input
    node ``(0, j)``; as in the original code each output row is then divided by its
    sum.

    Capacities are scaled by ``scale`` and rounded to integers for
    ``scipy.sparse.csgraph.maximum_flow`` (Dinic): each capacity is off by at most
    ``0.5 / scale``, so a raw flow value is off by at most ``0.5 / scale`` times the
    number of edges in a minimum cut (about ``1e-5`` for N up to a few tens with the
    default ``scale=1e6``). The network of an example is built once, vectorised, and
    several ``(i, j)`` pairs are solved per ``maximum_flow`` call as disjoint copies
    behind a super-source and super-sink (see ``_pair_flows``).

    Parameters
    ----------
    attentions : sequence of torch.Tensor
        Self-attention per layer, first layer first, ``[batch, head, N, N]`` or
        ``[batch, N, N]``.
    rows : list of int or torch.Tensor, optional
        Output positions to compute (list, ``[R]`` or ``[batch, R]``); all by default.
    head_fusion : {"mean", "max", "min"} or torch.Tensor
        See :func:`fuse_heads`.
    residual : float
        Identity weight of :func:`residual_correct`.
    scale : float
        Integer resolution of the capacities, ``1 <= scale`` and
        ``scale * (1 + N) < 2**31``.

    Returns
    -------
    torch.Tensor
        ``[batch, N, N]`` or ``[batch, R, N]``, rows sum to 1.

    Examples
    --------
    >>> attn = [torch.softmax(torch.randn(1, 2, 4, 4), -1) for _ in range(2)]
    >>> flow = attention_flow(attn, rows=[0])
    >>> flow.shape, round(float(flow.sum()), 4)
    (torch.Size([1, 1, 4]), 1.0)
    """
    _check_options(residual=residual)
    how = _check_fusion(head_fusion)
    layers, _ = _check_layers(attentions)
    for index, attn in enumerate(layers):
        _check_head_weights(how, attn, index)
    batch, n = layers[0].shape[0], layers[0].shape[-1]
    if not np.isfinite(scale) or scale < 1 or scale * (1 + n) >= _INT32_MAX:
        raise ValueError(
            f"scale must be >= 1 with scale * (1 + N) < 2**31 (N={n}), got {scale}"
        )
    idx = torch.arange(n).expand(batch, n) if rows is None else _check_rows(rows, batch, n)
    fused = torch.stack([_residual(_fuse(a, how, None), float(residual)) for a in layers])
    capacities = np.rint(fused.to(torch.float64).cpu().numpy() * scale)  # [L, B, N, N]
    capacities = capacities.astype(np.int64)
    flows = np.zeros((batch, idx.shape[1], n), dtype=np.float64)
    for b in range(batch):
        if len(layers) == 1:  # one edge per pair: the flow is its capacity
            flows[b] = capacities[0, b][idx[b].numpy()]
            continue
        pairs = np.stack(np.meshgrid(idx[b].numpy(), np.arange(n), indexing="ij"), -1)
        flows[b] = _pair_flows(capacities[:, b], pairs.reshape(-1, 2)).reshape(-1, n)
    return rownorm(torch.from_numpy(flows / scale).to(layers[0].dtype))


# ------------------------------------------------------------ value-aware weights


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


# --------------------------------------------------------------- relevance rules


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


def relevance_normalise(R: torch.Tensor) -> torch.Tensor:
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
    >>> relevance_normalise(torch.tensor([[3.0, 2.0], [0.0, 1.0]]))
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
    transpose: bool = True, normalise: bool = True,
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
        ``[..., Q, Q]`` self-relevance of the attended stream.
    A_sq : torch.Tensor
        ``[..., S, Q]`` gradient-weighted cross-attention (query = ``s``, key = ``q``).
    transpose : bool
        Use ``(R̄^ss)^T`` as in the paper; False uses ``R̄^ss`` (left-multiplication by
        the querying stream's relevance, the rollout-style composition).
    normalise : bool
        Apply :func:`relevance_normalise` to ``R_ss`` and ``R_qq`` first; False uses them
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
    if r_qq.shape[-2:] != (q, q):
        raise ValueError(
            f"R_qq: shape {tuple(r_qq.shape)} must be [..., Q, Q] with Q={q} key columns"
            f" of A_sq {tuple(a.shape)}"
        )
    if normalise:
        r_ss, r_qq = relevance_normalise(r_ss), relevance_normalise(r_qq)
    dtype = torch.promote_types(torch.promote_types(r_ss.dtype, r_qq.dtype), a.dtype)
    left = r_ss.to(dtype).transpose(-1, -2) if transpose else r_ss.to(dtype)
    return left @ a.to(dtype) @ r_qq.to(dtype)

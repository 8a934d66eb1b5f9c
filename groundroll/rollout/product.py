"""Rollout: the product of the corrected layers, full, rows-only, or streamed.

``rollout`` multiplies ``Ã^(L) ... Ã^(start)`` (later layers on the left); with
``rows=`` it multiplies row vectors from the top layer down instead (O(L n^2)), and
:class:`RolloutAccumulator` folds layers one at a time as a capture produces them.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ._checks import (
    HeadFusion,
    Rows,
    _check_fusion,
    _check_grad,
    _check_head_weights,
    _check_layers,
    _check_options,
    _check_rows,
    _check_tensor,
    _scan_values,
    _where,
)
from .fusion import _combine, _residual
from .pruning import _prune

__all__ = ["rollout", "RolloutAccumulator"]


def _rows_step(vectors: torch.Tensor, a: torch.Tensor, residual: float) -> torch.Tensor:
    """``vectors @ residual_correct(a)`` without forming the corrected matrix.

    ``rownorm((1 - r) A + r I) = D^-1 ((1 - r) A + r I)`` with ``D`` the row sums, so
    ``v @ Ã = (1 - r) (w @ A) + r w`` with ``w = v / diag(D)``: two passes over ``A``.
    A zero row of ``(1 - r) A + r I`` contributes nothing either way.
    """
    sums = (1.0 - residual) * a.sum(-1) + residual  # [B, (H,) N]
    w = vectors / torch.where(sums == 0, 1.0, sums).unsqueeze(-2)
    return (1.0 - residual) * (w @ a) + residual * w


def _support(vectors: torch.Tensor) -> torch.Tensor | None:
    """The columns where any row vector is nonzero, or None when that is most of them.

    Rows of a layer that every vector weighs by zero cannot change the product, so the
    step need not read them: the top layer of a rows-only rollout starts from one-hot
    vectors (R of its N rows matter), and under causal attention an early read-out
    position keeps reaching only earlier ones.
    """
    live = (vectors != 0).reshape(-1, vectors.shape[-1]).any(0)
    count = int(live.sum())
    return None if 2 * count > live.numel() else live.nonzero().squeeze(1)


# Rows of the fused layer (all heads summed) per block: small enough to stay in cache
# while their row sums and their product with the vectors are read.
_FUSED_BLOCK_BYTES = 2 << 20


def _rows_step_flat(vectors: torch.Tensor, attn: torch.Tensor, coef: torch.Tensor | None,
                    residual: float, where: str, *, live: torch.Tensor | None = None,
                    workspace: dict | None = None) -> torch.Tensor:
    """:func:`_rows_step` for a (weighted) mean over heads in one read of ``attn``.

    With ``c_h`` the head weights (summing to 1), the fused layer is
    ``A = sum_h c_h A_h``. On the CPU it is formed one block of rows at a time, a block
    small enough to stay in cache (``_FUSED_BLOCK_BYTES``), by a reduction over the heads
    that reads each weight once; the block's row sums and its product with the vectors
    then read the fused block from cache, so each layer's ``[H, N, N]`` weights leave
    memory once. On a GPU the whole layer is one block (fewer kernel launches). The row
    sums also catch NaN and inf (either makes its row's sum non-finite, whatever the
    head's weight), so validating costs no pass of its own.
    Given ``live`` (:func:`_support`), only those rows are read: at the top layer that is
    R rows instead of N, and values in rows that cannot reach the result go unchecked.
    Without autograd the mean is summed into one buffer kept in ``workspace`` (a dict
    shared by the layers of one rollout): fresh memory for every block costs page
    faults that can take longer than the read itself.
    """
    if attn.dim() == 3:
        attn = attn.unsqueeze(1)
    batch, heads, n, _ = attn.shape
    if live is not None:
        attn = attn.index_select(2, live.to(attn.device))  # [B, H, k, N]
        vectors_read = vectors.index_select(-1, live)      # [B, R, k]
    else:
        vectors_read = vectors
    k = attn.shape[2]
    if coef is not None:
        coef = coef.to(attn.dtype)
    step = (max(1, _FUSED_BLOCK_BYTES // (batch * n * attn.element_size()))
            if attn.device.type == "cpu" else max(k, 1))
    out = torch.zeros(vectors.shape[:-1] + (n,), dtype=attn.dtype, device=attn.device)
    w = torch.empty(vectors_read.shape, dtype=attn.dtype, device=attn.device)
    for i0 in range(0, k, step):
        rows = attn[:, :, i0:i0 + step]                    # [B, H, b, N]
        if heads == 1:                  # already fused (one head's weight is exactly 1)
            fused = rows[:, 0]
        elif coef is None and workspace is not None and not (rows.requires_grad
                                                             or vectors.requires_grad):
            shape = (batch, min(step, k), n)               # one read of the block
            key = (shape, rows.dtype, rows.device)
            if key not in workspace:
                workspace[key] = torch.empty(shape, dtype=rows.dtype, device=rows.device)
            fused = torch.sum(rows, 1, out=workspace[key][:, :rows.shape[2]])
            fused.mul_(1.0 / heads)                        # [B, b, N]
        elif coef is None:
            fused = rows.sum(1).mul_(1.0 / heads)
        else:
            fused = torch.einsum("h,bhij->bij", coef, rows)
        sums = (1.0 - residual) * fused.sum(-1) + residual  # [B, b], from cache
        if not bool(torch.isfinite(sums).all()):
            _scan_values(rows, where)                      # names the problem
            raise ValueError(f"{where}: contains NaN or inf")  # pragma: no cover
        block = vectors_read[..., i0:i0 + step] / torch.where(sums == 0, 1.0,
                                                              sums).unsqueeze(-2)
        w[..., i0:i0 + step] = block
        out = out + block @ fused                          # [B, R, N], from cache
    out = (1.0 - residual) * out
    if live is None:
        return out + residual * w
    return out.index_add(-1, live, residual * w)


# Row blocks of all heads small enough to stay in cache between the row sums and the
# product, for gradient-weighted fusion (whose weights ``clamp(grad * A)`` are formed
# per block rather than for the whole layer).
_ROW_BLOCK_BYTES = 2 << 20


def _rows_step_heads(vectors, attn, grad, how, residual: float, *,
                     scan_as: str | None = None, nonnegative: bool = True) -> torch.Tensor:
    """:func:`_rows_step` for a weighted mean over gradient-weighted heads, without
    fusing the heads.

    ``v @ sum_h c_h A_h = sum_h c_h (v @ A_h)``, and the product decomposes over query
    rows: ``w @ A = sum over row blocks of w[block] @ A[block]``. Each block of rows (all
    heads) is scanned for bad values (when ``scan_as`` names the layer), weighted by its
    gradient, summed and multiplied while it is in cache.
    """
    if attn.dim() == 3:
        x = attn if grad is None else (grad * attn).clamp(min=0)
        if scan_as is not None:
            _scan_values(attn, scan_as, nonnegative=nonnegative)
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
            _scan_values(block, scan_as, nonnegative=nonnegative)
        if grad is not None:
            block = (grad[:, :, i0:i0 + step] * block).clamp(min=0)
        sums = (1.0 - residual) * mix(block.sum(-1)) + residual  # [B, b]
        w = vectors[..., i0:i0 + step] / torch.where(sums == 0, 1.0, sums).unsqueeze(-2)
        out += (1.0 - residual) * mix(w.unsqueeze(1) @ block)  # [B, R, N]
        out[..., i0:i0 + step] += residual * w
    return out


def _prepare(attn, grad, *, how, residual, per_head, prune_threshold, top_k,
             discard_ratio, keep) -> torch.Tensor:
    """Fusion -> residual -> pruning for one validated layer."""
    x = _residual(_combine(attn, grad, how=how, per_head=per_head), residual)
    if prune_threshold is not None or top_k is not None or discard_ratio is not None:
        x = _prune(x, prune_threshold=prune_threshold, top_k=top_k,
                   discard_ratio=discard_ratio, keep=keep)
    return x


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
    prune_threshold: float | None = None, top_k: int | None = None,
    discard_ratio: float | None = None, per_head: bool = False,
    grads: Sequence[torch.Tensor | None] | None = None, keep: Rows = None,
    check_values: str | None = None,
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
    prune_threshold, top_k, discard_ratio : optional
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
    check_values : {None, "all", "finite"}, optional
        Which value checks the weights get. ``"all"``: NaN, inf and negative entries
        raise ValueError. ``"finite"``: NaN and inf only. None (default): what costs no
        pass of its own, i.e. ``"finite"`` on the rows-only path with a (weighted) mean
        over heads and no gradients or pruning (the row sums that path reads anyway
        show NaN and inf; negatives would need a third read of every layer, so ask
        for ``"all"``), ``"all"`` everywhere else. That path reads only the rows whose
        weight can reach the result (at the top layer, the ``rows`` themselves), so with
        None a NaN in a row that cannot change the result goes unseen; ``"finite"``
        reads every row.

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
    _check_options(residual=residual, prune_threshold=prune_threshold, top_k=top_k,
                   discard_ratio=discard_ratio, start_layer=start_layer)
    how = _check_fusion(head_fusion)
    if check_values not in (None, "all", "finite"):
        raise ValueError(f"check_values must be None, 'all' or 'finite', got {check_values!r}")
    pruning = prune_threshold is not None or top_k is not None or discard_ratio is not None
    # Rows-only with a (weighted) mean over heads scans values while it multiplies.
    blocked = (rows is not None and not pruning and not per_head
               and (isinstance(how, torch.Tensor) or how == "mean"))
    # Without gradients that path reads each layer once (_rows_step_flat).
    flat = blocked and grads is None and check_values != "all"
    nonnegative = check_values == "all" or (check_values is None and not flat)
    layers, layer_grads = _check_layers(attentions, grads, per_head=per_head,
                                        scan=not blocked, nonnegative=nonnegative)
    for index, attn in enumerate(layers):
        _check_head_weights(how, attn, index)
    if blocked:
        for index in range(min(start_layer, len(layers))):
            _scan_values(layers[index], _where(index, "layer"), nonnegative=nonnegative)
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
                        prune_threshold=prune_threshold, top_k=top_k,
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
    sparse = check_values is None   # read only the rows that reach the result
    workspace: dict = {}            # the flat path's fused block, reused by every layer
    for index in reversed(order):
        attn, grad = layers[index], layer_grads[index]
        if pruning:
            vectors = vectors @ prepared(index)
        elif flat:
            coef = how / how.sum() if isinstance(how, torch.Tensor) else None
            live = _support(vectors) if sparse else None
            # With residual > 0 a vector's support only grows from layer to layer: once
            # it covers most columns, stop looking.
            sparse = sparse and (live is not None or residual == 0)
            vectors = _rows_step_flat(vectors, attn, coef, float(residual),
                                      _where(index, "layer"), live=live,
                                      workspace=workspace)
        elif blocked:
            vectors = _rows_step_heads(vectors, attn, grad, how, float(residual),
                                       scan_as=_where(index, "layer"),
                                       nonnegative=nonnegative)
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
    head_fusion, residual, start_layer, rows, prune_threshold, top_k, discard_ratio, \
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
        start_layer: int = 0, rows: Rows = None, prune_threshold: float | None = None,
        top_k: int | None = None, discard_ratio: float | None = None,
        per_head: bool = False, keep: Rows = None,
    ) -> None:
        _check_options(residual=residual, prune_threshold=prune_threshold, top_k=top_k,
                       discard_ratio=discard_ratio, start_layer=start_layer)
        self._how = _check_fusion(head_fusion)
        self._residual = float(residual)
        self._start = int(start_layer)
        self._rows = rows
        self._keep = keep
        self._threshold, self._top_k, self._discard = prune_threshold, top_k, discard_ratio
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
                     prune_threshold=self._threshold, top_k=self._top_k,
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


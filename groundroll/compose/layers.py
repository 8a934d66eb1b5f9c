"""Reading a trace's layers for composition: each layer becomes a core-prepared matrix.

:class:`LayerReader` holds the per-layer options a method uses (heads, fusion,
value weighting, residual, pruning) and turns captured layers into matrices by calling
the rollout core: :func:`~groundroll.rollout.fuse_heads`,
:func:`~groundroll.rollout.gradient_weighted`, :func:`~groundroll.rollout.value_weighted`,
:func:`~groundroll.rollout.residual_correct`, :func:`~groundroll.rollout.prune` and
:func:`~groundroll.rollout.rollout`. The core modules are looked up at call time, so
the composition always runs the core's current code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..rollout import fusion, product, pruning, value
from ..trace import AttentionLayer, Trace

__all__ = ["LayerReader"]


@dataclass(frozen=True)
class LayerReader:
    """How one composition reads layers from a trace.

    Attributes
    ----------
    trace : Trace
    call : int
        Captured forward call to read (last by default).
    heads : tuple of int or None
        Heads kept before fusion.
    head_fusion : str or torch.Tensor
        See :func:`groundroll.rollout.fuse_heads`.
    per_head : bool
        Keep heads apart (no fusion).
    weighting : {"attention", "norm"}
        ``"norm"``: value-aware weights (:func:`groundroll.rollout.value_weighted`).
    residual : float
        Identity weight of :func:`groundroll.rollout.residual_correct`.
    prune_threshold, top_k : optional
        Pruning of each prepared layer (:func:`groundroll.rollout.prune`).
    keep : torch.Tensor or None
        ``[batch, R]`` read-out rows of the target stream that pruning must keep.
    target : str or None
        Token stream of the rows (``keep`` applies to layers whose queries are these).
    """

    trace: Trace
    call: int = -1
    heads: tuple[int, ...] | None = None
    head_fusion: object = "mean"
    per_head: bool = False
    weighting: str = "attention"
    residual: float = 0.5
    prune_threshold: float | None = None
    top_k: int | None = None
    keep: torch.Tensor | None = None
    target: str | None = None

    # ------------------------------------------------------------------ raw tensors

    def stream(self, name: str | None) -> list[AttentionLayer]:
        return [] if name is None else self.trace.stream(name, call=self.call)

    def _select_heads(self, t: torch.Tensor) -> torch.Tensor:
        if self.heads is None:
            return t
        if max(self.heads) >= t.shape[1] or min(self.heads) < -t.shape[1]:
            raise ValueError(f"heads={list(self.heads)} out of range for {t.shape[1]} heads")
        return t[:, list(self.heads)]

    def weights(self, layer: AttentionLayer) -> torch.Tensor:
        """``[batch, head, query, key]`` after value weighting and head selection."""
        w = layer.weights.detach().float()
        if self.weighting == "norm":
            if layer.value_norms is None:
                raise ValueError(
                    f"{layer.stream} layer {layer.index}: weighting='norm' needs value"
                    " norms; capture with values=True"
                )
            w = value.value_weighted(w, layer.value_norms.detach().float())
        return self._select_heads(w)

    def grad(self, layer: AttentionLayer) -> torch.Tensor:
        if layer.grad is None:
            raise ValueError(
                f"method='relevance' needs gradients but {layer.stream} layer {layer.index}"
                " has none: capture with grads=True and call backward() on a score (a"
                " token's log-probability, an image-text logit) before composing"
            )
        return self._select_heads(layer.grad.detach().float())

    # ------------------------------------------------------------ prepared matrices

    def fused(self, layer: AttentionLayer) -> torch.Tensor:
        """``[batch, (head,) query, key]`` fused weights, not renormalised."""
        w = self.weights(layer)
        return w if self.per_head else fusion.fuse_heads(w, self.head_fusion)

    def gradient_weighted(self, layer: AttentionLayer) -> torch.Tensor:
        """``Ā``: gradient-weighted layer, per head with ``per_head``."""
        return fusion.gradient_weighted(self.weights(layer), self.grad(layer),
                                        per_head=self.per_head)

    def _keep_for(self, layer: AttentionLayer):
        return self.keep if layer.query_stream == self.target else None

    def _pruned(self, a: torch.Tensor, layer: AttentionLayer, *, diagonal: bool = True):
        if self.prune_threshold is None and self.top_k is None:
            return a
        return pruning.prune(a, prune_threshold=self.prune_threshold, top_k=self.top_k,
                             diagonal=diagonal, keep=self._keep_for(layer))

    def self_matrix(self, layer: AttentionLayer) -> torch.Tensor:
        """``Ã``: fused, residual-corrected, pruned self-attention."""
        a = fusion.residual_correct(self.fused(layer), self.residual)
        return self._pruned(a, layer)

    def cross_matrix(self, layer: AttentionLayer) -> torch.Tensor:
        """``C``: fused, row-normalised, pruned cross-attention ``[batch, (head,) T, K]``."""
        # query i and key i are different tokens: no diagonal to protect, even if T == K
        return self._pruned(fusion.rownorm(self.fused(layer)), layer, diagonal=False)

    def rollout(self, layers: list[AttentionLayer], start_layer: int = 0):
        """Core :func:`~groundroll.rollout.rollout` of one self-attention stream's layers
        (None when there are none)."""
        if not layers:
            return None
        keep = self._keep_for(layers[0])
        return product.rollout(
            [self.weights(layer) for layer in layers], head_fusion=self.head_fusion,
            residual=self.residual, start_layer=start_layer, per_head=self.per_head,
            prune_threshold=self.prune_threshold, top_k=self.top_k, keep=keep)

    def hop_rows(self, hops, rows, matrix):
        """Carry ``rows`` (what the previous tokens hold, or None for the source tokens
        themselves) through the pooling hops: ``rows <- M_hop @ rows`` per hop layer."""
        for name in hops:
            for layer in self.stream(name):
                m = matrix(layer)
                rows = m if rows is None else m @ with_heads(rows, m, self.per_head)
        return rows


# ------------------------------------------------------------------------ helpers


def eye_like(n: int, like: torch.Tensor) -> torch.Tensor:
    """``[..., n, n]`` identities with ``like``'s leading axes, dtype and device."""
    eye = torch.eye(n, dtype=like.dtype, device=like.device)
    return eye.expand(*like.shape[:-2], n, n).clone()


def align_keys(rows: torch.Tensor, keys: int) -> torch.Tensor:
    """Drop leading pooled rows the next block does not see (open_clip CoCa passes the
    pooled tokens after the first, contrastive one, to its decoder)."""
    extra = rows.shape[-2] - keys
    if extra < 0:
        raise ValueError(
            f"cross-attention attends to {keys} tokens but the previous hop gives only"
            f" {rows.shape[-2]}"
        )
    return rows[..., extra:, :]


def attended_rows(carried: torch.Tensor | None, attn: torch.Tensor,
                  per_head: bool, *, pooled: bool = False) -> torch.Tensor:
    """What each key of ``attn`` ``[batch, (head,) T, K]`` carries from the source:
    the rows of ``carried`` (the source rollout or relevance), or the identity when the
    keys are the source tokens themselves. Only rows that came through pooling hops
    (``pooled``) may outnumber the keys; their last ``K`` are used (:func:`align_keys`).

    Raises
    ------
    ValueError
        When the source stream's tokens are not the keys the cross-attention reads
        (a tower whose output drops or adds tokens before the decoder sees it).
    """
    keys = attn.shape[-1]
    if carried is None:
        return eye_like(keys, attn)
    if not pooled and carried.shape[-2] != keys:
        raise ValueError(
            f"the source stream has {carried.shape[-2]} tokens but the cross-attention"
            f" reads {keys}: the tokens between them are not the same (padding or tokens"
            " dropped on the way), so the chain would pair the wrong ones; start the"
            " chain at the cross-attention keys (a Chain without source_self)")
    return align_keys(with_heads(carried, attn, per_head), keys)


def with_heads(t: torch.Tensor, like: torch.Tensor, per_head: bool) -> torch.Tensor:
    """Broadcast a head-free tensor to ``like``'s head axis in head-specific mode."""
    if per_head and t.dim() == like.dim() - 1:
        return t.unsqueeze(1).expand(like.shape[0], like.shape[1], *t.shape[1:])
    return t


def layer_indices(layers, n: int) -> list[int]:
    """Non-negative layer indices (negative ones count from the end), range-checked."""
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for i in layers:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise ValueError(f"layer {i} out of range for {n} layers")
        out.append(j)
    return out


def decoder_blocks(reader: LayerReader, chain, layers, *, required: bool = False) -> list:
    """``[(index, self_layer or None, cross_layer or None)]`` in computation order
    (``required``: raise when the selection is empty)."""
    selfs = {l.index: l for l in reader.stream(chain.target_self)}
    crosses = {l.index: l for l in reader.stream(chain.target_cross)}
    indices = sorted(set(selfs) | set(crosses))
    if layers is not None:
        wanted = set(layer_indices(layers, len(indices)))
        indices = [i for i in indices if i in wanted]
    if required and not indices:
        raise ValueError(f"no decoder layers selected from {chain.target_cross!r}")
    return [(i, selfs.get(i), crosses.get(i)) for i in indices]

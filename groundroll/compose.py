"""End-to-end maps through encoder, cross-attention and decoder.

:func:`compose` turns a :class:`~groundroll.trace.Trace` into a target x source map by
chaining the streams an adapter exposes:

========================  ===========================================================
family                    chain (source -> target)
========================  ===========================================================
seq2seq (Marian, T5, ..)  ``encoder`` -> ``cross`` -> ``decoder``
open_clip CoCa            ``vision`` -> ``pool`` -> ``text`` -> ``decoder_cross`` / ``decoder``
BLIP retrieval            ``vision`` -> ``text_cross`` / ``text``
SigLIP pooling head       ``vision`` -> ``pool``
dual encoders (CLIP)      one stream: ``vision`` or ``text`` alone (``source == target``)
========================  ===========================================================

A chain is plain data (:class:`Chain`); pass your own for a model family whose streams
are named differently.

Everything here is tensors in, tensors out; shapes are written ``[batch, query, key]``
with a ``head`` axis after ``batch`` in head-specific mode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .rollout import (
    attention_flow,
    fuse_heads,
    prune,
    relevance_normalise,
    residual_correct,
    rownorm,
    value_weighted,
)
from .trace import CROSS, SELF, AttentionLayer, Tokens, Trace

__all__ = ["Chain", "Composition", "compose", "chain_for", "joint_graph", "CHAINS", "METHODS"]

METHODS = ("raw", "rollout", "relevance", "norm", "flow")


@dataclass(frozen=True)
class Chain:
    """Which streams carry information from the source tokens to the target tokens.

    Attributes
    ----------
    source, target : str
        Token streams (keys of :attr:`Trace.tokens`) of the map's columns and rows.
    source_self : str or None
        Self-attention layer stream over the source tokens (``"encoder"``, ``"vision"``).
    hops : tuple of str
        Cross-attention streams between the source and the target cross-attention whose
        queries are learned (attentional poolers): ``pooled = C @ source``, no residual.
    target_prelude : str or None
        Self-attention stream the target tokens pass through before the decoder
        (CoCa's unimodal text tower). Its first ``T`` positions are used.
    target_self : str or None
        Self-attention stream of the decoder, interleaved with ``target_cross`` layer by
        layer (self block first).
    target_cross : str or None
        Cross-attention stream from target queries to the last hop's (or the source's)
        tokens.
    cross_residual : bool
        Whether the target cross-attention block has a residual connection (False for
        pooling heads whose queries are learned constants).
    """

    source: str
    target: str
    source_self: str | None = None
    hops: tuple[str, ...] = ()
    target_prelude: str | None = None
    target_self: str | None = None
    target_cross: str | None = None
    cross_residual: bool = True

    @property
    def streams(self) -> tuple[str, ...]:
        named = (self.source_self, *self.hops, self.target_prelude, self.target_self,
                 self.target_cross)
        return tuple(s for s in named if s is not None)


CHAINS: tuple[Chain, ...] = (
    Chain("encoder", "decoder", source_self="encoder", target_self="decoder",
          target_cross="cross"),
    Chain("vision", "decoder", source_self="vision", hops=("pool",),
          target_prelude="text", target_self="decoder", target_cross="decoder_cross"),
    Chain("vision", "text", source_self="vision", target_self="text",
          target_cross="text_cross"),
    Chain("vision", "pool_queries", source_self="vision", target_cross="pool",
          cross_residual=False),
)


def chain_for(trace: Trace, source: str, target: str) -> Chain:
    """The :class:`Chain` from ``source`` to ``target`` among :data:`CHAINS` whose
    streams the trace holds; a single self-attention stream when ``source == target``.
    """
    if source == target:
        selfs = [s for s, layers in trace.layers.items()
                 if layers and layers[0].kind == SELF and layers[0].query_stream == source]
        if not selfs:
            raise ValueError(
                f"no self-attention stream over tokens {source!r}; captured streams:"
                f" {trace.streams}"
            )
        return Chain(source, target, source_self=selfs[0])
    for chain in CHAINS:
        needed = (chain.target_cross, *chain.hops)
        if (chain.source, chain.target) == (source, target) and all(
                s in trace.layers for s in needed):
            return chain
    known = ", ".join(f"{c.source}->{c.target}" for c in CHAINS)
    raise ValueError(
        f"no known chain from {source!r} to {target!r} in a trace with streams"
        f" {trace.streams}. Known chains: {known}, or source == target for one"
        " self-attention stream. Pass chain=Chain(...) to describe another model."
    )


@dataclass
class Composition:
    """Result of :func:`compose`.

    Attributes
    ----------
    source_map : torch.Tensor
        ``[batch, T, S]`` target x source map (``[batch, head, T, S]`` head-specific).
        For ``rollout`` each row, together with ``target_map``'s, sums to 1.
    target_map : torch.Tensor or None
        ``[batch, T, T]`` target x target part (None for ``raw``/``norm``).
    source, target : str
        Token streams of the columns and rows.
    method : str
    settings : dict
        Every option the map was computed with.
    source_tokens, target_tokens : Tokens or None
        Token metadata of the two streams, where the trace had it.
    """

    source_map: torch.Tensor
    target_map: torch.Tensor | None
    source: str
    target: str
    method: str
    settings: dict = field(default_factory=dict)
    source_tokens: Tokens | None = None
    target_tokens: Tokens | None = None

    def save(self, path: str | Path) -> None:
        """Save the maps and settings with ``torch.save`` (tokens are not saved)."""
        torch.save({"source_map": self.source_map.detach().cpu(),
                    "target_map": None if self.target_map is None
                    else self.target_map.detach().cpu(),
                    "source": self.source, "target": self.target,
                    "method": self.method, "settings": self.settings}, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> "Composition":
        data = torch.load(Path(path), weights_only=True)
        return cls(**data)


# ------------------------------------------------------------------ layer preparation


@dataclass(frozen=True)
class _Options:
    method: str
    head_fusion: object
    residual: float
    heads: tuple[int, ...] | None
    per_head: bool
    weighting: str
    threshold: float | None
    top_k: int | None
    transpose: bool
    normalise: bool
    # Read-out target rows ([batch, R]) that pruning must keep, and their token stream.
    keep: torch.Tensor | None = None
    target: str | None = None


def _select_heads(t: torch.Tensor, heads) -> torch.Tensor:
    if heads is None:
        return t
    if max(heads) >= t.shape[1] or min(heads) < -t.shape[1]:
        raise ValueError(f"heads={list(heads)} out of range for {t.shape[1]} heads")
    return t[:, list(heads)]


def _weights(layer: AttentionLayer, opts: _Options) -> torch.Tensor:
    """``[batch, head, query, key]`` weights after head selection and value weighting."""
    w = layer.weights.detach().float()
    if opts.weighting == "norm":
        if layer.value_norms is None:
            raise ValueError(
                f"{layer.stream} layer {layer.index}: weighting='norm' needs value norms;"
                " capture with values=True"
            )
        w = value_weighted(w, layer.value_norms.detach().float())
    return _select_heads(w, opts.heads)


def _grad(layer: AttentionLayer, opts: _Options) -> torch.Tensor:
    if layer.grad is None:
        raise ValueError(
            f"method='relevance' needs gradients but {layer.stream} layer {layer.index}"
            " has none: capture with grads=True and call backward() on a score (a"
            " token's log-probability, an image-text logit) before composing"
        )
    return _select_heads(layer.grad.detach().float(), opts.heads)


def _fused(layer: AttentionLayer, opts: _Options, *, grad: bool = False) -> torch.Tensor:
    """Fused ``[batch, (head,) query, key]`` weights, not renormalised."""
    w = _weights(layer, opts)
    g = _grad(layer, opts) if grad else None
    if opts.per_head:
        return w if g is None else (g * w).clamp(min=0)
    return fuse_heads(w, "mean" if grad else opts.head_fusion, g)


def _pruned(a: torch.Tensor, layer: AttentionLayer, opts: _Options, *,
            diagonal: bool = True) -> torch.Tensor:
    if opts.threshold is None and opts.top_k is None:
        return a
    keep = opts.keep if layer.query_stream == opts.target else None
    return prune(a, threshold=opts.threshold, top_k=opts.top_k, diagonal=diagonal,
                 keep=keep)


def _self_matrix(layer: AttentionLayer, opts: _Options) -> torch.Tensor:
    """``Ã``: fused, residual-corrected, pruned self-attention."""
    return _pruned(residual_correct(_fused(layer, opts), opts.residual), layer, opts)


def _cross_matrix(layer: AttentionLayer, opts: _Options) -> torch.Tensor:
    """Fused, row-normalised, pruned cross-attention ``C`` ``[batch, (head,) T, K]``."""
    # query i and key i are different tokens: no diagonal to protect, even if T == K
    return _pruned(rownorm(_fused(layer, opts)), layer, opts, diagonal=False)


def _eye(n: int, like: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(n, dtype=like.dtype, device=like.device)
    return eye.expand(*like.shape[:-2], n, n).clone()


def _align_keys(rows: torch.Tensor, keys: int) -> torch.Tensor:
    """Drop leading pooled rows the next block does not see (open_clip CoCa passes the
    pooled tokens after the first, contrastive one, to its decoder)."""
    extra = rows.shape[-2] - keys
    if extra < 0:
        raise ValueError(
            f"cross-attention attends to {keys} tokens but the previous hop gives only"
            f" {rows.shape[-2]}"
        )
    return rows[..., extra:, :]


def _stream(trace: Trace, name: str | None, call: int) -> list[AttentionLayer]:
    return [] if name is None else trace.stream(name, call=call)


def _with_heads(t: torch.Tensor, like: torch.Tensor, per_head: bool) -> torch.Tensor:
    """Broadcast a head-free tensor to ``like``'s head axis in head-specific mode."""
    if per_head and t.dim() == like.dim() - 1:
        return t.unsqueeze(1).expand(like.shape[0], like.shape[1], *t.shape[1:])
    return t


# ---------------------------------------------------------------------- the methods


def _source_rollout(layers, opts, start_layer) -> torch.Tensor | None:
    product = None
    for layer in layers[start_layer:]:
        a = _self_matrix(layer, opts)
        product = a if product is None else a @ product
    return product


def _decoder_layers(chain: Chain, trace: Trace, call: int, layers) -> list:
    """``[(index, self_layer or None, cross_layer or None)]`` in computation order."""
    selfs = {l.index: l for l in _stream(trace, chain.target_self, call)}
    crosses = {l.index: l for l in _stream(trace, chain.target_cross, call)}
    indices = sorted(set(selfs) | set(crosses))
    if layers is not None:
        wanted = set(_layer_indices(layers, len(indices)))
        indices = [i for i in indices if i in wanted]
    return [(i, selfs.get(i), crosses.get(i)) for i in indices]


def _layer_indices(layers, n: int) -> list[int]:
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for i in layers:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise ValueError(f"layer {i} out of range for {n} layers")
        out.append(j)
    return out


def _rollout(trace, chain, opts, *, call, layers, start_layer):
    src_layers = _stream(trace, chain.source_self, call)
    r_src = _source_rollout(src_layers, opts, start_layer)
    if chain.source == chain.target:
        return r_src, None
    hop = r_src
    for name in chain.hops:
        for layer in _stream(trace, name, call):
            c = _cross_matrix(layer, opts)
            hop = c if hop is None else c @ _with_heads(hop, c, opts.per_head)
    blocks = _decoder_layers(chain, trace, call, layers)
    if not blocks:
        raise ValueError(f"no decoder layers selected from {chain.target_cross!r}")
    first = next(l for _, s, c in blocks for l in (c, s) if l is not None)
    t = first.queries
    like = first.weights.detach().float()
    like = _select_heads(like, opts.heads) if opts.per_head else like[:, 0]
    prelude = _source_rollout(_stream(trace, chain.target_prelude, call), opts, 0)
    r_tt = _eye(t, like) if prelude is None else _with_heads(
        prelude[..., :t, :t], like, opts.per_head)
    r_ts = None
    r = opts.residual if chain.cross_residual else 0.0
    for _, self_layer, cross_layer in blocks:
        if self_layer is not None:
            a = _self_matrix(self_layer, opts)
            r_tt = a @ r_tt
            r_ts = None if r_ts is None else a @ r_ts
        if cross_layer is not None:
            c = _cross_matrix(cross_layer, opts)
            keys = c.shape[-1]
            if hop is None:
                source_rows = _eye(keys, c)
            else:
                source_rows = _align_keys(_with_heads(hop, c, opts.per_head), keys)
            reached = c @ source_rows
            r_ts = (1 - r) * reached if r_ts is None else r * r_ts + (1 - r) * reached
            r_tt = r * r_tt
    if r_ts is None:
        raise ValueError(f"no cross-attention layers selected from {chain.target_cross!r}")
    return r_ts, r_tt


def _raw(trace, chain, opts, *, call, layers):
    if chain.source == chain.target:
        stream = _stream(trace, chain.source_self, call)
        chosen = [stream[i] for i in _layer_indices(-1 if layers is None else layers,
                                                    len(stream))]
        return torch.stack([rownorm(_fused(l, opts)) for l in chosen]).mean(0), None
    crosses = _stream(trace, chain.target_cross, call)
    if not crosses:
        raise ValueError(f"trace has no layers in {chain.target_cross!r}")
    idx = range(len(crosses)) if layers is None else _layer_indices(layers, len(crosses))
    c = torch.stack([_cross_matrix(crosses[i], opts) for i in idx]).mean(0)
    hop = None
    for name in chain.hops:
        for layer in _stream(trace, name, call):
            h = _cross_matrix(layer, opts)
            hop = h if hop is None else h @ _with_heads(hop, h, opts.per_head)
    if hop is not None:
        c = c @ _align_keys(_with_heads(hop, c, opts.per_head), c.shape[-1])
    return c, None


def _relevance(trace, chain, opts, *, call, layers, start_layer):
    def a_bar(layer):
        return _fused(layer, opts, grad=True)

    src_layers = _stream(trace, chain.source_self, call)[start_layer:]
    r_ss = None
    for layer in src_layers:
        a = a_bar(layer)
        r_ss = _eye(a.shape[-1], a) if r_ss is None else r_ss
        r_ss = r_ss + a @ r_ss
    if chain.source == chain.target:
        if r_ss is None:
            raise ValueError(f"no layers in {chain.source_self!r}")
        return r_ss, None
    # What the target cross-attention's keys carry from the source.
    key_rows = None if r_ss is None else (relevance_normalise(r_ss) if opts.normalise
                                          else r_ss)
    for name in chain.hops:
        for layer in _stream(trace, name, call):
            a = a_bar(layer)
            key_rows = a if key_rows is None else a @ _with_heads(key_rows, a, opts.per_head)
    blocks = _decoder_layers(chain, trace, call, layers)
    if not blocks:
        raise ValueError(f"no decoder layers selected from {chain.target_cross!r}")
    first = a_bar(next(l for _, s, c in blocks for l in (s, c) if l is not None))
    t = first.shape[-2]
    r_tt, r_ts = _eye(t, first), None
    for pre in _stream(trace, chain.target_prelude, call):
        p = a_bar(pre)[..., :t, :t]
        r_tt = r_tt + _with_heads(p, r_tt, opts.per_head) @ r_tt
    for _, self_layer, cross_layer in blocks:
        if self_layer is not None:
            a = a_bar(self_layer)
            r_tt = r_tt + a @ r_tt
            if r_ts is not None:
                r_ts = r_ts + a @ r_ts
        if cross_layer is not None:
            a = a_bar(cross_layer)
            keys = a.shape[-1]
            source_rows = (_eye(keys, a) if key_rows is None
                           else _align_keys(_with_heads(key_rows, a, opts.per_head), keys))
            left = relevance_normalise(r_tt) if opts.normalise else r_tt
            left = left.transpose(-1, -2) if opts.transpose else left
            increment = left @ a @ source_rows
            r_ts = increment if r_ts is None else r_ts + increment
    if r_ts is None:
        raise ValueError(f"no cross-attention layers selected from {chain.target_cross!r}")
    return r_ts, r_tt


def joint_graph(trace: Trace, chain: Chain, *, head_fusion="mean", residual: float = 0.5,
                heads=None, weighting: str = "attention", threshold=None, top_k=None,
                layers=None, start_layer: int = 0, call: int = -1):
    """The composition as one stack of row-stochastic matrices over all positions.

    Positions are laid out ``[source | hop tokens ... | target]``. Every block becomes a
    ``[batch, M, M]`` matrix that acts on one group of rows and is the identity
    elsewhere: a source self-attention layer, a pooling hop (rows of the pooled tokens
    become ``C``, no residual), a target self-attention layer, and a cross-attention
    block whose target rows are ``[.. (1 - r) C .. | r I]``. Their rollout with
    ``residual=0`` equals :func:`compose` with ``method="rollout"``, and their
    :func:`~groundroll.rollout.attention_flow` is the flow over the composed graph.

    Returns
    -------
    matrices : list of torch.Tensor
        ``[batch, M, M]``, first block first.
    layout : dict of str to slice
        Where each token group sits: ``"source"``, each hop name, ``"target"``.
    """
    opts = _Options("rollout", head_fusion, residual, _tuple(heads), False, weighting,
                    threshold, top_k, True, True)
    src = _stream(trace, chain.source_self, call)[start_layer:]
    blocks = _decoder_layers(chain, trace, call, layers)
    hops = [(name, layer) for name in chain.hops for layer in _stream(trace, name, call)]
    first_cross = next(c for _, _, c in blocks if c is not None)
    n_src = trace.tokens[chain.source].length if chain.source in trace.tokens else (
        src[0].keys if src else (hops[0][1].keys if hops else first_cross.keys))
    sizes = [("source", n_src)]
    for name, layer in hops:
        sizes.append((name, layer.queries))
    n_tgt = first_cross.queries
    sizes.append(("target", n_tgt))
    layout, offset = {}, 0
    for name, size in sizes:
        layout[name] = slice(offset, offset + size)
        offset += size
    m = offset
    batch = first_cross.batch
    ref = first_cross.weights.detach().float()
    eye = torch.eye(m, dtype=ref.dtype, device=ref.device).expand(batch, m, m)
    mats = []

    def block(rows: slice, cols: slice, value, diag_scale=None):
        mat = eye.clone()
        if diag_scale is not None:
            mat[:, rows, rows] *= diag_scale
        else:
            mat[:, rows, :] = 0
        mat[:, rows, cols] += value
        return mat

    for layer in src:
        mats.append(block(layout["source"], layout["source"], _self_matrix(layer, opts)))
    previous = layout["source"]
    for name, layer in hops:
        mats.append(block(layout[name], previous, _cross_matrix(layer, opts)))
        previous = layout[name]
    tgt = layout["target"]
    for layer in _stream(trace, chain.target_prelude, call):
        a = _self_matrix(layer, opts)[..., :n_tgt, :n_tgt]
        mats.append(block(tgt, tgt, a))
    r = residual if chain.cross_residual else 0.0
    for _, self_layer, cross_layer in blocks:
        if self_layer is not None:
            mats.append(block(tgt, tgt, _self_matrix(self_layer, opts)))
        if cross_layer is not None:
            c = _cross_matrix(cross_layer, opts)
            keys = slice(previous.stop - c.shape[-1], previous.stop)
            mats.append(block(tgt, keys, (1 - r) * c, diag_scale=r))
    return mats, layout


def _flow(trace, chain, opts, *, call, layers, start_layer):
    mats, layout = joint_graph(trace, chain, head_fusion=opts.head_fusion,
                               residual=opts.residual, heads=opts.heads,
                               weighting=opts.weighting, threshold=opts.threshold,
                               top_k=opts.top_k, layers=layers, start_layer=start_layer,
                               call=call)
    tgt = layout["target"]
    wanted = list(range(tgt.start, tgt.stop))
    flow = attention_flow(mats, rows=wanted, residual=0.0)
    return flow[..., layout["source"]], flow[..., tgt]


def _tuple(x):
    return None if x is None else tuple(int(i) for i in ([x] if isinstance(x, int) else x))


def _read_rows(rows, tokens: Tokens | None, t: int, batch: int) -> torch.Tensor | None:
    if rows is None:
        return None
    if isinstance(rows, str):
        if tokens is None or rows not in tokens.special:
            have = [] if tokens is None else list(tokens.special)
            raise ValueError(f"rows={rows!r}: the target tokens have no such position;"
                             f" known: {have}")
        return tokens.special[rows].long().view(batch, 1)
    idx = torch.as_tensor(rows, dtype=torch.long)
    idx = idx.view(1, -1).expand(batch, -1) if idx.dim() <= 1 else idx
    if (idx < 0).any() or (idx >= t).any():
        raise ValueError(f"rows {idx.tolist()} out of range for {t} target positions")
    return idx


def _take(t: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    if t is None:
        return None
    if t.dim() == 4:  # [batch, head, T, K]
        gather = idx[:, None, :, None].expand(t.shape[0], t.shape[1], -1, t.shape[-1])
        return t.gather(2, gather)
    return t.gather(1, idx[:, :, None].expand(-1, -1, t.shape[-1]))


def _shift(t: torch.Tensor | None) -> torch.Tensor | None:
    """Row ``i`` <- row ``i + 1``; the last row (no later decoder input) becomes zero."""
    if t is None:
        return None
    out = torch.zeros_like(t)
    out[..., :-1, :] = t[..., 1:, :]
    return out


def compose(
    trace: Trace, *, source: str, target: str, method: str = "rollout",
    layers: int | Sequence[int] | None = None, heads: int | Sequence[int] | None = None,
    head_fusion="mean", residual: float = 0.5, shift: bool = False,
    weighting: str = "attention", per_head: bool = False, threshold: float | None = None,
    top_k: int | None = None, start_layer: int = 0, rows=None, transpose: bool = True,
    normalise: bool = True, chain: Chain | None = None, call: int = -1,
) -> Composition:
    """Target x source map through a model's encoder, cross-attention and decoder.

    Notation: ``Ã = rownorm((1 - r) A + r I)`` is a fused, residual-corrected
    self-attention layer, ``C`` a fused, row-normalised cross-attention layer
    (target queries x source keys), ``Ā = mean_h clamp(dS/dA * A, min=0)`` a
    gradient-weighted layer, ``R̄ = (R - I) / rowsum(R - I) + I``.

    Methods
    -------
    ``raw``
        ``M = mean_{l in layers} C^(l)``, the baseline: fused cross-attention of the
        chosen layers (all by default) and heads; through pooling hops
        ``M = C_dec (C_pool)``. ``source == target``: the fused self-attention of the
        chosen layers (the last by default).
    ``rollout``
        Encoder rollout ``R_enc = Ã_enc^(L) ... Ã_enc^(1)`` (pooling hops
        ``R_hop = C_pool R_enc``). Each target row starts at ``[0 | I_T]`` (CoCa: the
        text tower's rollout) and, per decoder layer, the self-attention block gives
        ``R_dec <- Ã_self R_dec`` and the cross-attention block
        ``R_dec <- r R_dec + (1 - r) C [R_enc | 0]``. Rows of
        ``[source_map | target_map]`` sum to 1.
    ``relevance``
        Chefer et al. (2021) generic rules on gradient-weighted layers:
        ``R^ss += Ā R^ss`` over the source stream; per decoder layer
        ``R^tt += Ā R^tt``, ``R^ts += Ā R^ts`` (self-attention) and
        ``R^ts += (R̄^tt)^T Ā^ts R̄^ss`` (cross-attention; ``transpose=False`` drops the
        transpose, ``normalise=False`` uses ``R`` for ``R̄``). Needs a trace captured
        with ``grads=True`` after ``backward()`` on one score.
    ``norm``
        ``raw`` with value-aware weights ``A_h[i, j] ||v_j W_O^h||`` (Kobayashi et al.
        2020). ``weighting="norm"`` applies the same weights inside any other method;
        both need a trace captured with ``values=True``.
    ``flow``
        Attention flow (Abnar & Zuidema 2020) over the composed graph of
        :func:`joint_graph`: max flow from each target node to each source node, rows
        divided by their sum. Exact but slow: for small inputs.

    Parameters
    ----------
    trace : Trace
        From :func:`groundroll.capture`.
    source, target : str
        Token streams, e.g. ``"encoder"``/``"decoder"``, ``"vision"``/``"decoder"``
        (CoCa), ``"vision"``/``"text"`` (BLIP), or one stream twice (dual encoders).
    method : {"raw", "rollout", "relevance", "norm", "flow"}
    layers : int or sequence of int, optional
        ``raw``/``norm``: cross-attention layers averaged (all by default). Other
        methods: decoder layers taking part; the others count as identity.
    heads : int or sequence of int, optional
        Heads kept before fusion (all by default).
    head_fusion : {"mean", "max", "min"} or torch.Tensor
        Head reduction (``relevance`` always uses the gradient-weighted mean).
    residual : float
        Residual weight ``r`` of self-attention blocks and cross-attention blocks.
    shift : bool
        Read target token ``t`` at the row where it is the decoder *input* (row ``t+1``
        under teacher forcing) instead of the row that predicts it; the last row
        becomes zero.
    weighting : {"attention", "norm"}
    per_head : bool
        Keep heads apart all the way: maps get a head axis (``raw``, ``rollout``,
        ``relevance``; all streams must have the same head count).
    threshold, top_k : optional
        Prune each layer inside the chain (see :func:`groundroll.rollout.prune`).
    start_layer : int
        First source self-attention layer used.
    rows : str, int or sequence, optional
        Read out only these target rows: a special position name such as ``"cls"`` or
        ``"eot"``, or indices (applied after ``shift``).
    transpose, normalise : bool
        Switches of the ``relevance`` co-attention rule.
    chain : Chain, optional
        Streams to chain; found with :func:`chain_for` by default.
    call : int
        Which captured forward call to use (last by default).

    Returns
    -------
    Composition

    Examples
    --------
    >>> import groundroll as gr
    >>> with gr.capture(model) as trace:                                # doctest: +SKIP
    ...     model(input_ids=src, decoder_input_ids=tgt)
    >>> gr.compose(trace, source="encoder", target="decoder").source_map.shape
    ...                                                                 # doctest: +SKIP
    torch.Size([1, 7, 9])
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if weighting not in ("attention", "norm"):
        raise ValueError(f"weighting must be 'attention' or 'norm', got {weighting!r}")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual must be in [0, 1], got {residual}")
    if method == "norm":
        weighting = "norm"
    if per_head and method == "flow":
        raise ValueError("per_head is not available for method='flow'")
    chain = chain_for(trace, source, target) if chain is None else chain
    missing = [s for s in chain.streams if s not in trace.layers]
    if missing:
        raise ValueError(f"the trace lacks streams {missing} needed by {chain}")
    tgt_tokens = trace.tokens.get(chain.target)
    rows_layer = trace.stream(chain.target_cross or chain.source_self, call=call)[0]
    idx = _read_rows(rows, tgt_tokens, rows_layer.queries, rows_layer.batch)
    keep = None
    if idx is not None:  # pruning keeps the rows read out (row t + 1 when shifted)
        keep = (idx + 1).clamp(max=rows_layer.queries - 1) if shift else idx
    opts = _Options(method, head_fusion, float(residual), _tuple(heads), per_head,
                    weighting, threshold, top_k, transpose, normalise, keep, chain.target)
    if method in ("raw", "norm"):
        src_map, tgt_map = _raw(trace, chain, opts, call=call, layers=layers)
    elif method == "rollout":
        src_map, tgt_map = _rollout(trace, chain, opts, call=call, layers=layers,
                                    start_layer=start_layer)
    elif method == "relevance":
        src_map, tgt_map = _relevance(trace, chain, opts, call=call, layers=layers,
                                      start_layer=start_layer)
    else:
        src_map, tgt_map = _flow(trace, chain, opts, call=call, layers=layers,
                                 start_layer=start_layer)
    if shift:
        src_map, tgt_map = _shift(src_map), _shift(tgt_map)
    if idx is not None:
        src_map, tgt_map = _take(src_map, idx), _take(tgt_map, idx)
    settings = dict(method=method, layers=_tuple(layers), heads=_tuple(heads),
                    head_fusion=head_fusion if isinstance(head_fusion, str)
                    else head_fusion.tolist(), residual=float(residual), shift=shift,
                    weighting=weighting, per_head=per_head, threshold=threshold,
                    top_k=top_k, start_layer=start_layer,
                    rows=rows if rows is None or isinstance(rows, str) else _tuple(rows),
                    transpose=transpose, normalise=normalise, chain=asdict(chain),
                    call=call)
    return Composition(src_map, tgt_map, chain.source, chain.target, method, settings,
                       trace.tokens.get(chain.source), tgt_tokens)

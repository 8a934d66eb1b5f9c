"""Composition methods as small objects with typed options, and their registry.

Each method is a frozen dataclass whose fields are its options; calling
:meth:`Method.maps` on a trace and a :class:`~groundroll.compose.Chain` gives the
target x source map and, where the method has one, the target x target part. Every
step is a call into the rollout core (:mod:`groundroll.rollout`): the methods only say
which layers go where.

=============  ===========================================================================
name           class
=============  ===========================================================================
``raw``        :class:`Raw`: fused cross-attention of chosen layers (the baseline)
``norm``       :class:`Norm`: ``raw`` on value-weighted attention (Kobayashi et al. 2020)
``rollout``    :class:`Rollout`: encoder rollout chained through cross-attention blocks
``relevance``  :class:`Relevance`: Chefer et al. (2021) gradient relevance rules
``flow``       :class:`Flow`: attention flow over the composed graph (Abnar & Zuidema)
=============  ===========================================================================

:func:`register_method` adds a method under a new name; :data:`METHODS` (a live,
read-only sequence of names) and :func:`method_names` list what is registered.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

from .._names import LiveNames
from .._registry import Registry
from ..rollout import flow, fusion, relevance, streams
from ..trace import Trace
from .chains import Chain
from .layers import (
    LayerReader,
    align_keys,
    attended_rows,
    decoder_blocks,
    eye_like,
    layer_indices,
    with_heads,
)
from .._options import refuse_unknown
from .graph import joint_graph

__all__ = ["Method", "Raw", "Norm", "Rollout", "Relevance", "Flow", "METHODS",
           "method_names", "method_options", "register_method", "unregister_method",
           "get_method"]

Maps = tuple[torch.Tensor, "torch.Tensor | None"]


def _int_tuple(x) -> tuple[int, ...] | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.tolist()
    return tuple(int(i) for i in ([x] if isinstance(x, int) else x))


def _with_cross(r_ts, chain: Chain):
    """The source map, which exists once a cross-attention block has been folded in."""
    if r_ts is None:
        raise ValueError(f"no cross-attention layers selected from {chain.target_cross!r}")
    return r_ts


@dataclass(frozen=True)
class Method:
    """Base of the composition methods: the options every method shares.

    Attributes
    ----------
    layers : int or tuple of int, optional
        ``raw``/``norm``: cross-attention layers averaged (all by default). Other
        methods: decoder layers taking part; the others count as identity.
    heads : int or tuple of int, optional
        Heads kept before fusion (all by default).
    weighting : {"attention", "norm"}
        ``"norm"`` multiplies each head's weights by the value norms
        (:func:`groundroll.rollout.value_weighted`); needs ``values=True`` capture.
    """

    #: Registry name, also :attr:`Composition.method`.
    name: ClassVar[str] = ""
    #: Whether the method has a head-specific mode (``per_head=True``).
    per_head_ok: ClassVar[bool] = True

    layers: int | tuple[int, ...] | None = None
    heads: int | tuple[int, ...] | None = None
    weighting: str = "attention"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", _int_tuple(self.layers))
        object.__setattr__(self, "heads", _int_tuple(self.heads))
        if self.weighting not in ("attention", "norm"):
            raise ValueError(
                f"weighting must be 'attention' or 'norm', got {self.weighting!r}")
        residual = getattr(self, "residual", 0.5)
        if not 0.0 <= float(residual) <= 1.0:
            raise ValueError(f"residual must be in [0, 1], got {residual}")
        if getattr(self, "per_head", False) and not self.per_head_ok:
            raise ValueError(f"per_head is not available for method={self.name!r}")

    @classmethod
    def from_options(cls, **options) -> "Method":
        """Build from keyword options; one this method does not take is a TypeError
        that names the method and lists the options it takes."""
        refuse_unknown(options, method_options(cls), f"composition method {cls.name!r}")
        return cls(**options)

    def reader(self, trace: Trace, *, call: int = -1, keep=None,
               target: str | None = None) -> LayerReader:
        """The :class:`~groundroll.compose.layers.LayerReader` with this method's options."""
        fields = {f.name for f in dataclasses.fields(LayerReader)}
        own = {k: v for k, v in self.settings(plain=False).items() if k in fields}
        return LayerReader(trace, call=call, keep=keep, target=target, **own)

    def settings(self, *, plain: bool = True) -> dict:
        """The options as a dict (``plain``: tensors as lists, for saving)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if plain:
            out = {k: v.tolist() if isinstance(v, torch.Tensor) else v
                   for k, v in out.items()}
        return out

    def maps(self, trace: Trace, chain: Chain, *, call: int = -1, keep=None) -> Maps:
        """``(source_map, target_map)`` of ``trace`` along ``chain``.

        ``keep`` holds the ``[batch, R]`` read-out target rows that pruning keeps.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class _Fused(Method):
    """Options of methods that fuse heads and may prune.

    Attributes
    ----------
    head_fusion : {"mean", "max", "min"} or torch.Tensor
        Head reduction (:func:`groundroll.rollout.fuse_heads`).
    per_head : bool
        Keep heads apart all the way: maps get a head axis (all streams must have the
        same head count).
    prune_threshold, top_k : optional
        Prune each layer inside the chain (:func:`groundroll.rollout.prune`); the
        read-out target rows are kept.
    """

    head_fusion: object = "mean"
    per_head: bool = False
    prune_threshold: float | None = None
    top_k: int | None = None


@dataclass(frozen=True)
class Raw(_Fused):
    """``M = mean_{l in layers} C^(l)``: fused cross-attention of the chosen layers.

    Through pooling hops ``M = C_dec (C_pool)``. For one stream (``source ==
    target``) the fused self-attention of the chosen layers (the last by default).

    Examples
    --------
    >>> Raw(layers=-1, heads=[0, 1]).settings()["heads"]
    (0, 1)
    """

    name: ClassVar[str] = "raw"

    def maps(self, trace, chain, *, call=-1, keep=None) -> Maps:
        reader = self.reader(trace, call=call, keep=keep, target=chain.target)
        if chain.source == chain.target:
            stream = reader.stream(chain.source_self)
            chosen = layer_indices(-1 if self.layers is None else self.layers, len(stream))
            rows = [fusion.rownorm(reader.fused(stream[i])) for i in chosen]
            return torch.stack(rows).mean(0), None
        crosses = reader.stream(chain.target_cross)
        if not crosses:
            raise ValueError(f"trace has no layers in {chain.target_cross!r}")
        idx = (range(len(crosses)) if self.layers is None
               else layer_indices(self.layers, len(crosses)))
        c = torch.stack([reader.cross_matrix(crosses[i]) for i in idx]).mean(0)
        hop = reader.hop_rows(chain.hops, None, reader.cross_matrix)
        if hop is not None:
            c = c @ align_keys(with_heads(hop, c, self.per_head), c.shape[-1])
        return c, None


@dataclass(frozen=True)
class Norm(Raw):
    """``raw`` with value-aware weights ``A_h[i, j] ||v_j W_O^h||`` (Kobayashi et al.
    2020); needs a trace captured with ``values=True``. ``weighting`` is always
    ``"norm"``."""

    name: ClassVar[str] = "norm"
    weighting: str = "norm"

    def __post_init__(self) -> None:
        object.__setattr__(self, "weighting", "norm")
        super().__post_init__()


@dataclass(frozen=True)
class Rollout(_Fused):
    """Encoder rollout chained through the decoder's self- and cross-attention blocks.

    ``R_src = Ã^(L) ... Ã^(start)`` of the source stream (core
    :func:`~groundroll.rollout.rollout`; pooling hops ``R_hop = C_pool R_src``). Each
    target row starts at ``[0 | I_T]`` (CoCa: the text tower's rollout) and, per
    decoder layer, ``R_dec <- Ã_self R_dec`` then the cross-attention block
    ``R_dec <- r R_dec + (1 - r) C [R_src | 0]``
    (:func:`~groundroll.rollout.rollout_cross_update`). Rows of
    ``[source_map | target_map]`` sum to 1.

    Attributes
    ----------
    residual : float
        Residual weight ``r`` of self-attention and cross-attention blocks.
    start_layer : int
        First source self-attention layer used.
    """

    name: ClassVar[str] = "rollout"
    residual: float = 0.5
    start_layer: int = 0

    def maps(self, trace, chain, *, call=-1, keep=None) -> Maps:
        reader = self.reader(trace, call=call, keep=keep, target=chain.target)
        r_src = reader.rollout(reader.stream(chain.source_self), self.start_layer)
        if chain.source == chain.target:
            return r_src, None
        hop = reader.hop_rows(chain.hops, r_src, reader.cross_matrix)
        blocks = decoder_blocks(reader, chain, self.layers, required=True)
        first = next(l for _, s, c in blocks for l in (c, s) if l is not None)
        t = first.queries
        like = reader.weights(first) if self.per_head else first.weights.detach()[:, 0]
        like = like.float()
        prelude = reader.rollout(reader.stream(chain.target_prelude))
        r_tt = eye_like(t, like) if prelude is None else with_heads(
            prelude[..., :t, :t], like, self.per_head)
        r_ts = None
        r = float(self.residual) if chain.cross_residual else 0.0
        for _, self_layer, cross_layer in blocks:
            if self_layer is not None:
                a = reader.self_matrix(self_layer)
                r_tt = a @ r_tt
                r_ts = None if r_ts is None else a @ r_ts
            if cross_layer is not None:
                c = reader.cross_matrix(cross_layer)
                r_ts, r_tt = streams.rollout_cross_update(
                    r_tt, r_ts, c, attended_rows(hop, c, self.per_head,
                                                 pooled=bool(chain.hops)), residual=r)
        return _with_cross(r_ts, chain), r_tt


@dataclass(frozen=True)
class Relevance(Method):
    """Chefer et al. (2021) generic rules on gradient-weighted layers.

    ``R^ss += Ā R^ss`` over the source stream (core
    :func:`~groundroll.rollout.self_relevance`); per decoder layer ``R^tt += Ā R^tt``,
    ``R^ts += Ā R^ts`` (:func:`~groundroll.rollout.relevance_self_update`) and
    ``R^ts += (R̄^tt)^T Ā^ts R̄^ss`` (:func:`~groundroll.rollout.relevance_co_update`).
    Needs a trace captured with ``grads=True`` after ``backward()`` on one score.
    Heads are always fused by the gradient-weighted mean.

    Attributes
    ----------
    per_head : bool
        Keep heads apart all the way.
    start_layer : int
        First source self-attention layer used.
    transpose : bool
        Use ``(R̄^tt)^T`` as in the paper; False uses ``R̄^tt``.
    normalize : bool
        Use ``R̄ = (R - I) / rowsum(R - I) + I``
        (:func:`~groundroll.rollout.relevance_normalize`); False uses ``R``.
    """

    name: ClassVar[str] = "relevance"
    per_head: bool = False
    start_layer: int = 0
    transpose: bool = True
    normalize: bool = True

    def maps(self, trace, chain, *, call=-1, keep=None) -> Maps:
        reader = self.reader(trace, call=call, keep=keep, target=chain.target)
        a_bar = reader.gradient_weighted
        src = reader.stream(chain.source_self)
        r_ss = None
        if src:
            r_ss = relevance.self_relevance(
                [reader.weights(layer) for layer in src],
                [reader.grad(layer) for layer in src],
                start_layer=self.start_layer, per_head=self.per_head)
        if chain.source == chain.target:
            if r_ss is None:
                raise ValueError(f"no layers in {chain.source_self!r}")
            return r_ss, None
        # What the target cross-attention's keys carry from the source.
        key_rows = r_ss
        if r_ss is not None and self.normalize:
            key_rows = relevance.relevance_normalize(r_ss)
        key_rows = reader.hop_rows(chain.hops, key_rows, a_bar)
        blocks = decoder_blocks(reader, chain, self.layers, required=True)
        first = a_bar(next(l for _, s, c in blocks for l in (s, c) if l is not None))
        t = first.shape[-2]
        r_tt, r_ts = eye_like(t, first), None
        for pre in reader.stream(chain.target_prelude):
            p = with_heads(a_bar(pre)[..., :t, :t], r_tt, self.per_head)
            r_tt = relevance.relevance_self_update(r_tt, p)
        for _, self_layer, cross_layer in blocks:
            if self_layer is not None:
                a = a_bar(self_layer)
                r_tt = relevance.relevance_self_update(r_tt, a)
                if r_ts is not None:
                    r_ts = relevance.relevance_self_update(r_ts, a)
            if cross_layer is not None:
                a = a_bar(cross_layer)
                left = relevance.relevance_normalize(r_tt) if self.normalize else r_tt
                increment = relevance.relevance_co_update(
                    left, attended_rows(key_rows, a, self.per_head,
                                        pooled=bool(chain.hops)), a,
                    transpose=self.transpose, normalize=False)
                r_ts = increment if r_ts is None else r_ts + increment
        return _with_cross(r_ts, chain), r_tt


@dataclass(frozen=True)
class Flow(_Fused):
    """Attention flow (Abnar & Zuidema 2020) over the composed graph.

    The composition is laid out as one stack of row-stochastic matrices
    (:func:`~groundroll.compose.joint_graph`) and the core
    :func:`~groundroll.rollout.attention_flow` gives the max flow from each target node
    to each source node, rows divided by their sum. Exact but slow: for small inputs.
    No head-specific mode.

    Attributes
    ----------
    residual : float
        Residual weight of self-attention and cross-attention blocks.
    start_layer : int
        First source self-attention layer used.
    """

    name: ClassVar[str] = "flow"
    per_head_ok: ClassVar[bool] = False
    residual: float = 0.5
    start_layer: int = 0

    def maps(self, trace, chain, *, call=-1, keep=None) -> Maps:
        mats, layout = joint_graph(
            trace, chain, head_fusion=self.head_fusion, residual=self.residual,
            heads=self.heads, weighting=self.weighting,
            prune_threshold=self.prune_threshold, top_k=self.top_k, layers=self.layers,
            start_layer=self.start_layer, call=call, keep=keep)
        tgt = layout["target"]
        wanted = list(range(tgt.start, tgt.stop))
        flows = flow.attention_flow(mats, rows=wanted, residual=0.0)
        if chain.source == chain.target:
            return flows, None
        return flows[..., layout["source"]], flows[..., tgt]


# ------------------------------------------------------------------------ registry


_REGISTRY: Registry[type[Method]] = Registry("composition method")


def register_method(cls: type[Method], *, name: str | None = None,
                    replace: bool = False) -> type[Method]:
    """Register a composition method class under ``name`` (default ``cls.name``).

    Usable as a decorator. The class must be a :class:`Method` dataclass; its fields are
    the options :func:`~groundroll.compose.compose` accepts for it. A name that is
    registered already is a ValueError unless ``replace=True``.

    Examples
    --------
    >>> @register_method
    ... @dataclass(frozen=True)
    ... class Last(Raw):
    ...     name: ClassVar[str] = "last"
    >>> "last" in METHODS
    True
    >>> _ = unregister_method("last")
    """
    key = name or cls.name
    if not (isinstance(cls, type) and issubclass(cls, Method)) or not key:
        raise ValueError("register_method needs a named Method subclass")
    _REGISTRY.add(key, cls, replace=replace)
    return cls


def unregister_method(name: str) -> type[Method]:
    """Remove the composition method ``name`` and return its class (an
    UnknownNameError, a KeyError and a ValueError, listing the methods if none)."""
    return _REGISTRY.remove(name)


def method_names() -> tuple[str, ...]:
    """Names of the registered composition methods, in registration order.

    Examples
    --------
    >>> method_names()
    ('raw', 'rollout', 'relevance', 'norm', 'flow')
    """
    return _REGISTRY.names()


def method_options(method: str | type[Method]) -> tuple[str, ...]:
    """The options a composition method takes (its class's fields), by name or class.

    Examples
    --------
    >>> method_options("relevance")
    ('layers', 'heads', 'weighting', 'per_head', 'start_layer', 'transpose', 'normalize')
    """
    cls = get_method(method) if isinstance(method, str) else method
    return tuple(f.name for f in dataclasses.fields(cls))


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"method must be one of {method_names()}, got {name!r}")
    return _REGISTRY.get(name)


#: Names of the composition methods (live: includes methods registered later).
METHODS: Sequence[str] = LiveNames(method_names)

for _cls in (Raw, Rollout, Relevance, Norm, Flow):
    register_method(_cls)

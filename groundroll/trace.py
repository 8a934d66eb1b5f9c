"""The data model shared by adapters, the rollout core and the composer.

An adapter fills a :class:`Trace` while a model runs: one :class:`AttentionLayer` per
attention module call, grouped by *stream* (``"vision"``, ``"text"``, ``"encoder"``,
``"decoder"``, ``"cross"``, ``"pool"``, ...), plus :class:`Tokens` metadata for every
token sequence the layers attend over, and the :class:`Chain` of streams that leads from
one token sequence to another (what a model family declares and the composer follows).
Nothing here imports a model library.

Shapes follow one convention everywhere: attention weights are
``[batch, head, query, key]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch

__all__ = ["AttentionLayer", "Chain", "Tokens", "Trace", "SELF", "CROSS"]

SELF = "self"
CROSS = "cross"


def _axis(i: int, name: str) -> property:
    """A read-only property: the size of axis ``i`` of ``self.weights``."""
    return property(lambda self: self.weights.shape[i],
                    doc=f"Size of the {name} axis of ``weights`` ([batch, head, query, key]).")


@dataclass
class AttentionLayer:
    """One attention module's probabilities from one forward call.

    Attributes
    ----------
    weights : torch.Tensor
        ``[batch, head, query, key]`` attention probabilities; rows sum to 1 (up to
        padded keys, which carry zero weight). Keeps its autograd graph when the capture
        was made with ``grads=True``.
    kind : {"self", "cross"}
        Self-attention (queries and keys from the same token stream) or cross-attention.
    stream : str
        Name of the layer group this layer belongs to, e.g. ``"encoder"`` or ``"cross"``.
    query_stream, key_stream : str
        Token streams (keys of :attr:`Trace.tokens`) of the queries and of the keys.
        Equal for self-attention.
    index : int
        Position of the layer within its stream, first layer 0.
    call : int
        Which call of the module this is (0 for the first forward pass in a capture).
    grad : torch.Tensor or None
        ``d(score)/d(weights)``, same shape as ``weights``, filled after a backward pass
        when the capture was made with ``grads=True``.
    value_norms : torch.Tensor or None
        ``[batch, head, key]`` norms ``||v_j W_O^h||`` of each key's value vector after
        the head's slice of the output projection (for value-aware ``norm`` weighting).
    causal : bool
        Whether the layer was computed with a causal mask.
    module_name : str
        Qualified name of the attention module in the model.
    parts : tuple of torch.Tensor
        Where ``weights`` were assembled from probabilities the model computed apart
        (a vision tower's one attention per image or window, placed block-diagonally):
        those ``[batch, head, n_i, n_i]`` tensors in order along the diagonal, kept with
        ``grads=True``. They, not ``weights``, are in the model's autograd graph; their
        gradients fill ``grad``. Empty otherwise.
    """

    weights: torch.Tensor
    kind: str
    stream: str
    query_stream: str
    key_stream: str
    index: int
    call: int = 0
    grad: torch.Tensor | None = None
    value_norms: torch.Tensor | None = None
    causal: bool = False
    module_name: str = ""
    parts: tuple[torch.Tensor, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in (SELF, CROSS):
            raise ValueError(f"kind must be 'self' or 'cross', got {self.kind!r}")
        if self.weights.dim() != 4:
            raise ValueError(
                f"{self.stream} layer {self.index}: weights must be [batch, head, query, key],"
                f" got shape {tuple(self.weights.shape)}"
            )

    batch = _axis(0, "batch")
    heads = _axis(1, "head")
    queries = _axis(2, "query")
    keys = _axis(3, "key")


@dataclass
class Tokens:
    """Metadata of one token sequence (a token stream) of a batch.

    Attributes
    ----------
    length : int
        Sequence length ``N`` including special, prefix and padding positions.
    ids : torch.Tensor or None
        ``[batch, N]`` token ids, for text streams.
    strings : list of list of str, or None
        Token strings per example, where a tokenizer was given.
    special : dict of str to torch.Tensor
        Positions of special tokens per example, each ``[batch]`` long: ``"cls"`` (ViT
        class token), ``"eot"`` (CLIP text pooling position), ``"eos"``, ``"bos"``.
    grid : (int, int) or None
        Patch grid ``(rows, cols)`` of an image stream; need not be square.
    prefix : int
        Number of tokens before the first patch (class token, register tokens, ...).
    mask : torch.Tensor or None
        ``[batch, N]`` bool, True for real tokens and False for padding. None means no
        padding.
    causal : bool
        Whether the stream's self-attention is causal.
    """

    length: int
    ids: torch.Tensor | None = None
    strings: list[list[str]] | None = None
    special: dict[str, torch.Tensor] = field(default_factory=dict)
    grid: tuple[int, int] | None = None
    prefix: int = 0
    mask: torch.Tensor | None = None
    causal: bool = False

    @property
    def patches(self) -> slice:
        """Positions of the patch tokens, ``prefix`` to ``prefix + rows * cols``."""
        if self.grid is None:
            raise ValueError("this token stream has no patch grid")
        rows, cols = self.grid
        return slice(self.prefix, self.prefix + rows * cols)

    def lengths(self) -> torch.Tensor:
        """``[batch]`` number of real (non-padding) tokens per example."""
        if self.mask is None:
            batch = self.ids.shape[0] if self.ids is not None else 1
            return torch.full((batch,), self.length, dtype=torch.long)
        return self.mask.sum(-1)


@dataclass
class Trace:
    """Everything captured from the model calls made inside one ``capture`` context.

    Attributes
    ----------
    layers : dict of str to list of AttentionLayer
        Captured layers by stream, in the order they were computed.
    tokens : dict of str to Tokens
        Token metadata by token stream name.
    reduced : dict of str to torch.Tensor
        Streaming results by stream when the capture was made with ``reduce=``:
        ``[batch, query, key]`` rollout (or ``[batch, rows, key]``), per-head weights
        of those layers are not kept.
    family : str
        Name of the adapter that filled the trace.
    chains : tuple
        Composition chains (:class:`groundroll.compose.Chain`) the model's family
        declares for its own stream names; :func:`groundroll.compose.chain_for` tries
        them before the built-in ones.
    """

    layers: dict[str, list[AttentionLayer]] = field(default_factory=dict)
    tokens: dict[str, Tokens] = field(default_factory=dict)
    reduced: dict[str, torch.Tensor] = field(default_factory=dict)
    family: str = ""
    chains: tuple = ()

    def __repr__(self) -> str:
        parts = [f"{name}: {len(layers)} layer(s)" for name, layers in self.layers.items()]
        parts += [f"{name}: reduced {tuple(t.shape)}" for name, t in self.reduced.items()]
        return f"Trace({self.family or '?'}; {', '.join(parts) or 'empty'})"

    def add(self, layer: AttentionLayer) -> None:
        self.layers.setdefault(layer.stream, []).append(layer)

    @property
    def streams(self) -> list[str]:
        return list(self.layers)

    def calls(self, stream: str) -> int:
        """Number of forward calls captured for ``stream``."""
        layers = self.layers.get(stream, [])
        return 1 + max(layer.call for layer in layers) if layers else 0

    def stream(self, name: str, *, call: int = -1) -> list[AttentionLayer]:
        """Layers of one stream from one forward call (the last one by default), first
        layer first."""
        if name not in self.layers:
            raise KeyError(
                f"no stream {name!r} in this trace; captured streams: {self.streams}"
            )
        layers = self.layers[name]
        n_calls = self.calls(name)
        which = call + n_calls if call < 0 else call
        if not 0 <= which < n_calls:
            raise IndexError(f"stream {name!r} has {n_calls} call(s), asked for call {call}")
        chosen = [layer for layer in layers if layer.call == which]
        return sorted(chosen, key=lambda layer: layer.index)

    def weights(self, name: str, *, call: int = -1) -> list[torch.Tensor]:
        """``[batch, head, query, key]`` weights of one stream, first layer first."""
        return [layer.weights for layer in self.stream(name, call=call)]

    def grads(self, name: str, *, call: int = -1) -> list[torch.Tensor]:
        """Gradients ``d(score)/d(weights)`` of one stream, first layer first."""
        layers = self.stream(name, call=call)
        missing = [layer.index for layer in layers if layer.grad is None]
        if missing:
            raise ValueError(
                f"stream {name!r} layers {missing} have no gradient: capture with"
                " grads=True and call backward() on a score inside or after the context"
            )
        return [layer.grad for layer in layers]

    def __iter__(self) -> Iterator[AttentionLayer]:
        for layers in self.layers.values():
            yield from layers

    def __len__(self) -> int:
        return sum(len(layers) for layers in self.layers.values())

    def backward(self, score: torch.Tensor) -> "Trace":
        """Fill each layer's ``grad`` with d(score)/d(weights), zeros where the score
        does not depend on a layer, and return the trace.

        Call it inside a ``capture(..., grads=True)`` context: the capture's gradient
        hooks fill the layers. Gradients go to the attention only (parameters keep no
        ``.grad``). A module may return a view of the probabilities it used (open_clip's
        ``nn.MultiheadAttention``); the hook then sits on the view's base, which is what
        is differentiated. Weights assembled from several tensors (``parts``) are
        differentiated through those.
        """
        layers = list(self)
        targets = [t for layer in layers for t in (layer.parts or (
            layer.weights._base if layer.weights._is_view() else layer.weights,))]
        torch.autograd.grad(score, targets, allow_unused=True)
        for layer in layers:
            if layer.grad is None:
                layer.grad = torch.zeros_like(layer.weights)
        return self

    def detach(self) -> "Trace":
        """A copy whose tensors are detached from autograd (grads kept)."""
        out = Trace(tokens=dict(self.tokens), family=self.family, chains=self.chains,
                    reduced={k: v.detach() for k, v in self.reduced.items()})
        for layer in self:
            out.add(AttentionLayer(
                weights=layer.weights.detach(), kind=layer.kind, stream=layer.stream,
                query_stream=layer.query_stream, key_stream=layer.key_stream,
                index=layer.index, call=layer.call,
                grad=None if layer.grad is None else layer.grad.detach(),
                value_norms=None if layer.value_norms is None else layer.value_norms.detach(),
                causal=layer.causal, module_name=layer.module_name,
            ))
        return out


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

    Examples
    --------
    >>> Chain("encoder", "decoder", source_self="encoder", target_self="decoder",
    ...       target_cross="cross").streams
    ('encoder', 'decoder', 'cross')
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

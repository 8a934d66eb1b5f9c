"""What an adapter is: the data that says where a model family's attention is.

An :class:`Adapter` describes one model family: which modules are attention modules
(:class:`Site`, a regular expression over qualified module names), which layer stream and
token streams each belongs to, where token metadata is read (:class:`TokenSource`) and
which fused path must be switched off (``switch``). Generic code in
:mod:`groundroll.adapters.capture` does the hooking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import torch

__all__ = ["Site", "TokenSource", "Adapter", "SWITCHES", "READERS", "UnsupportedModelError"]

#: How a site's attention probabilities are read.
#: ``"output"``: the module returns a tuple whose element ``Site.index`` (the last by
#: default) is ``[batch, head, query, key]`` weights (Hugging Face eager attention).
#: ``"mha"``: the module is an ``nn.MultiheadAttention``; the capture asks it for
#: per-head weights. ``"softmax"``: the module computes its probabilities with an explicit
#: ``softmax`` over the last axis (timm ``Attention`` / ``EvaAttention`` /
#: ``AttentionPoolLatent`` with ``fused_attn`` off); the capture keeps that tensor, the
#: very one multiplied with the values. ``"chunked"``: the module runs one attention per
#: chunk of a flat token sequence (each image, video frame or window between the
#: ``cu_seqlens`` boundaries of Qwen2-VL-style vision towers) and returns no weights; the
#: capture keeps every ``[batch, head, n_i, n_i]`` softmax of the call, in order, and
#: places them on the diagonal of one ``[batch, head, N, N]`` matrix (zero between
#: chunks). ``"returned"``: no module is hooked; the model
#: is called with ``output_attentions=True`` and the attention tuples it returns are read
#: (``Site.pattern`` matches the output key path, e.g. ``cross_attentions`` or
#: ``vision_model_output.attentions``); the fallback for models that declare nothing.
READERS = ("output", "mha", "softmax", "chunked", "returned")

#: Fused paths an adapter can switch off while capturing. ``"hf_eager"``: Hugging Face
#: attention implementation set to ``"eager"``; ``"timm_fused"``: each captured timm
#: module's ``fused_attn`` set to False. Both are restored on exit.
SWITCHES = ("hf_eager", "timm_fused")


@dataclass(frozen=True)
class Site:
    """A set of attention modules forming one layer stream.

    Parameters
    ----------
    pattern : str
        Regular expression searched in each qualified module name
        (``model.named_modules()``); matching modules are the stream's layers, first
        layer first in module order.
    stream : str
        Layer stream name (see the stream table in :mod:`groundroll.adapters`).
    query : str, optional
        Token stream of the queries; defaults to ``stream``.
    key : str, optional
        Token stream of the keys; defaults to ``query`` (self-attention).
    causal : bool or None
        Whether the modules are called with a causal mask; None: read from the
        weights of each call (strict upper triangle exactly zero).
    reader : {"output", "mha", "softmax", "chunked", "returned"}
        How the weights are read (see :data:`READERS`).
    index : int
        With ``reader="output"``, position of the weights in the module's output tuple.
    root : str, optional
        Qualified name of the module one forward of which is one pass of the stream
        (an encoder, a tower). When set, a layer's index is its order of arrival within
        that pass, so modules called several times per pass (shared layers, as in
        ALBERT) give one layer per call; otherwise each module is one layer.
    value : str, optional
        Path of the value projection relative to the module (a ``nn.Linear``), or
        ``"name:i/n"`` for part ``i`` of ``n`` of a fused projection (e.g. ``"qkv:2/3"``).
        ``"../"`` goes up one module. Not needed with ``reader="mha"``.
    out : str, optional
        Path of the output projection relative to the module.
    """

    pattern: str
    stream: str
    query: str | None = None
    key: str | None = None
    causal: bool | None = False
    reader: str = "output"
    value: str | None = None
    out: str | None = None
    index: int = -1
    root: str | None = None

    def __post_init__(self) -> None:
        if self.reader not in READERS:
            raise ValueError(f"reader must be one of {READERS}, got {self.reader!r}")
        re.compile(self.pattern)

    @property
    def query_stream(self) -> str:
        return self.query or self.stream

    @property
    def key_stream(self) -> str:
        return self.key or self.query_stream

    @property
    def kind(self) -> str:
        return "self" if self.query_stream == self.key_stream else "cross"


@dataclass(frozen=True)
class TokenSource:
    """Where the metadata of one token stream is read: a forward pre-hook on the
    modules matching ``pattern`` (or of a class named in ``classes``).

    Parameters
    ----------
    stream : str
        Token stream name filled.
    pattern : str, optional
        Regular expression searched in qualified module names (``""`` matches the root
        only when written ``"^$"``).
    classes : tuple of str
        Class names; a module of one of these classes is a source too.
    reader : str
        ``"text"``, ``"image"``, ``"queries"`` or a name registered in
        :data:`groundroll.adapters.tokens.READERS`.
    special : tuple of str
        Special-position rules for text (``"cls@first"``, ``"bos@first"``,
        ``"eos@last"``, ``"eot@argmax"``, ``"eot@last"``, ``"eot@hf_clip"``,
        ``"cls@appended"``).
    prefix : int
        Tokens before the first patch, for images (recounted from the first layer).
    pad_id : int, optional
        Padding id, to derive a mask from ids when the call passes none.
    causal : bool
        Whether the stream's self-attention is causal.
    """

    stream: str
    pattern: str | None = None
    classes: tuple[str, ...] = ()
    reader: str = "text"
    special: tuple[str, ...] = ()
    prefix: int = 0
    pad_id: int | None = None
    causal: bool = False

    def matches(self, name: str, module: torch.nn.Module) -> bool:
        if self.pattern is not None and re.search(self.pattern, name):
            return True
        return type(module).__name__ in self.classes


@dataclass(frozen=True)
class Adapter:
    """One model family: where its attention is and how to read it.

    Parameters
    ----------
    name : str
        Family name (``Trace.family``).
    sites : tuple of Site
        Attention modules by stream.
    classes : tuple of str
        Fully qualified model classes (``"package.module.Class"``) this adapter serves;
        any class in ``type(model).__mro__`` may match.
    model_types : tuple of str
        Hugging Face ``config.model_type`` values this adapter serves.
    tokens : tuple of TokenSource
        Where token metadata is read.
    switch : str or tuple of str, optional
        Fused path(s) switched off while capturing (see :data:`SWITCHES`).
    """

    name: str
    sites: tuple[Site, ...]
    classes: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    tokens: tuple[TokenSource, ...] = ()
    switch: str | tuple[str, ...] | None = None
    description: str = ""
    models: tuple[str, ...] = field(default=())
    # Composition chains over this family's own stream names (set on each Trace).
    chains: tuple = ()
    # For families whose sites depend on the instance (a timm trunk or a native tower
    # inside the same open_clip class): adapter -> model -> the adapter for that model.
    specialise: Callable[["Adapter", torch.nn.Module], "Adapter"] | None = field(
        default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        bad = [s for s in self.switches if s not in SWITCHES]
        if bad:
            raise ValueError(f"switch must be one of {SWITCHES} or None, got {self.switch!r}")
        if not self.classes and not self.model_types:
            raise ValueError(f"adapter {self.name!r} needs classes or model_types to match")

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(site.stream for site in self.sites))

    @property
    def returned(self) -> bool:
        """Whether attention is read from the model's returned outputs (``Site.reader ==
        "returned"``) rather than from hooked modules."""
        return bool(self.sites) and all(s.reader == "returned" for s in self.sites)

    @property
    def switches(self) -> tuple[str, ...]:
        if self.switch is None:
            return ()
        return (self.switch,) if isinstance(self.switch, str) else tuple(self.switch)

    def matches(self, model: torch.nn.Module) -> bool:
        names = {f"{cls.__module__}.{cls.__qualname__}" for cls in type(model).__mro__}
        if names.intersection(self.classes):
            return True
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        return model_type is not None and model_type in self.model_types


class UnsupportedModelError(TypeError):
    """A model whose attention rollout does not apply (windowed, local or sparse
    attention, convolutional trunks); the message says why and what works instead."""

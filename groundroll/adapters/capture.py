"""The generic capture: hooks the modules an adapter names, fills a Trace.

Everything model-specific lives in the family records' data (:mod:`groundroll.families`,
their :class:`~groundroll.families.sites.Adapter`);
this module registers forward hooks on enter, removes them in ``finally`` and restores
every switched setting.

For Hugging Face models that declare no attention modules, the adapter reads what the
model returns instead (``Site.reader == "returned"``,
:func:`~groundroll.families.derive.returned_adapter`): the outermost call gets
``output_attentions=True``, the returned tuples go into the trace and out of the output
again, with the same guarantees (outputs unchanged, nothing left switched, gradients on
the tensors the model used).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
import weakref
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F

from .._locks import model_lock
from ..trace import AttentionLayer, Chain, Tokens, Trace
from ..families import Adapter, Site, UnsupportedModelError, adapter_for
from ..families._hf import fixed_sdpa_attention
from ..families.derive import returned_site
from ..rollout import RolloutAccumulator
from .tokens import read_tokens

__all__ = ["capture", "ROLLOUT_OPTIONS"]

#: Options accepted by ``reduce=`` (those of :class:`groundroll.rollout.RolloutAccumulator`).
ROLLOUT_OPTIONS = frozenset({"head_fusion", "residual", "rows", "prune_threshold", "top_k",
                             "discard_ratio", "start_layer", "per_head", "keep"})

_MHA_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
             "average_attn_weights", "is_causal")


@contextmanager
def capture(
    model: torch.nn.Module,
    *,
    grads: bool = False,
    streams: str | list[str] | tuple[str, ...] | None = None,
    reduce: Mapping[str, Any] | None = None,
    values: bool = False,
    tokenizer: Any = None,
) -> Iterator[Trace]:
    """Capture the attention of every model call made inside the ``with`` block.

    Parameters
    ----------
    model : torch.nn.Module
        A stock open_clip or Hugging Face model of a supported family
        (:func:`~groundroll.adapters.supported_models`).
    grads : bool
        Keep each layer's weights in the autograd graph; after a backward pass made
        inside or after the block, each ``AttentionLayer.grad`` holds
        ``d(score)/d(weights)`` of that layer (accumulated over backward passes, like
        ``Tensor.grad``). Incompatible with ``reduce``.
    streams : str or sequence of str, optional
        Layer streams to capture (e.g. ``["vision"]``); others are not hooked at all.
        Default: every stream of the family.
    reduce : dict, optional
        Streaming rollout for self-attention streams: either rollout options
        (``head_fusion``, ``residual``, ``rows``, ``prune_threshold``, ``top_k``,
        ``discard_ratio``, ``start_layer``, ``per_head``, ``keep``; ``threshold`` is the
        deprecated old name of ``prune_threshold``), applied to every
        captured self-attention stream, or a mapping ``stream -> options``. Each layer's
        heads are fused and folded into a :class:`~groundroll.rollout.RolloutAccumulator`
        as soon as the layer is computed; ``trace.reduced[stream]`` holds the rollout of
        the latest call and those streams keep no per-head layers in ``trace.layers``.
    values : bool
        Also fill ``AttentionLayer.value_norms`` ``[batch, head, key]`` with
        ``||v_j W_O^h||``: key ``j``'s value vector (value bias included) through head
        ``h``'s slice of the output projection (output bias excluded).
    tokenizer : optional
        A Hugging Face tokenizer; fills ``Tokens.strings``.

    Yields
    ------
    Trace
        Filled while the model runs: ``trace.layers[stream]`` (one
        :class:`~groundroll.trace.AttentionLayer` per module call), ``trace.tokens``
        (token metadata: ids, padding mask, special positions such as ``"cls"`` and
        ``"eot"``, patch grid and prefix), ``trace.reduced``.

    Raises
    ------
    UnsupportedModelError
        For a Hugging Face model with no attention to read: no family, no declared
        attention module and no ``output_attentions`` (convolutional, state-space and
        Fourier-mixing models).
    TypeError
        If no adapter serves ``model``.

    Examples
    --------
    >>> import open_clip, torch
    >>> from groundroll.adapters import capture
    >>> model = open_clip.create_model("ViT-B-16").eval()     # doctest: +SKIP
    >>> with torch.no_grad(), capture(model, streams="vision") as trace:  # doctest: +SKIP
    ...     model.encode_image(torch.randn(1, 3, 224, 224))
    >>> [w.shape for w in trace.weights("vision")][0]          # doctest: +SKIP
    torch.Size([1, 12, 197, 197])
    """
    session = _Session(model, _adapter(model), grads=grads, streams=streams,
                       reduce=reduce, values=values, tokenizer=tokenizer)
    # Concurrent captures on one model would see each other's hooks and switched
    # settings: hold the model's re-entrant lock for the whole block.
    lock = model_lock(model)
    lock.acquire()
    try:
        session.open()
        yield session.trace
    finally:
        try:
            session.close()
        finally:
            lock.release()


_NO_ATTENTION = (
    "reports no attention: it declares no attention module (`_can_record_outputs`) and"
    " its forward takes no output_attentions, so groundroll has no [query, key] matrix to"
    " read (convolutional, state-space and Fourier-mixing models have none). Use a"
    " gradient attribution (Grad-CAM) for it, or a model that returns its attention.")


def _adapter(model: torch.nn.Module) -> Adapter:
    """``adapter_for(model)``; a Hugging Face model that no adapter serves and that
    cannot return attention is refused with its reason (:class:`UnsupportedModelError`)
    instead of the plain "no adapter" error."""
    try:
        return adapter_for(model)
    except UnsupportedModelError:
        raise
    except TypeError as err:
        if _is_hf(model) and not _takes_output_attentions(model):
            raise UnsupportedModelError(
                f"groundroll cannot roll out {type(model).__name__}"
                f" (config.model_type={model.config.model_type!r}): it {_NO_ATTENTION}"
            ) from err
        raise


def _is_hf(model: torch.nn.Module) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return False
    return isinstance(model, PreTrainedModel)


def _takes_output_attentions(model: torch.nn.Module) -> bool:
    import inspect

    try:
        return "output_attentions" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class _Session:
    """State of one capture: hook handles, saved settings, per-module call counts."""

    def __init__(self, model, adapter: Adapter, *, grads, streams, reduce, values,
                 tokenizer) -> None:
        self.model = model
        self.adapter = adapter
        self.grads = bool(grads)
        self.values = bool(values)
        self.tokenizer = tokenizer
        self.trace = Trace(family=adapter.name, chains=tuple(adapter.chains))
        self.handles: list[Any] = []
        self.saved_configs: list[tuple[Any, Any]] = []
        self.saved_fused: list[tuple[torch.nn.Module, Any]] = []
        self.modes: list[Any] = []
        self.calls: dict[str, int] = defaultdict(int)
        # Sites with a root: passes of the root so far and layers seen in the current one.
        self.passes: dict[str, int] = defaultdict(lambda: -1)
        self.arrivals: dict[tuple[str, str], int] = defaultdict(int)
        self.accumulators: dict[tuple[str, int], Any] = {}

        wanted = adapter.streams if streams is None else (
            (streams,) if isinstance(streams, str) else tuple(streams))
        unknown = sorted(set(wanted) - set(adapter.streams))
        if unknown and not adapter.returned:
            raise ValueError(f"unknown stream(s) {unknown} for {adapter.name}; its streams"
                             f" are {list(adapter.streams)}")
        self.sites = [site for site in adapter.sites if site.stream in wanted]
        self.explicit_streams = streams is not None
        self.wanted = set(wanted)
        self.reduce = self._reduce_options(reduce)
        if self.reduce and self.grads:
            raise ValueError("reduce= streams keep no per-layer weights, so grads=True"
                             " cannot be combined with it; capture, then roll out")

    def _reduce_options(self, reduce) -> dict[str, dict]:
        if not reduce:
            return {}
        self_streams = [s.stream for s in self.sites if s.kind == "self"]
        known = ROLLOUT_OPTIONS
        if set(reduce) <= known:
            per_stream = {stream: dict(reduce) for stream in self_streams}
        else:
            flat = [k for k, v in reduce.items() if not isinstance(v, Mapping)]
            if flat:
                raise ValueError(
                    f"reduce=: {flat[0]!r} is neither a captured stream nor a rollout"
                    f" option; captured self-attention streams are {self_streams},"
                    f" rollout options {sorted(ROLLOUT_OPTIONS)}")
            per_stream = {stream: dict(options) for stream, options in reduce.items()}
        cross = {s.stream for s in self.sites if s.kind == "cross"}
        for stream, options in per_stream.items():
            if stream in cross:
                raise ValueError(f"reduce=: {stream!r} is a cross-attention stream;"
                                 " streaming rollout applies to self-attention streams")
            if stream not in self_streams:
                raise ValueError(f"reduce=: no captured stream {stream!r}; captured"
                                 f" self-attention streams are {self_streams}")
            bad = sorted(set(options) - known)
            if bad:
                raise ValueError(f"reduce=: unknown rollout option(s) {bad}; allowed:"
                                 f" {sorted(ROLLOUT_OPTIONS)}")
        return per_stream

    # ------------------------------------------------------------------ enter / exit

    def open(self) -> None:
        modules = dict(self.model.named_modules())
        if any(m.training for m in modules.values()):
            # Attention dropout acts on the probabilities the modules return: captured
            # rows no longer sum to 1 and change from call to call.
            warnings.warn(f"{type(self.model).__name__} has modules in training mode:"
                          " attention dropout makes the captured weights random; call"
                          " model.eval() before capturing", stacklevel=4)
        if self.adapter.returned:
            self._open_returned(modules)
            return
        found: dict[str, list[tuple[str, torch.nn.Module]]] = defaultdict(list)
        site_of: dict[tuple[str, str], Site] = {}
        for name, module in modules.items():
            matched: list[Site] = []
            for site in self.sites:
                if re.search(site.pattern, name):
                    # One module, several streams only where each reads another output
                    # (T5Gemma2's merged attention: self at index 1, cross at index 2).
                    if matched and not (site.reader == "output" and all(
                            m.reader == "output" and m.index != site.index for m in matched)):
                        continue
                    if site.reader == "softmax" and not hasattr(module, "fused_attn"):
                        raise TypeError(f"{self.adapter.name}: {name} is a"
                                        f" {type(module).__name__}, not a timm attention"
                                        " module (no fused_attn switch)")
                    if site.reader == "mha" and not isinstance(module, torch.nn.MultiheadAttention):
                        raise TypeError(f"{self.adapter.name}: {name} is a"
                                        f" {type(module).__name__}, not nn.MultiheadAttention")
                    found[site.stream].append((name, module))
                    site_of[site.stream, name] = site
                    matched.append(site)
        if not found:
            raise ValueError(
                f"adapter {self.adapter.name!r} found no attention modules of streams"
                f" {[s.stream for s in self.sites]} in {type(self.model).__name__}"
                " (custom attention blocks, e.g. open_clip block_type='custom' or timm"
                " towers, are not supported)")

        if "hf_eager" in self.adapter.switches:
            self._switch_hf_eager()
        if "timm_fused" in self.adapter.switches:
            for members in found.values():
                for name, module in members:
                    if hasattr(module, "fused_attn"):
                        self.saved_fused.append((module, module.fused_attn))
                        module.fused_attn = False

        self._hook_token_sources(modules)

        for root in {s.root for s in self.sites if s.root is not None}:
            if root not in modules:
                raise ValueError(f"{self.adapter.name}: no module {root!r} (a site's root)")
            self.handles.append(modules[root].register_forward_pre_hook(
                self._root_hook(root)))
        for stream, members in found.items():
            for index, (name, module) in enumerate(members):
                site = site_of[stream, name]
                if site.reader == "mha":
                    self.handles.append(module.register_forward_pre_hook(
                        _ask_mha_for_weights, with_kwargs=True))
                elif site.reader in ("softmax", "chunked"):
                    self.handles.append(module.register_forward_pre_hook(self._enter_softmax))
                self.handles.append(module.register_forward_hook(
                    self._layer_hook(site, name, index, modules), with_kwargs=True))

    def _hook_token_sources(self, modules: dict) -> None:
        token_streams = {s.query_stream for s in self.sites} | {s.key_stream for s in self.sites}
        for name, module in modules.items():
            for source in self.adapter.tokens:
                if source.stream in token_streams and source.matches(name, module):
                    self.handles.append(module.register_forward_pre_hook(
                        self._token_hook(source), with_kwargs=True))

    def _open_returned(self, modules: dict) -> None:
        """The fallback for models that declare no attention modules: each outermost
        call of the model is given ``output_attentions=True``; the tuples it returns are
        read (:meth:`_read_returned`) and taken out of the output again."""
        if self.values:
            raise ValueError(f"values=True: {type(self.model).__name__} declares no"
                             " attention modules (its attention is read from what it"
                             " returns), so no value projection is known; capture"
                             " without values=True")
        if "hf_eager" in self.adapter.switches:
            self._switch_hf_eager()
        self._hook_token_sources(modules)
        self.returned_calls: list[tuple[bool, bool]] = []
        self.scores_returned: set[str] = set()
        self.softmax_of: dict[int, torch.Tensor] = {}
        self.warned_scores = False
        self.depth = 0
        self.handles.append(self.model.register_forward_pre_hook(
            self._returned_pre, with_kwargs=True))
        self.handles.append(self.model.register_forward_hook(
            self._returned_post, with_kwargs=True, always_call=True))

    def _returned_pre(self, module, args, kwargs):
        self.depth += 1
        if self.depth > 1:     # the model calling itself: the outer call reads
            return None
        import inspect

        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
        asked = bool(bound.arguments.get("output_attentions"))
        as_tuple = bound.arguments.get("return_dict") is False
        bound.arguments["output_attentions"] = True
        if as_tuple:
            bound.arguments["return_dict"] = True
        self.returned_calls.append((asked, as_tuple))
        return tuple(bound.args), dict(bound.kwargs)

    def _returned_post(self, module, args, kwargs, output):
        self.depth = max(self.depth - 1, 0)
        if self.depth > 0 or not self.returned_calls:
            return None
        asked, as_tuple = self.returned_calls.pop()
        if output is None:          # the forward raised (always_call hooks run anyway)
            return None
        if not hasattr(output, "keys"):
            raise RuntimeError(
                f"{self.adapter.name}: {type(module).__name__} returned a"
                f" {type(output).__name__}, not a ModelOutput, so its attention tuples"
                " cannot be told apart from its other outputs; call it with"
                " return_dict=True")
        self._read_returned(output)
        if not asked:
            output = _without_attentions(output)
        return output.to_tuple() if as_tuple else output

    def _read_returned(self, output, prefix: str = "") -> None:
        """Record every attention tuple of ``output`` (nested outputs too) as the
        layers of the stream its key names (:func:`~groundroll.families.derive.returned_site`).

        A tensor with more than four axes, ``[batch, block, head, query, key]`` (LongT5
        local blocks, ProphetNet n-gram streams), is recorded with its leading axes folded
        into heads, ``[batch, block * head, query, key]``, in stream ``<stream>_blocks``.
        A cross-attention whose queries are several times the decoder's (ProphetNet:
        main stream then n-gram streams) is split: the first block of rows is ``cross``
        (decoder -> encoder), the rest ``cross_ngram``.
        """

        keys = list(output.keys())
        level = tuple(k for k in keys if k.endswith("attentions"))
        if not prefix:
            self.softmax_of = _softmax_results(output) if self.grads else {}
        decoder_rows = None
        for key in sorted(level, key=_returned_order):
            path = f"{prefix}{key}"
            site = next((s for s in self.adapter.sites if re.search(s.pattern, path)), None)
            site = site or returned_site(path, level)
            if self.explicit_streams and not {site.stream, "cross_ngram"} & self.wanted:
                continue
            values = output[key]
            if not isinstance(values, (tuple, list)):
                continue
            call = self.calls[path]
            self.calls[path] += 1
            for index, weights in enumerate(values):
                parts = weights if isinstance(weights, (tuple, list)) else (weights,)
                for j, part in enumerate(parts):
                    if not isinstance(part, torch.Tensor):
                        continue
                    name = f"{path}[{index}]" + (f"[{j}]" if len(parts) > 1 else "")
                    here = site if j == 0 else dataclasses.replace(
                        site, stream=f"{site.stream}_{j}", query=f"{site.query_stream}_{j}",
                        key=f"{site.key_stream}_{j}" if site.kind == "self" else site.key)
                    if part.dim() > 4:
                        stream = f"{here.stream}_blocks"
                        q, k = part.shape[-2:]
                        here = dataclasses.replace(
                            here, stream=stream, query=stream,
                            key=stream if q == k and here.kind == "self" else f"{stream}_keys")
                        part = part.flatten(1, -3)
                    if part.dim() < 4:

                        raise UnsupportedModelError(
                            f"{type(self.model).__name__} returns {path} of shape"
                            f" {list(part.shape)}, not [batch, head, query, key]"
                            " probabilities: there is no attention matrix to capture")
                    if bool((part.detach() < 0).any()):
                        # Pre-softmax scores reported as attention (ProphetNet's encoder
                        # and cross-attention): read the probabilities the model made
                        # of them, or recompute their softmax (no gradient reaches it).
                        used = self.softmax_of.get(id(part.grad_fn))
                        if used is None:
                            part = part.softmax(-1)
                            self.scores_returned.add(site.stream)
                        else:
                            part = used
                    if key == "decoder_attentions" and j == 0 and decoder_rows is None:
                        decoder_rows = part.shape[-2]
                    rows = decoder_rows if here.stream == "cross" else None
                    if rows and part.shape[-2] > rows and part.shape[-2] % rows == 0:
                        pieces = [(here, part[:, :, :rows]), (dataclasses.replace(
                            here, stream="cross_ngram", query="decoder_ngram"),
                            part[:, :, rows:])]
                    else:
                        pieces = [(here, part)]
                    for piece_site, piece in pieces:
                        if not self.explicit_streams or piece_site.stream in self.wanted:
                            self._record(piece_site, name, index, call, piece)
        for key in keys:
            value = output[key]
            if hasattr(value, "keys") and not isinstance(value, torch.Tensor):
                self._read_returned(value, f"{prefix}{key}.")
        if not prefix and "cross" in self.trace.layers and "encoder" not in self.trace.layers:
            # The encoder's attention is local (LongT5) or not returned (Pegasus-X):
            # compose through the decoder only, the encoder counting as the identity.

            self.trace.chains = (Chain("encoder", "decoder", source_self=None,
                                       target_self="decoder", target_cross="cross"),)
        if not prefix and self.grads and self.scores_returned and not self.warned_scores:
            self.warned_scores = True
            warnings.warn(f"{type(self.model).__name__} returns pre-softmax scores as the"
                          f" attention of streams {sorted(self.scores_returned)} and its"
                          " own softmax of them was not found in the autograd graph: their"
                          " probabilities are recomputed, so those layers get no gradient"
                          " (grad stays None)", stacklevel=2)

    def close(self) -> None:
        while self.handles:
            self.handles.pop().remove()
        self.depth = 0
        while self.modes:  # a forward that raised inside a softmax-read module
            self.modes.pop().__exit__(None, None, None)
        for config, value in reversed(self.saved_configs):
            config._attn_implementation_internal = value
        self.saved_configs.clear()
        for module, value in reversed(self.saved_fused):
            module.fused_attn = value
        self.saved_fused.clear()

    def _switch_hf_eager(self) -> None:
        fixed = fixed_sdpa_attention(self.model)
        if fixed:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} was built with SDPA attention classes"
                f" ({', '.join(fixed)}), which transformers fixes when the model is loaded"
                " and which return no attention weights. Load it again with"
                " from_pretrained(..., attn_implementation='eager') and capture that"
                " model.")
        configs: dict[int, Any] = {}
        pending = [m.config for m in self.model.modules()
                   if hasattr(getattr(m, "config", None), "_attn_implementation_internal")]
        while pending:
            config = pending.pop()
            if id(config) in configs:
                continue
            configs[id(config)] = config
            for key in getattr(config, "sub_configs", {}) or {}:
                sub = getattr(config, key, None)
                if hasattr(sub, "_attn_implementation_internal"):
                    pending.append(sub)
        self.saved_configs = [(c, c._attn_implementation_internal) for c in configs.values()]
        if all(c._attn_implementation_internal == "eager" for c in configs.values()):
            return
        if hasattr(self.model, "set_attn_implementation"):
            self.model.set_attn_implementation("eager")
        for config in configs.values():
            # Sub-configs the model's own switch could not reach.
            config._attn_implementation_internal = "eager"

    # ------------------------------------------------------------------ hooks

    def _token_hook(self, source):
        def hook(module, args, kwargs):
            read_tokens(source, module, args, kwargs, self)
        return hook

    def _root_hook(self, root: str):
        def hook(module, args):
            self.passes[root] += 1
            for key in [k for k in self.arrivals if k[0] == root]:
                self.arrivals[key] = 0
        return hook

    def _enter_softmax(self, module, args):
        mode = _SoftmaxRecorder()
        mode.__enter__()
        self.modes.append(mode)

    def _weights(self, site: Site, name: str, output, args, kwargs
                 ) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...]]:
        """The call's ``[batch, head, query, key]`` weights (None if it gave none) and,
        for a chunked site, the per-chunk probabilities they were assembled from."""
        if site.reader in ("softmax", "chunked"):
            mode = self.modes.pop() if self.modes else None
            if mode is None:
                return None, ()
            mode.__exit__(None, None, None)
            if site.reader == "softmax":
                return mode.probs, ()
            parts = tuple(mode.found)
            if not parts:
                return None, ()
            return _block_diagonal(name, parts, _token_count(args, kwargs)), parts
        if isinstance(output, (tuple, list)) and -len(output) <= site.index < len(output):
            return output[site.index], ()
        return None, ()

    def _layer_hook(self, site: Site, name: str, index: int, modules: dict):
        def hook(module, args, kwargs, output):
            weights, parts = self._weights(site, name, output, args, kwargs)
            if not isinstance(weights, torch.Tensor) or weights.dim() != 4:
                raise RuntimeError(
                    f"{self.adapter.name}: {name} returned no [batch, head, query, key]"
                    " attention weights; is a fused attention path still active?")
            if site.root is not None:
                call = max(self.passes[site.root], 0)
                layer_index = self.arrivals[site.root, site.stream]
                self.arrivals[site.root, site.stream] += 1
            else:
                call, layer_index = self.calls[name], index
                self.calls[name] += 1
            layer = self._record(site, name, layer_index, call, weights, parts)
            if layer is not None and self.values:
                with torch.no_grad():
                    layer.value_norms = _value_norms(site, name, module, args, kwargs,
                                                     weights, modules)
        return hook

    def _record(self, site: Site, name: str, layer_index: int, call: int,
                weights: torch.Tensor, parts: tuple[torch.Tensor, ...] = ()
                ) -> AttentionLayer | None:
        """Add one layer's ``[batch, head, query, key]`` weights to the trace (or fold
        them into the stream's streaming rollout). ``parts``: the per-chunk
        probabilities that detached, block-diagonal ``weights`` were assembled from;
        with ``grads=True`` their gradients fill the layer's."""
        causal = site.causal if site.causal is not None else _looks_causal(weights)
        if site.kind == "self":
            self._count_prefix(site.query_stream, weights.shape[-1], causal, weights.shape[0])
        else:
            for stream, n in ((site.query_stream, weights.shape[-2]),
                              (site.key_stream, weights.shape[-1])):
                if stream not in self.trace.tokens:
                    self.trace.tokens[stream] = Tokens(length=n)
        if site.stream in self.reduce:
            self._fold(site.stream, call, weights)
            return None
        layer = AttentionLayer(
            weights=weights if self.grads else weights.detach(), kind=site.kind,
            stream=site.stream, query_stream=site.query_stream,
            key_stream=site.key_stream, index=layer_index, call=call, causal=causal,
            module_name=name)
        if self.grads and any(p.requires_grad for p in parts):
            layer.parts = parts
            _hook_part_gradients(parts, layer)
        elif self.grads and weights.requires_grad:
            _hook_gradient(weights, layer)
        self.trace.add(layer)
        return layer

    def _count_prefix(self, stream: str, keys: int, causal: bool, batch: int) -> None:
        tokens = self.trace.tokens.get(stream)
        if tokens is None:
            # Nothing said where this stream's tokens come from (e.g. audio features):
            # its length is what the layer saw.
            self.trace.tokens[stream] = Tokens(length=keys, causal=causal)
            return
        if causal and not tokens.causal:
            tokens.causal = True
        if tokens.grid is not None and tokens.length != keys:
            # Prefix tokens are counted from the sequence the layer saw, not guessed.
            rows, cols = tokens.grid
            tokens.length, tokens.prefix = keys, keys - rows * cols
            if tokens.prefix > 0 and "cls" not in tokens.special:
                tokens.special["cls"] = torch.zeros(batch, dtype=torch.long)

    def _fold(self, stream: str, call: int, weights: torch.Tensor) -> None:

        key = (stream, call)
        if key not in self.accumulators:
            self.accumulators[key] = RolloutAccumulator(**self.reduce[stream])
        accumulator = self.accumulators[key]
        accumulator.add(weights.detach())
        if accumulator.layers > self.reduce[stream].get("start_layer", 0):
            self.trace.reduced[stream] = accumulator.result()


def _softmax_results(output) -> dict[int, torch.Tensor]:
    """``id(scores.grad_fn) -> probabilities`` for every softmax in the autograd graph
    behind ``output``'s non-attention tensors: the probabilities are the very tensors
    the model multiplied with the values (a softmax node keeps its result for
    backward), so gradients reach them. Walks the graph once."""
    roots = [t for key in output.keys() if not key.endswith("attentions")
             for t in _output_tensors(output[key]) if t.grad_fn is not None]
    found: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    stack = [t.grad_fn for t in roots]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        softmax = type(node).__name__.startswith(("SoftmaxBackward", "_SoftmaxBackward"))
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            if softmax and id(nxt) not in found:
                found[id(nxt)] = node._saved_result
            stack.append(nxt)
    return found


def _output_tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if hasattr(value, "keys"):
        return [t for k in value.keys() if not k.endswith("attentions")
                for t in _output_tensors(value[k])]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _output_tensors(v)]
    return []


def _returned_order(key: str) -> int:
    """Encoder streams first, cross-attention last (it is split by the decoder's rows)."""
    if key in ("attentions", "encoder_attentions"):
        return 0
    return 3 if key.startswith("cross") else 1 if key == "decoder_attentions" else 2


def _without_attentions(output):
    """``output`` (a ``ModelOutput``) as the model returns it without
    ``output_attentions``: every ``*attentions`` field, nested outputs included, unset."""
    values = {}
    for key in output.keys():
        if key.endswith("attentions"):
            continue
        value = output[key]
        if hasattr(value, "keys") and not isinstance(value, torch.Tensor):
            value = _without_attentions(value)
        values[key] = value
    return type(output)(**values)


def _looks_causal(weights: torch.Tensor) -> bool:
    """Whether every query row gives exactly zero weight to later keys."""
    q, k = weights.shape[-2:]
    if q != k or q < 2:
        return False
    upper = torch.ones(q, k, dtype=torch.bool, device=weights.device).triu(1)
    return bool((weights.detach()[..., upper] == 0).all())


class _SoftmaxRecorder(torch.overrides.TorchFunctionMode):
    """Keeps every ``[batch, head, query, key]`` softmax computed while active, in
    order (thread-local: torch function modes are per thread); ``probs`` is the last."""

    _SOFTMAX = {torch.softmax, torch.Tensor.softmax, F.softmax, torch.special.softmax}

    def __init__(self):
        super().__init__()
        self.found: list[torch.Tensor] = []

    @property
    def probs(self) -> torch.Tensor | None:
        return self.found[-1] if self.found else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self._SOFTMAX and isinstance(out, torch.Tensor) and out.dim() == 4:
            self.found.append(out)
        return out


def _token_count(args: tuple, kwargs: dict) -> int | None:
    """Tokens of an attention module's call: ``hidden_states`` is ``[tokens, dim]``
    (a flat patch sequence) or ``[batch, tokens, dim]``."""
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    if not isinstance(hidden, torch.Tensor) or hidden.dim() < 2:
        return None
    return hidden.shape[0] if hidden.dim() == 2 else hidden.shape[-2]


def _block_diagonal(name: str, parts: tuple[torch.Tensor, ...], tokens: int | None
                    ) -> torch.Tensor:
    """``[batch, head, N, N]``: the ``[batch, head, n_i, n_i]`` chunk probabilities on
    the diagonal in call order, zero between chunks (detached; rows still sum to 1).
    The chunks must be square and tile the module's ``N`` tokens exactly."""
    sizes = [p.shape[-1] for p in parts]
    square = all(p.shape[:2] == parts[0].shape[:2] and p.shape[-2] == p.shape[-1]
                 for p in parts)
    if not square or (tokens is not None and sum(sizes) != tokens):
        raise RuntimeError(
            f"{name} computed softmaxes of shapes {[tuple(p.shape) for p in parts]},"
            f" which do not tile its {tokens} tokens as square per-chunk attention:"
            " it does not attend chunk by chunk as its cu_seqlens argument suggests;"
            " capture it with an adapter site that reads its output instead")
    n = sum(sizes)
    with torch.no_grad():
        weights = parts[0].new_zeros(*parts[0].shape[:2], n, n)
        start = 0
        for part, size in zip(parts, sizes):
            weights[..., start:start + size, start:start + size] = part
            start += size
    return weights


def _ask_mha_for_weights(module, args, kwargs):
    """Forward pre-hook of nn.MultiheadAttention: per-head weights instead of none."""
    kwargs = dict(kwargs)
    if len(args) > 3:
        kwargs.update(zip(_MHA_ARGS[3:], args[3:]))
        args = args[:3]
    kwargs["need_weights"] = True
    kwargs["average_attn_weights"] = False
    return args, kwargs


def _add_grad(ref: weakref.ref, g: torch.Tensor) -> None:
    """Accumulate ``g`` into the referenced layer's ``grad``.

    The gradient hooks hold their layer weakly: a hook lives in the autograd graph of
    the layer's own weights, so a strong reference would be a cycle through C++ that
    Python's collector cannot see, keeping every captured layer (and its graph) alive
    after the trace is dropped.
    """
    layer = ref()
    if layer is not None:
        layer.grad = g if layer.grad is None else layer.grad + g


def _hook_part_gradients(parts: tuple[torch.Tensor, ...], layer: AttentionLayer) -> None:
    """Fill ``layer.grad`` during backward from the gradients of the chunk probabilities
    the model used, each placed at its block of the diagonal (zeros elsewhere: the
    weights between chunks are not used)."""
    n, start, ref = layer.weights.shape[-1], 0, weakref.ref(layer)
    for part in parts:
        size = part.shape[-1]
        pad = (start, n - start - size, start, n - start - size)

        def on_grad(grad, pad=pad):
            _add_grad(ref, F.pad(grad.detach(), pad))
        if part.requires_grad:
            part.register_hook(on_grad)
        start += size


def _hook_gradient(weights: torch.Tensor, layer: AttentionLayer) -> None:
    """Fill ``layer.grad`` with d(score)/d(weights) during backward.

    A module may return a view of the probabilities it multiplied with the values
    (nn.MultiheadAttention returns ``probs.view(batch, head, query, key)``). A hook on
    that view never fires, so the hook goes on the base tensor and the gradient is
    viewed back through the same strides.
    """
    if _hook_copied_source(weights, layer):
        return
    ref = weakref.ref(layer)
    base = weights._base if weights._is_view() else None
    if base is None:
        def on_grad(grad):
            _add_grad(ref, grad.detach())
        weights.register_hook(on_grad)
        return
    if not base.is_contiguous():
        raise RuntimeError(f"{layer.module_name}: attention weights are a view of a"
                           " non-contiguous tensor; cannot map their gradient")
    size, stride = weights.size(), weights.stride()
    offset = weights.storage_offset() - base.storage_offset()

    def on_base_grad(grad):
        _add_grad(ref, grad.detach().contiguous().as_strided(size, stride, offset).clone())
    base.register_hook(on_base_grad)


_REARRANGE = ("PermuteBackward0", "TransposeBackward0")


def _hook_copied_source(weights: torch.Tensor, layer: AttentionLayer) -> bool:
    """A model may return a rearranged copy of the probabilities it used (XLNet returns
    ``probs.permute(2, 3, 0, 1).contiguous()``); nothing downstream uses the copy, so no
    gradient reaches it. Hook the node that produced the probabilities instead and
    rearrange its gradient the same way. Returns whether ``weights`` is such a copy."""
    node = weights.grad_fn
    if node is None or type(node).__name__ != "CloneBackward0":
        return False
    steps = []
    source, slot = node.next_functions[0]
    while source is not None and type(source).__name__ in _REARRANGE:
        steps.append(source)
        source, slot = source.next_functions[0]
    if source is None or not steps:
        return False
    ref, shape = weakref.ref(layer), weights.shape   # the closure holds no tensor

    def on_source_grad(grad_outputs):
        g = grad_outputs[slot]
        if g is None:
            return None
        g = g.detach()
        for step in reversed(steps):    # replay the forward rearrangement
            if type(step).__name__ == "PermuteBackward0":
                g = g.permute(*step._saved_dims)
            else:
                g = g.transpose(step._saved_dim0, step._saved_dim1)
        _add_grad(ref, g.contiguous().view(shape))
        return None

    source.register_prehook(on_source_grad)
    return True


def _relative(modules: dict, name: str, path: str) -> torch.nn.Module:
    parts = name.split(".") if name else []
    while path.startswith("../"):
        parts, path = parts[:-1], path[3:]
    full = ".".join(parts + [path]) if path else ".".join(parts)
    return modules[full]


def _linear_part(modules: dict, name: str, spec: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    path, _, part = spec.partition(":")
    linear = _relative(modules, name, path)
    weight, bias = linear.weight, linear.bias
    if part:
        i, n = (int(x) for x in part.split("/"))
        weight = weight.chunk(n, 0)[i]
        bias = None if bias is None else bias.chunk(n, 0)[i]
    return weight, bias


def _value_norms(site: Site, name: str, module, args, kwargs, weights, modules) -> torch.Tensor:
    """``[batch, head, key]`` norms ``||v_j W_O^h||`` (value bias in, output bias out)."""
    heads = weights.shape[1]
    if site.reader == "mha":
        source = kwargs.get("value", args[2] if len(args) > 2 else None)
        if not module.batch_first:
            source = source.transpose(0, 1)
        e = module.embed_dim
        w_v = module.in_proj_weight[2 * e:] if module._qkv_same_embed_dim else module.v_proj_weight
        b_v = None if module.in_proj_bias is None else module.in_proj_bias[2 * e:]
        w_o = module.out_proj.weight
    else:
        if site.value is None or site.out is None:
            raise ValueError(f"values=True: the {site.stream!r} site of this adapter does"
                             " not say where its value and output projections are")
        names = ("key_value_states", "encoder_hidden_states") if site.kind == "cross" else ()
        source = next((kwargs[k] for k in names if kwargs.get(k) is not None), None)
        if source is None:
            if site.kind == "cross":
                raise ValueError(f"values=True: {name} got no key/value states")
            source = kwargs.get("hidden_states", args[0] if args else None)
        w_v, b_v = _linear_part(modules, name, site.value)
        w_o = _relative(modules, name, site.out).weight
    if source.dim() == 2:        # a flat patch sequence [key, dim] (chunked sites)
        source = source.unsqueeze(0)
    v = F.linear(source, w_v, b_v)                       # [batch, key, head * head_dim]
    batch, keys, inner = v.shape
    v = v.reshape(batch, keys, heads, inner // heads)
    w_o = w_o.reshape(w_o.shape[0], heads, inner // heads)   # [out, head, head_dim]
    return torch.einsum("bkhd,ohd->bhko", v, w_o).norm(dim=-1)

"""The transformers BLIP-2 / InstructBLIP family (``Blip2ForConditionalGeneration``,
``InstructBlipForConditionalGeneration`` and their kin): a ViT tower, a Q-Former whose
learned query tokens read the patches through cross-attention, and a language model
(OPT, Vicuna, Flan-T5) that reads only the projected queries, at the image placeholder
tokens of its prompt.

Capture sites are explicit (transformers declares the Q-Former's self-attention and
its cross-attention under one ``.attention`` record): ``vision`` (the tower, class token
first), ``qformer`` (the queries' self-attention), ``qformer_cross`` (queries ->
image tokens, in every ``cross_attention_frequency``-th block only) and the language
model's: ``decoder`` (a decoder-only model's self-attention over queries and text), or
``encoder``, ``decoder`` and ``cross`` for Flan-T5.

Caption maps follow the chain from the caption rows to the pixels: the language model's
self-attention from a word's rows to the query columns, then each query's own reading
of the image tokens (:class:`~groundroll.families.Queries`: the tower's self-attention,
then per Q-Former block its self-attention and, where there is one, its
cross-attention, in the order the block computes them), with the same method at each
hop. InstructBLIP's Q-Former is given no instruction text (its tokenizer is not the
language model's): the queries read the image alone, as in BLIP-2. The Flan-T5
variants are refused (:data:`T5_REASON`).
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch

from ..trace import AttentionLayer, Chain, Trace
from . import _hf, _vlm
from ._hf_sites import EAGER, image_tokens
from .derived import derived_grounding
from .record import Family, Queries
from .sites import Adapter, Site

__all__ = ["FAMILY", "ADAPTER", "CHAIN", "QUERIES", "CAPTIONING", "T5_REASON"]

def _found(adapter: Adapter, model) -> Adapter:
    """The sites of ``adapter`` that find modules in ``model``: its language model's
    (decoder-only or Flan-T5), and none for the heads without one (retrieval, the
    Q-Former alone)."""
    names = [name for name, _ in model.named_modules()]
    sites = tuple(s for s in adapter.sites if any(re.search(s.pattern, n) for n in names))
    return replace(adapter, sites=sites, specialise=None)


_QFORMER = r"(^|\.)qformer\.encoder\.layer\.\d+\."
_LM = r"(^|\.)language_model\."

ADAPTER = Adapter(
    name="hf_blip_2",
    model_types=("blip-2", "instructblip", "instructblipvideo"),
    sites=(
        Site(r"(^|\.)vision_model\.encoder\.layers\.\d+\.self_attn$", "vision",
             value="qkv:2/3", out="projection"),
        Site(_QFORMER + r"attention\.attention$", "qformer", value="value",
             out="../output.dense"),
        Site(_QFORMER + r"crossattention\.attention$", "qformer_cross", query="qformer",
             key="vision", value="value", out="../output.dense"),
        # Decoder-only language models: OPT (decoder.layers), LLaMA / Vicuna (layers).
        Site(_LM + r"(model\.)?decoder\.layers\.\d+\.self_attn$", "decoder",
             causal=True, value="v_proj", out="out_proj"),
        Site(_LM + r"(model\.)?layers\.\d+\.self_attn$", "decoder", causal=True,
             value="v_proj", out="o_proj"),
        # Flan-T5: encoder, decoder and the decoder's cross-attention.
        Site(_LM + r"encoder\.block\.\d+\.layer\.0\.SelfAttention$", "encoder",
             value="v", out="o"),
        Site(_LM + r"decoder\.block\.\d+\.layer\.0\.SelfAttention$", "decoder",
             causal=True, value="v", out="o"),
        Site(_LM + r"decoder\.block\.\d+\.layer\.1\.EncDecAttention$", "cross",
             query="decoder", key="encoder", value="v", out="o"),
    ),
    tokens=(image_tokens(("Blip2VisionModel", "InstructBlipVisionModel",
                          "InstructBlipVideoVisionModel")),),
    switch=EAGER,
    description="transformers BLIP-2 / InstructBLIP",
    specialise=lambda adapter, model: _found(adapter, model),
)

#: Image tokens -> the learned queries: the tower's self-attention, then per Q-Former
#: block the queries' self-attention and their cross-attention to the image tokens.
CHAIN = Chain("vision", "qformer", source_self="vision", target_self="qformer",
              target_cross="qformer_cross")

_BLOCK = re.compile(r"qformer\.encoder\.layer\.(\d+)\.crossattention")


def _cross_by_block(trace: Trace) -> Trace:
    """``trace`` with each Q-Former cross-attention layer indexed by the block it sits
    in (capture numbers a stream's layers in order, and only every
    ``cross_attention_frequency``-th block has cross-attention)."""
    out = Trace(layers={}, tokens=trace.tokens, reduced=trace.reduced,
                family=trace.family, chains=trace.chains)
    for layer in trace:
        block = _BLOCK.search(layer.module_name or "") if layer.stream == "qformer_cross" \
            else None
        if block is not None:
            layer = AttentionLayer(
                weights=layer.weights, kind=layer.kind, stream=layer.stream,
                query_stream=layer.query_stream, key_stream=layer.key_stream,
                index=int(block.group(1)), call=layer.call, grad=layer.grad,
                value_norms=layer.value_norms, causal=layer.causal,
                module_name=layer.module_name)
        out.add(layer)
    return out


QUERIES = Queries(chain=CHAIN, layers=_cross_by_block)

#: Why the Flan-T5 variants are refused.
T5_REASON = (
    "its language model is an encoder-decoder (Flan-T5): the query tokens sit in the"
    " language model's encoder input, and caption grounding follows query columns only"
    " in a decoder-only language model's own sequence (BLIP-2 / InstructBLIP with OPT,"
    " Vicuna or another causal language model)")

def _n_queries(model) -> int:
    return int(model.config.num_query_tokens)


def _start_ids(model, tokenizer):
    """The query placeholders, then the language model's start token (BLIP-2's
    processor prompt for a caption)."""
    return [_vlm.image_token(model)] * _n_queries(model) + _vlm.bos_ids(model, tokenizer)


def _instructblip(model) -> bool:
    return "instructblip" in str(model.config.model_type)


def _inputs(model, pixels, ids, prompt=None):
    inputs = _vlm.plain_inputs(model, pixels, ids)
    if _instructblip(model):
        # The Q-Former's instruction: none (the queries read the image alone).
        inputs["qformer_input_ids"] = torch.zeros((ids.shape[0], 0), dtype=torch.long,
                                                  device=ids.device)
    return inputs


def _grid(model, n_tokens):
    """The image tokens the queries read: the tower's class token and its patch grid."""
    return _hf.class_token_grid(n_tokens, _vlm.vision_size(model), _vlm.vision_patch(model),
                                "the Q-Former's queries read")


CAPTIONING = replace(
    _vlm.captioning(stream="decoder", start_ids=_start_ids, grid=_grid, inputs=_inputs),
    streams=("vision", "qformer", "qformer_cross", "decoder"), queries=QUERIES)


def _captioning(model):
    if "video" in str(model.config.model_type):
        raise TypeError(f"{type(model).__name__} (family 'hf_blip_2'): its words cannot"
                        " be grounded in the image: it captions videos (frames in, the"
                        " Q-Former's queries per frame); ground_caption takes one image"
                        " (InstructBLIP or BLIP-2 for images)")
    if not getattr(model.config, "use_decoder_only_language_model", True):
        raise TypeError(f"{type(model).__name__} (family 'hf_blip_2'): its words cannot"
                        f" be grounded in the image: {T5_REASON}")
    return CAPTIONING


FAMILY = Family("hf_blip_2", adapter=ADAPTER, chains=(CHAIN,), grounding=derived_grounding,
                captioning=_captioning)

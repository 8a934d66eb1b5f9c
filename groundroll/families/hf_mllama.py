"""The transformers Llama 3.2 Vision family (``MllamaForConditionalGeneration``): a
tiled ViT (a class token first in each tile, padding patches last, a local then a
gated global transformer) and a language model that reads the image only through
cross-attention layers placed among its self-attention layers
(``text_config.cross_attention_layers``), each gated.

Capture sites are explicit: the language model's ``decoder`` (self-attention, causal)
and ``cross`` (text -> image tokens), each indexed by the decoder layer it sits in
(:func:`by_decoder_layer`), so that the composer's chain meets them in the model's
order, as for ``VisionEncoderDecoderModel``. The chain starts at the cross-attention
keys, the tower's output: the tower is not captured (its global layers run over four
tiles of 1,608 tokens, blank tiles and per-tile padding included, which the keys leave
out; a rollout through them would also hold a 6,432 x 6,432 matrix per head and layer).

The input is one tile at the tower's size (aspect ratio 1 x 1; the processor's blank
tiles after it, masked); a word's map reads the cross-attention keys after the first
tile's class token, on its patch grid.
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch

from ..trace import Chain, Trace
from . import _hf, _vlm
from ._hf_sites import EAGER
from .record import Captioning, Family, HFLoader
from .sites import Adapter, Site

__all__ = ["FAMILY", "ADAPTER", "CAPTIONING", "LOADER", "PROMPT", "by_decoder_layer"]

LOADER = HFLoader("MllamaForConditionalGeneration", "processor", "hf_vlm",
                  attn_implementation="eager")

#: Llama 3.2's chat turns around the ``<|image|>`` token.
PROMPT = ("<|start_header_id|>user<|end_header_id|>\n\n",
          "Describe the image.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")

_TEXT = r"(^|\.)language_model\.layers\.\d+\."

ADAPTER = Adapter(
    name="hf_mllama",
    model_types=("mllama",),
    sites=(
        Site(_TEXT + r"self_attn$", "decoder", causal=True, value="v_proj", out="o_proj"),
        Site(_TEXT + r"cross_attn$", "cross", query="decoder", key="encoder",
             value="v_proj", out="o_proj"),
    ),
    switch=EAGER,
    description="transformers Llama 3.2 Vision (Mllama)",
    # From the cross-attention keys (the tower's output, not captured) to the text.
    chains=(Chain("encoder", "decoder", target_self="decoder", target_cross="cross"),),
)

_LAYER = re.compile(r"language_model\.layers\.(\d+)\.")


def by_decoder_layer(trace: Trace) -> Trace:
    """``trace`` with each ``decoder`` and ``cross`` layer indexed by the decoder layer it
    sits in: capture numbers a stream's layers in order, and a decoder layer here holds
    either self- or cross-attention, not both.

    Parameters
    ----------
    trace : Trace
        A capture of the language model's ``decoder`` and ``cross`` streams.

    Returns
    -------
    Trace
        The same layers, ``index`` set from ``language_model.layers.<index>`` in each
        layer's module name.
    """
    out = Trace(layers={}, tokens=trace.tokens, reduced=trace.reduced,
                family=trace.family, chains=trace.chains)
    for layer in trace:
        found = _LAYER.search(layer.module_name or "")
        if found is not None and layer.stream in ("decoder", "cross"):
            layer = replace(layer, index=int(found.group(1)))
        out.add(layer)
    return out


def _square_ratio_id(model) -> int:
    """The 1-based id of the 1 x 1 aspect ratio among the tower's supported ones."""
    ratios = [tuple(r) for r in model.config.vision_config.supported_aspect_ratios]
    return ratios.index((1, 1)) + 1


def _inputs(model, pixels, ids, prompt=None):
    """One image of one tile per row, as the processor sends an image of the tower's
    size: ``pixel_values [B, 1, max_num_tiles, 3, h, w]`` (the tile, then blank tiles),
    the 1 x 1 aspect ratio, the tile mask and the cross-attention mask (the text from
    the ``<|image|>`` token on sees the first tile)."""
    b = pixels.shape[0]
    tiles = int(model.config.vision_config.max_num_tiles)
    padded = torch.zeros((b, 1, tiles, *pixels.shape[1:]), dtype=model.dtype,
                         device=pixels.device)
    padded[:, 0, 0] = pixels
    first = torch.zeros((b, 1, tiles), dtype=torch.long, device=ids.device)
    first[..., 0] = 1
    seen = (ids == _vlm.image_token(model)).long().cumsum(-1).clamp(max=1)   # [B, T]
    return dict(input_ids=ids, pixel_values=padded,
                aspect_ratio_ids=torch.full((b, 1), _square_ratio_id(model),
                                            dtype=torch.long, device=ids.device),
                aspect_ratio_mask=first,
                cross_attention_mask=seen[:, :, None, None] * first[:, None],
                attention_mask=torch.ones_like(ids))


def _start_ids(model, tokenizer):
    before, after = PROMPT
    return (_vlm.bos_ids(model, tokenizer) + _vlm.text_ids(tokenizer, before)
            + [_vlm.image_token(model)] + _vlm.text_ids(tokenizer, after))


def _grid(model, n_tokens):
    """The tile's patch grid after its class token; the padding patches after it."""
    (h, w), (ph, pw) = _vlm.vision_size(model), _vlm.vision_patch(model)
    rows, cols = h // ph, w // pw
    if n_tokens < 1 + rows * cols:
        raise ValueError(f"the image has {n_tokens} tokens, fewer than the class token and"
                         f" the {rows} x {cols} patch grid of one tile: they cannot be"
                         " mapped back to pixels")
    return 1, (rows, cols)


CAPTIONING = Captioning(
    image_size=_vlm.vision_size, patch_size=_vlm.vision_patch,
    mean_std=_hf.mean_std(_hf.OPENAI_MEAN_STD), streams=("decoder", "cross"),
    source="encoder", target="decoder", forward=_vlm.forward_from(_inputs),
    generate=_vlm.generate_from(_inputs),
    start_ids=_start_ids, end_ids=_vlm.end_ids, grid=_grid, layers=by_decoder_layer)


def _captioning(model) -> Captioning:
    """The hooks, once the language model is known to have a cross-attention layer."""
    text = model.config.text_config
    if not set(text.cross_attention_layers) & set(range(int(text.num_hidden_layers))):
        raise TypeError(
            f"{type(model).__name__} (family 'hf_mllama'): its words cannot be grounded in"
            f" the image: text_config.cross_attention_layers={text.cross_attention_layers}"
            f" names none of its {text.num_hidden_layers} layers, so no word reads the image")
    return CAPTIONING


FAMILY = Family("hf_mllama", model_types=("mllama",), adapter=ADAPTER, loader=LOADER,
                captioning=_captioning)

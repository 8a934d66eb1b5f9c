"""The transformers image captioner family: ``VisionEncoderDecoderModel`` (a ViT, DeiT,
BEiT or CLIP vision encoder; a GPT-2, BERT, RoBERTa or TrOCR decoder with
cross-attention).

Capture sites are derived from the encoder's and the decoder's own declarations:
``encoder`` (image tokens), ``decoder`` (causal) and ``cross`` (decoder -> encoder).
Caption maps compose ``encoder`` -> ``cross`` -> ``decoder``; decoder row ``t`` predicts
caption token ``t + 1``. The patch grid is read from the encoder's config; the tokens
before the patches (class, distillation) are counted from the sequence length. Encoders
whose attention is windowed (Swin: Donut) and decoders that do not cross-attend (Llama)
are refused with the reason. A decoder that declares no attention (TrOCR) is read from
the attention the whole model returns.
"""

from __future__ import annotations

import torch

from . import _hf
from .derive import refusal
from .record import Captioning, Family, HFLoader, _pair
from .registry import adapter_for

__all__ = ["FAMILY", "CAPTIONING", "LOADER"]

#: A tokenizer for the text and an image processor for the pixels (no processor class
#: joins them); eager attention, so that attention weights can be read.
LOADER = HFLoader("VisionEncoderDecoderModel", "tokenizer_and_image_processor",
                  "hf_captioner", attn_implementation="eager")


def _encoder_config(model):
    return model.config.encoder


def _image_size(model):
    return _pair(_encoder_config(model).image_size)


def _patch_size(model):
    return _pair(_encoder_config(model).patch_size)


def _mean_std(model, processor):
    if processor is not None:
        return processor.image_mean, processor.image_std
    if _encoder_config(model).model_type == "clip_vision_model":
        return _hf.OPENAI_MEAN_STD
    return _hf.SIGLIP_MEAN_STD                           # ViT / DeiT / BEiT: 0.5, 0.5


def _forward(model, pixels, ids):
    return model(pixel_values=pixels, decoder_input_ids=ids).logits


def _positions(model) -> int | None:
    """How many positions the decoder has (None: no limit stated)."""
    decoder = model.config.decoder
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(decoder, name, None)
        if isinstance(value, int):
            return value
    return None


@torch.no_grad()
def _generate(model, pixels, start, max_new_tokens):
    """Greedy decoding of at most ``max_new_tokens`` tokens after ``start``, within the
    decoder's positions."""
    length = len(start) + int(max_new_tokens)
    positions = _positions(model)
    if positions is not None:
        length = min(length, positions)
    first = int(start[0])
    start = torch.as_tensor([list(start)], dtype=torch.long, device=pixels.device)
    # generate checks for a start token even when decoder_input_ids are given.
    return model.generate(pixel_values=pixels, decoder_input_ids=start, max_length=length,
                          decoder_start_token_id=first, do_sample=False, num_beams=1)


def _first(*values):
    return next((int(v) for v in values if isinstance(v, int)), None)


def _start_ids(model, tokenizer):
    decoder = model.config.decoder
    # transformers 5 configs raise AttributeError for ids they were never given.
    start = _first(getattr(model.config, "decoder_start_token_id", None),
                   getattr(model.generation_config, "decoder_start_token_id", None),
                   getattr(decoder, "bos_token_id", None),
                   getattr(tokenizer, "bos_token_id", None))
    if start is None:
        raise ValueError("the captioner names no decoder start token (config."
                         "decoder_start_token_id, the decoder's bos_token_id or the"
                         " tokenizer's): set model.config.decoder_start_token_id")
    return [start]


def _end_ids(model, tokenizer):
    ends = {getattr(model.generation_config, "eos_token_id", None),
            getattr(model.config.decoder, "eos_token_id", None),
            getattr(tokenizer, "eos_token_id", None)}
    out = set()
    for end in ends:
        out.update(end if isinstance(end, (list, tuple)) else [end])
    return {int(e) for e in out if e is not None}


def _grid(model, n_tokens):
    (h, w), (ph, pw) = _image_size(model), _patch_size(model)
    rows, cols = h // ph, w // pw
    prefix = n_tokens - rows * cols
    if prefix < 0:
        raise ValueError(f"the encoder returns {n_tokens} tokens, fewer than its"
                         f" {rows} x {cols} patch grid: its tokens cannot be mapped back"
                         " to pixels")
    return prefix, (rows, cols)


CAPTIONING = Captioning(
    image_size=_image_size, patch_size=_patch_size, mean_std=_mean_std,
    streams=("encoder", "decoder", "cross"), source="encoder", target="decoder",
    forward=_forward, generate=_generate, start_ids=_start_ids, end_ids=_end_ids,
    grid=_grid)

def _captioning(model) -> Captioning:
    """The hooks, once the encoder is known to attend globally and the decoder to
    cross-attend into it."""
    name = f"{type(model).__name__} (family 'hf_vision_encoder_decoder')"
    reason = refusal(model.encoder)
    if reason is not None:
        raise TypeError(f"{name}: its words cannot be grounded in the image: the encoder:"
                        f" {reason}")
    if "cross" not in adapter_for(model).streams:
        raise TypeError(
            f"{name}: its words cannot be grounded in the image: its decoder"
            f" ({type(model.decoder).__name__}) has no cross-attention into the image"
            " tokens; build it with a decoder that cross-attends (GPT-2, BERT, RoBERTa,"
            " TrOCR, BART or another with add_cross_attention=True)")
    return CAPTIONING


FAMILY = Family("hf_vision_encoder_decoder", model_types=("vision-encoder-decoder",),
                loader=LOADER, captioning=_captioning)

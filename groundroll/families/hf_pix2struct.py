"""The transformers Pix2Struct family (``Pix2StructForConditionalGeneration``: the
TextCaps captioners, and other checkpoints that write text from the image alone): an
image encoder over variable-resolution patches, each flattened with
its 1-based row and column, standardised per image, and a T5-style text decoder that
cross-attends to the patches.

Capture reads the attention the model returns: ``encoder`` (the patches),
``decoder`` (causal) and ``cross`` (decoder -> patches). Caption maps compose
``encoder`` -> ``cross`` -> ``decoder``, as for ``VisionEncoderDecoderModel``; decoder row
``t`` predicts caption token ``t + 1``.

The model input is a square of :data:`MAX_PATCHES` patches at most (fewer when the
model's row and column tables are shorter), into which the image is letterboxed; the
processor would resize it to its own budget at the image's aspect ratio instead. Visual
question answering checkpoints (``is_vqa``), which read the question rendered as a
header above the image, are refused. """

from __future__ import annotations

import math

import torch

from . import _vlm
from .record import Captioning, Family, HFLoader

__all__ = ["FAMILY", "CAPTIONING", "LOADER", "MAX_PATCHES", "flattened_patches"]

LOADER = HFLoader("Pix2StructForConditionalGeneration", "processor", "hf_captioner",
                  attn_implementation="eager")

#: Patches of the model input at most: 24 x 24 (384 px a side), as many image tokens
#: as LLaVA reads. The processor's default budget, 2048, would make every word's
#: relevance a [2048 x 2048] matrix per head and layer (gigabytes a caption); the model
#: is trained on every resolution up to it.
MAX_PATCHES = 576


def _patch_size(model) -> tuple[int, int]:
    """Pix2Struct's patches are 16 x 16 (``patch_embed_hidden_size`` = 16 * 16 * 3)."""
    side = math.isqrt(int(model.config.vision_config.patch_embed_hidden_size) // 3)
    return side, side


def _side(model) -> int:
    """Patches a side of the square input: the budget's, within the row and column
    tables (ids 1 .. ``seq_len - 1``)."""
    return min(math.isqrt(MAX_PATCHES), int(model.config.vision_config.seq_len) - 1)


def _image_size(model) -> tuple[int, int]:
    ph, pw = _patch_size(model)
    return _side(model) * ph, _side(model) * pw


def flattened_patches(model, pixels: torch.Tensor) -> torch.Tensor:
    """The encoder's input, as Pix2Struct's image processor makes it at the pixels'
    size: the image standardised by its own mean and standard deviation (at least
    1 / sqrt(its values)), cut into patches row by row, each flattened (rows of the
    patch, then columns, then channels) after its 1-based row and column.

    Parameters
    ----------
    model : Pix2StructForConditionalGeneration
        Gives the patch size.
    pixels : torch.Tensor, shape [batch, 3, h, w]
        Pixels in [0, 1], ``h`` and ``w`` multiples of the patch size.

    Returns
    -------
    torch.Tensor, float32, shape [batch, rows * cols, 2 + ph * pw * 3]
    """
    b, c, h, w = pixels.shape
    ph, pw = _patch_size(model)
    x = pixels.float()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True).clamp(min=1.0 / math.sqrt(c * h * w))
    x = (x - mean) / std
    rows, cols = h // ph, w // pw
    cut = torch.nn.functional.unfold(x, (ph, pw), stride=(ph, pw))       # [b, c*ph*pw, N]
    cut = cut.reshape(b, c, ph, pw, -1).permute(0, 4, 2, 3, 1).reshape(b, rows * cols, -1)
    row_ids = torch.arange(rows, device=x.device).repeat_interleave(cols) + 1
    col_ids = torch.arange(cols, device=x.device).repeat(rows) + 1
    ids = torch.stack([row_ids, col_ids], -1).float().expand(b, -1, -1)
    return torch.cat([ids, cut], -1)


def _check(model) -> None:
    if getattr(model.config.vision_config, "is_vqa", False) or getattr(
            model.config, "is_vqa", False):
        raise TypeError(f"{type(model).__name__} (family 'hf_pix2struct'): its words cannot"
                        " be grounded in the image: this checkpoint answers questions"
                        " rendered as a header above the image, which groundroll does not"
                        " draw; use a captioning checkpoint (Pix2Struct TextCaps)")


def _inputs(model, pixels, ids, prompt=None):
    patches = flattened_patches(model, pixels).to(model.dtype)
    return dict(flattened_patches=patches, decoder_input_ids=ids,
                attention_mask=torch.ones(patches.shape[:2], device=patches.device))


def _start_ids(model, tokenizer):
    start = getattr(model.config, "decoder_start_token_id", None)
    if not isinstance(start, int):
        start = model.config.text_config.pad_token_id
    return [int(start)]


def _grid(model, n_tokens):
    side = _side(model)
    if n_tokens != side * side:
        raise ValueError(f"the encoder returns {n_tokens} tokens, not the {side} x {side}"
                         " patches of the input: they cannot be mapped back to pixels")
    return 0, (side, side)


CAPTIONING = Captioning(
    image_size=_image_size, patch_size=_patch_size,
    mean_std=lambda model, processor: ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    streams=("encoder", "decoder", "cross"), source="encoder", target="decoder",
    forward=_vlm.forward_from(_inputs), generate=_vlm.generate_from(_inputs),
    start_ids=_start_ids, end_ids=_vlm.end_ids,
    grid=_grid)


def _captioning(model) -> Captioning:
    _check(model)
    return CAPTIONING


FAMILY = Family("hf_pix2struct", model_types=("pix2struct",), loader=LOADER,
                captioning=_captioning)

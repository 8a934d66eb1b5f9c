"""The transformers Mistral 3 family (``Mistral3ForConditionalGeneration``): a Pixtral
vision tower at any resolution, a patch merger that joins ``spatial_merge_size`` x
``spatial_merge_size`` neighbouring patches into one token (row by row), and a Mistral
language model reading them at the image placeholder tokens, laid out as the processor
does: each row of image tokens followed by ``[IMG_BREAK]``, the last by ``[IMG_END]``.

The input size is ``vision_config.image_size``, at most :data:`TOKENS_PER_SIDE` merged
tokens a side (the tower takes any size; ``image_sizes`` tells it the one used). Capture
sites are derived from the declarations: the tower's and the language model's
self-attention; caption maps read the language model's rows that predict a word at the
image-token columns (the break tokens are not image tokens).
"""

from __future__ import annotations

import torch

from . import _vlm
from .record import Family, HFLoader, _pair

__all__ = ["FAMILY", "CAPTIONING", "LOADER", "PROMPT", "TOKENS_PER_SIDE"]

LOADER = HFLoader("AutoModelForImageTextToText", "processor", "hf_vlm",
                  attn_implementation="eager")

#: Merged image tokens a side at most (1024 tokens for a 1540-pixel tower would make
#: every caption slow; the tower is trained on any size).
TOKENS_PER_SIDE = 24
#: The instruction around the image.
PROMPT = ("[INST]", "Describe the image.[/INST]")


def _merge(model) -> int:
    """Patches merged a side into one token (1 for LLaVA over a Pixtral tower, which
    has no merger)."""
    return int(getattr(model.config, "spatial_merge_size", 1))


def _image_size(model) -> tuple[int, int]:
    (h, w), (ph, pw), merge = _vlm.vision_size(model), _vlm.vision_patch(model), _merge(model)
    side = (min(h, TOKENS_PER_SIDE * merge * ph) // (merge * ph) * merge * ph,
            min(w, TOKENS_PER_SIDE * merge * pw) // (merge * pw) * merge * pw)
    return _pair(side)


def _grid_size(model) -> tuple[int, int]:
    (h, w), (ph, pw), merge = _image_size(model), _vlm.vision_patch(model), _merge(model)
    return h // ph // merge, w // pw // merge


def _start_ids(model, tokenizer):
    rows, cols = _grid_size(model)
    brk, end = (_vlm.special_ids(tokenizer, "[IMG_BREAK]"),
                _vlm.special_ids(tokenizer, "[IMG_END]"))
    image: list[int] = []
    for row in range(rows):
        image += [_vlm.image_token(model)] * cols + (end if row == rows - 1 else brk)
    before, after = PROMPT
    return (_vlm.bos_ids(model, tokenizer) + _vlm.text_ids(tokenizer, before) + image
            + _vlm.text_ids(tokenizer, after))


def _inputs(model, pixels, ids, prompt=None):
    sizes = torch.tensor([list(pixels.shape[-2:])] * pixels.shape[0], device=pixels.device)
    return dict(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                image_sizes=sizes)


CAPTIONING = _vlm.captioning(
    stream="encoder", start_ids=_start_ids, inputs=_inputs, image_size=_image_size,
    grid=_vlm.one_image_grid(_grid_size, "merged grid of the vision tower"))

FAMILY = Family("hf_mistral3", model_types=("mistral3",), loader=LOADER,
                captioning=CAPTIONING)

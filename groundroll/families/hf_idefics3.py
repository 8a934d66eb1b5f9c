"""The transformers Idefics3 / SmolVLM family (``Idefics3ForConditionalGeneration``,
``SmolVLMForConditionalGeneration``): a SigLIP-style vision tower, a pixel shuffle that
merges ``scale_factor`` x ``scale_factor`` neighbouring patches into one token (row by
row), and a Llama-style language model reading them at the image placeholder tokens.

The image goes in whole, as one global image at the tower's input size (the
processor's tiling into sub-images is not used, so the tokens keep one grid). Capture
sites are derived from the declarations: ``vision`` and ``text`` (the language model's
self-attention); caption maps read the ``text`` rows that predict a word at the
image-token columns.
"""

from __future__ import annotations

import torch

from . import _hf, _vlm
from .record import Family, HFLoader

__all__ = ["FAMILY", "CAPTIONING", "LOADER", "PROMPT"]

LOADER = HFLoader("AutoModelForImageTextToText", "processor", "hf_vlm",
                  attn_implementation="eager")

#: The chat turns around the image.
PROMPT = ("<|im_start|>User:", "Describe the image.<end_of_utterance>\nAssistant:")


_grid_size = _vlm.shuffled_grid_size(lambda model: model.config.scale_factor)


def _start_ids(model, tokenizer):
    rows, cols = _grid_size(model)
    around = _vlm.special_ids(tokenizer, "<fake_token_around_image>")
    before, after = PROMPT
    return (_vlm.text_ids(tokenizer, before) + around
            + _vlm.special_ids(tokenizer, "<global-img>")
            + [_vlm.image_token(model)] * (rows * cols) + around
            + _vlm.text_ids(tokenizer, after))


def _inputs(model, pixels, ids, prompt=None):
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                pixel_values=pixels[:, None])            # one image per sequence


_grid = _vlm.one_image_grid(_grid_size, "grid of one image")


CAPTIONING = _vlm.captioning(stream="text", start_ids=_start_ids, grid=_grid,
                             inputs=_inputs, mean_std=_hf.mean_std(_hf.SIGLIP_MEAN_STD))

FAMILY = Family("hf_idefics3", model_types=("idefics3", "smolvlm"), loader=LOADER,
                captioning=CAPTIONING)

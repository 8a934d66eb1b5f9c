"""The transformers GIT family (``GitForCausalLM``): a CLIP vision tower whose tokens
(class token first) are projected and put before the text in one transformer; image
tokens attend to each other, text tokens to the image and causally to the text.

Capture sites are derived from the model's declarations: ``vision`` and ``encoder``
(the joint self-attention). The image tokens are the first columns of ``encoder``,
before the ids (so every text row comes after them); caption maps read the rows that
predict a word at those columns, the class token left out.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from . import _vlm
from .record import Family, HFLoader

__all__ = ["FAMILY", "CAPTIONING", "LOADER"]

LOADER = HFLoader("GitForCausalLM", "processor", "hf_vlm", attn_implementation="eager")


def _grid_size(model) -> tuple[int, int]:
    (h, w), (ph, pw) = _vlm.vision_size(model), _vlm.vision_patch(model)
    return h // ph, w // pw


def _columns(model, ids):
    """The image tokens: the class token and the patches, before the ids."""
    rows, cols = _grid_size(model)
    images = int(getattr(model.config, "num_image_with_embedding", None) or 1)
    return torch.arange(images * (rows * cols + 1), device=ids.device)


def _start_ids(model, tokenizer):
    # GIT's captions start with the tokenizer's class token ([CLS], its bos).
    for value in (getattr(tokenizer, "cls_token_id", None), model.config.bos_token_id,
                  getattr(tokenizer, "bos_token_id", None)):
        if isinstance(value, int):
            return [value]
    raise ValueError("GIT needs a start token: the tokenizer names no cls_token_id and"
                     " the config no bos_token_id")


def _grid(model, n_tokens):
    rows, cols = _grid_size(model)
    if n_tokens != rows * cols + 1:
        raise ValueError(f"GIT put {n_tokens} image tokens before the text, not the"
                         f" class token and {rows} x {cols} patches of one image: several"
                         " images (num_image_with_embedding) cannot be mapped to one")
    return 1, (rows, cols)


def _forward(model, pixels, ids, prompt=None):
    """The logits of the text rows (GIT returns the image rows' too, first)."""
    logits = model(**_vlm.plain_inputs(model, pixels, ids)).logits
    return logits[:, logits.shape[1] - ids.shape[1]:]


CAPTIONING = replace(
    _vlm.captioning(stream="encoder", start_ids=_start_ids, grid=_grid, columns=_columns),
    forward=_forward)

FAMILY = Family("hf_git", model_types=("git",), loader=LOADER, captioning=CAPTIONING)

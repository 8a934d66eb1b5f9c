"""The transformers PaliGemma family (``PaliGemmaForConditionalGeneration``): a SigLIP
vision tower, a linear projector and a Gemma language model whose prompt starts with
the image tokens; the image and the prompt form a prefix read bidirectionally, the
caption after it causally.

Capture sites are derived from the model's declarations: ``vision`` and ``encoder``
(the language model's self-attention). Caption maps read the ``encoder`` rows that
predict a word at the image-token columns.
"""

from __future__ import annotations

import torch

from . import _vlm
from .record import Family, HFLoader

__all__ = ["FAMILY", "CAPTIONING", "LOADER", "PROMPT"]

LOADER = HFLoader("PaliGemmaForConditionalGeneration", "processor", "hf_vlm",
                  attn_implementation="eager")

#: The task prefix after the image tokens (PaliGemma's captioning prompt).
PROMPT = "caption en\n"


def _grid_size(model) -> tuple[int, int]:
    (h, w), (ph, pw) = _vlm.vision_size(model), _vlm.vision_patch(model)
    return h // ph, w // pw


def _start_ids(model, tokenizer):
    rows, cols = _grid_size(model)
    return ([_vlm.image_token(model)] * (rows * cols) + _vlm.bos_ids(model, tokenizer)
            + _vlm.text_ids(tokenizer, PROMPT))


def _inputs(model, pixels, ids, prompt=None):
    inputs = _vlm.plain_inputs(model, pixels, ids)
    if prompt is not None:
        # 0: the prefix (image and prompt, bidirectional), 1: the caption (causal).
        kinds = torch.ones_like(ids)
        kinds[:, :prompt] = 0
        inputs["token_type_ids"] = kinds
    return inputs


_grid = _vlm.one_image_grid(_grid_size, "patch grid of the vision tower")


CAPTIONING = _vlm.captioning(stream="encoder", start_ids=_start_ids, grid=_grid,
                             inputs=_inputs)

FAMILY = Family("hf_paligemma", model_types=("paligemma",), loader=LOADER,
                captioning=CAPTIONING)

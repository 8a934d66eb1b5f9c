"""The transformers Qwen2-VL family (``Qwen2VLForConditionalGeneration``; Qwen2.5-VL,
Qwen3-VL, GLM-4.1V / GLM-4.5V, dense and mixture-of-experts, and the text-writing
thinkers of Qwen2.5-Omni and Qwen3-Omni lay their images out the same way): a ViT over
``patch_size`` patches at any resolution, whose neighbouring ``spatial_merge_size`` x
``spatial_merge_size`` patches are merged into one image token of the language model.

The grid varies with the image: the model is told it by ``image_grid_thw`` (frames,
patch rows, patch columns), built here from the input size, and the image tokens are
that grid merged, row by row. The input size is ``vision_config.image_size`` when the
config sets one, else :data:`TOKENS_PER_SIDE` merged tokens a side (448 pixels at
14-pixel patches). Capture sites are derived from the declarations: ``vision`` and
``encoder`` (the language model's self-attention); caption maps read the ``encoder``
rows that predict a word at the image-token columns.
"""

from __future__ import annotations

import torch

from . import _vlm
from .record import Family, HFLoader, _pair

__all__ = ["FAMILY", "CAPTIONING", "LOADER", "PROMPT", "TOKENS_PER_SIDE", "image_grid_thw",
           "flat_patches"]

LOADER = HFLoader("AutoModelForImageTextToText", "processor", "hf_vlm",
                  attn_implementation="eager")

#: Merged image tokens a side when the config names no input size.
TOKENS_PER_SIDE = 16
#: The chat turns around the image (``<|vision_start|>`` image ``<|vision_end|>``).
PROMPT = ("<|im_start|>user\n", "Describe this image.<|im_end|>\n<|im_start|>assistant\n")


def _vision(model):
    return model.config.vision_config


def _merge(model) -> int:
    return int(_vision(model).spatial_merge_size)


def _patch_size(model):
    return _pair(_vision(model).patch_size)


def _image_size(model):
    size = getattr(_vision(model), "image_size", None)
    if size is not None:
        return _pair(size)
    (ph, pw), merge = _patch_size(model), _merge(model)
    return (TOKENS_PER_SIDE * merge * ph, TOKENS_PER_SIDE * merge * pw)


def image_grid_thw(model, height: int, width: int) -> tuple[int, int, int]:
    """``(frames, patch rows, patch columns)`` of one image of ``height x width``."""
    (ph, pw), merge = _patch_size(model), _merge(model)
    rows, cols = height // ph, width // pw
    if rows % merge or cols % merge or not rows or not cols:
        raise ValueError(f"a {height} x {width} input is not a whole number of"
                         f" {merge * ph} x {merge * pw} merged patches: set"
                         " model.config.vision_config.image_size to a multiple")
    return 1, rows, cols


def flat_patches(model, pixels: torch.Tensor) -> torch.Tensor:
    """``[batch * rows * cols, C * temporal * p * p]``: the patches of ``[batch, C, H, W]``
    images in the order Qwen2-VL's image processor lays them out (merge windows
    together, each still image repeated over the temporal patch)."""
    b, c, h, w = pixels.shape
    _, rows, cols = image_grid_thw(model, h, w)
    (p, _), m = _patch_size(model), _merge(model)
    t = int(_vision(model).temporal_patch_size)
    x = pixels.reshape(b, c, rows // m, m, p, cols // m, m, p)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)            # [b, gh/m, gw/m, m, m, c, p, p]
    x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, t, -1, -1)
    return x.reshape(b * rows * cols, c * t * p * p)


def _inputs(model, pixels, ids, prompt=None):
    thw = image_grid_thw(model, *pixels.shape[-2:])
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                pixel_values=flat_patches(model, pixels),
                image_grid_thw=torch.tensor([thw] * pixels.shape[0], device=pixels.device),
                mm_token_type_ids=(ids == _vlm.image_token(model)).int())


def _marks(model, *keys) -> list[int]:
    """The config's vision start / end ids that the language model's vocabulary holds."""
    vocab = model.config.text_config.vocab_size
    out = [getattr(model.config, k, None) for k in keys]
    return [int(i) for i in out if isinstance(i, int) and 0 <= i < vocab]


def _start_ids(model, tokenizer):
    rows, cols = _grid(model, None)[1]
    before, after = PROMPT
    return (_vlm.text_ids(tokenizer, before)
            + _marks(model, "vision_start_token_id", "image_start_token_id")
            + [_vlm.image_token(model)] * (rows * cols)
            + _marks(model, "vision_end_token_id", "image_end_token_id")
            + _vlm.text_ids(tokenizer, after))


def _grid(model, n_tokens):
    """The merged grid of the image tokens, from the ``image_grid_thw`` the input size
    gives and the merge size."""
    _, rows, cols = image_grid_thw(model, *_image_size(model))
    rows, cols = rows // _merge(model), cols // _merge(model)
    if n_tokens is not None and n_tokens != rows * cols:
        raise ValueError(f"the prompt holds {n_tokens} image tokens, not the {rows} x"
                         f" {cols} merged patch grid of the input: they cannot be"
                         " mapped back to pixels")
    return 0, (rows, cols)


CAPTIONING = _vlm.captioning(
    stream="encoder", start_ids=_start_ids, grid=_grid, inputs=_inputs,
    image_size=_image_size, patch_size=_patch_size)

FAMILY = Family("hf_qwen2_vl", model_types=("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe",
                                            "glm4v", "glm4v_moe", "qwen2_5_omni_thinker",
                                            "qwen3_omni_moe_thinker"),
                loader=LOADER, captioning=CAPTIONING)

"""The transformers LLaVA family (``LlavaForConditionalGeneration``; VipLLaVA, which
feeds the projector several tower layers, and DeepSeek-VL): a CLIP or SigLIP vision
tower, a projector, and a causal language model that reads the projected patches at the
image placeholder tokens of its prompt.

Capture sites are derived from the model's declarations: ``vision`` (the tower) and
``encoder`` (the language model's self-attention over image and text tokens). Caption
maps read the ``encoder`` rows that predict a word at the image-token columns; a CLIP
tower's class token is one of those columns when ``vision_feature_select_strategy`` is
``"full"`` (the patch grid follows it). A tower without a class token (SigLIP) keeps
its grid with ``"full"``; with ``"default"`` its first patch is dropped and the rest
form no grid, which is refused. Over a Pixtral tower (Pixtral 12B) the prompt is laid
out as Mistral 3's, without the merger (``hf_mistral3``).
"""

from __future__ import annotations

from . import _hf, _vlm
from .hf_mistral3 import CAPTIONING as _PIXTRAL
from .record import Family, HFLoader

__all__ = ["FAMILY", "CAPTIONING", "LOADER", "PROMPT"]

#: The processor with the tokenizer and the image processor; eager attention.
LOADER = HFLoader("AutoModelForImageTextToText", "processor", "hf_vlm",
                  attn_implementation="eager")

#: The prompt around the image tokens: LLaVA-1.5's conversation format.
PROMPT = ("USER: ", "\nDescribe the image. ASSISTANT:")


def _n_image_tokens(model) -> int:
    (h, w), (ph, pw) = _vlm.vision_size(model), _vlm.vision_patch(model)
    # "default" drops the tower's first token (a class token, or the first patch of a
    # tower without one); "full" keeps them all; a model without the setting
    # (DeepSeek-VL) reads the patches.
    strategy = getattr(model.config, "vision_feature_select_strategy", None)
    if strategy is None:
        return (h // ph) * (w // pw)
    return (h // ph) * (w // pw) + _vlm.class_tokens(model) - int(strategy == "default")


def _start_ids(model, tokenizer):
    before, after = PROMPT
    return (_vlm.bos_ids(model, tokenizer) + _vlm.text_ids(tokenizer, before)
            + [_vlm.image_token(model)] * _n_image_tokens(model)
            + _vlm.text_ids(tokenizer, after))


def _grid(model, n_tokens):
    (h, w), (ph, pw) = _vlm.vision_size(model), _vlm.vision_patch(model)
    rows, cols = h // ph, w // pw
    prefix = n_tokens - rows * cols
    if prefix not in (0, 1):
        raise ValueError(f"the prompt holds {n_tokens} image tokens, not the {rows} x"
                         f" {cols} patch grid (and class token) of the vision tower:"
                         " they cannot be mapped back to pixels")
    return prefix, (rows, cols)


CAPTIONING = _vlm.captioning(stream="encoder", start_ids=_start_ids, grid=_grid)


def _captioning(model):
    """The hooks: over a Pixtral tower (Pixtral 12B), Mistral 3's layout without its
    merger (each row of image tokens ended by ``[IMG_BREAK]``, the last by
    ``[IMG_END]``, the size passed as ``image_sizes``); else one grid of patch tokens."""
    if _hf.vision_config(model).model_type == "pixtral":
        if getattr(model.config, "vision_feature_select_strategy", "full") != "full":
            raise TypeError(
                f"{type(model).__name__} (family 'hf_llava'): its words cannot be grounded"
                " in the image: over a Pixtral tower (no class token) the"
                " vision_feature_select_strategy 'default' drops the first patch, so the"
                " rest form no grid; Pixtral 12B reads them all ('full')")
        return _PIXTRAL
    return CAPTIONING


FAMILY = Family("hf_llava", model_types=("llava", "vipllava", "deepseek_vl"),
                loader=LOADER, captioning=_captioning)

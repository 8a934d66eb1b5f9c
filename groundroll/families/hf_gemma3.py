"""The transformers Gemma 3 family (``Gemma3ForConditionalGeneration``): a SigLIP vision
tower whose patch grid is average-pooled to ``mm_tokens_per_image`` tokens (a square
grid, row by row: each token covers a square block of patches), projected into a
Gemma 3 language model that reads them between its begin- and end-of-image tokens,
bidirectionally among themselves and causally after.

Capture sites are derived from the model's declarations: ``vision`` and ``encoder``
(the language model's self-attention). Caption maps read the ``encoder`` rows that
predict a word at the image-token columns, on the pooled grid.
"""

from __future__ import annotations


from . import _hf, _vlm
from .record import Family, HFLoader

__all__ = ["FAMILY", "CAPTIONING", "LOADER", "PROMPT"]

LOADER = HFLoader("AutoModelForImageTextToText", "processor", "hf_vlm",
                  attn_implementation="eager")

#: The chat turns around the image (Gemma 3's template; the processor puts a blank
#: line on each side of the image).
PROMPT = ("<start_of_turn>user\n\n\n", "\n\nDescribe the image.<end_of_turn>\n"
          "<start_of_turn>model\n")


def _grid_size(model) -> tuple[int, int]:
    tokens = int(model.config.mm_tokens_per_image)
    side = int(round(tokens ** 0.5))
    if side * side != tokens:
        raise ValueError(f"mm_tokens_per_image={tokens} is not a square grid: the image"
                         " tokens cannot be mapped back to pixels")
    return side, side


def _marker(model, *names) -> list[int]:
    """The begin- or end-of-image token, when the language model's vocabulary has it."""
    vocab = model.config.get_text_config().vocab_size
    for name in names:
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value < vocab:
            return [value]
    return []


def _start_ids(model, tokenizer):
    rows, cols = _grid_size(model)
    before, after = PROMPT
    return (_vlm.bos_ids(model, tokenizer) + _vlm.text_ids(tokenizer, before)
            + _marker(model, "boi_token_id", "boi_token_index")
            + [_vlm.image_token(model)] * (rows * cols)
            + _marker(model, "eoi_token_id", "eoi_token_index")
            + _vlm.text_ids(tokenizer, after))


def _inputs(model, pixels, ids, prompt=None):
    inputs = _vlm.plain_inputs(model, pixels, ids)
    # 1 at the image tokens, as the processor marks them: they attend to each other.
    inputs["token_type_ids"] = (ids == _vlm.image_token(model)).long()
    return inputs


_grid = _vlm.one_image_grid(_grid_size, "pooled grid of the vision tower")


CAPTIONING = _vlm.captioning(stream="encoder", start_ids=_start_ids, grid=_grid,
                             inputs=_inputs, mean_std=_hf.mean_std(_hf.SIGLIP_MEAN_STD))


def _captioning(model):
    """The hooks, for a model that writes text (not ShieldGemma 2's classifier head)."""
    if type(model).__name__.endswith("ForImageClassification"):
        raise TypeError(
            f"{type(model).__name__} (family 'hf_gemma3'): its words cannot be grounded in"
            " the image: this head gives two class scores, not text; load the checkpoint"
            " with transformers.AutoModelForImageTextToText to ground what it writes")
    return CAPTIONING


FAMILY = Family("hf_gemma3", model_types=("gemma3", "shieldgemma2"), loader=LOADER,
                captioning=_captioning)

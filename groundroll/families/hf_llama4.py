"""The transformers Llama 4 family (``Llama4ForConditionalGeneration``): a ViT tower
(class token appended last, dropped), a pixel shuffle that merges
``1 / pixel_shuffle_ratio`` x ``1 / pixel_shuffle_ratio`` neighbouring patches into one
token (row by row), and a mixture-of-experts language model reading them at the
``<|patch|>`` placeholders, after ``<|image_start|><|image|>`` and before
``<|image_end|>``.

The input is one tile at the tower's size, which the processor sends without a global
view; a larger image would be cut into tiles plus a downsized whole. Capture sites are
derived from the model's declarations; caption maps read the language model's rows
that predict a word at the image-token columns, on the merged grid. (Its chunked
attention layers see the whole prompt: a caption is far shorter than a chunk.)
"""

from __future__ import annotations

from . import _hf, _vlm
from .record import Family, HFLoader

__all__ = ["FAMILY", "CAPTIONING", "LOADER", "PROMPT", "MARKERS"]

LOADER = HFLoader("AutoModelForImageTextToText", "processor", "hf_vlm",
                  attn_implementation="eager")

#: The chat turns around the image, and the tokens around its placeholders.
PROMPT = ("<|header_start|>user<|header_end|>\n\n",
          "Describe the image.<|eot|><|header_start|>assistant<|header_end|>\n\n")
MARKERS = (("<|image_start|>", "<|image|>"), "<|image_end|>")


def _factor(model) -> int:
    return int(round(1 / float(model.config.vision_config.pixel_shuffle_ratio)))


CAPTIONING = _vlm.shuffled_captioning(_factor, PROMPT, MARKERS,
                                      mean_std=_hf.mean_std(_hf.SIGLIP_MEAN_STD))

FAMILY = Family("hf_llama4", model_types=("llama4",), loader=LOADER, captioning=CAPTIONING)

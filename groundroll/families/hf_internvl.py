"""The transformers InternVL family (``InternVLForConditionalGeneration``): an InternViT
vision tower (class token dropped), a pixel shuffle that merges ``1 / downsample_ratio``
squared neighbouring patches into one token (row by row), and a Qwen 2 language model
reading them at the image placeholder tokens between ``<img>`` and ``</img>``.

Capture sites are derived from the model's declarations: the tower's and the language
model's self-attention. Caption maps read the language model's rows that predict a word
at the image-token columns, on the merged grid (the image goes in whole, at the tower's
input size, not tiled).
"""

from __future__ import annotations

from . import _hf, _vlm
from .record import Family, HFLoader

__all__ = ["FAMILY", "CAPTIONING", "LOADER", "PROMPT"]

LOADER = HFLoader("AutoModelForImageTextToText", "processor", "hf_vlm",
                  attn_implementation="eager")

#: The chat turns around the image.
PROMPT = ("<|im_start|>user\n", "\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n")

CAPTIONING = _vlm.shuffled_captioning(lambda model: round(1 / model.config.downsample_ratio),
                                      PROMPT, ("<img>", "</img>"),
                                      mean_std=_hf.mean_std(_hf.IMAGENET_MEAN_STD))

FAMILY = Family("hf_internvl", model_types=("internvl",), loader=LOADER, captioning=CAPTIONING)

"""The transformers Aya Vision family (``AyaVisionForConditionalGeneration``): a SigLIP
vision tower, a pixel shuffle that merges ``downsample_factor`` x ``downsample_factor``
neighbouring patches into one token (row by row), and a Cohere 2 language model reading
them at the image placeholder tokens.

Capture sites are derived from the model's declarations: the tower's and the language
model's self-attention. Caption maps read the language model's rows that predict a word
at the image-token columns, on the merged grid (the image goes in whole, at the tower's
input size, not tiled).
"""

from __future__ import annotations

from . import _hf, _vlm
from .record import Family, HFLoader

__all__ = ["FAMILY", "CAPTIONING", "LOADER", "PROMPT", "MARKERS"]

LOADER = HFLoader("AutoModelForImageTextToText", "processor", "hf_vlm",
                  attn_implementation="eager")

#: The chat turns around the image, and the tokens around its placeholders.
PROMPT = ("<|START_OF_TURN_TOKEN|><|USER_TOKEN|>",
          "Describe the image.<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>")
MARKERS = ("<|START_OF_IMG|>", "<|END_OF_IMG|>")

CAPTIONING = _vlm.shuffled_captioning(lambda model: model.config.downsample_factor, PROMPT,
                                      MARKERS, mean_std=_hf.mean_std(_hf.SIGLIP_MEAN_STD))

FAMILY = Family("hf_aya_vision", model_types=("aya_vision",), loader=LOADER,
                captioning=CAPTIONING)

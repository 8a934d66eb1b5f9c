"""The transformers LFM2-VL / LFM3-VL families (``Lfm2VlForConditionalGeneration``,
``Lfm3VlForConditionalGeneration``): a vision tower and projector in front of a hybrid
language model whose layers are short gated convolutions (``"conv"``) and softmax
attention.

Capture sites are derived from the model's declarations (the attention layers). Word
grounding in captions is refused (:data:`REASON`).
"""

from __future__ import annotations

from .derived import derived_grounding
from .record import Family

__all__ = ["FAMILY", "REASON"]

#: Why ground_caption refuses these captioners.
REASON = (
    "its language model (LFM2 / LFM3) moves information between tokens in short"
    " convolution layers as well as in attention, and a convolution forms no attention"
    " weights, so the caption rows cannot be followed back to the image tokens through"
    " every layer")

FAMILY = Family("hf_lfm2_vl", model_types=("lfm2_vl", "lfm3_vl"),
                grounding=derived_grounding, captioning=REASON)

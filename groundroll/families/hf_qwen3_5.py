"""The transformers Qwen3.5 families (``Qwen3_5ForConditionalGeneration``,
``Qwen3_5MoeForConditionalGeneration``): Qwen3-VL's vision tower and merger in front of
a hybrid language model, most of whose layers are linear attention (Gated DeltaNet)
and the rest full softmax attention.

Capture sites are derived from the model's declarations (the full-attention layers and
the vision tower). Word grounding in captions is refused (:data:`REASON`); Qwen2-VL,
Qwen2.5-VL and Qwen3-VL, whose every language layer is softmax attention, are grounded
(``hf_qwen2_vl``).
"""

from __future__ import annotations

from .derived import derived_grounding
from .record import Family

__all__ = ["FAMILY", "REASON"]

#: Why ground_caption refuses these captioners.
REASON = (
    "its language model moves information between tokens mostly in linear-attention"
    " (Gated DeltaNet) layers, which form no attention weights, so only its few"
    " full-attention layers could be read and the caption rows cannot be followed back"
    " to the image tokens through every layer (Qwen2-VL, Qwen2.5-VL and Qwen3-VL, with"
    " softmax attention in every layer, are grounded)")

FAMILY = Family("hf_qwen3_5", model_types=("qwen3_5", "qwen3_5_moe"),
                grounding=derived_grounding, captioning=REASON)

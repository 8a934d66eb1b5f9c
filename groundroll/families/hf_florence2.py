"""The transformers Florence-2 family (``Florence2ForConditionalGeneration``): a DaViT
vision tower and a BART-style encoder-decoder over the image tokens and the task
prompt.

Capture sites are derived from the model's declarations. Word grounding in captions is
refused (:data:`REASON`).
"""

from __future__ import annotations

from .derived import derived_grounding
from .record import Family

__all__ = ["FAMILY", "REASON"]

#: Why ground_caption refuses this captioner.
REASON = (
    "its DaViT vision tower attends within local windows of patches (and across"
    " channels), so no layer relates every patch to every other and the image tokens"
    " the text reads cannot be rolled back to pixels through the tower")

FAMILY = Family("hf_florence2", model_types=("florence2",), grounding=derived_grounding,
                captioning=REASON)

"""The transformers Aria family (``AriaForConditionalGeneration``): an Idefics3-style
vision tower, a projector whose learned queries read the patches through
cross-attention (a resampler: 128 or 256 queries, whatever the image), and a
mixture-of-experts language model that reads the queries at its image positions.

Capture sites are derived from the model's declarations. Word grounding in captions is
refused (:data:`REASON`).
"""

from __future__ import annotations

from .derived import derived_grounding
from .record import Family

__all__ = ["FAMILY", "REASON"]

#: Why ground_caption refuses this captioner.
REASON = (
    "its language model reads the learned queries of its projector, not the image"
    " patches, and the projector's cross-attention from those queries to the patches is"
    " not among the attention the model records, so the caption rows cannot be followed"
    " back to pixels")

FAMILY = Family("hf_aria", model_types=("aria",), grounding=derived_grounding,
                captioning=REASON)

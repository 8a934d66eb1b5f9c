"""The transformers Idefics / Idefics2 families (``IdeficsForVisionText2Text``,
``Idefics2ForConditionalGeneration``): a vision tower, a perceiver resampler whose
latent queries read the patches, and a language model that reads the latents.

Capture sites are derived from the model's declarations. Word grounding in captions is
refused (:data:`REASON`); Idefics3 / SmolVLM, which dropped the resampler for a pixel
shuffle, are grounded (``hf_idefics3``).
"""

from __future__ import annotations

from .derived import derived_grounding
from .record import Family

__all__ = ["FAMILY", "REASON"]

#: Why ground_caption refuses these captioners.
REASON = (
    "its language model reads the latent queries of a perceiver resampler, not the image"
    " patches, and the resampler's attention from those queries to the patches is not"
    " among the attention the model records, so the caption rows cannot be followed back"
    " to pixels (Idefics3 / SmolVLM, without a resampler, are grounded)")

FAMILY = Family("hf_idefics2", model_types=("idefics", "idefics2"),
                grounding=derived_grounding, captioning=REASON)

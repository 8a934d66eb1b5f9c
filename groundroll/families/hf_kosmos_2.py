"""The transformers Kosmos-2 family (``Kosmos2ForConditionalGeneration``; Kosmos-2.5,
with a Pix2Struct-style tower, is built the same way): a vision tower, a resampler whose
latent queries read the patches through cross-attention (``image_to_text_projection``),
and a language model that reads the latent queries at its image positions.

Capture sites are derived from the model's declarations (``vision``, ``text``). Word
grounding in captions is refused (:data:`REASON`).
"""

from __future__ import annotations

from .derived import derived_grounding
from .record import Family

__all__ = ["FAMILY", "REASON"]

#: Why ground_caption refuses this captioner.
REASON = (
    "its language model reads the latent queries of a resampler, not the image patches,"
    " and the resampler's cross-attention from those queries to the patches is declared"
    " nowhere (it is not among the attention the model records), so the caption rows"
    " cannot be followed back to pixels")

FAMILY = Family("hf_kosmos_2", model_types=("kosmos-2", "kosmos-2.5"), grounding=derived_grounding,
                captioning=REASON)

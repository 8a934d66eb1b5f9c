"""The transformers BLIP-2 / InstructBLIP family (``Blip2ForConditionalGeneration``,
``InstructBlipForConditionalGeneration``): a ViT tower, a Q-Former whose learned query
tokens read the patches through cross-attention, and a language model (OPT, Flan-T5,
Vicuna) that reads only the projected queries.

Capture sites are derived from the model's declarations. Word grounding in captions is
refused (:data:`REASON`): transformers declares the Q-Former's cross-attention and its
self-attention as one record, so the capture cannot tell the hop from queries to
patches apart from the queries' own mixing.
"""

from __future__ import annotations

from .derived import derived_grounding
from .record import Family

__all__ = ["FAMILY", "REASON"]

#: Why ground_caption refuses these captioners.
REASON = (
    "the language model reads only the Q-Former's learned query tokens, never the image"
    " patches, and the hop from queries to patches is the Q-Former's cross-attention,"
    " which the model declares together with the Q-Former's self-attention (one"
    " 'attentions' record over query x query and query x patch matrices), so a chain"
    " from caption rows through the queries to pixels cannot be composed from the"
    " capture")

FAMILY = Family("hf_blip_2", model_types=("blip-2", "instructblip", "instructblipvideo"),
                grounding=derived_grounding, captioning=REASON)

"""The transformers Cohere2-Vision family (``Cohere2VisionForConditionalGeneration``):
laid out as Aya Vision (:mod:`groundroll.families.hf_aya_vision`): a SigLIP tower, a pixel
shuffle merging ``downsample_factor`` x ``downsample_factor`` patches into one token (row
by row), and a Cohere 2 language model with the same chat and image tokens. The hooks
are Aya Vision's.
"""

from __future__ import annotations

from . import hf_aya_vision
from .record import Family

__all__ = ["FAMILY"]

FAMILY = Family("hf_cohere2_vision", model_types=("cohere2_vision",),
                loader=hf_aya_vision.LOADER, captioning=hf_aya_vision.CAPTIONING)

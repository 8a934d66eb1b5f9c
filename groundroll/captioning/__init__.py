"""Word grounding in captions: where in the image each word of a caption comes from.

>>> import groundroll as gr                                   # doctest: +SKIP
>>> result = gr.ground_caption("scene.png")                   # doctest: +SKIP
>>> result.caption, result.words, result.heatmaps.shape       # doctest: +SKIP

See :func:`ground_caption` and the families that caption images
(:mod:`groundroll.families`, ``Captioning`` hooks).
"""

from .api import (DEFAULT_CAPTIONER, DEFAULT_METHOD, FUNCTION_WORDS, MAX_NEW_TOKENS, METHODS,
                  CaptionModel, ground_caption, phrase_maps, refine_word_maps,
                  resolve_captioner, shift_averaged, word_masks)
from .result import CaptionGrounding

__all__ = ["ground_caption", "CaptionGrounding", "CaptionModel", "resolve_captioner",
           "word_masks", "refine_word_maps", "phrase_maps", "shift_averaged", "METHODS", "DEFAULT_CAPTIONER", "DEFAULT_METHOD", "FUNCTION_WORDS",
           "MAX_NEW_TOKENS"]

"""Text-prompted grounding: per-prompt maps on the patch grid and segmentation.

>>> import groundroll.grounding as gg
>>> seg = gg.segment("scene.png", ["a red circle", "a blue star"],
...                  model="bundled:shapes-clip")                # doctest: +SKIP
>>> seg.labels.shape, seg.masks.shape                           # doctest: +SKIP
((128, 160), (2, 128, 160))
"""

from . import builtin_sources  # noqa: F401  (registers the built-in map sources first)
from ._model import DEFAULT_MODEL, ModelHandle, resolve_model
from .calibrate import calibrate
from .dense import dense_features, dense_maps, dense_rewrite
from .segment import (REFINE, Segmentation, caption_heatmaps, channel_maps,
                      channel_probabilities, load_image, output_paths, segment)
from .options import SegmentOptions
from .profiles import Profile
from .registry import METHODS, SOURCES, Source, register_source, unregister_source
from .sources import (ATTENTION_METHODS, DENSE_METHODS, caption_word_maps,
                      cross_maps, image_text_scores, prompt_maps, relevance_maps,
                      rollout_maps)

__all__ = [
    "segment", "SegmentOptions", "Segmentation", "caption_heatmaps", "load_image", "output_paths",
    "channel_maps", "channel_probabilities", "REFINE",
    "METHODS", "ATTENTION_METHODS", "DENSE_METHODS", "ModelHandle", "resolve_model", "DEFAULT_MODEL",
    "prompt_maps", "relevance_maps", "rollout_maps", "cross_maps", "caption_word_maps",
    "image_text_scores", "dense_rewrite", "dense_features", "dense_maps",
    "calibrate", "Profile", "SOURCES", "Source", "register_source", "unregister_source",
]

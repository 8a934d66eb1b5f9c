"""groundroll: attention rollout, cross-attention composition and grounding for stock
open_clip and Hugging Face transformers.

>>> import groundroll as gr
>>> import torch
>>> attn = [torch.softmax(torch.randn(1, 4, 5, 5), -1) for _ in range(3)]
>>> gr.rollout(attn, rows=[0]).shape        # [batch, rows, key]
torch.Size([1, 1, 5])

The math core (:mod:`groundroll.rollout`) works on attention tensors from anywhere;
:func:`capture` reads them from a model, :func:`compose` chains encoder, cross-attention
and decoder, :func:`segment` and :func:`align` turn maps into masks and word alignments.
"""

import sys
import types
from importlib import import_module

__version__ = "0.1.0"

# Every public name is imported on first use, so that ``import groundroll`` and the
# ``groundroll`` command do not pay for torch and the model libraries until they need them.
_LAZY = {
    **dict.fromkeys(("Adapter", "Site", "UnsupportedModelError", "adapter_for", "capture",
                     "register_adapter", "supported_models"), "groundroll.adapters"),
    **dict.fromkeys(("Family", "family_for", "register_family"), "groundroll.families"),
    **dict.fromkeys(("Composition", "chain_for", "compose", "joint_graph"),
                    "groundroll.compose"),
    **dict.fromkeys(("RolloutAccumulator", "attention_flow", "fuse_heads",
                     "gradient_weighted", "prune", "relevance_co_update",
                     "relevance_normalize", "relevance_self_update",
                     "residual_correct", "rollout", "rollout_cross_update", "rownorm",
                     "self_relevance", "value_weighted"), "groundroll.rollout"),
    **dict.fromkeys(("AttentionLayer", "Chain", "Tokens", "Trace"), "groundroll.trace"),
    **dict.fromkeys(("ground_caption", "CaptionGrounding"), "groundroll.captioning"),
    "load": "groundroll.zoo",
    "Bundle": "groundroll.zoo.bundle",
    "segment": "groundroll.grounding",
    "SegmentOptions": "groundroll.grounding",
    "calibrate": "groundroll.grounding",
    "Segmentation": "groundroll.grounding",
    "Alignment": "groundroll.alignment",
    "AlignOptions": "groundroll.alignment",
    "layer_scan": "groundroll.alignment",
    "LayerScan": "groundroll.alignment",
    "extract_links": "groundroll.alignment",
    "label_map": "groundroll.masks",
    "softmax_maps": "groundroll.masks",
    "normalize_maps": "groundroll.masks",
    "resize_maps": "groundroll.masks",
    "letterbox_geometry": "groundroll.masks",
    "unletterbox": "groundroll.masks",
    "palette": "groundroll.masks",
    "miou": "groundroll.evaluate",
    "miou_dataset": "groundroll.evaluate",
    "aer": "groundroll.evaluate",
    "deletion_curve": "groundroll.evaluate",
    "insertion_curve": "groundroll.evaluate",
    "overlay": "groundroll.viz",
    "heatmap_overlay": "groundroll.viz",
    "plot_alignment": "groundroll.viz",
    "read_pharaoh": "groundroll.alignment",
    "write_pharaoh": "groundroll.alignment",
    "read_talp": "groundroll.alignment",
    "symmetrize": "groundroll.alignment",
    "itermax": "groundroll.alignment",
    "segment_dataset": "groundroll.distributed",
    "align_corpus": "groundroll.distributed",
    "align": "groundroll.alignment",
    "audit": "groundroll.auditing",
    "Audit": "groundroll.auditing",
}
_SUBMODULES = ("masks", "evaluate", "viz", "data", "zoo", "alignment", "grounding", "cli",
               "auditing", "report", "explore", "distributed", "adapters", "trace",
               "families", "captioning")
# Public functions that share their name with a subpackage: the function is what
# ``groundroll.<name>`` means, however and whenever the subpackage itself gets imported.
_FUNCTIONS_OVER_PACKAGES = ("rollout", "compose")

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return import_module(f"groundroll.{name}")
    raise AttributeError(f"module 'groundroll' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))


class _Package(types.ModuleType):
    """The import system binds each loaded subpackage as an attribute of its parent; for
    the names in ``_FUNCTIONS_OVER_PACKAGES`` the public function keeps the name."""

    def __setattr__(self, name, value):
        if name in _FUNCTIONS_OVER_PACKAGES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

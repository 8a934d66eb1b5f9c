"""The transformers CLIP family: ``CLIPModel`` and its towers.

With the default ``sdpa`` attention, transformers 5 returns no weights; the capture
switches the model to ``"eager"`` (``model.set_attn_implementation``) and restores each
config's previous implementation on exit. Eager attention modules return
``(output, ..., weights)``; the weights are the tensor multiplied with the values.
"""

from __future__ import annotations

from . import _hf
from ._hf_sites import EAGER, image_tokens, text_tokens
from .record import Family, Grounding, HFLoader
from .sites import Adapter, Site

__all__ = ["FAMILY", "ADAPTER", "VISION_SITE", "GROUNDING"]

VISION_SITE = Site(r"(^|\.)vision_model\.encoder\.layers\.\d+\.self_attn$", "vision",
                   value="v_proj", out="out_proj")

ADAPTER = Adapter(
    name="hf_clip",
    model_types=("clip", "clip_text_model", "clip_vision_model"),
    sites=(
        VISION_SITE,
        Site(r"(^|\.)text_model\.encoder\.layers\.\d+\.self_attn$", "text", causal=True,
             value="v_proj", out="out_proj"),
    ),
    tokens=(
        image_tokens(("CLIPVisionModel", "CLIPVisionTransformer")),
        text_tokens("text", classes=("CLIPTextModel", "CLIPTextTransformer"),
                    special=("bos@first", "eos@last", "eot@hf_clip"), causal=True),
    ),
    switch=EAGER,
    description="transformers CLIPModel (and its towers)",
)


def _legrad_lens(model):
    """LeGrad's lens: the vision encoder's layers, then ``post_layernorm`` and the
    visual projection."""
    vision = model.vision_model

    def head(x):
        return model.visual_projection(vision.post_layernorm(x))
    return list(vision.encoder.layers), head, True


GROUNDING = Grounding(
    image_size=_hf.image_size, patch_size=_hf.patch_size,
    mean_std=_hf.mean_std(_hf.OPENAI_MEAN_STD), context_length=_hf.context_length,
    image_embeddings=_hf.image_features, text_embeddings=_hf.text_features,
    legrad_lens=_legrad_lens, gradcam_layer=_hf.gradcam_layer, layer_maps=True)

FAMILY = Family("hf_clip", adapter=ADAPTER, grounding=GROUNDING,
                loader=HFLoader("CLIPModel", "processor", "hf_clip"), model_types=("clip",))

"""The transformers SigLIP family: ``SiglipModel`` and its towers, with the vision
tower's pooling head (one learned probe over the patches) as the ``pool`` stream."""

from __future__ import annotations

from . import _hf
from ._hf_sites import EAGER, image_tokens, text_tokens
from .hf_clip import VISION_SITE
from .record import Family, Grounding, HFLoader
from .sites import Adapter, Site, TokenSource

__all__ = ["FAMILY", "ADAPTER", "GROUNDING"]

ADAPTER = Adapter(
    name="hf_siglip",
    model_types=("siglip", "siglip_text_model", "siglip_vision_model"),
    sites=(
        VISION_SITE,
        Site(r"(^|\.)text_model\.encoder\.layers\.\d+\.self_attn$", "text",
             value="v_proj", out="out_proj"),
        # SiglipMultiheadAttentionPoolingHead: one learned probe over the patches.
        Site(r"(^|\.)vision_model\.head\.attention$", "pool", query="pool_queries",
             key="vision", reader="mha"),
    ),
    tokens=(
        image_tokens(("SiglipVisionModel", "SiglipVisionTransformer"), prefix=0),
        # SigLIP pools the text at the last position.
        text_tokens("text", classes=("SiglipTextModel", "SiglipTextTransformer"),
                    special=("eos@last", "eot@last")),
        TokenSource("pool_queries", classes=("SiglipMultiheadAttentionPoolingHead",),
                    reader="queries"),
    ),
    switch=EAGER,
    description="transformers SiglipModel (and its towers), with its pooling head",
)

GROUNDING = Grounding(
    image_size=_hf.image_size, patch_size=_hf.patch_size,
    mean_std=_hf.mean_std(_hf.SIGLIP_MEAN_STD),
    context_length=lambda m, t: int(m.config.text_config.max_position_embeddings),
    image_embeddings=_hf.image_features, text_embeddings=_hf.text_features,
    vision_target="pool_queries", vision_streams=("vision", "pool"), pad_to_max=True,
    gradcam_layer=_hf.gradcam_layer)

FAMILY = Family("hf_siglip", adapter=ADAPTER, grounding=GROUNDING,
                loader=HFLoader("SiglipModel", "processor", "hf_siglip"),
                model_types=("siglip",))

"""The transformers BLIP retrieval family (``BlipForImageTextRetrieval``): a ViT tower
and a text encoder whose layers cross-attend to the patches; prompts are scored by the
image-text matching head, and maps read the cross-attention (``method="cross"``)."""

from __future__ import annotations

from ..trace import Chain
from . import _hf
from ._hf_sites import EAGER, image_tokens, text_tokens
from .record import CrossRun, Family, Grounding, HFLoader
from .sites import Adapter, Site

__all__ = ["FAMILY", "ADAPTER", "GROUNDING", "CHAIN"]

ADAPTER = Adapter(
    name="hf_blip",
    model_types=("blip",),
    sites=(
        Site(r"(^|\.)vision_model\.encoder\.layers\.\d+\.self_attn$", "vision",
             value="qkv:2/3", out="projection"),
        Site(r"(^|\.)text_encoder\.encoder\.layer\.\d+\.attention\.self$", "text",
             value="value", out="../output.dense"),
        Site(r"(^|\.)text_encoder\.encoder\.layer\.\d+\.crossattention\.self$",
             "text_cross", query="text", key="vision", value="value",
             out="../output.dense"),
    ),
    tokens=(
        image_tokens(("BlipVisionModel",)),
        text_tokens("text", classes=("BlipTextModel",), special=("cls@first", "eos@last")),
    ),
    switch=EAGER,
    description="transformers BlipForImageTextRetrieval",
)

#: Image patches -> the text encoder's rows through its cross-attention.
CHAIN = Chain("vision", "text", source_self="vision", target_self="text",
              target_cross="text_cross")


def _cross_run(model, pixels, ids, mask):
    return model(input_ids=ids, attention_mask=mask, pixel_values=pixels, use_itm_head=True)


def _cross_score(out, rows):
    """The image-text matching logit of "match" (the same for every text row)."""
    itm = out.itm_score if hasattr(out, "itm_score") else out[0]
    return itm[:, 1].float()


def _score(model, pixels, enc):
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                pixel_values=pixels, use_itm_head=True)
    itm = out.itm_score if hasattr(out, "itm_score") else out[0]
    return itm.float().softmax(-1)[:, 1]


GROUNDING = Grounding(
    mean_std=_hf.mean_std(_hf.OPENAI_MEAN_STD), image_size=_hf.image_size,
    patch_size=_hf.patch_size, context_length=_hf.context_length,
    image_embeddings=lambda m, pixels: m.vision_model(pixel_values=pixels)[1],
    vision_forward=lambda m, pixels: m.vision_model(pixel_values=pixels),
    cross=CrossRun(("vision", "text", "text_cross"), _cross_run, "vision", "text", 0,
                   score=_cross_score),
    score=_score, relevance=False, gradcam_layer=_hf.gradcam_layer)

FAMILY = Family("hf_blip", adapter=ADAPTER, chains=(CHAIN,), grounding=GROUNDING,
                loader=HFLoader("BlipForImageTextRetrieval", "processor", "hf_blip"))

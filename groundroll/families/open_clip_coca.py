"""The open_clip CoCa family: a ViT tower, an attentional pooler, a contrastive text
tower and a multimodal decoder that cross-attends to the pooled image tokens.

Captured streams: ``vision``, ``text`` (causal), ``pool`` (pool queries -> vision),
``decoder`` (causal) and ``decoder_cross`` (decoder -> pooled image tokens). Caption
maps compose ``vision`` -> ``pool`` -> ``decoder_cross`` / ``decoder``; a decoder row
``t`` predicts caption token ``t + 1``.
"""

from __future__ import annotations

import torch

from ..trace import Chain
from . import open_clip
from .record import CrossRun, Family, Grounding
from .sites import Adapter, Site, TokenSource

__all__ = ["FAMILY", "ADAPTER", "CHAIN"]

ADAPTER = Adapter(
    name="open_clip_coca",
    classes=("open_clip.coca_model.CoCa",),
    sites=(
        open_clip.VISION_SITE,
        open_clip.TEXT_SITE,
        Site(r"(^|\.)visual\.attn_pool\.attn$", "pool", query="pool_queries", key="vision",
             reader="mha"),
        Site(r"(^|\.)text_decoder\.resblocks\.\d+\.attn$", "decoder", causal=True,
             reader="mha"),
        Site(r"(^|\.)text_decoder\.cross_attn\.\d+\.attn$", "decoder_cross",
             query="decoder", key="pool_out", reader="mha"),
    ),
    tokens=(
        open_clip.VISION_TOKENS,
        TokenSource("text", pattern=r"^text\.token_embedding$",
                    special=("bos@first", "eot@argmax", "cls@appended"), pad_id=0,
                    causal=True),
        TokenSource("pool_queries", pattern=r"^visual\.attn_pool$", reader="queries"),
        # Fills "decoder" (caption tokens) and "pool_out" (pooled image tokens).
        TokenSource("decoder", pattern=r"^text_decoder$", reader="coca_decoder", pad_id=0),
    ),
    description="open_clip CoCa (ViT, attentional pooler, multimodal decoder)",
)

#: Image patches -> pooled tokens -> the caption's decoder rows.
CHAIN = Chain("vision", "decoder", source_self="vision", hops=("pool",),
              target_prelude="text", target_self="decoder", target_cross="decoder_cross")


def _cross_run(model, pixels, ids, mask):
    return model(pixels, ids)


def _cross_score(out, rows):
    """``log p(labels[b, rows[b]])``: decoder row ``t`` predicts caption token ``t+1``
    under teacher forcing (open_clip returns those labels beside the logits)."""
    copies = torch.arange(rows.shape[0], device=out["logits"].device)
    logp = out["logits"][copies, rows].float().log_softmax(-1)          # [batch, V]
    return logp[copies, out["labels"][copies, rows]]


GROUNDING = Grounding(
    image_size=open_clip.image_size, patch_size=open_clip.patch_size,
    mean_std=open_clip.mean_std, context_length=open_clip.context_length,
    image_embeddings=lambda m, pixels: m.encode_image(pixels),
    text_embeddings=lambda m, enc: m.encode_text(enc["input_ids"]),
    tokenizer_style="open_clip", relevance=False, gradcam_layer=open_clip.gradcam_layer,
    cross=CrossRun(("vision", "pool", "text", "decoder", "decoder_cross"), _cross_run,
                   source="vision", target="decoder", shift=1, score=_cross_score,
                   row_scores=True))

FAMILY = Family("open_clip_coca", adapter=ADAPTER, chains=(CHAIN,), grounding=GROUNDING)

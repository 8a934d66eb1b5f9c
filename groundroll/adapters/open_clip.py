"""open_clip families: ``CLIP`` / ``CustomTextCLIP`` with a ViT tower, and ``CoCa``.

open_clip 3.3 calls ``nn.MultiheadAttention`` with ``need_weights=False``; the capture
asks each module for per-head weights through a forward pre-hook (``reader="mha"``).
Only the stock ``ResidualAttentionBlock`` (``nn.MultiheadAttention``) is supported, not
``block_type="custom"`` blocks nor timm or Hugging Face towers.
"""

from __future__ import annotations

from .base import Adapter, Site, TokenSource

__all__ = ["OPEN_CLIP", "OPEN_CLIP_COCA"]

_VISION = Site(r"(^|\.)visual\.transformer\.resblocks\.\d+\.attn$", "vision", reader="mha")
# CLIP keeps its text tower at the top level; CustomTextCLIP and CoCa under ``text``.
_TEXT = Site(r"^(text\.)?transformer\.resblocks\.\d+\.attn$", "text", causal=True,
             reader="mha")

_VISION_TOKENS = TokenSource("vision", pattern=r"^visual$", reader="image", prefix=1)

OPEN_CLIP = Adapter(
    name="open_clip",
    classes=("open_clip.model.CLIP", "open_clip.model.CustomTextCLIP"),
    sites=(_VISION, _TEXT),
    tokens=(
        _VISION_TOKENS,
        # The token embedding sees the ids in encode_text; pooling is at argmax(ids).
        TokenSource("text", pattern=r"^(text\.)?token_embedding$",
                    special=("bos@first", "eot@argmax"), pad_id=0, causal=True),
    ),
    description="open_clip CLIP with a ViT vision tower",
)

OPEN_CLIP_COCA = Adapter(
    name="open_clip_coca",
    classes=("open_clip.coca_model.CoCa",),
    sites=(
        _VISION,
        _TEXT,
        Site(r"(^|\.)visual\.attn_pool\.attn$", "pool", query="pool_queries", key="vision",
             reader="mha"),
        Site(r"(^|\.)text_decoder\.resblocks\.\d+\.attn$", "decoder", causal=True,
             reader="mha"),
        Site(r"(^|\.)text_decoder\.cross_attn\.\d+\.attn$", "decoder_cross",
             query="decoder", key="pool_out", reader="mha"),
    ),
    tokens=(
        _VISION_TOKENS,
        TokenSource("text", pattern=r"^text\.token_embedding$",
                    special=("bos@first", "eot@argmax", "cls@appended"), pad_id=0,
                    causal=True),
        TokenSource("pool_queries", pattern=r"^visual\.attn_pool$", reader="queries"),
        # Fills "decoder" (caption tokens) and "pool_out" (pooled image tokens).
        TokenSource("decoder", pattern=r"^text_decoder$", reader="coca_decoder", pad_id=0),
    ),
    description="open_clip CoCa (ViT, attentional pooler, multimodal decoder)",
)

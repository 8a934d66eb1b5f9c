"""open_clip families: ``CLIP`` / ``CustomTextCLIP`` and ``CoCa``.

open_clip 3.3 calls ``nn.MultiheadAttention`` with ``need_weights=False``; the capture
asks each native module for per-head weights through a forward pre-hook
(``reader="mha"``). The sites are read from each model instance:

- a native ViT tower (``VisionTransformer``) has ``visual.transformer.resblocks.*.attn``;
- a timm trunk (``TimmModel``: ``ViT-B-16-SigLIP``, ``EVA02-B-16``, the SO400M
  SigLIPs) has timm ``Attention`` / ``EvaAttention`` modules, captured with their
  ``fused_attn`` switched off inside the context (``reader="softmax"``), and its
  attention-pool head (``AttentionPoolLatent``) as the ``pool`` stream; the patch grid
  and the prefix tokens (class, registers) are read from the trunk's ``patch_embed`` and
  ``num_prefix_tokens``;
- the text tower's causality and pooling position come from the tower itself
  (``attn_mask``, ``pool_type``); a Hugging Face text tower (``HFTextEncoder``) is
  captured from its own declarations.

A ResNet vision tower (``RN50``) or a timm CNN trunk (ConvNeXt) has no attention to roll
out and is refused with :class:`~groundroll.adapters.base.UnsupportedModelError`.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from .base import Adapter, Site, TokenSource, UnsupportedModelError

__all__ = ["OPEN_CLIP", "OPEN_CLIP_COCA"]

_VISION = Site(r"(^|\.)visual\.transformer\.resblocks\.\d+\.attn$", "vision", reader="mha")
# CLIP keeps its text tower at the top level; CustomTextCLIP and CoCa under ``text``.
_TEXT = Site(r"^(text\.)?transformer\.resblocks\.\d+\.attn$", "text", causal=True,
             reader="mha")

_VISION_TOKENS = TokenSource("vision", pattern=r"^visual$", reader="image", prefix=1)
_TEXT_TOKENS = TokenSource("text", pattern=r"^(text\.)?token_embedding$",
                           special=("bos@first", "eot@argmax"), pad_id=0, causal=True)

_POOL_SPECIAL = {"argmax": "eot@argmax", "last": "eot@last", "first": "eot@first",
                 "eos": "eot@last_real"}

_RESNET = (
    "its vision tower is a ResNet (open_clip ModifiedResNet): convolutions, then one"
    " attention pool over the last feature map, so there are no attention layers to roll"
    " out over the image. Use a ViT model (e.g. 'ViT-B-16', 'ViT-B-16-SigLIP') for"
    " rollout, relevance or cross-attention maps, or a gradient attribution (Grad-CAM) on"
    " the ResNet's last stage.")


def _exact(names) -> str:
    return "^(?:" + "|".join(re.escape(n) for n in names) + ")$"


def _timm_projections(module) -> tuple[str | None, str | None]:
    out = "proj" if isinstance(getattr(module, "proj", None), torch.nn.Linear) else None
    if isinstance(getattr(module, "v_proj", None), torch.nn.Linear):
        return "v_proj", out
    qkv = getattr(module, "qkv", None)
    # EvaAttention may keep q and v biases apart from a bias-free qkv: not one Linear.
    if isinstance(qkv, torch.nn.Linear) and getattr(module, "v_bias", None) is None:
        return "qkv:2/3", out
    kv = getattr(module, "kv", None)
    if isinstance(kv, torch.nn.Linear):
        return "kv:1/2", out
    return None, out


def _vision_parts(model) -> tuple[tuple[Site, ...], tuple[TokenSource, ...], tuple[str, ...]]:
    visual = getattr(model, "visual", None)
    kind = type(visual).__name__
    if kind == "ModifiedResNet":
        raise UnsupportedModelError(
            f"groundroll cannot roll out open_clip {type(model).__name__} with a"
            f" ModifiedResNet vision tower: {_RESNET}")
    trunk = getattr(visual, "trunk", None)
    if trunk is None:
        return (_VISION,), (_VISION_TOKENS,), ()
    found = [(f"visual.trunk.{n}", m) for n, m in trunk.named_modules()
             if hasattr(m, "fused_attn") and n]
    pool = [(n, m) for n, m in found if hasattr(m, "latent")]
    blocks = [(n, m) for n, m in found if not hasattr(m, "latent")]
    if not blocks or not hasattr(trunk, "patch_embed"):
        raise UnsupportedModelError(
            f"groundroll cannot roll out open_clip's timm trunk {type(trunk).__name__}:"
            " it has no global self-attention blocks (a convolutional or windowed"
            " trunk). Use a ViT trunk (e.g. 'ViT-B-16-SigLIP', 'EVA02-B-16') or a"
            " gradient attribution (Grad-CAM) for this one.")
    value, out = _timm_projections(blocks[0][1])
    sites = [Site(_exact([n for n, _ in blocks]), "vision", reader="softmax", value=value,
                  out=out)]
    tokens = [TokenSource("vision", pattern=r"^visual$", reader="timm_image")]
    if pool:
        value, out = _timm_projections(pool[0][1])
        sites.append(Site(_exact([n for n, _ in pool]), "pool", query="pool_queries",
                          key="vision", reader="softmax", value=value, out=out))
        tokens.append(TokenSource("pool_queries", pattern=_exact([pool[0][0]]),
                                  reader="queries"))
    return tuple(sites), tuple(tokens), ("timm_fused",)


def _text_parts(model) -> tuple[tuple[Site, ...], tuple[TokenSource, ...], tuple[str, ...]]:
    text = getattr(model, "text", None)
    if text is None:                       # CLIP: the text tower is the model itself
        tower, prefix = model, ""
    else:
        tower, prefix = text, "text."
    hf = getattr(tower, "transformer", None)
    if text is not None and type(text).__name__ == "HFTextEncoder":
        from .derive import declared_attention

        declared = [d for d in declared_attention(hf) if "cross" not in d.key]
        if not declared:
            return (), (), ()
        names = [f"text.transformer.{d.name}" for d in declared]
        return ((Site(_exact(names), "text", causal=None, index=declared[0].index,
                      root="text.transformer"),),
                (TokenSource("text", pattern=r"^text\.transformer$", reader="hf_auto"),),
                ("hf_eager",))
    causal = getattr(tower, "attn_mask", None) is not None
    special = ("bos@first", _POOL_SPECIAL.get(getattr(tower, "pool_type", "argmax"),
                                                 "eot@argmax"))
    pad_id = getattr(tower, "pad_id", 0)
    site = dataclasses.replace(_TEXT, causal=causal)
    source = dataclasses.replace(_TEXT_TOKENS, pattern=f"^{re.escape(prefix)}token_embedding$",
                                 special=special, pad_id=pad_id, causal=causal)
    return (site,), (source,), ()


def _specialise(adapter: Adapter, model: torch.nn.Module) -> Adapter:
    vision_sites, vision_tokens, vision_switch = _vision_parts(model)
    text_sites, text_tokens, text_switch = _text_parts(model)
    switches = tuple(dict.fromkeys(vision_switch + text_switch))
    return dataclasses.replace(
        adapter, sites=vision_sites + text_sites, tokens=vision_tokens + text_tokens,
        switch=switches or None, specialise=None)


OPEN_CLIP = Adapter(
    name="open_clip",
    classes=("open_clip.model.CLIP", "open_clip.model.CustomTextCLIP"),
    sites=(_VISION, _TEXT),
    tokens=(
        _VISION_TOKENS,
        # The token embedding sees the ids in encode_text; pooling is at argmax(ids).
        _TEXT_TOKENS,
    ),
    description="open_clip CLIP / CustomTextCLIP with a ViT or timm ViT vision tower",
    specialise=_specialise,
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

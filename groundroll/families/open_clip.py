"""The open_clip family: ``CLIP`` / ``CustomTextCLIP`` (CoCa: :mod:`.open_clip_coca`).

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
out and is refused with :class:`~groundroll.families.sites.UnsupportedModelError`.

Grounding reads the tower open_clip built: input size and patch grid, the image mean
and std it records, the text context, LeGrad's lens and Grad-CAM's layer; dense sources
rewrite the last block of a native ViT tower.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from .derive import declared_attention
from .record import OPENAI_MEAN, OPENAI_STD, Family, Grounding, _pair
from .sites import Adapter, Site, TokenSource, UnsupportedModelError

__all__ = ["FAMILY", "ADAPTER", "grounding", "VISION_SITE", "TEXT_SITE", "VISION_TOKENS"]

VISION_SITE = Site(r"(^|\.)visual\.transformer\.resblocks\.\d+\.attn$", "vision", reader="mha")
# CLIP keeps its text tower at the top level; CustomTextCLIP and CoCa under ``text``.
TEXT_SITE = Site(r"^(text\.)?transformer\.resblocks\.\d+\.attn$", "text", causal=True,
             reader="mha")

VISION_TOKENS = TokenSource("vision", pattern=r"^visual$", reader="image", prefix=1)
TEXT_TOKENS = TokenSource("text", pattern=r"^(text\.)?token_embedding$",
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
        return (VISION_SITE,), (VISION_TOKENS,), ()
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
    site = dataclasses.replace(TEXT_SITE, causal=causal)
    source = dataclasses.replace(TEXT_TOKENS, pattern=f"^{re.escape(prefix)}token_embedding$",
                                 special=special, pad_id=pad_id, causal=causal)
    return (site,), (source,), ()


def _specialise(adapter: Adapter, model: torch.nn.Module) -> Adapter:
    vision_sites, vision_tokens, vision_switch = _vision_parts(model)
    text_sites, text_tokens, text_switch = _text_parts(model)
    switches = tuple(dict.fromkeys(vision_switch + text_switch))
    return dataclasses.replace(
        adapter, sites=vision_sites + text_sites, tokens=vision_tokens + text_tokens,
        switch=switches or None, specialise=None)


ADAPTER = Adapter(
    name="open_clip",
    classes=("open_clip.model.CLIP", "open_clip.model.CustomTextCLIP"),
    sites=(VISION_SITE, TEXT_SITE),
    tokens=(
        VISION_TOKENS,
        # The token embedding sees the ids in encode_text; pooling is at argmax(ids).
        TEXT_TOKENS,
    ),
    description="open_clip CLIP / CustomTextCLIP with a ViT or timm ViT vision tower",
    specialise=_specialise,
)


# --------------------------------------------------------------------------- grounding

def image_size(model):
    return _pair(model.visual.image_size)


def patch_size(model):
    visual = model.visual
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "patch_embed"):
        return _pair(trunk.patch_embed.patch_size)
    return _pair(visual.patch_size)


def mean_std(model, processor):
    visual = model.visual
    return (getattr(visual, "image_mean", None) or OPENAI_MEAN,
            getattr(visual, "image_std", None) or OPENAI_STD)


def context_length(model, tokenizer):
    length = getattr(tokenizer, "context_length", None) or getattr(model, "context_length", None)
    return int(length or 77)


def _vision_target(model) -> tuple[str, tuple[str, ...]]:
    trunk = getattr(model.visual, "trunk", None)
    if getattr(trunk, "attn_pool", None) is not None:
        return "pool_queries", ("vision", "pool")
    return "vision", ("vision",)


def _legrad_lens(model):
    """LeGrad's lens of a native ViT tower without attentional pooler: its residual
    blocks, ``ln_post`` and the projection, and the blocks' layout."""
    visual = model.visual
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None or getattr(visual, "attn_pool", None) is not None:
        return None

    def head(x):
        x = visual.ln_post(x)
        return x @ visual.proj if visual.proj is not None else x
    return list(blocks), head, getattr(visual.transformer, "batch_first", True)


def gradcam_layer(model):
    """ViT towers: the last block's first layer norm; a ResNet tower its last stage; a
    timm trunk its last stage (ConvNeXt, ...)."""
    visual = model.visual
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is not None:
        return blocks[-1].ln_1, getattr(visual.transformer, "batch_first", True)
    if hasattr(visual, "layer4"):                            # ModifiedResNet
        return visual.layer4[-1], None
    if hasattr(visual, "trunk"):                             # timm trunk (ConvNeXt, ...)
        stages = getattr(visual.trunk, "stages", None)
        if stages is None:
            raise ValueError(f"no Grad-CAM layer known for {type(visual.trunk).__name__}")
        return stages[-1], None
    raise ValueError(f"no Grad-CAM layer known for {type(visual).__name__}")


def dense_tower(model):
    """The ViT tower whose last block dense sources rewrite."""
    visual = getattr(model, "visual", None)
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None or type(blocks[-1]).__name__ != "ResidualAttentionBlock" or not \
            isinstance(getattr(blocks[-1], "attn", None), torch.nn.MultiheadAttention):
        raise TypeError("dense sources need an open_clip ViT vision tower with stock"
                        " ResidualAttentionBlock / nn.MultiheadAttention blocks")
    if getattr(visual, "attn_pool", None) is not None:
        raise TypeError("dense sources need a ViT tower without an attentional pooler"
                        " (CLIP, not CoCa)")
    return visual


def grounding(model=None) -> Grounding:
    """The grounding hooks for ``model`` (a native ViT tower or a timm trunk, with or
    without an attention-pool head)."""
    target, streams = _vision_target(model) if model is not None else ("vision", ("vision",))
    native = model is None or getattr(model.visual, "trunk", None) is None
    return Grounding(
        image_size=image_size, patch_size=patch_size, mean_std=mean_std,
        context_length=context_length,
        image_embeddings=lambda m, pixels: m.encode_image(pixels),
        text_embeddings=lambda m, enc: m.encode_text(enc["input_ids"]),
        vision_target=target, vision_streams=streams, tokenizer_style="open_clip",
        dense=native,
        dense_reason="dense sources rewrite the last block of an open_clip ViT tower built"
                     " by open_clip itself; this model's vision tower is a timm trunk: use"
                     " method='relevance' or 'rollout'",
        dense_tower=dense_tower, legrad_lens=_legrad_lens, gradcam_layer=gradcam_layer,
        layer_maps=True)


#: open_clip ``CLIP`` / ``CustomTextCLIP`` (instance-dependent: a native ViT tower or a
#: timm trunk, with or without a pool).
FAMILY = Family("open_clip", adapter=ADAPTER, grounding=grounding)

"""Hugging Face transformers families.

With the default ``sdpa`` attention, transformers 5 returns no weights; the capture
switches the model to ``"eager"`` (``model.set_attn_implementation``) and restores each
config's previous implementation on exit. Eager attention modules return
``(output, ..., weights)``; the weights are the tensor multiplied with the values.
"""

from __future__ import annotations

from .base import Adapter, Site, TokenSource

__all__ = ["HF_ADAPTERS"]

_EAGER = "hf_eager"


def _text(stream: str, *, pattern=None, classes=(), special=("bos@first", "eos@last"),
          causal: bool = False) -> TokenSource:
    return TokenSource(stream, pattern=pattern, classes=classes, special=special,
                       causal=causal)


def _image(classes: tuple[str, ...], *, prefix: int = 1) -> TokenSource:
    return TokenSource("vision", classes=classes, reader="image", prefix=prefix)


# --------------------------------------------------------------------------- towers

_CLIP_VISION = Site(r"(^|\.)vision_model\.encoder\.layers\.\d+\.self_attn$", "vision",
                    value="v_proj", out="out_proj")

CLIP = Adapter(
    name="hf_clip",
    model_types=("clip", "clip_text_model", "clip_vision_model"),
    sites=(
        _CLIP_VISION,
        Site(r"(^|\.)text_model\.encoder\.layers\.\d+\.self_attn$", "text", causal=True,
             value="v_proj", out="out_proj"),
    ),
    tokens=(
        _image(("CLIPVisionModel", "CLIPVisionTransformer")),
        _text("text", classes=("CLIPTextModel", "CLIPTextTransformer"),
              special=("bos@first", "eos@last", "eot@hf_clip"), causal=True),
    ),
    switch=_EAGER,
    description="transformers CLIPModel (and its towers)",
)

SIGLIP = Adapter(
    name="hf_siglip",
    model_types=("siglip", "siglip_text_model", "siglip_vision_model"),
    sites=(
        _CLIP_VISION,
        Site(r"(^|\.)text_model\.encoder\.layers\.\d+\.self_attn$", "text",
             value="v_proj", out="out_proj"),
        # SiglipMultiheadAttentionPoolingHead: one learned probe over the patches.
        Site(r"(^|\.)vision_model\.head\.attention$", "pool", query="pool_queries",
             key="vision", reader="mha"),
    ),
    tokens=(
        _image(("SiglipVisionModel", "SiglipVisionTransformer"), prefix=0),
        # SigLIP pools the text at the last position.
        _text("text", classes=("SiglipTextModel", "SiglipTextTransformer"), special=("eos@last", "eot@last")),
        TokenSource("pool_queries", classes=("SiglipMultiheadAttentionPoolingHead",),
                    reader="queries"),
    ),
    switch=_EAGER,
    description="transformers SiglipModel (and its towers), with its pooling head",
)

BLIP = Adapter(
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
        _image(("BlipVisionModel",)),
        _text("text", classes=("BlipTextModel",), special=("cls@first", "eos@last")),
    ),
    switch=_EAGER,
    description="transformers BlipForImageTextRetrieval",
)

# --------------------------------------------------------------------------- seq2seq

_SEQ2SEQ_TOKENS = (
    _text("encoder", pattern=r"(^|\.)encoder$", special=("eos@last",)),
    # Position 0 of the decoder input is the decoder start token.
    _text("decoder", pattern=r"(^|\.)decoder$", causal=True),
)


def _bart_like(name: str, model_types: tuple[str, ...], description: str) -> Adapter:
    return Adapter(
        name=name,
        model_types=model_types,
        sites=(
            Site(r"(^|\.)encoder\.layers\.\d+\.self_attn$", "encoder",
                 value="v_proj", out="out_proj"),
            Site(r"(^|\.)decoder\.layers\.\d+\.self_attn$", "decoder", causal=True,
                 value="v_proj", out="out_proj"),
            Site(r"(^|\.)decoder\.layers\.\d+\.encoder_attn$", "cross", query="decoder",
                 key="encoder", value="v_proj", out="out_proj"),
        ),
        tokens=_SEQ2SEQ_TOKENS,
        switch=_EAGER,
        description=description,
    )


T5 = Adapter(
    name="hf_t5",
    model_types=("t5", "mt5"),
    sites=(
        Site(r"(^|\.)encoder\.block\.\d+\.layer\.0\.SelfAttention$", "encoder",
             value="v", out="o"),
        Site(r"(^|\.)decoder\.block\.\d+\.layer\.0\.SelfAttention$", "decoder",
             causal=True, value="v", out="o"),
        Site(r"(^|\.)decoder\.block\.\d+\.layer\.1\.EncDecAttention$", "cross",
             query="decoder", key="encoder", value="v", out="o"),
    ),
    tokens=_SEQ2SEQ_TOKENS,
    switch=_EAGER,
    description="transformers T5 / mT5",
)

# --------------------------------------------------------------------------- encoders

BERT = Adapter(
    name="hf_bert",
    model_types=("bert", "roberta", "xlm-roberta", "camembert", "electra"),
    sites=(Site(r"(^|\.)encoder\.layer\.\d+\.attention\.self$", "encoder",
                value="value", out="../output.dense"),),
    tokens=(_text("encoder", classes=("BertModel", "RobertaModel", "XLMRobertaModel",
                                      "CamembertModel", "ElectraModel"),
                  special=("cls@first", "eos@last")),),
    switch=_EAGER,
    description="transformers BERT-style text encoders",
)

VIT = Adapter(
    name="hf_vit",
    model_types=("vit", "deit"),
    sites=(Site(r"(^|\.)layers\.\d+\.attention$", "encoder", value="v_proj", out="o_proj"),),
    tokens=(
        TokenSource("encoder", classes=("ViTModel",), reader="image", prefix=1),
        # DeiT: class and distillation tokens (recounted from the first layer anyway).
        TokenSource("encoder", classes=("DeiTModel",), reader="image", prefix=2),
    ),
    switch=_EAGER,
    description="transformers ViT / DeiT",
)

HF_ADAPTERS = (
    CLIP, SIGLIP, BLIP,
    _bart_like("hf_marian", ("marian",), "transformers Marian (MarianMTModel)"),
    _bart_like("hf_bart", ("bart", "mbart", "m2m_100", "pegasus"),
               "transformers BART, mBART, M2M100/NLLB, Pegasus"),
    T5, BERT, VIT,
)

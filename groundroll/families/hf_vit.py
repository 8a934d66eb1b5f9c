"""The transformers ViT family: ViT and DeiT image encoders."""

from __future__ import annotations

from ._hf_sites import EAGER
from .record import Family, HFLoader
from .sites import Adapter, Site, TokenSource

__all__ = ["FAMILY", "ADAPTER"]

ADAPTER = Adapter(
    name="hf_vit",
    model_types=("vit", "deit"),
    sites=(Site(r"(^|\.)layers\.\d+\.attention$", "encoder", value="v_proj", out="o_proj"),),
    tokens=(
        TokenSource("encoder", classes=("ViTModel",), reader="image", prefix=1),
        # DeiT: class and distillation tokens (recounted from the first layer anyway).
        TokenSource("encoder", classes=("DeiTModel",), reader="image", prefix=2),
    ),
    switch=EAGER,
    description="transformers ViT / DeiT",
)

FAMILY = Family("hf_vit", adapter=ADAPTER,
                loader=HFLoader("AutoModel", "image_processor", "hf_encoder"))

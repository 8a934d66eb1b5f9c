"""The transformers T5 family: T5 and mT5 (``block.*.layer.{0,1}``: self-attention,
then the decoder's cross-attention)."""

from __future__ import annotations

from ._hf_sites import EAGER
from ._seq2seq import CHAIN, LOADER, TOKENS
from .record import Family
from .sites import Adapter, Site

__all__ = ["FAMILY", "ADAPTER"]

ADAPTER = Adapter(
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
    tokens=TOKENS,
    switch=EAGER,
    description="transformers T5 / mT5",
)

FAMILY = Family("hf_t5", adapter=ADAPTER, chains=(CHAIN,), loader=LOADER)

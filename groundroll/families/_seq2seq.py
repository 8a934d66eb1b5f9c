"""What the Hugging Face translation families share: token streams, the BART-style
sites, the chain and the loader."""

from __future__ import annotations

from ..trace import Chain
from ._hf_sites import EAGER, text_tokens
from .record import HFLoader
from .sites import Adapter, Site

__all__ = ["TOKENS", "CHAIN", "LOADER", "bart_like"]

TOKENS = (
    text_tokens("encoder", pattern=r"(^|\.)encoder$", special=("eos@last",)),
    # Position 0 of the decoder input is the decoder start token.
    text_tokens("decoder", pattern=r"(^|\.)decoder$", causal=True),
)

#: Source tokens -> the encoder -> cross-attention -> the decoder's rows.
CHAIN = Chain("encoder", "decoder", source_self="encoder", target_self="decoder",
              target_cross="cross")

LOADER = HFLoader("AutoModelForSeq2SeqLM", "tokenizer", "hf_seq2seq")


def bart_like(name: str, model_types: tuple[str, ...], description: str) -> Adapter:
    """Sites of a BART-style encoder-decoder (``encoder.layers.*.self_attn``,
    ``decoder.layers.*.{self_attn,encoder_attn}``)."""
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
        tokens=TOKENS,
        switch=EAGER,
        description=description,
    )

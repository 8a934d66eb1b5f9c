"""The transformers BART family: BART, mBART, M2M100 / NLLB and Pegasus share BART's
sites. mBART-50, M2M100 and NLLB start a translation with the target language's code,
which ``generate`` is given when the tokenizer names a target language."""

from __future__ import annotations

from ._seq2seq import CHAIN, LOADER, bart_like
from .record import Family, model_type

__all__ = ["FAMILY"]

_LANGUAGE_CODE_FIRST = ("m2m_100", "nllb", "mbart")


def _generate_kwargs(model, tokenizer) -> dict:
    """``forced_bos_token_id``: the target language code, for the multilingual models
    whose generation config does not force it already."""
    tgt_lang = getattr(tokenizer, "tgt_lang", None)
    gen = getattr(model, "generation_config", None)
    if (tgt_lang and getattr(gen, "forced_bos_token_id", None) is None
            and model_type(model) in _LANGUAGE_CODE_FIRST):
        return {"forced_bos_token_id": tokenizer.convert_tokens_to_ids(tgt_lang)}
    return {}


FAMILY = Family("hf_bart", chains=(CHAIN,), loader=LOADER,
                adapter=bart_like("hf_bart", ("bart", "mbart", "m2m_100", "pegasus"),
                                  "transformers BART, mBART, M2M100/NLLB, Pegasus"),
                generate_kwargs=_generate_kwargs)

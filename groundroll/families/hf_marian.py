"""The transformers Marian family (``MarianMTModel``): BART-style sites."""

from __future__ import annotations

from ._seq2seq import CHAIN, LOADER, bart_like
from .record import Family

__all__ = ["FAMILY"]

FAMILY = Family("hf_marian", chains=(CHAIN,), loader=LOADER,
                adapter=bart_like("hf_marian", ("marian",),
                                  "transformers Marian (MarianMTModel)"))

"""The settings of one alignment, as one object: :class:`AlignOptions`.

:func:`~groundroll.alignment.align` takes each field as a keyword argument or the
object whole (``options=AlignOptions(...)``); :func:`~groundroll.distributed.align_corpus`
takes the same object and hands it whole to the :func:`~groundroll.alignment.align`
call of every shard.

Examples
--------
>>> options = AlignOptions(method="rollout", residual=0.3)
>>> options.extraction is None, options.head_fusion
(True, 'mean')
>>> AlignOptions(extraction="mutual", symmetrize="union")
Traceback (most recent call last):
...
ValueError: extraction='mutual' combines both directions itself; leave symmetrize=None
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from groundroll._options import check_align_options
from groundroll.alignment.extract import EXTRACTIONS, SYMMETRIZATIONS
from groundroll.alignment.methods import METHODS

__all__ = ["AlignOptions", "check_extraction"]


def check_extraction(extraction: str | None, symmetrize: str | None) -> None:
    """ValueError when an extraction or symmetrisation is unknown, or when
    ``itermax``/``mutual`` (which combine both directions themselves) come with a
    symmetrisation."""
    if extraction is not None and extraction not in EXTRACTIONS:
        raise ValueError(f"extraction must be one of {EXTRACTIONS}, got {extraction!r}")
    if extraction in ("itermax", "mutual") and symmetrize is not None:
        raise ValueError(f"extraction={extraction!r} combines both directions itself;"
                         " leave symmetrize=None")
    if symmetrize is not None and symmetrize.replace("_", "-") not in SYMMETRIZATIONS:
        raise ValueError(f"symmetrize must be one of {SYMMETRIZATIONS} or None, got"
                         f" {symmetrize!r}")


@dataclass(frozen=True)
class AlignOptions:
    """Every setting of :func:`~groundroll.alignment.align` but its inputs (sentences),
    its resources (model, device) and how it runs (``batch_size``, ``progress``).

    Each attribute is the keyword argument of the same name of
    :func:`~groundroll.alignment.align`, with the same default and meaning; None leaves
    it to the model's alignment profile (or the method's own default). Checked when
    built: an unknown method, extraction or symmetrisation is a ValueError, a number of
    the wrong type or out of range an :class:`~groundroll._options.OptionError`.

    Attributes
    ----------
    method, layers, heads, shift, extraction, link_threshold, symmetrize, profile, reverse_model, max_length, head_fusion, residual, max_relevance_tokens, relevance_chunk, generate_kwargs
        As in :func:`~groundroll.alignment.align`.
    """

    method: str | None = None
    layers: Any = None
    heads: Any = None
    shift: bool | None = None
    extraction: str | None = None
    link_threshold: float | None = None
    symmetrize: str | None = None
    profile: Any = None
    reverse_model: Any = None
    max_length: int | None = None
    head_fusion: Any = "mean"
    residual: float = 0.5
    max_relevance_tokens: int = 128
    relevance_chunk: int = 256
    generate_kwargs: dict | None = None

    def __post_init__(self) -> None:
        if self.method is not None and self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        check_extraction(self.extraction, self.symmetrize)
        check_align_options(link_threshold=self.link_threshold, max_length=self.max_length)

"""Capture attention from stock open_clip and Hugging Face models.

>>> from groundroll.adapters import capture                       # doctest: +SKIP
>>> with capture(model) as trace:                                 # doctest: +SKIP
...     model(**inputs)
>>> trace.weights("encoder")[0].shape      # [batch, head, query, key]  # doctest: +SKIP

Families and streams (layer streams; token streams in parentheses when they differ):

=================  ===========================================================
family             streams
=================  ===========================================================
open_clip          ``vision``, ``text`` (causal)
open_clip_coca     ``vision``, ``text`` (causal), ``pool`` (pool_queries -> vision),
                   ``decoder`` (causal), ``decoder_cross`` (decoder -> pool_out)
hf_clip            ``vision``, ``text`` (causal)
hf_siglip          ``vision``, ``text``, ``pool`` (pool_queries -> vision)
hf_blip            ``vision``, ``text``, ``text_cross`` (text -> vision)
hf_marian,         ``encoder``, ``decoder`` (causal), ``cross`` (decoder -> encoder)
hf_bart, hf_t5
hf_bert, hf_vit    ``encoder``
hf_<model_type>    derived from the model's ``_can_record_outputs``
                   (:mod:`groundroll.families.derive`): ``encoder``, ``decoder``,
                   ``cross``, ``vision``, ``text``, ``audio``, ``<query>_cross``,
                   ``pool`` (probe pooling heads)
hf_<model_type>    no declaration (MPNet, DeBERTa, XLNet, FSMT, ProphetNet, LongT5,
                   MVP, ...): read from what the model returns with
                   ``output_attentions=True`` (:func:`returned_adapter`), named from
                   the output keys: ``encoder``, ``decoder``, ``cross``, nested
                   ``vision`` / ``text`` / ``multimodal``; ``<stream>_blocks`` for
                   blocked attention folded into heads (LongT5 local blocks,
                   ProphetNet n-gram streams), ``cross_ngram``
=================  ===========================================================

open_clip models with a timm trunk add ``pool`` (the attention-pool head) where the
trunk has one. Windowed, local, sparse and convolutional models raise
:class:`UnsupportedModelError` with the reason and what works instead.
"""

from ..families import (Adapter, Site, TokenSource, UnsupportedModelError, adapter_for,
                        declared_attention, derive_adapter, refusal, register_adapter,
                        returned_adapter, supported_models)
from .capture import ROLLOUT_OPTIONS, capture

__all__ = ["capture", "register_adapter", "adapter_for", "supported_models", "Adapter",
           "Site", "TokenSource", "ROLLOUT_OPTIONS", "UnsupportedModelError",
           "derive_adapter", "declared_attention", "refusal", "returned_adapter"]

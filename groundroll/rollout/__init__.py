"""Attention rollout math: tensors in, tensors out.

Everything here works on plain attention tensors from any source; nothing imports a
model library. Shapes follow one convention: attention weights are
``[batch, head, query, key]`` (or ``[batch, query, key]`` once heads are fused), and
layer lists are ordered first layer first.

Per-layer pipeline used by :func:`rollout`, :class:`RolloutAccumulator` and
:func:`attention_flow`, in this order:

1. head fusion (:func:`fuse_heads`, or gradient weighting when a gradient is given;
   skipped with ``per_head=True``),
2. residual correction ``rownorm((1 - r) * A + r * I)`` (:func:`residual_correct`),
3. pruning (:func:`prune`), which never removes the diagonal nor the rows and columns
   of the read-out positions, and renormalises rows.

Pruning comes after the residual step so that its ``prune_threshold`` acts on the
row-stochastic matrix that is actually multiplied, whatever the fusion was.

Computation is done in float32 (float64 inputs stay float64); float16 and bfloat16
inputs are upcast.

Modules, one job each: :mod:`~groundroll.rollout.fusion` (head fusion, gradient
weighting, residual correction), :mod:`~groundroll.rollout.pruning`,
:mod:`~groundroll.rollout.product` (full, rows-only and streaming rollout),
:mod:`~groundroll.rollout.flow` (attention flow), :mod:`~groundroll.rollout.relevance`
(Chefer et al.'s rules), :mod:`~groundroll.rollout.value` (value-aware weights),
:mod:`~groundroll.rollout.streams` (the cross-attention block that chains an encoder
into a decoder), and the private input checks.
"""

from __future__ import annotations

from ._checks import HeadFusion, Rows
from .flow import attention_flow
from .fusion import fuse_heads, gradient_weighted, residual_correct, rownorm
from .product import RolloutAccumulator, rollout
from .pruning import prune
from .streams import rollout_cross_update
from .relevance import (
    relevance_co_update,
    relevance_normalize,
    relevance_self_update,
    self_relevance,
)
from .value import value_weighted

__all__ = [
    "rownorm",
    "fuse_heads",
    "residual_correct",
    "prune",
    "rollout",
    "RolloutAccumulator",
    "attention_flow",
    "value_weighted",
    "gradient_weighted",
    "relevance_self_update",
    "relevance_normalize",
    "relevance_co_update",
    "self_relevance",
    "rollout_cross_update",
    "HeadFusion",
    "Rows",
]

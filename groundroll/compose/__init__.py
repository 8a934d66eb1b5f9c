"""End-to-end maps through encoder, cross-attention and decoder.

:func:`compose` turns a :class:`~groundroll.trace.Trace` into a target x source map by
chaining the streams an adapter exposes (:mod:`~groundroll.compose.chains`), with a
composition method (:mod:`~groundroll.compose.methods`) that calls the rollout core for
every step. Modules: ``chains`` (which streams lead from source to target), ``layers``
(captured layers -> core-prepared matrices), ``methods`` (raw, rollout, relevance,
norm, flow and their registry), ``graph`` (the composition as one block-matrix graph),
``api`` (:func:`compose` and :class:`Composition`).

Everything here is tensors in, tensors out; shapes are written ``[batch, query, key]``
with a ``head`` axis after ``batch`` in head-specific mode.
"""

from .api import Composition, compose
from .chains import CHAINS, Chain, chain_for
from .graph import joint_graph
from .methods import (
    METHODS,
    Flow,
    Method,
    Norm,
    Raw,
    Relevance,
    Rollout,
    get_method,
    method_names,
    method_options,
    register_method,
    unregister_method,
)

__all__ = ["Chain", "Composition", "compose", "chain_for", "joint_graph", "CHAINS",
           "METHODS", "method_names", "method_options", "register_method",
           "unregister_method", "get_method", "Method", "Raw",
           "Norm", "Rollout", "Relevance", "Flow"]

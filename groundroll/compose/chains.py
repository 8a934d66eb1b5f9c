"""Chains: which streams carry information from the source tokens to the target tokens.

The chains below follow the stream names capture gives any model (derived families
included); a family with streams of its own declares its chains in its record
(:mod:`groundroll.families`: CoCa's ``vision`` -> ``pool`` -> ``decoder_cross`` /
``decoder``, BLIP's ``vision`` -> ``text_cross`` / ``text``).

========================  ===========================================================
streams                   chain (source -> target)
========================  ===========================================================
encoder-decoder           ``encoder`` -> ``cross`` -> ``decoder``
pooling head              ``vision`` -> ``pool``
one tower (CLIP)          one stream: ``vision`` or ``text`` alone (``source == target``)
========================  ===========================================================

A chain is plain data (:class:`Chain`); pass your own for a model family whose streams
are named differently, or let the trace declare it (``trace.chains``).
"""

from __future__ import annotations

from .. import families
from ..trace import SELF, Chain, Trace

__all__ = ["Chain", "CHAINS", "chain_for"]


CHAINS: tuple[Chain, ...] = (
    Chain("encoder", "decoder", source_self="encoder", target_self="decoder",
          target_cross="cross"),
    Chain("vision", "pool_queries", source_self="vision", target_cross="pool",
          cross_residual=False),
)


def _family_chains(trace: Trace) -> tuple[Chain, ...]:
    """Chains declared by the registered model family the trace was captured from,
    then those of every other registered family (a trace built by hand, or captured
    from a model with the same stream names)."""
    own: tuple[Chain, ...] = ()
    if getattr(trace, "family", ""):
        try:
            own = tuple(families.family_named(trace.family).chains)
        except KeyError:
            pass
    others = tuple(chain for name in families.families()
                   for chain in families.family_named(name).chains)
    return own + others


def chain_for(trace: Trace, source: str, target: str) -> Chain:
    """The :class:`Chain` from ``source`` to ``target`` whose streams the trace holds.

    Chains the trace declares (``trace.chains``) are tried first, then those of the
    trace's registered model family (:mod:`groundroll.families`, for families with
    their own stream names), then those of the other registered families, then
    :data:`CHAINS`; ``source == target`` gives a single
    self-attention stream over those tokens.

    Examples
    --------
    >>> from groundroll.trace import AttentionLayer, Trace
    >>> import torch
    >>> trace = Trace()
    >>> trace.add(AttentionLayer(torch.ones(1, 1, 2, 2) / 2, "self", "vision",
    ...                          "vision", "vision", 0))
    >>> chain_for(trace, "vision", "vision").source_self
    'vision'
    """
    if source == target:
        selfs = [s for s, layers in trace.layers.items()
                 if layers and layers[0].kind == SELF and layers[0].query_stream == source]
        if not selfs:
            raise ValueError(
                f"no self-attention stream over tokens {source!r}; captured streams:"
                f" {trace.streams}"
            )
        return Chain(source, target, source_self=selfs[0])
    candidates = (*getattr(trace, "chains", ()), *_family_chains(trace), *CHAINS)
    for chain in candidates:
        needed = (chain.target_cross, *chain.hops)
        if (chain.source, chain.target) == (source, target) and all(
                s in trace.layers for s in needed if s is not None):
            return chain
    known = ", ".join(dict.fromkeys(f"{c.source}->{c.target}" for c in candidates))
    raise ValueError(
        f"no known chain from {source!r} to {target!r} in a trace with streams"
        f" {trace.streams}. Known chains: {known}, or source == target for one"
        " self-attention stream. Pass chain=Chain(...) to describe another model."
    )

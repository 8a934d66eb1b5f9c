"""Chains: which streams carry information from the source tokens to the target tokens.

========================  ===========================================================
model family              chain (source -> target)
========================  ===========================================================
seq2seq (Marian, T5, ..)  ``encoder`` -> ``cross`` -> ``decoder``
open_clip CoCa            ``vision`` -> ``pool`` -> ``text`` -> ``decoder_cross`` / ``decoder``
BLIP retrieval            ``vision`` -> ``text_cross`` / ``text``
SigLIP pooling head       ``vision`` -> ``pool``
dual encoders (CLIP)      one stream: ``vision`` or ``text`` alone (``source == target``)
========================  ===========================================================

A chain is plain data (:class:`Chain`); pass your own for a model family whose streams
are named differently, or let the trace declare it (``trace.chains``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..trace import SELF, Trace

__all__ = ["Chain", "CHAINS", "chain_for"]


@dataclass(frozen=True)
class Chain:
    """Which streams carry information from the source tokens to the target tokens.

    Attributes
    ----------
    source, target : str
        Token streams (keys of :attr:`Trace.tokens`) of the map's columns and rows.
    source_self : str or None
        Self-attention layer stream over the source tokens (``"encoder"``, ``"vision"``).
    hops : tuple of str
        Cross-attention streams between the source and the target cross-attention whose
        queries are learned (attentional poolers): ``pooled = C @ source``, no residual.
    target_prelude : str or None
        Self-attention stream the target tokens pass through before the decoder
        (CoCa's unimodal text tower). Its first ``T`` positions are used.
    target_self : str or None
        Self-attention stream of the decoder, interleaved with ``target_cross`` layer by
        layer (self block first).
    target_cross : str or None
        Cross-attention stream from target queries to the last hop's (or the source's)
        tokens.
    cross_residual : bool
        Whether the target cross-attention block has a residual connection (False for
        pooling heads whose queries are learned constants).

    Examples
    --------
    >>> Chain("encoder", "decoder", source_self="encoder", target_self="decoder",
    ...       target_cross="cross").streams
    ('encoder', 'decoder', 'cross')
    """

    source: str
    target: str
    source_self: str | None = None
    hops: tuple[str, ...] = ()
    target_prelude: str | None = None
    target_self: str | None = None
    target_cross: str | None = None
    cross_residual: bool = True

    @property
    def streams(self) -> tuple[str, ...]:
        named = (self.source_self, *self.hops, self.target_prelude, self.target_self,
                 self.target_cross)
        return tuple(s for s in named if s is not None)


CHAINS: tuple[Chain, ...] = (
    Chain("encoder", "decoder", source_self="encoder", target_self="decoder",
          target_cross="cross"),
    Chain("vision", "decoder", source_self="vision", hops=("pool",),
          target_prelude="text", target_self="decoder", target_cross="decoder_cross"),
    Chain("vision", "text", source_self="vision", target_self="text",
          target_cross="text_cross"),
    Chain("vision", "pool_queries", source_self="vision", target_cross="pool",
          cross_residual=False),
)


def _family_chains(trace: Trace) -> tuple[Chain, ...]:
    """Chains declared by the registered model family the trace was captured from."""
    if not getattr(trace, "family", ""):
        return ()
    from ..families import family_named  # the registry imports this module's Chain

    try:
        return tuple(family_named(trace.family).chains)
    except KeyError:
        return ()


def chain_for(trace: Trace, source: str, target: str) -> Chain:
    """The :class:`Chain` from ``source`` to ``target`` whose streams the trace holds.

    Chains the trace declares (``trace.chains``) are tried first, then those of the
    trace's registered model family (:mod:`groundroll.families`, for families with
    their own stream names), then :data:`CHAINS`; ``source == target`` gives a single
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

"""The composition as one graph: block matrices over all positions of a chain."""

from __future__ import annotations

import torch

from ..trace import Trace
from .chains import Chain
from .layers import LayerReader, decoder_blocks

__all__ = ["joint_graph"]


def joint_graph(trace: Trace, chain: Chain, *, head_fusion="mean", residual: float = 0.5,
                heads=None, weighting: str = "attention", prune_threshold=None,
                top_k=None, layers=None, start_layer: int = 0, call: int = -1,
                keep=None):
    """The composition as one stack of row-stochastic matrices over all positions.

    Positions are laid out ``[source | hop tokens ... | target]``. Every block becomes a
    ``[batch, M, M]`` matrix that acts on one group of rows and is the identity
    elsewhere: a source self-attention layer, a pooling hop (rows of the pooled tokens
    become ``C``, no residual), a target self-attention layer, and a cross-attention
    block whose target rows are ``[.. (1 - r) C .. | r I]``. Their rollout with
    ``residual=0`` equals :func:`~groundroll.compose.compose` with
    ``method="rollout"``, and their :func:`~groundroll.rollout.attention_flow` is the
    flow over the composed graph. For one stream (``chain.source == chain.target``)
    the matrices are the stream's corrected layers and ``"target"`` is ``"source"``.

    Parameters
    ----------
    trace : Trace
    chain : Chain
    head_fusion, residual, heads, weighting, prune_threshold, top_k, layers, \
start_layer, call
        As in :func:`~groundroll.compose.compose`.
    keep : torch.Tensor, optional
        ``[batch, R]`` target rows that pruning keeps.

    Returns
    -------
    matrices : list of torch.Tensor
        ``[batch, M, M]``, first block first.
    layout : dict of str to slice
        Where each token group sits: ``"source"``, each hop name, ``"target"``.
    """
    heads = None if heads is None else tuple(
        int(i) for i in ([heads] if isinstance(heads, int) else heads))
    reader = LayerReader(trace, call=call, heads=heads, head_fusion=head_fusion,
                         weighting=weighting, residual=float(residual),
                         prune_threshold=prune_threshold, top_k=top_k, keep=keep,
                         target=chain.target)
    src = reader.stream(chain.source_self)[start_layer:]
    if chain.source == chain.target:
        if not src:
            raise ValueError(f"no layers in {chain.source_self!r} from"
                             f" start_layer={start_layer}")
        n = src[0].keys
        return [reader.self_matrix(layer) for layer in src], {
            "source": slice(0, n), "target": slice(0, n)}
    blocks = decoder_blocks(reader, chain, layers)
    hops = [(name, layer) for name in chain.hops for layer in reader.stream(name)]
    first_cross = next((c for _, _, c in blocks if c is not None), None)
    if first_cross is None:
        raise ValueError(f"no cross-attention layers selected from {chain.target_cross!r}")
    n_src = trace.tokens[chain.source].length if chain.source in trace.tokens else (
        src[0].keys if src else (hops[0][1].keys if hops else first_cross.keys))
    sizes = [("source", n_src)]
    for name, layer in hops:
        sizes.append((name, layer.queries))
    n_tgt = first_cross.queries
    sizes.append(("target", n_tgt))
    layout, offset = {}, 0
    for name, size in sizes:
        layout[name] = slice(offset, offset + size)
        offset += size
    m = offset
    batch = first_cross.batch
    ref = first_cross.weights.detach().float()
    eye = torch.eye(m, dtype=ref.dtype, device=ref.device).expand(batch, m, m)
    mats = []

    def block(rows: slice, cols: slice, value, diag_scale=None):
        mat = eye.clone()
        if diag_scale is not None:
            mat[:, rows, rows] *= diag_scale
        else:
            mat[:, rows, :] = 0
        mat[:, rows, cols] += value
        return mat

    for layer in src:
        mats.append(block(layout["source"], layout["source"], reader.self_matrix(layer)))
    previous = layout["source"]
    for name, layer in hops:
        mats.append(block(layout[name], previous, reader.cross_matrix(layer)))
        previous = layout[name]
    tgt = layout["target"]
    for layer in reader.stream(chain.target_prelude):
        a = reader.self_matrix(layer)[..., :n_tgt, :n_tgt]
        mats.append(block(tgt, tgt, a))
    r = float(residual) if chain.cross_residual else 0.0
    for _, self_layer, cross_layer in blocks:
        if self_layer is not None:
            mats.append(block(tgt, tgt, reader.self_matrix(self_layer)))
        if cross_layer is not None:
            c = reader.cross_matrix(cross_layer)
            keys = slice(previous.stop - c.shape[-1], previous.stop)
            mats.append(block(tgt, keys, (1 - r) * c, diag_scale=r))
    return mats, layout

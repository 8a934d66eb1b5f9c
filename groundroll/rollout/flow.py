"""Attention flow (Abnar & Zuidema, 2020) by exact integer max flow."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ._checks import (
    _INT32_MAX,
    HeadFusion,
    Rows,
    _check_fusion,
    _check_head_weights,
    _check_layers,
    _check_options,
    _check_rows,
)
from .fusion import _fuse, _residual, rownorm

__all__ = ["attention_flow"]


_FLOW_EDGES_PER_CALL = 1 << 15  # about as many edges per call as fixed cost is worth


def _pair_flows(capacities: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Integer max flows for ``(output i, input j)`` pairs of one example.

    ``capacities`` is ``[L, N, N]`` (``L >= 2``) with ``capacities[l - 1, i, j]`` on the
    edge from node ``(l, i)`` to node ``(l - 1, j)``; level 0 holds the inputs and
    level ``L`` the outputs. Instead of one ``maximum_flow`` call per pair (whose fixed
    cost dominates small graphs), each pair gets its own disjoint copy of the network,
    trimmed to the edges it can use (only row ``i`` leaves the top level, only column
    ``j`` enters the bottom one). A super-source feeds every copy's source and every
    copy's sink drains into a super-sink, both through edges that cannot bind, so one
    call solves many pairs: a max flow of the union restricted to a copy is a max flow
    of that copy, read off the super-source edge. Returns ``[K]`` int64 flows.
    """
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import maximum_flow

    n_layers, n, _ = capacities.shape
    per_copy = (n_layers + 1) * n
    pos = np.arange(n)
    # levels 2..L-1 are copied whole: edges (l, a) -> (l - 1, b)
    levels = np.arange(2, n_layers)[:, None, None]
    mid_src = np.broadcast_to(levels * n + pos[None, :, None], (n_layers - 2, n, n))
    mid_dst = np.broadcast_to((levels - 1) * n + pos[None, None, :], (n_layers - 2, n, n))
    mid_src, mid_dst = mid_src.reshape(-1), mid_dst.reshape(-1)
    mid_cap = capacities[1:n_layers - 1].reshape(-1)
    edges_per_copy = mid_src.size + 4 * n
    # the super-source edge of a copy carries at most its source's out-capacity
    bound = int(capacities[-1].sum(-1).max()) + 1
    chunk = max(1, min(_FLOW_EDGES_PER_CALL // edges_per_copy, _INT32_MAX // bound - 1))
    flows = np.zeros(len(pairs), dtype=np.int64)
    for first in range(0, len(pairs), chunk):
        i, j = pairs[first:first + chunk, 0], pairs[first:first + chunk, 1]
        k = len(i)
        base = 2 + np.arange(k)[:, None] * per_copy  # node 0: super-source, 1: sink
        source = base[:, 0] + n_layers * n + i
        sink = base[:, 0] + j
        out_cap = capacities[-1][i].sum(-1) + 1
        rows = [np.zeros(k, np.int64), (base + mid_src).reshape(-1),
                np.repeat(source, n), (base + n + pos).reshape(-1), sink]
        cols = [source, (base + mid_dst).reshape(-1),
                (base + (n_layers - 1) * n + pos).reshape(-1), np.repeat(sink, n),
                np.ones(k, np.int64)]
        caps = [out_cap, np.tile(mid_cap, k), capacities[-1][i].reshape(-1),
                capacities[0][:, j].T.reshape(-1), out_cap]
        row, col, cap = (np.concatenate(v) for v in (rows, cols, caps))
        live = cap > 0
        n_nodes = 2 + k * per_copy
        graph = csr_array((cap[live].astype(np.int32), (row[live], col[live])),
                          shape=(n_nodes, n_nodes))
        graph.sum_duplicates()
        flow = maximum_flow(graph, 0, 1).flow
        start, stop = flow.indptr[0], flow.indptr[1]
        copy = (flow.indices[start:stop] - 2) // per_copy
        np.add.at(flows, first + copy, np.maximum(flow.data[start:stop], 0))
    return flows


def attention_flow(
    attentions: Sequence[torch.Tensor], *, rows: Rows = None,
    head_fusion: HeadFusion = "mean", residual: float = 0.5, scale: float = 1e6,
) -> torch.Tensor:
    """Attention flow (Abnar & Zuidema, 2020) by exact integer max flow.

    The layers form a flow network with nodes ``(l, i)``, ``l = 0..L``, and an edge
    ``(l, i) -> (l - 1, j)`` of capacity ``Ã^(l)[i, j]`` (fused heads plus residual, as
    in :func:`rollout`). ``F[i, j]`` is the max flow from output node ``(L, i)`` to input
    node ``(0, j)``; as in the original code each output row is then divided by its
    sum.

    Capacities are scaled by ``scale`` and rounded to integers for
    ``scipy.sparse.csgraph.maximum_flow`` (Dinic): each capacity is off by at most
    ``0.5 / scale``, so a raw flow value is off by at most ``0.5 / scale`` times the
    number of edges in a minimum cut (about ``1e-5`` for N up to a few tens with the
    default ``scale=1e6``). The network of an example is built once, vectorised, and
    several ``(i, j)`` pairs are solved per ``maximum_flow`` call as disjoint copies
    behind a super-source and super-sink (see ``_pair_flows``).

    Parameters
    ----------
    attentions : sequence of torch.Tensor
        Self-attention per layer, first layer first, ``[batch, head, N, N]`` or
        ``[batch, N, N]``.
    rows : list of int or torch.Tensor, optional
        Output positions to compute (list, ``[R]`` or ``[batch, R]``); all by default.
    head_fusion : {"mean", "max", "min"} or torch.Tensor
        See :func:`fuse_heads`.
    residual : float
        Identity weight of :func:`residual_correct`.
    scale : float
        Integer resolution of the capacities, ``1 <= scale`` and
        ``scale * (1 + N) < 2**31``.

    Returns
    -------
    torch.Tensor
        ``[batch, N, N]`` or ``[batch, R, N]``, rows sum to 1.

    Examples
    --------
    >>> attn = [torch.softmax(torch.randn(1, 2, 4, 4), -1) for _ in range(2)]
    >>> flow = attention_flow(attn, rows=[0])
    >>> flow.shape, round(float(flow.sum()), 4)
    (torch.Size([1, 1, 4]), 1.0)
    """
    _check_options(residual=residual)
    how = _check_fusion(head_fusion)
    layers, _ = _check_layers(attentions)
    for index, attn in enumerate(layers):
        _check_head_weights(how, attn, index)
    batch, n = layers[0].shape[0], layers[0].shape[-1]
    if not np.isfinite(scale) or scale < 1 or scale * (1 + n) >= _INT32_MAX:
        raise ValueError(
            f"scale must be >= 1 with scale * (1 + N) < 2**31 (N={n}), got {scale}"
        )
    idx = torch.arange(n).expand(batch, n) if rows is None else _check_rows(rows, batch, n)
    fused = torch.stack([_residual(_fuse(a, how, None), float(residual)) for a in layers])
    capacities = np.rint(fused.to(torch.float64).cpu().numpy() * scale)  # [L, B, N, N]
    capacities = capacities.astype(np.int64)
    flows = np.zeros((batch, idx.shape[1], n), dtype=np.float64)
    for b in range(batch):
        if len(layers) == 1:  # one edge per pair: the flow is its capacity
            flows[b] = capacities[0, b][idx[b].numpy()]
            continue
        pairs = np.stack(np.meshgrid(idx[b].numpy(), np.arange(n), indexing="ij"), -1)
        flows[b] = _pair_flows(capacities[:, b], pairs.reshape(-1, 2)).reshape(-1, n)
    return rownorm(torch.from_numpy(flows / scale).to(layers[0].dtype))


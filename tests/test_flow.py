"""Attention flow: hand-worked bottleneck, agreement with networkx max flow, errors."""

import networkx as nx
import pytest
import torch

from groundroll.rollout import attention_flow, fuse_heads, residual_correct, rownorm



def networkx_flow(attentions, *, residual=0.5, head_fusion="mean"):
    """Reference: float capacities, Edmonds-Karp, one max flow per (output, input)."""
    mats = [residual_correct(fuse_heads(a, head_fusion), residual).double()
            for a in attentions]
    depth, batch, n = len(mats), mats[0].shape[0], mats[0].shape[-1]
    out = torch.zeros(batch, n, n, dtype=torch.float64)
    for b in range(batch):
        graph = nx.DiGraph()
        for level in range(1, depth + 1):
            for i in range(n):
                for j in range(n):
                    graph.add_edge((level, i), (level - 1, j),
                                   capacity=float(mats[level - 1][b, i, j]))
        for i in range(n):
            for j in range(n):
                out[b, i, j] = nx.maximum_flow_value(
                    graph, (depth, i), (0, j), flow_func=nx.algorithms.flow.edmonds_karp)
    return rownorm(out)


def test_bottleneck_worked_on_paper(close, tol):
    # residual 0 keeps these row-stochastic layers as they are.
    # From output 0: (2,0)->(1,0) cap .5 then ->(0,0) .5, ->(0,1) .5;
    #                (2,0)->(1,1) cap .5 then ->(0,1) 1.
    # flow to input 0 = .5, to input 1 = .5 + .5 = 1 -> normalised [1/3, 2/3]
    # (rollout would give [.25, .75]). From output 1: only (1,1) -> [0, 1].
    first = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]])
    second = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]])
    out = attention_flow([first, second], residual=0.0)
    expected = torch.tensor([[[1 / 3, 2 / 3], [0.0, 1.0]]])
    close(out, expected, tol.HAND)


def test_single_layer_flow_is_the_attention(close, tol):
    gen = torch.Generator().manual_seed(0)
    attn = torch.softmax(torch.randn(2, 3, 6, 6, generator=gen), -1)
    expected = residual_correct(attn.mean(1))
    close(attention_flow([attn]), expected, tol.FLOW)


@pytest.mark.parametrize("seed, n, depth, fusion, residual", [
    (1, 4, 2, "mean", 0.5), (2, 5, 3, "max", 0.5), (3, 3, 4, "mean", 0.2),
    (4, 6, 2, "min", 0.7),
])
def test_matches_networkx_edmonds_karp(seed, n, depth, fusion, residual, close, tol):
    gen = torch.Generator().manual_seed(seed)
    layers = [torch.softmax(2 * torch.randn(2, 2, n, n, generator=gen), -1)
              for _ in range(depth)]
    expected = networkx_flow(layers, residual=residual, head_fusion=fusion)
    out = attention_flow(layers, residual=residual, head_fusion=fusion)
    close(out.double(), expected, tol.FLOW)
    assert out.dtype == torch.float32


def test_rows_restrict_output_rows(close, tol):
    gen = torch.Generator().manual_seed(5)
    layers = [torch.softmax(torch.randn(2, 2, 5, 5, generator=gen), -1) for _ in range(3)]
    full = attention_flow(layers)
    close(attention_flow(layers, rows=[4, 0]), full[:, [4, 0]],
                               tol.HAND)
    per_example = torch.tensor([[1], [3]])
    out = attention_flow(layers, rows=per_example)
    close(out[:, 0], full[[0, 1], [1, 3]], tol.HAND)


def test_coarse_scale_changes_the_result_within_its_resolution(close):
    gen = torch.Generator().manual_seed(6)
    layers = [torch.softmax(torch.randn(1, 2, 4, 4, generator=gen), -1) for _ in range(2)]
    fine = attention_flow(layers)
    coarse = attention_flow(layers, scale=100)
    assert not torch.equal(fine, coarse)
    close(coarse, fine, 0.05)


def test_flow_errors():
    good = torch.softmax(torch.rand(1, 2, 4, 4), -1)
    with pytest.raises(ValueError, match=r"layer 1: mismatched N"):
        attention_flow([good, torch.softmax(torch.rand(1, 2, 3, 3), -1)])
    with pytest.raises(ValueError, match=r"layer 0: negative attention weights"):
        attention_flow([-good])
    with pytest.raises(ValueError, match=r"rows out of range"):
        attention_flow([good], rows=[4])
    with pytest.raises(ValueError, match=r"scale must be >= 1"):
        attention_flow([good], scale=1e12)
    with pytest.raises(ValueError, match=r"attentions is empty"):
        attention_flow([])


def test_pairs_split_over_several_calls(monkeypatch, close, tol):
    from groundroll.rollout import flow as module

    gen = torch.Generator().manual_seed(7)
    layers = [torch.softmax(2 * torch.randn(1, 2, 5, 5, generator=gen), -1)
              for _ in range(3)]
    expected = networkx_flow(layers)
    monkeypatch.setattr(module, "_FLOW_EDGES_PER_CALL", 100)  # about 2 pairs per call
    close(attention_flow(layers).double(), expected,
                               tol.FLOW)

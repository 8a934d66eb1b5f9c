"""Composer: hand-worked chains, joint-graph agreement, edge cases."""

import pytest
import torch

from groundroll.compose import Chain, chain_for, compose, joint_graph
from groundroll.rollout import rollout
from groundroll.trace import AttentionLayer, Tokens, Trace

ATOL = 1e-6


def _layer(w, kind, stream, q, k, index, grad=None):
    w = torch.as_tensor(w, dtype=torch.float32)
    while w.dim() < 4:
        w = w.unsqueeze(0)
    if grad is not None:
        grad = torch.as_tensor(grad, dtype=torch.float32).expand_as(w).clone()
    return AttentionLayer(w, kind, stream, q, k, index, grad=grad)


def _seq2seq(enc, dec, cross, *, grads=False):
    trace = Trace(family="test")
    g = 1.0 if grads else None
    for i, a in enumerate(enc):
        trace.add(_layer(a, "self", "encoder", "encoder", "encoder", i, g))
    for i, (a, c) in enumerate(zip(dec, cross)):
        trace.add(_layer(a, "self", "decoder", "decoder", "decoder", i, g))
        trace.add(_layer(c, "cross", "cross", "decoder", "encoder", i, g))
    n_src = torch.as_tensor(enc[0]).shape[-1]
    n_tgt = torch.as_tensor(dec[0]).shape[-1]
    trace.tokens["encoder"] = Tokens(length=n_src)
    trace.tokens["decoder"] = Tokens(length=n_tgt, special={"eos": torch.tensor([n_tgt - 1])})
    return trace


ENC = [[[0.5, 0.5], [0.0, 1.0]]]
DEC = [[[1.0, 0.0], [0.5, 0.5]]]
CROSS = [[[1.0, 0.0], [0.0, 1.0]]]


def test_rollout_hand_worked_chain():
    # Ã_enc = [[.75, .25], [0, 1]], Ã_dec = [[1, 0], [.25, .75]], C = I, r = 0.5:
    # self block: R_tt = Ã_dec; cross block: R_ts = .5 C R_enc, R_tt = .5 Ã_dec.
    out = compose(_seq2seq(ENC, DEC, CROSS), source="encoder", target="decoder")
    torch.testing.assert_close(out.source_map[0], torch.tensor([[0.375, 0.125], [0.0, 0.5]]))
    torch.testing.assert_close(out.target_map[0], torch.tensor([[0.5, 0.0], [0.125, 0.375]]))
    rows = out.source_map.sum(-1) + out.target_map.sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))


def test_relevance_hand_worked_chain():
    # All-ones gradients make Ā = A. R_ss = I + A_enc = R̄_ss; R_tt = I + A_dec = R̄_tt;
    # R_ts = R̄_tt^T C R̄_ss = [[2, .5], [0, 1.5]] @ [[1.5, .5], [0, 2]].
    trace = _seq2seq(ENC, DEC, CROSS, grads=True)
    out = compose(trace, source="encoder", target="decoder", method="relevance")
    torch.testing.assert_close(out.source_map[0], torch.tensor([[3.0, 2.0], [0.0, 3.0]]))
    torch.testing.assert_close(out.target_map[0], torch.tensor([[2.0, 0.0], [0.5, 1.5]]))
    plain = compose(trace, source="encoder", target="decoder", method="relevance",
                    transpose=False)
    torch.testing.assert_close(plain.source_map[0], torch.tensor([[3.0, 1.0], [0.75, 3.25]]))


def test_raw_and_shift_hand_worked():
    cross = [[[0.25, 0.75], [0.5, 0.5]]]
    trace = _seq2seq(ENC, DEC, cross)
    raw = compose(trace, source="encoder", target="decoder", method="raw")
    torch.testing.assert_close(raw.source_map[0], torch.tensor(cross[0]))
    assert raw.target_map is None
    shifted = compose(trace, source="encoder", target="decoder", method="raw", shift=True)
    torch.testing.assert_close(shifted.source_map[0], torch.tensor([[0.5, 0.5], [0.0, 0.0]]))
    last = compose(trace, source="encoder", target="decoder", method="raw", rows="eos")
    torch.testing.assert_close(last.source_map[0], torch.tensor([[0.5, 0.5]]))


def _softmax_attention(g, batch, heads, q, k, *, causal=False):
    """Random ``[batch, head, q, k]`` attention, optionally causal."""
    logits = torch.randn(batch, heads, q, k, generator=g)
    if causal:
        logits = logits.masked_fill(torch.ones(q, k).triu(1).bool(), float("-inf"))
    return torch.softmax(logits, -1)


def _random_trace(seed, *, s=5, t=4, n_enc=3, n_dec=2, heads=2, batch=2):
    g = torch.Generator().manual_seed(seed)

    def attn(q, k, causal=False):
        return _softmax_attention(g, batch, heads, q, k, causal=causal)

    trace = Trace()
    for i in range(n_enc):
        trace.add(AttentionLayer(attn(s, s), "self", "encoder", "encoder", "encoder", i,
                                 grad=torch.randn(batch, heads, s, s, generator=g)))
    for i in range(n_dec):
        trace.add(AttentionLayer(attn(t, t, True), "self", "decoder", "decoder", "decoder",
                                 i, grad=torch.randn(batch, heads, t, t, generator=g)))
        trace.add(AttentionLayer(attn(t, s), "cross", "cross", "decoder", "encoder", i,
                                 grad=torch.randn(batch, heads, t, s, generator=g)))
    trace.tokens["encoder"] = Tokens(length=s)
    trace.tokens["decoder"] = Tokens(length=t)
    return trace


def _explicit_joint(trace, r):
    """Block matrices over [source | target] written out independently."""
    enc = [l.weights.mean(1) for l in trace.stream("encoder")]
    dec = [l.weights.mean(1) for l in trace.stream("decoder")]
    cross = [l.weights.mean(1) for l in trace.stream("cross")]
    s, t = enc[0].shape[-1], dec[0].shape[-1]
    batch = enc[0].shape[0]
    mats = []
    for a in enc:
        m = torch.eye(s + t).repeat(batch, 1, 1)
        m[:, :s, :s] = (1 - r) * a + r * torch.eye(s)
        mats.append(m)
    for a, c in zip(dec, cross):
        m = torch.eye(s + t).repeat(batch, 1, 1)
        m[:, s:, s:] = (1 - r) * a + r * torch.eye(t)
        mats.append(m)
        m = torch.eye(s + t).repeat(batch, 1, 1)
        m[:, s:, :s] = (1 - r) * c
        m[:, s:, s:] = r * torch.eye(t)
        mats.append(m)
    product = torch.eye(s + t).repeat(batch, 1, 1)
    for m in mats:
        product = m @ product
    return product[:, s:, :s], product[:, s:, s:]


@pytest.mark.parametrize("r", [0.0, 0.3, 0.5, 0.9])
def test_rollout_equals_explicit_joint_graph(r):
    trace = _random_trace(0)
    out = compose(trace, source="encoder", target="decoder", residual=r)
    src, tgt = _explicit_joint(trace, r)
    torch.testing.assert_close(out.source_map, src, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.target_map, tgt, atol=ATOL, rtol=0)
    mats, layout = joint_graph(trace, chain_for(trace, "encoder", "decoder"), residual=r)
    joint = rollout(mats, residual=0.0)
    torch.testing.assert_close(joint[:, layout["target"], layout["source"]], src,
                               atol=ATOL, rtol=0)


def _coca_trace(seed, *, s=6, pooled=4, t=3, text_len=4, heads=2, batch=1):
    g = torch.Generator().manual_seed(seed)

    def attn(q, k, causal=False):
        return _softmax_attention(g, batch, heads, q, k, causal=causal)

    trace = Trace()
    for i in range(2):
        trace.add(AttentionLayer(attn(s, s), "self", "vision", "vision", "vision", i))
        trace.add(AttentionLayer(attn(text_len, text_len, True), "self", "text", "text",
                                 "text", i))
    trace.add(AttentionLayer(attn(pooled, s), "cross", "pool", "pool_queries", "vision", 0))
    for i in range(2):
        trace.add(AttentionLayer(attn(t, t), "self", "decoder", "decoder", "decoder", i))
        trace.add(AttentionLayer(attn(t, pooled - 1), "cross", "decoder_cross", "decoder",
                                 "pool_out", i))
    trace.tokens["vision"] = Tokens(length=s)
    return trace


def test_coca_chain_matches_joint_graph_and_is_row_stochastic():
    trace = _coca_trace(1)
    chain = chain_for(trace, "vision", "decoder")
    assert chain.hops == ("pool",) and chain.target_prelude == "text"
    out = compose(trace, source="vision", target="decoder")
    mats, layout = joint_graph(trace, chain)
    joint = rollout(mats, residual=0.0)
    torch.testing.assert_close(out.source_map, joint[:, layout["target"], layout["source"]],
                               atol=ATOL, rtol=0)
    total = out.source_map.sum(-1) + out.target_map.sum(-1)
    torch.testing.assert_close(total, torch.ones_like(total))


def test_flow_over_composed_graph_is_normalised_and_finite():
    trace = _random_trace(2, s=3, t=2, n_enc=1, n_dec=1, batch=1)
    out = compose(trace, source="encoder", target="decoder", method="flow")
    total = out.source_map.sum(-1) + out.target_map.sum(-1)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-4, rtol=0)
    assert out.source_map.shape == (1, 2, 3)


def test_per_head_mean_equals_fused_when_heads_agree():
    trace = _random_trace(3, heads=1)
    for layer in trace:
        layer.weights = layer.weights.expand(-1, 3, -1, -1).clone()
    fused = compose(trace, source="encoder", target="decoder")
    heads = compose(trace, source="encoder", target="decoder", per_head=True)
    assert heads.source_map.shape[1] == 3
    torch.testing.assert_close(heads.source_map.mean(1), fused.source_map, atol=ATOL, rtol=0)


def test_zero_rows_give_no_nan_for_any_method():
    trace = _random_trace(4, batch=1)
    for layer in trace.stream("cross"):
        layer.weights[..., -1, :] = 0.0  # a padded target row
    for layer in trace:
        layer.grad = torch.zeros_like(layer.weights)
        layer.value_norms = torch.ones(layer.batch, layer.heads, layer.keys)
    for method in ("raw", "rollout", "relevance", "norm", "flow"):
        out = compose(trace, source="encoder", target="decoder", method=method)
        assert torch.isfinite(out.source_map).all(), method


def test_layers_heads_and_pruning_options():
    trace = _random_trace(5)
    one = compose(trace, source="encoder", target="decoder", method="raw", layers=1, heads=[0])
    expected = trace.stream("cross")[1].weights[:, 0]
    torch.testing.assert_close(one.source_map, expected, atol=ATOL, rtol=0)
    pruned = compose(trace, source="encoder", target="decoder", method="raw", top_k=1,
                     layers=0)
    assert ((pruned.source_map > 0).sum(-1) == 1).all()
    with pytest.raises(ValueError, match="out of range"):
        compose(trace, source="encoder", target="decoder", method="raw", layers=7)



def test_pruning_cross_attention_protects_no_diagonal_when_square():
    # as many target as source tokens: the cross-attention is square, but its
    # "diagonal" pairs unrelated tokens and must be pruned like any other entry
    trace = _random_trace(5, s=4, t=4)
    pruned = compose(trace, source="encoder", target="decoder", method="raw", top_k=1,
                     layers=0)
    assert ((pruned.source_map > 0).sum(-1) == 1).all()
    fused = trace.stream("cross")[0].weights.mean(1)
    top = fused.argmax(-1, keepdim=True)
    torch.testing.assert_close(pruned.source_map.gather(-1, top), torch.ones_like(
        top, dtype=pruned.source_map.dtype))

def test_self_only_stream_reads_special_rows():
    trace = _random_trace(6)
    trace.tokens["encoder"].special["cls"] = torch.tensor([0, 2])
    out = compose(trace, source="encoder", target="encoder", rows="cls")
    full = rollout(trace.weights("encoder"))
    torch.testing.assert_close(out.source_map[:, 0], full[torch.arange(2), [0, 2]])


def test_errors_name_the_problem():
    trace = _random_trace(7)
    with pytest.raises(ValueError, match="method"):
        compose(trace, source="encoder", target="decoder", method="magic")
    with pytest.raises(ValueError, match="no known chain"):
        compose(trace, source="vision", target="decoder")
    for layer in trace:
        layer.grad = None
    with pytest.raises(ValueError, match="grads=True"):
        compose(trace, source="encoder", target="decoder", method="relevance")
    with pytest.raises(ValueError, match="values=True"):
        compose(trace, source="encoder", target="decoder", method="norm")
    custom = Chain("encoder", "decoder", source_self="encoder", target_cross="missing")
    with pytest.raises(ValueError, match="lacks streams"):
        compose(trace, source="encoder", target="decoder", chain=custom)


def test_save_load_round_trip(tmp_path):
    out = compose(_seq2seq(ENC, DEC, CROSS), source="encoder", target="decoder")
    out.save(tmp_path / "c.pt")
    back = type(out).load(tmp_path / "c.pt")
    torch.testing.assert_close(back.source_map, out.source_map)
    assert back.settings == out.settings


def test_pruning_keeps_the_rows_read_out():
    trace = _random_trace(8)
    trace.tokens["encoder"].special["cls"] = torch.tensor([0, 2])
    out = compose(trace, source="encoder", target="encoder", rows="cls", top_k=1)
    expected = rollout(trace.weights("encoder"), rows=torch.tensor([[0], [2]]), top_k=1)
    torch.testing.assert_close(out.source_map, expected, atol=ATOL, rtol=0)
    # Without protection the read-out row would keep a single entry per layer.
    assert ((out.source_map > 0).sum(-1) > 2).all()

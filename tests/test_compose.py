"""Composer: hand-worked chains, joint-graph agreement, edge cases."""

import dataclasses
from typing import ClassVar

import pytest
import torch

from groundroll.compose import (
    METHODS,
    Chain,
    Norm,
    Raw,
    Relevance,
    Rollout,
    chain_for,
    compose,
    joint_graph,
    method_options,
    method_names,
    register_method,
)
from groundroll.rollout import (
    attention_flow,
    gradient_weighted,
    relevance_co_update,
    relevance_self_update,
    rollout,
    rownorm,
    self_relevance,
)
from groundroll.trace import AttentionLayer, Tokens, Trace

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


def test_rollout_hand_worked_chain(close):
    # Ã_enc = [[.75, .25], [0, 1]], Ã_dec = [[1, 0], [.25, .75]], C = I, r = 0.5:
    # self block: R_tt = Ã_dec; cross block: R_ts = .5 C R_enc, R_tt = .5 Ã_dec.
    out = compose(_seq2seq(ENC, DEC, CROSS), source="encoder", target="decoder")
    close(out.source_map[0], torch.tensor([[0.375, 0.125], [0.0, 0.5]]))
    close(out.target_map[0], torch.tensor([[0.5, 0.0], [0.125, 0.375]]))
    rows = out.source_map.sum(-1) + out.target_map.sum(-1)
    close(rows, torch.ones_like(rows))


@pytest.mark.parametrize("method", ["rollout", "relevance"])
def test_a_source_stream_that_is_not_the_cross_keys_is_refused(method):
    """Three encoder tokens (one of them padding the decoder never sees) against two
    cross-attention keys: the chain would pair the wrong tokens, so it says so."""
    enc = [[[0.4, 0.3, 0.3], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]]]
    trace = _seq2seq(enc, DEC, CROSS, grads=method == "relevance")
    with pytest.raises(ValueError, match="has 3 tokens but the cross-attention reads 2"):
        compose(trace, source="encoder", target="decoder", method=method)


def test_relevance_hand_worked_chain(close):
    # All-ones gradients make Ā = A. R_ss = I + A_enc = R̄_ss; R_tt = I + A_dec = R̄_tt;
    # R_ts = R̄_tt^T C R̄_ss = [[2, .5], [0, 1.5]] @ [[1.5, .5], [0, 2]].
    trace = _seq2seq(ENC, DEC, CROSS, grads=True)
    out = compose(trace, source="encoder", target="decoder", method="relevance")
    close(out.source_map[0], torch.tensor([[3.0, 2.0], [0.0, 3.0]]))
    close(out.target_map[0], torch.tensor([[2.0, 0.0], [0.5, 1.5]]))
    plain = compose(trace, source="encoder", target="decoder", method="relevance",
                    transpose=False)
    close(plain.source_map[0], torch.tensor([[3.0, 1.0], [0.75, 3.25]]))


def test_raw_and_shift_hand_worked(close):
    cross = [[[0.25, 0.75], [0.5, 0.5]]]
    trace = _seq2seq(ENC, DEC, cross)
    raw = compose(trace, source="encoder", target="decoder", method="raw")
    close(raw.source_map[0], torch.tensor(cross[0]))
    assert raw.target_map is None
    shifted = compose(trace, source="encoder", target="decoder", method="raw", shift=True)
    close(shifted.source_map[0], torch.tensor([[0.5, 0.5], [0.0, 0.0]]))
    last = compose(trace, source="encoder", target="decoder", method="raw", rows="eos")
    close(last.source_map[0], torch.tensor([[0.5, 0.5]]))


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
def test_rollout_equals_explicit_joint_graph(r, close, tol):
    trace = _random_trace(0)
    out = compose(trace, source="encoder", target="decoder", residual=r)
    src, tgt = _explicit_joint(trace, r)
    close(out.source_map, src, tol.SAME)
    close(out.target_map, tgt, tol.SAME)
    mats, layout = joint_graph(trace, chain_for(trace, "encoder", "decoder"), residual=r)
    joint = rollout(mats, residual=0.0)
    close(joint[:, layout["target"], layout["source"]], src, tol.SAME)


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


def test_coca_chain_matches_joint_graph_and_is_row_stochastic(close, tol):
    trace = _coca_trace(1)
    chain = chain_for(trace, "vision", "decoder")
    assert chain.hops == ("pool",) and chain.target_prelude == "text"
    out = compose(trace, source="vision", target="decoder")
    mats, layout = joint_graph(trace, chain)
    joint = rollout(mats, residual=0.0)
    close(out.source_map, joint[:, layout["target"], layout["source"]], tol.SAME)
    total = out.source_map.sum(-1) + out.target_map.sum(-1)
    close(total, torch.ones_like(total))


def test_flow_over_composed_graph_is_normalised_and_finite(close):
    trace = _random_trace(2, s=3, t=2, n_enc=1, n_dec=1, batch=1)
    out = compose(trace, source="encoder", target="decoder", method="flow")
    total = out.source_map.sum(-1) + out.target_map.sum(-1)
    close(total, torch.ones_like(total), 1e-4)
    assert out.source_map.shape == (1, 2, 3)


@pytest.mark.parametrize("residual", [0.5, 0.2])
def test_flow_over_composed_graph_equals_networkx_max_flow(residual, close, tol):
    """Max flow from each target node to each input node of the composed graph, by
    networkx's Edmonds-Karp on the block matrices that rollout multiplies; and it is not
    the rollout (the graph has bottlenecks)."""
    from test_flow import networkx_flow

    trace = _random_trace(6, s=3, t=2, n_enc=2, n_dec=1, batch=2)
    out = compose(trace, source="encoder", target="decoder", method="flow", residual=residual)
    mats, layout = joint_graph(trace, chain_for(trace, "encoder", "decoder"),
                               residual=residual)
    want = networkx_flow([m.unsqueeze(1) for m in mats], residual=0.0).float()
    rows = want[:, layout["target"]]
    close(out.source_map, rows[..., layout["source"]], tol.FLOW)
    close(out.target_map, rows[..., layout["target"]], tol.FLOW)
    roll = compose(trace, source="encoder", target="decoder", residual=residual)
    assert (out.source_map - roll.source_map).abs().max() > 1e-3


def test_per_head_mean_equals_fused_when_heads_agree(close, tol):
    trace = _random_trace(3, heads=1)
    for layer in trace:
        layer.weights = layer.weights.expand(-1, 3, -1, -1).clone()
    fused = compose(trace, source="encoder", target="decoder")
    heads = compose(trace, source="encoder", target="decoder", per_head=True)
    assert heads.source_map.shape[1] == 3
    close(heads.source_map.mean(1), fused.source_map, tol.SAME)


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


def test_layers_heads_and_pruning_options(close, tol):
    trace = _random_trace(5)
    one = compose(trace, source="encoder", target="decoder", method="raw", layers=1, heads=[0])
    expected = trace.stream("cross")[1].weights[:, 0]
    close(one.source_map, expected, tol.SAME)
    pruned = compose(trace, source="encoder", target="decoder", method="raw", top_k=1,
                     layers=0)
    assert ((pruned.source_map > 0).sum(-1) == 1).all()
    with pytest.raises(ValueError, match="out of range"):
        compose(trace, source="encoder", target="decoder", method="raw", layers=7)



def test_pruning_cross_attention_protects_no_diagonal_when_square(close):
    # as many target as source tokens: the cross-attention is square, but its
    # "diagonal" pairs unrelated tokens and must be pruned like any other entry
    trace = _random_trace(5, s=4, t=4)
    pruned = compose(trace, source="encoder", target="decoder", method="raw", top_k=1,
                     layers=0)
    assert ((pruned.source_map > 0).sum(-1) == 1).all()
    fused = trace.stream("cross")[0].weights.mean(1)
    top = fused.argmax(-1, keepdim=True)
    close(pruned.source_map.gather(-1, top), torch.ones_like(
        top, dtype=pruned.source_map.dtype))

def test_self_only_stream_reads_special_rows(close):
    trace = _random_trace(6)
    trace.tokens["encoder"].special["cls"] = torch.tensor([0, 2])
    out = compose(trace, source="encoder", target="encoder", rows="cls")
    full = rollout(trace.weights("encoder"))
    close(out.source_map[:, 0], full[torch.arange(2), [0, 2]])


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


def test_save_load_round_trip(tmp_path, close):
    out = compose(_seq2seq(ENC, DEC, CROSS), source="encoder", target="decoder")
    out.save(tmp_path / "c.pt")
    back = type(out).load(tmp_path / "c.pt")
    close(back.source_map, out.source_map)
    assert back.settings == out.settings


def test_pruning_keeps_the_rows_read_out(close, tol):
    trace = _random_trace(8)
    trace.tokens["encoder"].special["cls"] = torch.tensor([0, 2])
    out = compose(trace, source="encoder", target="encoder", rows="cls", top_k=1)
    expected = rollout(trace.weights("encoder"), rows=torch.tensor([[0], [2]]), top_k=1)
    close(out.source_map, expected, tol.SAME)
    # Without protection the read-out row would keep a single entry per layer.
    assert ((out.source_map > 0).sum(-1) > 2).all()


# ------------------------------------------------------- compose is the core, chained


def _single_stream(seed, *, n=5, layers=3, heads=2, batch=2):
    g = torch.Generator().manual_seed(seed)
    trace = Trace()
    for i in range(layers):
        trace.add(AttentionLayer(_softmax_attention(g, batch, heads, n, n), "self", "vision",
                                 "vision", "vision", i,
                                 grad=torch.randn(batch, heads, n, n, generator=g)))
    trace.tokens["vision"] = Tokens(length=n)
    return trace


def test_single_stream_rollout_equals_the_core(close):
    trace = _single_stream(10)
    weights = trace.weights("vision")
    for options in ({}, {"residual": 0.3, "head_fusion": "max"}, {"start_layer": 1},
                    {"prune_threshold": 0.15}, {"per_head": True}):
        out = compose(trace, source="vision", target="vision", **options)
        close(out.source_map, rollout(weights, **options))
        assert out.target_map is None


def test_single_stream_relevance_equals_the_rule_written_out(close):
    trace = _single_stream(11)
    out = compose(trace, source="vision", target="vision", method="relevance")
    expected = torch.eye(5).expand(2, 5, 5)
    for layer in trace.stream("vision"):  # R <- R + mean_h clamp(g * A, min=0) @ R
        a_bar = (layer.grad * layer.weights).clamp(min=0).mean(1)
        expected = expected + a_bar @ expected
    close(out.source_map, expected, 1e-5)
    close(out.source_map, self_relevance(trace.weights("vision"),
                                         [l.grad for l in trace.stream("vision")]))


def test_single_stream_flow_equals_the_core(close, tol):
    trace = _single_stream(12, n=4, layers=2, batch=1)
    out = compose(trace, source="vision", target="vision", method="flow", residual=0.4)
    close(out.source_map, attention_flow(trace.weights("vision"), residual=0.4), tol.FLOW)


def test_compose_calls_the_core_residual_correction(monkeypatch):
    from groundroll.rollout import fusion

    trace = _random_trace(13)
    before = compose(trace, source="encoder", target="decoder").source_map
    calls = []

    def doubled_identity(a, residual=0.5):
        calls.append(a.shape)
        eye = torch.eye(a.shape[-1], dtype=a.dtype)
        return rownorm((1 - residual) * a + 2 * residual * eye)

    monkeypatch.setattr(fusion, "residual_correct", doubled_identity)
    after = compose(trace, source="encoder", target="decoder").source_map
    assert calls and not torch.allclose(before, after)


def test_compose_calls_the_core_rollout_and_cross_update(monkeypatch):
    from groundroll.rollout import product, streams

    trace = _single_stream(14)
    seen = []
    core = product.rollout
    monkeypatch.setattr(product, "rollout",
                        lambda layers, **kw: seen.append(len(layers)) or core(layers, **kw))
    compose(trace, source="vision", target="vision")
    assert seen == [3]
    trace = _random_trace(14)
    updates = []
    cross_update = streams.rollout_cross_update
    monkeypatch.setattr(streams, "rollout_cross_update",
                        lambda *a, **kw: updates.append(1) or cross_update(*a, **kw))
    compose(trace, source="encoder", target="decoder")
    assert len(updates) == len(trace.stream("cross"))


@pytest.mark.parametrize("rule", ["relevance_self_update", "relevance_normalize",
                                  "relevance_co_update"])
def test_each_relevance_rule_has_one_implementation(monkeypatch, rule):
    # compose's relevance changes when (and because) the core rule changes
    from groundroll.rollout import relevance

    trace = _random_trace(15)
    before = compose(trace, source="encoder", target="decoder", method="relevance")
    original = getattr(relevance, rule)
    monkeypatch.setattr(relevance, rule, lambda *a, **kw: 2 * original(*a, **kw))
    after = compose(trace, source="encoder", target="decoder", method="relevance")
    assert not torch.allclose(before.source_map, after.source_map), rule


def test_relevance_chain_equals_the_public_rules_chained(close):
    trace = _random_trace(16, batch=1)

    def a_bar(layer):
        return gradient_weighted(layer.weights, layer.grad)[0]

    r_ss = torch.eye(5)
    for layer in trace.stream("encoder"):
        r_ss = relevance_self_update(r_ss, a_bar(layer))
    r_tt, r_ts = torch.eye(4), torch.zeros(4, 5)
    for self_layer, cross_layer in zip(trace.stream("decoder"), trace.stream("cross")):
        r_tt = relevance_self_update(r_tt, a_bar(self_layer))
        r_ts = relevance_self_update(r_ts, a_bar(self_layer))
        r_ts = r_ts + relevance_co_update(r_tt, r_ss, a_bar(cross_layer))
    out = compose(trace, source="encoder", target="decoder", method="relevance")
    close(out.source_map[0], r_ts, 1e-5)
    close(out.target_map[0], r_tt, 1e-5)


# ----------------------------------------------------------- methods as objects


def test_method_objects_equal_names_with_options(close):
    trace = _random_trace(17)
    for obj, name, options in [
        (Rollout(residual=0.3, heads=[1]), "rollout", {"residual": 0.3, "heads": [1]}),
        (Raw(layers=[0], top_k=2), "raw", {"layers": [0], "top_k": 2}),
        (Relevance(transpose=False), "relevance", {"transpose": False}),
    ]:
        by_object = compose(trace, source="encoder", target="decoder", method=obj)
        by_name = compose(trace, source="encoder", target="decoder", method=name, **options)
        close(by_object.source_map, by_name.source_map)
        assert by_object.method == name and by_object.settings == by_name.settings


def test_method_options_are_checked():
    trace = _random_trace(18)
    with pytest.raises(TypeError, match="go on the method object"):
        compose(trace, source="encoder", target="decoder", method=Rollout(), residual=0.2)
    with pytest.raises(TypeError, match="method 'rollout' takes no option\\(s\\)"
                       " \\['resdiual'\\]; it accepts .*'residual'"):
        compose(trace, source="encoder", target="decoder", resdiual=0.2)
    with pytest.raises(ValueError, match="per_head is not available for method='flow'"):
        compose(trace, source="encoder", target="decoder", method="flow", per_head=True)
    with pytest.raises(ValueError, match="residual must be in"):
        Rollout(residual=1.5)
    with pytest.raises(ValueError, match="weighting must be"):
        Raw(weighting="values")
    assert Norm().weighting == "norm"


def test_an_option_of_another_method_is_refused_with_the_methods_options():
    trace = _random_trace(18)
    # head_fusion is an option of rollout, not of relevance: refused, never dropped.
    with pytest.raises(TypeError) as err:
        compose(trace, source="encoder", target="decoder", method="relevance",
                head_fusion="max")
    message = str(err.value)
    assert "'relevance'" in message and "['head_fusion']" in message
    assert f"it accepts {sorted(method_options('relevance'))}" in message
    with pytest.raises(TypeError, match="method 'raw' takes no option\\(s\\) \\['residual'\\]"):
        compose(trace, source="encoder", target="decoder", method="raw", residual=0.3)
    assert "residual" not in method_options("raw")
    assert set(method_options("rollout")) >= {"head_fusion", "residual", "layers"}


def test_registry_lists_one_set_of_names():
    assert tuple(METHODS) == method_names() == ("raw", "rollout", "relevance", "norm",
                                                 "flow")
    assert "rollout" in METHODS and "magic" not in METHODS
    assert repr(METHODS) == repr(method_names())


def test_registered_method_is_usable_by_name(close):
    @dataclasses.dataclass(frozen=True)
    class LastLayer(Raw):
        """``raw`` of the last cross-attention layer only."""

        name: ClassVar[str] = "last-layer"

        def __post_init__(self):
            object.__setattr__(self, "layers", -1)
            super().__post_init__()

    register_method(LastLayer)
    try:
        assert "last-layer" in METHODS
        trace = _random_trace(19)
        out = compose(trace, source="encoder", target="decoder", method="last-layer")
        close(out.source_map, trace.stream("cross")[-1].weights.mean(1))
        with pytest.raises(ValueError, match="already registered"):
            register_method(LastLayer)
    finally:
        from groundroll.compose.methods import unregister_method

        unregister_method("last-layer")
    assert "last-layer" not in METHODS


def test_chain_for_reads_chains_the_trace_declares(close):
    g = torch.Generator().manual_seed(22)
    trace = Trace()
    trace.add(AttentionLayer(_softmax_attention(g, 1, 2, 3, 3), "self", "enc_layers",
                             "src", "src", 0))
    trace.add(AttentionLayer(_softmax_attention(g, 1, 2, 2, 3), "cross", "xattn", "tgt",
                             "src", 0))
    own = Chain("src", "tgt", source_self="enc_layers", target_cross="xattn")
    with pytest.raises(ValueError, match="no known chain"):
        chain_for(trace, "src", "tgt")
    trace.chains = (own,)
    assert chain_for(trace, "src", "tgt") == own
    out = compose(trace, source="src", target="tgt")
    expected = 0.5 * trace.stream("xattn")[0].weights.mean(1) @ rollout(
        trace.weights("enc_layers"))
    close(out.source_map, expected)


def test_chain_for_reads_chains_the_model_family_declares():
    from groundroll.families import Family, register_family, unregister_family

    trace = Trace(family="test-family")
    trace.add(AttentionLayer(torch.full((1, 1, 2, 2), 0.5), "self", "enc_layers", "src",
                             "src", 0))
    trace.add(AttentionLayer(torch.full((1, 1, 2, 2), 0.5), "cross", "xattn", "tgt", "src",
                             0))
    own = Chain("src", "tgt", source_self="enc_layers", target_cross="xattn")
    with pytest.raises(ValueError, match="no known chain"):
        chain_for(trace, "src", "tgt")

    register_family(Family("test-family", matches=lambda model: False, chains=(own,)))
    try:
        assert chain_for(trace, "src", "tgt") == own
    finally:
        unregister_family("test-family")
    with pytest.raises(ValueError, match="no known chain"):
        chain_for(trace, "src", "tgt")

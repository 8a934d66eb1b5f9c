"""Composer end to end on tiny random models of the adapters' test configs."""

import pytest
import torch

from groundroll.adapters import capture
from groundroll.compose import compose

from helpers.tiny_models import build

CHAINS = {
    "marian": ("encoder", "decoder"),
    "t5": ("encoder", "decoder"),
    "bart": ("encoder", "decoder"),
    "open_clip_coca": ("vision", "decoder"),
    "blip": ("vision", "text"),
}


@pytest.fixture(scope="module", params=sorted(CHAINS))
def captured(request):
    tiny = build(request.param)
    with capture(tiny.model, grads=True, values=True) as trace:
        out = tiny()
        tiny.score(out).backward()
    return request.param, trace


@pytest.mark.parametrize("method", ["raw", "rollout", "relevance", "norm"])
def test_every_method_runs_end_to_end(captured, method, close, tol):
    family, trace = captured
    source, target = CHAINS[family]
    out = compose(trace, source=source, target=target, method=method)
    batch = trace.stream(trace.streams[0])[0].batch
    n_src = trace.tokens[source].length
    assert out.source_map.shape[0] == batch and out.source_map.shape[-1] == n_src
    assert torch.isfinite(out.source_map).all()
    assert (out.source_map >= 0).all()
    if method == "rollout":
        total = out.source_map.sum(-1) + out.target_map.sum(-1)
        close(total, torch.ones_like(total), tol.MODEL)


def test_flow_runs_on_a_tiny_seq2seq(close, tol):
    tiny = build("marian")
    inputs = {k: v[:1, :4] if torch.is_tensor(v) and v.dim() == 2 else v
              for k, v in tiny.inputs.items()}
    with capture(tiny.model) as trace:
        tiny.model(**inputs)
    flow = compose(trace, source="encoder", target="decoder", method="flow")
    roll = compose(trace, source="encoder", target="decoder")
    assert flow.source_map.shape == roll.source_map.shape
    total = flow.source_map.sum(-1) + flow.target_map.sum(-1)
    close(total, torch.ones_like(total), tol.FLOW)


def _clamp_mean(layer):
    return (layer.grad * layer.weights).clamp(min=0).mean(1).detach()


def _bar(r):
    eye = torch.eye(r.shape[-1])
    d = r - eye
    s = d.sum(-1, keepdim=True)
    return torch.where(s == 0, torch.zeros_like(d), d / torch.where(s == 0, 1, s)) + eye


def test_relevance_equals_a_direct_transcription_of_the_rules(close, tol):
    tiny = build("marian")
    with capture(tiny.model, grads=True) as trace:
        out = tiny()
        tiny.score(out).backward()
    got = compose(trace, source="encoder", target="decoder", method="relevance")
    for b in range(got.source_map.shape[0]):
        enc = [_clamp_mean(l)[b] for l in trace.stream("encoder")]
        dec = [_clamp_mean(l)[b] for l in trace.stream("decoder")]
        cross = [_clamp_mean(l)[b] for l in trace.stream("cross")]
        s, t = enc[0].shape[0], dec[0].shape[0]
        r_ss = torch.eye(s)
        for a in enc:
            r_ss = r_ss + a @ r_ss
        r_tt, r_ts = torch.eye(t), torch.zeros(t, s)
        for a_self, a_cross in zip(dec, cross):
            r_tt = r_tt + a_self @ r_tt
            r_ts = r_ts + a_self @ r_ts
            r_ts = r_ts + _bar(r_tt).T @ a_cross @ _bar(r_ss)
        close(got.source_map[b], r_ts, tol.MODEL, rtol=1e-5)
        close(got.target_map[b], r_tt, tol.MODEL, rtol=1e-5)

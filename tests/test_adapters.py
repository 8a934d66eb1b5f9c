"""Conformance of every adapter family on tiny random models.

Two paths that must agree: captured weights against the model's own
``output_attentions=True`` (Hugging Face eager) or a hand recomputation from q and k
(``nn.MultiheadAttention``); captured gradients against ``torch.autograd.grad`` of those
reference tensors.
"""

from __future__ import annotations

import math

import pytest
import torch

from groundroll.adapters import (Adapter, Site, adapter_for, capture, register_adapter,
                                 supported_models)
from groundroll.rollout import rollout
from helpers import tiny_models as tm

ATOL = 1e-5  # weights, outputs, gradients, value norms
RTOL = 1e-4

FAMILIES = sorted(tm.FAMILIES)
MHA_FAMILIES = ("open_clip", "open_clip_coca")


def close(a, b, what=""):
    assert a.shape == b.shape, f"{what}: {tuple(a.shape)} vs {tuple(b.shape)}"
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert torch.allclose(a, b, atol=ATOL, rtol=RTOL), f"{what}: max abs error {err:.3g}"


def tensors(out):
    """All tensors of a model output, in a stable order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in out for t in tensors(out[k])]
    if isinstance(out, (tuple, list)):
        return [t for x in out for t in tensors(x)]
    return []


def hook_state(model):
    return {name: (len(m._forward_hooks), len(m._forward_pre_hooks),
                   len(m._forward_hooks_with_kwargs), len(m._forward_pre_hooks_with_kwargs))
            for name, m in model.named_modules()}


def attn_settings(model):
    configs = {id(m.config): m.config for m in model.modules()
               if hasattr(getattr(m, "config", None), "_attn_implementation_internal")}
    return sorted((k, str(c._attn_implementation_internal)) for k, c in configs.items())


# ----------------------------------------------------------------- references

def mha_probs(module: torch.nn.MultiheadAttention, query, key, attn_mask=None):
    """``[batch, head, query, key]`` softmax(q k^T / sqrt(d) + mask) recomputed by hand."""
    if not module.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    e, h = module.embed_dim, module.num_heads
    if module._qkv_same_embed_dim:
        wq, wk = module.in_proj_weight[:e], module.in_proj_weight[e:2 * e]
    else:
        wq, wk = module.q_proj_weight, module.k_proj_weight
    bq, bk = module.in_proj_bias[:e], module.in_proj_bias[e:2 * e]
    q = torch.nn.functional.linear(query, wq, bq)
    k = torch.nn.functional.linear(key, wk, bk)
    b, nq, nk = q.shape[0], q.shape[1], k.shape[1]
    q = q.view(b, nq, h, e // h).transpose(1, 2)
    k = k.view(b, nk, h, e // h).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(e // h)
    if attn_mask is not None:
        scores = scores + attn_mask.reshape(-1, h, nq, nk) if attn_mask.dim() == 3 \
            else scores + attn_mask
    return scores.softmax(-1)


def mha_replacing_hooks(model, names):
    """Test hooks that recompute each MHA by hand and return its output, so that the
    recomputed probabilities are what the rest of the model uses. Returns (handles,
    probabilities by module name)."""
    probs, handles = {}, []
    modules = dict(model.named_modules())
    for name in names:
        module = modules[name]

        def hook(mod, args, kwargs, output, name=name):
            query, key, value = (list(args) + [kwargs.get(k) for k in ("query", "key", "value")
                                               if k in kwargs])[:3]
            mask = kwargs.get("attn_mask")
            a = mha_probs(mod, query, key, mask)
            if not mod.batch_first:
                value = value.transpose(0, 1)
            e, h = mod.embed_dim, mod.num_heads
            wv = mod.in_proj_weight[2 * e:] if mod._qkv_same_embed_dim else mod.v_proj_weight
            v = torch.nn.functional.linear(value, wv, mod.in_proj_bias[2 * e:])
            v = v.view(v.shape[0], v.shape[1], h, e // h).transpose(1, 2)
            ctx = (a @ v).transpose(1, 2).reshape(v.shape[0], -1, e)
            out = mod.out_proj(ctx)
            if not mod.batch_first:
                out = out.transpose(0, 1)
            probs[name] = a
            return out, a
        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    return handles, probs


def _blip_reference(tiny):
    model = tiny.model
    vision = model.vision_model(pixel_values=tiny.inputs["pixel_values"], output_attentions=True)
    text = model.text_encoder(input_ids=tiny.inputs["input_ids"],
                              attention_mask=tiny.inputs["attention_mask"],
                              encoder_hidden_states=vision[0], output_attentions=True)
    return {"vision": vision.attentions, "text": text.attentions,
            "text_cross": text.cross_attentions}, model.itm_head(text.last_hidden_state[:, 0])[:, 1].sum()


HF_FIELDS = {
    "encoder": ("attentions", "encoder_attentions"),
    "decoder": ("decoder_attentions",),
    "cross": ("cross_attentions",),
}


def hf_reference(tiny):
    """Attention tensors by stream from the model's own ``output_attentions=True``
    (eager) and the score they lead to."""
    tiny.model.set_attn_implementation("eager")
    if tiny.name == "blip":
        return _blip_reference(tiny)
    out = tiny(output_attentions=True)
    refs = {}
    if hasattr(out, "vision_model_output"):
        refs["vision"] = out.vision_model_output.attentions
        refs["text"] = out.text_model_output.attentions
    for stream, fields in HF_FIELDS.items():
        for field in fields:
            if getattr(out, field, None) is not None:
                refs[stream] = getattr(out, field)
                break
    return refs, tiny.score(out)


def reference(name, *, grad=False):
    """(weights by stream, score) computed without groundroll."""
    tiny = tm.build(name)
    with torch.set_grad_enabled(grad):
        if name in MHA_FAMILIES or name == "siglip":
            site_names = names_of(name, "mha")
            handles, probs = mha_replacing_hooks(tiny.model, site_names)
            try:
                if name == "siglip":
                    refs, score = hf_reference(tiny)
                else:
                    refs, score = {}, tiny.score(tiny())
            finally:
                for h in handles:
                    h.remove()
            adapter = adapter_for(tiny.model)
            by_stream = {}
            for module_name in site_names:
                by_stream.setdefault(_stream_of(adapter, module_name), []).append(probs[module_name])
            refs = {**refs, **by_stream}
            return refs, score
        return hf_reference(tiny)


def names_of(name, reader):
    tiny = tm.build(name)
    adapter = adapter_for(tiny.model)
    import re
    return [n for n, _ in tiny.model.named_modules()
            if any(s.reader == reader and re.search(s.pattern, n) for s in adapter.sites)]


def _stream_of(adapter, module_name):
    import re
    return next(s.stream for s in adapter.sites if re.search(s.pattern, module_name))


# ----------------------------------------------------------------- conformance

@pytest.fixture(scope="module", params=FAMILIES)
def captured(request):
    tiny = tm.build(request.param)
    before_hooks, before_settings = hook_state(tiny.model), attn_settings(tiny.model)
    with torch.no_grad():
        plain = tiny()
        with capture(tiny.model) as trace:
            out = tiny()
    return dict(tiny=tiny, trace=trace, plain=plain, out=out, hooks=before_hooks,
                settings=before_settings)


def test_streams_and_shapes(captured):
    tiny, trace = captured["tiny"], captured["trace"]
    assert set(trace.layers) == set(tiny.streams)
    for layer in trace:
        q = trace.tokens[layer.query_stream]
        k = trace.tokens[layer.key_stream]
        assert layer.queries == q.length and layer.keys == k.length, layer.module_name
        assert layer.batch == tm.BATCH
    for stream in tiny.streams:
        indices = [layer.index for layer in trace.stream(stream)]
        assert indices == list(range(len(indices)))


def test_rows_sum_to_one(captured):
    for layer in captured["trace"]:
        close(layer.weights.sum(-1), torch.ones(layer.weights.shape[:-1]), layer.module_name)


def test_outputs_unchanged(captured):
    for a, b in zip(tensors(captured["plain"]), tensors(captured["out"]), strict=True):
        close(a, b, "output")


def test_no_hooks_left_and_settings_restored(captured):
    model = captured["tiny"].model
    assert hook_state(model) == captured["hooks"]
    assert attn_settings(model) == captured["settings"]


def test_weights_match_reference(captured):
    name, trace = captured["tiny"].name, captured["trace"]
    with torch.no_grad():
        refs, _ = reference(name)
    for stream in captured["tiny"].streams:
        got = trace.weights(stream)
        want = refs[stream]
        assert len(got) == len(want), stream
        for i, (g, w) in enumerate(zip(got, want)):
            close(g, w, f"{stream}[{i}]")


@pytest.mark.parametrize("name", FAMILIES)
def test_gradients_match_autograd(name):
    refs, ref_score = reference(name, grad=True)
    streams = tm.build(name).streams
    flat = [t for s in streams for t in refs[s]]
    grads = iter(torch.autograd.grad(ref_score, flat, allow_unused=True))
    want = {s: [next(grads) for _ in refs[s]] for s in streams}
    tiny = tm.build(name)
    with capture(tiny.model, grads=True) as trace:
        score = tiny.score(tiny())
    score.backward()
    for stream in streams:
        grads = trace.grads(stream)
        for i, (g, w) in enumerate(zip(grads, want[stream], strict=True)):
            assert w is not None, f"reference {stream}[{i}] unused"
            close(g, w, f"grad {stream}[{i}]")


@pytest.mark.parametrize("name", ["open_clip", "bert"])
def test_cleanup_after_exception(name):
    tiny = tm.build(name)
    hooks, settings = hook_state(tiny.model), attn_settings(tiny.model)
    with pytest.raises(RuntimeError, match="inside the block"):
        with capture(tiny.model):
            tiny()
            raise RuntimeError("inside the block")
    assert hook_state(tiny.model) == hooks and attn_settings(tiny.model) == settings

    # An exception raised inside the model call, after some layers ran.
    last = list(tiny.model.modules())[-1]

    def fail(*_):
        raise RuntimeError("inside the model")
    handle = last.register_forward_hook(fail)
    hooks = hook_state(tiny.model)
    try:
        with pytest.raises(RuntimeError, match="inside the model"):
            with capture(tiny.model):
                tiny()
    finally:
        handle.remove()
    hooks = {k: v for k, v in hooks.items()}
    assert attn_settings(tiny.model) == settings
    assert hook_state(tiny.model) == {k: (v[0] - (k == _name(tiny.model, last)), *v[1:])
                                      for k, v in hooks.items()}


def _name(model, module):
    return next(n for n, m in model.named_modules() if m is module)


@pytest.mark.parametrize("name,stream", [("bert", "encoder"), ("marian", "encoder"),
                                         ("marian", "cross")])
def test_padded_batch_equals_single_examples(name, stream):
    tiny = tm.build(name)
    with torch.no_grad(), capture(tiny.model) as trace:
        tiny()
    q_stream = trace.stream(stream)[0].query_stream
    k_stream = trace.stream(stream)[0].key_stream
    q_len = trace.tokens[q_stream].lengths()
    k_len = trace.tokens[k_stream].lengths()
    assert trace.tokens[k_stream].mask is not None
    for b in range(tm.BATCH):
        single = {}
        for key, value in tiny.inputs.items():
            n = int((k_len if not key.startswith("decoder") else q_len)[b]) \
                if stream == "cross" else int(k_len[b])
            if key.startswith("decoder") and stream != "cross":
                n = value.shape[1] - 2 * b
            single[key] = value[b:b + 1, :n]
        with torch.no_grad(), capture(tiny.model) as alone:
            tiny.model(**single)
        for got, want in zip(trace.weights(stream), alone.weights(stream), strict=True):
            nq, nk = want.shape[-2:]
            close(got[b:b + 1, :, :nq, :nk], want, f"{name} {stream} example {b}")
            assert got[b, :, :, nk:].abs().sum() <= ATOL  # padded keys get no weight


def test_unsupported_model_lists_families():
    with pytest.raises(TypeError) as info:
        adapter_for(torch.nn.Linear(2, 2))
    message = str(info.value)
    for family in supported_models():
        assert family in message
    assert "register_adapter(Adapter(" in message


def test_register_adapter_for_another_family():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4,
                                           hidden_dim=37, max_position_embeddings=32)
    model = transformers.DistilBertModel(config).eval()
    ids = tm.text_ids(2, 7)
    register_adapter(Adapter(
        name="distilbert", model_types=("distilbert",), switch="hf_eager",
        sites=(Site(r"(^|\.)layer\.\d+\.attention$", "encoder"),)))
    try:
        with torch.no_grad(), capture(model) as trace:
            model(input_ids=ids)
        model.set_attn_implementation("eager")
        want = model(input_ids=ids, output_attentions=True).attentions
        for g, w in zip(trace.weights("encoder"), want, strict=True):
            close(g, w, "distilbert")
    finally:
        from groundroll.families import unregister_family
        unregister_family("distilbert")


def test_streams_restrict_hooks():
    tiny = tm.build("open_clip")
    seen = {}
    with torch.no_grad(), capture(tiny.model, streams="vision") as trace:
        seen = hook_state(tiny.model)
        tiny()
    assert list(trace.layers) == ["vision"]
    text_blocks = [n for n, v in seen.items() if n.startswith("transformer.") and any(v)]
    assert text_blocks == []
    with pytest.raises(ValueError, match="unknown stream"):
        with capture(tiny.model, streams="nope"):
            pass


@pytest.mark.parametrize("name,options", [
    ("open_clip", {"rows": [0], "head_fusion": "max"}),
    ("open_clip", {"vision": {"residual": 0.3, "start_layer": 1}}),
    ("bert", {"head_fusion": "mean", "discard_ratio": 0.2}),
    ("marian", {"decoder": {"rows": [0, 2]}}),
])
def test_streaming_reduce_equals_capture_then_rollout(name, options):
    tiny = tm.build(name)
    with torch.no_grad(), capture(tiny.model) as full:
        tiny()
    with torch.no_grad(), capture(tiny.model, reduce=options) as streamed:
        tiny()
    per_stream = (options if not set(options) <= {"rows", "head_fusion", "residual",
                                                  "discard_ratio", "start_layer"}
                  else {s: options for s in tiny.streams
                        if full.stream(s)[0].kind == "self"})
    for stream, opts in per_stream.items():
        assert stream not in streamed.layers
        close(streamed.reduced[stream], rollout(full.weights(stream), **opts), stream)


def test_reduce_takes_prune_threshold_and_refuses_unknown_names():
    tiny = tm.build("bert")
    with torch.no_grad(), capture(tiny.model) as full:
        tiny()
    expected = rollout(full.weights("encoder"), prune_threshold=0.06)
    assert not torch.allclose(expected, rollout(full.weights("encoder")))  # pruning acts
    with torch.no_grad(), capture(tiny.model, reduce={"prune_threshold": 0.06}) as streamed:
        tiny()
    close(streamed.reduced["encoder"], expected)
    with pytest.raises(ValueError, match=r"unknown rollout option\(s\) \['threshold'\]"):
        with capture(tiny.model, reduce={"encoder": {"threshold": 0.06}}):
            pass
    with pytest.raises(ValueError, match="'threshold' is neither a captured stream nor a"
                                         " rollout option.*prune_threshold"):
        with capture(tiny.model, reduce={"threshold": 0.06, "prune_threshold": 0.1}):
            pass


def test_reduce_rejects_cross_and_grads():
    tiny = tm.build("marian")
    with pytest.raises(ValueError, match="cross-attention"):
        with capture(tiny.model, reduce={"cross": {}}):
            pass
    with pytest.raises(ValueError, match="grads"):
        with capture(tiny.model, reduce={"rows": [0]}, grads=True):
            pass


def test_value_norms_mha_by_hand():
    tiny = tm.build("open_clip")
    inputs = {}
    block = tiny.model.visual.transformer.resblocks[1].attn
    def keep_value(module, args, kwargs):
        inputs["x"] = (list(args) + [kwargs.get("value")])[2]
    handle = block.register_forward_pre_hook(keep_value, with_kwargs=True)
    try:
        with torch.no_grad(), capture(tiny.model, values=True) as trace:
            tiny()
    finally:
        handle.remove()
    x = inputs["x"]
    e, h = block.embed_dim, block.num_heads
    v = x @ block.in_proj_weight[2 * e:].T + block.in_proj_bias[2 * e:]
    want = torch.stack([
        (v[..., i * e // h:(i + 1) * e // h] @ block.out_proj.weight[:, i * e // h:(i + 1) * e // h].T
         ).norm(dim=-1) for i in range(h)], 1)
    close(trace.stream("vision")[1].value_norms, want, "mha value norms")


def test_value_norms_hf_by_hand():
    tiny = tm.build("bart")
    with torch.no_grad(), capture(tiny.model, values=True) as trace:
        out = tiny(output_hidden_states=True)
    layer = tiny.model.model.decoder.layers[0].encoder_attn
    kv = out.encoder_last_hidden_state
    v = layer.v_proj(kv)
    d = v.shape[-1] // 4
    want = torch.stack([(v[..., i * d:(i + 1) * d] @ layer.out_proj.weight[:, i * d:(i + 1) * d].T
                         ).norm(dim=-1) for i in range(4)], 1)
    close(trace.stream("cross")[0].value_norms, want, "bart cross value norms")
    enc = tiny.model.model.encoder.layers[1].self_attn
    v = enc.v_proj(out.encoder_hidden_states[1])  # BART is post-norm
    want = torch.stack([(v[..., i * d:(i + 1) * d] @ enc.out_proj.weight[:, i * d:(i + 1) * d].T
                         ).norm(dim=-1) for i in range(4)], 1)
    close(trace.stream("encoder")[1].value_norms, want, "bart encoder value norms")


def test_open_clip_tokens_non_square_grid():
    tiny = tm.open_clip_clip(image_size=(32, 48))
    with torch.no_grad(), capture(tiny.model) as trace:
        tiny()
    vision, text = trace.tokens["vision"], trace.tokens["text"]
    assert vision.grid == (4, 6) and vision.prefix == 1 and vision.length == 25
    assert trace.stream("vision")[0].keys == 25
    ids = tiny.inputs["text"]
    assert torch.equal(text.special["eot"], ids.argmax(-1))
    assert torch.equal(text.mask, ids != 0) and text.causal
    assert all(layer.causal for layer in trace.stream("text"))


def test_deit_counts_two_prefix_tokens():
    tiny = tm.build("deit")
    with torch.no_grad(), capture(tiny.model) as trace:
        tiny()
    assert trace.tokens["encoder"].prefix == 2 and trace.tokens["encoder"].grid == (4, 4)


def test_coca_token_streams():
    tiny = tm.build("open_clip_coca")
    with torch.no_grad(), capture(tiny.model) as trace:
        tiny()
    pool = trace.stream("pool")[0]
    assert (pool.query_stream, pool.key_stream) == ("pool_queries", "vision")
    cross = trace.stream("decoder_cross")[0]
    assert cross.keys == trace.tokens["pool_out"].length
    queries = trace.tokens["pool_queries"]
    assert queries.length - queries.prefix == trace.tokens["pool_out"].length
    text = trace.tokens["text"]
    assert text.length == tm.CONTEXT + 1 and int(text.special["cls"][0]) == tm.CONTEXT


def test_tokenizer_strings():
    class Vocab:
        def convert_ids_to_tokens(self, ids):
            return [f"t{i}" for i in ids]
    tiny = tm.build("bert")
    with torch.no_grad(), capture(tiny.model, tokenizer=Vocab()) as trace:
        tiny()
    strings = trace.tokens["encoder"].strings
    assert strings[0][:2] == [f"t{i}" for i in tiny.inputs["input_ids"][0, :2].tolist()]


def test_training_mode_warns_about_dropout():
    tiny = tm.build("bart")
    tiny.model.train()
    try:
        with pytest.warns(UserWarning, match="eval"):
            with torch.no_grad(), capture(tiny.model):
                tiny()
    finally:
        tiny.model.eval()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad(), capture(tiny.model):
            tiny()

"""Capture of models that declare no attention modules, from the attention they return.

Held-out tiny configs (MPNet, DeBERTa-v2, XLNet, RoFormer, FSMT, ProphetNet, LongT5,
Pegasus-X, MVP) checked against the model's own ``output_attentions=True`` output:
captured exactly under the stream its key names, outputs unchanged (ModelOutput and
``return_dict=False`` tuples), nothing left switched after an exception, gradients where
a gradient method asks for them, and ``gr.align`` end to end on the seq2seq families
with their own subword conventions.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import groundroll as gr  # noqa: E402
from groundroll.adapters import adapter_for, capture  # noqa: E402
from groundroll.adapters import conformance  # noqa: E402
from groundroll.adapters.capture import _SoftmaxRecorder  # noqa: E402
from helpers import tiny_seq2seq as ts  # noqa: E402

ATOL = 1e-5

#: model type -> (output key, stream) pairs the capture must fill from what it returns.
HELD_OUT = {
    "mpnet": [("attentions", "encoder")],
    "deberta-v2": [("attentions", "encoder")],
    "xlnet": [("attentions", "encoder")],
    "roformer": [("attentions", "encoder")],
    "fsmt": [("encoder_attentions", "encoder"), ("decoder_attentions", "decoder"),
             ("cross_attentions", "cross")],
    "mvp": [("encoder_attentions", "encoder"), ("decoder_attentions", "decoder"),
            ("cross_attentions", "cross")],
    "longt5": [("encoder_attentions", "encoder_blocks"), ("decoder_attentions", "decoder"),
               ("cross_attentions", "cross")],
    "prophetnet": [("decoder_attentions", "decoder"),
                   ("decoder_ngram_attentions", "decoder_ngram_blocks")],
}


def _reference(model, inputs):
    """The model's own eager ``output_attentions=True`` output."""
    saved = [(c, c._attn_implementation_internal) for c in conformance._configs(model)]
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(**inputs, output_attentions=True)
    finally:
        for config, value in saved:
            config._attn_implementation_internal = value


def _state(model):
    return conformance._hook_state(model), conformance._settings(model)


@pytest.mark.parametrize("model_type", sorted(HELD_OUT))
def test_returned_attention_is_captured_exactly_by_stream(model_type):
    model, inputs = conformance.tiny_hf(model_type)
    assert adapter_for(model).returned
    reference = _reference(model, inputs)
    before = _state(model)
    with torch.no_grad():
        plain = model(**inputs)
    with torch.no_grad(), capture(model) as trace:
        out = model(**inputs)
    assert _state(model) == before
    assert set(out.keys()) == set(plain.keys())          # no attention fields added
    for key in plain.keys():
        for a, b in zip(conformance._tensors(plain[key]), conformance._tensors(out[key])):
            assert torch.allclose(a, b, atol=1e-4), key
    for key, stream in HELD_OUT[model_type]:
        want = [t.flatten(1, -3) if t.dim() > 4 else t for t in reference[key]]
        got = trace.weights(stream)
        assert len(got) == len(want), (key, stream)
        for layer, (g, w) in enumerate(zip(got, want)):
            assert torch.allclose(g, w, atol=ATOL), (key, layer)
        assert [l.index for l in trace.stream(stream)] == list(range(len(want)))


def test_prophetnet_scores_become_probabilities_and_cross_is_split():
    model, inputs = conformance.tiny_hf("prophetnet")
    reference = _reference(model, inputs)
    with torch.no_grad(), capture(model) as trace:
        model(**inputs)
    decoder_len = inputs["decoder_input_ids"].shape[1]
    for layer, scores in enumerate(reference["cross_attentions"]):
        probs = scores.softmax(-1)                 # ProphetNet reports pre-softmax scores
        main = trace.stream("cross")[layer].weights
        ngram = trace.stream("cross_ngram")[layer].weights
        assert main.shape[-2] == decoder_len
        assert torch.allclose(torch.cat([main, ngram], -2), probs, atol=ATOL)
        assert torch.allclose(main.sum(-1), torch.ones(()), atol=ATOL)
    cross = trace.stream("cross")[0]
    assert (cross.query_stream, cross.key_stream) == ("decoder", "encoder")
    assert torch.allclose(trace.weights("encoder")[0],
                          reference["encoder_attentions"][0].softmax(-1), atol=ATOL)


def test_caller_asking_for_attentions_and_tuple_outputs_are_served_unchanged():
    model, inputs = conformance.tiny_hf("fsmt")
    with torch.no_grad():
        plain_tuple = model(**inputs, return_dict=False)
        asked = _reference(model, inputs)
    with torch.no_grad(), capture(model) as trace:
        got_tuple = model(**inputs, return_dict=False)
        got_asked = model(**inputs, output_attentions=True)
    assert isinstance(got_tuple, tuple) and len(got_tuple) == len(plain_tuple)
    for a, b in zip(conformance._tensors(plain_tuple), conformance._tensors(got_tuple)):
        assert torch.allclose(a, b, atol=1e-4)
    assert len(got_asked.cross_attentions) == len(asked.cross_attentions)
    assert trace.calls("cross") == 2


def test_streams_selects_what_is_recorded():
    model, inputs = conformance.tiny_hf("prophetnet")
    with torch.no_grad(), capture(model, streams="cross") as trace:
        model(**inputs)
    assert trace.streams == ["cross"]
    assert len(trace.weights("cross")) == model.config.num_decoder_layers
    with torch.no_grad(), capture(model, streams=["cross_ngram", "encoder"]) as trace:
        model(**inputs)
    assert sorted(trace.streams) == ["cross_ngram", "encoder"]


def test_nothing_left_switched_after_an_exception():
    model, inputs = conformance.tiny_hf("mpnet")
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model):
            model(**inputs)
            raise RuntimeError("boom")
    assert _state(model) == before

    def fail(module, args, output):
        raise RuntimeError("inside the forward")

    # a forward that raises half-way through the model, under the capture
    handle = model.encoder.layer[1].register_forward_hook(fail)
    before = _state(model)
    try:
        with pytest.raises(RuntimeError, match="inside the forward"):
            with capture(model):
                model(**inputs)
        assert _state(model) == before
    finally:
        handle.remove()
    with torch.no_grad():
        after = model(**inputs)
    assert after.attentions is None                      # no output_attentions left on
    with torch.no_grad(), capture(model) as trace:       # and the next capture reads
        model(**inputs)
    assert len(trace.weights("encoder")) == model.config.num_hidden_layers


def test_values_are_refused_with_a_reason():
    model, inputs = conformance.tiny_hf("roformer")
    with pytest.raises(ValueError, match="values=True.*no value projection"):
        with capture(model, values=True):
            pass
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _classifier(model_type):
    import transformers

    config = conformance.tiny_config(model_type)
    config.num_labels = 3
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    return model, conformance.tiny_inputs(model)


def test_gradients_on_a_bert_style_classifier_match_autograd():
    model, inputs = _classifier("mpnet")
    with torch.enable_grad(), capture(model, grads=True) as trace:
        logits = model(**inputs).logits
        logits[:, 1].sum().backward()
    model.zero_grad()
    model.set_attn_implementation("eager")
    out = model(**inputs, output_attentions=True)
    want = torch.autograd.grad(out.logits[:, 1].sum(), out.attentions)
    layers = trace.stream("encoder")
    assert all(l.grad is not None for l in layers)
    for layer, w in zip(layers, want):
        assert torch.allclose(layer.grad, w, atol=1e-6)
        assert float(layer.grad.abs().sum()) > 0
    from groundroll.compose import compose

    relevance = compose(trace, source="encoder", target="encoder", method="relevance")
    assert torch.isfinite(relevance.source_map).all()


def test_xlnet_gradient_reaches_the_probabilities_behind_its_returned_copy():
    """XLNet returns ``einsum("bnij->ijbn", probs).permute(2, 3, 0, 1).contiguous()``,
    a copy nothing uses:
    the gradient must be that of the probabilities it multiplied with the values."""
    model, inputs = _classifier("xlnet")
    with torch.enable_grad(), capture(model, grads=True) as trace:
        model(**inputs).logits[:, 0].sum().backward()
    model.zero_grad()
    recorder = _SoftmaxRecorder()   # every 4-axis softmax, in order
    with recorder:
        logits = model(**inputs).logits
    want = torch.autograd.grad(logits[:, 0].sum(), recorder.found)
    layers = trace.stream("encoder")
    assert len(layers) == len(want) == model.config.n_layer
    for layer, w in zip(layers, want):
        assert layer.grad is not None
        # [batch, head, query, key] probabilities, returned through einsum("bnij->ijbn")
        # and permute(2, 3, 0, 1): the two rearrangements cancel
        assert torch.allclose(layer.grad, w, atol=1e-6)
        assert float(layer.grad.abs().sum()) > 0


def test_prophetnet_gradients_reach_the_probabilities_of_its_reported_scores():
    """ProphetNet reports pre-softmax scores for its encoder: the capture reads the
    softmax result the model used (kept by autograd), so gradients reach it."""
    import transformers

    config = conformance.tiny_config("prophetnet")
    torch.manual_seed(0)
    model = transformers.ProphetNetForConditionalGeneration(config).eval()
    _, inputs = conformance.tiny_hf("prophetnet")
    with torch.enable_grad(), capture(model, grads=True) as trace:
        model(**inputs).logits.log_softmax(-1)[..., 7].sum().backward()
    model.zero_grad()
    recorder = _SoftmaxRecorder()   # every 4-axis softmax, in order
    with recorder:
        logits = model(**inputs).logits
    encoder = trace.stream("encoder")
    # the encoder's softmaxes come first, one per layer
    want = torch.autograd.grad(logits.log_softmax(-1)[..., 7].sum(),
                               recorder.found[:len(encoder)])
    for layer, probs, w in zip(encoder, recorder.found, want):
        assert layer.grad is not None
        assert torch.allclose(layer.weights, probs, atol=ATOL)   # probabilities, not scores
        assert torch.allclose(layer.grad, w, atol=1e-6)
        assert float(layer.grad.abs().sum()) > 0
    assert all(l.grad is not None for l in trace.stream("cross_ngram"))


# --------------------------------------------------------------------------- alignment

@pytest.fixture(scope="module")
def pairs():
    return ts.held_out(2)


@pytest.mark.parametrize("model_type", ts.FAMILIES)
def test_align_end_to_end(model_type, pairs):
    """``gr.align`` on each family with its own subword convention: word matrices
    equal the model's own cross-attention (mean over layers and heads) summed over
    source subwords and averaged over target subwords."""
    from groundroll.alignment.subwords import encode_words, word_matrix

    bundle = ts.build(model_type)
    srcs, tgts = [p.src for p in pairs], [p.tgt for p in pairs]
    got = gr.align(srcs, tgts, model=bundle, method="raw")
    tok = bundle.tokenizer
    for a, src, tgt in zip(got, srcs, tgts):
        s = encode_words(tok, src.split())
        t = encode_words(tok, tgt.split(), target=True)
        assert a.matrix.shape == (len(t.words), len(s.words))
        # the tokenizer's convention reaches words: every word has its subwords
        assert {w for w in s.word_ids if w is not None} == set(range(len(s.words)))
        decoder = [bundle.model.config.decoder_start_token_id] + t.ids[:-1]
        out = _reference(bundle.model, dict(input_ids=torch.tensor([s.ids]),
                                            decoder_input_ids=torch.tensor([decoder])))
        cross = torch.stack([c[:, :, :len(decoder)] for c in out.cross_attentions])
        if bool((cross < 0).any()):
            cross = cross.softmax(-1)
        subword = cross.mean((0, 2))[0].numpy()          # [target tokens, source tokens]
        want = word_matrix(subword, t.word_ids, s.word_ids, n_tgt=len(t.words),
                           n_src=len(s.words))
        assert abs(a.matrix - want).max() < 1e-5
        assert all(0 <= i < len(s.words) and 0 <= j < len(t.words) for i, j in a.links)
    composed = gr.align(srcs[0], tgts[0], model=bundle, method="rollout")
    assert composed.matrix.shape == got[0].matrix.shape
    assert (composed.matrix >= 0).all() and (composed.matrix.sum(1) <= 1 + 1e-6).all()


def test_fsmt_suffix_words_come_from_end_of_word_markers():
    from groundroll.alignment.subwords import word_ids_from_markers

    tok = ts.tokenizer("suffix")
    words = ts.held_out(1)[0].src.split()
    ids = tok(" ".join(words))["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert any(p.endswith("</w>") for p in pieces)
    special = [i in tok.all_special_ids for i in ids]
    by_markers = word_ids_from_markers(pieces, special)
    from groundroll.alignment.subwords import encode_words

    assert encode_words(tok, words).word_ids == by_markers


@pytest.mark.parametrize("model_type", ["bert", "xlnet", "qwen2_vl"])
def test_gradient_hooks_do_not_keep_dropped_layers_alive(model_type):
    # A hook in the graph of a layer's own weights must not hold that layer strongly
    # (a cycle through autograd that the collector cannot see). Covered: plain weights
    # (BERT), a rearranged copy (XLNet), per-image chunks (Qwen2-VL's vision tower).
    import gc
    import weakref

    model, inputs = conformance.tiny_hf(model_type)
    with capture(model, grads=True) as trace:
        out = model(**inputs)
    score = out[0].float().pow(2).sum()
    score.backward()
    assert all(layer.grad is not None for layer in trace)
    refs = [weakref.ref(layer) for layer in trace]
    del trace, out, score
    gc.collect()
    assert [r for r in refs if r() is not None] == []

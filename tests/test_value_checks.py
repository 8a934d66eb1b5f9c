"""Map sources and composition paths against their rules worked out by hand in the test:
SigLIP relevance through the pooling head from the model's own attentions and autograd
gradients, CoCa and BLIP cross maps (``raw``, ``norm``, ``rollout``, ``relevance``) from
the captured matrices. Each reference multiplies matrices out one at a time in float64
and calls nothing from ``groundroll.rollout`` or ``groundroll.compose``.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from groundroll.adapters import capture
from groundroll.grounding import cross_maps, relevance_maps, resolve_model

from test_grounding import GRID, _hf_eager_double, _image, _rollout_by_hand, _tilde
from test_grounding_support import tiny_bundle

PROMPTS = ["a red circle", "blue star"]
CAPTION = "red circle star"


def _eye(n):
    return torch.eye(n, dtype=torch.float64)


def _rownorm(m):
    """Rows divided by their sum; a row summing to zero stays zero."""
    total = m.sum(-1, keepdim=True)
    return torch.where(total == 0, torch.zeros_like(m), m / torch.where(total == 0, 1, total))


def _bar(r):
    """Chefer's ``R̄ = (R - I) / rowsum(R - I) + I``."""
    eye = _eye(r.shape[-1])
    return _rownorm(r - eye) + eye


def _a_bar(weights, grad):
    """``mean_h clamp(dS/dA * A, min=0)`` of one ``[1, H, Q, K]`` layer -> ``[Q, K]``."""
    return (grad.double() * weights.double()).clamp(min=0).mean(1)[0]


def _self_relevance(layers):
    """``R = I``, then ``R += Ā R`` per ``(weights, grad)`` layer, first layer first."""
    r = None
    for weights, grad in layers:
        a = _a_bar(weights, grad)
        r = _eye(a.shape[-1]) if r is None else r
        r = r + a @ r
    return r


def _sharpened(family, *, seed, vision_std=None):
    """The tiny ``family`` model with the query and key projections of every attention
    redrawn with std 0.25 (seeded): at the stock init, text-side cross-attention is
    within 2 % of uniform, so the rows of different tokens (or a wrong layer) differ by
    less than what the checks should resolve. ``vision_std`` redraws every vision weight
    matrix as well."""
    bundle = tiny_bundle(family)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in bundle.model.named_parameters():
            vision = vision_std is not None and name.startswith("vision_model.")
            if vision and param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * vision_std)
            elif name.endswith(("in_proj_weight", "query.weight", "key.weight")):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.25)
    return resolve_model(bundle)


@pytest.fixture(scope="module")
def coca():
    return _sharpened("open_clip_coca", seed=16)


# ------------------------------------------------------------ SigLIP relevance


def _siglip_head_by_hand(head, hidden):
    """SigLIP's attention-pooling head written out: the probe's attention ``[B, H, 1, N]``
    is an explicit softmax (so its gradient can be taken), then the output projection and
    the residual MLP. Returns the pooled vector ``[B, D]`` and that attention."""
    mha = head.attention
    e, heads = mha.embed_dim, mha.num_heads
    d = e // heads
    b, n, _ = hidden.shape
    w, bias = mha.in_proj_weight, mha.in_proj_bias

    def split(x, part):
        y = F.linear(x, w[part * e:(part + 1) * e], bias[part * e:(part + 1) * e])
        return y.view(b, -1, heads, d).transpose(1, 2)              # [B, H, *, d]

    q, k, v = split(head.probe.expand(b, -1, -1), 0), split(hidden, 1), split(hidden, 2)
    attn = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, -1)    # [B, H, 1, N]
    x = mha.out_proj((attn @ v).transpose(1, 2).reshape(b, 1, e))
    x = x + head.mlp(head.layernorm(x))
    return x[:, 0], attn


def test_siglip_relevance_is_chefers_rule_through_the_pooling_heads_attention():
    """No class token: the vision stream's ``R^ss`` (``R += Ā R`` from
    ``output_attentions`` and autograd) reaches the image embedding through the pooling
    probe, one query attending to every patch. Chefer's co-attention rule with the probe
    as the querying stream (``R^pp = I``, so ``R̄^pp = I``) gives ``Ā_pool R̄^ss``; the
    score is ``logits_per_image[0, p]`` less SigLIP's bias (it has no gradient)."""
    handle = resolve_model(tiny_bundle("siglip"))
    image = _image(seed=9)
    got = relevance_maps(handle, image, PROMPTS)
    model = _hf_eager_double(handle)
    enc = handle.tokenize(PROMPTS)
    with torch.no_grad():
        text = model.text_model(**enc).pooler_output
    out = model.vision_model(pixel_values=handle.pixels([image]).double(),
                             output_attentions=True)
    head = model.vision_model.head
    pooled, pool_attn = _siglip_head_by_hand(head, out.last_hidden_state)
    torch.testing.assert_close(pooled, out.pooler_output)            # the head as written
    scores = model.logit_scale.exp() * F.normalize(pooled, dim=-1) @ F.normalize(text, dim=-1).T
    attentions = out.attentions
    n = attentions[0].shape[-1]
    assert n == GRID[0] * GRID[1] and got.shape == (len(PROMPTS), *GRID)
    for p in range(len(PROMPTS)):
        grads = torch.autograd.grad(scores[0, p], (*attentions, pool_attn), retain_graph=True)
        r_ss = _self_relevance(zip(attentions, grads[:-1]))
        probe = _a_bar(pool_attn, grads[-1])                          # [1, N]
        want = (probe @ _bar(r_ss))[0].reshape(GRID).detach()
        np.testing.assert_allclose(got[p], want.numpy(), rtol=2e-4, atol=1e-6 * float(want.max()))
        # The rule's parts show on this model: without R̄, or without the gradients
        # (the probe's plain attention), the map differs.
        plain_r = (probe @ r_ss)[0].reshape(GRID).detach()
        no_grad = (pool_attn.detach().mean(1)[0] @ _bar(r_ss))[0].reshape(GRID).detach()
        for other in (plain_r, no_grad):
            assert (other - want).abs().max() > 5e-3 * want.max()
    assert np.abs(got[0] - got[1]).max() > 1e-3 * got.max()          # prompt-specific


# ------------------------------------------------------------ CoCa cross maps


def _coca_rows(handle, caption):
    """Token ids of the caption and the decoder rows that predict its content tokens
    (``[SOT] words [EOT]``, [EOT] at the argmax; row ``t - 1`` predicts token ``t``)."""
    ids = handle.tokenize([caption])["input_ids"]
    row = ids[0].tolist()
    return ids, [t - 1 for t in range(1, row.index(max(row)))]


def _capture_coca(handle, image, ids, **options):
    streams = ["vision", "pool", "text", "decoder", "decoder_cross"]
    with capture(handle.model, streams=streams, **options) as trace:
        out = handle.model(handle.pixels([image]), ids)
    return trace, out


def _patches(rows, trace):
    """Mean of ``[R, N]`` vision-token rows, class token dropped, on the patch grid."""
    grid = trace.tokens["vision"].grid
    prefix = trace.tokens["vision"].length - grid[0] * grid[1]
    return rows[:, prefix:].mean(0).reshape(grid).numpy()


def _fused_by_hand(layer, value_norms):
    """``rownorm(mean_h A_h)`` of one captured layer, ``[Q, K]``; with ``value_norms``
    each head's weights first become ``rownorm(A_h[i, j] ||v_j W_O^h||)``."""
    a = layer.weights.detach().double()[0]                          # [H, Q, K]
    if value_norms:
        a = _rownorm(a * layer.value_norms.detach().double()[0][:, None, :])
    return _rownorm(a.mean(0))


@pytest.mark.parametrize("compose_method", ["raw", "norm"])
def test_coca_raw_and_norm_cross_maps_are_the_mean_cross_attention_through_the_pooler(
        coca, compose_method):
    """``M = mean_l C_dec^(l) C_pool[-K:]``: the decoder's fused cross-attention of all
    layers, over the pooled tokens it sees (all but the first, contrastive one), times
    the pooler's attention over the vision tokens; ``norm`` weights every head by its
    value norms first."""
    handle = coca
    image = _image(seed=10)
    got = cross_maps(handle, image, [CAPTION], compose_method=compose_method)[0]
    ids, rows = _coca_rows(handle, CAPTION)
    norm = compose_method == "norm"
    with torch.no_grad():
        trace, _ = _capture_coca(handle, image, ids, values=True)
    (pool,) = trace.stream("pool")
    c_pool = _fused_by_hand(pool, norm)                               # [P, N]
    crosses = [_fused_by_hand(layer, norm) for layer in trace.stream("decoder_cross")]
    c_dec = sum(crosses) / len(crosses)                               # [T, K]
    assert len(crosses) >= 2 and c_dec.shape[-1] == c_pool.shape[0] - 1
    want = _patches((c_dec @ c_pool[-c_dec.shape[-1]:])[rows], trace)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # What the reference is parametrised by shows on this model: the other weighting,
    # one layer instead of the mean, and the rows of the decoder inputs instead.
    other_pool, other_cross = _fused_by_hand(pool, not norm), crosses[-1]
    input_rows = [r + 1 for r in rows]
    for other in (_patches((sum(_fused_by_hand(layer, not norm) for layer in
                                trace.stream("decoder_cross")) / len(crosses)
                            @ other_pool[-c_dec.shape[-1]:])[rows], trace),
                  _patches((other_cross @ c_pool[-c_dec.shape[-1]:])[rows], trace),
                  _patches((c_dec @ c_pool[-c_dec.shape[-1]:])[input_rows], trace)):
        assert np.abs(other - want).max() > 5e-3 * want.max()


def _coca_relevance_by_hand(handle, image, ids, row, *, transpose=True):
    """``R^ts`` ``[T, S]`` for the log-probability of the token that decoder ``row``
    predicts, from one forward and one backward of the captured CoCa (Chefer et al.
    2021): ``R^ss`` of the vision stream; keys of the decoder's cross-attention
    ``Ā_pool R̄^ss``; ``R^tt = I`` then ``R^tt += Ā_text[:T, :T] R^tt`` per text-tower
    layer; per decoder layer ``R^tt += Ā R^tt``, ``R^ts += Ā R^ts`` and
    ``R^ts += (R̄^tt)^T Ā_cross [Ā_pool R̄^ss]_{last K rows}``."""
    model = copy.deepcopy(handle.model)            # backward() leaves .grad on parameters
    with capture(model, streams=["vision", "pool", "text", "decoder", "decoder_cross"],
                 grads=True) as trace:
        out = model(handle.pixels([image]), ids)
        score = out["logits"][0, row].log_softmax(-1)[ids[0, row + 1]]
        score.backward()

    def a_bar(layer):
        assert layer.grad is not None, f"{layer.stream} {layer.index} has no gradient"
        return _a_bar(layer.weights.detach(), layer.grad)

    r_ss = _self_relevance((l.weights.detach(), l.grad) for l in trace.stream("vision"))
    (pool,) = trace.stream("pool")
    keys = a_bar(pool) @ _bar(r_ss)                                   # [P, N]
    selfs, crosses = trace.stream("decoder"), trace.stream("decoder_cross")
    t = selfs[0].queries
    r_tt, r_ts = _eye(t), None
    for layer in trace.stream("text"):
        r_tt = r_tt + a_bar(layer)[:t, :t] @ r_tt
    for s_layer, c_layer in zip(selfs, crosses):
        a = a_bar(s_layer)
        r_tt = r_tt + a @ r_tt
        r_ts = None if r_ts is None else r_ts + a @ r_ts
        c = a_bar(c_layer)
        left = _bar(r_tt).T if transpose else _bar(r_tt)
        step = left @ c @ keys[-c.shape[-1]:]
        r_ts = step if r_ts is None else r_ts + step
    return r_ts, trace


def test_coca_relevance_cross_map_is_chefers_rule_per_predicted_token(coca):
    """Each content token's row is explained by its own score, the log-probability of the
    token it predicts, from the gradients of one backward per token; the prompt's map is
    the mean of those rows."""
    handle = coca
    image = _image(seed=11)
    got = cross_maps(handle, image, [CAPTION], compose_method="relevance")[0]
    ids, rows = _coca_rows(handle, CAPTION)
    each = [_coca_relevance_by_hand(handle, image, ids, r) for r in rows]
    trace = each[0][1]
    want = _patches(torch.stack([r_ts[r] for (r_ts, _), r in zip(each, rows)]), trace)
    assert len(rows) == 3 and (want > 0).all()
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6 * want.max())
    # The rule's transpose shows on this model, and so does one score for every row
    # (the last token's) instead of each row's own.
    untransposed = _patches(torch.stack([
        _coca_relevance_by_hand(handle, image, ids, r, transpose=False)[0][r]
        for r in rows]), trace)
    one_score = _patches(each[-1][0][rows], trace)
    for wrong in (untransposed, one_score):
        assert np.abs(wrong - want).max() > 5e-3 * want.max()


# ------------------------------------------------------------ BLIP retrieval cross maps


@pytest.fixture(scope="module")
def blip():
    """BLIP's vision config initialises weights with std 1e-10, so every vision token of
    the stock tiny model is the same vector and every map through it is uniform (any row
    or product would pass): here the vision weights are drawn with std 0.2."""
    return _sharpened("blip", seed=12, vision_std=0.2)


def _capture_blip(handle, image, caption, *, model=None, **options):
    model = handle.model if model is None else model
    enc = handle.tokenize([caption])
    with capture(model, streams=["vision", "text", "text_cross"], **options) as trace:
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           pixel_values=handle.pixels([image]), use_itm_head=True)
    content = [t for t, i in enumerate(enc["input_ids"][0].tolist()) if i not in (0, 1, 2)]
    return trace, out, content


def _blip_rollout_by_hand(trace, residual):
    """Vision rollout ``R_v``; text rows start at ``[0 | I]``; per text layer
    ``R_tt <- Ã R_tt``, ``R_ts <- Ã R_ts``, then the cross-attention block
    ``R_ts <- r R_ts + (1 - r) C R_v``, ``R_tt <- r R_tt``."""
    r_v = _rollout_by_hand([l.weights.double() for l in trace.stream("vision")], residual)[0]
    selfs, crosses = trace.stream("text"), trace.stream("text_cross")
    t = selfs[0].queries
    r_tt, r_ts = _eye(t), torch.zeros(t, r_v.shape[-1], dtype=torch.float64)
    for s_layer, c_layer in zip(selfs, crosses):
        a = _tilde(s_layer.weights.double().mean(1)[0], residual)
        r_tt, r_ts = a @ r_tt, a @ r_ts
        r_ts = residual * r_ts + (1 - residual) * _fused_by_hand(c_layer, False) @ r_v
        r_tt = residual * r_tt
    return r_ts, r_tt


def test_blip_vision_tower_of_the_fixture_is_not_uniform(blip):
    with torch.no_grad():
        trace, _, _ = _capture_blip(blip, _image(seed=13), CAPTION)
    for layer in (*trace.stream("vision"), *trace.stream("text_cross")):
        assert layer.weights.std(-1).max() > 1e-2, (layer.stream, layer.index)


@pytest.mark.parametrize("residual", [0.5, 0.2])
def test_blip_rollout_cross_map_is_the_product_of_its_captured_attention(blip, residual):
    image = _image(seed=13)
    got = cross_maps(blip, image, [CAPTION], residual=residual)[0]
    with torch.no_grad():
        trace, _, content = _capture_blip(blip, image, CAPTION)
    r_ts, r_tt = _blip_rollout_by_hand(trace, residual)
    want = _patches(r_ts[content], trace)
    assert content == [1, 2, 3]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # Each text row is a distribution over [vision tokens | text tokens].
    np.testing.assert_allclose((r_ts.sum(-1) + r_tt.sum(-1)).numpy(), 1.0, rtol=1e-9)
    # The residual weight and the rows read show in the reference.
    other = _patches(_blip_rollout_by_hand(trace, 0.9 - residual)[0][content], trace)
    shifted = _patches(r_ts[[c - 1 for c in content]], trace)
    for wrong in (other, shifted):
        assert np.abs(wrong - want).max() > 5e-3 * want.max()


@pytest.mark.parametrize("compose_method", ["raw", "norm"])
def test_blip_raw_and_norm_cross_maps_are_the_mean_cross_attention(blip, compose_method):
    image = _image(seed=14)
    got = cross_maps(blip, image, [CAPTION], compose_method=compose_method)[0]
    norm = compose_method == "norm"
    with torch.no_grad():
        trace, _, content = _capture_blip(blip, image, CAPTION, values=True)
    layers = trace.stream("text_cross")
    want = _patches((sum(_fused_by_hand(l, norm) for l in layers) / len(layers))[content],
                    trace)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    other = _patches((sum(_fused_by_hand(l, not norm) for l in layers)
                      / len(layers))[content], trace)
    last = _patches(_fused_by_hand(layers[-1], norm)[content], trace)
    for wrong in (other, last):
        assert np.abs(wrong - want).max() > 5e-3 * want.max()


def _blip_relevance_by_hand(trace, *, normalize=True):
    """``R^tv`` ``[T, S]``: ``R^vv`` of the vision stream, then per text layer
    ``R^tt += Ā R^tt``, ``R^tv += Ā R^tv`` and ``R^tv += (R̄^tt)^T Ā_cross R̄^vv``
    (``normalize=False``: ``R`` in place of ``R̄``)."""
    bar = _bar if normalize else (lambda r: r)
    r_vv = _self_relevance((l.weights.detach(), l.grad) for l in trace.stream("vision"))
    t = trace.stream("text")[0].queries
    r_tt, r_tv = _eye(t), None
    for s_layer, c_layer in zip(trace.stream("text"), trace.stream("text_cross")):
        a = _a_bar(s_layer.weights.detach(), s_layer.grad)
        r_tt = r_tt + a @ r_tt
        r_tv = None if r_tv is None else r_tv + a @ r_tv
        step = bar(r_tt).T @ _a_bar(c_layer.weights.detach(), c_layer.grad) @ bar(r_vv)
        r_tv = step if r_tv is None else r_tv + step
    return r_tv


def test_blip_relevance_cross_map_is_chefers_rule_for_the_matching_logit(blip):
    """One score per caption, the image-text matching logit of "match", one backward."""
    image = _image(seed=15)
    got = cross_maps(blip, image, [CAPTION], compose_method="relevance")[0]
    model = copy.deepcopy(blip.model)              # backward() leaves .grad on parameters
    trace, out, content = _capture_blip(blip, image, CAPTION, model=model, grads=True)
    out.itm_score[0, 1].backward()
    want = _patches(_blip_relevance_by_hand(trace)[content], trace)
    assert (want > 0).all()
    # The matching logit's attention gradients are small on this model, so R^vv is the
    # identity plus small increments and the library's float32 ``R - I`` loses digits
    # of them (the reference works in float64): a looser rtol than elsewhere.
    np.testing.assert_allclose(got, want, rtol=5e-3, atol=1e-6 * want.max())
    plain = _patches(_blip_relevance_by_hand(trace, normalize=False)[content], trace)
    assert np.abs(plain - want).max() > 5e-2 * want.max()

"""Map sources on tiny random models: shapes, ranges, one-backward relevance, dense
rewrites that restore the model, MaskCLIP against a manual recomputation, HF-tower and
CoCa maps against products of the attention matrices multiplied out by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from groundroll.grounding import (dense_rewrite, prompt_maps, relevance_maps,
                                  resolve_model, segment)
from groundroll.grounding.dense import dense_maps

from helpers.tiny_models import IMAGE, PATCH
from test_grounding_support import tiny_bundle

PROMPTS = ["a red circle", "blue star"]


@pytest.fixture(scope="module")
def clip():
    return resolve_model(tiny_bundle("open_clip"))


def _image(h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("method", ["relevance", "rollout", "maskclip", "sclip",
                                    "clearclip", "naclip"])
def test_every_clip_source_gives_prompt_heatmaps_on_non_square_images(clip, method):
    seg = segment(_image(24, 50), PROMPTS, model=clip, method=method)
    assert seg.heatmaps.shape == (2, 24, 50) and seg.heatmaps.dtype == np.float32
    assert seg.heatmaps.min() >= 0 and seg.heatmaps.max() <= 1
    assert seg.masks.shape == (2, 24, 50) and seg.labels.shape == (24, 50)
    assert np.isfinite(seg.scores).all()


@pytest.mark.parametrize("family,method", [("open_clip_coca", "cross"), ("blip", "cross"),
                                           ("clip", "relevance"), ("siglip", "relevance"),
                                           ("clip", "rollout"), ("siglip", "rollout")])
def test_other_families(family, method):
    seg = segment(_image(40, 28), PROMPTS, model=tiny_bundle(family), method=method)
    assert seg.heatmaps.shape == (2, 40, 28)
    assert seg.heatmaps.min() >= 0 and seg.heatmaps.max() <= 1


def test_relevance_of_two_prompts_in_one_backward_equals_separate_runs(clip):
    image = _image()
    both = relevance_maps(clip, image, PROMPTS)
    one = np.concatenate([relevance_maps(clip, image, [p]) for p in PROMPTS])
    np.testing.assert_allclose(both, one, rtol=1e-4, atol=1e-6)
    assert not np.allclose(both[0], both[1])      # the prompts matter
    assert all(p.grad is None for p in clip.model.parameters())


def test_rollout_is_the_same_map_for_every_prompt(clip):
    maps = prompt_maps(clip, _image(), PROMPTS, method="rollout")
    np.testing.assert_array_equal(maps[0], maps[1])


@pytest.mark.parametrize("method", ["maskclip", "sclip", "clearclip", "naclip"])
def test_dense_rewrite_is_reversible(clip, method):
    model = clip.model
    x = clip.pixels([_image()])
    block = model.visual.transformer.resblocks[-1]
    with torch.no_grad():
        before = model.encode_image(x)
        with dense_rewrite(model, method):
            inside = model.encode_image(x)
        after = model.encode_image(x)
        with pytest.raises(RuntimeError, match="boom"):
            with dense_rewrite(model, method):
                raise RuntimeError("boom")
        again = model.encode_image(x)
    assert not torch.allclose(before, inside)
    assert torch.equal(before, after) and torch.equal(before, again)
    assert "forward" not in block.__dict__


def test_maskclip_equals_a_manual_recomputation(clip):
    model, image = clip.model, _image()
    got = dense_maps(clip, image, PROMPTS, method="maskclip")
    visual = model.visual
    with torch.no_grad():
        x = visual._embeds(clip.pixels([image]))
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        last = visual.transformer.resblocks[-1]
        e = last.attn.embed_dim
        v = F.linear(last.ln_1(x), last.attn.in_proj_weight[2 * e:],
                     last.attn.in_proj_bias[2 * e:])
        feats = visual.ln_post(last.attn.out_proj(v)[:, 1:]) @ visual.proj
        feats = F.normalize(feats, dim=-1)
        text = F.normalize(model.encode_text(clip.tokenize(PROMPTS)["input_ids"]), dim=-1)
        want = (feats[0] @ text.T).T.reshape(2, *visual.grid_size)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_templates_average_normalised_text_embeddings(clip):
    templates = ["a photo of {}.", "{}"]
    got = clip.text_embeddings(["red circle"], templates)
    each = clip.text_embeddings(["a photo of red circle.", "red circle"])
    want = F.normalize(each.mean(0, keepdim=True), dim=-1)
    torch.testing.assert_close(got, want)


def test_unsupported_combinations_say_what_to_use(clip):
    coca = resolve_model(tiny_bundle("open_clip_coca"))
    with pytest.raises(ValueError, match="cross"):
        relevance_maps(coca, _image(), PROMPTS)
    with pytest.raises(ValueError, match="cross-attention"):
        prompt_maps(clip, _image(), PROMPTS, method="cross")
    with pytest.raises(ValueError, match="open_clip ViT"):
        prompt_maps(resolve_model(tiny_bundle("clip")), _image(), PROMPTS, method="sclip")


@pytest.mark.parametrize("family", ["open_clip_coca", "blip"])
def test_prompt_cross_map_is_the_mean_of_its_word_maps(family):
    from groundroll.grounding import caption_word_maps, cross_maps

    handle = resolve_model(tiny_bundle(family))
    image = _image()
    words, per_word = caption_word_maps(handle, image, "red circle star")
    assert len(words) == 3 and per_word.shape[0] == 3
    whole = cross_maps(handle, image, ["red circle star"])[0]
    np.testing.assert_allclose(whole, per_word.mean(0), rtol=1e-5, atol=1e-7)


def test_caption_heatmaps_at_image_pixels():
    from groundroll.grounding import caption_heatmaps

    words, maps = caption_heatmaps(_image(20, 44), "a red circle",
                                   model=tiny_bundle("open_clip_coca"))
    assert len(words) == 3 and maps.shape == (3, 20, 44)
    assert maps.min() >= 0 and maps.max() <= 1


def _dense_reference(clip, image, method, sigma=5.0):
    """Each dense method's patch-prompt cosine map, from its paper's formula: the last
    block in float64, one head at a time, the Gaussian prior from explicit loops over
    patch positions. Shares no code with groundroll.grounding.dense."""
    import copy

    model = copy.deepcopy(clip.model).double()
    visual = model.visual
    with torch.no_grad():
        x = visual._embeds(clip.pixels([image]).double())
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        last = visual.transformer.resblocks[-1]
        attn = last.attn
        e, heads = attn.embed_dim, attn.num_heads
        d = e // heads
        h = last.ln_1(x)[0]                                        # [N, e]
        w, b = attn.in_proj_weight, attn.in_proj_bias
        q, k, v = (h @ w[i * e:(i + 1) * e].T + b[i * e:(i + 1) * e] for i in range(3))
        n = h.shape[0]
        gh, gw = visual.grid_size
        prefix = n - gh * gw
        prior = torch.zeros(n, n, dtype=torch.float64)
        for i in range(gh * gw):
            for j in range(gh * gw):
                dy, dx = i // gw - j // gw, i % gw - j % gw
                prior[prefix + i, prefix + j] = np.exp(-(dy * dy + dx * dx) / (2 * sigma ** 2))
        mixed = []
        for head in range(heads):
            cols = slice(head * d, (head + 1) * d)
            qh, kh, vh = q[:, cols], k[:, cols], v[:, cols]
            qq = torch.softmax(qh @ qh.T / np.sqrt(d), -1)
            kk_logits = kh @ kh.T / np.sqrt(d)
            weights = {"maskclip": torch.eye(n, dtype=torch.float64),
                       "clearclip": qq,
                       "sclip": qq + torch.softmax(kk_logits, -1),
                       "naclip": torch.softmax(kk_logits + prior, -1)}[method]
            mixed.append(weights @ vh)
        out = attn.out_proj(torch.cat(mixed, -1))
        if method == "sclip":                       # the only method keeping the residual
            out = x[0] + last.ls_1(out)
        feats = visual.ln_post(out[prefix:]) @ visual.proj
        feats = F.normalize(feats, dim=-1)
        text = F.normalize(model.encode_text(clip.tokenize(PROMPTS)["input_ids"]), dim=-1)
        return (feats @ text.T).T.reshape(len(PROMPTS), gh, gw).numpy()


@pytest.mark.parametrize("method", ["maskclip", "sclip", "clearclip", "naclip"])
def test_dense_sources_equal_their_formulas_in_float64(clip, method):
    image = _image(seed=3)
    got = dense_maps(clip, image, PROMPTS, method=method)
    want = _dense_reference(clip, image, method)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    # the methods differ from each other on this model (a swapped branch would show)
    others = [m for m in ("maskclip", "sclip", "clearclip", "naclip") if m != method]
    for other in others:
        assert np.abs(_dense_reference(clip, image, other) - want).max() > 1e-3, other


def test_naclip_prior_width_is_used(clip):
    """NACLIP's sigma reaches the prior: a narrow and a wide Gaussian give different maps,
    each the formula's."""
    image = _image(seed=4)
    narrow = dense_maps(clip, image, PROMPTS, method="naclip", sigma=0.5)
    wide = dense_maps(clip, image, PROMPTS, method="naclip", sigma=1e4)
    np.testing.assert_allclose(narrow, _dense_reference(clip, image, "naclip", sigma=0.5),
                               rtol=0, atol=2e-5)
    np.testing.assert_allclose(wide, _dense_reference(clip, image, "naclip", sigma=1e4),
                               rtol=0, atol=2e-5)
    assert np.abs(narrow - wide).max() > 1e-3


# ------------------------------------------- HF towers and CoCa against hand products


def _tilde(a, residual=0.5):
    """rownorm((1 - r) A + r I) of a fused ``[..., n, n]`` layer."""
    a = (1 - residual) * a + residual * torch.eye(a.shape[-1], dtype=a.dtype)
    return a / a.sum(-1, keepdim=True)


def _rollout_by_hand(attentions, residual=0.5):
    """``Ã^(L) ... Ã^(1)`` of head-averaged layers, multiplied out one matrix at a time."""
    out = None
    for a in attentions:
        step = _tilde(a.mean(1), residual)
        out = step if out is None else step @ out
    return out


def _hf_eager_double(handle):
    import copy

    model = copy.deepcopy(handle.model).double()
    model.set_attn_implementation("eager")
    return model


GRID = (IMAGE // PATCH, IMAGE // PATCH)


@pytest.mark.parametrize("residual", [0.5, 0.2])
def test_hf_clip_rollout_is_the_class_row_of_the_models_own_attentions(residual):
    handle = resolve_model(tiny_bundle("clip"))
    image = _image(seed=5)
    got = prompt_maps(handle, image, PROMPTS, method="rollout", residual=residual)
    model = _hf_eager_double(handle)
    with torch.no_grad():
        out = model.vision_model(pixel_values=handle.pixels([image]).double(),
                                 output_attentions=True)
    want = _rollout_by_hand(out.attentions, residual)[0, 0, 1:].reshape(GRID)
    assert len(out.attentions) >= 2 and got.shape == (2, *GRID)
    np.testing.assert_allclose(got[0], want.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got[0], got[1])
    # the residual weight reaches the product
    other = _rollout_by_hand(out.attentions, 0.9 - residual)[0, 0, 1:].reshape(GRID)
    assert np.abs(other.numpy() - want.numpy()).max() > 1e-4


def test_hf_clip_relevance_is_chefers_rule_on_the_models_own_attention_gradients():
    """Chefer et al.'s ``R += mean_h clamp(dS/dA * A, min=0) R`` from ``output_attentions``
    and autograd, one backward per prompt, for the score ``logits_per_image[0, p]``."""
    handle = resolve_model(tiny_bundle("clip"))
    image = _image(seed=6)
    got = relevance_maps(handle, image, PROMPTS)
    model = _hf_eager_double(handle)
    enc = handle.tokenize(PROMPTS)
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                pixel_values=handle.pixels([image]).double(), output_attentions=True)
    attentions = out.vision_model_output.attentions
    n = attentions[0].shape[-1]
    for p in range(len(PROMPTS)):
        grads = torch.autograd.grad(out.logits_per_image[0, p], attentions, retain_graph=True)
        r = torch.eye(n, dtype=torch.float64)
        for a, g in zip(attentions, grads):
            r = r + (g * a).clamp(min=0).mean(1)[0] @ r
        want = r[0, 1:].reshape(GRID).detach().numpy()
        np.testing.assert_allclose(got[p], want, rtol=2e-4, atol=1e-6 * want.max())
    assert np.abs(got[0] - got[1]).max() > 1e-3 * got.max()      # prompt-specific


def test_hf_siglip_rollout_goes_through_the_pooling_heads_attention():
    """No class token: the map is the pooling head's probe attention (heads averaged,
    computed here by calling its nn.MultiheadAttention with need_weights=True) times the
    vision rollout; the pooling query has no residual."""
    handle = resolve_model(tiny_bundle("siglip"))
    image = _image(seed=7)
    got = prompt_maps(handle, image, PROMPTS, method="rollout")
    model = _hf_eager_double(handle)
    vision = model.vision_model
    with torch.no_grad():
        out = vision(pixel_values=handle.pixels([image]).double(), output_attentions=True)
        head = vision.head
        _, pool = head.attention(head.probe, out.last_hidden_state, out.last_hidden_state,
                                 need_weights=True, average_attn_weights=True)  # [1, 1, N]
    want = (pool[0] @ _rollout_by_hand(out.attentions)[0])[0].reshape(GRID)
    np.testing.assert_allclose(got[0], want.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum((1, 2)), 1.0, rtol=1e-5)    # all tokens are patches
    # the pooling probe matters: the plain column mean of the rollout differs
    plain = _rollout_by_hand(out.attentions)[0].mean(0).reshape(GRID)
    assert np.abs(plain.numpy() - want.numpy()).max() > 1e-4


def _coca_cross_by_hand(handle, image, caption, *, residual, read):
    """CoCa's text -> patch map multiplied out from the captured attention matrices:
    vision rollout, attentional pooler ``C_pool R_v``, text-tower rollout as the start of
    the decoder rows, then per decoder layer ``R_tt <- Ã R_tt``, ``R_ts <- Ã R_ts`` and
    ``R_ts <- r R_ts + (1 - r) C [C_pool R_v]_{last K rows}``, ``R_tt <- r R_tt``."""
    from groundroll.adapters import capture

    ids = handle.tokenize([caption])["input_ids"]
    streams = ["vision", "pool", "text", "decoder", "decoder_cross"]
    with torch.no_grad(), capture(handle.model, streams=streams) as trace:
        handle.model(handle.pixels([image]), ids)

    def fused(layer):
        return layer.weights.double().mean(1)[0]                   # [Q, K]

    r_v = _rollout_by_hand([l.weights.double() for l in trace.stream("vision")], residual)[0]
    (pool,) = trace.stream("pool")
    c_pool = fused(pool)
    pooled = (c_pool / c_pool.sum(-1, keepdim=True)) @ r_v      # [P, N]
    selfs, crosses = trace.stream("decoder"), trace.stream("decoder_cross")
    t = selfs[0].queries
    r_tt = _rollout_by_hand([l.weights.double() for l in trace.stream("text")],
                            residual)[0][:t, :t]
    r_ts = torch.zeros(t, pooled.shape[-1], dtype=torch.float64)
    for s_layer, c_layer in zip(selfs, crosses):
        a = _tilde(fused(s_layer), residual)
        r_tt, r_ts = a @ r_tt, a @ r_ts
        c = fused(c_layer)
        c = c / c.sum(-1, keepdim=True)
        r_ts = residual * r_ts + (1 - residual) * c @ pooled[-c.shape[-1]:]
        r_tt = residual * r_tt
    row = ids[0].tolist()
    end = row.index(max(row))                                      # [EOT] at the argmax
    words = list(range(1, end))                                    # between [SOT] and [EOT]
    rows = [w - 1 for w in words] if read == "predict" else words
    grid = trace.tokens["vision"].grid
    prefix = trace.tokens["vision"].length - grid[0] * grid[1]
    return r_ts[rows][:, prefix:].mean(0).reshape(grid).numpy(), (r_ts, r_tt)


@pytest.mark.parametrize("residual,read", [(0.5, "predict"), (0.2, "predict"),
                                           (0.5, "input")])
def test_coca_cross_map_is_the_product_of_its_captured_attention(residual, read):
    from groundroll.grounding import cross_maps

    handle = resolve_model(tiny_bundle("open_clip_coca"))
    image, caption = _image(seed=8), "red circle star"
    got = cross_maps(handle, image, [caption], residual=residual, read=read)[0]
    want, (r_ts, r_tt) = _coca_cross_by_hand(handle, image, caption, residual=residual,
                                             read=read)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # Each decoder row is a distribution over [vision tokens | text tokens].
    np.testing.assert_allclose((r_ts.sum(-1) + r_tt.sum(-1)).numpy(), 1.0, rtol=1e-9)
    # The hand product separates the options it is parametrised by.
    other, _ = _coca_cross_by_hand(handle, image, caption, residual=0.9 - residual,
                                   read="input" if read == "predict" else "predict")
    assert np.abs(other - want).max() > 1e-4 * want.max()

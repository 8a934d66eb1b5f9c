"""Map sources on tiny random models: shapes, ranges, one-backward relevance, dense
rewrites that restore the model, MaskCLIP against a manual recomputation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from groundroll.grounding import (dense_rewrite, prompt_maps, relevance_maps,
                                  resolve_model, segment)
from groundroll.grounding.dense import dense_maps

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

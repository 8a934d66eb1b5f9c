"""Word grounding in captions (``gr.ground_caption``) on a tiny random image captioner
(transformers ``VisionEncoderDecoderModel``: CLIP vision encoder, GPT-2 decoder with
cross-attention), against the model's own returned attention."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import groundroll as gr  # noqa: E402
from groundroll.captioning import CaptionGrounding, resolve_captioner  # noqa: E402

WORDS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "a", "red", "blue", "circle", "square",
         "and", "star"]
CAPTION = "a red circle and a blue square"


@pytest.fixture(scope="module")
def tokenizer():
    from helpers.tiny_models import word_tokenizer

    return word_tokenizer(WORDS)


@pytest.fixture(scope="module")
def captioner():
    encoder = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=37,
                                            num_hidden_layers=2, num_attention_heads=4,
                                            image_size=32, patch_size=8)
    decoder = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=len(WORDS),
                                      n_positions=32, add_cross_attention=True,
                                      is_decoder=True, bos_token_id=1, eos_token_id=2,
                                      pad_token_id=0)
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder,
                                                                                  decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, 2
    torch.manual_seed(0)
    model = transformers.VisionEncoderDecoderModel(config=config).eval()
    model.generation_config.suppress_tokens = [0, 1, 3]     # words or the end only
    return model


def _image(h=40, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _returned(model, tokenizer, image, caption, *, grads=False):
    """The model's own cross-attention (eager, ``output_attentions``) on the letterboxed
    input that ground_caption builds, with the caption's ids."""
    cm = resolve_captioner(model, tokenizer=tokenizer)
    geometry = gr.letterbox_geometry(image.shape[:2], cm.image_size, mode="pad")
    pixels = cm.pixels(gr.masks.letterbox_image(image, geometry, fill=0))
    ids = [1] + tokenizer(caption, add_special_tokens=False)["input_ids"]
    model.set_attn_implementation("eager")
    with torch.set_grad_enabled(grads):
        out = model(pixel_values=pixels, decoder_input_ids=torch.tensor([ids]),
                    output_attentions=True)
    return out, ids, geometry


def test_cross_reads_the_last_cross_attention_layer_at_the_predicting_rows(captioner,
                                                                            tokenizer):
    image = _image()
    result = gr.ground_caption(image, CAPTION, model=captioner, tokenizer=tokenizer,
                               method="cross", refine="none")
    out, ids, geometry = _returned(captioner, tokenizer, image, CAPTION)
    last = out.cross_attentions[-1][0].mean(0)                     # [T, 1 + 16]
    for k, word in enumerate(CAPTION.split()):
        row = last[k]                          # row k predicts caption token k (+1 start)
        grid = row[1:].reshape(4, 4).numpy()[None]
        want = gr.normalize_maps(gr.unletterbox(grid, geometry, order=1), how="minmax")[0]
        np.testing.assert_allclose(result.heatmaps[k], np.clip(want, 0, 1), atol=1e-4)
        assert result.words[k] == word


def test_legrad_is_positive_gradient_times_attention_of_the_word_log_probability(
        captioner, tokenizer):
    image = _image(seed=1)
    result = gr.ground_caption(image, CAPTION, model=captioner, tokenizer=tokenizer,
                               method="legrad", refine="none")
    out, ids, geometry = _returned(captioner, tokenizer, image, CAPTION, grads=True)
    logp = out.logits[0].log_softmax(-1)
    for k in (1, 5):                                           # "red", "blue"
        score = logp[k, ids[k + 1]]
        grads = torch.autograd.grad(score, out.cross_attentions, retain_graph=True)
        total = sum((g[0].clamp(min=0) * a[0]).sum(0) for g, a in
                    zip(grads, out.cross_attentions))
        grid = total[k, 1:].reshape(4, 4).detach().numpy()[None]
        want = gr.normalize_maps(gr.unletterbox(grid, geometry, order=1), how="minmax")[0]
        np.testing.assert_allclose(result.heatmaps[k], np.clip(want, 0, 1), atol=1e-4)


@pytest.mark.parametrize("method", ["rollout", "relevance"])
def test_composed_methods_give_one_map_per_word(captioner, tokenizer, method):
    image = _image(seed=2)
    result = gr.ground_caption(image, CAPTION, model=captioner, tokenizer=tokenizer,
                               method=method)
    assert result.heatmaps.shape == (7, 40, 48) and result.heatmaps.dtype == np.float32
    assert result.masks.shape == (7, 40, 48) and result.masks.dtype == bool
    assert np.isfinite(result.heatmaps).all()
    assert (result.heatmaps >= 0).all() and (result.heatmaps <= 1).all()
    assert not np.allclose(result.heatmaps[1], result.heatmaps[5])  # red vs blue
    assert result.settings["method"] == method


def test_words_flags_and_log_probabilities(captioner, tokenizer):
    result = gr.ground_caption(_image(), CAPTION, model=captioner, tokenizer=tokenizer,
                               method="cross")
    assert result.words == CAPTION.split()
    assert result.content_words == ["red", "circle", "blue", "square"]
    out, ids, _ = _returned(captioner, tokenizer, _image(), CAPTION)
    logp = out.logits[0].log_softmax(-1)
    want = [float(logp[k, ids[k + 1]]) for k in range(7)]
    np.testing.assert_allclose(result.logprobs, want, atol=1e-5)
    assert not result.generated and not result.truncated


def test_generated_caption_hits_the_token_limit_and_is_flagged(captioner, tokenizer):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = gr.ground_caption(_image(), model=captioner, tokenizer=tokenizer,
                                   max_new_tokens=4, method="cross")
    assert result.generated and result.truncated
    assert any("max_new_tokens=4" in str(w.message) for w in caught)
    want = captioner.generate(
        pixel_values=resolve_captioner(captioner, tokenizer=tokenizer).pixels(
            gr.masks.letterbox_image(_image(), gr.letterbox_geometry((40, 48), (32, 32)),
                                     fill=0)),
        decoder_input_ids=torch.tensor([[1]]), max_new_tokens=4, do_sample=False)[0, 1:]
    assert result.settings["token_ids"] == want.tolist()
    assert len(result.words) == 4 and result.heatmaps.shape[0] == 4


def test_bad_inputs_are_clear_errors(captioner, tokenizer):
    with pytest.raises(ValueError, match="caption must be a non-empty string"):
        gr.ground_caption(_image(), "  ", model=captioner, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="method must be one of"):
        gr.ground_caption(_image(), CAPTION, model=captioner, tokenizer=tokenizer,
                          method="nope")
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
        gr.ground_caption(_image(), model=captioner, tokenizer=tokenizer, max_new_tokens=0)
    with pytest.raises(ValueError, match="no word of 'zebra giraffe' is known"):
        gr.ground_caption(_image(), "zebra giraffe", model=captioner, tokenizer=tokenizer)
    partly = gr.ground_caption(_image(), "a zebra circle", model=captioner,
                               tokenizer=tokenizer, method="cross")
    assert partly.settings["unknown_words"] == ["zebra"]
    assert partly.content.tolist() == [False, False, True]


def test_a_model_that_does_not_caption_is_refused_naming_those_that_do(tokenizer):
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16)).eval()
    with pytest.raises(TypeError, match="not an image captioner.*hf_vision_encoder_decoder"):
        gr.ground_caption(_image(), CAPTION, model=bert, tokenizer=tokenizer)


def test_save_writes_one_set_and_refuses_to_overwrite(captioner, tokenizer, tmp_path):
    result = gr.ground_caption(_image(), CAPTION, model=captioner, tokenizer=tokenizer,
                               method="cross")
    paths = result.save(tmp_path, stem="scene")
    summary = json.loads(paths["summary"].read_text())
    assert summary["words"] == CAPTION.split() and summary["caption"] == CAPTION
    assert paths["heatmap_1"].name == "scene_1_red_heatmap.png"
    assert "<!DOCTYPE html>" in paths["page"].read_text()
    with pytest.raises(FileExistsError):
        result.save(tmp_path, stem="scene")
    result.save(tmp_path, stem="scene", force=True)
    assert isinstance(result, CaptionGrounding) and "red" in result.to_html()


# --------------------------------------------------------------------------- bundled

def test_bundled_captioner_names_the_objects_of_a_held_out_scene():
    from groundroll.data import shapes

    scene = next(shapes.scenes(1, seed=shapes.EVAL_SEED_OFFSET + 3))
    result = gr.ground_caption(scene.image)                  # the default model and method
    assert result.generated and not result.truncated
    named = {w.strip(",") for w in result.content_words}
    for label in scene.labels:
        assert set(label.split()) <= named, (label, result.caption)
    assert result.heatmaps.shape == (len(result.words),) + scene.image.shape[:2]


def test_default_call_points_at_the_named_objects_on_held_out_photo_backgrounds():
    """The bundled captioner's default grounding (its measured caption_defaults) on
    objects over crops of photos no training stage cropped, true captions given."""
    from scipy.ndimage import distance_transform_edt

    from groundroll.data import shapes

    hits = words = 0
    for scene in shapes.scenes(6, seed=shapes.EVAL_SEED_OFFSET + 8000, background="photo"):
        order = sorted(range(len(scene.labels)),
                       key=lambda k: np.nonzero(scene.masks[k])[1].mean())
        caption = shapes.caption_for(scene.labels, order=order)
        result = gr.ground_caption(scene.image, caption)
        objects = iter(order)
        for w, word in enumerate(caption.split()):
            if word == "a":
                current = next(objects)
            if word.strip(",") in shapes.COLORS or word.strip(",") in shapes.SHAPES:
                top = np.unravel_index(int(np.argmax(result.heatmaps[w])),
                                       scene.image.shape[:2])
                near = distance_transform_edt(~scene.masks[current])[top] <= 15
                hits, words = hits + bool(near), words + 1
    # Measured (benchmarks/captions.py, photo set): pointing within 15 px 0.97-1.00.
    assert words >= 20 and hits >= 0.85 * words, (hits, words)


def test_caption_command_writes_one_set_and_never_overwrites(tmp_path, capsys):
    from groundroll.cli import main
    from groundroll.data import example_path

    out = tmp_path / "out"
    assert main(["caption", str(example_path()), "--caption", "a blue star",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "a blue star"
    summary = json.loads((out / "shapes_scene.json").read_text())
    assert summary["words"] == ["a", "blue", "star"]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["caption", str(example_path()), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert main(["caption", str(example_path()), "--caption", " ", "--out",
                 str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    assert main(["caption", str(example_path()), "--shifts", "0", "--out",
                 str(tmp_path / "x")]) == 2
    assert "--shifts must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_superpixel_refinement_blends_the_pooled_map_and_thresholds_it(captioner, tokenizer):
    from groundroll import masks as M
    from groundroll.captioning import refine_word_maps
    from groundroll.grounding.segment import refine_inputs

    image = _image(seed=4)
    raw = gr.ground_caption(image, CAPTION, model=captioner, tokenizer=tokenizer,
                            method="cross", refine="none")
    refined = gr.ground_caption(image, CAPTION, model=captioner, tokenizer=tokenizer,
                                method="cross", mask_threshold=0.6)
    small, _, parts = refine_inputs(raw.heatmaps, image, refine="superpixels")
    pooled = M.normalize_maps(M.superpixel_pool(small, partitions=parts), how="minmax")
    np.testing.assert_array_equal(refined.masks, pooled >= 0.6)      # 40 x 48: no resize
    want = M.normalize_maps(0.5 * raw.heatmaps + 0.5 * pooled, how="minmax")
    np.testing.assert_allclose(refined.heatmaps, want, atol=1e-6)
    assert np.array_equal(refine_word_maps(raw.heatmaps, image, refine="none")[0],
                          raw.heatmaps)


def test_phrase_maps_share_the_geometric_mean_of_each_run_of_content_words():
    from groundroll.captioning import phrase_maps

    maps = np.array([[[1.0, 1.0]], [[2.0, 1.0]], [[1.0, 4.0]], [[3.0, 3.0]],
                     [[0.0, 5.0]], [[2.0, 2.0]]])
    # "a red circle, blue star": runs "red circle," (ended by the comma) and "blue star"
    words = ["a", "red", "circle,", "blue", "star", "and"]
    content = [False, True, True, True, True, False]
    out = phrase_maps(maps, content, words)
    # red / 2 = [1, .5], circle / 4 = [.25, 1]: sqrt of the product = [.5, sqrt(.5)]
    np.testing.assert_allclose(out[1], [[0.5, np.sqrt(0.5)]], rtol=1e-6)
    np.testing.assert_allclose(out[2], out[1])
    # blue / 3 = [1, 1], star / 5 = [0, 1]: [0, 1]
    np.testing.assert_allclose(out[3], [[0.0, 1.0]])
    np.testing.assert_allclose(out[4], out[3])
    np.testing.assert_array_equal(out[[0, 5]], maps[[0, 5]])     # function words kept
    # without the words the comma cannot end a run: all four share one map
    joined = phrase_maps(maps, content)
    want = (np.array([1, 0.5]) * [0.25, 1] * [1, 1] * [0, 1]) ** 0.25
    np.testing.assert_allclose(joined[1:5], np.broadcast_to(want, (4, 1, 2)), atol=1e-7)


def test_shift_averaged_moves_each_shifted_map_back_and_averages_what_covers_a_pixel():
    from groundroll.captioning import shift_averaged

    def read(image):                       # 2 x 2 patches of 2 x 2 pixels, patch means
        return image[..., 0].reshape(2, 2, 2, 2).mean((1, 3))[None].astype(np.float64)

    image = np.zeros((4, 4, 3), np.uint8)
    image[1, 1] = 200
    out = shift_averaged(read, image, read(image), shifts=2)
    # Per shift d in {0, 1} (pixels), the bright pixel's patch is 0 when d = 0 and 1 when
    # d = 1; bilinear from 2 cells to 4 pixels reads [1, .75, .25, 0] (patch 0) or
    # [0, .25, .75, 1] (patch 1), the latter moved back one pixel: [.25, .75, 1, -].
    # Pixel 3 is covered by d = 0 only.
    profile = np.array([(1 + 0.25) / 2, (0.75 + 0.75) / 2, (0.25 + 1) / 2, 0.0])
    np.testing.assert_allclose(out[0], np.outer(profile, profile), atol=1e-6)
    once = shift_averaged(read, image, read(image), shifts=1)
    np.testing.assert_allclose(once[0], np.outer([1, 0.75, 0.25, 0], [1, 0.75, 0.25, 0]),
                               atol=1e-6)
    assert out.dtype == np.float32 and out.shape == (1, 4, 4)


def test_phrase_method_and_shifts_in_the_entry_point(captioner, tokenizer):
    from groundroll import masks as M
    from groundroll.captioning import phrase_maps
    from groundroll.captioning.api import _word_maps

    image = _image(seed=5)
    result = gr.ground_caption(image, CAPTION, model=captioner, tokenizer=tokenizer,
                               method="phrase", refine="none")
    cm = resolve_captioner(captioner, tokenizer=tokenizer)
    geometry = gr.letterbox_geometry(image.shape[:2], cm.image_size, mode="pad")
    pixels = cm.pixels(M.letterbox_image(image, geometry, fill=0))
    groups = [[k] for k in range(7)]
    ids = tokenizer(CAPTION, add_special_tokens=False)["input_ids"]
    grids, _ = _word_maps(cm, pixels, ids, [1], groups, "relevance")
    content = [False, True, True, False, False, True, True]
    want = M.normalize_maps(M.unletterbox(phrase_maps(grids, content), geometry), how="minmax")
    np.testing.assert_allclose(result.heatmaps, np.clip(want, 0, 1), atol=1e-5)
    np.testing.assert_array_equal(result.heatmaps[1], result.heatmaps[2])   # red circle
    assert not np.allclose(result.heatmaps[1], result.heatmaps[5])          # blue square
    assert result.settings["method"] == "phrase" and result.settings["shifts"] == 1
    shifted = gr.ground_caption(image, CAPTION, model=captioner, tokenizer=tokenizer,
                                method="relevance", shifts=2)
    assert shifted.settings["shifts"] == 2 and shifted.heatmaps.shape == (7, 40, 48)
    assert (shifted.heatmaps >= 0).all() and (shifted.heatmaps <= 1).all()
    with pytest.raises(ValueError, match="shifts must be a positive integer"):
        gr.ground_caption(image, CAPTION, model=captioner, tokenizer=tokenizer, shifts=0)


def test_gradient_methods_leave_no_captured_layer_alive(captioner, tokenizer):
    import gc

    from groundroll.trace import AttentionLayer

    def alive():
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sum(isinstance(o, AttentionLayer) for o in gc.get_objects())

    before = alive()
    for method in ("relevance", "legrad"):
        gr.ground_caption(_image(), CAPTION, model=captioner, tokenizer=tokenizer,
                          method=method)
    assert alive() == before

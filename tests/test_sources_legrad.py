"""LeGrad maps against two independent paths: the final-score variant through the
capture's own gradient hooks, and the per-layer score at the class token of the last
layer against the model's own final score."""

import numpy as np
import pytest
import torch

from groundroll.adapters import capture
from groundroll.data import shapes
from groundroll.grounding import resolve_model, segment
from groundroll.grounding.legrad import legrad_maps
from groundroll.masks import letterbox_geometry, letterbox_image

PROMPTS = ["a red circle", "a blue star"]


@pytest.fixture(scope="module")
def handle():
    return resolve_model("bundled:shapes-clip")


@pytest.fixture(scope="module")
def image(handle):
    s = shapes.scene(shapes.EVAL_SEED_OFFSET + 3, labels=["red circle", "blue star"])
    return letterbox_image(s.image, letterbox_geometry(s.image.shape[:2], handle.image_size))


def test_final_score_variant_matches_the_capture_gradient_hooks(handle, image):
    got = legrad_maps(handle, image, PROMPTS, score="final")
    # Reference: one backward pass; gradients arrive through capture(grads=True) hooks.
    text = handle.text_embeddings(PROMPTS)
    pixels = handle.pixels([image]).float().repeat(len(PROMPTS), 1, 1, 1)
    pixels.requires_grad_(True)
    with torch.enable_grad(), capture(handle.model, grads=True, streams=["vision"]) as trace:
        emb = handle.image_embeddings(pixels)
        torch.autograd.grad((emb * text).sum(), pixels)   # parameters keep no .grad
    total = sum(g.clamp(min=0).mean(dim=(1, 2)) for g in trace.grads("vision"))
    tokens = trace.tokens["vision"]
    want = total[:, tokens.patches].reshape(len(PROMPTS), *tokens.grid).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_last_layer_class_token_score_is_the_model_score(handle, image):
    per_layer = legrad_maps(handle, image, PROMPTS, score="layer", pool="cls",
                            start_layer=-1)
    final = legrad_maps(handle, image, PROMPTS, score="final", start_layer=-1)
    np.testing.assert_allclose(per_layer, final, rtol=1e-4, atol=1e-7)


def test_maps_are_non_negative_prompt_specific_and_on_the_grid(handle, image):
    maps = legrad_maps(handle, image, PROMPTS)
    assert maps.shape == (2, 12, 12) and maps.dtype == np.float32
    assert (maps >= 0).all() and maps.max() > 0
    assert not np.allclose(maps[0], maps[1])
    # the model keeps no gradients of ours and stays in float32
    assert all(p.grad is None for p in handle.model.parameters())


def test_bad_options_and_families(handle, image):
    with pytest.raises(ValueError, match="score"):
        legrad_maps(handle, image, PROMPTS, score="middle")
    with pytest.raises(ValueError, match="pool"):
        legrad_maps(handle, image, PROMPTS, pool="max")
    with pytest.raises(ValueError, match="start_layer"):
        legrad_maps(handle, image, PROMPTS, start_layer=9)
    coca = resolve_model("bundled:shapes-coca")
    with pytest.raises(ValueError, match="cross"):
        legrad_maps(coca, image, PROMPTS)


def test_segment_with_legrad_localises_objects():
    s = shapes.scene(shapes.EVAL_SEED_OFFSET + 5)
    seg = segment(s.image, s.labels, model="bundled:shapes-clip", method="legrad",
                  background_rule="relative", mask_threshold=0.5, refine="none")
    assert seg.settings["method"] == "legrad"
    # each object's prompt map is higher on the object than off it
    for k, mask in enumerate(s.masks):
        assert seg.heatmaps[k][mask].mean() > seg.heatmaps[k][~mask].mean()

"""Sources through captum and pytorch-grad-cam, and the ensemble of sources."""

import zlib

import numpy as np
import pytest
import torch

from groundroll import masks as M
from groundroll.data import shapes
from groundroll.grounding import prompt_maps, resolve_model
from groundroll.grounding.attribution import captum_maps, gradcam_maps
from groundroll.grounding.ensemble import ensemble_maps

pytest.importorskip("captum")
pytest.importorskip("pytorch_grad_cam")

PROMPTS = ["a red circle", "a blue star"]


@pytest.fixture(scope="module")
def handle():
    return resolve_model("bundled:shapes-clip")


@pytest.fixture(scope="module")
def scene(handle):
    s = shapes.scene(shapes.EVAL_SEED_OFFSET + 3, labels=["red circle", "blue star"])
    g = M.letterbox_geometry(s.image.shape[:2], handle.image_size)
    masks = M.letterbox_image(s.masks.transpose(1, 2, 0).astype(np.uint8), g) > 0
    return M.letterbox_image(s.image, g), masks.transpose(2, 0, 1)


def _no_hooks(model):
    return all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
               for m in model.modules())


def test_saliency_is_the_absolute_input_gradient(handle, scene):
    image, _ = scene
    got = captum_maps(handle, image, PROMPTS, method="saliency", smooth=0)
    text = handle.text_embeddings(PROMPTS)
    pixels = handle.pixels([image]).float().repeat(2, 1, 1, 1).requires_grad_(True)
    with torch.enable_grad():
        logits = handle.logit_scale() * handle.image_embeddings(pixels) @ text.T
        grad, = torch.autograd.grad(logits.diagonal().sum(), pixels)
    np.testing.assert_allclose(got, grad.abs().sum(1).numpy(), rtol=1e-4, atol=1e-6)


def test_integrated_gradients_find_the_objects(handle, scene):
    image, masks = scene
    maps = captum_maps(handle, image, PROMPTS, method="ig", n_steps=8)
    assert maps.shape == (2, 96, 96) and (maps >= 0).all()
    for k in range(2):
        assert maps[k][masks[k]].mean() > 2 * maps[k][~masks.any(0)].mean()


def test_gradcam_on_the_vit_leaves_no_hooks_and_no_gradients(handle, scene):
    image, _ = scene
    maps = gradcam_maps(handle, image, PROMPTS)
    assert maps.shape == (2, 96, 96)
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert _no_hooks(handle.model)
    assert all(p.grad is None for p in handle.model.parameters())


class _Tokenizer:
    # crc32, not hash(): str hashes are salted per process (PYTHONHASHSEED), so ids
    # from hash() would differ between runs.
    def __call__(self, texts):
        ids = torch.zeros(len(texts), 12, dtype=torch.long)
        for i, t in enumerate(texts):
            words = [3 + (zlib.crc32(w.encode()) % 50) for w in t.split()][:10]
            ids[i, 0], ids[i, 1:len(words) + 1], ids[i, len(words) + 1] = 1, torch.tensor(
                words), 63
        return ids


def test_gradcam_gives_cnn_clips_maps():
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=16, vision_cfg=dict(image_size=64, layers=(1, 1, 1, 1), width=8),
        text_cfg=dict(context_length=12, vocab_size=64, width=32, heads=4, layers=1)).eval()
    cnn = resolve_model(model, tokenizer=_Tokenizer())
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    maps = prompt_maps(cnn, image, ["a cat", "a dog"], method="gradcam")
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()
    with pytest.raises(ValueError, match="ViT"):
        prompt_maps(cnn, image, ["a cat"], method="legrad")


def test_ensemble_is_the_weighted_mean_of_normalised_maps(handle, scene):
    image, _ = scene
    legrad = M.resize_maps(M.normalize_maps(prompt_maps(handle, image, PROMPTS,
                                                        method="legrad")), (96, 96))
    naclip = M.resize_maps(M.normalize_maps(prompt_maps(handle, image, PROMPTS,
                                                        method="naclip")), (96, 96))
    one = ensemble_maps(handle, image, PROMPTS, weights={"legrad": 2.0})
    np.testing.assert_allclose(one, legrad, atol=1e-6)
    mix = prompt_maps(handle, image, PROMPTS, method="ensemble",
                      weights={"legrad": 1.0, "naclip": 3.0})
    np.testing.assert_allclose(mix, 0.25 * legrad + 0.75 * naclip, atol=1e-6)
    with pytest.raises(ValueError, match="not a map source"):
        ensemble_maps(handle, image, PROMPTS, weights={"crf": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        ensemble_maps(handle, image, PROMPTS, weights={"legrad": -1.0})

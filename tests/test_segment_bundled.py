"""End to end on the bundled shapes models: the example scene segments, the CLI runs
with its default model, CoCa grounds caption words."""

import json
from pathlib import Path

import numpy as np
import pytest

from groundroll.cli import main
from groundroll.grounding import (DEFAULT_MODEL, caption_heatmaps, load_image,
                                  resolve_model, segment)
from groundroll.zoo import bundled, load

EXAMPLES = Path(__file__).resolve().parents[1] / "groundroll" / "data" / "examples"
INFO = json.loads((EXAMPLES / "shapes_scene.json").read_text())
PROMPTS = [f"a {label}" for label in INFO["labels"]]
# Floors within 25% of the measured values (about 85% of them). The example scene is used
# by no calibration (profiles are calibrated on generated scenes of other seeds).
# Measured by `PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/quality_floors.py`
# (mean IoU of the masks at threshold 0.5): shapes-clip relevance 0.622, maskclip 0.565;
# shapes-clip-short relevance 0.877, maskclip 0.336; rollout 0.000 for both (see below).
MIN_MEAN_IOU = {("shapes-clip", "relevance"): 0.53, ("shapes-clip", "maskclip"): 0.48,
                ("shapes-clip-short", "relevance"): 0.75, ("shapes-clip-short", "maskclip"): 0.285}
# Rollout is one map for every prompt: useless for telling prompts apart (mean IoU 0.0),
# meant to show where the image's class token looks. What it is for is tested instead: its
# mean on object pixels over its mean on background pixels, measured by the same command
# as 2.84 (shapes-clip) and 4.85 (shapes-clip-short).
MIN_ROLLOUT_CONTRAST = {"shapes-clip": 2.4, "shapes-clip-short": 4.1}


def test_the_bundled_shapes_models_exist():
    assert {"shapes-clip", "shapes-clip-short", "shapes-coca"} <= set(bundled())


@pytest.fixture(scope="module")
def clip():
    return load("bundled:shapes-clip")


@pytest.fixture(scope="module")
def clips(clip):
    return {"shapes-clip": clip, "shapes-clip-short": load("bundled:shapes-clip-short")}


def _ious(seg):
    truth = load_image(EXAMPLES / INFO["label_map"])[..., 0]
    return [float((m & (truth == i)).sum() / max((m | (truth == i)).sum(), 1))
            for m, i in zip(seg.masks, INFO["label_ids"])]


@pytest.mark.parametrize("name, method", sorted(MIN_MEAN_IOU))
def test_the_example_scene_segments(clips, name, method):
    clip = clips[name]
    seg = segment(EXAMPLES / INFO["image"], PROMPTS, model=clip, method=method,
                  mask_threshold=0.5, templates=clip.meta.get("prompt_templates"))
    assert seg.labels.shape == tuple(INFO["size"])
    ious = _ious(seg)
    assert np.mean(ious) > MIN_MEAN_IOU[name, method], ious


@pytest.mark.parametrize("name", sorted(MIN_ROLLOUT_CONTRAST))
def test_rollout_is_prompt_agnostic_and_lands_on_the_objects(clips, name):
    handle = resolve_model(clips[name])
    image = EXAMPLES / INFO["image"]
    roll = segment(image, PROMPTS, model=handle, method="rollout", mask_threshold=0.5)
    for k in range(1, len(PROMPTS)):
        np.testing.assert_array_equal(roll.heatmaps[k], roll.heatmaps[0])
    truth = load_image(EXAMPLES / INFO["label_map"])[..., 0]
    objects = np.isin(truth, INFO["label_ids"])
    heat = roll.heatmaps[0]
    contrast = heat[objects].mean() / heat[~objects].mean()
    assert contrast > MIN_ROLLOUT_CONTRAST[name], contrast


def test_cross_attention_on_the_bundled_coca():
    coca = load("bundled:shapes-coca")
    seg = segment(EXAMPLES / INFO["image"], PROMPTS, model=coca, method="cross",
                  mask_threshold=0.5)
    assert seg.heatmaps.shape == (3, *INFO["size"])
    words, maps = caption_heatmaps(EXAMPLES / INFO["image"], INFO["caption"], model=coca)
    assert words[:3] == ["a", "red", "circle"] and maps.shape[0] == len(words)


def test_cli_with_the_default_model(tmp_path):
    out = tmp_path / "out"
    assert main(["segment", str(EXAMPLES / INFO["image"]), "-p", "a red circle",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "shapes_scene.json").read_text())
    assert summary["settings"]["model"] == DEFAULT_MODEL == "bundled:shapes-clip"
    assert (out / "shapes_scene_0_a_red_circle.png").is_file()


# Mean object IoU of a default call (image and prompts only) on the held-out scenes below
# (seeds EVAL_SEED_OFFSET + 200 and + 300; calibration uses others), measured with the
# shipped profiles by `PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/quality_floors.py`:
# shapes 0.824, other sizes 0.853. Floors at about 87% of them.
DEFAULT_CALL_FLOOR = {"shapes": 0.72, "other sizes": 0.74}


def _default_call_scenes():
    from groundroll.data import shapes

    return {"shapes": list(shapes.scenes(6, seed=shapes.EVAL_SEED_OFFSET + 200)),
            "other sizes": [shapes.scene(shapes.EVAL_SEED_OFFSET + 300 + i, size=(200, 150),
                                         n_objects=(2, 5), radius=(0.08, 0.2))
                            for i in range(6)]}


def test_a_default_call_uses_the_shipped_profile_and_finds_background():
    from groundroll.grounding.calibrate import object_ious
    from groundroll.grounding.profiles import bundled_profile

    profile = bundled_profile(load(DEFAULT_MODEL))
    entry = profile.methods[profile.default_method]
    for style, scenes in _default_call_scenes().items():
        ious = []
        for s in scenes:
            seg = segment(s.image, s.labels)
            assert seg.settings["model"] == DEFAULT_MODEL
            assert seg.settings["method"] == profile.default_method
            assert seg.settings["background_rule"] == entry["background_rule"]
            assert seg.settings["mask_threshold"] == entry["threshold"]
            assert (seg.labels == 0).any()
            ious += object_ious(seg.labels, s.masks)
        assert np.mean(ious) >= DEFAULT_CALL_FLOOR[style], (style, np.mean(ious))

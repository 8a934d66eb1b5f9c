"""Postprocessing profiles: background rules against hand-worked cases and the
probability-threshold reference, file round trips, precedence, model checks."""

import json

import numpy as np
import pytest

from groundroll import masks as M
from groundroll.grounding import segment
from groundroll.grounding.profiles import (PROFILE_FORMAT, Profile, background_labels,
                                           bundled_profile, model_fingerprint,
                                           refine_scores, resolve_settings)
from groundroll.zoo import BUNDLED_DIR, load


def _profile(**entry):
    entry = {"background_rule": "relative", "threshold": 0.5, **entry}
    return Profile(model="m", fingerprint="", default_method="legrad",
                   methods={"legrad": entry})


def test_threshold_rule_matches_the_probability_threshold_reference():
    rng = np.random.default_rng(0)
    probs = M.softmax_maps(rng.normal(size=(3, 9, 11)), logit_scale=3.0)
    for t in (0.35, 0.5, 0.7):
        want = M.label_map(probs, background=[2])
        fg_best = probs[:2].max(0)
        want[fg_best < t] = 0
        got = background_labels(probs, probs, n_prompts=2, rule="threshold", threshold=t,
                                background=[2])
        np.testing.assert_array_equal(got, want)


def test_relative_rule_by_hand():
    # prompt 0 spans [0, 4] -> normalised 0, .25, .5, .75, 1; prompt 1 spans [0, 10].
    maps = np.array([[[0.0, 1.0, 2.0, 3.0, 4.0]], [[0.0, 0.0, 10.0, 0.0, 1.0]]])
    probs = M.softmax_maps(M.normalize_maps(maps), logit_scale=10.0)
    got = background_labels(probs, maps, n_prompts=2, rule="relative", threshold=0.6)
    # argmax: 1 (tie at 0 -> first), 1, 2, 1, 1; kept where the winner's map >= 0.6
    np.testing.assert_array_equal(got, [[0, 0, 2, 1, 1]])


def test_otsu_rule_splits_a_bimodal_map():
    m = np.zeros((1, 10, 10))
    m[0, 3:6, 3:6] = 1.0
    m += np.random.default_rng(1).uniform(0, 0.1, size=m.shape)
    from skimage.filters import threshold_otsu

    norm = M.normalize_maps(m)
    got = background_labels(norm, m, n_prompts=1, rule="otsu", threshold=1.0)
    np.testing.assert_array_equal(got > 0, norm[0] >= threshold_otsu(norm[0]))
    assert (got > 0)[3:6, 3:6].all() and (got > 0).sum() < 20
    half = background_labels(norm, m, n_prompts=1, rule="otsu", threshold=0.5)
    np.testing.assert_array_equal(half > 0, norm[0] >= 0.5 * threshold_otsu(norm[0]))


def test_none_rule_labels_every_pixel():
    probs = M.softmax_maps(np.random.default_rng(2).normal(size=(2, 4, 4)))
    assert (background_labels(probs, probs, n_prompts=2) > 0).all()


def test_refine_scores_are_normalised_and_pooled():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:] = 255
    maps = np.random.default_rng(3).uniform(size=(1, 8, 8))
    none = refine_scores(maps, image, refine="none")
    assert none.min() == 0.0 and none.max() == 1.0
    slic = refine_scores(maps, image, refine="slic")
    # superpixels never cross the colour edge: each half keeps its own mean exactly
    np.testing.assert_allclose(slic[0, :, :4].mean(), none[0, :, :4].mean(), rtol=1e-5)


def test_superpixel_pooling_stays_on_its_side_of_a_colour_edge():
    # Left half dark with low scores, right half bright with high scores. Pooling within
    # superpixels that respect the edge keeps each half's sum exactly (a mean over a
    # region replaces its values by their mean) and keeps low and high apart; pooling
    # over the whole image, or a mirrored map, does neither.
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, 8:] = 255
    rng = np.random.default_rng(4)
    maps = np.concatenate([rng.uniform(0.0, 0.45, (16, 8)), rng.uniform(0.55, 1.0, (16, 8))],
                          axis=1)[None]
    none = refine_scores(maps, image, refine="none")
    slic = refine_scores(maps, image, refine="slic")
    for half in (np.s_[:, :8], np.s_[:, 8:]):
        np.testing.assert_allclose(slic[0][half].sum(), none[0][half].sum(), rtol=1e-5)
    assert slic[0, :, :8].max() <= none[0, :, :8].max() + 1e-6
    assert slic[0, :, 8:].min() >= none[0, :, 8:].min() - 1e-6
    assert np.abs(slic - none).max() > 0.1                  # it did pool
    assert slic[0].std() < none[0].std()
    with pytest.raises(ValueError, match="refine"):
        refine_scores(maps, image, refine="crf")


def test_round_trip_and_refusals(tmp_path):
    p = _profile(templates=["a photo of {}."], refine="slic")
    path = p.save(tmp_path / "p.json")
    assert json.loads(path.read_text())["format"] == PROFILE_FORMAT
    assert Profile.load(path) == p
    with pytest.raises(FileExistsError):
        p.save(path)
    p.save(path, force=True)
    data = p.to_dict()
    with pytest.raises(ValueError, match="format"):
        Profile.from_dict({**data, "format": "other/9"})
    with pytest.raises(ValueError, match="unknown settings"):
        Profile.from_dict({**data, "methods": {"legrad": {"colour": 1}}})
    with pytest.raises(ValueError, match="needs a threshold"):
        Profile.from_dict({**data, "methods": {"legrad": {"background_rule": "otsu"}}})
    with pytest.raises(ValueError, match="default_method"):
        Profile.from_dict({**data, "default_method": "relevance"})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        Profile.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        Profile.load(tmp_path / "missing.json")


def test_caller_options_win_over_the_profile():
    p = _profile(refine="slic", templates=["{}"])
    s = resolve_settings(p, "legrad")
    assert (s["background_rule"], s["threshold"], s["refine"]) == ("relative", 0.5, "slic")
    s = resolve_settings(p, "legrad", mask_threshold=0.8)
    assert (s["background_rule"], s["threshold"]) == ("threshold", 0.8)
    s = resolve_settings(p, "legrad", background_rule="relative")
    assert s["threshold"] == 0.5                       # the profile's, same rule
    with pytest.raises(ValueError, match="needs a threshold"):
        resolve_settings(p, "legrad", background_rule="otsu")
    s = resolve_settings(p, "legrad", refine="none", templates=["a {}"])
    assert s["refine"] == "none" and s["templates"] == ["a {}"]
    assert resolve_settings(p, "naclip")["background_rule"] == "none"   # no entry
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        resolve_settings(None, "legrad", background_rule="relative", mask_threshold=1.5)


def test_fingerprints_tell_the_bundled_clips_apart():
    a, b = load("bundled:shapes-clip"), load("bundled:shapes-clip-short")
    assert model_fingerprint(a.model) == model_fingerprint(load("bundled:shapes-clip").model)
    assert model_fingerprint(a.model) != model_fingerprint(b.model)


@pytest.mark.parametrize("name", ["shapes-clip", "shapes-clip-short"])
def test_bundled_profiles_load_and_match_their_model(name):
    assert (BUNDLED_DIR / name / "profiles.json").is_file()
    bundle = load(f"bundled:{name}")
    profile = bundled_profile(bundle)
    profile.check_model(bundle)
    assert profile.default_method in profile.methods
    entry = profile.methods[profile.default_method]
    assert entry["background_rule"] != "none"


def test_a_profile_for_another_model_is_refused():
    image = np.zeros((32, 40, 3), np.uint8)
    other = bundled_profile(load("bundled:shapes-clip-short"))
    with pytest.raises(ValueError, match="fitted on model 'bundled:shapes-clip-short'"):
        segment(image, ["red circle"], model="bundled:shapes-clip", profile=other)

"""Calibration of a profile on a few labelled images: Python and CLI, bad input named
item by item, and a calibrated default call at least as good as the bundled default."""

import json

import numpy as np
import pytest
from PIL import Image

from groundroll.cli import main
from groundroll.data import shapes
from groundroll.grounding import segment
from groundroll.grounding.calibrate import CalibrationError, calibrate, object_ious
from groundroll.grounding.profiles import Profile

MODEL = "bundled:shapes-clip"


def _items(n, seed):
    return [{"image": s.image, "masks": s.masks, "labels": list(s.labels)}
            for s in shapes.scenes(n, seed=seed)]


@pytest.fixture(scope="module")
def fitted():
    return calibrate(_items(4, 321), model=MODEL, methods=["legrad", "naclip"],
                     progress=False)


def test_calibrate_fits_every_method_and_picks_the_best(fitted):
    assert set(fitted.methods) == {"legrad", "naclip"}
    scores = fitted.calibration["mean_object_iou"]
    assert fitted.default_method == max(scores, key=scores.get)
    assert fitted.calibration["images"] == 4
    for entry in fitted.methods.values():
        assert entry["background_rule"] in ("relative", "otsu", "threshold")
        assert entry["templates"]                 # the bundle's prompt templates


def test_a_calibrated_default_call_is_at_least_as_good(fitted, tmp_path):
    path = fitted.save(tmp_path / "profile.json")
    held_out = _items(5, shapes.EVAL_SEED_OFFSET + 40)

    def mean_iou(**kw):
        return np.mean([np.mean(object_ious(segment(it["image"], it["labels"],
                                                    model=MODEL, **kw).labels,
                                            it["masks"])) for it in held_out])
    plain = mean_iou(method=fitted.default_method)
    calibrated = mean_iou(profile=path)
    assert calibrated >= plain - 1e-9
    # the calibrated profile's own rule is the one used
    seg = segment(held_out[0]["image"], held_out[0]["labels"], model=MODEL, profile=path)
    entry = fitted.methods[fitted.default_method]
    assert seg.settings["background_rule"] == entry["background_rule"]
    assert seg.settings["mask_threshold"] == entry["threshold"]


def test_bad_items_are_reported_by_name():
    good = _items(1, 5)[0]
    bad = [dict(good, name="ok.png"),
           {"image": good["image"], "name": "unlabelled.png"},
           dict(good, name="strange.png", labels=["pink cloud"] + good["labels"][1:])]
    with pytest.raises(CalibrationError) as err:
        calibrate(bad, model=MODEL, methods="legrad", prompts=list(good["labels"]),
                  progress=False)
    text = str(err.value)
    assert "unlabelled.png: no masks" in text
    assert "strange.png: class names ['pink cloud'] are not among the prompts" in text
    assert "ok.png" not in text
    lm = np.zeros(good["image"].shape[:2], np.int32)
    lm[:3, :3] = 7
    with pytest.raises(CalibrationError, match=r"scene\.png: label values \[7\]"):
        calibrate([{"image": good["image"], "label_map": lm, "name": "scene.png"}],
                  model=MODEL, methods="legrad", prompts=["red circle"], progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        calibrate([good], model=MODEL, methods="crf", progress=False)


def test_calibrate_reads_a_datasets_dataset():
    pytest.importorskip("datasets")
    profile = calibrate(shapes.as_dataset(2, seed=11), model=MODEL, methods="legrad",
                        progress=False)
    assert profile.calibration["images"] == 2


def _write_labelled(tmp_path, n):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    classes = list(shapes.LABELS)
    for i, s in enumerate(shapes.scenes(n, seed=77)):
        Image.fromarray(s.image).save(images / f"scene{i}.png")
        lm = np.zeros(s.image.shape[:2], np.uint8)
        for m, lab in zip(s.masks, s.labels):
            lm[m] = classes.index(lab) + 1
        Image.fromarray(lm).save(masks / f"scene{i}.png")
    return sorted(images.iterdir()), masks, classes


def test_cli_calibrate_then_segment_with_the_profile(tmp_path, capsys):
    images, masks, classes = _write_labelled(tmp_path, 3)
    out = tmp_path / "profile.json"
    args = ["calibrate", *map(str, images), "--masks", str(masks), "--model", MODEL,
            "--method", "legrad", "--out", str(out)]
    for c in classes:
        args += ["-c", c]
    assert main(args) == 0
    profile = Profile.load(out)
    assert profile.default_method == "legrad" and profile.model == MODEL
    assert main(args) == 2                                    # exists, no --force
    assert "--force" in capsys.readouterr().err
    seg_out = tmp_path / "seg"
    assert main(["segment", str(images[0]), "-p", "red circle", "--profile", str(out),
                 "--model", MODEL, "--out", str(seg_out)]) == 0
    summary = json.loads((seg_out / f"{images[0].stem}.json").read_text())
    assert summary["settings"]["method"] == "legrad"
    assert summary["settings"]["profile"] == MODEL
    # the same profile is refused for another model, before anything is written
    assert main(["segment", str(images[0]), "-p", "red circle", "--profile", str(out),
                 "--model", "bundled:shapes-clip-short", "--out",
                 str(tmp_path / "other")]) == 2
    assert "fitted on model" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_cli_calibrate_names_images_without_label_maps(tmp_path, capsys):
    images, masks, classes = _write_labelled(tmp_path, 2)
    (masks / f"{images[1].stem}.png").unlink()
    code = main(["calibrate", *map(str, images), "--masks", str(masks), "-c", classes[0],
                 "--out", str(tmp_path / "p.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert str(images[1]) in err and str(images[0]) not in err
    assert not (tmp_path / "p.json").exists()


def test_every_image_is_partitioned_once_for_all_sources(monkeypatch):
    import importlib

    seg_module = importlib.import_module("groundroll.grounding.segment")
    calls = []
    real = seg_module.M.superpixel_partitions
    monkeypatch.setattr(seg_module.M, "superpixel_partitions",
                        lambda image, **kw: calls.append(image.shape) or real(image, **kw))
    items = _items(2, 99)
    calibrate(items, model=MODEL, methods=["legrad", "relevance"],
              refine=("none", "superpixels"), progress=False)
    assert len(calls) == len(items)          # 2 sources x (fit + shipped check): once each

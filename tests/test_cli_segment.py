"""`groundroll segment`: outputs, --force, bad inputs writing nothing, image formats."""

import json

import numpy as np
import pytest
from PIL import Image

import groundroll.grounding as grounding
from groundroll.cli import main

from test_grounding_support import tiny_bundle


@pytest.fixture(scope="module")
def handle():
    return grounding.resolve_model(tiny_bundle("open_clip"))


@pytest.fixture
def tiny(monkeypatch, handle):
    # The CLI takes a model spec; tests stand a tiny model in for it.
    monkeypatch.setattr(grounding, "resolve_model", lambda spec, **kw: handle)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name, mode in [("rgb.png", "RGB"), ("gray.png", "L"), ("alpha.png", "RGBA"),
                       ("pal.png", "P"), ("deep.png", "I;16")]:
        im = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
        if mode == "I;16":
            im = Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257)
        else:
            im = im.convert(mode)
        im.save(tmp_path / name)
        paths.append(tmp_path / name)
    return paths


def _run(*args):
    return main(["segment", *map(str, args)])


def test_writes_every_output_for_every_image_format(tiny, images, tmp_path):
    out = tmp_path / "out"
    code = _run(*images, "-p", "red circle", "-p", "blue star", "--out", out,
                "--mask-threshold", "0.5", "--refine", "slic")
    assert code == 0
    for path in images:
        stem = path.stem
        for suffix in ("_labels.png", "_0_red_circle.png", "_1_blue_star.png",
                       "_overlay.png", ".json"):
            assert (out / f"{stem}{suffix}").is_file()
        summary = json.loads((out / f"{stem}.json").read_text())
        assert summary["prompts"] == ["red circle", "blue star"]
        assert len(summary["scores"]) == 2 and len(summary["boxes"]) == 2
        assert summary["settings"]["refine"] == "slic"
        assert summary["settings"]["mask_threshold"] == 0.5
        assert Image.open(out / f"{stem}_labels.png").size == (40, 24)


def test_existing_outputs_need_force_and_nothing_is_written(tiny, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(images[0], "-p", "a", "--out", out) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # A second image would be new, but the first one's outputs exist: write nothing.
    assert _run(images[1], images[0], "-p", "a", "--out", out) == 2
    assert "--force" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert _run(images[1], images[0], "-p", "a", "--out", out, "--force") == 0
    # Four files per image plus one manifest per image's set.
    assert len(list(out.iterdir())) == 10
    assert len([p for p in out.iterdir() if p.name.startswith(".")]) == 2


@pytest.mark.parametrize("problem", ["missing", "corrupt", "no_prompt", "empty_prompt",
                                     "empty_background", "bad_threshold", "same_stem"])
def test_bad_input_fails_clearly_and_writes_nothing(tiny, images, tmp_path, capsys, problem):
    out = tmp_path / "out"
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG garbage")
    other = tmp_path / "sub"
    other.mkdir()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(other / "rgb.png")
    args = {
        "missing": [images[0], tmp_path / "missing.png", "-p", "a"],
        "corrupt": [images[0], bad, "-p", "a"],
        "no_prompt": [images[0]],
        "empty_prompt": [images[0], "-p", "a", "-p", ""],
        "empty_background": [images[0], "-p", "a", "--background", " "],
        "bad_threshold": [images[0], "-p", "a", "--mask-threshold", "2"],
        "same_stem": [images[0], other / "rgb.png", "-p", "a"],
    }[problem]
    code = _run(*args, "--out", out)
    err = capsys.readouterr().err
    assert code != 0 and "error" in err
    if problem in ("missing", "corrupt"):
        assert ("missing.png" if problem == "missing" else "corrupt.png") in err
    assert not out.exists()


def test_unknown_options_are_usage_errors(tiny, images, tmp_path):
    assert _run(images[0], "-p", "a", "--out", tmp_path / "o", "--method", "magic") == 2
    assert main([]) == 2


@pytest.mark.parametrize("extra, message", [
    (["--min-size", "-3"], "--min-size must be >= 0"),
    (["--template", "a photo"], "exactly one {}"),
    (["--template", "{} and {}"], "exactly one {}"),
    (["--max-pixels", "100"], "--max-pixels 960"),
])
def test_option_errors_come_before_the_model_loads(images, tmp_path, monkeypatch, capsys,
                                                   extra, message):
    def must_not_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(grounding, "resolve_model", must_not_load)
    out = tmp_path / "out"
    assert _run(images[0], "-p", "a", "--out", out, *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_the_threshold_option_is_named_mask_threshold(capsys):
    from groundroll.cli import build_parser

    parser = build_parser()
    base = ["segment", "x.png", "-p", "a", "--out", "o"]
    assert parser.parse_args(base + ["--mask-threshold", "0.4"]).mask_threshold == 0.4
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--threshold", "0.4"])
    assert "unrecognized arguments: --threshold" in capsys.readouterr().err


def test_a_directory_as_image_is_named(tiny, tmp_path, capsys):
    assert _run(tmp_path, "-p", "a", "--out", tmp_path / "out") == 2
    assert "is a directory, not an image file" in capsys.readouterr().err


def test_version(capsys):
    import groundroll

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"groundroll {groundroll.__version__}"


def test_force_with_fewer_prompts_removes_the_old_masks(tiny, images, tmp_path):
    out = tmp_path / "out"
    assert _run(images[0], "-p", "a", "-p", "b", "-p", "c", "--out", out) == 0
    assert (out / "rgb_2_c.png").is_file()
    assert _run(images[0], "-p", "a", "--out", out, "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".rgb.groundroll.json", "rgb.json", "rgb_0_a.png", "rgb_labels.png",
        "rgb_overlay.png"]

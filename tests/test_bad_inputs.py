"""Bad input as a hostile new user gives it: each ends in a result or a one-line error of
groundroll's own type, before any model runs where it can, never a traceback."""

from __future__ import annotations

import errno
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import groundroll as gr
from groundroll import app
from groundroll._options import OptionError, check_align_options, check_segment_options
from groundroll.alignment import Alignment
from groundroll.alignment.io import AlignmentFormatError
from groundroll.cli import main
from groundroll.grounding.profiles import Profile, ProfileFormatError

BUNDLED = Path(gr.__file__).parent / "zoo" / "bundled"


def _one_line_error(capsys, word: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if "error" in l]
    assert len(lines) == 1 and word in lines[0], err
    return lines[0]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "scene.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    return path


@pytest.fixture
def no_model(monkeypatch):
    import groundroll.grounding as grounding

    def must_not_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(grounding, "resolve_model", must_not_load)


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("options", [
    dict(mask_threshold=float("nan")), dict(mask_threshold="0.5"), dict(mask_threshold=1.5),
    dict(mask_threshold=True), dict(logit_scale=float("nan")), dict(logit_scale=-1.0),
    dict(logit_scale=0), dict(logit_scale=math.inf), dict(min_size=-1), dict(min_size=2.5),
    dict(max_side=0), dict(max_pixels=0),
    dict(mask_threshold=0.0, background_rule="otsu"),
])
def test_segment_numbers_are_refused(options):
    """Item 9: no NaN, negative or string slips through (and "0.5" is not stored)."""
    with pytest.raises(OptionError):
        check_segment_options(**options)


def test_segment_numbers_that_are_fine():
    assert check_segment_options(mask_threshold=np.float32(0.25), logit_scale=100,
                                 min_size=np.int64(3)) == dict(
        mask_threshold=0.25, logit_scale=100.0, min_size=3)
    assert check_segment_options(mask_threshold=2.0, background_rule="otsu") == {
        "mask_threshold": 2.0}


@pytest.mark.parametrize("value", [float("nan"), 2, -1, "0.3", math.inf])
def test_link_threshold_is_a_probability(value):
    with pytest.raises(OptionError, match="link_threshold"):
        check_align_options(link_threshold=value)
    with pytest.raises(OptionError, match="link_threshold"):
        gr.extract_links(np.eye(2), extraction="threshold", link_threshold=value)


def test_segment_refuses_bad_numbers_and_source_options_before_computing():
    seg_model = "bundled:shapes-clip-short"
    image = np.zeros((32, 32, 3), np.uint8)
    for kw in (dict(logit_scale=float("nan")), dict(mask_threshold="0.5"),
               dict(method="naclip", source_options={"sigma": float("nan")}),
               dict(method="legrad", source_options={"start_layer": "a"}),
               dict(method="legrad", source_options={"start_layer": 1.5})):
        with pytest.raises(OptionError):
            gr.segment(image, ["red circle"], model=seg_model, **kw)


def test_segment_dataset_checks_the_same_numbers(tmp_path):
    from groundroll.distributed import segment_dataset

    for kw in (dict(mask_threshold="0.5"),
               dict(options={"logit_scale": -2.0}),
               dict(method="naclip", options={"source_options": {"sigma": -1}}),
               dict(options=gr.SegmentOptions(method="naclip"), min_size=-1)):
        with pytest.raises(OptionError):
            segment_dataset([str(tmp_path / "x.png")], ["a"], out=tmp_path / "o",
                            engine="local", **kw)
    with pytest.raises(TypeError, match="as options= .* not segment_options="):
        segment_dataset([str(tmp_path / "x.png")], ["a"], out=tmp_path / "o",
                        engine="local", segment_options={"logit_scale": 2.0})
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- CLI


def test_more_prompts_than_a_label_map_holds_is_refused_before_the_model(
        image, tmp_path, no_model, capsys):
    """Item 7: 256 prompts used to fail after the whole computation."""
    prompts = [x for k in range(256) for x in ("-p", f"thing {k}")]
    assert main(["segment", str(image), *prompts, "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "at most 255")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, word", [
    (["--mask-threshold", "nan"], "--mask-threshold"),
    (["--max-pixels", "0"], "--max-pixels"),
])
def test_cli_numbers(image, tmp_path, no_model, capsys, extra, word):
    assert main(["segment", str(image), "-p", "a", "--out", str(tmp_path / "o"),
                 *extra]) == 2
    _one_line_error(capsys, word)


@pytest.mark.parametrize("extra, word", [
    (["--max-length", "-5"], "--max-length"),
    (["--link-threshold", "nan"], "--link-threshold"),
    (["--model", "bundled:shapes-clip-short"], "not an encoder-decoder"),
])
def test_align_cli_bad_options_are_one_line(tmp_path, capsys, extra, word):
    """Item 8: --max-length -5 (OverflowError) and a CLIP as --model (AttributeError)."""
    src = tmp_path / "src.txt"
    src.write_text("su tuga vefin\n")
    assert main(["align", "--src", str(src), "--out", str(tmp_path / "a.txt"),
                 *extra]) == 2
    _one_line_error(capsys, word)
    assert not (tmp_path / "a.txt").exists()


@pytest.mark.parametrize("content, word", [
    (json.dumps({"format": "groundroll-profile/1", "model": "m", "default_method": "a",
                 "methods": 5}), "methods must be a JSON object"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    (json.dumps({"format": "groundroll-profile/1", "model": "m", "default_method": "a",
                 "methods": {"a": {"background_rule": "threshold", "threshold": "0.5"}}}),
     "threshold"),
    (json.dumps({"format": "groundroll-profile/1", "model": 3, "default_method": "a",
                 "methods": {}}), "model must be a string"),
    (b"\xff\xfe\x00", "not valid JSON"),
])
def test_malformed_profiles(tmp_path, image, no_model, capsys, content, word):
    path = tmp_path / "profile.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ProfileFormatError, match=word):
        Profile.load(path)
    assert main(["segment", str(image), "-p", "a", "--out", str(tmp_path / "o"),
                 "--profile", str(path)]) == 2
    _one_line_error(capsys, "--profile")


def test_report_onto_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    import groundroll.explore.cli as report_cli

    saved = tmp_path / "alignment.json"
    Alignment(["a", "b"], ["x"], np.ones((1, 2)), {(0, 0)}).save(saved)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report_cli, "write_report", full)
    out = tmp_path / "r.html"
    assert main(["report", "align", "--load", str(saved), "--out", str(out)]) == 1
    _one_line_error(capsys, "No space left on device")
    assert not out.exists()


def test_an_open_clip_checkpoint_that_is_not_one(tmp_path):
    """Item 8: garbage where the weights should be was an UnpicklingError traceback."""
    from groundroll.zoo.openclip import load_open_clip_dir

    folder = tmp_path / "model"
    shutil.copytree(BUNDLED / "shapes-clip-short", folder)
    (folder / "open_clip_model.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="cannot load open_clip model") as info:
        load_open_clip_dir(folder)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- alignments


@pytest.mark.parametrize("edit, word", [
    (lambda d: d.update(links=[[1e999, 0]]), "integer word indices"),
    (lambda d: d.update(links=[[-1, 0]]), "outside"),
    (lambda d: d.update(links=[[2, 0]]), "outside"),
    (lambda d: d.update(links=[[0, 1]]), "outside"),
    (lambda d: d.update(links=[[True, 0]]), "integer"),
    (lambda d: d.update(links="0-0"), "must be a list"),
    (lambda d: d.update(scores=[[0, 0, float("nan")]]), "finite"),
    (lambda d: d.update(scores=[[5, 0, 1.0]]), "outside"),
    (lambda d: d.update(matrix=[[1.0]]), "shape"),
    (lambda d: d.update(src_words="ab"), "list of strings"),
    (lambda d: d.pop("links"), "missing"),
    (lambda d: d.update(settings="x"), "settings"),
])
def test_alignment_load_checks_every_link(tmp_path, edit, word):
    """Items 8 and 10: out-of-range links failed later, far from the cause."""
    path = tmp_path / "a.json"
    good = Alignment(["a", "b"], ["x"], np.array([[0.7, 0.3]]), {(0, 0)}, {(0, 0): 0.7})
    good.save(path)
    assert Alignment.load(path).links == {(0, 0)}
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(AlignmentFormatError, match=word):
        Alignment.load(path)


def test_alignment_load_of_a_deeply_nested_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("[" * 100000)
    with pytest.raises(AlignmentFormatError):
        Alignment.load(path)


# ----------------------------------------------------------------------------- app


def test_app_refuses_a_remote_host_without_allow_remote(capsys, monkeypatch):
    """Item 11: 0.0.0.0 needs --allow-remote, and --any-model is never served remotely."""
    served = []
    monkeypatch.setattr(app, "serve", lambda **kw: served.append(kw))
    monkeypatch.setattr(app, "_gradio", lambda: None)
    assert main(["app", "--host", "0.0.0.0"]) == 2
    _one_line_error(capsys, "--allow-remote")
    assert main(["app", "--host", "0.0.0.0", "--allow-remote", "--any-model"]) == 2
    _one_line_error(capsys, "--any-model")
    assert served == []
    assert main(["app", "--host", "0.0.0.0", "--allow-remote"]) == 0
    err = capsys.readouterr().err
    assert "other machines" in err and "bundled:toy-mt" in err
    assert served[-1]["any_model"] is False
    assert main(["app", "--any-model"]) == 0                   # loopback: the user's call
    assert served[-1]["any_model"] is True
    assert app.is_loopback("localhost") and not app.is_loopback("0.0.0.0")


def test_served_app_accepts_only_the_offered_models(tmp_path):
    """A client cannot make the server open a path (and learn whether it exists)."""
    existing = tmp_path / "exists.pt"
    existing.write_bytes(b"x")
    offered = ["bundled:toy-mt"]
    answers = [app.align_view("a b", "", spec, allowed=offered)[2]
               for spec in (str(existing), str(tmp_path / "missing.pt"),
                            "hf:someone/model", "open_clip:ViT-B-32@" + str(existing))]
    assert all("offers only" in a for a in answers)
    assert len(set(answers)) == 1                       # no difference to learn from
    image = np.zeros((8, 8, 3), np.uint8)
    assert "offers only" in app.segment_view(image, "a", str(existing),
                                             allowed=["bundled:shapes-clip"])[3]


def test_built_app_drop_downs_take_no_typed_spec():
    pytest.importorskip("gradio")
    demo = app.build_app()
    dropdowns = [b for b in demo.blocks.values() if type(b).__name__ == "Dropdown"
                 and (b.elem_id or "").endswith("model")]
    assert len(dropdowns) == 2 and not any(d.allow_custom_value for d in dropdowns)
    demo = app.build_app(any_model=True)
    assert all(b.allow_custom_value for b in demo.blocks.values()
               if type(b).__name__ == "Dropdown" and (b.elem_id or "").endswith("model"))

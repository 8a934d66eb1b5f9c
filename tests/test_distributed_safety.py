"""Bulk runs never lose a file: reserved names, state folders that are links, and run
state that was edited by hand (local engine, bundled model)."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

import groundroll as gr
from groundroll._atomic import OutputPathError
from groundroll.cli import main
from groundroll.data.shapes import EVAL_SEED_OFFSET, scene
from groundroll.distributed import STATE_DIR, SettingsMismatchError, segment_dataset
from groundroll.distributed import segment as dseg
from groundroll.distributed._state import RunState, plan_shards

PROMPTS = ["red circle", "blue star"]


@pytest.fixture(scope="module")
def bundle():
    return gr.load("bundled:shapes-clip-short")


def _images(folder, names):
    folder.mkdir(exist_ok=True)
    for k, name in enumerate(names):
        Image.fromarray(scene(EVAL_SEED_OFFSET + k, size=(32, 32)).image).save(folder / name)
    return folder


def _run(images, out, bundle, **kw):
    return segment_dataset(images, PROMPTS, model=bundle, out=out, engine="local",
                           progress=False, shard_size=2, batch_size=2, **kw)


def _tree(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() and not p.is_symlink()
                                         else "link" if p.is_symlink() else "dir")
            for p in sorted(folder.rglob("*"))}


def test_an_image_named_like_a_combined_output_is_refused_before_any_work(bundle, tmp_path,
                                                                          monkeypatch):
    """Item 2: coco.png would write coco.json over the combined COCO file."""
    images = _images(tmp_path / "in", ["coco.png", "b.png"])
    calls = []
    monkeypatch.setattr(dseg.SegmentWorker, "segment_one",
                        lambda self, *a: calls.append(a) or {})
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="coco.json.*combined output"):
        _run(images, out, bundle)
    assert not out.exists() and calls == []
    # Resume notices too: the check is part of planning, not of a fresh start.
    out.mkdir()
    with pytest.raises(ValueError, match="coco"):
        _run(images, out, bundle, resume=True)
    assert list(out.iterdir()) == []


def test_two_images_whose_files_would_collide_are_refused():
    with pytest.raises(ValueError, match="a_0_labels.png"):
        dseg.check_output_names(["a", "a_0"], ["labels"])
    dseg.check_output_names(["a", "b", "failures", "masks"], PROMPTS)   # no clash


def test_cli_bulk_run_over_a_folder_with_coco_png(bundle, tmp_path, capsys, monkeypatch):
    images = _images(tmp_path / "in", ["coco.png"])
    out = tmp_path / "out"
    code = main(["segment", str(images), "-p", "red circle", "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "coco.json" in err and "Traceback" not in err
    assert not out.exists()


def test_a_users_coco_json_in_out_is_not_overwritten_without_force(bundle, tmp_path):
    images = _images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "coco.json").write_text("my annotations")
    with pytest.raises(FileExistsError, match="coco.json"):
        _run(images, out, bundle)
    assert (out / "coco.json").read_text() == "my annotations"


@pytest.mark.parametrize("what", ["state", "done", "run.json"])
def test_a_state_folder_that_is_a_link_is_refused(bundle, tmp_path, what):
    """Item 4: records are never written, nor files deleted, through a link."""
    images = _images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.json").write_text("keep")
    (elsewhere / "run.json").write_text("keep too")
    out = tmp_path / "out"
    if what == "state":
        out.mkdir()
        os.symlink(elsewhere, out / STATE_DIR)
    else:
        _run(images, out, bundle)
        target = out / STATE_DIR / ("done" if what == "done" else "run.json")
        if target.is_dir():
            for p in target.iterdir():
                p.unlink()
            target.rmdir()
            os.symlink(elsewhere, target)
        else:
            target.unlink()
            os.symlink(elsewhere / "run.json", target)
    before = _tree(elsewhere)
    for kw in ({"force": True}, {"resume": True}):
        with pytest.raises(OutputPathError, match="symbolic link"):
            _run(images, out, bundle, **kw)
    assert _tree(elsewhere) == before


@pytest.mark.parametrize("manifest, match", [
    ([1, 2], "not a groundroll-run/1 manifest"),
    ({"format": "groundroll-run/1", "settings": "a string"}, "'settings' is not"),
    ("[" * 50000, "cannot read"),
])
def test_resume_with_a_malformed_run_json_is_a_one_line_error(bundle, tmp_path, manifest,
                                                              match):
    images = _images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    _run(images, out, bundle)
    run_json = out / STATE_DIR / "run.json"
    run_json.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    with pytest.raises(SettingsMismatchError, match=match):
        _run(images, out, bundle, resume=True)


@pytest.mark.parametrize("edit", [
    lambda r: r.pop("images"),
    lambda r: r.update(images="x"),
    lambda r: r["images"].pop(),
    lambda r: r["images"][0].update(key="someone-else"),
    lambda r: r["images"][0].pop("height"),
    lambda r: r["images"][0]["annotations"].append({"bbox": [1e999]}),
    lambda r: r["images"][0].update(ok="yes"),
])
def test_a_hand_edited_done_record_is_redone_not_trusted(bundle, tmp_path, edit):
    images = _images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    first = _run(images, out, bundle)
    coco = (out / "coco.json").read_bytes()
    [record_path] = (out / STATE_DIR / "done").glob("*.json")
    record = json.loads(record_path.read_text())
    edit(record)
    record_path.write_text(json.dumps(record))
    again = _run(images, out, bundle, resume=True)
    assert (again.processed, again.skipped) == (2, 0)
    assert (out / "coco.json").read_bytes() == coco
    assert first.total == again.total == 2


def test_run_state_records_that_are_not_objects_are_redone(tmp_path):
    shards = plan_shards(["a", "b"], 1)
    state = RunState.open(tmp_path / "s", settings={"x": 1}, shards=shards, resume=False,
                          force=False)
    state.complete(shards[0], {"images": []})
    (tmp_path / "s" / "done" / f"{shards[1].id}.json").write_text("[1, 2]")
    again = RunState.open(tmp_path / "s", settings={"x": 1}, shards=shards, resume=True,
                          force=False)
    assert list(again.done) == [shards[0].id]

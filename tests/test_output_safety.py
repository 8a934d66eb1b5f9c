"""Nothing lost, nothing exposed: the output-writing path never deletes what it did not
write, never writes through a symbolic link, cleans up after signals, and the reports
that carry data text escape it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import groundroll._atomic as atomic
from groundroll._atomic import check_set, owned_files, read_manifest
from groundroll.grounding import Segmentation

TESTS = Path(__file__).resolve().parent


def _seg(prompts=("a cat", "dog")) -> Segmentation:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, len(prompts) + 1, (12, 16)).astype(np.int32)
    masks = np.stack([labels == k + 1 for k in range(len(prompts))])
    return Segmentation(labels, masks, masks.astype(np.float32),
                        np.zeros(len(prompts), np.float32), list(prompts),
                        image=rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))


def _tree(folder: Path) -> dict:
    """Every file under ``folder`` (relative path -> bytes), links as their target."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_file():
                out[rel] = path.read_bytes()
    return out


# ----------------------------------------------------------------------------- manifests


def test_manifest_records_a_digest_per_file(tmp_path):
    paths = _seg().save(tmp_path, stem="x")
    data = json.loads((tmp_path / ".x.groundroll.json").read_text())
    assert sorted(data["files"]) == sorted(p.name for p in paths.values())
    import hashlib

    for p in paths.values():
        assert data["sha256"][p.name] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert sorted(owned_files(tmp_path, ".x.groundroll.json")) == sorted(data["files"])


def test_a_hand_edited_manifest_cannot_make_force_delete_a_users_file(tmp_path):
    """Item 3: the manifest names the user's file (with or without a made-up digest)."""
    _seg(("one", "two")).save(tmp_path, stem="x")
    victim = tmp_path / "thesis.tex"
    victim.write_text("years of work")
    manifest = tmp_path / ".x.groundroll.json"
    data = json.loads(manifest.read_text())
    data["files"].append("thesis.tex")
    data["sha256"]["thesis.tex"] = "0" * 64
    manifest.write_text(json.dumps(data))
    _seg(("one",)).save(tmp_path, stem="x", force=True)
    assert victim.read_text() == "years of work"
    # An older manifest without digests: its files are never removed either.
    manifest.write_text(json.dumps({"tool": "groundroll", "files": ["thesis.tex"]}))
    _seg(("one",)).save(tmp_path, stem="x", force=True)
    assert victim.read_text() == "years of work"


def test_a_file_edited_since_it_was_written_is_not_removed(tmp_path):
    first = _seg(("one", "two")).save(tmp_path, stem="x")
    first["mask_1"].write_bytes(b"my own notes now")
    second = _seg(("one",)).save(tmp_path, stem="x", force=True)
    assert first["mask_1"].read_bytes() == b"my own notes now"
    assert all(p.is_file() for p in second.values())


def test_manifest_entries_outside_the_folder_or_hidden_are_ignored(tmp_path):
    m = tmp_path / ".m.json"
    m.write_text(json.dumps({"tool": "groundroll",
                             "files": ["../x", "/etc/passwd", ".other.groundroll.json",
                                       "a\\b", "", 5, None, "ok.png"]}))
    assert read_manifest(m) == {"ok.png": None}
    m.write_text("[" * 100000)                      # deeply nested: not a manifest
    assert read_manifest(m) == {}


def test_manifest_left_when_visible_outputs_were_deleted(tmp_path):
    """Item 6: the rerun without --force succeeds instead of failing after the model ran."""
    paths = _seg().save(tmp_path, stem="x")
    for p in paths.values():
        p.unlink()
    check_set(tmp_path, [p.name for p in paths.values()], ".x.groundroll.json")
    again = _seg().save(tmp_path, stem="x")
    assert all(p.is_file() for p in again.values())
    # Some of the earlier set still there: refused up front without --force.
    paths["overlay"].unlink()
    _seg(("other",)).output_paths(tmp_path, stem="x")
    with pytest.raises(FileExistsError, match="--force"):
        _seg(("other",)).save(tmp_path, stem="x")


def test_cli_rerun_after_outputs_deleted_by_hand(tmp_path, monkeypatch, capsys):
    import groundroll.grounding as grounding
    from PIL import Image

    from groundroll.cli import main
    from test_grounding_support import tiny_bundle

    handle = grounding.resolve_model(tiny_bundle("open_clip"))
    monkeypatch.setattr(grounding, "resolve_model", lambda spec, **kw: handle)
    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    out = tmp_path / "out"
    assert main(["segment", str(image), "-p", "a", "--out", str(out)]) == 0
    for p in out.iterdir():
        if not p.name.startswith("."):
            p.unlink()
    assert main(["segment", str(image), "-p", "a", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    assert (out / "scene_labels.png").is_file()


# ----------------------------------------------------------------------------- symlinks


def test_outputs_are_never_written_through_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.json").write_text("outside")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside / "x.json", out / "x.json")
    before = _tree(outside)
    with pytest.raises(FileExistsError):
        _seg().save(out, stem="x")
    _seg().save(out, stem="x", force=True)             # the link is replaced, not followed
    assert _tree(outside) == before
    assert not (out / "x.json").is_symlink()
    # A dangling link at an output name counts as existing.
    os.symlink(tmp_path / "nowhere", out / "y_labels.png")
    with pytest.raises(FileExistsError):
        _seg().save(out, stem="y")


# ----------------------------------------------------------------------------- audit


def test_audit_force_keeps_other_files_and_refuses_a_plain_file(tmp_path):
    """Item 1: --force replaces the audit's own files, nothing else in the folder."""
    from groundroll.auditing import Audit

    a = Audit("align", [dict(index=0, label="x ||| y", spearman=1.0, iou_top=1.0,
                             mass_moved=0.0, aer=0.0)],
              dict(spearman=1.0, spearman_median=1.0, iou_top=1.0, iou_top_median=1.0,
                   mass_moved=0.0, mass_moved_median=0.0, aer=0.0, aer_median=0.0, n=1),
              [np.eye(2)], [np.eye(2)], dict(model_a="A", model_b="B", top=0.1))
    out = tmp_path / "folder"
    out.mkdir(mode=0o755)
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "deep.txt").write_text("deep")
    a.save(out, figure=False)
    mode = out.stat().st_mode & 0o777
    with pytest.raises(FileExistsError, match="force"):
        a.save(out, figure=False)
    a.save(out, force=True, figure=False)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "sub" / "deep.txt").read_text() == "deep"
    assert out.stat().st_mode & 0o777 == mode == 0o755
    assert (out / "audit.json").is_file()
    plain = tmp_path / "plain"
    plain.write_text("a file")
    with pytest.raises(NotADirectoryError):
        a.save(plain, force=True, figure=False)
    assert plain.read_text() == "a file"


def test_cli_audit_force_onto_a_folder_and_a_file(tmp_path, capsys):
    from groundroll.cli import main

    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    argv = ["audit", "bundled:toy-mt", "bundled:toy-mt", "--toy", "2", "--quiet", "--out"]
    assert main(argv + [str(out), "--force"]) == 0
    assert (out / "keep.txt").read_text() == "keep" and (out / "audit.md").is_file()
    plain = tmp_path / "plain.txt"
    plain.write_text("a file")
    assert main(argv + [str(plain), "--force"]) == 2
    err = capsys.readouterr().err
    assert "not a directory" in err and "Traceback" not in err
    assert plain.read_text() == "a file"


def test_audit_markdown_escapes_html_and_markdown(tmp_path):
    """Item 12: a sentence with <script> is text when audit.md is rendered."""
    from groundroll.auditing import Audit

    label = '<script>alert(1)</script> | ![x](javascript:alert(2)) <img src=x onerror=y>'
    a = Audit("align", [dict(index=0, label=label, spearman=1.0, iou_top=1.0,
                             mass_moved=0.0, aer=0.0)],
              dict(spearman=1.0, spearman_median=1.0, iou_top=1.0, iou_top_median=1.0,
                   mass_moved=0.0, mass_moved_median=0.0, aer=0.0, aer_median=0.0, n=1),
              settings=dict(model_a="<b>A</b>", model_b="B", top=0.1))
    md = a.to_markdown(n_changed=1)
    assert "<" not in md and ">" not in md
    assert "&lt;script&gt;" in md and "&lt;b&gt;A&lt;/b&gt;" in md
    row = [line for line in md.splitlines() if line.startswith("| 0 |")][0]
    # The escaped '|' keeps the table's column count; no link or image survives.
    assert row.replace("\\|", "").count("|") == 2 + len(a.metrics) + 1
    assert "](" not in md.replace("\\](", "").replace("\\]\\(", "")
    # Rendered by a real Markdown renderer when one is installed: no tag, no link.
    markdown = pytest.importorskip("markdown")
    html = markdown.markdown(md, extensions=["tables"])
    assert "<script" not in html and "<img" not in html and "<a " not in html


# ----------------------------------------------------------------------------- signals


_SIGNALLED = """
import os, signal, time
import groundroll.grounding as g
from test_grounding_support import tiny_bundle
handle = g.resolve_model(tiny_bundle("open_clip"))
g.resolve_model = lambda spec, **kw: handle
real = g.segment
calls = []
def segment(*a, **k):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.{signal})
        time.sleep(5)
    return real(*a, **k)
g.segment = segment
from groundroll.cli import main
raise SystemExit(main({argv!r}))
"""


@pytest.mark.parametrize("name, code, word", [("SIGTERM", 143, "terminated"),
                                              ("SIGINT", 130, "interrupted")])
def test_a_signal_mid_run_leaves_no_staging_and_no_traceback(tmp_path, name, code, word):
    """Item 5: the staging folder with the first images' files is removed on the way out."""
    from PIL import Image

    images = []
    for k in range(4):
        path = tmp_path / f"im{k}.png"
        Image.fromarray(np.full((16, 16, 3), 40 * k, np.uint8)).save(path)
        images.append(str(path))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    argv = ["segment", *images, "-p", "a", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNALLED.format(signal=name, argv=argv)],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1",
                 PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS),
                                                         os.environ.get("PYTHONPATH")]))))
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert word in proc.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_a_killed_runs_staging_folder_is_swept_by_the_next_run(tmp_path):
    """Item 5: SIGKILL cannot be caught; the next set opened in the folder removes the
    dead process's staging folder and leaves live and foreign ones alone."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    left = tmp_path / f"{atomic._STAGING_PREFIX}{atomic._HOST_TAG}-{dead_pid}-abc"
    left.mkdir()
    (left / "x_labels.png").write_bytes(b"partial")
    live = tmp_path / f"{atomic._STAGING_PREFIX}{atomic._HOST_TAG}-{os.getpid()}-abc"
    live.mkdir()
    other_host = tmp_path / f"{atomic._STAGING_PREFIX}ffffffff-{dead_pid}-abc"
    other_host.mkdir()
    lookalike = tmp_path / f"{atomic._STAGING_PREFIX}{atomic._HOST_TAG}-{dead_pid}-link"
    os.symlink(tmp_path / "elsewhere", lookalike)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "precious").write_text("keep")
    _seg().save(tmp_path, stem="x")
    assert not left.exists()
    assert live.is_dir() and other_host.is_dir() and lookalike.is_symlink()
    assert (tmp_path / "elsewhere" / "precious").read_text() == "keep"


def test_interrupt_helper_restores_the_previous_handler():
    from groundroll._interrupt import Terminated, terminate_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        with terminate_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            import time

            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is before

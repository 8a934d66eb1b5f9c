"""Whole output sets: a failed write leaves nothing new and a previous set intact; --force
replaces a set whole (and only files groundroll wrote); outputs are checked before the
model runs."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import groundroll._atomic as atomic
import groundroll.grounding as grounding
from groundroll._atomic import OutputSet
from groundroll.cli import main
from groundroll.grounding import Segmentation

from test_grounding_support import tiny_bundle

TESTS = Path(__file__).resolve().parent


def _seg(prompts=("a cat", "dog")) -> Segmentation:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, len(prompts) + 1, (20, 24)).astype(np.int32)
    masks = np.stack([labels == k + 1 for k in range(len(prompts))])
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    return Segmentation(labels, masks, masks.astype(np.float32),
                        np.zeros(len(prompts), np.float32), list(prompts), image=image)


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def test_save_creates_its_folder(tmp_path):
    paths = _seg().save(tmp_path / "a" / "b", stem="x")
    assert all(p.is_file() for p in paths.values())
    assert not [p for p in (tmp_path / "a" / "b").iterdir() if "staging" in p.name]


def _fail_on(monkeypatch, suffix: str):
    """Make staging the file whose name ends with ``suffix`` fail like a full disk."""
    real = OutputSet.add

    def add(self, name, data, **kw):
        if name.endswith(suffix):
            raise OSError(errno.ENOSPC, "No space left on device", name)
        return real(self, name, data, **kw)

    monkeypatch.setattr(OutputSet, "add", add)


def test_a_failed_save_leaves_nothing_and_removes_the_folder_it_made(tmp_path, monkeypatch):
    _fail_on(monkeypatch, "_overlay.png")
    target = tmp_path / "new" / "deeper"
    with pytest.raises(OSError, match="No space"):
        _seg().save(target, stem="x")
    assert not (tmp_path / "new").exists()


def test_a_failed_forced_save_leaves_the_previous_set_byte_identical(tmp_path, monkeypatch):
    _seg(("one", "two", "three")).save(tmp_path, stem="x")
    before = _snapshot(tmp_path)
    _fail_on(monkeypatch, ".json")
    with pytest.raises(OSError):
        _seg(("other",)).save(tmp_path, stem="x", force=True)
    assert _snapshot(tmp_path) == before


def test_a_failure_while_moving_into_place_rolls_back(tmp_path, monkeypatch):
    _seg(("one", "two")).save(tmp_path, stem="x")
    before = _snapshot(tmp_path)
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 4:                      # in the middle of moving the new set in
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError):
        _seg(("other", "two")).save(tmp_path, stem="x", force=True)
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before


def test_force_replaces_the_set_whole_and_only_our_files(tmp_path):
    first = _seg(("one", "two", "three")).save(tmp_path, stem="x")
    mine = tmp_path / "x_notes.txt"
    mine.write_text("mine")
    other = _seg(("zzz",)).save(tmp_path, stem="y")
    with pytest.raises(FileExistsError, match="--force"):
        _seg(("one",)).save(tmp_path, stem="x")
    second = _seg(("one",)).save(tmp_path, stem="x", force=True)
    assert not first["mask_1"].exists() and not first["mask_2"].exists()
    assert all(p.is_file() for p in second.values())
    assert all(p.is_file() for p in other.values())           # another set untouched
    assert mine.read_text() == "mine"                          # never ours: kept
    names = {p.name for p in tmp_path.iterdir()}
    assert names == ({p.name for p in second.values()} | {p.name for p in other.values()}
                     | {"x_notes.txt", ".x.groundroll.json", ".y.groundroll.json"})


def test_a_manifest_that_is_not_ours_removes_nothing(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep")
    (tmp_path / ".x.groundroll.json").write_text('{"files": ["precious.txt"]}')
    _seg().save(tmp_path, stem="x", force=True)
    assert victim.read_text() == "keep"


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def handle():
    return grounding.resolve_model(tiny_bundle("open_clip"))


@pytest.fixture
def tiny(monkeypatch, handle):
    calls = []

    def resolve(spec, **kw):
        calls.append(spec)
        return handle

    monkeypatch.setattr(grounding, "resolve_model", resolve)
    return calls


@pytest.fixture
def noisy(tmp_path):
    """A noise image: its overlay PNG is large, its masks are small."""
    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 200, 3), np.uint8)).save(
        path)
    return path


def _cli(*args):
    return main(["segment", *map(str, args)])


def test_cli_write_failure_leaves_nothing_and_says_why(tiny, noisy, tmp_path, monkeypatch,
                                                       capsys):
    out = tmp_path / "out"
    assert _cli(noisy, "-p", "a", "-p", "b", "--out", out) == 0
    before = _snapshot(out)
    _fail_on(monkeypatch, "_overlay.png")
    assert _cli(noisy, "-p", "a", "--out", out, "--force") == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert _snapshot(out) == before


def test_cli_checks_the_output_folder_before_loading_the_model(tiny, noisy, tmp_path,
                                                              monkeypatch, capsys):
    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    assert _cli(noisy, "-p", "a", "--out", tmp_path / "out") == 2
    assert "Read-only file system" in capsys.readouterr().err
    assert tiny == []                                          # the model never loaded
    monkeypatch.undo()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _cli(noisy, "-p", "a", "--out", blocker / "sub") == 2
    assert "not a directory" in capsys.readouterr().err


_LIMITED = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
import groundroll.grounding as g
from test_grounding_support import tiny_bundle
handle = g.resolve_model(tiny_bundle("open_clip"))
g.resolve_model = lambda spec, **kw: handle
from groundroll.cli import main
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
codes = [main(argv) for argv in {runs!r}]
print("codes", codes)
"""


def test_cli_under_a_file_size_limit(noisy, tmp_path, tiny):
    """Masks (small) pass the limit, the overlay (noise) does not: nothing of the set is
    left, the error is one clear line, and with --force an earlier set is unchanged."""
    earlier = tmp_path / "earlier"
    assert _cli(noisy, "-p", "a", "-p", "b", "--out", earlier) == 0
    before = _snapshot(earlier)
    overlay = (earlier / "noise_overlay.png").stat().st_size
    masks = max((earlier / n).stat().st_size for n in before if "_0_" in n or "_1_" in n)
    limit = (overlay + masks) // 2
    assert masks < limit < overlay
    fresh = tmp_path / "fresh"
    runs = [["segment", str(noisy), "-p", "a", "-p", "c", "--out", str(fresh)],
            ["segment", str(noisy), "-p", "a", "--out", str(earlier), "--force"]]
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED.format(limit=limit, runs=runs)],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1",
                 PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS),
                                                         os.environ.get("PYTHONPATH")]))))
    assert "codes [1, 1]" in proc.stdout, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if "error:" in l]
    assert len(errors) == 2 and all("File too large" in e for e in errors), errors
    assert not fresh.exists()
    assert _snapshot(earlier) == before


# ----------------------------------------------------------------------------- align CLI


def test_align_cli_translation_file_and_whole_set(tmp_path, monkeypatch, capsys):
    from groundroll.alignment.cli import main as align_main
    from groundroll.data import toy_translation as toy

    pairs = toy.pairs(3, split="test")
    src = tmp_path / "src.txt"
    src.write_text("".join(" ".join(p.src_words) + "\n" for p in pairs))
    out = tmp_path / "pred.txt"
    assert align_main(["align", "--src", str(src), "--out", str(out), "--quiet"]) == 0
    translation = tmp_path / "pred.translation.txt"
    links = out.read_text().splitlines()
    words = [line.split() for line in translation.read_text().splitlines()]
    assert len(links) == len(words) == 3
    for line, tgt in zip(links, words):
        assert all(int(link.split("-")[1]) < len(tgt) for link in line.split())
    before = _snapshot(tmp_path)
    real = OutputSet.add

    def add(self, name, data, **kw):
        if name.endswith(".translation.txt"):
            raise OSError(errno.EFBIG, "File too large", name)
        return real(self, name, data, **kw)

    monkeypatch.setattr(OutputSet, "add", add)
    code = align_main(["align", "--src", str(src), "--out", str(out), "--force", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "File too large" in err and "Traceback" not in err
    assert _snapshot(tmp_path) == before

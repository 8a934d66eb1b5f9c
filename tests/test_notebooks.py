"""The tutorials (``docs/tutorials/*.ipynb``) run from top to bottom on the bundled
models, and each shows its pictures and its results' own displays."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.ipynb"))

#: Per notebook; each runs in well under a minute on one thread.
TIMEOUT_S = 240


def test_the_tutorials_are_there():
    names = {p.stem for p in TUTORIALS}
    assert {"segmentation", "calibration", "alignment", "auditing", "bulk"} <= names


def test_tutorials_are_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    for path in TUTORIALS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        ran = [i for i, c in enumerate(book.cells)
               if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not ran, f"{path.name}: cells {ran} carry outputs; the build executes them"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_and_shows_pictures(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # The kernel imports this checkout's groundroll and runs on one thread.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    book = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(book, timeout=TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert pictures, f"{path.name} shows no picture"
    if path.stem != "bulk":      # a result on its own displays its report
        assert any(o.get("data", {}).get("text/html", "").startswith("<iframe ")
                   for o in outputs), f"{path.name} displays no result"

"""Every code block of the README and of the documentation pages runs as written, from a
folder outside the repository, the way a reader would run it: Python blocks in order, in
a namespace of their own; command blocks with the environment's ``groundroll`` and
``python`` on the PATH. The README's blocks run twice in the same folder: a second run of
an example must not fail on what the first one wrote.

A block right after ``<!-- docs-test: skip (REASON) -->`` is not run: a template for the
reader's own data, a server that runs until stopped, a command for a clone of the
repository. The reason is required.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").rglob("*.md")
                                      if "models" not in p.relative_to(ROOT / "docs").parts)
SKIP = re.compile(r"<!-- docs-test: skip \((.+?)\) -->\s*$")
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", flags=re.S | re.M)


def blocks(page: Path) -> list[tuple[int, str, str]]:
    """``(line, language, code)`` of each block of ``page`` that is to be run."""
    text = page.read_text(encoding="utf-8")
    out = []
    for match in BLOCK.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if SKIP.search(before + "\n"):
            continue
        out.append((text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2)))
    return out


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _run_block(page: Path, line: int, language: str, code: str, folder: Path) -> None:
    where = f"{_name(page)}:{line}"
    if language == "python":
        import matplotlib
        import matplotlib.pyplot as plt

        matplotlib.use("Agg")
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            exec(compile(code, where, "exec"), {"__name__": f"docs_{line}"})
        finally:
            os.chdir(cwd)
            plt.close("all")
        return
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{where} failed:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, f"{where}:\n{proc.stderr[-3000:]}"


RUNNABLE = [p for p in PAGES if blocks(p)]


@pytest.mark.parametrize("page", RUNNABLE, ids=[_name(p) for p in RUNNABLE])
def test_page_examples_run_from_another_folder(page, tmp_path):
    passes = 2 if page.name == "README.md" else 1
    for _ in range(passes):
        for line, language, code in blocks(page):
            _run_block(page, line, language, code, tmp_path)


def test_no_example_reaches_into_the_repository():
    """Examples name the bundled files through groundroll (``example_path``,
    ``groundroll examples``), not by their place in a clone."""
    for page in PAGES:
        for line, _, code in blocks(page):
            assert "groundroll/data/examples" not in code, f"{_name(page)}:{line}"
            assert ".venv/bin/" not in code, f"{_name(page)}:{line}"


def test_every_skip_says_why_and_the_readme_runs_something():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for marker in re.findall(r"<!-- docs-test: skip.*?-->", text):
            assert SKIP.search(marker + "\n"), f"{_name(page)}: {marker} gives no reason"
    languages = {language for _, language, _ in blocks(ROOT / "README.md")}
    assert languages == {"python", "bash"}


def test_the_alignment_quoted_in_the_examples_is_what_the_model_gives():
    import groundroll as gr

    a = gr.align("su bibeva mamoso ponelu mino", "thun drijodruk hauzun qixe xithauxeis",
                 model="bundled:toy-mt")
    assert a.pharaoh() == "0-0 1-2 2-1 3-3 4-4"
    t = gr.align("su bibeva mamoso ponelu mino", model="bundled:toy-mt")
    assert t.tgt_words == ["thun", "drijodruk", "hauzun", "qixe", "xithauxeis"]
    for page in (ROOT / "README.md", ROOT / "docs" / "getting-started.md"):
        assert "'0-0 1-2 2-1 3-3 4-4'" in page.read_text(encoding="utf-8"), page

"""Every Python block of the README runs as written, and so does every command block
that calls the venv's tools (``.venv/bin/...``), from a folder that looks like a fresh
clone after ``make test``."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


#: A block right after this comment is a template for the reader's own data (a model
#: folder, their sentence pairs) and is not run; the comment must say why.
SKIP = re.compile(r"<!-- readme-test: skip \((.+?)\) -->\s*$")


def _blocks(language: str) -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    out = []
    for match in re.finditer(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M):
        if SKIP.search(text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1] + "\n"):
            continue
        line = text.count("\n", 0, match.start()) + 1
        out.append((line, match.group(1)))
    return out


def _venv_blocks() -> list[tuple[int, str]]:
    """Command blocks whose commands all call the venv (``.venv/bin/...``)."""
    out = []
    for line, body in _blocks("bash"):
        commands = [c for c in body.replace("\\\n", " ").splitlines()
                    if c.strip() and not c.lstrip().startswith("#")]
        if commands and all(c.lstrip().startswith(".venv/bin/") for c in commands):
            out.append((line, body))
    return out


@pytest.fixture
def clone(tmp_path):
    """A working folder with the repository's package, data and venv in place."""
    for name in ("groundroll", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def _run(argv, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_the_readme_has_runnable_blocks():
    assert len(_blocks("python")) >= 4
    assert len(_venv_blocks()) >= 2
    text = README.read_text(encoding="utf-8")
    # Command examples call the venv's tools, or the README says (before the first
    # command block) to activate the venv.
    first_block = text.index("```bash")
    assert "source .venv/bin/activate" in text[:first_block]
    assert ".venv/bin/groundroll" in text[:first_block]


@pytest.mark.parametrize("line, code", _blocks("python"),
                         ids=[f"line{line}" for line, _ in _blocks("python")])
def test_python_block_runs(clone, monkeypatch, line, code):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(clone)
    # In-process (the imports are already paid for), in a namespace of its own.
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": f"readme_{line}"})
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.mark.parametrize("line, code", _venv_blocks(),
                         ids=[f"line{line}" for line, _ in _venv_blocks()])
def test_command_block_runs(clone, line, code):
    proc = _run(["bash", "-euo", "pipefail", "-c", code], clone)
    assert proc.returncode == 0, f"README line {line}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr


def test_readme_alignment_example_is_what_the_model_gives():
    import groundroll as gr

    a = gr.align("su bibeva mamoso ponelu mino", "thun drijodruk hauzun qixe xithauxeis",
                 model="bundled:toy-mt")
    assert a.pharaoh() == "0-0 1-2 2-1 3-3 4-4"
    t = gr.align("su bibeva mamoso ponelu mino", model="bundled:toy-mt")
    assert t.tgt_words == ["thun", "drijodruk", "hauzun", "qixe", "xithauxeis"]
    assert "'0-0 1-2 2-1 3-3 4-4'" in README.read_text(encoding="utf-8")

"""Imports of groundroll modules: at a module's top, unless a comment says why not.

A groundroll module imported inside a function is there for one of two reasons, and the
line above it (or the line itself) says which: it pulls in torch, a model library or
another heavy dependency that a light path (``import groundroll``, ``groundroll --help``,
``groundroll.masks``, ``groundroll.report``) must not load, or the command line builds
only the named command's parser. An import that only breaks a cycle is a sign that a
shared piece belongs a layer lower.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "groundroll"


def function_level_imports(source: str) -> list[tuple[int, bool, str]]:
    """``(line, commented, text)`` of each import of a groundroll module (absolute or
    relative) inside a function of ``source``; ``commented`` when the line above is a
    comment or the line itself carries one."""
    lines = source.splitlines()
    found = {}
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom):
                internal = node.level > 0 or (node.module or "").startswith("groundroll")
            elif isinstance(node, ast.Import):
                internal = any(a.name.startswith("groundroll") for a in node.names)
            else:
                continue
            if internal and node.lineno not in found:
                above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                line = lines[node.lineno - 1]
                found[node.lineno] = (above.startswith("#") or "#" in line, line.strip())
    return [(n, commented, text) for n, (commented, text) in sorted(found.items())]


def test_the_count_sees_relative_absolute_and_nested_imports_and_their_comments():
    source = (
        "from groundroll import masks\n"
        "def f():\n"
        "    from . import trace\n"
        "    # torch: loaded on first use\n"
        "    from ..rollout import rollout\n"
        "    import groundroll.viz  # matplotlib\n"
        "    import json\n"
        "    def g():\n"
        "        from groundroll.zoo import load\n"
    )
    assert function_level_imports(source) == [
        (3, False, "from . import trace"),
        (5, True, "from ..rollout import rollout"),
        (6, True, "import groundroll.viz  # matplotlib"),
        (9, False, "from groundroll.zoo import load"),
    ]


def test_each_function_level_import_of_groundroll_says_why():
    missing = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text}"
               for path in sorted(PACKAGE.rglob("*.py"))
               for line, commented, text in function_level_imports(path.read_text())
               if not commented]
    assert not missing, ("import these at the module's top, or say on the line above why"
                         " not (a heavy dependency on a light path, or the command line"
                         " building one command's parser):\n" + "\n".join(missing))


def _modules_after(code: str) -> set[str]:
    """The modules loaded by running ``code`` in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(*sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


_HELP = "from groundroll.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"


@pytest.mark.parametrize("code", ["import groundroll", "import groundroll.masks",
                                  "import groundroll.report", _HELP],
                         ids=["groundroll", "masks", "report", "--help"])
def test_light_paths_load_no_torch(code):
    assert "torch" not in _modules_after(code)


def test_the_first_public_function_that_needs_torch_loads_it():
    assert "torch" in _modules_after("import groundroll as gr\ngr.rollout")

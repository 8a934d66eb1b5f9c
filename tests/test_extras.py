"""A plain install (no extras) names the extra to install instead of failing with a bare
ModuleNotFoundError, and every module groundroll imports is declared in pyproject.toml.

A missing model library is simulated with ``sys.modules[name] = None`` (the import
system's own "blocked" marker), so these tests run in the full test environment.
"""

import ast
import re
import sys
from collections import OrderedDict
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import groundroll as gr
from groundroll import _extras, zoo
from groundroll.cli import main
from groundroll.zoo import MissingExtraError

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCENE = ROOT / "groundroll" / "data" / "examples" / "shapes_scene.png"


@pytest.fixture
def fresh_cache(monkeypatch):
    """An empty model cache for this test, so the default model is loaded anew (the
    process-wide cache, with whatever other tests loaded, is put back afterwards)."""
    monkeypatch.setattr(zoo, "_CACHE", OrderedDict())
    monkeypatch.setattr(zoo, "_LOADING", {})


def _block(monkeypatch, *modules):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _one_line_naming(err: BaseException, extra: str, *names: str) -> str:
    message = str(err)
    assert "\n" not in message, message
    assert f'pip install "groundroll[{extra}]"' in message, message
    for name in names:
        assert name in message, message
    return message


# ------------------------------------------------------------------- headline calls


@pytest.mark.parametrize("blocked", ["open_clip", "tokenizers"])
def test_default_segment_without_open_clip_names_the_extra(monkeypatch, fresh_cache, blocked):
    _block(monkeypatch, blocked)
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(MissingExtraError) as caught:
        gr.segment(image, ["a red circle", "a blue star"])
    message = _one_line_naming(caught.value, "open_clip", "bundled:shapes-clip", blocked)
    assert "which is not installed" in message
    # Still an ImportError for code that catches those, with the original error chained.
    assert isinstance(caught.value, ImportError)
    assert isinstance(caught.value.__cause__, ImportError)


@pytest.mark.parametrize("blocked", ["transformers", "tokenizers"])
def test_align_on_the_bundled_model_without_transformers_names_the_extra(
        monkeypatch, fresh_cache, blocked):
    _block(monkeypatch, blocked)
    with pytest.raises(MissingExtraError) as caught:
        gr.align("su tuga vefin", model="bundled:toy-mt")
    _one_line_naming(caught.value, "hf", "bundled:toy-mt", blocked)


@pytest.mark.parametrize("spec, blocked, extra", [
    ("open_clip:ViT-B-16/openai", "open_clip", "open_clip"),
    ("hf:Helsinki-NLP/opus-mt-de-en", "transformers", "hf"),
])
def test_named_library_models_without_their_library_name_the_extra(monkeypatch, spec,
                                                                    blocked, extra):
    _block(monkeypatch, blocked)
    with pytest.raises(MissingExtraError) as caught:
        zoo.load(spec)
    _one_line_naming(caught.value, extra, spec)


def test_cli_segment_without_open_clip_prints_the_extra_and_exits_1(monkeypatch, fresh_cache,
                                                                     tmp_path, capsys):
    _block(monkeypatch, "open_clip")
    code = main(["segment", str(SCENE), "-p", "red circle", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert 'pip install "groundroll[open_clip]"' in err
    assert "Traceback" not in err


def test_cli_align_without_transformers_prints_the_extra(monkeypatch, fresh_cache, tmp_path,
                                                         capsys):
    _block(monkeypatch, "transformers")
    (tmp_path / "src.txt").write_text("su tuga vefin\n")
    code = main(["align", "--src", str(tmp_path / "src.txt"), "--out", str(tmp_path / "out"),
                 "--model", "bundled:toy-mt", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert 'pip install "groundroll[hf]"' in err


def test_a_library_whose_own_dependency_is_missing_says_what_failed(monkeypatch, tmp_path):
    # A stand-in for open_clip installed without torchvision: it exists, its import fails.
    (tmp_path / "_groundroll_fake_library.py").write_text("import _groundroll_absent_dep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(_extras.EXTRA_MODULES, "open_clip", ("_groundroll_fake_library",))
    with pytest.raises(MissingExtraError) as caught:
        _extras.require_extra("open_clip", "model 'x'")
    assert str(caught.value) == (
        "model 'x' needs _groundroll_fake_library, which cannot be imported (No module named"
        " '_groundroll_absent_dep'): pip install \"groundroll[open_clip]\"")


def test_installed_extras_pass_silently():
    for extra in _extras.EXTRA_MODULES:
        pytest.importorskip(_extras.EXTRA_MODULES[extra][0])
        assert _extras.require_extra(extra, "this test") is None


# ----------------------------------------------------------------------- declarations


def _requirement_name(text: str) -> str:
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", text).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extra: str | None) -> set[str]:
    project = PYPROJECT["project"]
    reqs = project["dependencies"] if extra is None else \
        project["optional-dependencies"][extra]
    return {_requirement_name(r) for r in reqs}


# Import name -> distribution, for the modules whose names differ from their
# distribution's (checked against the installed metadata where installed).
DISTRIBUTION_OF = {
    "PIL": "pillow", "skimage": "scikit-image", "open_clip": "open-clip-torch",
    "pytorch_grad_cam": "grad-cam", "huggingface_hub": "huggingface-hub",
    "pycocotools": "pycocotools", "yaml": "pyyaml",
}


def test_each_extra_named_in_the_errors_installs_the_modules_it_is_named_for():
    for extra, modules in _extras.EXTRA_MODULES.items():
        declared = _declared(extra)
        for module in modules:
            dist = DISTRIBUTION_OF.get(module, module).replace("_", "-").lower()
            assert dist in declared, f"{module} ({dist}) is not in the {extra!r} extra"


def _third_party_imports() -> set[str]:
    found = set()
    for path in (ROOT / "groundroll").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found
            if m not in sys.stdlib_module_names and m not in ("groundroll", "__future__")}


def test_every_module_groundroll_imports_is_declared():
    installed = metadata.packages_distributions()
    declared = _declared(None).union(*(_declared(extra) for extra in
                                       PYPROJECT["project"]["optional-dependencies"]))
    undeclared = {}
    for module in sorted(_third_party_imports()):
        dists = installed.get(module) or [DISTRIBUTION_OF.get(module, module)]
        names = {_requirement_name(d) for d in dists}
        if not names & declared:
            undeclared[module] = sorted(names)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_mapping_above_agrees_with_installed_metadata():
    installed = metadata.packages_distributions()
    for module, dist in DISTRIBUTION_OF.items():
        if module in installed:
            assert dist in {_requirement_name(d) for d in installed[module]}, module

"""The Examples sections of the model-free modules run as tests (doctest).

Modules are listed here, not discovered: a listed module that moves must be listed
again, and a module joins by being added. Packages are walked, so new modules inside
them are covered without a change here.
"""

import doctest
import importlib
import pkgutil

import pytest

# Packages whose every module's examples run: no model, no download.
PACKAGES = ("groundroll.masks", "groundroll.rollout", "groundroll.compose",
            "groundroll.data")
# Single modules (their examples must exist: each is checked to run at least one).
MODULES = ("groundroll", "groundroll.evaluate",
           "groundroll.alignment.links", "groundroll.alignment.io", "groundroll.alignment.subwords",
           "groundroll.alignment.extract", "groundroll.alignment.result", "groundroll.alignment.methods",
           "groundroll.auditing.metrics", "groundroll.auditing.result", "groundroll.alignment.profile",
           "groundroll.alignment.composition", "groundroll.grounding.profiles",
           "groundroll.grounding.calibrate", "groundroll.grounding.result",
           "groundroll._images", "groundroll.viz", "groundroll.families", "groundroll._json",
           "groundroll._command", "groundroll._names", "groundroll.grounding.registry")


def _walk(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        names.append(info.name)
    return names


def _run(name: str) -> doctest.TestResults:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, globs={**vars(module)}):
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    return doctest.TestResults(failed, attempted)


@pytest.mark.parametrize("name", [m for p in PACKAGES for m in _walk(p)])
def test_package_examples(name):
    result = _run(name)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name):
    result = _run(name)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"

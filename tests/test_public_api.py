"""The public surface: every exported name resolves, and align is callable."""

import numpy as np

import groundroll as gr
import groundroll.alignment.io


def test_every_exported_name_resolves():
    for name in gr.__all__:
        assert getattr(gr, name) is not None, name


def test_align_and_audit_are_functions_with_their_signatures():
    import inspect

    assert inspect.isfunction(gr.align) and inspect.isfunction(gr.audit)
    assert "model" in inspect.signature(gr.align).parameters
    assert list(inspect.signature(gr.audit).parameters)[:3] == ["model_a", "model_b", "data"]
    assert gr.alignment.read_pharaoh is groundroll.alignment.io.read_pharaoh
    links = gr.alignment.extract_links(np.array([[0.9, 0.1], [0.2, 0.8]]),
                                       extraction="argmax")
    assert set(links) == {(0, 0), (1, 1)}
    result = gr.align("su tuga vefin", "thun krakron quxe", model="bundled:toy-mt")
    assert isinstance(result, gr.Alignment)
    assert result.matrix.shape == (3, 3)


def test_option_keywords_of_the_entry_points_are_their_options_fields():
    """Each entry point's option keywords are fields of its options classes, with the
    fields' defaults (an options object and the keywords mean the same), and the
    options objects are public."""
    import dataclasses
    import inspect

    from groundroll.distributed import RunOptions

    calls = {gr.segment: [gr.SegmentOptions], gr.align: [gr.AlignOptions],
             gr.segment_dataset: [gr.SegmentOptions, RunOptions],
             gr.align_corpus: [gr.AlignOptions, RunOptions]}
    for function, classes in calls.items():
        params = inspect.signature(function).parameters
        assert "options" in params, function.__name__
        for cls in classes:
            for f in dataclasses.fields(cls):
                if f.name in params:
                    assert params[f.name].default == f.default, (function.__name__, f.name)
        if RunOptions in classes:
            assert "run" in params and all(f.name in params
                                           for f in dataclasses.fields(RunOptions))
    assert set(dataclasses.fields(gr.SegmentOptions)) and "SegmentOptions" in gr.__all__
    assert "AlignOptions" in gr.__all__


def test_submodules_load_on_first_use():
    assert gr.masks.label_map is gr.label_map
    assert gr.evaluate.aer is gr.aer


def test_functions_named_like_their_package_stay_functions():
    import importlib

    # Importing a submodule makes the import system bind its package on the parent.
    importlib.import_module("groundroll.compose.graph")
    importlib.import_module("groundroll.rollout.fusion")

    assert callable(gr.rollout) and gr.rollout.__module__.startswith("groundroll.rollout")
    assert callable(gr.compose) and not isinstance(gr.compose, type(gr))


def test_each_command_builds_alone():
    from groundroll.cli import _COMMANDS, build_parser

    for name in _COMMANDS:
        parser = build_parser(name)
        sub = parser._subparsers._group_actions[0].choices
        assert set(sub) == set(_COMMANDS), name
        assert sub[name]._actions, f"{name}: only a placeholder was built"


# torch blocked (``import torch`` raises ImportError), then every public function of the
# packages documented as torch-free is called on a small case.
_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None
import numpy as np
import groundroll as gr
from groundroll import masks as M
from groundroll import alignment as A
from groundroll.alignment.extract import extract_links
from groundroll.evaluate import aer, miou

maps = np.stack([np.linspace(0, 1, 48).reshape(6, 8), np.linspace(1, 0, 48).reshape(6, 8)])
image = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)
labels = M.label_map(M.softmax_maps(M.normalize_maps(maps)), mask_threshold=0.1)
M.masks_from_labels(labels, 2)
M.fill_holes(M.remove_small(labels, min_size=2))
M.superpixel_pool(maps, image)
M.pamr(maps, image)
M.resize_maps(maps, (12, 16))
M.letterbox_geometry((6, 8), 4)
miou([labels], [labels], n_classes=3)
links = extract_links(np.eye(3), symmetrize="grow-diag-final-and")
assert A.parse_pharaoh(A.format_pharaoh(links)) == links
assert A.symmetrize(links, links, how="intersection") == links
aer([links], None, [links])
assert "torch" not in {k for k, v in sys.modules.items() if v is not None}
"""


def test_masks_alignment_links_and_evaluate_work_without_torch():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

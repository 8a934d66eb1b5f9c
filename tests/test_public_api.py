"""The public surface: every exported name resolves, and align is callable."""

import numpy as np

import groundroll as gr
import groundroll.align.io


def test_every_exported_name_resolves():
    for name in gr.__all__:
        assert getattr(gr, name) is not None, name


def test_align_is_both_the_package_and_the_function():
    assert gr.align.read_pharaoh is groundroll.align.io.read_pharaoh
    links = gr.align.extract_links(np.array([[0.9, 0.1], [0.2, 0.8]]), extraction="argmax")
    assert set(links) == {(0, 0), (1, 1)}
    result = gr.align("su tuga vefin", "thun krakron quxe", model="bundled:toy-mt")
    assert isinstance(result, gr.Alignment)
    assert result.matrix.shape == (3, 3)


def test_submodules_load_on_first_use():
    assert gr.masks.label_map is gr.label_map
    assert gr.evaluate.aer is gr.aer

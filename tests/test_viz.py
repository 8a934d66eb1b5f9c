import io

import numpy as np
import pytest

from groundroll import viz


def test_overlay_shapes_and_colours():
    img = np.full((4, 5, 3), 100, np.uint8)
    labels = np.zeros((4, 5), int)
    labels[1, 2] = 2
    out = viz.overlay(img, labels, alpha=0.5)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[1, 2].tolist() == [50, 114, 50]  # 0.5 * 100 + 0.5 * (0, 128, 0)
    custom = viz.overlay(img.astype(float) / 255, labels, palette=[[0, 0, 0], [0, 0, 0], [255, 0, 0]], alpha=1.0)
    assert custom[1, 2].tolist() == [255, 0, 0]
    grey = viz.overlay(np.zeros((4, 5)), labels)
    assert grey.shape == (4, 5, 3)
    with pytest.raises(ValueError):
        viz.overlay(img, labels[:2])
    with pytest.raises(ValueError, match="palette"):
        viz.overlay(img, labels, palette=[[0, 0, 0]])


def test_heatmap_overlay():
    img = np.zeros((6, 7, 3), np.uint8)
    heat = np.linspace(0, 1, 42).reshape(6, 7)
    out = viz.heatmap_overlay(img, heat, alpha=1.0)
    assert out.shape == (6, 7, 3) and out.dtype == np.uint8
    # jet: low end blue, high end red
    assert out[0, 0, 2] > out[0, 0, 0] and out[-1, -1, 0] > out[-1, -1, 2]
    assert viz.heatmap_overlay(img, np.zeros((6, 7))).dtype == np.uint8
    with pytest.raises(ValueError, match="resize"):
        viz.heatmap_overlay(img, heat[:3])


def test_plot_alignment_figure_and_no_pyplot_state():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    m = np.random.default_rng(0).random((3, 4))
    fig = viz.plot_alignment(m, ["a", "b", "c", "d"], ["x", "y", "z"], links={(0, 0), (3, 2)},
                             gold=({(0, 0)}, {(0, 0), (1, 1)}), title="t")
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    assert plt.get_fignums() == before
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "d"]
    assert len(ax.patches) == 2  # one sure, one possible-only
    with pytest.raises(ValueError, match="T=3, S=4"):
        viz.plot_alignment(m, ["a"], ["x", "y", "z"])
    # drawing into given axes returns that figure
    fig2 = viz.plot_alignment(m, list("abcd"), list("xyz"), ax=ax)
    assert fig2 is fig


def test_alignment_html_escapes_and_marks():
    m = np.array([[1.0, 0.0], [0.5, 0.25]])
    out = viz.alignment_html(m, ["<script>", "b&c"], ['"q"', "y"], links={(0, 1)})
    assert "<script>" not in out and "&lt;script&gt;" in out and "b&amp;c" in out
    assert "&quot;q&quot;" in out
    assert out.count("&#9679;") == 1
    assert out.count("<tr>") == 3 and out.startswith("<table")


def test_plot_layer_scan():
    rows = [
        {"layer": l, "method": m, "shift": s, "aer": 0.5 - 0.05 * l + 0.1 * s + (0.02 if m == "b" else 0)}
        for l in range(4)
        for m in ("a", "b")
        for s in (0, 1)
    ]
    fig = viz.plot_layer_scan(rows, title="scan")
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 4
    assert any("best 0.350" in t.get_text() for t in ax.texts)
    fig = viz.plot_layer_scan(rows, shift=None)
    assert len(fig.axes[0].get_lines()) == 2
    with pytest.raises(ValueError):
        viz.plot_layer_scan([])

"""Results display themselves in notebooks: ``_repr_html_`` is the result's report in a
sandboxed frame (the same page ``to_html``'s renderer makes, within the notebook size
limit), ``_repr_png_`` its plot, and IPython's formatter offers both."""

from __future__ import annotations

import html
import io
import re

import numpy as np
import pytest
from PIL import Image

from groundroll.alignment import Alignment, extract_links
from groundroll.auditing import Audit
from groundroll.grounding import Segmentation
from groundroll.report import (NOTEBOOK_MAX_BYTES, alignment_report, audit_report,
                               notebook_frame, segmentation_report)

EXTERNAL = re.compile(r"(?i)(?:https?|ftp)://|\bsrc\s*=\s*[\"']?//|<link\b")
FRAME = re.compile(r'^<iframe class="groundroll-report" sandbox="allow-scripts allow-downloads"'
                   r' style="[^"]*" srcdoc="([^"]*)"></iframe>$')


def srcdoc(fragment: str) -> str:
    """The page inside a frame from :func:`notebook_frame`, unescaped."""
    match = FRAME.match(fragment)
    assert match, fragment[:300]
    return html.unescape(match.group(1))


def png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def segmentation(hw=(60, 80), *, noise=False, prompts=("red circle", 'a "star" & </script>')):
    h, w = hw
    labels = np.zeros(hw, np.int32)
    labels[: h // 2, : w // 2] = 1
    labels[h // 2:, w // 2:] = 2
    masks = np.stack([labels == k + 1 for k in range(len(prompts))])
    rng = np.random.default_rng(0)
    image = (rng.integers(0, 256, hw + (3,)) if noise else np.full(hw + (3,), 200)).astype(np.uint8)
    heatmaps = rng.random(masks.shape, np.float32) if noise else masks.astype(np.float32) * 0.8
    return Segmentation(labels, masks, heatmaps,
                        np.array([0.31, 0.27], np.float32)[: len(prompts)], list(prompts),
                        settings={"method": "relevance"}, image=image)


def alignment():
    m = np.random.default_rng(1).random((3, 4))
    return Alignment(["su", "tuga", "vefin", 'x"&y'], ["thun", "krakron", "quxe"], m,
                     extract_links(m), settings={"method": "raw"})


def audit():
    rng = np.random.default_rng(2)
    maps_a = [rng.random((3, 4)) for _ in range(4)]
    maps_b = [m + 0.1 * k for k, m in enumerate(maps_a)]
    examples = [dict(index=k, label=f"pair {k}", spearman=1 - 0.1 * k, iou_top=1 - 0.05 * k,
                     mass_moved=0.02 * k, aer=0.03 * k) for k in range(4)]
    metrics = ("spearman", "iou_top", "mass_moved", "aer")
    aggregate = {m: float(np.mean([e[m] for e in examples])) for m in metrics}
    aggregate.update({m + "_median": float(np.median([e[m] for e in examples]))
                      for m in metrics})
    aggregate["n"] = 4
    return Audit("align", examples, aggregate, maps_a, maps_b,
                 settings={"model_a": "a", "model_b": "b", "top": 0.1})


def test_segmentation_html_is_its_report_in_a_frame():
    seg = segmentation()
    fragment = seg._repr_html_()
    page = srcdoc(fragment)
    assert page == segmentation_report(seg, max_side=512, max_bytes=NOTEBOOK_MAX_BYTES)
    assert "a &quot;star&quot; &amp; &lt;/script&gt;" in page   # the page's escaping survives
    assert not EXTERNAL.search(fragment)
    assert "allow-same-origin" not in fragment          # the frame cannot reach the notebook


def test_alignment_and_audit_html_are_their_reports_in_a_frame():
    a, au = alignment(), audit()
    assert srcdoc(a._repr_html_()) == alignment_report(a, max_bytes=NOTEBOOK_MAX_BYTES)
    assert srcdoc(au._repr_html_()) == audit_report(au, max_bytes=NOTEBOOK_MAX_BYTES)
    for fragment in (a._repr_html_(), au._repr_html_()):
        assert not EXTERNAL.search(fragment)


def test_a_large_segmentation_stays_within_the_notebook_limit():
    seg = segmentation((1500, 2000), noise=True)         # noise does not compress
    assert len(seg.to_html().encode()) > 2 * NOTEBOOK_MAX_BYTES   # the file report is larger
    page = srcdoc(seg._repr_html_())
    assert len(page.encode()) <= NOTEBOOK_MAX_BYTES
    assert "to keep the page small" in page             # and says it was downscaled
    assert len(seg._repr_html_().encode()) <= 1.1 * NOTEBOOK_MAX_BYTES   # base64 needs no escaping


def test_segmentation_png_shows_the_overlay_and_the_legend():
    seg = segmentation()
    fig = seg.plot()
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), seg.overlay())
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["red circle: score 0.310, 25.0% of the image",
                      'a "star" & </script>: score 0.270, 25.0% of the image']
    pixels = png(seg._repr_png_()).reshape(-1, 3)
    for k in (1, 2):                                    # both blended label colours drawn
        colour = seg.overlay()[seg.labels == k][0].astype(int)
        assert (np.abs(pixels.astype(int) - colour).max(1) <= 3).sum() > 200


def test_large_segmentation_png_is_drawn_downscaled():
    seg = segmentation((1500, 2000))
    fig = seg.plot()
    assert np.asarray(fig.axes[0].images[0].get_array()).shape == (384, 512, 3)
    small = png(seg._repr_png_())
    assert max(small.shape[:2]) <= 600
    with pytest.raises(ValueError, match="max_side"):
        seg.plot(max_side=4)


def test_alignment_and_audit_png_are_their_plots():
    import matplotlib.pyplot as plt

    a, au = alignment(), audit()
    image = png(a._repr_png_())
    matrix = np.asarray(a.plot().axes[0].images[0].get_array())
    np.testing.assert_array_equal(matrix, a.matrix)
    assert image.shape[0] > 100 and image.shape[1] > 100
    before = plt.get_fignums()
    png(au._repr_png_())                                # Audit.plot goes through pyplot ...
    assert plt.get_fignums() == before                  # ... and its figure is closed


def test_ipython_offers_html_and_png():
    formatters = pytest.importorskip("IPython.core.formatters")
    shown = formatters.DisplayFormatter()
    for result in (segmentation(), alignment(), audit()):
        data, _ = shown.format(result)
        assert {"text/html", "image/png", "text/plain"} <= set(data)
        assert data["text/html"].startswith("<iframe ")


def test_notebook_frame_escapes_only_what_the_attribute_needs():
    doc = '<!DOCTYPE html><p title="q">a &amp; b</p>'
    fragment = notebook_frame(doc, height=200)
    assert srcdoc(fragment) == doc
    assert "height: 200px" in fragment
    with pytest.raises(ValueError, match="height"):
        notebook_frame(doc, height=0)

"""The app's handlers and server without a browser (the browser test is in
tests/test_browser.py)."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from groundroll import app

EXAMPLE = Path(__file__).resolve().parents[1] / "groundroll" / "data" / "examples" / "shapes_scene.png"


def test_segment_view_answers_bad_input_in_the_page(tmp_path):
    empty = app.segment_view(str(EXAMPLE), " , \n", "bundled:shapes-clip-short")
    assert empty[0] is None and empty[1] == [] and empty[2] == ""
    assert "No prompt" in empty[3] and 'role="alert"' in empty[3]
    assert "No image" in app.segment_view(None, "x", "bundled:shapes-clip-short")[3]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    assert "Cannot read the image" in app.segment_view(str(bad), "x",
                                                        "bundled:shapes-clip-short")[3]
    big = app.segment_view(str(EXAMPLE), "x", "bundled:shapes-clip-short",
                           max_upload_mb=EXAMPLE.stat().st_size / 2e6)
    assert "the limit is" in big[3]
    failed = app.segment_view(str(EXAMPLE), "x", "bundled:no-such-model")
    assert "failed to load" in failed[3] and "no-such-model" in failed[3]
    huge = tmp_path / "huge.png"
    from PIL import Image

    Image.new("RGB", (3000, 1500), (90, 90, 90)).save(huge)
    annotated = app.segment_view(str(huge), "red circle", "bundled:shapes-clip-short")[0]
    assert annotated[0].shape == (512, 1024, 3)              # worked on at MAX_SIDE
    assert annotated[1][0][0].shape == (512, 1024)
    too_many = app.segment_view(str(EXAMPLE), ",".join(f"p{i}" for i in range(30)),
                                "bundled:shapes-clip-short")
    assert "at most" in too_many[3]
    # an error in a message is escaped, never markup
    assert "<script" not in app.segment_view(str(EXAMPLE), "x", "bundled:<script>")[3]


def test_segment_view_gives_masks_heatmaps_and_report():
    import groundroll as gr

    prompts = ["red circle", "blue star"]
    annotated, heatmaps, report, message = app.segment_view(
        str(EXAMPLE), "red circle, blue star", "bundled:shapes-clip-short", "relevance", 0.6)
    seg = gr.segment(EXAMPLE, prompts, model="bundled:shapes-clip-short", mask_threshold=0.6,
                     max_side=app.MAX_SIDE)
    image, masks = annotated
    assert [label for _, label in masks] == prompts
    for (mask, _), ref in zip(masks, seg.masks):
        np.testing.assert_array_equal(mask > 0.5, ref)
    assert [label for _, label in heatmaps] == prompts
    assert heatmaps[0][0].shape == image.shape and image.dtype == np.uint8
    assert report.startswith("<iframe") and "srcdoc=" in report
    assert "Error" not in message and "blue star" in message


def test_align_view():
    import groundroll as gr

    html, pharaoh, message = app.align_view("su tuga vefin", "", "bundled:toy-mt")
    assert pharaoh == gr.align("su tuga vefin", model="bundled:toy-mt").pharaoh()
    assert html.startswith("<iframe") and "translated:" in message
    html, pharaoh, message = app.align_view("su tuga vefin", "thun krakron quxe",
                                            "bundled:toy-mt", methods=("raw",))
    assert pharaoh == gr.align("su tuga vefin", "thun krakron quxe",
                               model="bundled:toy-mt").pharaoh()
    assert "No source" in app.align_view("  ", "x", "bundled:toy-mt")[2]
    assert "at most" in app.align_view("a " * 200, "", "bundled:toy-mt")[2]
    assert "failed to load" in app.align_view("a", "", "bundled:nope")[2]


def test_cli_defaults_to_localhost_and_checks_options():
    from groundroll.cli import build_parser, main

    args = build_parser().parse_args(["app"])
    assert args.host == "127.0.0.1" and args.port == app.DEFAULT_PORT
    assert args.max_upload_mb == app.DEFAULT_MAX_UPLOAD_MB
    assert main(["app", "--port", "0"]) == 2
    assert main(["app", "--max-upload-mb", "-1"]) == 2


def test_app_serves_its_page_on_a_local_port():
    pytest.importorskip("gradio", reason="the app needs gradio (pip install 'groundroll[app]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app.serve(port=port, block=False, quiet=True, max_upload_mb=2)
    try:
        assert demo.local_url == f"http://127.0.0.1:{port}/"
        page = urllib.request.urlopen(demo.local_url, timeout=30).read().decode()
        assert "<html" in page.lower()
        assert demo.max_file_size == 2_000_000
        config = urllib.request.urlopen(demo.local_url + "config", timeout=30).read().decode()
        assert "gr-app-segment" in config and "gr-app-align" in config
    finally:
        demo.close()

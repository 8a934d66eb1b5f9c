"""Reports and the app in a real browser: headless Chromium driven by Selenium.

Chromium and its driver come from the system's packages (``apt-get install chromium
chromium-driver``; ``make test`` installs them when run as root). Selenium is pointed at
both binaries explicitly, so it never tries to download a driver. Without them these
tests skip and say what to install, except in CI (``CI=true``), where they fail: there
``make test`` installs the browser, and a missing one is a broken install, not a pass.

``GROUNDROLL_SCREENSHOTS=docs/img pytest tests/test_browser.py`` also writes the README
screenshots.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "groundroll" / "data" / "examples" / "shapes_scene.png"
SRC, TGT = "su tuga vefin", "thun krakron quxe"
PROMPTS = ["red circle", "blue star", "yellow triangle"]
EXTERNAL = re.compile(r"(?i)(?:https?|ftp)://|\bsrc\s*=\s*[\"']?//|<link\b")


def _binaries():
    chromium = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                                 "/usr/bin/chromium") if p and os.path.exists(p)), None)
    driver = next((p for p in (shutil.which("chromedriver"), "/usr/bin/chromedriver")
                   if p and os.path.exists(p)), None)
    return chromium, driver


def in_ci(environ=os.environ) -> bool:
    """Whether this is a CI run (``CI`` set to true/1/yes, as CI services do)."""
    return environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str):
    """Skip with ``reason`` locally; fail in CI, where everything the tests need is
    installed by ``make test``."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: make test must install it)", pytrace=False)
    pytest.skip(reason)


def make_driver(width: int = 1100, height: int = 800):
    """A headless Chromium WebDriver on the system binaries, or a skip (a failure in CI)
    saying why not."""
    chromium, driver = _binaries()
    if chromium is None or driver is None:
        unavailable("headless Chromium not found: install the system packages 'chromium'"
                    " and 'chromium-driver' (make test does it when run as root)")
    try:
        from selenium import webdriver
    except ImportError:
        unavailable("selenium missing: pip install selenium (in the test extra)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"   # Selenium Manager must never reach the network
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", f"--window-size={width},{height}",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def screenshot(driver, name: str, tmp: Path) -> Path:
    """Save a screenshot (into $GROUNDROLL_SCREENSHOTS when set, else ``tmp``)."""
    folder = Path(os.environ.get("GROUNDROLL_SCREENSHOTS") or tmp)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    png = driver.get_screenshot_as_png()
    from PIL import Image
    import io

    # palette PNG: README pictures stay small
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128).save(path, optimize=True)
    return path


def _toy():
    from groundroll.zoo import cached

    return cached("bundled:toy-mt")          # loaded once, shared with the app's handlers


@pytest.fixture(scope="module")
def driver():
    d = make_driver()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    import groundroll as gr
    from groundroll.explore import explore_alignment, explore_segmentation

    folder = tmp_path_factory.mktemp("reports")
    align_html = explore_alignment(SRC, TGT, model=_toy())
    seg_html = explore_segmentation(EXAMPLE, PROMPTS, model="bundled:shapes-clip-short",
                                    mask_threshold=0.6)   # resolve_model shares zoo.cached
    paths = {"alignment": folder / "alignment.html", "segmentation": folder / "segment.html",
             "plain": folder / "plain.html"}
    paths["alignment"].write_text(align_html, encoding="utf-8")
    paths["segmentation"].write_text(seg_html, encoding="utf-8")
    a = gr.align(SRC, TGT, model=_toy())
    paths["plain"].write_text(a.to_html(), encoding="utf-8")
    return paths


def _data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    block = re.search(r'<script id="gr-data" type="application/json">(.*?)</script>', text, re.S)
    return json.loads(block.group(1))


def _open(driver, path: Path):
    driver.get(path.as_uri())
    wait_for(lambda: driver.execute_script("return document.body.getAttribute('data-ready')"),
             what=f"{path.name} to render")


def _hover(driver, element):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(element).perform()


def _highlighted(driver) -> set:
    return {(int(l.get_attribute("data-s")), int(l.get_attribute("data-t")))
            for l in driver.find_elements("css selector", "#gr-links line.gr-link.gr-hl")}


def test_reports_are_self_contained(reports):
    for path in reports.values():
        text = path.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>")
        assert not EXTERNAL.search(text), f"{path.name} refers to an external address"
        assert "<img" not in text or "data:image/png;base64," in text


def test_hovering_a_target_word_highlights_exactly_its_links(driver, reports):
    import groundroll as gr

    _open(driver, reports["alignment"])
    expected = gr.align(SRC, TGT, model=_toy())     # the page opens on align's defaults
    page_links = {tuple(l) for l in driver.execute_script("return groundroll.links()")}
    assert page_links == expected.links
    words = driver.find_elements("css selector", "#gr-links .gr-word[data-side=tgt]")
    assert [w.text for w in words] == TGT.split()
    for t, word in enumerate(words):
        _hover(driver, word)
        assert _highlighted(driver) == {(s, u) for s, u in expected.links if u == t}
        assert "gr-hl" in word.get_attribute("class")
        scores = driver.find_element("id", "gr-scores").text
        assert TGT.split()[t] in scores
    # a source word: its links, whichever target words they reach
    src_word = driver.find_elements("css selector", "#gr-links .gr-word[data-side=src]")[1]
    _hover(driver, src_word)
    assert _highlighted(driver) == {(s, u) for s, u in expected.links if s == 1}
    # the matrix view marks the same links
    cells = {(int(c.get_attribute("data-s")), int(c.get_attribute("data-t")))
             for c in driver.find_elements("css selector", "#gr-matrix td.gr-linked")}
    assert cells == expected.links


def _choose(driver, name: str, value: str):
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", f"gr-{name}")).select_by_value(value)


def test_switching_variants_and_extraction_matches_python(driver, reports):
    import groundroll as gr
    from groundroll.alignment import extract_links

    _open(driver, reports["alignment"])
    data = _data(reports["alignment"])
    _choose(driver, "method", "norm")
    _choose(driver, "layer", "1")
    _choose(driver, "head", "2")
    _choose(driver, "shift", "true")
    state = driver.execute_script("return groundroll.state")
    variant = data["variants"][state["variant"]]
    assert (variant["method"], variant["layer"], variant["head"], variant["shift"]) == (
        "norm", 1, 2, True)
    matrix = np.asarray(data["pairs"][0]["matrices"][state["variant"]])
    ref = gr.align(SRC, TGT, model=_toy(), method="norm", layers=[1], heads=[2],
                   shift=True)
    np.testing.assert_allclose(matrix, ref.matrix, atol=1e-5)
    # link extraction in the page follows groundroll.alignment.extract_links
    # (threshold and mutual each keep their own cut-off; the page opens on the model
    # profile's extraction and cut-off: mutual at 0.4 for toy-mt)
    assert driver.execute_script("return groundroll.state.thresholds") == {
        "threshold": 0.3, "mutual": 0.4}
    for extraction in ("argmax", "itermax", "threshold", "mutual"):
        _choose(driver, "extraction", extraction)
        got = {tuple(l) for l in driver.execute_script("return groundroll.links()")}
        cut = driver.execute_script("return groundroll.state.thresholds[arguments[0]]",
                                    extraction)
        assert got == extract_links(matrix, extraction=extraction,
                                    link_threshold=cut), extraction
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (6, 4), (3, 3), (8, 8)]:
        m = rng.random(shape).round(5)
        m[0] = m[1]                                      # ties go to the lowest index
        for extraction in ("argmax", "itermax", "threshold", "mutual"):
            got = driver.execute_script("return groundroll.extract(arguments[0], arguments[1],"
                                        " 0.2)", m.tolist(), extraction)
            assert {tuple(l) for l in got} == extract_links(
                m, extraction=extraction, link_threshold=0.2), (shape, extraction)
    # Pharaoh export shows the current links
    _choose(driver, "extraction", "argmax")
    driver.find_element("id", "gr-pharaoh-button").click()
    text = driver.find_element("id", "gr-pharaoh-text").get_attribute("value")
    assert text == gr.align(SRC, TGT, model=_toy(), method="norm", layers=[1],
                            heads=[2], shift=True).pharaoh()


def test_plain_alignment_html_opens(driver, reports):
    _open(driver, reports["plain"])
    assert len(driver.find_elements("css selector", "#gr-links .gr-word")) == 6


def test_alignment_screenshot(driver, reports, tmp_path):
    _open(driver, reports["alignment"])
    driver.set_window_size(900, 560)
    word = driver.find_elements("css selector", "#gr-links .gr-word[data-side=tgt]")[1]
    word.click()
    path = screenshot(driver, "alignment_report.png", tmp_path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    driver.set_window_size(1100, 800)


def test_segmentation_layers_toggle(driver, reports, tmp_path):
    _open(driver, reports["segmentation"])
    data = _data(reports["segmentation"])
    assert [p["name"] for p in data["prompts"]] == PROMPTS

    def visible():
        return set(driver.execute_script("return groundroll.visible()"))

    assert visible() == {f"gr-mask-{k}" for k in range(3)}          # masks on at first
    driver.find_element("id", "gr-toggle-heatmap-1").click()
    assert "gr-heatmap-1" in visible()
    assert driver.find_element("id", "gr-heatmap-1").is_displayed()
    driver.find_element("id", "gr-toggle-mask-0").click()
    assert "gr-mask-0" not in visible()
    assert not driver.find_element("id", "gr-mask-0").is_displayed()
    # the opacity slider drives every visible layer
    slider = driver.find_element("id", "gr-opacity")
    driver.execute_script("arguments[0].value = 25; arguments[0].dispatchEvent(new Event('input'))",
                          slider)
    assert driver.find_element("id", "gr-heatmap-1").value_of_css_property("opacity") == "0.25"
    # per-layer maps of the first prompt: one per vision layer of the model
    from groundroll.zoo import cached

    n_layers = len(cached("bundled:shapes-clip-short").model.visual.transformer.resblocks)
    assert len(driver.find_elements("css selector", "#gr-layer-grid figure")) == n_layers
    driver.find_element("id", "gr-toggle-layer-map").click()
    assert "gr-layer-overlay" in visible()
    driver.find_element("id", "gr-none").click()
    driver.find_element("id", "gr-all-masks").click()
    driver.execute_script("arguments[0].value = 55; arguments[0].dispatchEvent(new Event('input'))",
                          slider)
    driver.set_window_size(1000, 720)
    path = screenshot(driver, "segmentation_report.png", tmp_path)
    assert path.stat().st_size > 1000
    driver.set_window_size(1100, 800)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_segments_an_upload_and_aligns(driver, tmp_path):
    try:
        import gradio  # noqa: F401
    except ImportError:
        unavailable("the app needs gradio (pip install 'groundroll[app]')")
    from groundroll.app import serve

    app = serve(port=_free_port(), block=False, quiet=True)
    try:
        assert app.local_url.startswith("http://127.0.0.1:")
        driver.set_window_size(1100, 900)
        driver.get(app.local_url)
        upload = wait_for(lambda: driver.find_elements(
            "css selector", "#gr-app-image input[type=file]"), 60, "the app page")[0]

        def status():
            return driver.find_element("id", "gr-app-seg-status").text

        # bad input is answered in the page
        driver.find_element("id", "gr-app-segment").click()
        wait_for(lambda: "Error" in status(), 60, "an error for the missing input")
        assert "No prompt" in status()
        driver.find_element("css selector", "#gr-app-prompts textarea").send_keys(
            "red circle\nblue star\nyellow triangle")
        driver.find_element("id", "gr-app-segment").click()
        wait_for(lambda: "No image" in status(), 60, "an error for the missing image")
        # a real run
        upload.send_keys(str(EXAMPLE))
        wait_for(lambda: driver.find_elements("css selector", "#gr-app-image img"), 30,
                 "the uploaded image")
        driver.find_element("id", "gr-app-segment").click()
        masks = wait_for(lambda: driver.find_elements("css selector", "#gr-app-masks img.mask"),
                         90, "masks")
        assert len(masks) == 3
        legend = [b.text for b in driver.find_elements("css selector", "#gr-app-masks .legend-item")]
        assert legend == PROMPTS
        assert "yellow triangle" in status() and "Error" not in status()
        assert len(driver.find_elements("css selector", "#gr-app-heatmaps img")) >= 3
        # the interactive report sits below, in its own frame
        driver.switch_to.frame(driver.find_element("css selector", "#gr-app-seg-report iframe"))
        wait_for(lambda: driver.find_elements("css selector", "#gr-mask-2"), 20, "the report")
        driver.switch_to.default_content()
        driver.execute_script("document.getElementById('gr-app-masks').scrollIntoView()")
        screenshot(driver, "app.png", tmp_path)
        # the alignment explorer, translated from the source alone
        next(b for b in driver.find_elements("css selector", "button[role=tab]")
             if b.text.strip() == "Align").click()
        wait_for(lambda: driver.find_element("id", "gr-app-align").is_displayed(), 10, "tab")
        driver.find_element("id", "gr-app-align").click()
        frame = wait_for(lambda: driver.find_elements("css selector", "#gr-app-explorer iframe"),
                         90, "the explorer")[0]
        pharaoh = driver.find_element("css selector", "#gr-app-pharaoh textarea")
        wait_for(lambda: pharaoh.get_attribute("value"), 30, "the Pharaoh line")
        import groundroll as gr

        assert pharaoh.get_attribute("value") == gr.align(SRC, model=_toy()).pharaoh()
        driver.switch_to.frame(frame)
        words = wait_for(lambda: driver.find_elements("css selector", "#gr-links .gr-word"), 20,
                         "explorer words")
        assert [w.text for w in words[:3]] == SRC.split()
        driver.switch_to.default_content()
    finally:
        driver.switch_to.default_content()
        app.close()


def test_audit_report_sorts_and_shows_maps(driver, tmp_path):
    from groundroll.auditing import Audit

    rng = np.random.default_rng(0)
    maps_a = [rng.random((3, 4)) for _ in range(4)]
    maps_b = [m if k != 2 else m[::-1] for k, m in enumerate(maps_a)]
    rho = [1.0, 0.9, -0.3, 0.5]
    examples = [dict(index=k, label=f"pair {k}", spearman=r, iou_top=1.0, mass_moved=0.0,
                     aer=0.0) for k, r in enumerate(rho)]
    aggregate = {m: 0.5 for m in ("spearman", "iou_top", "mass_moved", "aer")}
    aggregate.update({m + "_median": 0.5 for m in ("spearman", "iou_top", "mass_moved", "aer")})
    path = tmp_path / "audit.html"
    path.write_text(Audit("align", examples, aggregate, maps_a, maps_b,
                          {"model_a": "a", "model_b": "b"}).to_html(), encoding="utf-8")
    _open(driver, path)

    def order():
        return [int(r.get_attribute("data-index"))
                for r in driver.find_elements("css selector", "#gr-examples tr[data-index]")]

    assert order() == [2, 3, 1, 0]                       # lowest Spearman first
    driver.find_element("css selector", '#gr-examples th[data-col="spearman"]').click()
    assert order() == [0, 1, 3, 2]
    assert "Example 2" in driver.find_element("id", "gr-example-view").text
    driver.find_element("css selector", '#gr-examples tr[data-index="1"]').click()
    assert "Example 1" in driver.find_element("id", "gr-example-view").text
    assert len(driver.find_elements("css selector", "#gr-example-view img")) == 3


def test_a_missing_browser_fails_in_ci_and_skips_elsewhere(monkeypatch):
    assert in_ci({"CI": "true"}) and in_ci({"CI": "1"}) and in_ci({"CI": " True "})
    assert not in_ci({}) and not in_ci({"CI": "false"}) and not in_ci({"CI": ""})
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no chromium .CI=true"):
        unavailable("no chromium")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        unavailable("no chromium")

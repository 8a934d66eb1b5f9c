"""The documentation build's hooks (docs/hooks.py): notebook pages, math, card text and
the offline check, on hand-made inputs (the full build is ``make docs``)."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hooks():
    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def page(uri="concepts/math.md"):
    return SimpleNamespace(file=SimpleNamespace(src_uri=uri))


def test_notebook_outputs_become_text_pictures_and_frames(hooks):
    nbformat = pytest.importorskip("nbformat")
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    png = b"\x89PNG\r\n\x1a\nfake"
    book = new_notebook(cells=[
        new_markdown_cell("# Title"),
        new_code_cell("print(1)\nseg", outputs=[
            new_output("stream", name="stdout", text="1\n"),
            new_output("execute_result", data={
                "text/html": '<iframe srcdoc="a&#10;\nb"></iframe>',
                "image/png": base64.b64encode(png).decode(), "text/plain": "Seg(...)"}),
            new_output("display_data", data={"image/png": base64.b64encode(png).decode(),
                                             "text/plain": "<Figure>"}),
            new_output("execute_result", data={"text/plain": "42"}),
        ])])
    nbformat.validate(book)
    text, pictures = hooks._notebook_page(book, "demo")
    assert text.startswith("# Title\n\n[Download this notebook](demo.ipynb)")
    assert "```python\nprint(1)\nseg\n```" in text
    assert "```text\n1\n```" in text and "```text\n42\n```" in text
    # the result's frame on one line, its line break kept as a reference
    assert '<div class="gr-output"><iframe srcdoc="a&#10;&#10;b"></iframe></div>' in text
    assert pictures == {"out00.png": png}               # the frame wins over its PNG
    assert "![output 1](demo_files/out00.png)" in text


def test_math_is_rendered_as_mathml_and_code_is_left_alone(hooks):
    pytest.importorskip("latex2mathml")
    md = ("Rollout $R^{(L)}$ costs $5 or $6.\n\n$$\\tilde{A} = \\frac{1}{2}(A + I)$$\n\n"
          "```python\nx = '$a$'\n```\nand `$b$`")
    held = hooks.on_page_markdown(md, page(), None, None)
    assert "Rollout GRMATH1X costs" in held and "\n\nGRMATH0X\n\n" in held   # blocks first
    assert "$5 or $6" in held                           # prices are not math
    assert "x = '$a$'" in held and "`$b$`" in held
    html = "<p>Rollout GRMATH1X costs</p>\n<p>GRMATH0X</p>"
    out = hooks.on_page_content(html, page(), None, None)
    assert out.count("<math") == 2 and "GRMATH" not in out
    assert '<div class="gr-math"><math' in out and 'display="block"' in out


def test_card_brackets_stay_text_but_links_do_not(hooks):
    text = "| subj [adv] verb [obj] [pp] |\n[card](toy-mt.md) ![x](a.png)\n```\n[keep]\n```"
    out = hooks._literal_brackets(text)
    assert "subj \\[adv\\] verb \\[obj\\] \\[pp\\]" in out
    assert "[card](toy-mt.md) ![x](a.png)" in out and "\n[keep]\n" in out


@pytest.mark.parametrize("tag", [
    '<script src="https://cdn.example/x.js"></script>',
    '<link rel="stylesheet" href="//fonts.example/css">',
    '<img alt="" src="http://example.org/a.png">',
    '<style>body{background:url("https://example.org/b.png")}</style>',
])
def test_a_page_that_loads_from_elsewhere_fails_the_build(hooks, tag):
    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match="offline"):
        hooks.on_post_page(f"<html>{tag}</html>", page("x.md"), None)


def test_links_and_local_assets_pass(hooks):
    html = ('<a href="https://squidfunk.github.io/">made with</a>'
            '<script src="assets/bundle.js"></script><img src="../img/a.png">')
    assert hooks.on_post_page(html, page("x.md"), None) == html

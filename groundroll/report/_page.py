"""Page assembly shared by the reports: one HTML file, styles, script and data inline.

A report never refers to anything outside itself: no ``http(s)://`` address, no CDN,
no font or script file. Data travel as one JSON block (``<script type="application/json">``)
that the page's script reads; images travel as ``data:image/png;base64`` URIs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from importlib import resources

import numpy as np

from .._atomic import atomic_write

__all__ = ["DEFAULT_MAX_BYTES", "NOTEBOOK_MAX_BYTES", "page", "png_data_uri", "embed_json",
           "escape", "asset", "write_html", "notebook_frame"]

#: Reports are kept below this many bytes (about 8 MB): larger inputs are downscaled
#: or paged, with a note in the page saying so.
DEFAULT_MAX_BYTES = 8_000_000

#: A result shown in a notebook (``_repr_html_``) renders its report within this many
#: bytes: notebooks keep every output in the ``.ipynb`` file.
NOTEBOOK_MAX_BYTES = 1_500_000

_EXTERNAL = re.compile(r"(?i)\b(?:https?|ftp)://")


def asset(name: str) -> str:
    """Text of a file in ``groundroll/report/assets``."""
    return resources.files("groundroll.report").joinpath("assets", name).read_text("utf-8")


def png_data_uri(array: np.ndarray) -> str:
    """``data:image/png;base64,...`` of a uint8 ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]``
    array.

    Examples
    --------
    >>> png_data_uri(np.zeros((2, 2, 3), np.uint8))[:22]
    'data:image/png;base64,'
    """
    from PIL import Image

    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def embed_json(data) -> str:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&`` are
    written as ``\\u`` escapes so no word can close the script element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
            # a sentence or a prompt may hold an address; it stays text, never a link
            .replace(":/", "\\u003a/"))


def escape(text) -> str:
    """HTML-escaped text in which no address survives (``://`` becomes ``&#58;//``)."""
    return html.escape(str(text)).replace(":/", "&#58;/")


def page(*, title: str, kind: str, data, script: str, body: str = "",
         notes: list[str] | None = None) -> str:
    """A complete self-contained HTML document.

    Parameters
    ----------
    title : str
        Page title (escaped).
    kind : str
        ``data-report`` attribute of ``<body>`` (``"alignment"``, ``"segmentation"``...).
    data : JSON-ready object
        Embedded as ``<script id="gr-data" type="application/json">``.
    script : str
        The page's JavaScript (inline).
    body : str
        Static HTML placed before the script (a ``<noscript>`` fallback, say).
    notes : list of str, optional
        Shown at the top of the page (downscaling, paging); escaped.
    """
    note_html = "".join(f'<p class="gr-note">{escape(n)}</p>' for n in notes or ())
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{escape(title)}</title><style>{asset('report.css')}</style></head>"
        f"<body data-report=\"{escape(kind)}\"><header><h1>{escape(title)}</h1>"
        f"{note_html}</header><main id=\"gr-root\"></main>{body}"
        f"<script id=\"gr-data\" type=\"application/json\">{embed_json(data)}</script>"
        f"<script>{asset('common.js')}</script><script>{script}</script>"
        "</body></html>\n")
    if _EXTERNAL.search(doc):  # assets and escaping keep this from happening
        raise AssertionError("a report must not refer to an external address")
    return doc


def write_html(text: str, path, *, force: bool = False) -> None:
    """Write a report atomically; an existing file is an error unless ``force``."""
    with atomic_write(path, force=force, mode="w") as handle:
        handle.write(text)


def notebook_frame(doc: str, *, height: int = 560) -> str:
    """An HTML fragment that shows the report page ``doc`` inside a notebook output.

    The page goes into a sandboxed ``<iframe srcdoc=...>`` (scripts and downloads
    allowed, no access to the notebook's page): its styles, element ids and script
    cannot collide with the notebook's or with another result's, and it stays one
    self-contained piece of HTML in the ``.ipynb`` file.

    Parameters
    ----------
    doc : str
        A complete page from :func:`page`.
    height : int
        Height of the frame in CSS pixels (the reader can drag it taller).

    Returns
    -------
    str

    Examples
    --------
    >>> notebook_frame("<!DOCTYPE html><p>a & b</p>", height=100)[:8]
    '<iframe '
    """
    if height < 1:
        raise ValueError(f"height must be a positive number of pixels, got {height}")
    # In an attribute only '&' and '"' need escaping; the page never holds an address.
    srcdoc = doc.replace("&", "&amp;").replace('"', "&quot;")
    return (f'<iframe class="groundroll-report" sandbox="allow-scripts allow-downloads"'
            f' style="width: 100%; height: {int(height)}px; border: 1px solid #ddd;'
            f' resize: vertical; overflow: auto" srcdoc="{srcdoc}"></iframe>')

"""MkDocs build hooks for the documentation site (``hooks:`` in mkdocs.yml).

* The tutorial notebooks (``docs/tutorials/*.ipynb``) are executed with nbclient and
  turned into pages: their markdown, their code, and their outputs (pictures as PNG
  files, the results' own HTML displays, text). Executed copies are cached under
  ``.cache/docs-notebooks`` by a hash of the notebook and of groundroll's sources.
* The model cards (``model_cards/*.md``) become pages under ``models/``.
* The capture-coverage picture is drawn from ``benchmarks/results/coverage.json``.
* Math (``$...$``, ``$$...$$``) is rendered to MathML at build time (latex2mathml), so
  no script has to fetch a renderer.
* Every page is checked: one that would load a script, style sheet, picture or frame
  from another address fails the build.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "docs-notebooks"
#: Seconds one notebook cell may run.
CELL_TIMEOUT_S = 300

_FENCE = re.compile(r"(?ms)^(`{3,}|~{3,}).*?^\1[ \t]*$|`[^`\n]+`")
_BLOCK_MATH = re.compile(r"(?s)\$\$(.+?)\$\$")
_INLINE_MATH = re.compile(r"(?<![\\$\w])\$(?=\S)([^$\n]+?)(?<=\S)\$(?![\w$])")
_EXTERNAL_LOAD = re.compile(
    r"""(?is)<(?:script|link|img|iframe|source|video|audio|embed|object)\b[^>]*?"""
    r"""\b(?:src|href|data)\s*=\s*["']?((?:https?:)?//[^"'\s>]+)|url\(\s*["']?((?:https?:)?//[^)"']+)""")
_BRACKETS = re.compile(r"(?<![\\!\]])\[([^\]\n]+)\](?![(\[:])")
_MATH: dict[str, list[tuple[str, bool]]] = {}


# ----------------------------------------------------------------------------- files


def on_files(files, config):
    for card in sorted((ROOT / "model_cards").glob("*.md")):
        files.append(File.generated(config, f"models/{card.name}",
                                    content=_literal_brackets(card.read_text(encoding="utf-8"))))
    for path in sorted((Path(config["docs_dir"]) / "tutorials").glob("*.ipynb")):
        text, pictures = _notebook_page(_executed(path), path.stem)
        files.append(File.generated(config, f"tutorials/{path.stem}.md", content=text))
        for name, data in pictures.items():
            files.append(File.generated(config, f"tutorials/{path.stem}_files/{name}",
                                        content=data))
    files.append(File.generated(config, "img/coverage.png", content=_coverage_png()))
    return files


def _literal_brackets(text: str) -> str:
    """Brackets that are not links stay text (the cards write optional words as
    ``[adv]``, which Markdown would read as reference links)."""
    pieces, last = [], 0
    for code in _FENCE.finditer(text):
        pieces.append(_BRACKETS.sub(r"\\[\1\\]", text[last:code.start()]))
        pieces.append(code.group(0))
        last = code.end()
    pieces.append(_BRACKETS.sub(r"\\[\1\\]", text[last:]))
    return "".join(pieces)


def _source_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes())
    for source in sorted((ROOT / "groundroll").rglob("*")):
        if source.suffix in (".py", ".json", ".js", ".css") and source.is_file():
            digest.update(str(source.relative_to(ROOT)).encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()[:20]


def _executed(path: Path):
    """The notebook at ``path`` executed (from the cache when nothing changed)."""
    import nbformat

    cached = CACHE / f"{path.stem}-{_source_hash(path)}.ipynb"
    if cached.is_file():
        return nbformat.read(cached, as_version=4)
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    book = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "OMP_NUM_THREADS")}
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in (saved["PYTHONPATH"] or "").split(os.pathsep) if p])
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        with tempfile.TemporaryDirectory() as work:
            NotebookClient(book, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                           resources={"metadata": {"path": work}}).execute()
    except CellExecutionError as err:
        raise PluginError(f"tutorial {path.name} failed:\n{err}") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob(f"{path.stem}-*.ipynb"):
        old.unlink()
    nbformat.write(book, cached)
    return book


def _text_block(text: str) -> str:
    return "```text\n" + text.rstrip("\n") + "\n```"


def _notebook_page(book, stem: str) -> tuple[str, dict[str, bytes]]:
    """Markdown of an executed notebook and the PNG files its pictures go to."""
    parts, pictures = [], {}
    for index, cell in enumerate(book.cells):
        if cell.cell_type == "markdown":
            parts.append(cell.source)
            if index == 0:
                parts.append(f"[Download this notebook]({stem}.ipynb) and run it yourself;"
                             " the outputs below come from running it when this site was"
                             " built.")
            continue
        if cell.cell_type != "code":
            continue
        parts.append("```python\n" + cell.source + "\n```")
        for output in cell.outputs:
            kind = output.output_type
            if kind == "stream":
                parts.append(_text_block(output.text))
            elif kind == "error":
                raise PluginError(f"tutorial {stem}: {output.ename}: {output.evalue}")
            else:
                data = output.get("data", {})
                page_html = data.get("text/html", "")
                if page_html.startswith("<iframe "):     # a groundroll result's display
                    # One line: the frame's page keeps its line breaks as character
                    # references inside the attribute.
                    parts.append('<div class="gr-output">'
                                 + page_html.replace("\n", "&#10;") + "</div>")
                elif "image/png" in data:
                    name = f"out{len(pictures):02d}.png"
                    pictures[name] = base64.b64decode(data["image/png"])
                    parts.append(f"![output {len(pictures)}]({stem}_files/{name})")
                elif "text/plain" in data:
                    parts.append(_text_block(data["text/plain"]))
    return "\n\n".join(parts) + "\n", pictures


def _coverage_png() -> bytes:
    """Bars of the capture-coverage sweep's outcomes per library."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = json.loads((ROOT / "benchmarks" / "results" / "coverage.json").read_text())
    statuses = [("captured", "captured exactly", "tab:green"),
                ("refused", "refused with a reason", "tab:blue"),
                ("failing", "failing", "tab:red"),
                ("not_built", "not exercised", "0.75")]
    libraries = list(data["results"])
    fig = Figure(figsize=(7, 1.0 + 0.7 * len(libraries)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for row, library in enumerate(libraries):
        records = data["results"][library]
        left = 0
        for status, label, colour in statuses:
            n = sum(1 for r in records if r["status"] == status)
            ax.barh(row, n, left=left, color=colour, label=label if row == 0 else None)
            if n:
                ax.text(left + n / 2, row, str(n), ha="center", va="center", fontsize=8)
            left += n
    ax.set_yticks(range(len(libraries)),
                  labels=[f"{lib} {data['versions'].get(lib, '')}" for lib in libraries])
    ax.invert_yaxis()
    ax.set_xlabel("model classes")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=8,
              frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


# ----------------------------------------------------------------------------- math


def on_page_markdown(markdown, page, config, files):
    """Math becomes placeholders that Markdown leaves alone; code is not touched."""
    found: list[tuple[str, bool]] = []

    def hold(tex: str, block: bool) -> str:
        found.append((tex.strip(), block))
        token = f"GRMATH{len(found) - 1}X"
        return f"\n\n{token}\n\n" if block else token

    pieces, last = [], 0
    for code in _FENCE.finditer(markdown):
        pieces.append(_math_in(markdown[last:code.start()], hold))
        pieces.append(code.group(0))
        last = code.end()
    pieces.append(_math_in(markdown[last:], hold))
    if found:
        _MATH[page.file.src_uri] = found
    return "".join(pieces)


def _math_in(text: str, hold) -> str:
    text = _BLOCK_MATH.sub(lambda m: hold(m.group(1), True), text)
    return _INLINE_MATH.sub(lambda m: hold(m.group(1), False), text)


def on_page_content(html, page, config, files):
    found = _MATH.pop(page.file.src_uri, None)
    if not found:
        return html
    from latex2mathml.converter import convert

    def mathml(index: int) -> str:
        tex, block = found[index]
        try:
            return convert(tex, display="block" if block else "inline")
        except Exception as err:  # latex2mathml raises its own exception types
            raise PluginError(f"{page.file.src_uri}: cannot render ${tex}$: {err}") from None

    html = re.sub(r"<p>GRMATH(\d+)X</p>",
                  lambda m: f'<div class="gr-math">{mathml(int(m.group(1)))}</div>', html)
    return re.sub(r"GRMATH(\d+)X", lambda m: mathml(int(m.group(1))), html)


# ----------------------------------------------------------------------------- checks


def on_post_page(output, page, config):
    match = _EXTERNAL_LOAD.search(output)
    if match:
        raise PluginError(f"{page.file.src_uri} would load {match.group(1) or match.group(2)}"
                          " from another address; the site must work offline")
    return output

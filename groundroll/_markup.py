"""Text from data (prompts, sentences, file and model names) made inert in markup.

A Markdown file is rendered as HTML by most viewers, and Markdown passes raw HTML
through: a sentence holding ``<script>`` or ``<img onerror=...>`` would run in the
reader's browser. Every piece of data text that goes into Markdown goes through
:func:`markdown_text`; HTML pages escape with :func:`html.escape` (``groundroll.report``).
"""

from __future__ import annotations

import html
import re

__all__ = ["markdown_text"]

# Characters with a meaning inside a line of CommonMark / GitHub Markdown (emphasis,
# links and images, code, table cells, strikethrough), escaped with a backslash. The
# text never starts a line of the file, so heading and list markers need no escape.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]()!|~])")


def markdown_text(text, *, limit: int | None = None) -> str:
    """``text`` as literal Markdown: no HTML, no markup, one line.

    HTML-special characters become entities (``<`` is ``&lt;``), Markdown punctuation
    is backslash-escaped (so ``|`` stays inside its table cell and ``[x](javascript:...)``
    is no link), and line breaks become spaces. ``limit`` cuts the text (before
    escaping) to that many characters, ending in ``...``.

    Examples
    --------
    >>> markdown_text('<script>alert(1)</script> | [x](y)')
    '&lt;script&gt;alert\\\\(1\\\\)&lt;/script&gt; \\\\| \\\\[x\\\\]\\\\(y\\\\)'
    >>> markdown_text("a long sentence", limit=8)
    'a lon...'
    """
    text = " ".join(str(text).split())
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 3)].rstrip() + "..."
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))

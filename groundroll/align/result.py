"""The word alignment of one sentence pair, with its plot, HTML page and JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Alignment"]


@dataclass
class Alignment:
    """A word alignment of one sentence pair.

    Attributes
    ----------
    src_words, tgt_words : list of str
        Source and target words (whitespace-split).
    matrix : numpy.ndarray
        ``[T_words, S_words]`` float64 word scores, target rows, source columns: the
        mean over a target word's subwords of the sum over a source word's subwords of
        the token map. Not renormalised.
    links : set of (int, int)
        Hard links ``(source index, target index)``, 0-indexed (Pharaoh order).
    scores : dict of (int, int) to float
        ``matrix[t, s]`` of every link ``(s, t)``.
    settings : dict
        Everything the alignment was computed with (model, method, layers, heads, shift,
        extraction, link_threshold, symmetrize, whether the target was generated, ...).
    """

    src_words: list[str]
    tgt_words: list[str]
    matrix: np.ndarray
    links: set[tuple[int, int]]
    scores: dict[tuple[int, int], float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def pharaoh(self) -> str:
        """The links as one Pharaoh line, ``"s-t s-t ..."`` (0-indexed, sorted).

        Examples
        --------
        >>> Alignment(["a", "b"], ["x"], np.ones((1, 2)), {(1, 0), (0, 0)}).pharaoh()
        '0-0 1-0'
        """
        from groundroll.align.io import format_pharaoh

        return format_pharaoh(self.links)

    def plot(self, *, gold=None, ax=None, title: str | None = None, cmap: str = "Greys"):
        """The matrix with links (red dots) and optional gold links (blue squares).

        Returns
        -------
        matplotlib.figure.Figure
        """
        from groundroll.viz import plot_alignment

        if title is None:
            title = f"{self.settings.get('method', '')} " + (
                "AWI" if self.settings.get("shift") else "AWO")
        return plot_alignment(self.matrix, self.src_words, self.tgt_words,
                              links=self.links, gold=gold, ax=ax, cmap=cmap, title=title)

    def to_html(self, *, title: str | None = None) -> str:
        """A self-contained interactive HTML page: hover a word to see its links and
        scores, links and matrix views, Pharaoh export
        (:func:`groundroll.report.alignment_report`; no network, data inline).

        Examples
        --------
        >>> a = Alignment(["a", "b"], ["x"], np.ones((1, 2)), {(0, 0)})
        >>> a.to_html().startswith("<!DOCTYPE html>")
        True
        """
        from groundroll.report import alignment_report

        return alignment_report(self, title=title)

    def _repr_html_(self) -> str:
        """The interactive report in a notebook (:func:`groundroll.report.notebook_frame`),
        within :data:`groundroll.report.NOTEBOOK_MAX_BYTES`."""
        from groundroll.report import NOTEBOOK_MAX_BYTES, alignment_report, notebook_frame

        doc = alignment_report(self, max_bytes=NOTEBOOK_MAX_BYTES)
        return notebook_frame(doc, height=min(900, 320 + 28 * len(self.tgt_words)))

    def _repr_png_(self) -> bytes:
        """:meth:`plot` as PNG: what a notebook shows where HTML is not rendered."""
        from groundroll.viz import figure_png

        return figure_png(self.plot())

    def to_dict(self) -> dict:
        """JSON-ready dict (links as sorted ``[s, t]`` lists)."""
        return dict(src_words=list(self.src_words), tgt_words=list(self.tgt_words),
                    matrix=self.matrix.tolist(), links=[list(l) for l in sorted(self.links)],
                    scores=[[s, t, v] for (s, t), v in sorted(self.scores.items())],
                    settings=self.settings)

    @classmethod
    def from_dict(cls, d: dict) -> "Alignment":
        """The inverse of :meth:`to_dict`; settings written by earlier releases
        (``threshold``, ``symmetrise``) get their current names."""
        from groundroll.align.extract import _current_keys

        t, s = len(d["tgt_words"]), len(d["src_words"])
        return cls(list(d["src_words"]), list(d["tgt_words"]),
                   np.asarray(d["matrix"], dtype=np.float64).reshape(t, s),
                   {(int(a), int(b)) for a, b in d["links"]},
                   {(int(a), int(b)): float(v) for a, b, v in d.get("scores", [])},
                   _current_keys(d.get("settings", {}), what="alignment settings"))

    def save(self, path, *, force: bool = False) -> None:
        """Write :meth:`to_dict` as JSON (atomically; no overwrite unless ``force``)."""
        import json

        from groundroll._atomic import atomic_write

        with atomic_write(path, force=force, mode="w") as handle:
            json.dump(self.to_dict(), handle)

    @classmethod
    def load(cls, path) -> "Alignment":
        import json

        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

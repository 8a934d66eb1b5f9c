"""The word alignment of one sentence pair, with its plot, HTML page and JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from groundroll._atomic import atomic_write
from groundroll.alignment.io import AlignmentFormatError, format_pharaoh
from groundroll.report import NOTEBOOK_MAX_BYTES, alignment_report, notebook_frame
from groundroll.viz import figure_png, plot_alignment

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
        return format_pharaoh(self.links)

    def plot(self, *, gold=None, ax=None, title: str | None = None, cmap: str = "Greys"):
        """The matrix with links (red dots) and optional gold links (blue squares).

        Returns
        -------
        matplotlib.figure.Figure
        """
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
        return alignment_report(self, title=title)

    def _repr_html_(self) -> str:
        """The interactive report in a notebook (:func:`groundroll.report.notebook_frame`),
        within :data:`groundroll.report.NOTEBOOK_MAX_BYTES`."""
        doc = alignment_report(self, max_bytes=NOTEBOOK_MAX_BYTES)
        return notebook_frame(doc, height=min(900, 320 + 28 * len(self.tgt_words)))

    def _repr_png_(self) -> bytes:
        """:meth:`plot` as PNG: what a notebook shows where HTML is not rendered."""
        return figure_png(self.plot())

    def to_dict(self) -> dict:
        """JSON-ready dict (links as sorted ``[s, t]`` lists)."""
        return dict(src_words=list(self.src_words), tgt_words=list(self.tgt_words),
                    matrix=self.matrix.tolist(), links=[list(l) for l in sorted(self.links)],
                    scores=[[s, t, v] for (s, t), v in sorted(self.scores.items())],
                    settings=self.settings)

    @classmethod
    def from_dict(cls, d: dict) -> "Alignment":
        """The inverse of :meth:`to_dict`.

        Everything is checked against the schema: words are lists of strings, the
        matrix is ``[T, S]`` finite numbers, every link ``[s, t]`` and score
        ``[s, t, value]`` names a source and a target word that exist.

        Raises
        ------
        AlignmentFormatError
            What is wrong, where.
        """
        if not isinstance(d, dict):
            raise AlignmentFormatError(
                f"a saved alignment is a JSON object, got {type(d).__name__}")
        for key in ("src_words", "tgt_words", "matrix", "links"):
            if key not in d:
                raise AlignmentFormatError(f"saved alignment: missing {key!r}")
        for key in ("src_words", "tgt_words"):
            if not isinstance(d[key], list) or not all(isinstance(w, str) for w in d[key]):
                raise AlignmentFormatError(
                    f"saved alignment: {key} must be a list of strings")
        t, s = len(d["tgt_words"]), len(d["src_words"])
        try:
            matrix = np.asarray(d["matrix"], dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise AlignmentFormatError(
                "saved alignment: matrix must be a list of rows of numbers") from None
        if matrix.size != t * s or (matrix.ndim != 2 and matrix.size) or (
                matrix.ndim == 2 and matrix.shape != (t, s)):
            raise AlignmentFormatError(f"saved alignment: matrix has shape {matrix.shape},"
                                       f" expected [{t}, {s}] (target x source words)")
        if not np.isfinite(matrix).all():
            raise AlignmentFormatError("saved alignment: matrix holds NaN or infinite values")
        links = {_pair(item, s, t, "links") for item in _list(d["links"], "links")}
        scores = {}
        for item in _list(d.get("scores", []), "scores"):
            if not isinstance(item, list) or len(item) != 3:
                raise AlignmentFormatError(
                    f"saved alignment: each score is [s, t, value], got {item!r:.60}")
            value = item[2]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    np.isfinite(value)):
                raise AlignmentFormatError(
                    f"saved alignment: score value {value!r:.60} is not a finite number")
            scores[_pair(item[:2], s, t, "scores")] = float(value)
        settings = d.get("settings", {})
        if not isinstance(settings, dict):
            raise AlignmentFormatError(f"saved alignment: settings must be a JSON object,"
                                       f" got {type(settings).__name__}")
        return cls(list(d["src_words"]), list(d["tgt_words"]), matrix.reshape(t, s), links,
                   scores, settings)

    def save(self, path, *, force: bool = False) -> None:
        """Write :meth:`to_dict` as JSON (atomically; no overwrite unless ``force``)."""
        import json

        with atomic_write(path, force=force, mode="w") as handle:
            json.dump(self.to_dict(), handle)

    @classmethod
    def load(cls, path) -> "Alignment":
        """Read a file written by :meth:`save` (checked as :meth:`from_dict` says).

        Raises
        ------
        AlignmentFormatError
            Not JSON, not UTF-8, nested too deeply, or not a saved alignment.
        FileNotFoundError
            No such file.
        """
        import json

        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except ValueError as err:           # JSONDecodeError, UnicodeDecodeError
            raise AlignmentFormatError(f"{path} is not valid JSON: {err}") from None
        except RecursionError:
            raise AlignmentFormatError(f"{path} is nested too deeply to be a saved"
                                       " alignment") from None
        try:
            return cls.from_dict(data)
        except AlignmentFormatError as err:
            raise AlignmentFormatError(f"{path}: {err}") from None


def _list(value, what: str) -> list:
    if not isinstance(value, list):
        raise AlignmentFormatError(f"saved alignment: {what} must be a list, got"
                                   f" {type(value).__name__}")
    return value


def _pair(item, s: int, t: int, what: str) -> tuple[int, int]:
    """A link ``[s, t]`` of a saved alignment, within its ``s`` source and ``t`` target
    words."""
    if (not isinstance(item, list) or len(item) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
        raise AlignmentFormatError(f"saved alignment: each entry of {what} starts with two"
                                   f" integer word indices [s, t], got {str(item)[:60]}")
    a, b = item
    if not (0 <= a < s and 0 <= b < t):
        raise AlignmentFormatError(f"saved alignment: {what} entry [{a}, {b}] is outside"
                                   f" the {s} source x {t} target words")
    return a, b

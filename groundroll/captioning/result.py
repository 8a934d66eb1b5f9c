"""The result of :func:`groundroll.ground_caption`."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import OutputSet
from .._json import jsonable
from ..grounding.result import check_writable_set, manifest_name
from ..report import NOTEBOOK_MAX_BYTES, caption_report, notebook_frame

__all__ = ["CaptionGrounding"]


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _slug(word: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", word.lower()).strip("-")[:40] or "word"


@dataclass
class CaptionGrounding:
    """Where in the image each word of a caption comes from.

    Attributes
    ----------
    caption : str
        The caption, generated or given.
    words : list of str
        Its words (subwords merged).
    content : ndarray of bool, shape [W]
        False for function words (articles, conjunctions, prepositions, ...) and words
        the tokenizer does not know.
    heatmaps : ndarray of float32, shape [W, H, W_img]
        Each word's map at the image's pixels, in [0, 1].
    masks : ndarray of bool, shape [W, H, W_img]
        Each word's mask.
    logprobs : ndarray of float32, shape [W]
        The log-probability of each word given the image and the words before it.
    generated : bool
        Whether the caption is the model's own.
    truncated : bool
        Whether generation stopped at the token limit rather than at an end token.
    settings : dict
        What produced the result (model, method, limits, token ids, seconds).
    image : ndarray of uint8, shape [H, W_img, 3], optional
    """

    caption: str
    words: list[str]
    content: np.ndarray
    heatmaps: np.ndarray
    masks: np.ndarray
    logprobs: np.ndarray
    generated: bool
    truncated: bool
    settings: dict = field(default_factory=dict)
    image: np.ndarray | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (f"CaptionGrounding(caption={self.caption!r}, words={len(self.words)}, "
                f"method={self.settings.get('method')!r}, generated={self.generated})")

    @property
    def content_words(self) -> list[str]:
        """The words that name something (:attr:`content` True)."""
        return [w for w, c in zip(self.words, self.content) if c]

    def word(self, word: str | int) -> tuple[np.ndarray, np.ndarray]:
        """``(heatmap, mask)`` of a word, by position or by its first occurrence."""
        if isinstance(word, str):
            if word not in self.words:
                raise KeyError(f"{word!r} is not a word of the caption; words: {self.words}")
            word = self.words.index(word)
        return self.heatmaps[word], self.masks[word]

    def summary(self) -> dict:
        """JSON-ready summary: caption, words, flags, log-probabilities, mask areas."""
        return {"caption": self.caption, "words": list(self.words),
                "content": [bool(c) for c in self.content],
                "logprobs": [float(v) for v in self.logprobs],
                "areas": [int(m.sum()) for m in self.masks],
                "generated": bool(self.generated), "truncated": bool(self.truncated),
                "settings": jsonable(self.settings)}

    def to_html(self, *, title: str | None = None) -> str:
        """A self-contained page (:func:`groundroll.report.caption_report`)."""
        return caption_report(self, title=title)

    def _repr_html_(self) -> str:
        doc = self.to_html()
        if len(doc.encode()) > NOTEBOOK_MAX_BYTES:
            return f"<p>{len(self.words)} words; the page is too large to show inline:" \
                   " use to_html() and write it to a file</p>"
        return notebook_frame(doc)

    def output_paths(self, directory, *, stem: str = "caption") -> dict[str, Path]:
        """Files :meth:`save` writes: ``summary`` (json), ``page`` (html) and
        ``heatmap_k`` / ``mask_k`` (PNG) per word."""
        directory = Path(directory)
        paths = {"summary": directory / f"{stem}.json", "page": directory / f"{stem}.html"}
        for k, word in enumerate(self.words):
            paths[f"heatmap_{k}"] = directory / f"{stem}_{k}_{_slug(word)}_heatmap.png"
            paths[f"mask_{k}"] = directory / f"{stem}_{k}_{_slug(word)}_mask.png"
        return paths

    def save(self, directory, *, stem: str = "caption", force: bool = False) -> dict:
        """Write the summary, the page and each word's heatmap and mask as one set of
        files: all or none, existing files an error unless ``force``, files groundroll
        did not write never touched (as :meth:`groundroll.Segmentation.save`).

        Returns
        -------
        dict of str to Path
        """
        paths = self.output_paths(directory, stem=stem)
        check_writable_set(directory, [paths], force=force)
        manifest = manifest_name(stem)
        with OutputSet(directory, force=force, manifests=[manifest]) as out:
            for k in range(len(self.words)):
                heat = (np.clip(self.heatmaps[k], 0, 1) * 255).round().astype(np.uint8)
                out.add(paths[f"heatmap_{k}"].name, _png(heat), manifest=manifest)
                out.add(paths[f"mask_{k}"].name, _png(self.masks[k].astype(np.uint8) * 255),
                        manifest=manifest)
            out.add(paths["page"].name, self.to_html(), manifest=manifest)
            summary = self.summary()
            summary["files"] = {k: p.name for k, p in paths.items() if k != "summary"}
            out.add(paths["summary"].name, json.dumps(summary, indent=2) + "\n",
                    manifest=manifest)
            out.commit()
        return paths

    def plot(self, *, columns: int = 4) -> Any:
        """A matplotlib figure: each word's heatmap over the image."""
        import matplotlib.pyplot as plt

        n = max(1, len(self.words))
        cols = min(columns, n)
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for k, word in enumerate(self.words):
            ax = axes.ravel()[k]
            if self.image is not None:
                ax.imshow(self.image)
            ax.imshow(self.heatmaps[k], cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            ax.set_title(word if self.content[k] else f"({word})", fontsize=10)
        fig.tight_layout()
        return fig

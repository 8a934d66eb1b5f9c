"""The result of :func:`groundroll.segment` and its writers.

:class:`Segmentation` holds the label map, masks, heatmaps and scores, and writes them
as one set of files (palette PNG labels, one PNG per mask, an overlay, a JSON summary)
through :class:`groundroll._atomic.OutputSet`, so a failed write leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import masks as M
from .._images import _resize_rgb, _resize_rgb_rows
from .._atomic import OutputSet, check_directory, check_set
from .._json import jsonable
from .._options import check_segment_options
from ..report import NOTEBOOK_MAX_BYTES, notebook_frame, segmentation_report
from ..viz import _new_axes, figure_png, overlay

__all__ = ["Segmentation", "output_paths", "manifest_name", "check_writable_set", "slug"]


def slug(text: str, max_len: int = 40) -> str:
    """Filesystem-safe lower-case name of a prompt: ``"a Red circle!"`` -> ``"a_red_circle"``."""
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return (s[:max_len].rstrip("_") or "prompt")


# ----------------------------------------------------------------------------- result


@dataclass
class Segmentation:
    """Result of :func:`segment`.

    Attributes
    ----------
    labels : ndarray of int32, shape [H, W]
        ``0`` background, ``k + 1`` prompt ``k``.
    masks : ndarray of bool, shape [P, H, W]
        ``labels == k + 1`` per prompt.
    heatmaps : ndarray of float32, shape [P, H, W]
        Each prompt's map normalised to [0, 1] (the source's map before the softmax).
    scores : ndarray of float32, shape [P]
        Whole-image score of each prompt: image-text cosine similarity (BLIP: the
        image-text matching probability).
    prompts : list of str
    settings : dict
        Every option used, the model name, image sizes and the seconds taken.
    image : ndarray of uint8, shape [h, w, 3]
        The RGB image, for overlays. A large image file is decoded at a reduced size
        (``h, w`` at least the working resolution); :meth:`overlay` resizes it.
    """

    labels: np.ndarray
    masks: np.ndarray
    heatmaps: np.ndarray
    scores: np.ndarray
    prompts: list[str]
    settings: dict = field(default_factory=dict)
    image: np.ndarray | None = field(default=None, repr=False)

    @property
    def areas(self) -> list[int]:
        """Pixels in each prompt's mask."""
        return [int(m.sum()) for m in self.masks]

    def boxes(self) -> list[tuple[int, int, int, int] | None]:
        """Per prompt ``(x0, y0, x1, y1)`` of its mask (``x1``, ``y1`` exclusive), or
        None for an empty mask.

        Examples
        --------
        >>> m = np.zeros((1, 4, 5), bool); m[0, 1:3, 2:4] = True
        >>> Segmentation(m[0].astype(np.int32), m, m.astype(np.float32),
        ...              np.zeros(1, np.float32), ["x"]).boxes()
        [(2, 1, 4, 3)]
        """
        out = []
        for m in self.masks:
            rows = np.flatnonzero(m.any(1))
            cols = np.flatnonzero(m.any(0))
            out.append(None if rows.size == 0 else
                       (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))
        return out

    def overlay(self, *, alpha: float = 0.5) -> np.ndarray:
        """uint8 ``[H, W, 3]`` image with the labelled pixels coloured
        (:func:`groundroll.masks.palette` colours, label ``k + 1`` for prompt ``k``)."""
        image = self.image if self.image is not None else np.zeros(
            self.labels.shape + (3,), np.uint8)
        image = _resize_rgb(image, self.labels.shape)
        colours = M.palette(max(len(self.prompts) + 1, 2))
        # Blocks of rows: the blend's float temporaries stay small on huge images.
        out = np.empty(self.labels.shape + (3,), np.uint8)
        step = max(1, 4_000_000 // max(1, self.labels.shape[1]))
        for top in range(0, self.labels.shape[0], step):
            rows = slice(top, top + step)
            out[rows] = overlay(image[rows], self.labels[rows], palette=colours, alpha=alpha)
        return out

    def to_html(self, *, title: str | None = None) -> str:
        """A self-contained interactive HTML page: the image with each prompt's mask and
        heatmap as toggleable layers, an opacity slider and the scores
        (:func:`groundroll.report.segmentation_report`; no network, data inline).

        Examples
        --------
        >>> seg.to_html().startswith("<!DOCTYPE html>")          # doctest: +SKIP
        True
        """
        return segmentation_report(self, title=title)

    def plot(self, *, ax=None, alpha: float = 0.5, max_side: int = 512):
        """The overlay with a legend: each prompt's colour, score and mask area.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Draw here instead of a new figure.
        alpha : float
            Opacity of the label colours.
        max_side : int
            Long side, in pixels, above which the overlay is drawn downscaled.

        Returns
        -------
        matplotlib.figure.Figure
            ``ax``'s figure, or a new one (not registered with pyplot).
        """
        from matplotlib.patches import Patch

        if max_side < 16:
            raise ValueError(f"max_side must be at least 16 pixels, got {max_side}")
        h, w = self.labels.shape
        scale = min(1.0, max_side / max(h, w))
        small = (max(1, round(h * scale)), max(1, round(w * scale)))
        shown = self if small == (h, w) else self._resized(small)
        fig, ax = _new_axes(ax, (5.0, 5.0 * h / w + 1.0))
        ax.imshow(shown.overlay(alpha=alpha), interpolation="nearest")
        ax.set_axis_off()
        colours = M.palette(max(len(self.prompts) + 1, 2)) / 255.0
        total = max(1, h * w)
        handles = [Patch(facecolor=colours[k + 1], edgecolor="0.3",
                         label=f"{p}: score {float(self.scores[k]):.3f},"
                               f" {100 * area / total:.1f}% of the image")
                   for k, (p, area) in enumerate(zip(self.prompts, self.areas))]
        if handles:
            ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01),
                      fontsize=8, frameon=False)
        return fig

    def _resized(self, hw: tuple[int, int]) -> "Segmentation":
        """A copy with labels (nearest neighbour) and image at size ``hw``, for pictures."""
        rows = (np.arange(hw[0]) * self.labels.shape[0] // hw[0])[:, None]
        cols = (np.arange(hw[1]) * self.labels.shape[1] // hw[1])[None, :]
        labels = self.labels[rows, cols]
        image = None if self.image is None else _resize_rgb(self.image, hw)
        return Segmentation(labels, np.zeros((0,) + hw, bool), np.zeros((0,) + hw, np.float32),
                            self.scores, list(self.prompts), image=image)

    def _repr_html_(self) -> str:
        """The interactive report in a notebook (:func:`groundroll.report.notebook_frame`),
        within :data:`groundroll.report.NOTEBOOK_MAX_BYTES`."""
        doc = segmentation_report(self, max_side=512, max_bytes=NOTEBOOK_MAX_BYTES)
        return notebook_frame(doc, height=720)

    def _repr_png_(self) -> bytes:
        """:meth:`plot` as PNG: what a notebook shows where HTML is not rendered."""
        return figure_png(self.plot())

    def to_coco(self, *, image_id: int = 0, start_id: int = 1) -> list[dict]:
        """COCO annotations, one per non-empty mask, with RLE segmentation.

        Each dict has ``id``, ``image_id``, ``category_id`` (``k + 1``),
        ``category_name`` (the prompt), ``segmentation`` (RLE, ``counts`` as str),
        ``area``, ``bbox`` (``[x, y, width, height]``), ``iscrowd`` 0 and ``score``.
        """
        from pycocotools import mask as mask_util

        out = []
        for k, m in enumerate(self.masks):
            if not m.any():
                continue
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            area = float(mask_util.area(rle))
            bbox = [float(v) for v in mask_util.toBbox(rle)]
            rle = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
            out.append({"id": start_id + len(out), "image_id": image_id,
                        "category_id": k + 1, "category_name": self.prompts[k],
                        "segmentation": rle, "area": area, "bbox": bbox, "iscrowd": 0,
                        "score": float(self.scores[k])})
        return out

    def polygons(self, *, tolerance: float = 1.0) -> list[list[np.ndarray]]:
        """Per prompt, the outlines of its mask as ``[n, 2]`` float arrays of
        ``(row, col)`` vertices (:func:`skimage.measure.find_contours` at level 0.5,
        simplified with :func:`skimage.measure.approximate_polygon`)."""
        from skimage.measure import approximate_polygon, find_contours

        out = []
        for m in self.masks:
            padded = np.pad(m.astype(np.float32), 1)
            polys = [approximate_polygon(c - 1, tolerance) for c in find_contours(padded, 0.5)]
            out.append([p for p in polys if len(p) >= 3])
        return out

    def summary(self) -> dict:
        """JSON-ready summary: prompts, scores, areas, boxes, settings."""
        return {"prompts": list(self.prompts),
                "scores": [float(s) for s in self.scores],
                "areas": self.areas,
                "boxes": [None if b is None else list(b) for b in self.boxes()],
                "box_format": "[x0, y0, x1, y1] pixels, x1 and y1 exclusive",
                "image_size": list(self.labels.shape),
                "settings": jsonable(self.settings)}

    def output_paths(self, directory, *, stem: str = "segmentation") -> dict[str, Path]:
        """Files :meth:`save` writes: ``labels``, ``overlay``, ``summary`` and
        ``mask_k`` per prompt."""
        return output_paths(directory, self.prompts, stem=stem)

    def save(self, directory, *, stem: str = "segmentation", force: bool = False) -> dict:
        """Write ``<stem>_labels.png`` (palette PNG), ``<stem>_<k>_<slug>.png`` (one
        mask per prompt), ``<stem>_overlay.png`` and ``<stem>.json``.

        The folder is created if missing. The files are written as one set: into a
        temporary folder inside ``directory`` first, then moved into place together,
        so an error (full disk, file size limit, read-only folder) leaves no file of
        the set behind and a previous set untouched. A manifest
        (``.<stem>.groundroll.json``) records the set's files: with ``force`` the
        previous set of this ``stem`` is replaced whole (its files that the new set
        does not have, such as the mask of a prompt no longer given, are removed;
        files groundroll did not write are never touched). Existing files are an
        error unless ``force``.

        Returns
        -------
        dict of str to Path

        Examples
        --------
        >>> paths = seg.save("out/run1")                       # doctest: +SKIP
        >>> paths["summary"].name                              # doctest: +SKIP
        'segmentation.json'
        """
        paths = self.output_paths(directory, stem=stem)
        check_writable_set(directory, [paths], force=force)
        with OutputSet(directory, force=force, manifests=[manifest_name(stem)]) as out:
            self.stage(out, stem=stem)
            out.commit()
        return paths

    def _overlay_png(self, *, alpha: float = 0.5) -> bytes:
        """PNG bytes of :meth:`overlay`; large images are blended and compressed in
        blocks of rows, so the full-size overlay never exists in memory at once."""
        if self.labels.size <= _STREAM_PNG_PIXELS:
            return _png(self.overlay(alpha=alpha))
        image = self.image if self.image is not None else np.zeros(
            self.labels.shape + (3,), np.uint8)
        colours = M.palette(max(len(self.prompts) + 1, 2))
        height, width = self.labels.shape
        step = max(1, 4_000_000 // max(1, width))
        blocks = (overlay(_resize_rgb_rows(image, self.labels.shape, top, top + step),
                          self.labels[top:top + step], palette=colours, alpha=alpha)
                  for top in range(0, height, step))
        return _png_rgb_rows(blocks, self.labels.shape)

    def stage(self, out, *, stem: str = "segmentation") -> dict:
        """Add this result's files to an open :class:`groundroll._atomic.OutputSet`
        (the set of ``stem``); :meth:`save` is ``stage`` then ``commit``."""
        paths = self.output_paths(out.directory, stem=stem)
        manifest = manifest_name(stem)
        out.add(paths["labels"].name, _png(self.labels, palette=True), manifest=manifest)
        for k, m in enumerate(self.masks):
            out.add(paths[f"mask_{k}"].name, _png(m.astype(np.uint8) * 255),
                    manifest=manifest)
        out.add(paths["overlay"].name, self._overlay_png(), manifest=manifest)
        summary = self.summary()
        summary["files"] = {k: p.name for k, p in paths.items() if k != "summary"}
        out.add(paths["summary"].name, json.dumps(summary, indent=2) + "\n",
                manifest=manifest)
        return paths


def manifest_name(stem: str) -> str:
    """File name of the manifest of the output set ``stem``."""
    return f".{stem}.groundroll.json"


def check_writable_set(directory, planned: Sequence[dict], *, force: bool = False) -> None:
    """Check, before any work, that the sets ``planned`` (dicts of paths as
    :func:`output_paths` gives, one per stem) can be written into ``directory``: the
    folder (or the nearest existing one that would hold it) is writable, no planned
    path is a directory, no two sets share a file, and without ``force`` no planned
    file exists and no earlier set of a stem has files left over (a hidden manifest
    whose files were all deleted is replaced).

    Raises
    ------
    NotADirectoryError, PermissionError, IsADirectoryError, FileExistsError, ValueError
    """
    check_directory(directory)
    files = [p for paths in planned for p in paths.values()]
    if len({os.path.abspath(p) for p in files}) != len(files):
        raise ValueError("two outputs share a file name")
    for paths in planned:
        check_set(directory, [p.name for p in paths.values()],
                  manifest_name(paths["summary"].stem), force=force)


def output_paths(directory, prompts: Sequence[str], *, stem: str = "segmentation") -> dict:
    """Paths :meth:`Segmentation.save` writes for ``prompts`` (see there).

    Raises
    ------
    OptionError
        More prompts than a label-map PNG holds (255).
    """
    check_segment_options(prompts=prompts)
    d = Path(directory)
    paths = {"labels": d / f"{stem}_labels.png"}
    for k, p in enumerate(prompts):
        paths[f"mask_{k}"] = d / f"{stem}_{k}_{slug(p)}.png"
    paths["overlay"] = d / f"{stem}_overlay.png"
    paths["summary"] = d / f"{stem}.json"
    return paths


#: Images with more pixels write their overlay PNG in blocks of rows.
_STREAM_PNG_PIXELS = 16_000_000


def _png_rgb_rows(blocks, hw: tuple[int, int]) -> bytes:
    """An 8-bit RGB PNG from uint8 ``[rows, W, 3]`` blocks, compressed as they come
    (no filter, zlib level 6)."""
    import struct
    import zlib

    height, width = hw

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    parts = [b"\x89PNG\r\n\x1a\n",
             chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    compressor = zlib.compressobj(6)
    rows = 0
    for block in blocks:
        block = np.ascontiguousarray(block, dtype=np.uint8)
        framed = np.zeros((block.shape[0], 1 + 3 * width), np.uint8)   # filter byte 0
        framed[:, 1:] = block.reshape(block.shape[0], 3 * width)
        rows += block.shape[0]
        data = compressor.compress(framed.tobytes())
        if data:
            parts.append(chunk(b"IDAT", data))
    if rows != height:
        raise ValueError(f"PNG rows: expected {height}, got {rows}")
    parts.append(chunk(b"IDAT", compressor.flush()))
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)


def _png(array: np.ndarray, *, palette: bool = False) -> bytes:
    import io

    from PIL import Image

    if palette:
        if array.max(initial=0) > 255:
            raise ValueError("palette PNGs hold at most 255 prompts")
        im = Image.fromarray(array.astype(np.uint8), mode="P")
        im.putpalette(M.palette(256).ravel().tolist())
    else:
        im = Image.fromarray(array)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()

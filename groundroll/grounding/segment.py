"""``segment()``: text prompts in, label map, masks and heatmaps out.

Pipeline (numpy after the map source, all through :mod:`groundroll.masks`):

1. The image (path, PIL image or array; any mode) becomes RGB uint8. Images whose long
   side exceeds ``max_side`` are downscaled to a working resolution first.
2. A map source (:mod:`groundroll.grounding.sources`) gives one map per channel on the
   patch grid: the prompts, then the background prompts. The image is letterboxed
   (aspect kept, padded) into the square model input and the maps are sent back
   through the same geometry. Dense sources on large images slide a model-sized
   window over the image resized to a short side of twice the input size and
   stitch the windows.
3. Per-channel normalisation, then probabilities: a softmax across channels of
   ``logit_scale * maps`` (with a single channel, the normalised map itself).
4. Optional refinement (``"slic"`` superpixel pooling or ``"pamr"``), argmax label map,
   background by probability ``threshold`` and background prompts, optional removal of
   small objects and hole filling.
5. The label map is resized to the full image by nearest neighbour and the heatmaps
   bilinearly, so the working memory stays that of the working resolution.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import masks as M
from .._locks import locked, short, warn_once, warning_scope
from ._model import ModelHandle, resolve_model
from .dense import DENSE_METHODS
from .sources import METHODS, image_text_scores, prompt_maps

__all__ = ["segment", "Segmentation", "load_image", "output_paths", "channel_maps",
           "channel_probabilities", "REFINE", "slug", "check_templates", "manifest_name",
           "check_writable_set", "DEFAULT_MAX_PIXELS"]

REFINE = ("none", "slic", "pamr")


# ----------------------------------------------------------------------------- input


#: Default limit of :func:`load_image` / :func:`segment` ``max_pixels``: PIL's own
#: decompression-bomb error limit (``2 * PIL.Image.MAX_IMAGE_PIXELS`` by default).
DEFAULT_MAX_PIXELS = 178_956_970

_PIL_OPEN_LOCK = threading.Lock()


def _open_unchecked(path: Path):
    """``PIL.Image.open`` without PIL's global decompression-bomb check (groundroll
    checks ``max_pixels`` itself, per call). ``open`` reads only the header."""
    from PIL import Image

    with _PIL_OPEN_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _read_image(image, *, max_side: int | None = None,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, tuple]:
    """``(rgb, full_hw)``: the RGB uint8 image, decoded at a reduced size when a file
    is larger than ``max_side`` and the format allows it, and the image's full size.
    """
    from PIL import Image, UnidentifiedImageError

    if not isinstance(image, (str, os.PathLike)):
        rgb = _to_rgb(image, max_pixels=max_pixels)
        return rgb, tuple(rgb.shape[:2])
    path = Path(image)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not an image file; pass the"
                                " image files inside it")
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with _open_unchecked(path) as im:
            width, height = im.size
            _check_pixels(width * height, max_pixels, f"image {path} ({width} x {height})")
            full_hw = (height, width)
            long_side = max(width, height)
            if max_side is not None and long_side > max_side:
                if im.format == "JPEG":
                    # DCT scaling: decode at 1/2, 1/4 or 1/8 while still >= max_side.
                    scale = long_side / max_side
                    im.draft("RGB", (max(1, int(np.ceil(width / scale))),
                                     max(1, int(np.ceil(height / scale)))))
                    im.load()
                else:
                    factor = int(long_side // max_side)
                    im.load()
                    if factor >= 2:
                        reduced = im.reduce(factor)
                        im.close()
                        return _to_rgb(reduced, max_pixels=None), full_hw
            else:
                im.load()
            return _to_rgb(im, max_pixels=None), full_hw
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        if isinstance(err, (IsADirectoryError, FileNotFoundError)):
            raise
        raise ValueError(f"cannot read image {path}: {err}") from err


def _check_pixels(pixels: int, max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and pixels > max_pixels:
        raise ValueError(
            f"{what} has {pixels:,} pixels, more than max_pixels={max_pixels:,} (a guard"
            " against decompression bombs); if you trust the file, allow it with"
            " max_pixels= (command line: --max-pixels N)")


def load_image(image, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` from a path, a PIL image or an array.

    Grayscale, RGBA (alpha dropped), palette, 16-bit and float images are converted:
    16-bit integers are scaled by ``255 / 65535``, floats must lie in [0, 1].

    Parameters
    ----------
    image : str, PathLike, PIL.Image or ndarray
    max_pixels : int or None, optional
        Refuse images with more pixels than this (checked from the file header,
        before decoding); None: no limit.

    Raises
    ------
    FileNotFoundError
        A path that does not exist.
    IsADirectoryError
        A path that is a directory.
    ValueError
        A file that is not a readable image, an image larger than ``max_pixels``, a
        float array with values outside [0, 1] (or NaN), or an array of an unusable
        shape.

    Examples
    --------
    >>> load_image(np.zeros((4, 5), np.uint16)).shape
    (4, 5, 3)
    """
    return _read_image(image, max_pixels=max_pixels)[0]


def _to_rgb(image, *, max_pixels: int | None) -> np.ndarray:
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL
        _check_pixels(image.size[0] * image.size[1], max_pixels,
                      f"image ({image.size[0]} x {image.size[1]})")
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(image).astype(np.float64)
            scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 1.0
            gray = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=-1)
        if image.mode == "F":
            arr = np.asarray(image, dtype=np.float64)
            if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
                # Mode "F" images usually hold raw measurements: scale them to [0, 1].
                raise ValueError("float image (mode 'F') has values outside [0, 1];"
                                 " scale it to [0, 1] first")
            return _to_rgb(arr, max_pixels=None)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return np.asarray(rgb, dtype=np.uint8).copy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4) or min(arr.shape[:2]) < 1:
        raise ValueError(f"expected an image [H, W], [H, W, 3] or [H, W, 4], got shape"
                         f" {arr.shape}")
    _check_pixels(arr.shape[0] * arr.shape[1], max_pixels,
                  f"image array ({arr.shape[1]} x {arr.shape[0]})")
    if arr.shape[-1] in (1, 2):
        arr = np.repeat(arr[..., :1], 3, axis=-1)
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("float image has NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"float image values must lie in [0, 1], got [{lo:g}, {hi:g}];"
                             " divide 0-255 data by 255 or pass a uint8 array")
        return np.round(arr * 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min(initial=0) < 0:
            raise ValueError("integer image has negative values")
        top = 255 if arr.max(initial=0) <= 255 else 65535
        return np.round(np.clip(arr, 0, top) * (255.0 / top)).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {arr.dtype}")


def _check_prompts(prompts, what: str = "prompts") -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts and what == "prompts":
        raise ValueError("no prompts given: pass at least one text prompt")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"{what} must be non-empty strings, got {p!r}")
    return prompts


def _resize_rgb(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if tuple(rgb.shape[:2]) == tuple(hw):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((hw[1], hw[0]), Image.BICUBIC))


def _resize_rgb_rows(rgb: np.ndarray, hw: tuple[int, int], top: int,
                     bottom: int) -> np.ndarray:
    """Rows ``top:bottom`` of ``_resize_rgb(rgb, hw)``, computed alone (PIL resamples a
    source box with taps from the whole image, so the rows equal the full resize's)."""
    from PIL import Image

    height, width = hw
    bottom = min(bottom, height)
    if tuple(rgb.shape[:2]) == tuple(hw):
        return rgb[top:bottom]
    scale = rgb.shape[0] / height
    box = (0.0, top * scale, float(rgb.shape[1]), bottom * scale)
    return np.asarray(Image.fromarray(rgb).resize((width, bottom - top), Image.BICUBIC,
                                                  box=box))


def _upsample(maps: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear, pixel-centre aligned ``[C, h, w]`` -> ``[C, H, W]`` (separable)."""
    h, w = maps.shape[1:]
    if (h, w) == tuple(hw):
        return maps
    geometry = M.Letterbox(tuple(hw), (h, w), (h, w), (0, 0))
    return M.unletterbox(maps, geometry, order=1)


def _nearest(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = labels.shape
    H, W = hw
    if (h, w) == (H, W):
        return labels
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


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
        from ..viz import overlay

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
        from ..report import segmentation_report

        return segmentation_report(self, title=title)

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
                "settings": _jsonable(self.settings)}

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
        from .._atomic import OutputSet

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
        from ..viz import overlay

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
    """Check, before any work, that the sets ``planned`` (dicts of paths, one per
    stem) can be written into ``directory``: the folder (or the nearest existing one
    that would hold it) is writable, no planned path is a directory, and without
    ``force`` no planned file exists.

    Raises
    ------
    NotADirectoryError, PermissionError, IsADirectoryError, FileExistsError, ValueError
    """
    from .._atomic import check_directory, check_writable

    check_directory(directory)
    files = [p for paths in planned for p in paths.values()]
    if Path(directory).is_dir():
        check_writable(files, force=force)
    elif len({os.path.abspath(p) for p in files}) != len(files):
        raise ValueError("two outputs share a file name")


def output_paths(directory, prompts: Sequence[str], *, stem: str = "segmentation") -> dict:
    """Paths :meth:`Segmentation.save` writes for ``prompts`` (see there)."""
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


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


# ----------------------------------------------------------------------------- maps


def _grid_maps_letterboxed(handle, rgb, channels, method, templates, options):
    """``[C, h, w]`` maps at the image's pixels through one letterboxed model input."""
    geometry = M.letterbox_geometry(rgb.shape[:2], handle.image_size, mode="pad")
    model_input = M.letterbox_image(rgb, geometry, fill=0)
    grid = prompt_maps(handle, model_input, channels, method=method, templates=templates,
                       **options)
    return M.unletterbox(grid.astype(np.float32), geometry, order=1)


def _grid_maps_windowed(handle, rgb, channels, method, templates, options, *, stride):
    """Sliding model-sized windows over the image resized to a short side of twice
    the model input; windows are stitched, then resized to the image."""
    size = handle.image_size
    resized_hw = M.fit_size(rgb.shape[:2], short_side=2 * min(size))
    resized = _resize_rgb(rgb, resized_hw)
    windows = M.sliding_windows(resized_hw, window=size, stride=stride)

    def each():
        for y0, x0, y1, x1 in windows:
            crop = resized[y0:y1, x0:x1]
            if crop.shape[:2] != tuple(size):  # window larger than the image side
                crop = _resize_rgb(np.ascontiguousarray(crop), size)
            yield prompt_maps(handle, crop, channels, method=method, templates=templates,
                              **options)

    stitched = M.stitch(each(), windows, resized_hw)
    return _upsample(stitched, rgb.shape[:2]) if tuple(resized_hw) != rgb.shape[:2] else (
        stitched)


def channel_maps(handle: ModelHandle, image: np.ndarray, channels: Sequence[str], *,
                 method: str, templates=None, window: bool = False,
                 source_options: dict | None = None) -> np.ndarray:
    """``[C, H, W]`` float32 maps of a source at the pixels of ``image`` (uint8
    ``[H, W, 3]``): letterboxed into one model input, or (``window=True``) slid over
    the image resized to a short side of twice the model input and stitched."""
    options = dict(source_options or {})
    if window:
        stride = max(1, (2 * min(handle.image_size)) // 3)
        return _grid_maps_windowed(handle, image, list(channels), method, templates,
                                   options, stride=stride)
    return _grid_maps_letterboxed(handle, image, list(channels), method, templates, options)


def channel_probabilities(maps: np.ndarray, image: np.ndarray, *, normalize: str,
                          logit_scale: float, refine: str = "none") -> np.ndarray:
    """Per-pixel probabilities ``[C, H, W]`` (float32) from channel maps.

    ``softmax(logit_scale * normalize(maps))`` across channels; with one channel, the
    map min-max normalised to [0, 1]. ``refine`` ``"slic"`` averages them within
    superpixels of ``image`` (about one per 150 pixels), ``"pamr"`` applies PAMR.
    """
    if refine not in REFINE:
        raise ValueError(f"refine must be one of {REFINE}, got {refine!r}")
    if maps.shape[0] > 1:
        scored = M.normalize_maps(maps, how=normalize)
        probs = M.softmax_maps(scored, logit_scale=logit_scale).astype(np.float32)
    else:
        probs = M.normalize_maps(maps, how="minmax").astype(np.float32)
    if refine == "slic":
        n_segments = max(50, int(np.prod(image.shape[:2]) / 150))
        probs = M.slic_pool(probs, image, n_segments=n_segments, compactness=10.0)
    elif refine == "pamr":
        probs = M.pamr(probs, image)
    return probs


def segment(
    image,
    prompts: Sequence[str],
    *,
    model: Any = "bundled:shapes-clip-short",
    method: str | None = None,
    background: Sequence[str] | None = None,
    threshold: float | None = None,
    background_rule: str | None = None,
    profile: Any = None,
    refine: str | None = None,
    templates: Sequence[str] | None = None,
    logit_scale: float | None = None,
    normalize: str | None = None,
    window: bool | None = None,
    max_side: int = 1024,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: int = 0,
    fill_holes: bool = False,
    tokenizer: Any = None,
    cache: dict | None = None,
    source_options: dict | None = None,
) -> Segmentation:
    """Segment an image with text prompts.

    Parameters
    ----------
    image : str, PathLike, PIL.Image or ndarray
        Any PIL mode or array dtype (see :func:`load_image`).
    prompts : sequence of str
        One non-empty text per class; label ``k + 1`` is ``prompts[k]``.
    model : Bundle, str or torch.nn.Module
        A :class:`~groundroll.zoo.Bundle`, a spec for :func:`groundroll.zoo.load`
        (``"bundled:shapes-clip"``, ``"open_clip:ViT-B-16/laion2b_s34b_b88k"``), or a
        model with ``tokenizer=``. Default ``"bundled:shapes-clip-short"``: of the
        bundled CLIPs, the one whose calibrated default segments best.
    method : str, optional
        Map source (:data:`groundroll.grounding.METHODS`: ``"relevance"``,
        ``"legrad"``, ``"rollout"``, ``"cross"``, ``"maskclip"``, ``"sclip"``,
        ``"clearclip"``, ``"naclip"``, ``"gradcam"``, ``"ig"``, ``"saliency"``,
        ``"ensemble"``). Default: the profile's ``default_method`` (the source that
        measured best for a bundled model), else ``"relevance"``.
    background : sequence of str, optional
        Background prompts ("background", "sky", ...): extra channels whose pixels
        get label 0.
    threshold : float, optional
        Threshold of the background rule. Given alone it is a probability threshold:
        a pixel whose winning prompt's probability is below it (exclusive) becomes
        background.
    background_rule : {"none", "threshold", "relative", "otsu"}, optional
        How pixels become background (:mod:`groundroll.grounding.profiles`).
        Default: the profile's rule for ``method``; with no profile and no
        threshold every pixel gets a prompt.
    profile : Profile, dict, str or PathLike, optional
        Postprocessing profile (a file written by :func:`groundroll.calibrate`).
        Default: the profile bundled with the model, if any. Each option left as
        None here is taken from the profile's entry for ``method``. A profile fitted
        on another model is refused (ValueError).
    refine : {"none", "slic", "pamr"}, optional
        Refine the probabilities with image superpixels or PAMR before the argmax.
    templates : sequence of str, optional
        Prompt templates with one ``{}``; text embeddings are averaged over them
        (:func:`groundroll.masks.ensemble_prompts`). Not for ``"cross"``.
    logit_scale : float, optional
        Softmax temperature inverse across channels. Default: 10 for the attention
        sources (maps normalised to [0, 1]), the model's own logit scale for the
        dense sources (cosine similarities).
    normalize : {"minmax", "max", "none"}, optional
        Per-channel normalisation before the softmax: ``"minmax"`` for attention
        sources, ``"none"`` for dense sources by default.
    window : bool, optional
        Sliding windows for dense sources: None (default) slides when the working
        image's short side exceeds twice the model input.
    max_side : int
        Working resolution: longer images are downscaled so their long side is
        ``max_side``; the label map is resized back by nearest neighbour. Image files
        are decoded at a reduced size where the format allows it (JPEG DCT scaling,
        integer reduction for others), so memory stays near the working resolution's
        plus the full-size outputs.
    max_pixels : int or None
        Refuse images with more pixels (a decompression-bomb guard, checked from the
        file header); None: no limit.
    min_size : int
        Remove connected components smaller than this many working pixels (>= 0).
    fill_holes : bool
        Fill background holes enclosed by one label.
    tokenizer : optional
        Tokenizer for a bare ``model``.
    cache : dict, optional
        Caller-owned dict keeping models loaded from spec strings across calls
        (without it a spec is loaded once per process, :func:`groundroll.zoo.cached`).
    source_options : dict, optional
        Extra keyword arguments of the map source (e.g. ``{"read": "input"}`` for
        ``"cross"``, ``{"sigma": 3.0}`` for ``"naclip"``).

    Returns
    -------
    Segmentation

    Raises
    ------
    ValueError
        No prompts, an empty prompt, an unknown method or refinement, a corrupt image,
        an image over ``max_pixels``, a negative ``min_size``.
    FileNotFoundError
        A missing image file.

    Warns
    -----
    UserWarning
        Once per call each: duplicate prompts (all but the first get empty masks),
        prompts made only of words the tokenizer does not know, prompts truncated to
        the text context.

    Notes
    -----
    Thread safety: several threads may call :func:`segment` with one shared model.
    The model's lock (:func:`groundroll._locks.model_lock`) is held while the model
    runs, so the calls run one after another on that model and each gives exactly
    the result of a call made alone; the model is left as it was, also when a call
    fails.

    Examples
    --------
    >>> from groundroll.grounding import segment
    >>> seg = segment("groundroll/data/examples/shapes_scene.png",
    ...               ["red circle", "blue star"], threshold=0.6)   # doctest: +SKIP
    >>> seg.masks.shape                                              # doctest: +SKIP
    (2, 128, 160)
    """
    with warning_scope():
        return _segment(image, prompts, model=model, method=method, background=background,
                        threshold=threshold, background_rule=background_rule,
                        profile=profile, refine=refine, templates=templates,
                        logit_scale=logit_scale, normalize=normalize, window=window,
                        max_side=max_side, max_pixels=max_pixels, min_size=min_size,
                        fill_holes=fill_holes, tokenizer=tokenizer, cache=cache,
                        source_options=source_options)


def check_templates(templates) -> list[str] | None:
    """``templates`` as a list, each with exactly one ``{}``; None stays None.

    Examples
    --------
    >>> check_templates(["a photo of {}."])
    ['a photo of {}.']
    """
    if templates is None:
        return None
    if isinstance(templates, str):
        templates = [templates]
    out = list(templates)
    for t in out:
        if not isinstance(t, str) or t.count("{}") != 1 or re.sub(r"\{\}", "", t).count(
                "{") or re.sub(r"\{\}", "", t).count("}"):
            raise ValueError(f"a template needs exactly one {{}} (where the prompt goes)"
                             f" and no other braces, got {t!r}")
    return out


def _warn_prompts(handle: ModelHandle, prompts: list[str]) -> None:
    seen: dict[str, int] = {}
    for k, p in enumerate(prompts):
        key = " ".join(p.split()).lower()
        if key in seen:
            warn_once(f"prompt {k} {short(p)} repeats prompt {seen[key]}: every pixel goes"
                      f" to the first, so prompt {k}'s mask is empty", stacklevel=4)
        else:
            seen[key] = k
    unk = getattr(handle.tokenizer, "unk_token_id", None)
    if not isinstance(unk, int):
        return
    encode = getattr(handle.tokenizer, "encode", None)
    if encode is None:
        return
    for p in prompts:
        try:
            ids = list(encode(p, add_special_tokens=False))
        except TypeError:                       # groundroll WordTokenizer
            ids = list(encode(p))
        if ids and all(int(i) == unk for i in ids):
            warn_once(f"prompt {short(p)} has no word the model's tokenizer knows (every"
                      " token is unknown): its map carries no meaning", stacklevel=4)


def _segment(image, prompts, *, model, method, background, threshold, background_rule,
             profile, refine, templates, logit_scale, normalize, window, max_side,
             max_pixels, min_size, fill_holes, tokenizer, cache,
             source_options) -> Segmentation:
    started = time.perf_counter()
    prompts = _check_prompts(prompts)
    background = _check_prompts(background or [], "background prompts")
    if int(min_size) < 0:
        raise ValueError(f"min_size must be >= 0 pixels, got {min_size}")
    if int(max_side) < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if refine is not None and refine not in REFINE:
        raise ValueError(f"refine must be one of {REFINE}, got {refine!r}")
    rgb, full_hw = _read_image(image, max_side=max_side, max_pixels=max_pixels)
    handle: ModelHandle = resolve_model(model, tokenizer=tokenizer, cache=cache)
    # Options left as None come from the profile (the bundled one by default).
    from .profiles import resolve_profile, resolve_settings

    chosen = resolve_profile(profile, handle)
    if method is None:
        method = chosen.default_method if chosen is not None else "relevance"
    tuned = resolve_settings(chosen, method, threshold=threshold,
                             background_rule=background_rule, refine=refine,
                             templates=templates, logit_scale=logit_scale,
                             normalize=normalize, source_options=source_options)
    threshold, background_rule = tuned["threshold"], tuned["background_rule"]
    refine = "none" if tuned["refine"] is None else tuned["refine"]
    if refine not in REFINE:
        raise ValueError(f"refine must be one of {REFINE}, got {refine!r}")
    templates = check_templates(tuned["templates"])
    logit_scale, normalize = tuned["logit_scale"], tuned["normalize"]
    source_options = tuned["source_options"]
    with locked(handle.model):
        return _segment_locked(handle, rgb, full_hw, prompts, background, started,
                               method=method, threshold=threshold,
                               background_rule=background_rule,
                               profile=chosen.model if chosen is not None else None,
                               refine=refine,
                               templates=templates, logit_scale=logit_scale,
                               normalize=normalize, window=window, max_side=max_side,
                               min_size=min_size, fill_holes=fill_holes,
                               source_options=source_options)


def _segment_locked(handle, rgb, full_hw, prompts, background, started, *, method,
                    threshold, background_rule, profile, refine, templates, logit_scale,
                    normalize, window, max_side, min_size, fill_holes,
                    source_options) -> Segmentation:
    _warn_prompts(handle, prompts + background)
    if max(full_hw) > max_side:
        work_hw = M.fit_size(full_hw, long_side=max_side)
        work = _resize_rgb(rgb, work_hw)
    else:
        work_hw, work = tuple(full_hw), _resize_rgb(rgb, full_hw)

    channels = prompts + background
    dense = method in DENSE_METHODS
    size = handle.image_size
    if window is None:
        window = dense and min(work_hw) > 2 * min(size)
    options = dict(source_options or {})
    maps = channel_maps(handle, work, channels, method=method, templates=templates,
                        window=window, source_options=options)
    normalize = normalize or ("none" if dense else "minmax")
    scale = float(logit_scale) if logit_scale is not None else (
        handle.logit_scale() if dense else 10.0)
    probs = channel_probabilities(maps, work, normalize=normalize, logit_scale=scale,
                                  refine=refine)
    bg_index = list(range(len(prompts), len(channels)))
    from .profiles import background_labels, refine_scores

    scores_for_rule = maps
    if background_rule in ("relative", "otsu") and refine != "none":
        scores_for_rule = refine_scores(maps[: len(prompts)], work, refine=refine)
    labels = background_labels(probs, scores_for_rule, n_prompts=len(prompts),
                               rule=background_rule, threshold=threshold,
                               background=bg_index or None)
    del scores_for_rule
    if min_size:
        labels = M.remove_small(labels, min_size=int(min_size))
    if fill_holes:
        labels = M.fill_holes(labels)
    del probs

    heat = M.normalize_maps(maps[: len(prompts)], how="minmax").astype(np.float32)
    del maps
    labels = _nearest(labels.astype(np.int32), full_hw)
    heat = _upsample(heat, full_hw).astype(np.float32, copy=False)
    np.clip(heat, 0.0, 1.0, out=heat)
    masks = M.masks_from_labels(labels, len(prompts))
    model_input = M.letterbox_image(work, M.letterbox_geometry(work_hw, size, mode="pad"))
    scores = image_text_scores(handle, model_input, prompts, templates=templates)
    settings = {
        "model": handle.name, "family": handle.family, "method": method,
        "background": background, "threshold": threshold,
        "background_rule": background_rule, "profile": profile, "refine": refine,
        "templates": list(templates) if templates else None, "logit_scale": scale,
        "normalize": normalize, "window": bool(window), "max_side": max_side,
        "min_size": min_size, "fill_holes": fill_holes, "source_options": options,
        "image_size": list(full_hw), "working_size": list(work_hw),
        "model_input": list(size), "seconds": round(time.perf_counter() - started, 4),
    }
    return Segmentation(labels=labels, masks=masks, heatmaps=heat, scores=scores,
                        prompts=prompts, settings=settings, image=rgb)


def caption_heatmaps(image, caption: str, *, model: Any = "bundled:shapes-coca",
                     compose_method: str = "rollout", read: str = "predict",
                     tokenizer: Any = None) -> tuple[list[str], np.ndarray]:
    """One heatmap per word of a caption, through a captioner's cross-attention.

    Parameters
    ----------
    image : str, PathLike, PIL.Image or ndarray
    caption : str
        Run as the caption of the image (teacher forcing).
    model : Bundle or str
        open_clip CoCa or Hugging Face BLIP retrieval.
    compose_method, read : str
        See :func:`groundroll.grounding.cross_maps`.

    Returns
    -------
    words : list of str
        The caption's content tokens.
    heatmaps : ndarray of float32, shape [len(words), H, W]
        Each word's map at the image's pixels, min-max normalised to [0, 1].

    Examples
    --------
    >>> words, maps = caption_heatmaps("scene.png", "a red circle and a blue star")
    ... # doctest: +SKIP
    """
    from .sources import caption_word_maps

    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"caption must be a non-empty string, got {caption!r}")
    rgb = load_image(image)
    handle = resolve_model(model, tokenizer=tokenizer)
    geometry = M.letterbox_geometry(rgb.shape[:2], handle.image_size, mode="pad")
    with warning_scope(), locked(handle.model):
        words, grid = caption_word_maps(handle, M.letterbox_image(rgb, geometry, fill=0),
                                        caption, compose_method=compose_method, read=read)
    heat = M.unletterbox(grid.astype(np.float32), geometry, order=1)
    return words, M.normalize_maps(heat, how="minmax").astype(np.float32)

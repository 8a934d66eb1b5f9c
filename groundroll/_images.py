"""Images in: any path, PIL image or array becomes RGB uint8, with a pixel-count guard.

Shared by segmentation, calibration, the command line and the plots: one reader, one
set of checks and error messages. Files larger than the working resolution are
decoded at a reduced size where the format allows it (JPEG DCT scaling, integer
reduction for others).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from . import masks as M
from .masks.refine import _nearest_labels

__all__ = ["load_image", "DEFAULT_MAX_PIXELS", "ImageReadError"]


#: Default limit of :func:`load_image` / :func:`segment` ``max_pixels``: PIL's own
#: decompression-bomb error limit (``2 * PIL.Image.MAX_IMAGE_PIXELS`` by default).
DEFAULT_MAX_PIXELS = 178_956_970

_PIL_OPEN_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """An image that cannot be read: not an image, truncated, too many pixels, or
    pixel values outside what an image holds."""


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


def _image_file(image) -> Path:
    """``image`` as the path of an existing file (clear errors for a folder or a
    missing file)."""
    path = Path(image)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not an image file; pass the"
                                " image files inside it")
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    return path


def image_size(path) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header, without decoding pixels.

    Raises
    ------
    IsADirectoryError, FileNotFoundError
    ValueError
        Not a readable image.
    """
    path = _image_file(path)
    try:
        with _open_unchecked(path) as im:
            return im.size
    except Exception as err:  # PIL raises many types for unreadable files
        raise ImageReadError(f"cannot read image {path}: {err}") from None


def _read_image(image, *, max_side: int | None = None,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, tuple]:
    """``(rgb, full_hw)``: the RGB uint8 image, decoded at a reduced size when a file
    is larger than ``max_side`` and the format allows it, and the image's full size.
    """

    if not isinstance(image, (str, os.PathLike)):
        rgb = _to_rgb(image, max_pixels=max_pixels)
        return rgb, tuple(rgb.shape[:2])
    path = _image_file(image)
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
    except ImageReadError:
        raise
    except Exception as err:  # PIL raises many types for crafted or truncated files
        if isinstance(err, (IsADirectoryError, FileNotFoundError, MemoryError)):
            raise
        raise ImageReadError(f"cannot read image {path}: {err}") from None


def _check_pixels(pixels: int, max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and pixels > max_pixels:
        raise ImageReadError(
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
    ImageReadError
        (a ValueError) A file that is not a readable image, an image larger than ``max_pixels``, a
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
                raise ImageReadError("float image (mode 'F') has values outside [0, 1];"
                                 " scale it to [0, 1] first")
            return _to_rgb(arr, max_pixels=None)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return np.asarray(rgb, dtype=np.uint8).copy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4) or min(arr.shape[:2]) < 1:
        raise ImageReadError(f"expected an image [H, W], [H, W, 3] or [H, W, 4], got shape"
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
            raise ImageReadError("float image has NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageReadError(f"float image values must lie in [0, 1], got [{lo:g}, {hi:g}];"
                             " divide 0-255 data by 255 or pass a uint8 array")
        return np.round(arr * 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min(initial=0) < 0:
            raise ImageReadError("integer image has negative values")
        top = 255 if arr.max(initial=0) <= 255 else 65535
        return np.round(np.clip(arr, 0, top) * (255.0 / top)).astype(np.uint8)
    raise ImageReadError(f"unsupported image dtype {arr.dtype}")


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
    """``labels`` resized to ``hw`` by nearest neighbour (the masks layer's own)."""
    return _nearest_labels(labels, hw)



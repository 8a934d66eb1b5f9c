"""Geometry: resizing maps, letterboxing images for a model, tiling large images.

Sizes are ``(height, width)``; windows are ``(y0, x0, y1, x1)`` with exclusive ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ._common import _as_maps, _pair

__all__ = ["resize_maps", "fit_size", "Letterbox", "letterbox_geometry", "letterbox_image",
           "unletterbox", "sliding_windows", "stitch"]


def resize_maps(maps, size, *, order: int = 1) -> np.ndarray:
    """Resize per-prompt maps to ``size`` without anti-aliasing or rescaling.

    Parameters
    ----------
    maps : array_like, shape [P, h, w] or [h, w]
        Float maps.
    size : (int, int)
        Output ``(H, W)``.
    order : int, optional
        Spline order (0 nearest, 1 bilinear, 3 bicubic), as in
        :func:`skimage.transform.resize`; edges are extended (``mode="edge"``).

    Returns
    -------
    ndarray, shape [P, H, W] (or [H, W])
        Same floating dtype as ``maps``. Values stay in the input range for
        ``order <= 1``.

    Examples
    --------
    >>> resize_maps(np.ones((2, 3, 3)), (6, 4)).shape
    (2, 6, 4)
    """
    from skimage.transform import resize

    maps, single = _as_maps(maps)
    size = _pair(size, "size")
    out = np.empty((maps.shape[0],) + size, dtype=maps.dtype)
    for p, m in enumerate(maps):
        out[p] = resize(
            m, size, order=order, mode="edge", anti_aliasing=False, preserve_range=True
        )
    return out[0] if single else out


def fit_size(
    image_hw, *, short_side: int | None = None, long_side: int | None = None, multiple: int = 1
) -> tuple[int, int]:
    """Aspect-preserving size with a given short or long side.

    Parameters
    ----------
    image_hw : (int, int)
        Input ``(H, W)``.
    short_side, long_side : int, optional
        Target length of the shorter (or longer) side; give exactly one.
    multiple : int, optional
        Round each side to the nearest multiple (e.g. the patch size), at least one multiple.

    Returns
    -------
    (int, int)
        ``(h, w)``.

    Examples
    --------
    >>> fit_size((480, 640), short_side=224)
    (224, 299)
    >>> fit_size((480, 640), long_side=448, multiple=16)
    (336, 448)
    """
    H, W = _pair(image_hw, "image_hw")
    if (short_side is None) == (long_side is None):
        raise ValueError("give exactly one of short_side and long_side")
    scale = short_side / min(H, W) if short_side is not None else long_side / max(H, W)
    h, w = H * scale, W * scale
    m = int(multiple)
    return (max(m, int(round(h / m)) * m), max(m, int(round(w / m)) * m))


@dataclass(frozen=True)
class Letterbox:
    """How an image was resized and padded (or cropped) into a model input.

    The image ``(H, W)`` is resized to ``resized_hw`` and placed with its top-left
    corner at ``offset = (top, left)`` in the model input ``model_hw``. Positive
    offsets are padding (``mode="pad"``), negative offsets a centre crop
    (``mode="crop"``, open_clip's resize-then-centre-crop).
    """

    image_hw: tuple[int, int]
    model_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    offset: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Resize factors ``(sy, sx)`` from image pixels to model pixels."""
        return (
            self.resized_hw[0] / self.image_hw[0],
            self.resized_hw[1] / self.image_hw[1],
        )


def letterbox_geometry(image_hw, model_hw, *, mode: str = "pad") -> Letterbox:
    """Geometry for fitting a (non-square) image into a fixed model input.

    Parameters
    ----------
    image_hw : (int, int)
        Image ``(H, W)``.
    model_hw : (int, int)
        Model input ``(h, w)``.
    mode : {"pad", "crop"}, optional
        ``"pad"``: scale the long side to fit and pad the rest (the whole image is
        seen). ``"crop"``: scale the short side to fit and centre-crop the rest.

    Returns
    -------
    Letterbox

    Examples
    --------
    >>> letterbox_geometry((480, 640), (224, 224))
    Letterbox(image_hw=(480, 640), model_hw=(224, 224), resized_hw=(168, 224), offset=(28, 0))
    """
    H, W = _pair(image_hw, "image_hw")
    h, w = _pair(model_hw, "model_hw")
    if mode == "pad":
        scale = min(h / H, w / W)
    elif mode == "crop":
        scale = max(h / H, w / W)
    else:
        raise ValueError(f"mode must be 'pad' or 'crop', got {mode!r}")
    rh, rw = max(1, int(round(H * scale))), max(1, int(round(W * scale)))
    # Python's floor division keeps crops centred the same way torchvision does.
    return Letterbox((H, W), (h, w), (rh, rw), ((h - rh) // 2, (w - rw) // 2))


def letterbox_image(image, geometry: Letterbox, *, fill=0) -> np.ndarray:
    """Resize and pad (or crop) an image into the model input described by ``geometry``.

    Parameters
    ----------
    image : array_like, shape [H, W] or [H, W, C]
    geometry : Letterbox
    fill : scalar, optional
        Value of padded pixels.

    Returns
    -------
    ndarray, shape [h, w] or [h, w, C]
        Same dtype as ``image``; anti-aliased when shrinking.

    Examples
    --------
    >>> g = letterbox_geometry((4, 8), (8, 8))
    >>> letterbox_image(np.ones((4, 8)), g)[:, 0]
    array([0., 0., 1., 1., 1., 1., 0., 0.])
    """
    from skimage.transform import resize

    image = np.asarray(image)
    if tuple(image.shape[:2]) != tuple(geometry.image_hw):
        raise ValueError(f"image is {image.shape[:2]}, geometry expects {geometry.image_hw}")
    shrinking = geometry.resized_hw[0] < image.shape[0] or geometry.resized_hw[1] < image.shape[1]
    resized = resize(
        image,
        geometry.resized_hw + image.shape[2:],
        order=1,
        mode="edge",
        anti_aliasing=shrinking,
        preserve_range=True,
    )
    if np.issubdtype(image.dtype, np.integer):
        resized = np.clip(np.round(resized), np.iinfo(image.dtype).min, np.iinfo(image.dtype).max)
    resized = resized.astype(image.dtype)
    out = np.full(tuple(geometry.model_hw) + image.shape[2:], fill, dtype=image.dtype)
    top, left = geometry.offset
    rh, rw = geometry.resized_hw
    h, w = geometry.model_hw
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + rh, h), min(left + rw, w)
    out[y0:y1, x0:x1] = resized[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def _interp_weights(coords: np.ndarray, n_in: int, order: int, dtype) -> np.ndarray:
    """Dense [n_out, n_in] interpolation matrix for sample positions ``coords``.

    ``coords`` are in input index units (pixel centres at 0..n_in-1); positions
    beyond the first/last centre take the edge value.
    """
    c = np.clip(coords, 0, n_in - 1)
    out = np.zeros((len(c), n_in), dtype=dtype)
    rows = np.arange(len(c))
    if order == 0:
        out[rows, np.clip(np.floor(c + 0.5).astype(int), 0, n_in - 1)] = 1
        return out
    if order != 1:
        raise ValueError(f"order must be 0 or 1, got {order}")
    lo = np.floor(c).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (c - lo).astype(dtype)
    np.add.at(out, (rows, lo), 1 - frac)
    np.add.at(out, (rows, hi), frac)
    return out


def _separable(maps: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> np.ndarray:
    # [P, gh, gw] -> [P, H, W]: wy [H, gh] @ map @ wx.T [gw, W]; memory O(P H W).
    return np.einsum("yg,pgh,xh->pyx", wy, maps, wx, optimize=True)


def _content_coords(model_coord: np.ndarray, start: int, length: int, n_model: int, n_grid: int) -> np.ndarray:
    """Grid index coordinates of model positions, kept on cells centred in the image content.

    Without the clamp, pixels near a padded border would blend in padding cells.
    """
    coords = model_coord * n_grid / n_model - 0.5
    lo = int(np.ceil(max(start, 0) * n_grid / n_model - 0.5))
    hi = int(np.floor(min(start + length, n_model) * n_grid / n_model - 0.5))
    if lo <= hi:
        coords = np.clip(coords, lo, hi)
    return coords


def unletterbox(maps, geometry: Letterbox, *, order: int = 1, fill: float = 0.0) -> np.ndarray:
    """Map per-prompt maps on the model grid back to image pixels.

    ``maps`` may have any grid size ``(gh, gw)`` that covers the model input
    uniformly (a patch grid, or the model input resolution itself). Each image
    pixel centre is sent through the letterbox geometry to model-input
    coordinates and sampled from the grid; the interpolation is separable, so a
    6000 x 4000 output needs only the output array itself.

    Parameters
    ----------
    maps : array_like, shape [P, gh, gw] or [gh, gw]
    geometry : Letterbox
    order : {0, 1}, optional
        Nearest or bilinear sampling.
    fill : float, optional
        Value for image pixels that the model never saw (``mode="crop"``).

    Returns
    -------
    ndarray, shape [P, H, W] (or [H, W])
        Same floating dtype as ``maps``; values within the input range.

    Examples
    --------
    >>> g = letterbox_geometry((480, 640), (224, 224))
    >>> unletterbox(np.ones((3, 14, 14)), g).shape
    (3, 480, 640)
    """
    maps, single = _as_maps(maps)
    _, gh, gw = maps.shape
    H, W = geometry.image_hw
    h, w = geometry.model_hw
    sy, sx = geometry.scale
    top, left = geometry.offset
    # Image pixel centre -> continuous model coordinate -> grid index coordinate.
    ym = top + (np.arange(H) + 0.5) * sy
    xm = left + (np.arange(W) + 0.5) * sx
    wy = _interp_weights(_content_coords(ym, top, geometry.resized_hw[0], h, gh), gh, order, maps.dtype)
    wx = _interp_weights(_content_coords(xm, left, geometry.resized_hw[1], w, gw), gw, order, maps.dtype)
    out = _separable(maps, wy, wx)
    outside_y = (ym < 0) | (ym > h)
    outside_x = (xm < 0) | (xm > w)
    if outside_y.any() or outside_x.any():
        out[:, outside_y, :] = fill
        out[:, :, outside_x] = fill
    return out[0] if single else out


# --- tiling large images -------------------------------------------------------


def _starts(n: int, window: int, stride: int) -> list[int]:
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


def sliding_windows(image_hw, *, window, stride) -> list[tuple[int, int, int, int]]:
    """Windows ``(y0, x0, y1, x1)`` (exclusive ends) that cover an image.

    Windows are ``window`` in size (clipped to the image when it is smaller),
    start every ``stride`` pixels, and the last row/column of windows is moved
    to end exactly at the image border.

    Parameters
    ----------
    image_hw : (int, int)
    window : int or (int, int)
    stride : int or (int, int)

    Returns
    -------
    list of (int, int, int, int)

    Examples
    --------
    >>> sliding_windows((4, 6), window=4, stride=3)
    [(0, 0, 4, 4), (0, 2, 4, 6)]
    """
    H, W = _pair(image_hw, "image_hw")
    wh, ww = _pair(window, "window")
    sh, sw = _pair(stride, "stride")
    ys, xs = _starts(H, wh, sh), _starts(W, ww, sw)
    return [(y, x, min(y + wh, H), min(x + ww, W)) for y in ys for x in xs]


def stitch(
    window_maps: Iterable, windows: Sequence[tuple[int, int, int, int]], image_hw, *, fill: float = 0.0
) -> np.ndarray:
    """Average per-window maps into one image-sized map.

    Parameters
    ----------
    window_maps : iterable of array_like, each [P, h, w]
        One map per window at any grid size; each is resized bilinearly
        (pixel-centre aligned, edges extended) to its window. May be a generator,
        so only one window's maps need to exist at a time.
    windows : sequence of (y0, x0, y1, x1)
        As returned by :func:`sliding_windows`.
    image_hw : (int, int)
    fill : float, optional
        Value of pixels that no window covers.

    Returns
    -------
    ndarray of float32, shape [P, H, W]
        Mean over the windows covering each pixel.

    Examples
    --------
    >>> wins = sliding_windows((6, 6), window=4, stride=2)
    >>> out = stitch((np.ones((1, 2, 2)) for _ in wins), wins, (6, 6))
    >>> out.shape, float(out.min()), float(out.max())
    ((1, 6, 6), 1.0, 1.0)
    """
    H, W = _pair(image_hw, "image_hw")
    total = None
    count = np.zeros((H, W), dtype=np.uint16)
    n = 0
    for m, (y0, x0, y1, x1) in zip(window_maps, windows):
        m, _ = _as_maps(m)
        m = m.astype(np.float32, copy=False)
        if total is None:
            total = np.zeros((m.shape[0], H, W), dtype=np.float32)
        h, w = y1 - y0, x1 - x0
        gh, gw = m.shape[1:]
        wy = _interp_weights((np.arange(h) + 0.5) * gh / h - 0.5, gh, 1, np.float32)
        wx = _interp_weights((np.arange(w) + 0.5) * gw / w - 0.5, gw, 1, np.float32)
        total[:, y0:y1, x0:x1] += _separable(m, wy, wx)
        count[y0:y1, x0:x1] += 1
        n += 1
    if n != len(windows):
        raise ValueError(f"{len(windows)} windows but {n} window maps")
    if total is None:
        raise ValueError("no windows")
    covered = count > 0
    total[:, covered] /= count[covered]
    total[:, ~covered] = fill
    return total

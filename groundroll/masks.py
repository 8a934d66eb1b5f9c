"""From per-prompt score maps to label maps and masks (numpy + scikit-image).

Conventions
-----------
* ``maps``: float array ``[P, h, w]``, one score or heatmap per prompt (a single
  ``[h, w]`` map is accepted where noted). Floating dtypes are kept (float16 is
  promoted to float32, integers to float64); nothing is rescaled unless the
  function says so.
* ``image``: ``[H, W, C]`` or ``[H, W]``, any numeric dtype.
* ``labels``: int32 ``[H, W]`` with ``0`` = background and ``k + 1`` = prompt ``k``.
* ``masks``: bool ``[P, H, W]``.
* Sizes are ``(height, width)``; windows are ``(y0, x0, y1, x1)`` with exclusive ends.

None of this module needs torch or a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "DEFAULT_TEMPLATES",
    "Letterbox",
    "average_groups",
    "ensemble_prompts",
    "fill_holes",
    "fit_size",
    "label_map",
    "letterbox_geometry",
    "letterbox_image",
    "masks_from_labels",
    "normalize_maps",
    "palette",
    "pamr",
    "remove_small",
    "resize_maps",
    "sliding_windows",
    "slic_pool",
    "softmax_maps",
    "stitch",
    "unletterbox",
]


def _float(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype in (np.float32, np.float64):
        return a
    if a.dtype == np.float16:
        return a.astype(np.float32)
    return a.astype(np.float64)


def _as_maps(maps) -> tuple[np.ndarray, bool]:
    """Return ``[P, h, w]`` float maps and whether the input was a single 2-D map."""
    maps = _float(maps)
    if maps.ndim == 2:
        return maps[None], True
    if maps.ndim != 3:
        raise ValueError(f"expected maps [P, h, w] or [h, w], got shape {maps.shape}")
    return maps, False


def _pair(v, name: str) -> tuple[int, int]:
    if np.isscalar(v):
        v = (v, v)
    v = tuple(int(x) for x in v)
    if len(v) != 2 or min(v) < 1:
        raise ValueError(f"{name} must be a positive int or (height, width), got {v}")
    return v


# --- resizing and geometry ---------------------------------------------------


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


# --- normalisation and labels ---------------------------------------------


def normalize_maps(maps, *, how: str = "minmax") -> np.ndarray:
    """Scale each prompt's map to [0, 1].

    Parameters
    ----------
    maps : array_like, shape [P, h, w] or [h, w]
    how : {"minmax", "max", "none"}, optional
        ``"minmax"``: ``(x - min) / (max - min)`` per prompt; a constant map becomes
        all zeros. ``"max"``: ``x / max`` per prompt (for non-negative maps; a map
        with ``max <= 0`` becomes all zeros). ``"none"``: a float copy.

    Returns
    -------
    ndarray
        Same shape and floating dtype; in [0, 1] (for ``"max"``, when the input is
        non-negative).

    Examples
    --------
    >>> normalize_maps(np.array([[[1.0, 3.0]], [[2.0, 2.0]]]))
    array([[[0., 1.]],
    <BLANKLINE>
           [[0., 0.]]])
    """
    maps, single = _as_maps(maps)
    flat = maps.reshape(maps.shape[0], -1)
    if how == "none":
        out = maps.copy()
    elif how == "minmax":
        lo = flat.min(axis=1, keepdims=True)
        span = flat.max(axis=1, keepdims=True) - lo
        safe = np.where(span > 0, span, 1)
        out = np.where(span > 0, (flat - lo) / safe, 0).astype(maps.dtype).reshape(maps.shape)
    elif how == "max":
        hi = flat.max(axis=1, keepdims=True)
        safe = np.where(hi > 0, hi, 1)
        out = np.where(hi > 0, flat / safe, 0).astype(maps.dtype).reshape(maps.shape)
    else:
        raise ValueError(f"how must be 'minmax', 'max' or 'none', got {how!r}")
    return out[0] if single else out


def softmax_maps(maps, *, logit_scale: float = 1.0, axis: int = 0) -> np.ndarray:
    """Softmax of ``logit_scale * maps`` across prompts (numerically stable).

    Parameters
    ----------
    maps : array_like, shape [P, h, w]
        Scores, e.g. cosine similarities of patch and text embeddings.
    logit_scale : float, optional
        Temperature inverse; CLIP uses 100 for cosine similarities. No scaling by default.
    axis : int, optional
        Prompt axis.

    Returns
    -------
    ndarray
        Same shape, floating dtype; values in [0, 1] that sum to 1 along ``axis``.

    Examples
    --------
    >>> p = softmax_maps(np.zeros((4, 2, 2)))
    >>> float(p[:, 0, 0].sum()), float(p[0, 0, 0])
    (1.0, 0.25)
    """
    x = _float(maps) * logit_scale
    x = x - x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True)
    return x


def label_map(probs, *, threshold: float | None = None, background: Sequence[int] | None = None) -> np.ndarray:
    """Argmax label map with a background class.

    Parameters
    ----------
    probs : array_like, shape [P, H, W]
        Per-prompt probabilities or scores.
    threshold : float, optional
        Pixels whose best foreground score is below ``threshold`` (exclusive:
        a score equal to it is kept) become background.
    background : sequence of int, optional
        Indices of prompts that mean background ("sky", "wall", ...). Pixels
        whose argmax over all prompts is one of them become background.

    Returns
    -------
    ndarray of int32, shape [H, W]
        ``0`` = background, ``k + 1`` = prompt ``k`` (prompt indices are not
        renumbered, so background prompts' labels never occur).

    Examples
    --------
    >>> probs = np.array([[[0.9, 0.2]], [[0.1, 0.8]]])
    >>> label_map(probs)
    array([[1, 2]], dtype=int32)
    >>> label_map(probs, background=[1])
    array([[1, 0]], dtype=int32)
    >>> label_map(probs, threshold=0.85)
    array([[1, 0]], dtype=int32)
    """
    probs, _ = _as_maps(probs)
    P = probs.shape[0]
    labels = (probs.argmax(axis=0) + 1).astype(np.int32)
    fg = np.ones(P, dtype=bool)
    if background is not None:
        bg = np.asarray(list(background), dtype=int)
        if bg.size and (bg.min() < -P or bg.max() >= P):
            raise IndexError(f"background indices {bg.tolist()} out of range for {P} prompts")
        fg[bg] = False
        labels[~fg[labels - 1]] = 0
    if threshold is not None:
        if not fg.any():
            return np.zeros(probs.shape[1:], dtype=np.int32)
        best_fg = probs[fg].max(axis=0)
        labels[best_fg < threshold] = 0
    return labels


def masks_from_labels(labels, n_prompts: int) -> np.ndarray:
    """One boolean mask per prompt from a label map.

    Parameters
    ----------
    labels : array_like of int, shape [H, W]
        ``0`` background, ``k + 1`` prompt ``k``.
    n_prompts : int

    Returns
    -------
    ndarray of bool, shape [n_prompts, H, W]

    Examples
    --------
    >>> masks_from_labels(np.array([[0, 1, 2]]), 2).astype(int)
    array([[[0, 1, 0]],
    <BLANKLINE>
           [[0, 0, 1]]])
    """
    labels = np.asarray(labels)
    return labels[None] == np.arange(1, n_prompts + 1).reshape(-1, *([1] * labels.ndim))


# --- refinement ----------------------------------------------------------------


def _check_image(image, hw) -> np.ndarray:
    image = _float(image)
    if image.shape[:2] != tuple(hw):
        raise ValueError(
            f"image is {image.shape[:2]} but maps are {tuple(hw)}; resize the maps first "
            "(resize_maps or unletterbox)"
        )
    return image


def slic_pool(maps, image, *, n_segments: int = 200, compactness: float = 10.0, sigma: float = 0.0) -> np.ndarray:
    """Average each map inside SLIC superpixels of the image.

    Parameters
    ----------
    maps : array_like, shape [P, H, W] or [H, W]
        Maps at image resolution.
    image : array_like, shape [H, W, C] or [H, W]
    n_segments, compactness, sigma : optional
        Passed to :func:`skimage.segmentation.slic`. Lower ``compactness``
        follows colour edges more closely.

    Returns
    -------
    ndarray
        Same shape and floating dtype as ``maps``; constant in each superpixel.

    Examples
    --------
    >>> img = np.zeros((16, 16)); img[:, 8:] = 1
    >>> slic_pool(np.random.default_rng(0).random((2, 16, 16)), img, n_segments=4).shape
    (2, 16, 16)
    """
    from skimage.segmentation import slic

    maps, single = _as_maps(maps)
    image = _check_image(image, maps.shape[1:])
    segments = slic(
        image,
        n_segments=n_segments,
        compactness=compactness,
        sigma=sigma,
        start_label=0,
        channel_axis=-1 if image.ndim == 3 else None,
    )
    n = int(segments.max()) + 1
    flat = segments.ravel()
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    out = np.empty_like(maps)
    for p, m in enumerate(maps):
        means = np.bincount(flat, weights=m.ravel(), minlength=n) / np.maximum(counts, 1)
        out[p] = means[segments]
    return out[0] if single else out


def _shifted(a: np.ndarray, dy: int, dx: int, pad: int) -> np.ndarray:
    """``a`` (padded by ``pad`` on the last two axes) shifted so out[y, x] = a[y+dy, x+dx]."""
    h, w = a.shape[-2] - 2 * pad, a.shape[-1] - 2 * pad
    return a[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def pamr(
    maps,
    image,
    *,
    iterations: int = 10,
    dilations: Sequence[int] = (1, 2),
    sigma: float = 0.1,
) -> np.ndarray:
    """Pixel-adaptive mask refinement (PAMR) of maps with image affinities.

    For each pixel ``i`` and its 8 neighbours ``j`` at every dilation ``d``, the
    affinity is ``softmax_j(mean_c(-|I_i - I_j| / (sigma * std_i)))``, where
    ``std_i`` is the standard deviation of each channel over ``i``'s 3 x 3
    neighbourhoods at all dilations. Then, ``iterations`` times,
    ``maps_i <- sum_j affinity_ij * maps_j`` (edges replicated).

    Parameters
    ----------
    maps : array_like, shape [P, H, W] or [H, W]
        Maps at image resolution.
    image : array_like, shape [H, W, C] or [H, W]
        Any range (the affinity is scale-invariant).
    iterations : int, optional
    dilations : sequence of int, optional
    sigma : float, optional
        Affinity temperature relative to the local standard deviation (0.1 in [1]_).

    Returns
    -------
    ndarray
        Same shape and floating dtype as ``maps``; each output value is a convex
        combination of input values.

    Notes
    -----
    Memory is ``O(8 * len(dilations) * H * W)``: run it at model-input
    resolution or a moderately downscaled image, not on a 24-megapixel photo.

    References
    ----------
    .. [1] N. Araslanov and S. Roth, "Single-Stage Semantic Segmentation from
       Image Labels", CVPR 2020.

    Examples
    --------
    >>> img = np.zeros((8, 8)); img[:, 4:] = 1
    >>> pamr(np.random.default_rng(0).random((2, 8, 8)), img, iterations=2).shape
    (2, 8, 8)
    """
    maps, single = _as_maps(maps)
    image = _check_image(image, maps.shape[1:])
    if image.ndim == 2:
        image = image[..., None]
    img = np.moveaxis(image, -1, 0).astype(maps.dtype)  # [C, H, W]
    dilations = tuple(int(d) for d in dilations)
    pad = max(dilations)
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    offsets = [
        (dy * d, dx * d)
        for d in dilations
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dy, dx) != (0, 0)
    ]
    # Local std over every 3x3 neighbourhood (centre included, once per dilation).
    window = [_shifted(padded, dy, dx, pad) for dy, dx in offsets] + [img] * len(dilations)
    std = np.std(np.stack(window), axis=0)
    del window
    scale = sigma * std + 1e-8
    logits = np.stack(
        [(-np.abs(_shifted(padded, dy, dx, pad) - img) / scale).mean(axis=0) for dy, dx in offsets]
    )
    logits -= logits.max(axis=0, keepdims=True)
    affinity = np.exp(logits)
    affinity /= affinity.sum(axis=0, keepdims=True)  # [N, H, W]
    del logits, std, padded

    out = maps.copy()
    for _ in range(iterations):
        m = np.pad(out, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
        acc = np.zeros_like(out)
        for a, (dy, dx) in zip(affinity, offsets):
            acc += a * _shifted(m, dy, dx, pad)
        out = acc
    return out[0] if single else out


def _components_apply(mask: np.ndarray, keep_fn, connectivity: int) -> np.ndarray:
    structure = ndi.generate_binary_structure(mask.ndim, connectivity)
    comp, n = ndi.label(mask, structure=structure)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(comp.ravel())
    keep = keep_fn(sizes)
    keep[0] = False
    return keep[comp]


def remove_small(masks_or_labels, *, min_size: int, connectivity: int = 1) -> np.ndarray:
    """Remove connected components smaller than ``min_size`` pixels.

    Parameters
    ----------
    masks_or_labels : array_like
        Bool masks ``[P, H, W]`` or ``[H, W]``, or an integer label map ``[H, W]``
        (0 = background).
    min_size : int
        Inclusive lower limit: components with at least this many pixels stay.
    connectivity : {1, 2}, optional
        1: 4-connected, 2: 8-connected.

    Returns
    -------
    ndarray
        Same shape and dtype. In label maps removed pixels become background (0).

    Examples
    --------
    >>> m = np.zeros((5, 5), bool); m[0, 0] = True; m[2:5, 2:5] = True
    >>> int(remove_small(m, min_size=2).sum())
    9
    """
    a = np.asarray(masks_or_labels)
    if a.dtype == bool:
        stack = a[None] if a.ndim == 2 else a
        out = np.stack(
            [_components_apply(m, lambda s: s >= min_size, connectivity) for m in stack]
        )
        return out[0] if a.ndim == 2 else out
    if not np.issubdtype(a.dtype, np.integer) or a.ndim != 2:
        raise TypeError("expected bool masks or an integer [H, W] label map")
    out = a.copy()
    for k in np.unique(a):
        if k == 0:
            continue
        mask = a == k
        out[mask & ~_components_apply(mask, lambda s: s >= min_size, connectivity)] = 0
    return out


def _fill(mask: np.ndarray, max_size: int | None, allowed: np.ndarray | None = None) -> np.ndarray:
    holes = ndi.binary_fill_holes(mask) & ~mask
    if allowed is not None:
        holes &= allowed
    if max_size is not None:
        holes = _components_apply(holes, lambda s: s <= max_size, 1)
    return mask | holes


def fill_holes(masks_or_labels, *, max_size: int | None = None) -> np.ndarray:
    """Fill holes (regions enclosed by a mask) in masks or label maps.

    Parameters
    ----------
    masks_or_labels : array_like
        Bool masks ``[P, H, W]`` or ``[H, W]``, or an integer label map ``[H, W]``.
    max_size : int, optional
        Inclusive upper limit on the area of a hole to fill; all holes by default.

    Returns
    -------
    ndarray
        Same shape and dtype. In label maps only background pixels (0) inside a
        label's holes are filled with that label; other labels are never overwritten.

    Examples
    --------
    >>> m = np.ones((3, 3), bool); m[1, 1] = False
    >>> bool(fill_holes(m)[1, 1])
    True
    """
    a = np.asarray(masks_or_labels)
    if a.dtype == bool:
        stack = a[None] if a.ndim == 2 else a
        out = np.stack([_fill(m, max_size) for m in stack])
        return out[0] if a.ndim == 2 else out
    if not np.issubdtype(a.dtype, np.integer) or a.ndim != 2:
        raise TypeError("expected bool masks or an integer [H, W] label map")
    out = a.copy()
    for k in np.unique(a):
        if k == 0:
            continue
        mask = a == k
        filled = _fill(mask, max_size, allowed=(out == 0))
        out[filled & ~mask] = k
    return out


# --- prompt ensembling -------------------------------------------------------

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of the {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "art of the {}.",
)


def ensemble_prompts(
    prompts: Sequence[str], templates: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Expand every prompt with every template.

    Parameters
    ----------
    prompts : sequence of str
        Class names or short phrases.
    templates : sequence of str, optional
        Format strings with one ``{}``; :data:`DEFAULT_TEMPLATES` if omitted.

    Returns
    -------
    texts : list of str
        ``len(prompts) * len(templates)`` texts, prompt-major.
    groups : ndarray of int64, shape [len(texts)]
        Index of the prompt each text came from (for :func:`average_groups`).

    Examples
    --------
    >>> texts, groups = ensemble_prompts(["cat", "dog"], ["a {}.", "the {}"])
    >>> texts, groups.tolist()
    (['a cat.', 'the cat', 'a dog.', 'the dog'], [0, 0, 1, 1])
    """
    templates = DEFAULT_TEMPLATES if templates is None else tuple(templates)
    if not templates:
        raise ValueError("need at least one template")
    for t in templates:
        if t.count("{}") != 1:
            raise ValueError(f"template {t!r} must contain exactly one '{{}}'")
    texts = [t.format(p) for p in prompts for t in templates]
    groups = np.repeat(np.arange(len(prompts), dtype=np.int64), len(templates))
    return texts, groups


def average_groups(values, groups, *, n_groups: int | None = None, normalize: bool = False) -> np.ndarray:
    """Mean of the rows of ``values`` within each group.

    Parameters
    ----------
    values : array_like, shape [N, ...]
        Text embeddings ``[N, D]`` or score maps ``[N, h, w]``.
    groups : array_like of int, shape [N]
        Group of each row, in ``0 .. n_groups - 1``.
    n_groups : int, optional
        Defaults to ``max(groups) + 1``.
    normalize : bool, optional
        L2-normalise rows along the last axis before averaging and the means
        after (CLIP's prompt ensembling of text embeddings).

    Returns
    -------
    ndarray, shape [n_groups, ...]
        Floating dtype of ``values``.

    Examples
    --------
    >>> average_groups(np.array([[1.0], [3.0], [5.0]]), [0, 0, 1])
    array([[2.],
           [5.]])
    """
    x = _float(values)
    g = np.asarray(groups, dtype=np.int64)
    if g.shape != (x.shape[0],):
        raise ValueError(f"groups must have shape [{x.shape[0]}], got {g.shape}")
    n = int(g.max()) + 1 if n_groups is None else int(n_groups)
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    sums = np.zeros((n,) + x.shape[1:], dtype=x.dtype)
    np.add.at(sums, g, x)
    counts = np.bincount(g, minlength=n)
    if (counts == 0).any():
        raise ValueError(f"groups {np.flatnonzero(counts == 0).tolist()} are empty")
    out = sums / counts.reshape(-1, *([1] * (x.ndim - 1)))
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out.astype(x.dtype, copy=False)


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


# --- colours -----------------------------------------------------------------------


def palette(n: int) -> np.ndarray:
    """``n`` distinct colours, index 0 black (the PASCAL VOC colour map).

    Returns
    -------
    ndarray of uint8, shape [n, 3]

    Examples
    --------
    >>> palette(3)
    array([[  0,   0,   0],
           [128,   0,   0],
           [  0, 128,   0]], dtype=uint8)
    """
    idx = np.arange(n, dtype=np.int64)
    out = np.zeros((n, 3), dtype=np.int64)
    c = idx.copy()
    for shift in range(7, -1, -1):
        for ch in range(3):
            out[:, ch] |= ((c >> ch) & 1) << shift
        c >>= 3
    return out.astype(np.uint8)

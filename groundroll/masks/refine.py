"""Refinement: snap maps to image structure (superpixels, PAMR) and clean masks up."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from ._common import _as_maps, _float

__all__ = ["slic_pool", "superpixel_partitions", "superpixel_pool", "pamr", "remove_small",
           "fill_holes", "SUPERPIXEL_SCALES", "SUPERPIXEL_SIZES", "SUPERPIXEL_GRAPH_SIDE",
           "SUPERPIXEL_SLIC_ITERATIONS"]

#: Felzenszwalb-Huttenlocher ``scale`` values of :func:`superpixel_partitions`.
SUPERPIXEL_SCALES = (50, 400)
#: Mean pixels per SLIC superpixel of :func:`superpixel_partitions`.
SUPERPIXEL_SIZES = (150, 400, 1000)
#: Long side, in pixels, at which :func:`superpixel_partitions` runs Felzenszwalb-
#: Huttenlocher (the costliest partition): larger images are shrunk to it.
SUPERPIXEL_GRAPH_SIDE = 192
#: k-means iterations of each SLIC partition of :func:`superpixel_partitions`.
SUPERPIXEL_SLIC_ITERATIONS = 2


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
    # SLIC's colour distances (Lab for RGB) are defined on images in [0, 1] or uint8.
    segments = slic(
        _uint8_image(image),
        n_segments=n_segments,
        compactness=compactness,
        sigma=sigma,
        start_label=0,
        channel_axis=-1 if image.ndim == 3 else None,
    )
    return superpixel_pool(maps[0] if single else maps, partitions=[segments])


def _uint8_image(image) -> np.ndarray:
    """uint8 ``[H, W, 3]`` (or ``[H, W]``) for the superpixel algorithms, whose
    parameters are defined on 0-255 colours; floats are read as [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float64)
    if image.size and image.max() > 1.0:
        image = image / 255.0
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def superpixel_partitions(image, *, scales: Sequence[float] = SUPERPIXEL_SCALES,
                          sizes: Sequence[int] = SUPERPIXEL_SIZES,
                          max_side: int = 512, graph_side: int = SUPERPIXEL_GRAPH_SIDE,
                          slic_iterations: int = SUPERPIXEL_SLIC_ITERATIONS
                          ) -> list[np.ndarray]:
    """Partitions of an image into superpixels at several scales, from two algorithms.

    Felzenszwalb-Huttenlocher graph segmentations (one per ``scales`` value; they follow
    colour edges and adapt region size to the content) and SLIC segmentations (one per
    ``sizes`` value, in mean pixels per superpixel; compact regions). Together they
    give :func:`superpixel_pool` partitions both fine and coarse, so a map pooled over
    all of them keeps object outlines where any partition finds them and smooths what
    no partition separates.

    The defaults are the cheapest set that scores as well as the former one (three
    Felzenszwalb scales at full size, SLIC to convergence) on the held-out scenes of
    ``benchmarks/segmentation.py``: two Felzenszwalb scales at a long side of
    ``graph_side`` and two SLIC iterations, which keep SLIC's regions close to its
    compact starting grid.

    Parameters
    ----------
    image : array_like, shape [H, W, 3] or [H, W]
        uint8, or float in [0, 1].
    scales, sizes : sequence of numbers, optional
    max_side : int, optional
        Images with a longer side are partitioned at this size (the labels are
        resized back by nearest neighbour), which bounds the time on large images.
    graph_side : int, optional
        Long side at which the Felzenszwalb-Huttenlocher partitions run (their minimum
        region of 20 pixels shrinks with the area); at most ``max_side`` counts.
    slic_iterations : int, optional
        ``max_num_iter`` of :func:`skimage.segmentation.slic`.

    Returns
    -------
    list of ndarray of int32, each [H, W]
        One label image per partition (non-negative labels).

    Examples
    --------
    >>> img = np.zeros((24, 24, 3), np.uint8); img[:, 12:] = 255
    >>> parts = superpixel_partitions(img, scales=(100,), sizes=(72,))
    >>> len(parts), parts[0].shape
    (2, (24, 24))
    >>> bool((parts[0][:, :12, None] != parts[0][:, None, 12:]).all())
    True
    """
    from skimage.segmentation import felzenszwalb, slic

    full = _uint8_image(image)
    H, W = full.shape[:2]
    channel_axis = -1 if full.ndim == 3 else None
    graph = _shrunk(full, min(graph_side, max_side))
    min_size = max(1, round(20 * graph.shape[0] * graph.shape[1] / (H * W)))
    parts = [felzenszwalb(graph, scale=float(sc), sigma=0.8, min_size=min_size,
                          channel_axis=channel_axis) for sc in scales]
    work = _shrunk(full, max_side)
    h, w = work.shape[:2]
    parts += [slic(work, n_segments=max(4, (h * w) // int(n)), compactness=10.0,
                   max_num_iter=int(slic_iterations), start_label=0,
                   channel_axis=channel_axis) for n in sizes]
    return [np.asarray(_nearest_labels(p, (H, W)), dtype=np.int32) for p in parts]


def _shrunk(image: np.ndarray, side: int) -> np.ndarray:
    """uint8 ``image`` resized (bilinear) to a long side of ``side`` if it is longer."""
    H, W = image.shape[:2]
    if max(H, W) <= side:
        return image
    from PIL import Image

    f = side / max(H, W)
    size = (max(1, round(W * f)), max(1, round(H * f)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def _nearest_labels(labels: np.ndarray, hw) -> np.ndarray:
    """``labels`` ``[h, w]`` resized to ``hw`` by nearest neighbour (pixel centres)."""
    h, w = labels.shape
    H, W = hw
    if (h, w) == (H, W):
        return labels
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def superpixel_pool(maps, image=None, *, partitions: Sequence[np.ndarray] | None = None
                    ) -> np.ndarray:
    """Average each map inside the superpixels of several partitions, then over the
    partitions.

    Parameters
    ----------
    maps : array_like, shape [P, H, W] or [H, W]
        Maps at image resolution.
    image : array_like, shape [H, W, 3] or [H, W], optional
        The image; needed unless ``partitions`` is given.
    partitions : sequence of ndarray [H, W], optional
        Label images (default :func:`superpixel_partitions` of ``image``); pass them
        to pool several maps of one image without partitioning it again.

    Returns
    -------
    ndarray
        Same shape and floating dtype as ``maps``.

    Examples
    --------
    >>> maps = np.array([[[0.0, 1.0, 0.0, 1.0]]])
    >>> superpixel_pool(maps, partitions=[np.array([[0, 0, 1, 1]]),
    ...                                   np.array([[0, 0, 0, 0]])])
    array([[[0.5, 0.5, 0.5, 0.5]]])
    """
    maps, single = _as_maps(maps)
    if partitions is None:
        if image is None:
            raise ValueError("superpixel_pool needs the image or its partitions")
        _check_image(image, maps.shape[1:])
        partitions = superpixel_partitions(image)
    if not len(partitions):
        raise ValueError("superpixel_pool needs at least one partition")
    pool = _pooling_operator(partitions, maps.shape[1:])
    flat = maps.reshape(maps.shape[0], -1)
    # Segment means of every map in every partition, then each pixel's mean over its
    # segments: two sparse products over all partitions and maps at once.
    means = (pool.T @ flat.T) / pool.counts[:, None]                 # [segments, P]
    out = (pool @ means).T.reshape(maps.shape) / len(partitions)
    out = out.astype(maps.dtype, copy=False)
    return out[0] if single else out


def _pooling_operator(partitions: Sequence[np.ndarray], hw):
    """Sparse ``[pixels, segments]`` membership matrix of all partitions (labels of
    partition ``k`` offset past those of partitions ``0..k-1``), with the segment sizes
    as ``counts``."""
    from scipy import sparse

    flats, offset = [], 0
    for segments in partitions:
        segments = np.asarray(segments)
        if segments.shape != tuple(hw):
            raise ValueError(f"a partition is {segments.shape} but the maps are {tuple(hw)}")
        if segments.size and int(segments.min()) < 0:
            raise ValueError("partition labels must be non-negative")
        flat = segments.ravel().astype(np.int64)
        flats.append(flat + offset)
        offset += int(flat.max()) + 1 if flat.size else 0
    n, k = int(np.prod(hw)), len(flats)
    # Every pixel is in exactly one segment of each partition: row p of the CSR matrix
    # holds its k segments, built directly (no COO sort).
    cols = np.stack(flats, axis=1).ravel()
    pool = sparse.csr_matrix((np.ones(cols.size), cols, np.arange(0, n * k + 1, k)),
                             shape=(n, offset))
    pool.counts = np.maximum(np.bincount(cols, minlength=offset), 1).astype(np.float64)
    return pool


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
    A noisy two-class map of a two-region image: the argmax misses 4 pixels before
    PAMR and none after.

    >>> img = np.zeros((8, 8)); img[:, 4:] = 1
    >>> rng = np.random.default_rng(0)
    >>> noisy = np.stack([1 - img, img]) + rng.normal(0, 0.4, (2, 8, 8))
    >>> int((noisy.argmax(0) != img).sum()), int((pamr(noisy, img, iterations=10).argmax(0) != img).sum())
    (4, 0)
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


def _each_mask_or_label(masks_or_labels, on_mask, on_label) -> np.ndarray:
    """Bool masks ``[P, H, W]`` / ``[H, W]``: ``on_mask(mask)`` of each. An integer
    label map ``[H, W]``: a copy that ``on_label(out, k, labels == k)`` edits in place
    for every label ``k > 0`` in turn."""
    a = np.asarray(masks_or_labels)
    if a.dtype == bool:
        stack = a[None] if a.ndim == 2 else a
        out = np.stack([on_mask(m) for m in stack])
        return out[0] if a.ndim == 2 else out
    if not np.issubdtype(a.dtype, np.integer) or a.ndim != 2:
        raise TypeError("expected bool masks or an integer [H, W] label map")
    out = a.copy()
    for k in np.unique(a):
        if k != 0:
            on_label(out, k, a == k)
    return out


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
    def keep(mask):
        return _components_apply(mask, lambda s: s >= min_size, connectivity)

    def drop_small(out, k, mask):
        out[mask & ~keep(mask)] = 0

    return _each_mask_or_label(masks_or_labels, keep, drop_small)


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
    def fill_background(out, k, mask):
        filled = _fill(mask, max_size, allowed=(out == 0))
        out[filled & ~mask] = k

    return _each_mask_or_label(masks_or_labels, lambda m: _fill(m, max_size),
                               fill_background)

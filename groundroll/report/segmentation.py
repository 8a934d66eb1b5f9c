"""Interactive segmentation reports: the image, per-prompt heatmaps and masks as layers.

:func:`segmentation_report` shows a :class:`~groundroll.grounding.Segmentation` (and
per-layer maps, when the caller has them: :func:`groundroll.explore.explore_segmentation`
runs the model for them).
"""

from __future__ import annotations

import numpy as np

from ._page import DEFAULT_MAX_BYTES, asset, page, png_data_uri
from groundroll.viz import heatmap_overlay

__all__ = ["segmentation_report", "DEFAULT_MAX_SIDE"]

#: Images whose long side exceeds this are shown downscaled (with a note).
DEFAULT_MAX_SIDE = 768


def _colormap(values: np.ndarray) -> np.ndarray:
    """``[H, W]`` in [0, 1] -> RGBA uint8, colour from matplotlib's ``turbo``, alpha
    rising with the value (low values stay see-through)."""
    from matplotlib import colormaps

    v = np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, 1.0)
    rgba = colormaps["turbo"](v)
    rgba[..., 3] = 0.15 + 0.85 * v
    return np.round(rgba * 255).astype(np.uint8)


def _mask_rgba(mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape + (4,), np.uint8)
    out[mask, :3] = colour
    out[mask, 3] = 255
    # a 1-pixel darker outline keeps touching masks apart
    edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1)
                    & np.roll(mask, -1, 1))
    out[edge, :3] = (colour.astype(np.int32) * 0.5).astype(np.uint8)
    return out


def _shrink_hw(hw: tuple[int, int], max_side: int) -> tuple[int, int]:
    h, w = hw
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resize(array: np.ndarray, hw: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    from PIL import Image

    if array.shape[:2] == tuple(hw):
        return array
    if array.dtype == bool:
        im = Image.fromarray(array.astype(np.uint8) * 255)
        return np.asarray(im.resize((hw[1], hw[0]), Image.NEAREST)) > 127
    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize(
            (hw[1], hw[0]), Image.NEAREST if nearest else Image.BILINEAR))
    im = Image.fromarray(array.astype(np.float32), mode="F")
    return np.asarray(im.resize((hw[1], hw[0]), Image.BILINEAR), dtype=np.float32)


def _hex(colour) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in colour[:3])


def _payload(seg, hw, layers) -> dict:
    # scipy (through masks): loaded on first use, not by import groundroll.report
    from groundroll import masks as M

    image = seg.image if seg.image is not None else np.zeros(seg.labels.shape + (3,), np.uint8)
    colours = M.palette(max(len(seg.prompts) + 1, 2))
    total = float(np.prod(seg.labels.shape)) or 1.0
    prompts = []
    for k, name in enumerate(seg.prompts):
        heat = _resize(np.asarray(seg.heatmaps[k], np.float32), hw)
        mask = _resize(np.asarray(seg.masks[k], bool), hw)
        prompts.append(dict(name=str(name), colour=_hex(colours[k + 1]),
                            score=float(seg.scores[k]), area=float(seg.masks[k].sum()) / total,
                            heatmap=png_data_uri(_colormap(heat)),
                            mask=png_data_uri(_mask_rgba(mask, colours[k + 1]))))
    data = dict(image=png_data_uri(_resize(np.asarray(image, np.uint8), hw)), width=hw[1],
                height=hw[0], opacity=0.6, prompts=prompts,
                best=int(np.argmax(seg.scores)) if len(seg.scores) else 0,
                settings=seg.summary()["settings"] if hasattr(seg, "summary") else {})
    if layers is not None:
        maps, names, title = layers
        thumb_hw = _shrink_hw(hw, 160)
        small = _resize(np.asarray(image, np.uint8), thumb_hw)
        data["layers"] = dict(title=title, maps=[
            dict(name=n, src=png_data_uri(_colormap(_resize(np.asarray(m, np.float32), hw))),
                 thumb=png_data_uri(heatmap_overlay(
                     small, _resize(np.asarray(m, np.float32), thumb_hw), cmap="turbo",
                     alpha=0.6)))
            for m, n in zip(maps, names)])
    return data


def segmentation_report(seg, *, title: str | None = None, layers=None,
                        max_side: int = DEFAULT_MAX_SIDE,
                        max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """A self-contained interactive HTML page for a segmentation.

    The image carries each prompt's mask and heatmap as a layer that a checkbox
    switches on and off, under one opacity slider; a table gives each prompt's
    image-text score and mask area.

    Parameters
    ----------
    seg : Segmentation
        A result of :func:`groundroll.segment`.
    title : str, optional
    layers : (maps, names, title), optional
        Per-layer maps ``[L, H, W]`` in [0, 1] at the image's size, a name per map and
        a heading (what :func:`explore_segmentation` passes from :func:`layer_maps`).
    max_side : int
        Long side, in pixels, above which the image and its layers are downscaled for
        the page (with a note saying so).
    max_bytes : int
        Size limit of the page: the pictures are downscaled further until it fits.

    Returns
    -------
    str
        The page as one HTML document (the image, masks and heatmaps as PNG data URIs),
        for :func:`~groundroll.report.write_report`.

    Examples
    --------
    >>> seg = gr.segment("scene.png", ["red circle"], model="bundled:shapes-clip")
    ... # doctest: +SKIP
    >>> html = segmentation_report(seg)                                  # doctest: +SKIP
    """
    if max_side < 16:
        raise ValueError(f"max_side must be at least 16 pixels, got {max_side}")
    full = tuple(int(x) for x in seg.labels.shape[:2])
    side = min(max_side, max(full))
    while True:
        hw = _shrink_hw(full, side)
        data = _payload(seg, hw, layers)
        notes = []
        if hw != full:
            notes.append(f"The image ({full[1]} x {full[0]} pixels) and its layers are shown"
                         f" at {hw[1]} x {hw[0]} to keep the page small; scores and areas"
                         " are those of the full-size result.")
        text = page(title=title or "Segmentation: " + ", ".join(seg.prompts),
                    kind="segmentation", data=data, script=asset("segmentation.js"),
                    notes=notes)
        if len(text.encode("utf-8")) <= max_bytes or side <= 64:
            return text
        side = max(64, int(side * 0.7))

"""Interactive segmentation reports: the image, per-prompt heatmaps and masks as layers.

:func:`segmentation_report` shows a :class:`~groundroll.grounding.Segmentation`;
:func:`explore_segmentation` also runs the model for per-layer maps of one prompt
(:func:`layer_maps`: relevance or rollout read after each vision layer).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..grounding._model import DEFAULT_MODEL
from ._page import DEFAULT_MAX_BYTES, asset, page, png_data_uri

__all__ = ["segmentation_report", "explore_segmentation", "layer_maps", "DEFAULT_MAX_SIDE"]

#: Images whose long side exceeds this are shown downscaled (with a note).
DEFAULT_MAX_SIDE = 768

LAYER_METHODS = ("relevance", "rollout")


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
        from groundroll.viz import heatmap_overlay

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


def _letterboxed(handle, rgb):
    from groundroll import masks as M

    geometry = M.letterbox_geometry(rgb.shape[:2], handle.image_size, mode="pad")
    return M.letterbox_image(rgb, geometry, fill=0), geometry


def layer_maps(image, prompt: str, *, model=DEFAULT_MODEL,
               method: str = "relevance", max_side: int = 1024):
    """Maps of one prompt read after each vision layer of a CLIP model.

    ``relevance``: Chefer et al.'s relevance at the class token for the image-prompt
    logit, accumulated through layers ``0..l`` (``R <- R + Ā R``). ``rollout``: attention
    rollout through layers ``0..l`` (prompt-independent). The last map is the full
    model's.

    Parameters
    ----------
    image : str, PathLike, PIL.Image or ndarray
    prompt : str
    model : Bundle or str
        An open_clip or Hugging Face CLIP model (default ``bundled:shapes-clip``).
    method : {"relevance", "rollout"}
    max_side : int
        Images are downscaled to this long side first.

    Returns
    -------
    ndarray of float32, shape [L, H, W]
        One map per layer at the (working) image's pixels, each min-max normalised to
        [0, 1].

    Examples
    --------
    >>> maps = layer_maps("scene.png", "red circle")          # doctest: +SKIP
    >>> maps.shape                                            # doctest: +SKIP
    (4, 256, 256)
    """
    import torch

    from groundroll import masks as M
    from groundroll.adapters import capture
    from groundroll.grounding import load_image, resolve_model
    from groundroll.rollout import gradient_weighted, relevance_self_update, rollout

    if method not in LAYER_METHODS:
        raise ValueError(f"method must be one of {LAYER_METHODS}, got {method!r}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("layer_maps needs one non-empty prompt")
    handle = resolve_model(model)
    if handle.family not in ("open_clip", "hf_clip"):
        raise ValueError(f"per-layer maps read a CLIP vision tower; model family"
                         f" {handle.family!r} is not one")
    rgb = load_image(image)
    hw = _shrink_hw(rgb.shape[:2], max_side)
    rgb = _resize(rgb, hw)
    model_input, geometry = _letterboxed(handle, rgb)
    net = handle.model
    if method == "relevance":
        text = handle.text_embeddings([prompt]).float()
        pixels = handle.pixels([model_input]).float().requires_grad_(True)
        # The score is the image-prompt logit, as in groundroll.grounding's relevance.
        with handle.float32(), torch.enable_grad(), capture(net, grads=True,
                                                            streams=["vision"]) as trace:
            emb = handle.image_embeddings(pixels).float()
            logit = handle.logit_scale() * (emb * text).sum()
            torch.autograd.grad(logit, pixels)
        weights, grads = trace.weights("vision"), trace.grads("vision")
        n = weights[0].shape[-1]
        R = torch.eye(n, dtype=torch.float32).unsqueeze(0)
        rows = []
        for a, g in zip(weights, grads):
            R = relevance_self_update(R, gradient_weighted(a.detach().float(), g.float()))
            rows.append(R[:, 0].clone())                     # [batch, N] at CLS
    else:
        with torch.no_grad(), capture(net, streams=["vision"]) as trace:
            handle.image_embeddings(handle.pixels([model_input]))
        weights = [w.float() for w in trace.weights("vision")]
        rows = [rollout(weights[: l + 1], rows=[0])[:, 0] for l in range(len(weights))]
    tokens = trace.tokens["vision"]
    gh, gw = tokens.grid
    grids = np.stack([r[0, tokens.patches].reshape(gh, gw).detach().cpu().numpy()
                      for r in rows]).astype(np.float32)
    maps = M.unletterbox(grids, geometry, order=1).astype(np.float32)
    lo = maps.reshape(len(maps), -1).min(1)[:, None, None]
    hi = maps.reshape(len(maps), -1).max(1)[:, None, None]
    return np.where(hi > lo, (maps - lo) / np.where(hi > lo, hi - lo, 1), 0).astype(np.float32)


def explore_segmentation(image, prompts: Sequence[str], *, model=DEFAULT_MODEL,
                         method: str | None = None, layer_prompt: int | str | None = 0,
                         layer_method: str | None = None, title: str | None = None,
                         max_side: int = DEFAULT_MAX_SIDE, max_bytes: int = DEFAULT_MAX_BYTES,
                         **segment_options) -> str:
    """Segment an image and show the result with per-layer maps of one prompt.

    Parameters
    ----------
    image : str, PathLike, PIL.Image or ndarray
    prompts : sequence of str
    model : Bundle or str
    method : str, optional
        Map source of :func:`groundroll.segment` (default: the model profile's).
    layer_prompt : int or str, optional
        The prompt (index or text) whose per-layer maps are shown; None: none.
    layer_method : {"relevance", "rollout"}, optional
        Default: ``"rollout"`` when ``method="rollout"``, else ``"relevance"``.
    title, max_side, max_bytes
        As in :func:`segmentation_report`.
    **segment_options
        Passed to :func:`groundroll.segment` (``mask_threshold``, ``refine``, ...).

    Returns
    -------
    str
        The page of :func:`segmentation_report`, with the per-layer maps.

    Examples
    --------
    >>> html = explore_segmentation("scene.png", ["red circle", "blue star"])
    ... # doctest: +SKIP
    """
    from groundroll.grounding import resolve_model, segment

    handle = resolve_model(model)
    seg = segment(image, prompts, model=handle, method=method, **segment_options)
    layers = None
    if layer_prompt is not None and handle.family in ("open_clip", "hf_clip"):
        k = seg.prompts.index(layer_prompt) if isinstance(layer_prompt, str) else int(layer_prompt)
        if not 0 <= k < len(seg.prompts):
            raise ValueError(f"layer_prompt {layer_prompt!r} is not one of the prompts")
        how = layer_method or ("rollout" if seg.settings["method"] == "rollout" else "relevance")
        maps = layer_maps(seg.image, seg.prompts[k], model=handle, method=how)
        names = [f"layer {l}" for l in range(len(maps))]
        heading = (f"Per-layer {how} of “{seg.prompts[k]}”" if how == "relevance"
                   else "Per-layer rollout (the same for every prompt)")
        layers = (maps, names, heading + ", through layers 0..l")
    return segmentation_report(seg, title=title, layers=layers, max_side=max_side,
                               max_bytes=max_bytes)

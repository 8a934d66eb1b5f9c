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
4. Optional refinement (``"superpixels"``: multi-scale superpixel pooling, ``"slic"``,
   or ``"pamr"``), argmax label map, background by the background rule with its
   ``mask_threshold`` and by background prompts, optional removal of small objects
   and hole filling.
5. The label map is resized to the full image by nearest neighbour and the heatmaps
   bilinearly, so the working memory stays that of the working resolution.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from .. import masks as M
from .._images import (DEFAULT_MAX_PIXELS, _open_unchecked, _read_image,  # noqa: F401
                       _resize_rgb, _upsample, _nearest, load_image)
from .._locks import locked, short, warn_once, warning_scope
from .._options import call_keywords, merge_keywords
from ._model import DEFAULT_MODEL, ModelHandle, resolve_model
from .options import SegmentOptions, check_prompts, check_templates
from .result import (Segmentation, check_writable_set, manifest_name,  # noqa: F401
                     output_paths, slug)
from .profiles import REFINE, background_labels, refine_maps, refine_scores, resolve_profile
from .registry import source
from .sources import caption_word_maps, image_text_scores, prompt_maps

__all__ = ["segment", "Segmentation", "load_image", "output_paths", "channel_maps",
           "channel_probabilities", "REFINE", "slug", "check_templates", "manifest_name",
           "check_writable_set", "DEFAULT_MAX_PIXELS", "SUPERPIXEL_SIDE", "refine_inputs",
           "refined_probabilities", "SegmentOptions"]



# ----------------------------------------------------------------------------- maps


def _grid_maps_letterboxed(handle, rgb, channels, method, templates, options,
                           model_input=None):
    """``[C, h, w]`` maps at the image's pixels through one letterboxed model input."""
    geometry = M.letterbox_geometry(rgb.shape[:2], handle.image_size, mode="pad")
    if model_input is None:
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
                 source_options: dict | None = None,
                 model_input: np.ndarray | None = None) -> np.ndarray:
    """``[C, H, W]`` float32 maps of a source at the pixels of ``image`` (uint8
    ``[H, W, 3]``): letterboxed into one model input, or (``window=True``) slid over
    the image resized to a short side of twice the model input and stitched.
    ``model_input``: the image already letterboxed into the model input (``fill=0``),
    to skip doing it again."""
    options = dict(source_options or {})
    if window:
        stride = max(1, (2 * min(handle.image_size)) // 3)
        return _grid_maps_windowed(handle, image, list(channels), method, templates,
                                   options, stride=stride)
    return _grid_maps_letterboxed(handle, image, list(channels), method, templates, options,
                                  model_input)


#: Long side, in pixels, at which ``refine="superpixels"`` partitions and pools:
#: larger working images are refined at this size and their labels resized back by
#: nearest neighbour. The superpixel parameters are in pixels (Felzenszwalb's minimum
#: region, SLIC's pixels per superpixel) and the bundled profiles were calibrated on
#: scenes of 96-256 px, so this is the scale at which the calibration holds.
SUPERPIXEL_SIDE = 256
#: Most superpixel partitions a caller's ``cache`` keeps (oldest dropped first).
CACHED_PARTITIONS = 8


def _shrink_rgb(rgb: np.ndarray, hw) -> np.ndarray:
    from PIL import Image

    if tuple(rgb.shape[:2]) == tuple(hw):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((hw[1], hw[0]), Image.BILINEAR))


def _shrink_maps(maps: np.ndarray, hw) -> np.ndarray:
    """Area-average ``[C, H, W]`` maps to ``hw`` (each output pixel the mean of the
    input pixels it covers), float32."""
    from PIL import Image

    if tuple(maps.shape[1:]) == tuple(hw):
        return maps
    size = (int(hw[1]), int(hw[0]))
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(m, np.float32), mode="F")
                                .resize(size, Image.BOX)) for m in maps])


def _partitions_of(image: np.ndarray, cache: dict | None,
                   keep: int | None = CACHED_PARTITIONS) -> list:
    """:func:`groundroll.masks.superpixel_partitions` of ``image``, kept in ``cache``
    (keyed by the image's bytes) so calls on the same image partition it once; at most
    ``keep`` images' partitions stay (None: all)."""
    if cache is None:
        return M.superpixel_partitions(image)
    import hashlib

    key = ("superpixel_partitions", image.shape, M.SUPERPIXEL_SCALES, M.SUPERPIXEL_SIZES,
           M.SUPERPIXEL_GRAPH_SIDE, M.SUPERPIXEL_SLIC_ITERATIONS,
           hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest())
    found = cache.get(key)
    if found is None:
        found = cache[key] = M.superpixel_partitions(image)
        keys = [k for k in list(cache) if isinstance(k, tuple) and k
                and k[0] == "superpixel_partitions"]
        for old in (keys[:-keep] if keep is not None else []):
            cache.pop(old, None)
    return found


def refine_inputs(maps: np.ndarray, image: np.ndarray, *, refine: str,
                  cache: dict | None = None, keep: int | None = CACHED_PARTITIONS):
    """``(maps, image, partitions)`` at the resolution ``refine`` runs at.

    For ``"superpixels"``: images with a long side over :data:`SUPERPIXEL_SIDE` are
    shrunk to it (bilinear), the maps area-averaged to match, and the image's
    superpixel partitions computed (or taken from ``cache``, which keeps those of
    ``keep`` images at most; None: every image's). Other refinements run at the
    image's own resolution, with no partitions.
    """
    if refine != "superpixels":
        return maps, image, None
    hw = image.shape[:2]
    if max(hw) > SUPERPIXEL_SIDE:
        hw = M.fit_size(hw, long_side=SUPERPIXEL_SIDE)
        image, maps = _shrink_rgb(image, hw), _shrink_maps(maps, hw)
    return maps, image, _partitions_of(image, cache, keep)


def refined_probabilities(maps: np.ndarray, image: np.ndarray, *, n_prompts: int,
                          normalize: str, logit_scale: float, refine: str,
                          rule: str, partitions=None):
    """``(probabilities, scores)`` for :func:`~groundroll.grounding.profiles.background_labels`:
    :func:`channel_probabilities` and, for the ``relative`` and ``otsu`` rules, the
    prompts' refined normalised maps (:func:`~groundroll.grounding.profiles.refine_scores`;
    otherwise the maps themselves). With superpixels both are pooled in one pass."""
    wants_scores = rule in ("relative", "otsu") and refine != "none"
    if refine == "superpixels" and partitions is not None:
        probs = channel_probabilities(maps, image, normalize=normalize,
                                      logit_scale=logit_scale)
        stack = probs
        if wants_scores:
            norm = M.normalize_maps(np.asarray(maps[:n_prompts], np.float32), how="minmax")
            stack = np.concatenate([probs, norm.astype(np.float32)])
        pooled = M.superpixel_pool(stack, partitions=partitions)
        return (pooled[: len(probs)],
                pooled[len(probs):] if wants_scores else maps)
    probs = channel_probabilities(maps, image, normalize=normalize, logit_scale=logit_scale,
                                  refine=refine, partitions=partitions)
    scores = refine_scores(maps[:n_prompts], image, refine=refine,
                           partitions=partitions) if wants_scores else maps
    return probs, scores


def channel_probabilities(maps: np.ndarray, image: np.ndarray, *, normalize: str,
                          logit_scale: float, refine: str = "none",
                          partitions=None) -> np.ndarray:
    """Per-pixel probabilities ``[C, H, W]`` (float32) from channel maps.

    ``softmax(logit_scale * normalize(maps))`` across channels; with one channel, the
    map min-max normalised to [0, 1]. Then refined by ``refine``
    (:func:`groundroll.grounding.profiles.refine_maps`; ``partitions``: superpixel
    partitions of ``image`` already computed, for ``"superpixels"``).
    """
    if refine not in REFINE:
        raise ValueError(f"refine must be one of {REFINE}, got {refine!r}")
    if maps.shape[0] > 1:
        scored = M.normalize_maps(maps, how=normalize)
        probs = M.softmax_maps(scored, logit_scale=logit_scale).astype(np.float32)
    else:
        probs = M.normalize_maps(maps, how="minmax").astype(np.float32)
    return refine_maps(probs, image, refine=refine, partitions=partitions)


def segment(
    image,
    prompts: Sequence[str],
    *,
    model: Any = DEFAULT_MODEL,
    method: str | None = None,
    background: Sequence[str] | None = None,
    mask_threshold: float | None = None,
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
    device=None,
    options: SegmentOptions | dict | None = None,
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
        model with ``tokenizer=``. Default :data:`~groundroll.grounding._model.DEFAULT_MODEL` (``"bundled:shapes-clip"``): of the
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
    mask_threshold : float, optional
        Threshold of the background rule; what it measures depends on the rule
        (:mod:`groundroll.grounding.profiles`). Given alone (or with rule
        ``"threshold"``) it is a probability: a pixel whose winning prompt's
        probability is below it (exclusive) becomes background. With ``"relative"``
        it is a fraction of each prompt map's range, in [0, 1]; with ``"otsu"`` a
        factor of the map's Otsu threshold, in (0, 10]. Default: the profile's.
    background_rule : {"none", "threshold", "relative", "otsu"}, optional
        How pixels become background (:mod:`groundroll.grounding.profiles`).
        Default: the profile's rule for ``method``; with no profile and no
        ``mask_threshold`` every pixel gets a prompt.
    profile : Profile, dict, str or PathLike, optional
        Postprocessing profile (a file written by :func:`groundroll.calibrate`).
        Default: the profile bundled with the model, if any. Each option left as
        None here is taken from the profile's entry for ``method``. A profile fitted
        on another model is refused (ValueError).
    refine : {"none", "slic", "superpixels", "pamr"}, optional
        Refine the probabilities before the argmax: ``"superpixels"`` averages them
        within superpixels at several scales (:func:`groundroll.masks.superpixel_pool`),
        ``"slic"`` within one SLIC partition, ``"pamr"`` applies PAMR. Default: the
        profile's.
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
        (without it a spec is loaded once per process, :func:`groundroll.zoo.cached`)
        and the superpixel partitions of the last few images (a second call on the
        same image, e.g. with other prompts, does not partition it again).
    source_options : dict or the source's options object, optional
        Options of the map source, checked against its options class
        (``groundroll.grounding.SOURCES[method].options``, e.g. ``NaclipOptions(sigma=3.0)``
        or ``{"sigma": 3.0}``; ``{"read": "input"}`` for ``"cross"``). Default: the
        profile's, else the source's own defaults.
    device : str or torch.device, optional
        Where the model runs: the model's own device by default. A spec string is
        loaded there; a loaded model on another device is a ValueError. The maps and
        any rollout are computed on that device and come to the host once, as the
        source's maps on the patch grid.
    options : SegmentOptions or dict, optional
        Every setting above but ``model``, ``tokenizer``, ``cache`` and ``device`` as
        one object (or a dict of its fields; an unknown name is a TypeError listing
        the accepted ones). A keyword given beside it with a value other than its
        default replaces that field.

    Returns
    -------
    Segmentation

    Raises
    ------
    ValueError
        No prompts, an empty prompt, an unknown method or refinement, a corrupt image,
        an image over ``max_pixels``, a negative ``min_size``.
    TypeError
        Both ``mask_threshold`` and its old name ``threshold``.
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
    runs (the maps and the image-text scores), so the model passes run one after
    another and each call gives exactly the result of a call made alone; decoding and
    postprocessing run outside the lock and overlap. The model is left as it was, also
    when a call fails.

    Examples
    --------
    >>> from groundroll.grounding import segment
    >>> seg = segment("groundroll/data/examples/shapes_scene.png",
    ...               ["red circle", "blue star"], mask_threshold=0.6)  # doctest: +SKIP
    >>> seg.masks.shape                                              # doctest: +SKIP
    (2, 128, 160)
    >>> from groundroll.grounding import SegmentOptions
    >>> strict = SegmentOptions(method="naclip", mask_threshold=0.6, min_size=8)
    >>> seg = segment("groundroll/data/examples/shapes_scene.png",
    ...               ["red circle", "blue star"], options=strict)  # doctest: +SKIP
    """
    settings = merge_keywords(SegmentOptions, options,
                              call_keywords(SegmentOptions, locals()), what="segment()")
    with warning_scope():
        return _segment(image, prompts, settings, model=model, tokenizer=tokenizer,
                        cache=cache, device=device)


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


def _segment(image, prompts, options: SegmentOptions, *, model, tokenizer, cache,
             device=None) -> Segmentation:
    started = time.perf_counter()
    prompts = check_prompts(prompts)
    rgb, full_hw = _read_image(image, max_side=options.max_side,
                               max_pixels=options.max_pixels)
    handle: ModelHandle = resolve_model(model, tokenizer=tokenizer, cache=cache,
                                        device=device)
    # Options left as None come from the profile (the bundled one by default).
    resolved = options.resolved(resolve_profile(options.profile, handle))
    return _segment_image(handle, rgb, full_hw, prompts, started, resolved, cache=cache)


def _segment_image(handle, rgb, full_hw, prompts, started, options: SegmentOptions, *,
                   cache=None) -> Segmentation:
    """The pipeline on one image. The model's lock is held only while the model runs
    (the maps and the image-text scores); the postprocessing runs without it, so
    threads sharing a model overlap their numpy work."""
    max_side, background = options.max_side, options.background
    if max(full_hw) > max_side:
        work_hw = M.fit_size(full_hw, long_side=max_side)
        work = _resize_rgb(rgb, work_hw)
    else:
        work_hw, work = tuple(full_hw), _resize_rgb(rgb, full_hw)

    channels = prompts + background
    src = source(options.method)
    size = handle.image_size
    window = options.window
    if window is None:
        window = src.window(work_hw, size)
    model_input = M.letterbox_image(work, M.letterbox_geometry(work_hw, size, mode="pad"))
    with locked(handle.model):                 # the tokenizer is the model's too
        _warn_prompts(handle, prompts + background)
        maps = channel_maps(handle, work, channels, method=options.method,
                            templates=options.templates, window=window,
                            source_options=options.source_options,
                            model_input=None if window else model_input)
        scores = image_text_scores(handle, model_input, prompts,
                                   templates=options.templates)
        scale = (float(options.logit_scale) if options.logit_scale is not None
                 else src.logit_scale(handle))
    normalize = options.normalize or src.normalize
    small_maps, small, partitions = refine_inputs(maps, work, refine=options.refine,
                                                  cache=cache)
    probs, scores_for_rule = refined_probabilities(
        small_maps, small, n_prompts=len(prompts), normalize=normalize, logit_scale=scale,
        refine=options.refine, rule=options.background_rule, partitions=partitions)
    bg_index = list(range(len(prompts), len(channels)))
    labels = background_labels(probs, scores_for_rule, n_prompts=len(prompts),
                               rule=options.background_rule,
                               threshold=options.mask_threshold,
                               background=bg_index or None)
    del scores_for_rule, small_maps
    min_size, fill_holes = options.min_size, options.fill_holes
    if labels.shape != tuple(work_hw) and (min_size or fill_holes):
        labels = _nearest(labels, work_hw)  # sizes are counted in working pixels
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
    profile = options.profile
    settings = {
        "model": handle.name, "family": handle.family, "method": options.method,
        "background": background, "mask_threshold": options.mask_threshold,
        "background_rule": options.background_rule,
        "profile": profile.model if profile is not None else None,
        "refine": options.refine,
        "templates": list(options.templates) if options.templates else None,
        "logit_scale": scale, "normalize": normalize, "window": bool(window),
        "max_side": max_side, "min_size": min_size, "fill_holes": fill_holes,
        "source_options": dict(options.source_options),
        "image_size": list(full_hw), "working_size": list(work_hw),
        "model_input": list(size), "seconds": round(time.perf_counter() - started, 4),
    }
    return Segmentation(labels=labels, masks=masks, heatmaps=heat, scores=scores,
                        prompts=prompts, settings=settings, image=rgb)


def caption_heatmaps(image, caption: str, *, model: Any = "bundled:shapes-coca",
                     compose_method: str = "rollout", read: str = "predict",
                     tokenizer: Any = None, device=None) -> tuple[list[str], np.ndarray]:
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
    device : str or torch.device, optional
        Where the model runs (as in :func:`segment`): the model's device by default.

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
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"caption must be a non-empty string, got {caption!r}")
    rgb = load_image(image)
    handle = resolve_model(model, tokenizer=tokenizer, device=device)
    geometry = M.letterbox_geometry(rgb.shape[:2], handle.image_size, mode="pad")
    with warning_scope(), locked(handle.model):
        words, grid = caption_word_maps(handle, M.letterbox_image(rgb, geometry, fill=0),
                                        caption, compose_method=compose_method, read=read)
    heat = M.unletterbox(grid.astype(np.float32), geometry, order=1)
    return words, M.normalize_maps(heat, how="minmax").astype(np.float32)

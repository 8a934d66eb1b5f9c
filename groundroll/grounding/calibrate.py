"""Fit a postprocessing profile on a few labelled images.

:func:`calibrate` computes each map source's maps once per image and picks, per
source, the background rule and threshold (and refinement) with the best mean object
IoU; the fastest source within 0.02 of the best becomes the profile's default. The result is a
:class:`~groundroll.grounding.profiles.Profile` that ``segment(..., profile=...)`` and
``groundroll segment --profile`` read; each method's entry holds the rule's threshold
under ``"threshold"``, which ``segment`` uses as its ``mask_threshold``.

Labelled data comes as

* an iterable of dicts with ``image`` and either ``masks`` (bool ``[K, H, W]``) with
  ``labels`` (K class names), or ``label_map`` (int ``[H, W]``, 0 background, ``k``
  = ``prompts[k - 1]``) with ``prompts=`` given;
* a ``datasets.Dataset`` with those columns (``groundroll.data.shapes.as_dataset``);
* pairs ``(image_path, label_map_path)`` with ``prompts=`` (the CLI's form).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .._images import _nearest, load_image
from ..zoo import BUNDLED_DIR
from ._model import DEFAULT_MODEL, resolve_model
from .profiles import (Profile, background_labels, bundled_profile, model_fingerprint,
                       resolve_profile)
from .registry import METHODS, source
from .segment import REFINE, channel_maps, refine_inputs, refined_probabilities

__all__ = ["calibrate", "default_source", "fit_postprocess", "RULE_GRID", "CalibrationError", "object_ious",
           "score_entry"]

#: Candidate thresholds per background rule.
RULE_GRID: dict[str, tuple[float, ...]] = {
    "relative": (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9),
    "otsu": (0.85, 1.0, 1.15, 1.3, 1.5, 1.75, 2.0, 2.5),
    "threshold": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
}


class CalibrationError(ValueError):
    """Unusable calibration data; the message names every offending item."""


def object_ious(labels: np.ndarray, masks: np.ndarray) -> list[float]:
    """IoU of ``labels == k + 1`` with ``masks[k]`` for every object ``k``.

    Examples
    --------
    >>> m = np.zeros((1, 2, 2), bool); m[0, 0, 0] = True
    >>> object_ious(np.array([[1, 0], [1, 0]]), m)
    [0.5]
    """
    out = []
    for k, m in enumerate(masks):
        pred = labels == k + 1
        union = np.count_nonzero(pred | m)
        out.append(float(np.count_nonzero(pred & m) / union) if union else 1.0)
    return out


def _name(item: Mapping, i: int) -> str:
    for key in ("name", "path", "image_path"):
        if item.get(key):
            return str(item[key])
    image = item.get("image")
    if isinstance(image, (str, Path)):
        return str(image)
    return f"item {i}"


def _read_label_map(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im if im.mode in ("P", "L", "I", "I;16") else im.convert("L"))


def _normalise(data, prompts: Sequence[str] | None) -> list[dict]:
    """Items as ``{"name", "image", "masks" [K, H, W], "labels" [K]}``; every problem
    of every item is collected and raised together."""
    if hasattr(data, "column_names") and hasattr(data, "__getitem__"):   # datasets
        dataset = data
        data = (dataset[i] for i in range(len(dataset)))
    items, problems = [], []
    for i, raw in enumerate(data):
        if isinstance(raw, (tuple, list)) and len(raw) == 2:
            raw = {"image": raw[0], "label_map": raw[1]}
        if not isinstance(raw, Mapping) or "image" not in raw:
            problems.append(f"item {i}: expected a dict with 'image', or an"
                            f" (image, label map) pair")
            continue
        name = _name(raw, i)
        try:
            image = load_image(raw["image"])
        except (FileNotFoundError, ValueError) as err:
            problems.append(f"{name}: {err}")
            continue
        if raw.get("masks") is not None and raw.get("labels") is not None:
            masks = np.asarray(raw["masks"], bool)
            labels = [str(x) for x in raw["labels"]]
            if masks.ndim != 3 or masks.shape[0] != len(labels):
                problems.append(f"{name}: {masks.shape[0] if masks.ndim == 3 else '?'}"
                                f" masks for {len(labels)} class names")
                continue
        elif raw.get("label_map") is not None:
            if not prompts:
                problems.append(f"{name}: a label map needs the class names (prompts=)")
                continue
            lm = raw["label_map"]
            try:
                lm = _read_label_map(lm) if isinstance(lm, (str, Path)) else np.asarray(lm)
            except (FileNotFoundError, OSError) as err:
                problems.append(f"{name}: cannot read its label map: {err}")
                continue
            values = [int(v) for v in np.unique(lm) if v != 0]
            outside = [v for v in values if not 1 <= v <= len(prompts)]
            if outside:
                problems.append(f"{name}: label values {outside} have no class name (the"
                                f" {len(prompts)} class names cover 1..{len(prompts)})")
                continue
            masks = np.stack([lm == v for v in values]) if values else np.zeros(
                (0,) + lm.shape, bool)
            labels = [prompts[v - 1] for v in values]
        else:
            problems.append(f"{name}: no masks (give 'masks' and 'labels', or a"
                            f" 'label_map')")
            continue
        if masks.shape[1:] != image.shape[:2]:
            problems.append(f"{name}: masks are {masks.shape[1:]}, the image is"
                            f" {image.shape[:2]}")
            continue
        if prompts is not None:
            absent = [lab for lab in labels if lab not in prompts]
            if absent:
                problems.append(f"{name}: class names {absent} are not among the prompts")
                continue
        if masks.shape[0] == 0 or not masks.any():
            problems.append(f"{name}: its masks are empty (nothing to calibrate on)")
            continue
        items.append({"name": name, "image": image, "masks": masks, "labels": labels})
    if problems:
        raise CalibrationError("calibration data has problems:\n  " + "\n  ".join(problems))
    if not items:
        raise CalibrationError("no calibration images given")
    return items


def _bundle_templates(handle) -> list[str] | None:
    found = bundled_profile(handle)
    if found is not None:
        for entry in found.methods.values():
            if entry.get("templates"):
                return list(entry["templates"])
    name = getattr(handle, "name", "") or ""
    if name.startswith("bundled:"):
        import json

        meta = Path(BUNDLED_DIR) / name.split(":", 1)[1] / "meta.json"
        if meta.is_file():
            return json.loads(meta.read_text()).get("prompt_templates")
    return None


#: A source within this much mean object IoU of the best may be the default if faster.
DEFAULT_MARGIN = 0.02


def default_source(scores: Mapping[str, float], seconds: Mapping[str, float], *,
                   margin: float = DEFAULT_MARGIN) -> str:
    """The profile's default source: the fastest of those within ``margin`` of the best
    calibration score (a source as good within noise and several times faster is the
    better default).

    Examples
    --------
    >>> default_source({"legrad": 0.748, "ensemble": 0.752, "ig": 0.70},
    ...                {"legrad": 1.0, "ensemble": 3.0, "ig": 14.0})
    'legrad'
    """
    top = max(scores.values())
    return min((m for m in scores if scores[m] >= top - margin), key=lambda m: seconds[m])


def fit_postprocess(maps: Sequence[np.ndarray], items: Sequence[Mapping], *,
                    images: Sequence[np.ndarray], normalize: str, logit_scale: float,
                    refine: Sequence[str] = ("none",),
                    rules: Sequence[str] = ("relative", "otsu", "threshold"),
                    cache: dict | None = None) -> tuple[float, dict]:
    """Best ``(mean object IoU, {"background_rule", "threshold", "refine"})`` over
    :data:`RULE_GRID` for maps already computed (``maps[i]`` ``[K_i, H, W]`` for
    ``items[i]["masks"]``, channels in the order of the item's objects).
    Ties keep the earlier candidate (rules in the given order, then thresholds).
    ``cache``: a dict that keeps every image's superpixel partitions, to share them
    with other calls on the same images (other sources, :func:`score_entry`)."""
    best = None
    for r in refine:
        small = [refine_inputs(m, image, refine=r, cache=cache, keep=None)
                 for m, image in zip(maps, images)]
        for rule in rules:
            # probabilities do not depend on the rule; the scores it reads may
            pooled = [refined_probabilities(sm, si, n_prompts=len(it["masks"]),
                                            normalize=normalize, logit_scale=logit_scale,
                                            refine=r, rule=rule, partitions=pp)
                      for (sm, si, pp), it in zip(small, items)]
            for t in RULE_GRID[rule]:
                ious = []
                for (p, m), it in zip(pooled, items):
                    lab = background_labels(p, m, n_prompts=len(it["masks"]), rule=rule,
                                            threshold=t)
                    ious += object_ious(_at(lab, it["masks"]), it["masks"])
                score = float(np.mean(ious))
                if best is None or score > best[0] + 1e-9:
                    best = (score, {"background_rule": rule, "threshold": t, "refine": r})
    return best


def _at(labels: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``labels`` resized (nearest) to the masks' pixels, as :func:`segment` resizes."""
    return _nearest(labels, tuple(np.asarray(masks).shape[-2:]))


def score_entry(maps: Sequence[np.ndarray], items: Sequence[Mapping], *,
                images: Sequence[np.ndarray], entry: Mapping, normalize: str,
                logit_scale: float, cache: dict | None = None) -> float:
    """Mean object IoU of one postprocessing ``entry`` (``background_rule``,
    ``threshold``, ``refine``) on maps already computed, postprocessed as
    :func:`segment` postprocesses them (``cache`` as in :func:`fit_postprocess`)."""
    refine = entry.get("refine") or "none"
    rule = entry.get("background_rule", "none")
    ious = []
    for m, image, it in zip(maps, images, items):
        sm, si, pp = refine_inputs(m, image, refine=refine, cache=cache, keep=None)
        probs, scored = refined_probabilities(sm, si, n_prompts=len(it["masks"]),
                                              normalize=normalize, logit_scale=logit_scale,
                                              refine=refine, rule=rule, partitions=pp)
        lab = background_labels(probs, scored, n_prompts=len(it["masks"]), rule=rule,
                                threshold=entry.get("threshold"))
        ious += object_ious(_at(lab, it["masks"]), it["masks"])
    return float(np.mean(ious))


def calibrate(data: Iterable | Any, *, model: Any = DEFAULT_MODEL,
              methods: Sequence[str] | str | None = None,
              prompts: Sequence[str] | None = None,
              templates: Sequence[str] | None = None,
              refine: Sequence[str] = ("none", "slic", "superpixels"),
              rules: Sequence[str] = ("relative", "otsu", "threshold"),
              source_options: Mapping[str, dict] | None = None,
              keep_margin: float = 0.01, progress: bool = True,
              tokenizer: Any = None) -> Profile:
    """Fit a postprocessing profile on labelled images.

    Parameters
    ----------
    data : iterable, datasets.Dataset
        Labelled images (see the module docstring for the accepted forms).
    model : Bundle, str or torch.nn.Module
        The model the profile is for (its fingerprint is recorded).
    methods : str or sequence of str, optional
        Map sources to fit; the best one becomes ``default_method``. Default: the
        bundled profile's default method, else ``"relevance"``.
    prompts : sequence of str, optional
        Class names. Needed for label maps; with per-object masks, every item's class
        names must be among them. Each image is segmented with the class names it
        holds.
    templates : sequence of str, optional
        Prompt templates (default: those of the model's bundled profile).
    refine : sequence of {"none", "slic", "superpixels", "pamr"}
        Refinements to try (default: all but the slow ``"pamr"``).
    rules : sequence of str
        Background rules to try (keys of :data:`RULE_GRID`).
    source_options : mapping of str to dict, optional
        Per-method options of the map sources (also stored in the profile).
    keep_margin : float
        A bundled model's shipped setting for a method is kept unless the best fit
        beats it on the calibration images by more than this (mean object IoU), so a
        profile fitted on few images does not trade a setting chosen on many for noise.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    Profile
        ``calibration`` records the number of images and objects, the mean object IoU
        of every method's best setting on the calibration data, and the seconds.

    Raises
    ------
    CalibrationError
        Items without masks, with class names absent from ``prompts``, unreadable
        images or label maps; every offending item is named.

    Examples
    --------
    >>> from groundroll.data import shapes
    >>> data = [{"image": s.image, "masks": s.masks, "labels": s.labels}
    ...         for s in shapes.scenes(8, seed=5)]
    >>> profile = calibrate(data, model="bundled:shapes-clip", methods="legrad")
    ... # doctest: +SKIP
    >>> profile.save("my_profile.json")                              # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    handle = resolve_model(model, tokenizer=tokenizer)
    if isinstance(methods, str):
        methods = [methods]
    if methods is None:
        found = resolve_profile(None, handle)
        methods = [found.default_method if found is not None else "relevance"]
    methods = list(dict.fromkeys(methods))
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    for r in refine:
        if r not in REFINE:
            raise ValueError(f"refine must be among {REFINE}, got {r!r}")
    for rule in rules:
        if rule not in RULE_GRID:
            raise ValueError(f"rules must be among {tuple(RULE_GRID)}, got {rule!r}")
    options = {m: dict((source_options or {}).get(m, {})) for m in methods}
    items = _normalise(data, prompts)
    if templates is None:
        templates = _bundle_templates(handle)
    n_objects = sum(len(it["labels"]) for it in items)

    bundled = resolve_profile(None, handle)
    entries, scores, seconds = {}, {}, {}
    partitions: dict = {}        # every image partitioned once for all sources
    bar = tqdm(total=len(methods) * len(items), desc="calibrate", unit="map",
               disable=not progress or None)
    for method in methods:
        src = source(method)
        normalize, scale = src.normalize, src.logit_scale(handle)
        use_templates = None if src.templates == "refuse" else templates
        cached, tick = [], time.perf_counter()
        for it in items:
            maps = channel_maps(handle, it["image"], it["labels"], method=method,
                                templates=use_templates, source_options=options[method])
            cached.append(maps)
            bar.update(1)
        seconds[method] = time.perf_counter() - tick
        score, entry = fit_postprocess(cached, items, images=[it["image"] for it in items],
                                       normalize=normalize, logit_scale=scale,
                                       refine=refine, rules=rules, cache=partitions)
        shipped = bundled.settings(method) if bundled is not None else {}
        if shipped.get("background_rule") and shipped.get("normalize", normalize) == normalize:
            # A few images are noisy evidence: the shipped setting stays unless the fit
            # beats it on them by more than `keep_margin`.
            kept = score_entry(cached, items, images=[it["image"] for it in items],
                               entry=shipped, normalize=normalize, logit_scale=scale,
                               cache=partitions)
            if kept >= score - keep_margin:
                score = kept
                entry = {k: shipped.get(k) for k in ("background_rule", "threshold",
                                                     "refine")}
        entries[method] = {**entry, "normalize": normalize, "logit_scale": float(scale),
                           "templates": list(use_templates) if use_templates else None,
                           "source_options": options[method]}
        scores[method] = round(score, 4)
    bar.close()
    default = default_source(scores, seconds)
    return Profile(
        model=handle.name or type(handle.model).__name__,
        fingerprint=model_fingerprint(handle), default_method=default, methods=entries,
        calibration={"images": len(items), "objects": n_objects,
                     "mean_object_iou": scores, "metric": "mean object IoU",
                     "seconds": round(time.perf_counter() - started, 2)})

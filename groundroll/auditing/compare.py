"""Running two models on the same inputs and scoring how their maps agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from groundroll.auditing.metrics import _METRICS, TASKS, mass_moved, spearman, top_iou
from groundroll._json import jsonable
from groundroll.auditing.result import Audit
from groundroll.evaluate import aer

__all__ = ["audit"]


def _aggregate(examples: list[dict], metrics: Sequence[str]) -> dict:
    out: dict[str, Any] = {"n": len(examples)}
    for m in metrics:
        values = np.array([e[m] for e in examples], dtype=np.float64)
        out[m] = float(values.mean()) if values.size else float("nan")
        out[m + "_median"] = float(np.median(values)) if values.size else float("nan")
    return out


def _is_pair(x) -> bool:
    if hasattr(x, "src_words") and hasattr(x, "tgt_words"):
        return True
    return (isinstance(x, (tuple, list)) and len(x) == 2
            and all(isinstance(s, (str, list, tuple)) for s in x)
            and not any(isinstance(s, np.ndarray) for s in x))


def _infer_task(data, model_a) -> str:
    if data and _is_pair(data[0]):
        return "align"
    return "segment"


def _name(model) -> str:
    return str(getattr(model, "name", model))


def audit(model_a, model_b, data, *, task: str | None = None, prompts=None, top: float = 0.1,
          options: dict | None = None, options_b: dict | None = None,
          progress: bool = False) -> Audit:
    """Compare two models' maps on the same inputs.

    Parameters
    ----------
    model_a, model_b : Bundle or str
        Two models of the same kind (loaded bundles or specs for
        :func:`groundroll.load`); ``model_b`` is compared against ``model_a``.
    data : sequence
        Alignment: sentence pairs (toy ``Pair`` objects or ``(src, tgt)`` tuples; both
        models are forced to the same target). Segmentation: images (arrays, paths, PIL
        images) or synthetic ``Scene`` objects.
    task : {"align", "segment"}, optional
        Inferred from ``data`` when not given.
    prompts : sequence of str, or sequence of sequences, optional
        Segmentation: one prompt list for every image, or one list per image. Scenes
        default to their own object labels.
    top : float
        Fraction of each map in the top region of ``iou_top``, in (0, 1].
    options : dict, optional
        Keyword options for :func:`groundroll.align` or :func:`groundroll.segment`,
        used for both models (default: each model's default call).
    options_b : dict, optional
        Options for model B only (default: ``options``).
    progress : bool
        Show a progress bar.

    Returns
    -------
    Audit

    Examples
    --------
    >>> import groundroll as gr
    >>> from groundroll.data import toy_translation as toy
    >>> pairs = toy.pairs(20, split="test")
    >>> gr.audit("bundled:toy-mt", "bundled:toy-mt", pairs).perfect  # doctest: +SKIP
    True
    """
    if not 0 < top <= 1:
        raise ValueError(f"top must be in (0, 1], got {top}")
    data = list(data)
    if not data:
        raise ValueError("data is empty: pass sentence pairs or images")
    task = _infer_task(data, model_a) if task is None else task
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    options = dict(options or {})
    options_b = dict(options if options_b is None else options_b)
    # torch: the model code loads with the first audit, not with groundroll.auditing
    from groundroll.alignment.batching import bundle_of

    bundle_a, bundle_b = bundle_of(model_a), bundle_of(model_b)
    if task == "align":
        examples, maps_a, maps_b, extra = _audit_align(bundle_a, bundle_b, data, top=top,
                                                       options=options, options_b=options_b,
                                                       progress=progress)
    else:
        examples, maps_a, maps_b, extra = _audit_segment(bundle_a, bundle_b, data,
                                                         prompts=prompts, top=top,
                                                         options=options, options_b=options_b,
                                                         progress=progress)
    settings = dict(model_a=_name(bundle_a), model_b=_name(bundle_b), top=top,
                    options=jsonable(options, other=None),
                    options_b=jsonable(options_b, other=None), **extra)
    return Audit(task, examples, _aggregate(examples, _METRICS[task]), maps_a, maps_b, settings)


def _pair_words(p):
    if hasattr(p, "src_words"):
        return list(p.src_words), list(p.tgt_words)
    s, t = p
    return (s.split() if isinstance(s, str) else list(s),
            t.split() if isinstance(t, str) else list(t))


def _audit_align(a, b, data, *, top, options, options_b, progress):
    # torch: the model code loads with the first audit, not with groundroll.auditing
    from groundroll.alignment.api import align

    pairs = [_pair_words(p) for p in data]
    if any(not s or not t for s, t in pairs):
        raise ValueError("every sentence pair needs a source and a target: an audit forces"
                         " both models to the same target")
    srcs, tgts = [s for s, _ in pairs], [t for _, t in pairs]
    res_a = align(srcs, tgts, model=a, progress=progress, **options)
    res_b = align(srcs, tgts, model=b, progress=progress, **options_b)
    examples, maps_a, maps_b = [], [], []
    for k, (x, y) in enumerate(zip(res_a, res_b)):
        score = aer([x.links], [x.links], [y.links])
        examples.append(dict(
            index=k, label=f"{' '.join(x.src_words)} ||| {' '.join(x.tgt_words)}",
            spearman=spearman(x.matrix, y.matrix), iou_top=top_iou(x.matrix, y.matrix, top=top),
            mass_moved=mass_moved(x.matrix, y.matrix, axis=1),
            aer=0.0 if not x.links and not y.links else float(score.aer),
            links_a=sorted([list(l) for l in x.links]), links_b=sorted([list(l) for l in y.links])))
        maps_a.append(x.matrix)
        maps_b.append(y.matrix)
    extra = dict(settings_a=jsonable(res_a[0].settings, other=None) if res_a else {},
                 settings_b=jsonable(res_b[0].settings, other=None) if res_b else {})
    return examples, maps_a, maps_b, extra


def _audit_segment(a, b, data, *, prompts, top, options, options_b, progress):
    # torch: the model code loads with the first audit, not with groundroll.auditing
    from groundroll.grounding import segment

    if prompts is not None and len(prompts) and isinstance(prompts[0], str):
        per_image = [list(prompts)] * len(data)
    elif prompts is not None:
        per_image = [list(p) for p in prompts]
        if len(per_image) != len(data):
            raise ValueError(f"{len(per_image)} prompt lists for {len(data)} images")
    else:
        per_image = []
        for item in data:
            labels = getattr(item, "labels", None)
            if not labels:
                raise ValueError("prompts are needed (one list for all images, or one per"
                                 " image) unless the data are Scenes with labels")
            per_image.append(list(dict.fromkeys(labels)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(data), unit="image", desc="audit")
    examples, maps_a, maps_b = [], [], []
    for k, (item, ps) in enumerate(zip(data, per_image)):
        image = getattr(item, "image", item)
        sa = segment(image, ps, model=a, **options)
        sb = segment(image, ps, model=b, **options_b)
        ha, hb = np.asarray(sa.heatmaps, np.float64), np.asarray(sb.heatmaps, np.float64)
        name = str(item) if isinstance(item, (str, Path)) else f"image {k}"
        examples.append(dict(
            index=k, label=f"{name}: {', '.join(ps)}",
            spearman=float(np.mean([spearman(x, y) for x, y in zip(ha, hb)])),
            iou_top=float(np.mean([top_iou(x, y, top=top) for x, y in zip(ha, hb)])),
            mass_moved=mass_moved(ha.reshape(len(ps), -1), hb.reshape(len(ps), -1), axis=1),
            label_agreement=float(np.mean(sa.labels == sb.labels)),
            prompts=list(ps)))
        maps_a.append(ha.astype(np.float32))
        maps_b.append(hb.astype(np.float32))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return examples, maps_a, maps_b, {}

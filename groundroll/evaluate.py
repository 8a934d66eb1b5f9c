"""Quality measures: segmentation mIoU, alignment AER, faithfulness curves (numpy only).

Conventions
-----------
* Label maps are integer ``[H, W]``; ``ignore_index`` pixels of the ground truth
  are skipped. Confusion matrices are ``[n_classes, n_classes]`` int64 with rows
  = ground truth and columns = prediction.
* Alignment links are 0-indexed ``(s, t)`` pairs (see :mod:`groundroll.alignment.links`).
* Images for faithfulness curves are float ``[H, W, C]``; heatmaps float ``[H, W]``
  of the same size (higher = more important).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AbstractSet, Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "AlignmentScores",
    "Curve",
    "SegmentationScores",
    "aer",
    "confusion_matrix",
    "deletion_curve",
    "insertion_curve",
    "iou_per_class",
    "miou",
    "miou_dataset",
]


# --- segmentation ------------------------------------------------------------


def confusion_matrix(pred, gt, n_classes: int, *, ignore_index: int | None = 255) -> np.ndarray:
    """Pixel confusion matrix of one label map.

    Parameters
    ----------
    pred, gt : array_like of int, same shape
        Predicted and ground-truth labels in ``0 .. n_classes - 1``.
    n_classes : int
        Number of classes, background included.
    ignore_index : int or None, optional
        Ground-truth value of pixels to skip (255 as in PASCAL VOC).

    Returns
    -------
    ndarray of int64, shape [n_classes, n_classes]
        ``conf[g, p]`` counts pixels with truth ``g`` predicted as ``p``.

    Raises
    ------
    ValueError
        On a shape mismatch or a label outside ``0 .. n_classes - 1``.

    Examples
    --------
    >>> confusion_matrix([[0, 1, 1]], [[0, 1, 255]], 2)
    array([[1, 0],
           [0, 1]])
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    keep = np.ones(gt.shape, bool) if ignore_index is None else gt != ignore_index
    p = pred[keep].astype(np.int64)
    g = gt[keep].astype(np.int64)
    for name, a in (("prediction", p), ("ground truth", g)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(
                f"{name} has labels outside 0..{n_classes - 1}: {sorted(set(np.unique(a)) - set(range(n_classes)))[:5]}"
            )
    return np.bincount(g * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def iou_per_class(conf) -> np.ndarray:
    """Intersection over union of every class from a confusion matrix.

    Parameters
    ----------
    conf : array_like, shape [C, C]
        Rows ground truth, columns prediction.

    Returns
    -------
    ndarray of float64, shape [C]
        IoU in [0, 1]; NaN for a class absent from both prediction and ground truth.

    Examples
    --------
    >>> iou_per_class([[3, 1], [0, 2]])
    array([0.75      , 0.66666667])
    """
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def miou(preds: Iterable, gts: Iterable, *, n_classes: int, ignore_index: int | None = 255) -> float:
    """Mean IoU over a set of label maps (dataset-level, like PASCAL VOC).

    The confusion matrices of all images are summed first and the IoU of each
    class is computed from the sum. Classes absent from every prediction **and**
    every ground truth have no IoU and are left out of the mean (they are not
    counted as 0 or 1).

    Parameters
    ----------
    preds, gts : iterable of array_like of int
        Label maps, pairwise of equal shape.
    n_classes : int
        Number of classes, background included.
    ignore_index : int or None, optional

    Returns
    -------
    float
        In [0, 1]; NaN when no class occurs at all.

    Examples
    --------
    >>> miou([np.array([[0, 1], [1, 1]])], [np.array([[0, 1], [0, 1]])], n_classes=3)
    0.5833333333333333
    """
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    for p, g in _zip_strict(preds, gts):
        conf += confusion_matrix(p, g, n_classes, ignore_index=ignore_index)
    iou = iou_per_class(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def _zip_strict(a: Iterable, b: Iterable):
    sentinel = object()
    ia, ib = iter(a), iter(b)
    while True:
        x, y = next(ia, sentinel), next(ib, sentinel)
        if x is sentinel and y is sentinel:
            return
        if x is sentinel or y is sentinel:
            raise ValueError("predictions and ground truths differ in number")
        yield x, y


@dataclass
class SegmentationScores:
    """Dataset-level segmentation scores.

    Attributes
    ----------
    miou : float
        Mean IoU over classes that occur (see :func:`miou`).
    iou : dict of str to float
        Per-class IoU (NaN for classes that never occur).
    pixel_accuracy : float
        Fraction of non-ignored pixels labelled correctly.
    confusion : ndarray of int64, shape [C, C]
        Rows ground truth, columns prediction; index 0 is background.
    class_names : list of str
        ``"background"`` then the classes.
    n_images : int
    """

    miou: float
    iou: dict[str, float]
    pixel_accuracy: float
    confusion: np.ndarray
    class_names: list[str]
    n_images: int


def _to_image(image) -> np.ndarray:
    # scipy (through masks): loaded when images are read, so aer and miou stay numpy-only
    from ._images import load_image

    return load_image(image, max_pixels=None)


def _gt_from_masks(masks, labels: Sequence[str], index: dict[str, int], hw) -> np.ndarray:
    masks = np.asarray(masks, dtype=bool)
    if masks.size == 0:
        masks = masks.reshape((0,) + tuple(hw))
    if masks.shape[0] != len(labels):
        raise ValueError(f"{masks.shape[0]} masks but {len(labels)} labels")
    gt = np.zeros(masks.shape[1:], dtype=np.int64)
    for m, name in zip(masks, labels):  # later masks are in front
        gt[m] = index[name]
    return gt


def miou_dataset(
    dataset: Iterable[dict[str, Any]],
    predict: Callable[[np.ndarray, list[str]], Any],
    *,
    class_names: Sequence[str] | None = None,
    include_background: bool = True,
    progress: bool = True,
    limit: int | None = None,
) -> SegmentationScores:
    """mIoU of a segmentation function over a dataset of images with object masks.

    Parameters
    ----------
    dataset : iterable of dict
        Items with ``"image"`` (PIL image or array ``[H, W, 3]``), ``"masks"`` (bool
        ``[K, H, W]``, one per object) and ``"labels"`` (K class names), e.g. a
        ``datasets.Dataset`` from :func:`groundroll.data.shapes.as_dataset`.
    predict : callable
        ``predict(image, names) -> labels``: ``image`` a uint8 ``[H, W, 3]`` array,
        ``names`` the prompts, ``labels`` an int ``[H, W]`` map with 0 = background
        and ``k + 1`` = ``names[k]`` (as from :func:`groundroll.masks.label_map`).
    class_names : sequence of str, optional
        Fixed vocabulary prompted for every image (the usual open-vocabulary
        protocol). If omitted, each image is prompted with its own labels only
        (an oracle on which classes are present), and the vocabulary is the
        union of all labels in order of appearance.
    include_background : bool, optional
        Count background (class 0) in the mean, as PASCAL VOC's 21-class mIoU does.
    progress : bool, optional
        Show a tqdm progress bar.
    limit : int, optional
        Evaluate only the first ``limit`` items.

    Returns
    -------
    SegmentationScores

    Examples
    --------
    >>> item = {"image": np.zeros((2, 2, 3), np.uint8),
    ...         "masks": np.array([[[1, 0], [0, 0]]], bool), "labels": ["cat"]}
    >>> def predict(image, names):
    ...     return np.array([[1, 1], [0, 0]])
    >>> s = miou_dataset([item], predict, progress=False)
    >>> round(s.miou, 4), s.class_names
    (0.5833, ['background', 'cat'])
    """
    from tqdm.auto import tqdm

    fixed = class_names is not None
    names: list[str] = ["background"] + (list(class_names) if fixed else [])
    index = {n: i for i, n in enumerate(names)}
    if len(index) != len(names):
        raise ValueError("class_names contains duplicates (or 'background')")
    conf = np.zeros((len(names), len(names)), dtype=np.int64)
    total = len(dataset) if hasattr(dataset, "__len__") else None
    if limit is not None:
        total = limit if total is None else min(total, limit)
    n_images = 0
    for k, item in enumerate(tqdm(dataset, total=total, disable=not progress, desc="mIoU")):
        if limit is not None and k >= limit:
            break
        image = _to_image(item["image"])
        labels = list(item["labels"])
        if fixed:
            unknown = sorted(set(labels) - set(index))
            if unknown:
                raise ValueError(f"item {k}: labels {unknown} are not in class_names")
            prompts = list(class_names)
        else:
            prompts = list(dict.fromkeys(labels))
            for name in prompts:
                if name not in index:
                    index[name] = len(names)
                    names.append(name)
            if conf.shape[0] < len(names):
                grown = np.zeros((len(names), len(names)), dtype=np.int64)
                grown[: conf.shape[0], : conf.shape[1]] = conf
                conf = grown
        gt = _gt_from_masks(item["masks"], labels, index, image.shape[:2])
        pred = np.asarray(predict(image, prompts))
        if pred.shape != gt.shape:
            raise ValueError(
                f"item {k}: prediction {pred.shape} vs ground truth {gt.shape}; "
                "map predictions back to image pixels first"
            )
        if pred.size and (pred.min() < 0 or pred.max() > len(prompts)):
            raise ValueError(f"item {k}: prediction labels must be in 0..{len(prompts)}")
        to_global = np.array([0] + [index[p] for p in prompts], dtype=np.int64)
        conf += confusion_matrix(to_global[pred.astype(np.int64)], gt, len(names), ignore_index=None)
        n_images += 1
    iou = iou_per_class(conf)
    used = iou if include_background else iou[1:]
    mean = float(np.nanmean(used)) if np.isfinite(used).any() else float("nan")
    accuracy = float(np.trace(conf) / conf.sum()) if conf.sum() else float("nan")
    return SegmentationScores(
        miou=mean,
        iou={n: float(v) for n, v in zip(names, iou)},
        pixel_accuracy=accuracy,
        confusion=conf,
        class_names=names,
        n_images=n_images,
    )


# --- alignment -------------------------------------------------------------------


@dataclass(frozen=True)
class AlignmentScores:
    """Corpus-level alignment quality (Och & Ney 2003).

    Attributes
    ----------
    precision : float
        ``|A ∩ P| / |A|``.
    recall : float
        ``|A ∩ S| / |S|``.
    f1 : float
        Harmonic mean of precision and recall.
    aer : float
        ``1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|)``; lower is better.
    n_pred, n_sure, n_possible : int
        ``|A|``, ``|S|``, ``|P|`` summed over the corpus.
    """

    precision: float
    recall: float
    f1: float
    aer: float
    n_pred: int
    n_sure: int
    n_possible: int


def aer(
    gold_sure: Sequence[AbstractSet],
    gold_possible: Sequence[AbstractSet] | None,
    pred: Sequence[AbstractSet],
) -> AlignmentScores:
    """Alignment error rate, precision and recall over a corpus.

    Counts are summed over sentences before dividing (corpus level, as in
    Och & Ney 2003 and every AER table since). Possible links always include the
    sure ones (``P := P ∪ S``).

    Parameters
    ----------
    gold_sure : sequence of set of (int, int)
        Sure links S per sentence.
    gold_possible : sequence of set of (int, int) or None
        Possible links P per sentence; ``None`` means P = S.
    pred : sequence of set of (int, int)
        Predicted links A per sentence.

    Returns
    -------
    AlignmentScores
        Precision is 0 when nothing is predicted; recall is 0 when there are no
        sure links.

    Raises
    ------
    ValueError
        If the three lists differ in length, or there are neither predicted nor
        sure links (AER undefined).

    References
    ----------
    .. [1] F. J. Och and H. Ney, "A Systematic Comparison of Various Statistical
       Alignment Models", Computational Linguistics 29(1), 2003.

    Examples
    --------
    >>> s = aer([{(0, 0), (1, 1)}], [{(0, 0), (1, 1), (1, 2)}], [{(0, 0), (1, 2), (2, 2)}])
    >>> round(s.precision, 4), s.recall, s.aer
    (0.6667, 0.5, 0.4)
    """
    if gold_possible is None:
        gold_possible = gold_sure
    if not (len(gold_sure) == len(gold_possible) == len(pred)):
        raise ValueError(
            f"lengths differ: {len(gold_sure)} sure, {len(gold_possible)} possible, {len(pred)} predicted"
        )
    a_total = s_total = p_total = a_s = a_p = 0
    for sure, possible, predicted in zip(gold_sure, gold_possible, pred):
        sure = {tuple(x) for x in sure}
        possible = {tuple(x) for x in possible} | sure
        predicted = {tuple(x) for x in predicted}
        a_total += len(predicted)
        s_total += len(sure)
        p_total += len(possible)
        a_s += len(predicted & sure)
        a_p += len(predicted & possible)
    if a_total + s_total == 0:
        raise ValueError("AER is undefined with no predicted and no sure links")
    precision = a_p / a_total if a_total else 0.0
    recall = a_s / s_total if s_total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return AlignmentScores(
        precision=precision,
        recall=recall,
        f1=f1,
        aer=1.0 - (a_s + a_p) / (a_total + s_total),
        n_pred=a_total,
        n_sure=s_total,
        n_possible=p_total,
    )


# --- faithfulness ------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve: ``score_fn`` as the pixels are replaced by the
    baseline (or revealed over it), most relevant first.

    Attributes
    ----------
    fractions : ndarray of float64, shape [steps + 1]
        Fraction of pixels deleted (or inserted), from 0 to 1.
    scores : ndarray of float64, shape [steps + 1]
        ``score_fn`` at each fraction.
    auc : float
        Trapezoidal area under ``scores`` over ``fractions``.
    """

    fractions: np.ndarray
    scores: np.ndarray
    auc: float = field(default=float("nan"))


def _baseline_image(image: np.ndarray, baseline) -> np.ndarray:
    if isinstance(baseline, str):
        if baseline == "mean":
            return np.broadcast_to(image.mean(axis=(0, 1), keepdims=True), image.shape).copy()
        if baseline == "blur":
            from scipy.ndimage import gaussian_filter

            sigma = max(image.shape[:2]) / 20.0
            return gaussian_filter(image, sigma=(sigma, sigma) + (0,) * (image.ndim - 2))
        raise ValueError(f"baseline must be a number, an array, 'mean' or 'blur', got {baseline!r}")
    return np.broadcast_to(np.asarray(baseline, dtype=image.dtype), image.shape).copy()


def _curve(score_fn, image, heatmap, *, steps, baseline, batch_size, insert: bool) -> Curve:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.shape != image.shape[:2]:
        raise ValueError(
            f"heatmap {heat.shape} must match the image size {image.shape[:2]}; resize it first"
        )
    if steps < 1:
        raise ValueError("steps must be >= 1")
    base = _baseline_image(image, baseline).astype(np.float32)
    n_pixels = heat.size
    order = np.argsort(-heat.ravel(), kind="stable")  # most important first
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * n_pixels).astype(int)
    start, end = (base, image) if insert else (image, base)
    flat_start = start.reshape(n_pixels, -1)
    flat_end = end.reshape(n_pixels, -1)

    scores = []
    for b0 in range(0, len(counts), batch_size):
        batch = np.empty((min(batch_size, len(counts) - b0),) + image.shape, dtype=np.float32)
        for i, n in enumerate(counts[b0 : b0 + batch_size]):
            flat = flat_start.copy()
            flat[order[:n]] = flat_end[order[:n]]
            batch[i] = flat.reshape(image.shape)
        out = np.asarray(score_fn(batch), dtype=np.float64).reshape(-1)
        if out.shape[0] != batch.shape[0]:
            raise ValueError(f"score_fn returned {out.shape[0]} scores for {batch.shape[0]} images")
        scores.append(out)
    scores = np.concatenate(scores)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    return Curve(fractions=fractions, scores=scores, auc=float(trapezoid(scores, fractions)))


def deletion_curve(
    score_fn: Callable[[np.ndarray], Any],
    image,
    heatmap,
    *,
    steps: int = 20,
    baseline=0.0,
    batch_size: int = 16,
) -> Curve:
    """Score as the most important pixels are removed first (lower AUC = more faithful).

    Parameters
    ----------
    score_fn : callable
        ``score_fn(images) -> scores``: float32 ``[N, H, W, C]`` in, array-like ``[N]``
        out (e.g. the model's probability of the class being explained).
    image : array_like, shape [H, W, C] or [H, W]
        Float image in the range ``score_fn`` expects.
    heatmap : array_like, shape [H, W]
        Importance per pixel; ties are removed in raster order.
    steps : int, optional
        Number of increments; ``steps + 1`` images are scored.
    baseline : float, array_like or {"mean", "blur"}, optional
        What removed pixels become: a value, an image, the per-channel mean, or
        a Gaussian blur of the image (sigma = 1/20 of the longer side).
    batch_size : int, optional
        Images per ``score_fn`` call.

    Returns
    -------
    Curve
        The score at each fraction of pixels removed, and its area (``auc``).

    Examples
    --------
    >>> img = np.ones((10, 10, 1))
    >>> c = deletion_curve(lambda x: x.mean(axis=(1, 2, 3)), img, np.zeros((10, 10)), steps=4)
    >>> c.scores.tolist(), c.auc
    ([1.0, 0.75, 0.5, 0.25, 0.0], 0.5)
    """
    return _curve(score_fn, image, heatmap, steps=steps, baseline=baseline, batch_size=batch_size, insert=False)


def insertion_curve(
    score_fn: Callable[[np.ndarray], Any],
    image,
    heatmap,
    *,
    steps: int = 20,
    baseline="blur",
    batch_size: int = 16,
) -> Curve:
    """Score as the most important pixels are inserted first into a baseline (higher AUC = more faithful).

    Parameters are those of :func:`deletion_curve`; the default baseline is a
    blurred copy of the image (as in RISE), into which original pixels are put back.

    Returns
    -------
    Curve
        The score at each fraction of original pixels put back, and its area (``auc``).

    Examples
    --------
    >>> img = np.ones((10, 10, 1))
    >>> c = insertion_curve(lambda x: x.mean(axis=(1, 2, 3)), img, np.zeros((10, 10)),
    ...                     steps=4, baseline=0.0)
    >>> c.scores.tolist(), c.auc
    ([0.0, 0.25, 0.5, 0.75, 1.0], 0.5)
    """
    return _curve(score_fn, image, heatmap, steps=steps, baseline=baseline, batch_size=batch_size, insert=True)

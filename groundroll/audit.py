"""Model auditing: where did relevance move between two models?

:func:`audit` runs two models on the same inputs (the same images and prompts for
segmentation, the same sentence pairs for alignment) and measures, per example and in
aggregate, how much their maps agree:

* ``spearman``: Spearman rank correlation of the two maps (all pixels of every prompt's
  heatmap; all cells of the word matrix);
* ``iou_top``: intersection over union of the top ``top`` fraction of each map
  (per prompt, then averaged; the whole matrix for alignment);
* ``mass_moved``: the share of relevance that moved. Segmentation: each prompt's map
  normalised to a distribution over pixels, total-variation distance between the two
  models, averaged over prompts. Alignment: each target word's row normalised to a
  distribution over source words, total-variation distance, averaged over target words;
* ``label_agreement`` (segmentation): fraction of pixels with the same label;
  ``aer`` (alignment): AER of model B's links with model A's links as the gold.

The same model audited against itself agrees perfectly (Spearman 1, IoU 1, no mass
moved, AER 0). The examples that changed most are those with the lowest Spearman.

Metrics are functions of numpy arrays (:func:`spearman`, :func:`top_iou`,
:func:`mass_moved`), usable on maps from anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["Audit", "audit", "spearman", "top_iou", "mass_moved", "TASKS"]

TASKS = ("align", "segment")
_METRICS = {
    "align": ("spearman", "iou_top", "mass_moved", "aer"),
    "segment": ("spearman", "iou_top", "mass_moved", "label_agreement"),
}
_HIGHER_IS_AGREEMENT = {"spearman": True, "iou_top": True, "mass_moved": False, "aer": False,
                        "label_agreement": True}


# ----------------------------------------------------------------------------- metrics


def spearman(a, b) -> float:
    """Spearman rank correlation of two maps of the same shape (ties: average ranks).

    Two identical maps give 1 even when constant; a constant map against a varying one
    gives 0 (no rank information).

    Examples
    --------
    >>> spearman([1, 2, 3], [10, 20, 30]), spearman([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    """
    from scipy.stats import rankdata

    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"maps differ in size: {np.shape(a)} and {np.shape(b)}")
    if x.size == 0 or np.array_equal(x, y):
        return 1.0
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else 0.0


def _top_set(x: np.ndarray, top: float) -> np.ndarray:
    k = max(1, int(round(top * x.size)))
    order = np.argsort(-x.ravel(), kind="stable")
    chosen = np.zeros(x.size, dtype=bool)
    chosen[order[:k]] = True
    return chosen


def top_iou(a, b, *, top: float = 0.1) -> float:
    """IoU of the top ``top`` fraction (at least one cell) of two maps.

    Ties are broken by position, so identical maps give exactly 1.

    Examples
    --------
    >>> top_iou([[0, 1], [2, 3]], [[0, 1], [3, 2]], top=0.5)
    1.0
    >>> top_iou([0, 0, 1, 2], [2, 1, 0, 0], top=0.5)
    0.0
    """
    if not 0 < top <= 1:
        raise ValueError(f"top must be in (0, 1], got {top}")
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"maps differ in size: {x.shape} and {y.shape}")
    if x.size == 0:
        return 1.0
    sa, sb = _top_set(x, top), _top_set(y, top)
    union = (sa | sb).sum()
    return float((sa & sb).sum() / union)


def _distributions(m: np.ndarray, axis: int) -> np.ndarray:
    m = np.clip(np.asarray(m, dtype=np.float64), 0, None)
    total = m.sum(axis=axis, keepdims=True)
    return np.divide(m, total, out=np.zeros_like(m), where=total > 0)


def mass_moved(a, b, *, axis: int = -1) -> float:
    """Mean total-variation distance between the rows of two maps, each row normalised
    to sum 1 along ``axis`` (0 = nothing moved, 1 = all mass moved elsewhere).

    Examples
    --------
    >>> mass_moved([[1, 0], [0.5, 0.5]], [[0, 1], [0.5, 0.5]])
    0.5
    """
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"maps differ in size: {x.shape} and {y.shape}")
    if x.size == 0:
        return 0.0
    tv = 0.5 * np.abs(_distributions(x, axis) - _distributions(y, axis)).sum(axis=axis)
    return float(tv.mean())


# ----------------------------------------------------------------------------- result


@dataclass
class Audit:
    """Agreement between two models' maps on the same inputs.

    Attributes
    ----------
    task : {"align", "segment"}
    examples : list of dict
        One per input: ``index``, ``label`` (the sentence pair or image name and
        prompts), the metrics of :data:`_METRICS` for the task.
    aggregate : dict
        Mean of each metric over the examples (``<metric>``) and its median
        (``<metric>_median``); ``n`` examples.
    maps_a, maps_b : list of ndarray
        The maps compared (alignment: ``[T, S]`` word matrices; segmentation:
        ``[P, H, W]`` heatmaps).
    settings : dict
        Models, options, ``top``.
    """

    task: str
    examples: list[dict]
    aggregate: dict
    maps_a: list[np.ndarray] = field(default_factory=list, repr=False)
    maps_b: list[np.ndarray] = field(default_factory=list, repr=False)
    settings: dict = field(default_factory=dict)

    @property
    def metrics(self) -> tuple[str, ...]:
        return _METRICS[self.task]

    def most_changed(self, n: int = 5, *, by: str = "spearman") -> list[dict]:
        """The ``n`` examples that changed most (lowest agreement on metric ``by``).

        Examples
        --------
        >>> a = Audit("align", [dict(index=0, spearman=0.9), dict(index=1, spearman=0.2)], {})
        >>> [e["index"] for e in a.most_changed(1)]
        [1]
        """
        if by not in _HIGHER_IS_AGREEMENT:
            raise ValueError(f"by must be one of {sorted(_HIGHER_IS_AGREEMENT)}, got {by!r}")
        sign = 1 if _HIGHER_IS_AGREEMENT[by] else -1
        return sorted(self.examples, key=lambda e: (sign * e[by], e["index"]))[:n]

    @property
    def perfect(self) -> bool:
        """Whether the two models agreed exactly on every example (up to 1e-9)."""
        agg = self.aggregate
        ok = abs(agg["spearman"] - 1) < 1e-9 and abs(agg["iou_top"] - 1) < 1e-9
        ok &= agg["mass_moved"] < 1e-9
        if self.task == "align":
            ok &= agg["aer"] < 1e-9
        else:
            ok &= abs(agg["label_agreement"] - 1) < 1e-9
        return bool(ok)

    def to_markdown(self, *, n_changed: int = 5) -> str:
        """Aggregate table and the examples that changed most."""
        a, s = self.aggregate, self.settings
        lines = [f"Audit ({self.task}): {s.get('model_a', 'A')} vs {s.get('model_b', 'B')},"
                 f" {a.get('n', len(self.examples))} examples, top {100 * s.get('top', 0.1):g}%",
                 "", "| metric | mean | median |", "|---|---|---|"]
        for m in self.metrics:
            lines.append(f"| {m} | {a[m]:.4f} | {a[m + '_median']:.4f} |")
        lines += ["", "Changed most (lowest Spearman):", "",
                  "| # | example | " + " | ".join(self.metrics) + " |",
                  "|---|---|" + "---|" * len(self.metrics)]
        for e in self.most_changed(n_changed):
            label = str(e.get("label", "")).replace("|", "/")
            lines.append(f"| {e['index']} | {label[:60]} | "
                         + " | ".join(f"{e[m]:.3f}" for m in self.metrics) + " |")
        return "\n".join(lines)

    def plot(self, *, n: int = 3, by: str = "spearman"):
        """Histograms of the per-example metrics, then the ``n`` most changed examples
        (model A, model B, B - A).

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt

        changed = self.most_changed(n, by=by) if self.maps_a else []
        rows = 1 + len(changed)
        metrics = self.metrics
        fig, axes = plt.subplots(rows, max(3, len(metrics)), squeeze=False,
                                 figsize=(3.2 * max(3, len(metrics)), 2.8 * rows))
        for ax, m in zip(axes[0], metrics):
            ax.hist([e[m] for e in self.examples], bins=20, color="0.4")
            ax.set_title(f"{m} (mean {self.aggregate[m]:.3f})", fontsize=9)
        for ax in axes[0][len(metrics):]:
            ax.axis("off")
        for row, e in zip(axes[1:], changed):
            a, b = self.maps_a[e["index"]], self.maps_b[e["index"]]
            if self.task == "segment":
                # The prompt whose relevance moved most.
                k = int(np.argmax([mass_moved(a[p].ravel()[None], b[p].ravel()[None])
                                   for p in range(a.shape[0])]))
                a, b = a[k], b[k]
                what = f"#{e['index']} prompt {k}"
            else:
                what = f"#{e['index']}"
            vmax = max(float(np.max(a)), float(np.max(b)), 1e-12)
            for ax, m, title in zip(row, (a, b, b - a), ("A", "B", "B - A")):
                cmap = "RdBu_r" if title == "B - A" else "viridis"
                lim = dict(vmin=-vmax, vmax=vmax) if title == "B - A" else dict(vmin=0, vmax=vmax)
                ax.imshow(m, cmap=cmap, aspect="auto", **lim)
                ax.set_title(f"{what} {title}  ρ={e['spearman']:.2f}", fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
            for ax in row[3:]:
                ax.axis("off")
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        return dict(task=self.task, examples=self.examples, aggregate=self.aggregate,
                    settings=self.settings)

    def to_html(self, *, title: str | None = None) -> str:
        """A self-contained interactive HTML page: aggregate metrics, a sortable table of
        the examples and the maps of the most changed ones
        (:func:`groundroll.report.audit_report`; no network, data inline)."""
        from groundroll.report import audit_report

        return audit_report(self, title=title)

    def save(self, directory, *, force: bool = False, figure: bool = True) -> Path:
        """Write ``audit.json``, ``audit.md``, ``maps.npz`` and ``audit.png`` into
        ``directory``, all or nothing: the files are written into a temporary folder
        beside it that is then renamed. An existing ``directory`` is an error unless
        ``force`` (then it is replaced).

        Examples
        --------
        >>> a = audit("bundled:toy-mt", "bundled:toy-mt", pairs)    # doctest: +SKIP
        >>> a.save("audit-out")                                     # doctest: +SKIP
        """
        directory = Path(directory)
        if directory.exists() and not force:
            raise FileExistsError(f"{directory} exists; pass force=True to replace it")
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            (tmp / "audit.json").write_text(json.dumps(_jsonable(self.to_dict()), indent=2)
                                            + "\n", encoding="utf-8")
            (tmp / "audit.md").write_text(self.to_markdown() + "\n", encoding="utf-8")
            arrays = {f"a_{k}": m for k, m in enumerate(self.maps_a)}
            arrays.update({f"b_{k}": m for k, m in enumerate(self.maps_b)})
            np.savez_compressed(tmp / "maps.npz", **arrays)
            if figure:
                import matplotlib.pyplot as plt

                fig = self.plot()
                fig.savefig(tmp / "audit.png", dpi=90)
                plt.close(fig)
            old = None
            if directory.exists():
                old = directory.parent / f".{directory.name}.old-{os.getpid()}"
                directory.rename(old)
            tmp.rename(directory)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory) -> "Audit":
        """Read a folder written by :meth:`save`."""
        directory = Path(directory)
        d = json.loads((directory / "audit.json").read_text(encoding="utf-8"))
        maps_a, maps_b = [], []
        npz = directory / "maps.npz"
        if npz.is_file():
            with np.load(npz) as z:
                n = sum(1 for k in z.files if k.startswith("a_"))
                maps_a = [z[f"a_{k}"] for k in range(n)]
                maps_b = [z[f"b_{k}"] for k in range(n)]
        return cls(d["task"], d["examples"], d["aggregate"], maps_a, maps_b, d["settings"])


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return x


# ----------------------------------------------------------------------------- audit


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
    from groundroll.align.api import _bundle

    bundle_a, bundle_b = _bundle(model_a), _bundle(model_b)
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
                    options=_jsonable(options), options_b=_jsonable(options_b), **extra)
    return Audit(task, examples, _aggregate(examples, _METRICS[task]), maps_a, maps_b, settings)


def _pair_words(p):
    if hasattr(p, "src_words"):
        return list(p.src_words), list(p.tgt_words)
    s, t = p
    return (s.split() if isinstance(s, str) else list(s),
            t.split() if isinstance(t, str) else list(t))


def _audit_align(a, b, data, *, top, options, options_b, progress):
    from groundroll.align.api import align
    from groundroll.evaluate import aer

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
    extra = dict(settings_a=_jsonable(res_a[0].settings) if res_a else {},
                 settings_b=_jsonable(res_b[0].settings) if res_b else {})
    return examples, maps_a, maps_b, extra


def _audit_segment(a, b, data, *, prompts, top, options, options_b, progress):
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


# ----------------------------------------------------------------------------- CLI


def register(subparsers) -> None:
    """Add ``groundroll audit`` to a parent parser (sets ``func(args) -> exit status``)."""
    p = subparsers.add_parser(
        "audit", help="compare two models' maps on the same inputs",
        description="Audit where relevance moved between two models (e.g. before and after"
                    " fine-tuning): alignment on the same sentence pairs, or segmentation on"
                    " the same images and prompts. Writes audit.json, audit.md, maps.npz"
                    " and audit.png into --out (all or nothing) and prints the summary.")
    p.add_argument("model_a", help="model spec for groundroll.load (the reference)")
    p.add_argument("model_b", help="model spec compared against model_a")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument("--task", choices=TASKS, default=None,
                   help="default: align for --src/--toy, segment for --images/--scenes")
    data = p.add_argument_group("alignment data")
    data.add_argument("--src", help="source sentences, one per line")
    data.add_argument("--tgt", help="target sentences, one per line (needed with --src)")
    data.add_argument("--toy", type=int, default=None, metavar="N",
                      help="N held-out toy translation pairs")
    data.add_argument("--variant", default="base", help="toy pair variant (base, hard)")
    seg = p.add_argument_group("segmentation data")
    seg.add_argument("--images", nargs="+", default=None, help="image files")
    seg.add_argument("--prompts", nargs="+", default=None, help="prompts for every image")
    seg.add_argument("--scenes", type=int, default=None, metavar="N",
                     help="N held-out synthetic shapes scenes (prompts: their objects)")
    p.add_argument("--method", default=None, help="map method for both models")
    p.add_argument("--top", type=float, default=0.1,
                   help="fraction of each map in the top region for IoU (default 0.1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_cli)


def _cli_fail(message: str, code: int = 2) -> int:
    import sys

    print(f"groundroll audit: error: {message}", file=sys.stderr)
    return code


def _run_cli(args) -> int:
    import sys

    out = Path(args.out)
    if out.exists() and not args.force:
        return _cli_fail(f"{out} exists; pass --force to replace it")
    sources = [x for x in ("src", "toy", "images", "scenes") if getattr(args, x) is not None]
    if len(sources) != 1:
        return _cli_fail("give exactly one input: --src/--tgt, --toy N, --images or --scenes N")
    prompts = None
    try:
        if args.src is not None:
            from groundroll.align.io import read_lines

            if args.tgt is None:
                return _cli_fail("--src needs --tgt: an audit compares both models on the"
                                 " same sentence pairs")
            src, tgt = read_lines(args.src), read_lines(args.tgt)
            if len(src) != len(tgt):
                return _cli_fail(f"{args.src} has {len(src)} lines but {args.tgt} has {len(tgt)}")
            data = list(zip(src, tgt))
        elif args.toy is not None:
            from groundroll.data import toy_translation as toy

            data = toy.pairs(args.toy, split="test", variant=args.variant)
        elif args.images is not None:
            if not args.prompts:
                return _cli_fail("--images needs --prompts")
            data, prompts = [str(x) for x in args.images], list(args.prompts)
        else:
            from groundroll.data import shapes

            data = [shapes.scene(shapes.EVAL_SEED_OFFSET + k) for k in range(args.scenes)]
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return _cli_fail(f"cannot read input: {err}")
    options = {} if args.method is None else {"method": args.method}
    try:
        result = audit(args.model_a, args.model_b, data, task=args.task, prompts=prompts,
                       top=args.top, options=options, progress=not args.quiet)
    except (ValueError, TypeError, FileNotFoundError) as err:
        return _cli_fail(str(err))
    try:
        result.save(out, force=args.force)
    except FileExistsError as err:
        return _cli_fail(str(err))
    except OSError as err:
        return _cli_fail(f"cannot write {out}: {err}; nothing was written", 1)
    print(result.to_markdown())
    print(f"\nwrote {out}/audit.json, audit.md, maps.npz, audit.png", file=sys.stderr)
    return 0


class _CallableModule(type(sys.modules[__name__])):
    """Lets ``groundroll.audit(...)`` call :func:`audit` while ``groundroll.audit`` stays
    the module (as ``groundroll.align`` does)."""

    def __call__(self, *args, **kwargs):
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

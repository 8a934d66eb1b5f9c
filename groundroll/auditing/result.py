"""The result of an audit: per-example and aggregate agreement, with the maps compared."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from groundroll._json import jsonable
from groundroll._markup import markdown_text
from groundroll.auditing.metrics import _HIGHER_IS_AGREEMENT, _METRICS, mass_moved
from groundroll._atomic import OutputSet, check_set
from groundroll.report import NOTEBOOK_MAX_BYTES, audit_report, notebook_frame
from groundroll.viz import figure_png

__all__ = ["Audit"]


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
    def higher_is_agreement(self) -> dict[str, bool]:
        """For each of :attr:`metrics`, whether a higher value means closer agreement."""
        return {m: _HIGHER_IS_AGREEMENT[m] for m in self.metrics}

    def moved_most(self, index: int) -> int:
        """Of a segmentation audit's example ``index``, the prompt whose map moved most
        (largest :func:`~groundroll.auditing.metrics.mass_moved`)."""
        a, b = self.maps_a[index], self.maps_b[index]
        return int(np.argmax([mass_moved(a[p].ravel()[None], b[p].ravel()[None])
                              for p in range(a.shape[0])]))

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
        """Aggregate table and the examples that changed most.

        Sentences, prompts and model names are escaped (:func:`groundroll._markup.markdown_text`):
        HTML in them shows as text when the Markdown is rendered, never as markup."""
        a, s = self.aggregate, self.settings
        model_a = markdown_text(s.get("model_a", "A"))
        model_b = markdown_text(s.get("model_b", "B"))
        lines = [f"Audit ({markdown_text(self.task)}): {model_a} vs {model_b},"
                 f" {a.get('n', len(self.examples))} examples, top {100 * s.get('top', 0.1):g}%",
                 "", "| metric | mean | median |", "|---|---|---|"]
        for m in self.metrics:
            lines.append(f"| {m} | {a[m]:.4f} | {a[m + '_median']:.4f} |")
        lines += ["", "Changed most (lowest Spearman):", "",
                  "| # | example | " + " | ".join(self.metrics) + " |",
                  "|---|---|" + "---|" * len(self.metrics)]
        for e in self.most_changed(n_changed):
            label = markdown_text(e.get("label", ""), limit=60)
            lines.append(f"| {e['index']} | {label} | "
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
                k = self.moved_most(e["index"])
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
        return audit_report(self, title=title)

    #: The files :meth:`save` writes, and the hidden manifest that lists them.
    FILES = ("audit.json", "audit.md", "maps.npz", "audit.png")
    MANIFEST = ".audit.groundroll.json"

    def _repr_html_(self) -> str:
        """The interactive report in a notebook (:func:`groundroll.report.notebook_frame`),
        within :data:`groundroll.report.NOTEBOOK_MAX_BYTES`."""
        return notebook_frame(audit_report(self, max_bytes=NOTEBOOK_MAX_BYTES), height=640)

    def _repr_png_(self) -> bytes:
        """:meth:`plot` as PNG: what a notebook shows where HTML is not rendered."""
        return figure_png(self.plot())

    def save(self, directory, *, force: bool = False, figure: bool = True) -> Path:
        """Write ``audit.json``, ``audit.md``, ``maps.npz`` and ``audit.png`` into
        ``directory`` (created if missing), all or nothing.

        The files are one output set (:class:`groundroll._atomic.OutputSet`): staged in
        a temporary folder inside ``directory`` and moved into place together. Other
        files in ``directory`` are never touched; existing audit files are an error
        unless ``force`` (then the previous audit's files are replaced).

        Raises
        ------
        FileExistsError
            Audit files exist in ``directory`` and ``force`` is false.
        NotADirectoryError
            ``directory`` exists and is not a folder.

        Examples
        --------
        >>> a = audit("bundled:toy-mt", "bundled:toy-mt", pairs)    # doctest: +SKIP
        >>> a.save("audit-out")                                     # doctest: +SKIP
        """
        import io

        directory = Path(directory)
        names = self.FILES if figure else self.FILES[:3]
        check_set(directory, names, self.MANIFEST, force=force)
        with OutputSet(directory, force=force, manifests=[self.MANIFEST]) as out:
            out.add("audit.json", json.dumps(jsonable(self.to_dict(), other=None), indent=2)
                    + "\n", manifest=self.MANIFEST)
            out.add("audit.md", self.to_markdown() + "\n", manifest=self.MANIFEST)
            arrays = {f"a_{k}": m for k, m in enumerate(self.maps_a)}
            arrays.update({f"b_{k}": m for k, m in enumerate(self.maps_b)})
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            out.add("maps.npz", buf.getvalue(), manifest=self.MANIFEST)
            if figure:
                import matplotlib.pyplot as plt

                fig = self.plot()
                buf = io.BytesIO()
                try:
                    fig.savefig(buf, format="png", dpi=90)
                finally:
                    plt.close(fig)
                out.add("audit.png", buf.getvalue(), manifest=self.MANIFEST)
            out.commit()
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

"""Every layer x method x shift scored against gold alignments.

:func:`layer_scan` measures which setting of :func:`~groundroll.alignment.align` works best
on a model (AER, precision, recall); :meth:`LayerScan.save_profile` stores the best one
as the model's alignment profile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from groundroll._markup import markdown_text
from groundroll.alignment.batching import _bundle, _n_decoder_layers, _plain, _words
from groundroll.alignment.extract import extract_links
from groundroll.alignment.io import read_lines, read_talp
from groundroll.alignment.maps import _matrices
from groundroll.alignment.methods import METHODS
from groundroll.alignment.profile_file import AlignProfile
from groundroll.evaluate import aer
from groundroll.viz import plot_layer_scan

__all__ = ["LayerScan", "layer_scan"]


@dataclass
class LayerScan:
    """AER, precision and recall for every method x layer x shift setting.

    Attributes
    ----------
    rows : list of dict
        One dict per setting: ``method``, ``layer`` (int; ``"all"`` for the mean over
        all cross-attention layers of ``raw``/``norm``), ``shift`` (bool),
        ``layers`` (the decoder layers used), ``aer``, ``precision``, ``recall``,
        ``f1``, ``n_pairs``.
    settings : dict
        Extraction, link threshold, symmetrisation, model, number of pairs per method.
    seconds : dict of str to float
        Wall time spent per method (forward passes, composition, aggregation).
    """

    rows: list[dict]
    settings: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    def best(self, metric: str = "aer", *, method: str | None = None) -> dict:
        """The best row (lowest AER; highest precision/recall/F1)."""
        rows = [r for r in self.rows if method is None or r["method"] == method]
        if not rows:
            raise ValueError(f"no rows for method {method!r}")
        sign = 1 if metric == "aer" else -1
        return min(rows, key=lambda r: sign * r[metric])

    def save_profile(self, path, *, metric: str = "aer", method: str | None = None,
                     force: bool = False):
        """Store the best row as the model's alignment profile, which :func:`align`
        then uses by default (see :mod:`groundroll.alignment.profile`).

        ``path``: a file, or the model folder (the file is then ``align_profile.json``
        in it). Returns the :class:`~groundroll.alignment.profile.AlignProfile`.

        Examples
        --------
        >>> scan = layer_scan(toy.pairs(100, split="dev"), model="bundled:toy-mt")  # doctest: +SKIP
        >>> scan.save_profile("path/to/model-folder")                              # doctest: +SKIP
        """
        profile = AlignProfile.from_scan(self, metric=metric, method=method)
        profile.save(path, force=force)
        return profile

    def to_markdown(self, *, baseline: str | None = "raw") -> str:
        """A markdown table, best row in bold; with ``baseline``, that method's AER at
        the same layer and shift sits beside every row."""
        base = {(r["layer"], r["shift"]): r["aer"] for r in self.rows
                if r["method"] == baseline}
        best = self.best()
        head = ["method", "layer", "shift", "AER", "P", "R", "F1"]
        if base:
            head += [f"{markdown_text(baseline)} AER", "Δ AER"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [markdown_text(r["method"]), str(r["layer"]), "AWI" if r["shift"] else "AWO",
                     f"{100 * r['aer']:.1f}", f"{100 * r['precision']:.1f}",
                     f"{100 * r['recall']:.1f}", f"{100 * r['f1']:.1f}"]
            if base:
                b = base.get((r["layer"], r["shift"]))
                cells += ["" if b is None else f"{100 * b:.1f}",
                          "" if b is None or r["method"] == baseline
                          else f"{100 * (r['aer'] - b):+.1f}"]
            if r is best:
                cells = [f"**{c}**" if c else c for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plot(self, *, metric: str = "aer", ax=None, title: str | None = None):
        """Metric per layer, one line per method and shift
        (:func:`groundroll.viz.plot_layer_scan`); the ``"all"`` rows are left out."""
        rows = [dict(r, shift=int(r["shift"])) for r in self.rows
                if isinstance(r["layer"], int)]
        return plot_layer_scan(rows, metric=metric, lower_is_better=metric == "aer",
                               ax=ax, title=title)


def _read_lines(path) -> list[str]:
    return read_lines(path)


def _scan_inputs(pairs, gold):
    """``(src words, tgt words, sure, possible)`` from pairs, files or toy pairs."""
    if isinstance(pairs, tuple) and len(pairs) == 2 and all(
            isinstance(p, (str, Path)) for p in pairs) and Path(pairs[0]).is_file():
        srcs = [line.split() for line in _read_lines(pairs[0])]
        tgts = [line.split() for line in _read_lines(pairs[1])]
        if len(srcs) != len(tgts):
            raise ValueError(f"{pairs[0]} has {len(srcs)} lines but {pairs[1]} has"
                             f" {len(tgts)}")
    else:
        srcs, tgts, own = [], [], []
        for p in pairs:
            if hasattr(p, "src_words"):
                srcs.append(list(p.src_words))
                tgts.append(list(p.tgt_words))
                own.append(set(p.alignment))
            else:
                s, t = p
                srcs.append(_words(s))
                tgts.append(_words(t))
        if gold is None and len(own) == len(srcs) and own:
            return srcs, tgts, own, own
    if gold is None:
        raise ValueError("gold alignments are needed: a talp file, a list of link sets or"
                         " a (sure, possible) tuple")
    if isinstance(gold, (str, Path)):
        sure, possible = read_talp(gold)
    elif isinstance(gold, tuple) and len(gold) == 2:
        sure, possible = list(gold[0]), list(gold[1])
    else:
        sure = [set(g) for g in gold]
        possible = sure
    if len(sure) != len(srcs):
        raise ValueError(f"{len(sure)} gold alignments for {len(srcs)} sentence pairs")
    return srcs, tgts, sure, possible



def layer_scan(
    pairs, gold=None, *, model, methods: Sequence[str] = ("raw", "rollout", "relevance", "norm"),
    shifts: Sequence[bool] = (False, True), extraction: str = "argmax",
    link_threshold: float | None = None, symmetrize: str | None = None, heads=None,
    batch_size: int = 16, max_length: int | None = None, limits: dict | None = None,
    include_mean: bool = True, progress: bool = False,
) -> LayerScan:
    """Score every layer x method x shift against gold alignments.

    For ``raw`` and ``norm``, layer ``l`` is the cross-attention of decoder layer ``l``
    alone (plus, with ``include_mean``, a row ``layer="all"``: the mean over all
    layers, :func:`align`'s default). For ``rollout``, ``relevance`` and ``flow``, layer
    ``l`` means the composition through decoder layers ``0..l`` (the encoder is always
    used in full); the last layer is the whole model.

    Parameters
    ----------
    pairs : sequence of (src, tgt), sequence of toy ``Pair``, or (src_file, tgt_file)
        Sentence pairs; files hold one whitespace-tokenised sentence per line.
    gold : str or path, sequence of link sets, or (sure, possible), optional
        A talp gold file (1-indexed; ``s-t`` sure, ``spt`` possible) or 0-indexed
        ``(s, t)`` sets. Optional when ``pairs`` carry their own ``alignment``.
    model : Bundle or str
    methods : sequence of str
    shifts : sequence of bool
        ``False``: AWO, ``True``: AWI.
    extraction, link_threshold, symmetrize, heads
        As in :func:`align`.
    limits : dict of str to int, optional
        Use only the first ``n`` pairs for a method, e.g. ``{"relevance": 100}`` (one
        backward per target token is expensive).
    include_mean : bool
        Add the all-layer mean rows of ``raw``/``norm``.

    Returns
    -------
    LayerScan
        One row per method x layer x shift with its AER, precision, recall and F1;
        ``best()`` picks a row.

    Examples
    --------
    >>> from groundroll.data import toy_translation as toy
    >>> scan = layer_scan(toy.pairs(50, split="test"), model="bundled:toy-mt",
    ...                   methods=("raw",))                      # doctest: +SKIP
    >>> print(scan.to_markdown())                                # doctest: +SKIP
    """
    bundle = _bundle(model)
    srcs, tgts, sure, possible = _scan_inputs(pairs, gold)
    n_layers = _n_decoder_layers(bundle)
    limits = dict(limits or {})
    rows, seconds = [], {}
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method in ("raw", "norm"):
            layer_specs = [(l, [l]) for l in range(n_layers)]
            if include_mean:
                layer_specs.append(("all", None))
        else:
            layer_specs = [(l, list(range(l + 1))) for l in range(n_layers)]
        specs = [(method, layers, bool(s)) for _, layers in layer_specs for s in shifts]
        labels = [(name, bool(s)) for name, _ in layer_specs for s in shifts]
        n = min(len(srcs), limits.get(method, len(srcs)))
        start = time.perf_counter()
        mats, _, _ = _matrices(bundle, srcs[:n], tgts[:n], specs=specs, heads=heads,
                               head_fusion="mean", residual=0.5, batch_size=batch_size,
                               max_length=max_length, max_relevance_tokens=10**6,
                               relevance_chunk=256, generate_kwargs=None, progress=progress)
        preds_all = [[extract_links(m, extraction=extraction, link_threshold=link_threshold,
                                    symmetrize=symmetrize) for m in per_spec]
                     for per_spec in mats]
        seconds[method] = time.perf_counter() - start
        for (name, shift), (_, layers, _), preds in zip(labels, specs, preds_all):
            score = aer(sure[:n], possible[:n], preds)
            rows.append(dict(method=method, layer=name, shift=shift,
                             layers=None if layers is None else list(layers),
                             aer=score.aer, precision=score.precision, recall=score.recall,
                             f1=score.f1, n_pairs=n))
    settings = dict(model=getattr(bundle, "name", ""), extraction=extraction,
                    link_threshold=link_threshold, symmetrize=symmetrize,
                    heads=_plain(heads),
                    n_pairs={m: min(len(srcs), limits.get(m, len(srcs))) for m in methods})
    return LayerScan(rows, settings, seconds)

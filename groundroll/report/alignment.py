"""Interactive alignment reports: words, links, scores and the matrix in one HTML file.

Two ways in:

* :func:`alignment_report` shows :class:`~groundroll.alignment.Alignment` results as they
  are (one pair or several, one matrix each); the page re-extracts links (argmax,
  threshold, itermax, mutual) from the embedded matrix.
* :func:`groundroll.explore.explore_alignment` runs a model once per variant (method x
  layer x head x shift) and hands every matrix to the same page, which switches between
  them without Python.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from .._json import jsonable
from ..alignment.extract import (DEFAULT_MUTUAL_THRESHOLD, DEFAULT_THRESHOLD, EXTRACTIONS,
                                 extract_links)
from ._page import DEFAULT_MAX_BYTES, asset, escape, page
from groundroll.viz import alignment_html as static_table

__all__ = ["alignment_report", "alignment_variants"]

#: Decimals kept for matrix entries in the page.
DECIMALS = 5


def _label(v: dict) -> str:
    layer = "mean of all layers" if v["layer"] == "all" else (
        f"layer {v['layer']}" if v["method"] in ("raw", "norm")
        else f"through decoder layer {v['layer']}")
    head = "fused heads" if v["head"] == "fused" else f"head {v['head']}"
    return f"{v['method']} · {layer} · {head} · {'AWI (shift)' if v['shift'] else 'AWO'}"


def _variant(method, layer, head, shift) -> dict:
    v = dict(method=str(method), layer=layer, head=head, shift=bool(shift))
    v["label"] = _label(v)
    return v


def _rounded(m) -> list:
    m = np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.round(m, DECIMALS).tolist()


def _budget(pairs: list[dict], variants: list[dict], max_bytes: int) -> tuple[list, list, list]:
    """Keep whole pairs (and, for one huge pair, the first variants) within the budget.

    Returns ``(pairs, variants, notes)``.
    """
    notes = []
    fixed = len(json.dumps(variants)) + 20_000           # script, styles, controls
    sizes = [len(json.dumps(p, separators=(",", ":"))) for p in pairs]
    kept, total = [], fixed
    for p, size in zip(pairs, sizes):
        if kept and total + size > max_bytes:
            break
        kept.append(p)
        total += size
    if len(kept) < len(pairs):
        notes.append(f"Showing the first {len(kept)} of {len(pairs)} sentence pairs: the"
                     f" report is kept under {max_bytes / 1e6:.1f} MB. Make several reports"
                     " from slices of the input, or raise max_bytes.")
    if total > max_bytes and len(variants) > 1:
        # One pair alone is too large: keep as many variants as fit.
        per_variant = max(1, (total - fixed) // len(variants))
        n = int(max(1, (max_bytes - fixed) // per_variant))
        if n < len(variants):
            variants = variants[:n]
            kept = [dict(p, matrices=p["matrices"][:n]) for p in kept]
            notes.append(f"Showing {n} of the computed variants: the sentences are too long"
                         f" for all of them within {max_bytes / 1e6:.1f} MB.")
    return kept, variants, notes


def _html(pairs, variants, *, initial: int, extraction: str, link_threshold, title: str,
          settings: dict, max_bytes: int, notes: Sequence[str] = ()) -> str:
    if extraction not in EXTRACTIONS:
        raise ValueError(f"extraction must be one of {EXTRACTIONS}, got {extraction!r}")
    # Each extraction with a cut-off keeps its own in the page; the one given applies to
    # the extraction the page opens on.
    thresholds = {"threshold": DEFAULT_THRESHOLD, "mutual": DEFAULT_MUTUAL_THRESHOLD}
    if link_threshold is not None and extraction in thresholds:
        thresholds[extraction] = float(link_threshold)
    if not pairs:
        raise ValueError("nothing to show: no sentence pairs")
    n_input = len(pairs)
    pairs, variants, budget_notes = _budget(pairs, variants, max_bytes)
    initial = initial if initial < len(variants) else 0
    data = dict(pairs=pairs, variants=variants, initial=initial, extraction=extraction,
                thresholds=thresholds, threshold=thresholds.get(extraction),
                settings=settings)
    first = pairs[0]
    m = np.asarray(first["matrices"][initial], dtype=np.float64).reshape(
        len(first["tgt"]), len(first["src"]))
    fallback = "" if not 0 < m.size <= 2500 else ("<noscript><p>Without JavaScript: the first pair, "
                f"{escape(variants[initial]['label'])}.</p>"
                + static_table(m, first["src"], first["tgt"],
                               extract_links(m, extraction=extraction,
                                             link_threshold=link_threshold))
                .replace(":/", "&#58;/") + "</noscript>")
    while True:
        doc = page(title=title, kind="alignment", data=data, script=asset("alignment.js"),
                   body=fallback, notes=list(notes) + budget_notes)
        if len(doc.encode("utf-8")) <= max_bytes or len(data["pairs"]) == 1:
            return doc
        # the estimate was short: drop pairs until the page fits
        keep = max(1, int(len(data["pairs"]) * 0.8))
        data["pairs"] = data["pairs"][:keep]
        budget_notes = [n for n in budget_notes if not n.startswith("Showing the first")]
        budget_notes.insert(0, f"Showing the first {keep} of {n_input} sentence pairs: the"
                               f" report is kept under {max_bytes / 1e6:.1f} MB. Make several"
                               " reports from slices of the input, or raise max_bytes.")


def alignment_report(alignments, *, title: str | None = None, extraction: str | None = None,
                     link_threshold: float | None = None,
                     max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """A self-contained interactive HTML page for one or more alignments.

    Hovering or clicking a word highlights its links and lists its scores; the page
    switches between the links view and the matrix view, re-extracts links
    (argmax, threshold, itermax, mutual) from the matrix, and exports Pharaoh lines.
    For several methods, layers and heads on one page see :func:`explore_alignment`.

    Parameters
    ----------
    alignments : Alignment or sequence of Alignment
        One result of :func:`groundroll.align` or a list of them (one page entry per
        sentence pair).
    title : str, optional
    extraction : {"argmax", "threshold", "itermax", "mutual"}, optional
        Initial extraction (default: the first alignment's own).
    link_threshold : float, optional
        Initial limit for ``"threshold"`` (default: the alignment's, else 0.3).
    max_bytes : int
        Size limit of the page; pairs beyond it are left out with a note.

    Returns
    -------
    str
        The page as one HTML document (words, matrices and script inline), for
        :func:`~groundroll.report.write_report`.

    Examples
    --------
    >>> import numpy as np
    >>> from groundroll.alignment import Alignment
    >>> a = Alignment(["das", "Haus"], ["the", "house"], np.eye(2), {(0, 0), (1, 1)})
    >>> html = alignment_report(a)
    >>> "http://" in html, "Haus" in html
    (False, True)
    """
    single = hasattr(alignments, "matrix")
    items = [alignments] if single else list(alignments)
    if not items:
        raise ValueError("alignment_report needs at least one Alignment")
    first = items[0].settings or {}
    v = _variant(first.get("method", "given"),
                 "all" if first.get("layers") is None else _layers_label(first.get("layers")),
                 "fused" if first.get("heads") is None else _layers_label(first.get("heads")),
                 bool(first.get("shift", False)))
    pairs = []
    for a in items:
        pairs.append(dict(src=list(map(str, a.src_words)), tgt=list(map(str, a.tgt_words)),
                          matrices=[_rounded(a.matrix)]))
    extraction = extraction or first.get("extraction") or "argmax"
    if link_threshold is None:
        link_threshold = first.get("link_threshold")
    notes = []
    if first.get("symmetrize"):
        notes.append(f"The alignment was symmetrized ({first['symmetrize']}); this page"
                     " extracts links from the target-to-source matrix alone.")
    if first.get("reverse_model"):
        notes.append(f"The alignment's links also used a reverse model"
                     f" ({first['reverse_model']}); this page extracts links from the"
                     " target-to-source matrix alone.")
    return _html(pairs, [v], initial=0, extraction=extraction, link_threshold=link_threshold,
                 title=title or "Word alignment", settings=jsonable(first, other=str),
                 max_bytes=max_bytes, notes=notes)


def _layers_label(x):
    if isinstance(x, (list, tuple)):
        return x[0] if len(x) == 1 else ",".join(str(i) for i in x)
    return x


def alignment_variants(*, n_layers: int, n_heads: int,
                       methods: Sequence[str] = ("raw", "norm", "rollout"),
                       shifts: Sequence[bool] = (False, True), per_layer: bool = True,
                       per_head: bool = True) -> list[dict]:
    """The variants :func:`explore_alignment` computes, as dicts ``method``, ``layer``
    (``"all"`` or an int), ``head`` (``"fused"`` or an int), ``shift``, ``label``.

    ``raw`` and ``norm`` get the mean over all layers and each layer alone, with fused
    heads and (``per_head``) each head alone. ``rollout``, ``relevance`` and ``flow``
    compose through decoder layers ``0..l`` for each ``l`` (``"all"`` is the whole
    model), heads fused.

    Examples
    --------
    >>> len(alignment_variants(n_layers=2, n_heads=2, methods=("raw",), shifts=(False,)))
    9
    """
    out = []
    for method in methods:
        if method in ("raw", "norm"):
            layers = ["all"] + (list(range(n_layers)) if per_layer else [])
            heads = ["fused"] + (list(range(n_heads)) if per_head else [])
        else:
            layers = ["all"] + (list(range(n_layers - 1)) if per_layer else [])
            heads = ["fused"]
        for layer in layers:
            for head in heads:
                for shift in shifts:
                    out.append(_variant(method, layer, head, shift))
    return out

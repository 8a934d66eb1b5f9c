"""Audit reports: where two models' maps agree and where relevance moved.

:func:`audit_report` shows a :class:`groundroll.auditing.Audit`: the aggregate metrics,
a sortable table of every example, and for the examples that changed most the maps of
model A, model B and their difference as pictures.
"""

from __future__ import annotations

import numpy as np

from .._json import jsonable
from ._page import DEFAULT_MAX_BYTES, asset, page, png_data_uri

__all__ = ["audit_report"]

#: Pictures are embedded for at most this many examples (the most changed first).
MAX_PICTURES = 20


def _picture(m: np.ndarray, *, lo: float, hi: float, cmap: str, size: int = 160) -> str:
    from matplotlib import colormaps
    from PIL import Image

    m = np.nan_to_num(np.asarray(m, dtype=np.float64))
    v = np.clip((m - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(m)
    rgb = np.round(colormaps[cmap](v)[..., :3] * 255).astype(np.uint8)
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    hw = (max(1, round(h * scale)), max(1, round(w * scale)))
    im = Image.fromarray(rgb).resize((hw[1], hw[0]), Image.NEAREST if scale > 1 else
                                     Image.BILINEAR)
    return png_data_uri(np.asarray(im))


def _maps(audit, index: int):
    a, b = np.asarray(audit.maps_a[index], float), np.asarray(audit.maps_b[index], float)
    what = ""
    if audit.task == "segment" and a.ndim == 3:
        k = audit.moved_most(index)
        a, b, what = a[k], b[k], f"prompt {k} (moved most)"
    return a, b, what


def audit_report(audit, *, title: str | None = None, by: str = "spearman",
                 max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """A self-contained HTML page for a model audit.

    Parameters
    ----------
    audit : groundroll.auditing.Audit
    title : str, optional
    by : str
        Metric the examples are first sorted by (and that picks the examples whose
        maps are embedded: the most changed first).
    max_bytes : int
        Size limit: fewer examples get pictures when the page would be larger (a note
        says how many).

    Returns
    -------
    str
        The page as one HTML document (metrics, the table of examples and their
        pictures inline), for :func:`~groundroll.report.write_report`.

    Examples
    --------
    >>> a = gr.audit("bundled:toy-mt", "bundled:toy-mt", pairs)      # doctest: +SKIP
    >>> html = audit_report(a)                                       # doctest: +SKIP
    """
    s = audit.settings or {}
    model_a, model_b = str(s.get("model_a", "A")), str(s.get("model_b", "B"))
    changed = [e["index"] for e in audit.most_changed(len(audit.examples), by=by)]
    with_maps = [i for i in changed if i < len(audit.maps_a)][:MAX_PICTURES]
    pictures = {}
    for i in with_maps:
        a, b, what = _maps(audit, i)
        hi = max(float(a.max(initial=0)), float(b.max(initial=0)), 1e-12)
        pictures[str(i)] = dict(
            a=_picture(a, lo=0, hi=hi, cmap="viridis"), b=_picture(b, lo=0, hi=hi, cmap="viridis"),
            diff=_picture(b - a, lo=-hi, hi=hi, cmap="RdBu_r"), what=what)
    agg = audit.aggregate
    data = dict(metrics=list(audit.metrics), aggregate=jsonable(agg, other=str),
                higher=audit.higher_is_agreement,
                examples=jsonable(audit.examples, other=str), pictures=pictures, sort=by,
                first=with_maps[0] if with_maps else None, model_a=model_a, model_b=model_b,
                settings=jsonable(s, other=str),
                summary=f"{audit.task} audit: {model_a} (A) against {model_b} (B) on"
                        f" {agg.get('n', len(audit.examples))} examples.")
    notes = []
    while True:
        doc = page(title=title or f"Audit: {model_a} vs {model_b}", kind="audit", data=data,
                   script=asset("audit.js"), notes=notes)
        if len(doc.encode("utf-8")) <= max_bytes or not data["pictures"]:
            return doc
        keep = list(data["pictures"])[: len(data["pictures"]) // 2]
        data["pictures"] = {k: data["pictures"][k] for k in keep}
        notes = [f"Maps are embedded for the {len(keep)} most changed examples only (size"
                 f" limit {max_bytes / 1e6:.1f} MB)."]

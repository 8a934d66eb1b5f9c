"""Pictures of maps and alignments.

Image functions are numpy only and return uint8 ``[H, W, 3]`` arrays. Plotting
functions build :class:`matplotlib.figure.Figure` objects with the Agg canvas
and never touch pyplot's global state; pass ``ax=`` to draw into your own axes.

Conventions: images are uint8 ``[H, W, 3]`` (or float in [0, 1], grey or RGBA
accepted); label maps int ``[H, W]`` with 0 = background; alignment matrices
``[T, S]`` (target rows, source columns); links ``(s, t)`` pairs.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "alignment_html",
    "figure_png",
    "heatmap_overlay",
    "overlay",
    "plot_alignment",
    "plot_layer_scan",
]


def _rgb_uint8(image) -> np.ndarray:
    """RGB uint8 from an array or PIL image (:func:`groundroll.load_image` rules)."""
    # scipy (through masks): loaded on first use, not by import groundroll.viz or report
    from ._images import _to_rgb

    return _to_rgb(image, max_pixels=None)


def _blend(base: np.ndarray, colour: np.ndarray, weight: np.ndarray) -> np.ndarray:
    out = base.astype(np.float32) * (1 - weight) + colour.astype(np.float32) * weight
    return np.round(np.clip(out, 0, 255)).astype(np.uint8)


def overlay(image, label_map, *, palette=None, alpha: float = 0.5) -> np.ndarray:
    """Colour the labelled pixels of an image.

    Parameters
    ----------
    image : array_like, shape [H, W, 3] (uint8, or float in [0, 1])
    label_map : array_like of int, shape [H, W]
        0 = background (left as is), ``k`` > 0 coloured with ``palette[k]``.
    palette : array_like of uint8, shape [n, 3], optional
        Colours by label; :func:`groundroll.masks.palette` by default.
    alpha : float, optional
        Opacity of the colour, in [0, 1].

    Returns
    -------
    ndarray of uint8, shape [H, W, 3]

    Examples
    --------
    >>> out = overlay(np.zeros((2, 2, 3), np.uint8), np.array([[0, 1], [0, 0]]), alpha=1.0)
    >>> out[0, 1].tolist(), out[0, 0].tolist()
    ([128, 0, 0], [0, 0, 0])
    """
    # scipy (through masks): loaded on first use, not by import groundroll.viz or report
    from groundroll.masks import palette as default_palette

    rgb = _rgb_uint8(image)
    labels = np.asarray(label_map)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"label map {labels.shape} does not match the image {rgb.shape[:2]}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative")
    n = int(labels.max()) + 1 if labels.size else 1
    colours = default_palette(n) if palette is None else np.asarray(palette, dtype=np.uint8)
    if colours.shape[0] < n:
        raise ValueError(f"palette has {colours.shape[0]} colours, labels go up to {n - 1}")
    weight = ((labels > 0) * float(alpha))[..., None]
    return _blend(rgb, colours[labels], weight)


def heatmap_overlay(
    image, heatmap, *, cmap: str = "jet", alpha: float = 0.5, vmin: float | None = None, vmax: float | None = None
) -> np.ndarray:
    """Blend a colour-mapped heatmap over an image.

    Parameters
    ----------
    image : array_like, shape [H, W, 3] (uint8, or float in [0, 1])
    heatmap : array_like of float, shape [H, W]
        Same size as the image (resize with :func:`groundroll.masks.resize_maps`).
    cmap : str, optional
        Matplotlib colour map name.
    alpha : float, optional
        Opacity of the heatmap.
    vmin, vmax : float, optional
        Values mapped to the two ends of the colour map; the heatmap's own
        minimum and maximum by default.

    Returns
    -------
    ndarray of uint8, shape [H, W, 3]

    Examples
    --------
    >>> heatmap_overlay(np.zeros((4, 5, 3), np.uint8), np.random.rand(4, 5)).shape
    (4, 5, 3)
    """
    import matplotlib

    rgb = _rgb_uint8(image)
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.shape != rgb.shape[:2]:
        raise ValueError(
            f"heatmap {heat.shape} does not match the image {rgb.shape[:2]}; resize it first"
        )
    lo = np.nanmin(heat) if vmin is None else vmin
    hi = np.nanmax(heat) if vmax is None else vmax
    scaled = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    colours = matplotlib.colormaps[cmap](np.clip(np.nan_to_num(scaled), 0, 1))[..., :3]
    return _blend(rgb, colours * 255.0, np.full(heat.shape + (1,), float(alpha)))


def _new_axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def figure_png(fig, *, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib figure (Agg), drawn whatever the active backend.

    A figure that pyplot manages is closed afterwards, so that a notebook's inline
    backend does not show it a second time.

    Examples
    --------
    >>> fig = plot_alignment(np.eye(2), ["a", "b"], ["x", "y"])
    >>> figure_png(fig)[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    import io
    import sys

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)
    return buf.getvalue()


def _split_gold(gold):
    if gold is None:
        return set(), set()
    if isinstance(gold, tuple) and len(gold) == 2 and all(isinstance(g, (set, frozenset)) for g in gold):
        sure, possible = set(gold[0]), set(gold[1])
        return sure, possible - sure
    return set(gold), set()


def plot_alignment(
    matrix,
    src_words: Sequence[str],
    tgt_words: Sequence[str],
    *,
    links: Iterable[tuple[int, int]] | None = None,
    gold=None,
    ax=None,
    cmap: str = "Greys",
    title: str | None = None,
):
    """Draw a target x source score matrix with predicted and gold links.

    Parameters
    ----------
    matrix : array_like, shape [T, S]
        Rows are target words (y axis), columns source words (x axis).
    src_words, tgt_words : sequence of str
        ``S`` and ``T`` labels.
    links : iterable of (s, t), optional
        Predicted links, drawn as red dots.
    gold : set of (s, t) or (sure, possible) tuple of sets, optional
        Gold links: sure drawn as blue squares, possible-only as dashed squares.
    ax : matplotlib Axes, optional
        Draw here instead of a new figure.
    cmap : str, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        The figure of ``ax``, or a new one (not registered with pyplot).
        ``ax``'s figure when ``ax`` is given, else a new one (no pyplot state).

    Examples
    --------
    >>> fig = plot_alignment(np.eye(2), ["a", "b"], ["x", "y"], links={(0, 0)})
    >>> type(fig).__name__
    'Figure'
    """
    m = np.asarray(matrix, dtype=np.float64)
    T, S = m.shape
    if len(src_words) != S or len(tgt_words) != T:
        raise ValueError(
            f"matrix is [T={T}, S={S}] but got {len(tgt_words)} target and {len(src_words)} source words"
        )
    fig, ax = _new_axes(ax, (max(3.0, 0.45 * S + 1.5), max(3.0, 0.45 * T + 1.2)))
    ax.imshow(m, cmap=cmap, aspect="equal", interpolation="nearest")
    ax.set_xticks(range(S), labels=list(src_words), rotation=60, ha="right")
    ax.set_yticks(range(T), labels=list(tgt_words))
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    sure, possible = _split_gold(gold)
    for points, style in ((sure, "-"), (possible, "--")):
        for s, t in points:
            ax.add_patch(
                _rectangle((s - 0.45, t - 0.45), 0.9, 0.9, fill=False, edgecolor="tab:blue", linestyle=style, linewidth=1.5)
            )
    if links:
        pts = np.array(sorted(links), dtype=float).reshape(-1, 2)
        ax.scatter(pts[:, 0], pts[:, 1], s=25, c="tab:red", marker="o", zorder=3, label="predicted")
    ax.set_xlim(-0.5, S - 0.5)
    ax.set_ylim(T - 0.5, -0.5)
    if title:
        ax.set_title(title)
    return fig


def _rectangle(*args, **kwargs):
    from matplotlib.patches import Rectangle

    return Rectangle(*args, **kwargs)


def alignment_html(
    matrix, src_words: Sequence[str], tgt_words: Sequence[str], links: Iterable[tuple[int, int]] | None = None
) -> str:
    """A self-contained HTML table of a target x source matrix.

    Cells are shaded by value relative to the matrix maximum; linked cells
    ``(s, t)`` get a bullet and a red border. Words are HTML-escaped.

    Parameters
    ----------
    matrix : array_like, shape [T, S]
    src_words, tgt_words : sequence of str
    links : iterable of (s, t), optional

    Returns
    -------
    str

    Examples
    --------
    >>> "&lt;b&gt;" in alignment_html([[1.0]], ["<b>"], ["x"])
    True
    """
    m = np.asarray(matrix, dtype=np.float64)
    T, S = m.shape
    if len(src_words) != S or len(tgt_words) != T:
        raise ValueError(
            f"matrix is [T={T}, S={S}] but got {len(tgt_words)} target and {len(src_words)} source words"
        )
    top = np.nanmax(m) if m.size and np.nanmax(m) > 0 else 1.0
    linked = set(links or ())
    esc = html.escape
    rows = [
        '<table class="groundroll-alignment" style="border-collapse:collapse;font-family:sans-serif;font-size:12px">',
        "<tr><th></th>"
        + "".join(
            f'<th style="writing-mode:vertical-rl;padding:2px">{esc(str(w))}</th>' for w in src_words
        )
        + "</tr>",
    ]
    for t in range(T):
        cells = []
        for s in range(S):
            v = m[t, s]
            shade = float(np.clip(v / top, 0, 1)) if np.isfinite(v) else 0.0
            border = "2px solid #d62728" if (s, t) in linked else "1px solid #ddd"
            mark = "&#9679;" if (s, t) in linked else ""
            colour = "#fff" if shade > 0.6 else "#000"
            cells.append(
                f'<td title="{v:.3g}" style="width:18px;height:18px;text-align:center;'
                f"background:rgba(31,119,180,{shade:.3f});border:{border};color:{colour}\">{mark}</td>"
            )
        rows.append(f'<tr><th style="text-align:right;padding:2px">{esc(str(tgt_words[t]))}</th>{"".join(cells)}</tr>')
    rows.append("</table>")
    return "\n".join(rows)


def _records(table) -> list[Mapping[str, Any]]:
    if hasattr(table, "to_dict"):  # pandas DataFrame
        return list(table.to_dict("records"))
    return [dict(r) for r in table]


def plot_layer_scan(
    table,
    *,
    metric: str = "aer",
    layer: str = "layer",
    method: str = "method",
    shift: str | None = "shift",
    lower_is_better: bool = True,
    ax=None,
    title: str | None = None,
):
    """Plot a metric per layer, one line per method (and shift).

    Parameters
    ----------
    table : iterable of mapping, or pandas.DataFrame
        Rows with keys ``layer`` (int), ``method`` (str), optionally ``shift``
        (e.g. 0 for AWO, 1 for AWI) and ``metric`` (float).
    metric, layer, method, shift : str, optional
        Column names; ``shift=None`` ignores shifts.
    lower_is_better : bool, optional
        Which extreme to mark as the best point (AER: lower).
    ax : matplotlib Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> rows = [{"layer": l, "method": "cross", "shift": 0, "aer": 0.5 - 0.1 * l} for l in range(3)]
    >>> type(plot_layer_scan(rows)).__name__
    'Figure'
    """
    records = _records(table)
    if not records:
        raise ValueError("empty table")
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for r in records:
        key = (r[method],) + ((r[shift],) if shift is not None and shift in r else ())
        groups.setdefault(key, []).append((float(r[layer]), float(r[metric])))
    fig, ax = _new_axes(ax, (6.0, 3.5))
    best = None
    for key, points in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        points.sort()
        xs, ys = zip(*points)
        label = key[0] if len(key) == 1 else f"{key[0]} ({shift}={key[1]})"
        ax.plot(xs, ys, marker="o", markersize=3, label=str(label))
        for x, y in points:
            if np.isfinite(y) and (
                best is None or (y < best[1] if lower_is_better else y > best[1])
            ):
                best = (x, y, label)
    if best is not None:
        ax.scatter([best[0]], [best[1]], s=120, facecolors="none", edgecolors="k", zorder=4)
        ax.annotate(f"best {best[1]:.3f}", (best[0], best[1]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel(layer)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig

"""``groundroll app``: a local web app for segmentation and word alignment (Gradio).

Upload an image, type prompts, pick a model and a method: the page shows the masks, the
heatmaps, the scores and the interactive segmentation report. Type a sentence pair (or
only a source sentence, to translate it first): the page shows the alignment explorer.
The bundled models are offered by default (``--segment-model``/``--align-model`` offer
others); only the offered specs are accepted, unless ``--any-model`` lets a user on this
machine type any ``groundroll.zoo.load`` spec.

The app binds to 127.0.0.1 unless told otherwise; an address other machines can reach
needs ``--allow-remote`` (and then says what it exposes; ``--any-model`` is refused).
It limits the upload size, turns Gradio's usage analytics off and uses system fonts
only. Gradio is imported only when the app is built (``pip install "groundroll[app]"``).

    groundroll app                      # http://127.0.0.1:7860
    groundroll app --port 8000 --max-upload-mb 5
"""

from __future__ import annotations

import functools
import html
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ._command import add_command
from groundroll import masks as M
from groundroll._images import load_image
from groundroll.report import segmentation_report
from groundroll.report.segmentation import _resize, _shrink_hw
from groundroll.viz import heatmap_overlay
from groundroll.zoo import cached

__all__ = ["build_app", "serve", "register", "segment_view", "align_view",
           "SEGMENT_MODELS", "ALIGN_MODELS", "DEFAULT_HOST", "DEFAULT_PORT",
           "DEFAULT_MAX_UPLOAD_MB"]

SEGMENT_MODELS = ("bundled:shapes-clip", "bundled:shapes-clip-short", "bundled:shapes-coca")
ALIGN_MODELS = ("bundled:toy-mt",)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 10.0
#: Longest image side used for segmentation in the app (larger uploads are downscaled).
MAX_SIDE = 1024
#: Most prompts and most words per sentence the app accepts.
MAX_PROMPTS = 20
MAX_WORDS = 100


class InputError(ValueError):
    """A problem with what was typed or uploaded; shown in the page as it is."""


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as err:
        raise ImportError("the app needs Gradio: pip install 'groundroll[app]'") from err
    return gradio


def _prompts(text: str | None) -> list[str]:
    """Prompts from a text box: one per line, or separated by commas."""
    parts = re.split(r"[\n,;]", text or "")
    prompts = [p.strip() for p in parts if p.strip()]
    if not prompts:
        raise InputError("No prompt given: type at least one text prompt, e.g. 'red circle'.")
    if len(prompts) > MAX_PROMPTS:
        raise InputError(f"{len(prompts)} prompts given; the app takes at most {MAX_PROMPTS}.")
    return prompts


def _image(path, max_upload_mb: float) -> np.ndarray:
    if path is None or (isinstance(path, str) and not path):
        raise InputError("No image: upload an image file (PNG, JPEG, ...).")
    if isinstance(path, (str, os.PathLike)):
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        if size > max_upload_mb * 1e6:
            raise InputError(f"The image is {size / 1e6:.1f} MB; the limit is"
                             f" {max_upload_mb:g} MB.")
    from PIL import Image

    try:
        rgb = load_image(path)
    except (ValueError, FileNotFoundError) as err:
        raise InputError(f"Cannot read the image: {err}") from None
    except Image.DecompressionBombError as err:
        raise InputError(f"The image has too many pixels: {err}") from None
    # The app works at MAX_SIDE: masks, heatmaps and the page stay light.
    return _resize(rgb, _shrink_hw(rgb.shape[:2], MAX_SIDE))


def _model(spec: str, allowed: Sequence[str] | None = None):
    """The loaded model ``spec``; with ``allowed``, only one of those specs (a served
    app never opens a path or fetches a model a client typed)."""
    spec = (spec or "").strip()
    if not spec:
        raise InputError("No model chosen.")
    if allowed is not None and spec not in allowed:
        raise InputError("This server offers only the models in the list:"
                         f" {', '.join(allowed)}.")
    try:
        return cached(spec)
    except Exception as err:  # any loader failure is the user's to read, in the page
        raise InputError(f"The model {spec!r} failed to load: {type(err).__name__}: {err}")\
            from None


def _iframe(document: str, height: int) -> str:
    return (f'<iframe class="gr-app-report" title="report" sandbox="allow-scripts'
            f' allow-downloads" style="width:100%;height:{height}px;border:1px solid #ddd;'
            f'border-radius:6px" srcdoc="{html.escape(document, quote=True)}"></iframe>')


def _error(message: str) -> str:
    return f'<div class="gr-app-error" role="alert"><b>Error:</b> {html.escape(message)}</div>'


def segment_view(image, prompts_text: str, model: str, method: str = "relevance",
                 mask_threshold: float = 0.0, *,
                 max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                 allowed: Sequence[str] | None = None):
    """What the Segment tab shows for its inputs.

    Parameters
    ----------
    image : str, PathLike, PIL.Image, ndarray or None
        The uploaded image.
    prompts_text : str
        Prompts, one per line or comma-separated.
    model : str
        Model spec for :func:`groundroll.zoo.load`.
    method : str
        Map source of :func:`groundroll.segment`.
    mask_threshold : float
        Probability below which a pixel is background (``mask_threshold`` of
        :func:`groundroll.segment`); 0: every pixel gets a prompt.
    max_upload_mb : float
        Largest image accepted.
    allowed : sequence of str, optional
        The only model specs accepted (what a served app offers); None: any spec.

    Returns
    -------
    (annotated, heatmaps, report_html, message)
        ``annotated``: ``(image, [(mask, prompt), ...])`` for ``gr.AnnotatedImage``;
        ``heatmaps``: ``[(overlay, prompt), ...]``; ``report_html``: the interactive
        report in an iframe; ``message``: a status line, or an error for bad input
        (then the other outputs are empty).

    Examples
    --------
    >>> segment_view(None, "red circle", "bundled:shapes-clip-short")[3][:37]
    '<div class="gr-app-error" role="alert'
    """
    # torch: the model code loads with the first segmentation, not with the app's parser
    from groundroll.grounding import segment

    try:
        prompts = _prompts(prompts_text)
        rgb = _image(image, max_upload_mb)
        bundle = _model(model, allowed)
        try:
            seg = segment(rgb, prompts, model=bundle, method=method,
                          mask_threshold=float(mask_threshold) or None, max_side=MAX_SIDE)
        except ValueError as err:
            raise InputError(str(err)) from None
    except InputError as err:
        return None, [], "", _error(str(err))
    shown = seg.image if seg.image is not None else rgb
    annotated = (shown, [(m.astype(np.float32), p) for m, p in zip(seg.masks, seg.prompts)])
    heatmaps = [(heatmap_overlay(shown, h, cmap="turbo", alpha=0.55), p)
                for h, p in zip(seg.heatmaps, seg.prompts)]
    rows = "".join(f"<tr><td>{html.escape(p)}</td><td>{s:.3f}</td><td>{a}</td></tr>"
                   for p, s, a in zip(seg.prompts, seg.scores, seg.areas))
    message = ('<div class="gr-app-ok"><table><tr><th>prompt</th><th>score</th>'
               f'<th>mask pixels</th></tr>{rows}</table></div>')
    return annotated, heatmaps, _iframe(segmentation_report(seg), 640), message


def align_view(source: str, target: str, model: str, methods: Sequence[str] = ("raw", "norm",
               "rollout"), *, allowed: Sequence[str] | None = None):
    """What the Align tab shows: ``(explorer_html, pharaoh, message)``.

    An empty target translates the source first. Bad input gives an error message and
    empty outputs. With ``allowed``, a model spec not in it is such an error.

    Examples
    --------
    >>> align_view("", "", "bundled:toy-mt")[2][:37]
    '<div class="gr-app-error" role="alert'
    """
    # torch: the model code loads with the first alignment, not with the app's parser
    from groundroll.alignment.api import align
    # torch, as align: the page's pipeline runs the model
    from groundroll.explore.pages import explore_alignment

    try:
        src = (source or "").split()
        tgt = (target or "").split()
        if not src:
            raise InputError("No source sentence: type one (words separated by spaces).")
        if len(src) > MAX_WORDS or len(tgt) > MAX_WORDS:
            raise InputError(f"Sentences of at most {MAX_WORDS} words, please.")
        bundle = _model(model, allowed)
        try:
            first = align(" ".join(src), " ".join(tgt) if tgt else None, model=bundle)
            report = explore_alignment(" ".join(src), " ".join(first.tgt_words), model=bundle,
                                       methods=tuple(methods) or ("raw",))
        except (ValueError, TypeError, KeyError) as err:
            raise InputError(f"Cannot align with {model!r}: {err}") from None
    except InputError as err:
        return "", "", _error(str(err))
    note = "translated: " + " ".join(first.tgt_words) if not tgt else "aligned"
    return (_iframe(report, 560), first.pharaoh(),
            f'<div class="gr-app-ok">{html.escape(note)}</div>')


def build_app(*, segment_models: Sequence[str] = SEGMENT_MODELS,
              align_models: Sequence[str] = ALIGN_MODELS,
              max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, any_model: bool = False):
    """The Gradio ``Blocks`` of the app (not launched; see :func:`serve`).

    Parameters
    ----------
    segment_models, align_models : sequence of str
        Model specs offered in the drop-downs: the only ones the app accepts.
    max_upload_mb : float
        Largest image accepted, in MB.
    any_model : bool
        Let users type any :func:`groundroll.zoo.load` spec (a local path, a hub model).
        Off by default: a typed spec makes this machine open that path or download
        that model. For a trusted user on this machine only.

    Returns
    -------
    gradio.Blocks

    Examples
    --------
    >>> demo = build_app()                                   # doctest: +SKIP
    >>> demo.launch(server_name="127.0.0.1")                 # doctest: +SKIP
    """
    gr = _gradio()
    # torch: the map sources load with the app itself, not with its parser
    from groundroll.grounding import METHODS

    if not segment_models or not align_models:
        raise ValueError("segment_models and align_models must each name a model")
    with gr.Blocks(title="groundroll", analytics_enabled=False) as demo:
        gr.Markdown("## groundroll\nText-prompted segmentation and word alignment from the"
                    " attention of the models, computed on this machine.")
        with gr.Tab("Segment"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(type="filepath", label="image", elem_id="gr-app-image",
                                     sources=["upload", "clipboard"], height=300)
                    prompts = gr.Textbox(label="prompts (one per line or comma-separated)",
                                         value="", lines=3, elem_id="gr-app-prompts",
                                         placeholder="red circle\nblue star")
                    model = gr.Dropdown(list(segment_models), value=segment_models[0],
                                        allow_custom_value=any_model, label="model",
                                        elem_id="gr-app-seg-model")
                    method = gr.Dropdown(list(METHODS), value="relevance", label="method",
                                         elem_id="gr-app-method")
                    mask_threshold = gr.Slider(
                        0.0, 1.0, value=0.6, step=0.05,
                        label="mask threshold (0: every pixel gets a prompt)")
                    run = gr.Button("Segment", variant="primary", elem_id="gr-app-segment")
                with gr.Column(scale=2):
                    status = gr.HTML(elem_id="gr-app-seg-status")
                    masks = gr.AnnotatedImage(label="masks", elem_id="gr-app-masks",
                                              height=360)
                    heat = gr.Gallery(label="heatmaps", elem_id="gr-app-heatmaps",
                                      columns=4, height=220)
            report = gr.HTML(elem_id="gr-app-seg-report")

            def on_segment(img, text, spec, how, limit):
                annotated, heatmaps, report, message = segment_view(
                    img, text, spec, how, limit, max_upload_mb=max_upload_mb,
                    allowed=None if any_model else list(segment_models))
                if annotated is None:
                    return None, heatmaps, report, message
                # the library's label colours, as in the report and the saved overlays
                colours = M.palette(len(annotated[1]) + 1)
                color_map = {label: "#" + "".join(f"{int(c):02x}" for c in colours[k + 1])
                             for k, (_, label) in enumerate(annotated[1])}
                return (gr.update(value=annotated, color_map=color_map), heatmaps, report,
                        message)

            run.click(on_segment, [image, prompts, model, method, mask_threshold],
                      [masks, heat, report, status])
        with gr.Tab("Align"):
            with gr.Row():
                source = gr.Textbox(label="source sentence", value="su tuga vefin",
                                    elem_id="gr-app-source")
                target = gr.Textbox(label="target sentence (empty: translate)", value="",
                                    elem_id="gr-app-target")
            with gr.Row():
                amodel = gr.Dropdown(list(align_models), value=align_models[0],
                                     allow_custom_value=any_model, label="model",
                                     elem_id="gr-app-align-model")
                go = gr.Button("Align", variant="primary", elem_id="gr-app-align")
            astatus = gr.HTML(elem_id="gr-app-align-status")
            pharaoh = gr.Textbox(label="Pharaoh (raw, all layers, argmax)",
                                 elem_id="gr-app-pharaoh")
            explorer = gr.HTML(elem_id="gr-app-explorer")
            go.click(functools.partial(
                align_view, allowed=None if any_model else list(align_models)),
                [source, target, amodel], [explorer, pharaoh, astatus])
    return demo


def _theme(gr):
    fonts = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=fonts, font_mono=["ui-monospace", "monospace"])


def serve(*, host: str = DEFAULT_HOST, port: int | None = DEFAULT_PORT,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, block: bool = True, quiet: bool = False,
          **build_options):
    """Build and launch the app.

    Parameters
    ----------
    host : str
        Address to bind (default 127.0.0.1: this machine only).
    port : int, optional
        Port (None: Gradio picks a free one from 7860 up).
    max_upload_mb : float
        Upload size limit, enforced by the server and again by the handlers.
    block : bool
        Keep serving until interrupted. With False, return the running app at once;
        stop it with ``app.close()``.
    quiet : bool
        Don't print the address.
    build_options
        Passed to :func:`build_app` (``segment_models``, ``align_models``,
        ``any_model``).

    Returns
    -------
    gradio.Blocks
        The running app (``app.local_url`` is its address).
    """
    gr = _gradio()
    if max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb must be positive, got {max_upload_mb}")
    demo = build_app(max_upload_mb=max_upload_mb, **build_options)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                prevent_thread_lock=not block, max_file_size=int(max_upload_mb * 1e6),
                quiet=quiet, ssr_mode=False, mcp_server=False, theme=_theme(gr),
                show_error=True, enable_monitoring=False)
    return demo


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` serves this machine only (a loopback address, or a
    name that resolves to loopback addresses only).

    Examples
    --------
    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback
                                   for a in addresses)


def register(subparsers) -> None:
    """Add ``app`` to a ``groundroll`` parser."""
    p = add_command(subparsers, "app", _run,
                    help="local web app: segmentation and alignment explorers (needs gradio)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to bind (default: %(default)s, this machine only; any"
                        " other address needs --allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host that other machines can reach (0.0.0.0, a LAN"
                        " address): anyone who reaches it can run the offered models")
    p.add_argument("--any-model", action="store_true",
                   help="let users type any model spec (local paths, hub downloads);"
                        " refused with a remote --host")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help="port (default: %(default)s)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help="largest upload in MB (default: %(default)s)")
    p.add_argument("--segment-model", dest="segment_models", action="append", default=None,
                   metavar="SPEC", help="segmentation model offered (repeatable; default:"
                                        " the bundled CLIPs and CoCa)")
    p.add_argument("--align-model", dest="align_models", action="append", default=None,
                   metavar="SPEC", help="translation model offered (repeatable; default:"
                                        " bundled:toy-mt)")


def _run(args) -> int:
    """Serve the groundroll web app (Gradio) on this machine. It binds to 127.0.0.1 unless
    --host says otherwise."""
    if not 0 < args.port < 65536:
        print(f"groundroll app: error: --port must be in 1..65535, got {args.port}",
              file=sys.stderr)
        return 2
    if args.max_upload_mb <= 0:
        print("groundroll app: error: --max-upload-mb must be positive", file=sys.stderr)
        return 2
    try:
        _gradio()
    except ImportError as err:
        print(f"groundroll app: error: {err}", file=sys.stderr)
        return 1
    remote = not is_loopback(args.host)
    if remote and not args.allow_remote:
        print(f"groundroll app: error: --host {args.host} is reachable from other machines;"
              " pass --allow-remote to serve there (or keep the default 127.0.0.1)",
              file=sys.stderr)
        return 2
    if remote and args.any_model:
        print("groundroll app: error: --any-model lets a client open any path or download"
              " any model on this machine; it is refused with a remote --host",
              file=sys.stderr)
        return 2
    options = {"any_model": bool(args.any_model)}
    if args.segment_models:
        options["segment_models"] = args.segment_models
    if args.align_models:
        options["align_models"] = args.align_models
    if remote:
        offered = ", ".join([*(args.segment_models or SEGMENT_MODELS),
                             *(args.align_models or ALIGN_MODELS)])
        print(f"groundroll app: serving on {args.host}:{args.port} to other machines: anyone"
              f" who reaches this address can upload images up to {args.max_upload_mb:g} MB"
              f" and run these models on this machine: {offered}. No login, no TLS.",
              file=sys.stderr)
    try:
        serve(host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, **options)
    except OSError as err:
        print(f"groundroll app: error: cannot serve on {args.host}:{args.port}: {err}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0

"""``groundroll report``: write an interactive HTML report from the command line.

    groundroll report align "su tuga vefin" --model bundled:toy-mt --out align.html
    groundroll report align --src src.txt --tgt tgt.txt --out align.html
    groundroll report align --load alignment.json --out align.html
    groundroll report segment scene.png -p "red circle" -p "blue star" --out seg.html
    groundroll report audit audit-out/ --out audit.html

Every check happens before anything is written; the file is written atomically and an
existing one is replaced only with ``--force``. Exit status: 0 success, 2 bad input or
an existing output without ``--force``, 1 other failures (a model that fails to load).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from groundroll._atomic import check_directory, check_writable
from groundroll._command import EXIT_ERROR, EXIT_OK, add_command, load_or_fail
from groundroll._command import CommandError as _Failure
from groundroll.alignment.io import read_lines
from groundroll.alignment.result import Alignment
from groundroll.auditing import Audit
from groundroll.report import DEFAULT_MAX_BYTES, alignment_report, audit_report, write_report
from groundroll.zoo import cached

__all__ = ["register"]



def _size(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in MB, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the size must be positive, got {text!r}")
    return int(value * 1e6)


def _kind(kinds, name: str, run, *, help: str):
    """The parser of ``groundroll report NAME``, which calls ``run(args)`` (described by
    its docstring, as every ``groundroll`` command is); the output options come in a group
    of their own."""

    p = add_command(kinds, name, _guard(run), help=help)
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, type=Path, metavar="FILE.html",
                     help="output HTML file")
    out.add_argument("--title", default=None, help="page title")
    out.add_argument("--max-mb", dest="max_bytes", type=_size, default=DEFAULT_MAX_BYTES,
                     help="size limit of the page in MB; larger inputs are downscaled or"
                          " paged with a note (default: %(default)s bytes)")
    out.add_argument("--force", action="store_true", help="overwrite an existing output")
    return p


def register(subparsers) -> None:
    """Add ``report`` (with ``align``, ``segment`` and ``audit``) to a ``groundroll`` parser."""
    # torch: grounding loads the model code; only the report command's parser needs it
    from groundroll.grounding import DEFAULT_MODEL
    # torch, as above
    from groundroll.grounding.profiles import REFINE

    report = subparsers.add_parser(
        "report", help="write an interactive, self-contained HTML report",
        description="Write an interactive HTML report (one file, no network, data"
                    " inline) for a word alignment, a segmentation or a model audit.")
    kinds = report.add_subparsers(dest="report_kind", metavar="KIND")
    kinds.required = True

    a = _kind(kinds, "align", _run_align, help="alignment explorer for sentence pairs")
    a.add_argument("sentence", nargs="?", help="a source sentence (or use --src)")
    a.add_argument("target", nargs="?", help="its target sentence (default: translate)")
    a.add_argument("--src", type=Path, help="source sentences, one per line")
    a.add_argument("--tgt", type=Path, help="target sentences, one per line")
    a.add_argument("--load", type=Path, metavar="ALIGNMENT.json",
                   help="show an alignment saved with Alignment.save instead of running"
                        " a model")
    a.add_argument("--model", default="bundled:toy-mt",
                   help="model spec for groundroll.zoo.load (default: %(default)s)")
    a.add_argument("--methods", default="raw,norm,rollout",
                   help="comma-separated methods to compute (default: %(default)s)")
    a.add_argument("--extraction", choices=("argmax", "threshold", "itermax", "mutual"),
                   default=None, help="initial extraction (default: the model's)")

    s = _kind(kinds, "segment", _run_segment, help="segmentation explorer for one image")
    s.add_argument("image", type=Path, help="image file")
    s.add_argument("-p", "--prompt", dest="prompts", action="append", default=[],
                   metavar="PROMPT", help="a text prompt (repeat for several)")
    s.add_argument("--model", default=DEFAULT_MODEL,
                   help="model spec for groundroll.zoo.load (default: %(default)s)")
    s.add_argument("--method", default=None,
                   help="map source (default: the model profile's, else relevance)")
    s.add_argument("--mask-threshold", type=float, default=None,
                   help="probability below which a pixel is background")
    s.add_argument("--refine", choices=REFINE, default=None,
                   help="refinement (default: the model profile's)")
    s.add_argument("--layer-prompt", type=int, default=0, metavar="K",
                   help="prompt index whose per-layer maps are shown (-1: none)")

    d = _kind(kinds, "audit", _run_audit, help="audit report from a folder written by Audit.save")
    d.add_argument("folder", type=Path, help="folder written by Audit.save")
    d.add_argument("--by", default="spearman",
                   help="metric that orders the examples (default: %(default)s)")


def _check_out(args) -> None:
    if args.out.suffix.lower() not in (".html", ".htm"):
        raise _Failure(f"--out {args.out} should end in .html")
    try:
        check_writable([args.out], force=args.force)
        check_directory(args.out.parent)            # a read-only folder, before any work
    except (OSError, ValueError) as err:
        raise _Failure(str(err)) from None


def _lines(path: Path) -> list[str]:
    try:
        return read_lines(path)
    except (OSError, UnicodeDecodeError) as err:
        raise _Failure(f"cannot read {path}: {err}") from None


def _write(args, html: str) -> int:

    try:
        write_report(html, args.out, force=args.force)
    except FileExistsError as err:
        raise _Failure(str(err)) from None
    except OSError as err:                      # a full disk, a folder made read-only
        raise _Failure(f"cannot write {args.out}: {err.strerror or err}; nothing was"
                       " written", EXIT_ERROR) from None
    print(f"wrote {args.out} ({len(html.encode('utf-8')) / 1e6:.2f} MB)", file=sys.stderr)
    return EXIT_OK


def _run_align(args) -> int:
    """Align sentence pairs under every method, layer, head and shift and write the alignment
    explorer."""
    # torch: the page's pipeline runs the model; loaded when the command runs
    from groundroll.explore.pages import explore_alignment

    _check_out(args)
    if args.load is not None:
        if args.sentence or args.src:
            raise _Failure("--load shows a saved alignment; give no sentence or --src")
        try:
            loaded = Alignment.load(args.load)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise _Failure(f"cannot read alignment {args.load}: {err}") from None
        return _write(args, alignment_report(loaded, title=args.title,
                                             max_bytes=args.max_bytes))
    if args.sentence and args.src:
        raise _Failure("give a sentence or --src, not both")
    if args.sentence:
        if args.tgt:
            raise _Failure("--tgt goes with --src; give the target sentence after the source")
        srcs = [args.sentence]
        tgts = None if args.target is None else [args.target]
    elif args.src:
        srcs = _lines(args.src)
        tgts = None if args.tgt is None else _lines(args.tgt)
        if tgts is not None and len(tgts) != len(srcs):
            raise _Failure(f"{args.src} has {len(srcs)} lines but {args.tgt} has {len(tgts)}")
    else:
        raise _Failure("give a source sentence, --src FILE or --load FILE")
    if not any(s.split() for s in srcs):
        raise _Failure("the source is empty")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    # torch: the alignment methods load the model code; loaded when the command runs
    from groundroll.alignment.api import METHODS

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise _Failure(f"--methods takes names from {', '.join(METHODS)}; got {args.methods!r}")
    bundle = load_or_fail(cached, args.model)
    try:
        html = explore_alignment(srcs, tgts, model=bundle, methods=methods,
                                 extraction=args.extraction, title=args.title,
                                 max_bytes=args.max_bytes, progress=True)
    except ValueError as err:
        raise _Failure(str(err)) from None
    return _write(args, html)


def _run_segment(args) -> int:
    """Segment an image with text prompts and write the segmentation explorer (masks, heatmaps,
    per-layer maps of one prompt)."""
    # torch: grounding loads the model code; loaded when the command runs
    from groundroll.grounding import load_image, resolve_model
    # torch: the page's pipeline runs the model; loaded when the command runs
    from groundroll.explore.pages import explore_segmentation

    _check_out(args)
    if not args.prompts:
        raise _Failure("no prompts given (use -p PROMPT)")
    if args.mask_threshold is not None and not 0.0 <= args.mask_threshold <= 1.0:
        raise _Failure(f"--mask-threshold must be in [0, 1], got {args.mask_threshold}")
    if not -1 <= args.layer_prompt < len(args.prompts):
        raise _Failure(f"--layer-prompt must be -1 or a prompt index below"
                       f" {len(args.prompts)}, got {args.layer_prompt}")
    try:
        image = load_image(args.image)
    except (FileNotFoundError, ValueError) as err:
        raise _Failure(str(err)) from None
    handle = load_or_fail(resolve_model, args.model)
    try:
        html = explore_segmentation(
            image, args.prompts, model=handle, method=args.method,
            mask_threshold=args.mask_threshold, refine=args.refine,
            layer_prompt=None if args.layer_prompt < 0 else args.layer_prompt,
            title=args.title, max_bytes=args.max_bytes)
    except ValueError as err:
        raise _Failure(str(err)) from None
    return _write(args, html)


def _run_audit(args) -> int:
    """Write the audit report (aggregate metrics, sortable examples, maps of the most changed
    examples) of an audit saved with Audit.save."""

    _check_out(args)
    if not (args.folder / "audit.json").is_file():
        raise _Failure(f"{args.folder} holds no audit.json (write one with Audit.save)")
    try:
        result = Audit.load(args.folder)
        html = audit_report(result, title=args.title, by=args.by, max_bytes=args.max_bytes)
    except (OSError, ValueError, KeyError) as err:
        raise _Failure(f"cannot read the audit in {args.folder}: {err}") from None
    return _write(args, html)


def _guard(run):
    """``run(args)`` with errors printed on stderr and returned as the exit status."""
    @functools.wraps(run)
    def guarded(args) -> int:
        try:
            return run(args)
        except _Failure as err:
            print(f"groundroll report {args.report_kind}: error: {err}", file=sys.stderr)
            return err.code
    return guarded

"""The ``groundroll`` command: ``segment``, ``align`` and ``aer`` subcommands.

Thin: arguments are parsed here and handed to the library. ``align`` and ``aer``
come from :mod:`groundroll.align.cli` (its ``register(subparsers)``), imported only
when the parser is built and only if it is installed.

    groundroll segment scene.png -p "red circle" -p "blue star" --out results/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_ERROR = 1
#: Bad arguments or inputs, or outputs that exist without ``--force``.
EXIT_USAGE = 2


class _Failure(Exception):
    """An error to report on stderr with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- segment


def _add_segment(subparsers) -> None:
    from .grounding import METHODS, REFINE

    p = subparsers.add_parser(
        "segment", help="segment images with text prompts",
        description="Segment images with text prompts. Per image writes <stem>_labels.png"
                    " (palette PNG), <stem>_<k>_<prompt>.png (one mask per prompt),"
                    " <stem>_overlay.png and <stem>.json into --out.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("-p", "--prompt", dest="prompts", action="append", default=[],
                   metavar="PROMPT", help="a text prompt (repeat for several)")
    p.add_argument("--model", default="bundled:shapes-clip",
                   help="model spec for groundroll.zoo.load (default: %(default)s)")
    p.add_argument("--method", default="relevance", choices=METHODS,
                   help="map source (default: %(default)s)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="output directory (created if missing)")
    p.add_argument("--background", action="append", default=[], metavar="TEXT",
                   help="background prompt mapped to label 0 (repeatable)")
    p.add_argument("--threshold", type=float, default=None,
                   help="probability below which a pixel is background")
    p.add_argument("--refine", choices=REFINE, default="none",
                   help="refinement before the argmax (default: %(default)s)")
    p.add_argument("--template", dest="templates", action="append", default=None,
                   metavar="TEMPLATE", help="prompt template with one {} (repeatable)")
    p.add_argument("--min-size", type=int, default=0,
                   help="remove components smaller than this many pixels")
    p.add_argument("--fill-holes", action="store_true", help="fill holes in each label")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=_run_segment)


def _run_segment(args) -> int:
    from tqdm.auto import tqdm

    from .grounding import load_image, output_paths, resolve_model, segment
    from .grounding.segment import _check_prompts
    from ._atomic import check_writable

    try:
        prompts = _check_prompts(args.prompts)
        background = _check_prompts(args.background, "background prompts")
    except ValueError as err:
        raise _Failure(f"{err} (use -p PROMPT)") from None
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise _Failure(f"--threshold must be in [0, 1], got {args.threshold}")
    images = [Path(i) for i in args.images]
    # Everything is checked before anything is written.
    for path in images:
        try:
            load_image(path)
        except (FileNotFoundError, ValueError) as err:
            raise _Failure(str(err)) from None
    out = args.out
    if out.exists() and not out.is_dir():
        raise _Failure(f"--out {out} exists and is not a directory")
    planned = [output_paths(out, prompts, stem=path.stem) for path in images]
    files = [p for paths in planned for p in paths.values()]
    if len({p.name for p in files}) != len(files):
        raise _Failure("two images share a file name stem; their outputs would collide")
    try:
        if out.is_dir():
            check_writable(files, force=args.force)
    except (FileExistsError, IsADirectoryError) as err:
        raise _Failure(str(err)) from None
    try:
        handle = resolve_model(args.model)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as err:
        raise _Failure(f"cannot load model {args.model!r}: {err}", EXIT_ERROR) from None

    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(images, desc="segment", unit="image", disable=None, file=sys.stderr)
    for path in bar:
        seg = segment(path, prompts, model=handle, method=args.method,
                      background=background or None, threshold=args.threshold,
                      refine=args.refine, templates=args.templates,
                      min_size=args.min_size, fill_holes=args.fill_holes)
        seg.save(out, stem=path.stem, force=args.force)
    print(f"wrote {sum(len(p) for p in planned)} files for {len(images)} image(s) to {out}",
          file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- align


def _add_align(subparsers) -> None:
    try:
        from .align import cli as align_cli
        register = align_cli.register
    except (ImportError, AttributeError) as err:
        reason = f"{type(err).__name__}: {err}"
        for name in ("align", "aer"):
            p = subparsers.add_parser(name, help=f"({name} is unavailable: {reason})",
                                      add_help=False)
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=_unavailable(name, reason))
        return
    register(subparsers)


def _unavailable(name: str, reason: str):
    def run(args) -> int:
        raise _Failure(f"'groundroll {name}' is unavailable in this installation"
                       f" ({reason})", EXIT_ERROR)
    return run


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groundroll",
        description="Attention rollout on stock open_clip / Hugging Face models:"
                    " text-prompted segmentation and word alignment.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_segment(subparsers)
    _add_align(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 bad input or
    existing outputs without ``--force``, 1 other failures)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        code = args.func(args)
    except _Failure as err:
        print(f"groundroll {args.command}: error: {err}", file=sys.stderr)
        return err.code
    return EXIT_OK if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())

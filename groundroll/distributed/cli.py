"""Command-line options of the bulk engines, shared by ``groundroll segment`` and
``groundroll align``: ``--engine``, ``--workers``, ``--resume`` and friends.

The subcommands add these options with :func:`add_engine_options` and hand over to
:func:`run_segment` / :func:`run_align` when ``--engine ray`` or ``--resume`` is given;
``--engine local`` without ``--resume`` keeps each subcommand's own one-process path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .._atomic import OutputPathError
from ._state import SettingsMismatchError
from .align import align_corpus
from .segment import segment_dataset

__all__ = ["add_engine_options", "wants_engine", "run_segment", "run_align"]


def _positive(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}"
                                         ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_engine_options(parser, *, task: str) -> None:
    """Add ``--engine``, ``--workers``, ``--resume``, ``--shard-size`` and
    ``--ray-address`` (and, for ``segment``, ``--batch-size`` and ``--rle-parquet``)."""
    unit = "images" if task == "segment" else "lines"
    g = parser.add_argument_group(
        "bulk runs", "run on a Ray cluster and/or resumably (groundroll.distributed)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: a pool of Ray Data workers,"
                        " each loading the model once")
    g.add_argument("--workers", type=_positive, default=1, metavar="N",
                   help="Ray workers (one model each; a GPU each where the cluster has"
                        " GPUs)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: shards recorded as done are skipped;"
                        " refused if the output was made with other settings")
    g.add_argument("--shard-size", type=_positive, default=64 if task == "segment" else 256,
                   metavar="N", help=f"{unit} per shard, the unit of resumption"
                                     " (default: %(default)s)")
    g.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    if task == "segment":
        g.add_argument("--batch-size", type=_positive, default=8, metavar="N",
                       help="images per worker call (default: %(default)s)")
        g.add_argument("--rle-parquet", action="store_true",
                       help="also write masks.parquet (one row per mask, COCO RLE)")


def wants_engine(args) -> bool:
    """Whether the arguments ask for the bulk engines rather than the plain path."""
    return getattr(args, "engine", "local") != "local" or getattr(args, "resume", False) \
        or getattr(args, "workers", 1) != 1 or getattr(args, "rle_parquet", False)


def _images_argument(images: list) -> object:
    if len(images) == 1:
        path = Path(images[0])
        if path.is_dir() or path.suffix.lower() in (".json", ".jsonl", ".parquet", ".pq"):
            return path
    return [Path(p) for p in images]


def _report(result, what: str) -> None:
    parts = [f"{result.processed} {what}(s) processed"]
    if result.skipped:
        parts.append(f"{result.skipped} skipped as already done")
    if result.failed:
        parts.append(f"{result.failed} failed (reasons in {result.failures_file})")
    print(f"{', '.join(parts)}; {result.total} in all, {result.seconds:.1f} s",
          file=sys.stderr)


def _errors():
    usage = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
             SettingsMismatchError, OutputPathError, ValueError, TypeError)
    return usage


def run_segment(args, prompts, background, failure) -> int:
    """``groundroll segment`` through :func:`segment_dataset`; ``failure(message, code)``
    builds the subcommand's error."""
    try:
        result = segment_dataset(
            _images_argument(args.images), prompts, model=args.model, method=args.method,
            out=args.out, background=background or None, mask_threshold=args.mask_threshold,
            refine=args.refine, templates=args.templates, min_size=args.min_size,
            fill_holes=args.fill_holes, max_side=getattr(args, "max_side", 1024),
            options={k: getattr(args, k) for k in (
                "background_rule", "profile", "max_pixels") if getattr(args, k, None)
                is not None},
            engine=args.engine, workers=args.workers, batch_size=args.batch_size,
            shard_size=args.shard_size, resume=args.resume, force=args.force,
            rle_parquet=args.rle_parquet, address=args.ray_address)
    except _errors() as err:
        raise failure(f"{err}; nothing was processed", 2) from None
    except (ImportError, RuntimeError, OSError) as err:
        raise failure(f"{type(err).__name__}: {err}" + _resume_hint(), 1) from None
    _report(result, "image")
    print(f"outputs in {result.out}; annotations of every image in"
          f" {result.files['coco']}", file=sys.stderr)
    return 0


def _resume_hint() -> str:
    return "; completed shards are kept: run again with --resume to continue"


def run_align(args, fail) -> int:
    """``groundroll align`` through :func:`align_corpus`; ``fail(message)`` reports an
    error and returns the exit code."""
    try:
        result = align_corpus(
            args.src, args.tgt, model=args.model, out=args.out,
            translation=getattr(args, "out_translation", None), method=args.method,
            layers=args.layers, heads=args.heads, shift=args.shift,
            extraction=args.extraction, link_threshold=args.link_threshold,
            symmetrize=args.symmetrize, reverse_model=args.reverse_model,
            max_length=args.max_length, engine=args.engine, workers=args.workers,
            batch_size=args.batch_size, shard_size=args.shard_size, resume=args.resume,
            force=args.force, address=args.ray_address, progress=not args.quiet)
    except _errors() as err:
        return fail(str(err))
    except (ImportError, RuntimeError, OSError) as err:
        return fail(f"{type(err).__name__}: {err}" + _resume_hint(), 1)
    _report(result, "line")
    print(f"wrote {result.total} alignment line(s) to {os.fspath(result.out)}",
          file=sys.stderr)
    return 0

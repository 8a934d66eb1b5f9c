"""``groundroll audit``: a thin wrapper of :func:`~groundroll.auditing.audit`.

``register(subparsers)`` adds the subcommand to a parent parser (it sets
``func(args) -> int``, the exit status: 0 on success, 2 on bad input, 1 when the output
cannot be written).
"""

from __future__ import annotations

from pathlib import Path

from groundroll._command import add_command
from groundroll.auditing.compare import audit
from groundroll.auditing.metrics import TASKS
from groundroll._atomic import check_set
from groundroll.alignment.io import read_lines
from groundroll.auditing.result import Audit
from groundroll.data import shapes
from groundroll.data import toy_translation as toy

__all__ = ["register"]


def register(subparsers) -> None:
    """Add ``groundroll audit`` to a parent parser (sets ``func(args) -> exit status``)."""
    p = add_command(subparsers, "audit", _run_cli,
                    help="compare two models' maps on the same inputs")
    p.add_argument("model_a", help="model spec for groundroll.load (the reference)")
    p.add_argument("model_b", help="model spec compared against model_a")
    p.add_argument("--out", required=True,
                   help="output folder (created if missing; other files in it are kept)")
    p.add_argument("--force", action="store_true",
                   help="replace the audit files of an earlier audit in --out")
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


def _cli_fail(message: str, code: int = 2) -> int:
    import sys

    print(f"groundroll audit: error: {message}", file=sys.stderr)
    return code


def _run_cli(args) -> int:
    """Audit where relevance moved between two models (e.g. before and after fine-tuning):
    alignment on the same sentence pairs, or segmentation on the same images and prompts.
    Writes audit.json, audit.md, maps.npz and audit.png into --out (all or nothing) and prints
    the summary."""
    import sys

    out = Path(args.out)
    try:
        # Before any model runs: a plain file at --out, an unwritable folder, or audit
        # files that exist without --force.
        check_set(out, Audit.FILES, Audit.MANIFEST, force=args.force)
    except (OSError, ValueError) as err:
        return _cli_fail(str(err))
    sources = [x for x in ("src", "toy", "images", "scenes") if getattr(args, x) is not None]
    if len(sources) != 1:
        return _cli_fail("give exactly one input: --src/--tgt, --toy N, --images or --scenes N")
    prompts = None
    try:
        if args.src is not None:
            if args.tgt is None:
                return _cli_fail("--src needs --tgt: an audit compares both models on the"
                                 " same sentence pairs")
            src, tgt = read_lines(args.src), read_lines(args.tgt)
            if len(src) != len(tgt):
                return _cli_fail(f"{args.src} has {len(src)} lines but {args.tgt} has {len(tgt)}")
            data = list(zip(src, tgt))
        elif args.toy is not None:
            data = toy.pairs(args.toy, split="test", variant=args.variant)
        elif args.images is not None:
            if not args.prompts:
                return _cli_fail("--images needs --prompts")
            data, prompts = [str(x) for x in args.images], list(args.prompts)
        else:
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
        reason = err.strerror or str(err)
        return _cli_fail(f"cannot write {out}: {reason}; nothing was written", 1)
    print(result.to_markdown())
    print(f"\nwrote {out}/audit.json, audit.md, maps.npz, audit.png", file=sys.stderr)
    return 0

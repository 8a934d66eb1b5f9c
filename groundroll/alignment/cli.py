"""``groundroll align`` and ``groundroll aer``: thin wrappers of :func:`~groundroll.alignment.align`
and :func:`~groundroll.evaluate.aer`.

``register(subparsers)`` adds both subcommands to a parent parser (each sets
``func(args) -> int``, the exit status); :func:`main` builds a parser of its own.

Exit status (as for every ``groundroll`` command): 0 on success, 2 on bad input
(unreadable or mismatched files, bad options, an existing output without ``--force``).
Nothing is written on an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from groundroll._command import add_command
from groundroll._atomic import OutputSet, check_directory, check_writable
from groundroll._options import OptionError, check_align_options
from groundroll.alignment.extract import EXTRACTIONS, SYMMETRIZATIONS
from groundroll.alignment.io import format_pharaoh, read_lines, read_pharaoh, read_talp
from groundroll.evaluate import aer

__all__ = ["register", "main"]

DEFAULT_MODEL = "bundled:toy-mt"


def _int_list(text: str):
    if text in ("all", ""):
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers or 'all', got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _add_align(subparsers) -> None:
    # torch: the method registry loads the model code; only this command's parser needs it
    from groundroll.alignment.methods import METHODS

    p = add_command(subparsers, "align", _run_align,
                    help="word-align sentence pairs with a translation model")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model spec for groundroll.zoo.load (default {DEFAULT_MODEL})")
    p.add_argument("--src", required=True, help="source sentences, one per line")
    p.add_argument("--tgt", help="target sentences, one per line (default: translate)")
    p.add_argument("--out", required=True, help="output Pharaoh file")
    p.add_argument("--out-translation", default=None, metavar="FILE",
                   help="without --tgt: file for the translations the links index, one"
                        " per line (default: --out with '.translation' before its"
                        " suffix, e.g. pred.txt -> pred.translation.txt)")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="default: the model's alignment profile, else raw cross-attention"
                        " of the most peaked layer")
    p.add_argument("--layers", type=_int_list, default=None,
                   help="comma-separated layer indices or 'all' (default: the profile's;"
                        " all when --method is given)")
    p.add_argument("--heads", type=_int_list, default=None,
                   help="comma-separated head indices or 'all' (default: all)")
    shift = p.add_mutually_exclusive_group()
    shift.add_argument("--shift", dest="shift", action="store_true", default=None,
                       help="read a word at the row where it is the decoder input (AWI)")
    shift.add_argument("--no-shift", dest="shift", action="store_false",
                       help="read a word at the row that predicts it (AWO)")
    p.add_argument("--extraction", choices=EXTRACTIONS, default=None,
                   help="default: the profile's, else argmax")
    p.add_argument("--link-threshold", type=float, default=None,
                   help="exclusive lower limit for --extraction threshold (row-normalised"
                        " scores) or mutual (geometric mean of both directions)")
    p.add_argument("--symmetrize", choices=SYMMETRIZATIONS, default=None,
                   help="combine both directions' links with this heuristic")
    p.add_argument("--reverse-model", default=None,
                   help="target-to-source model for the backward direction")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=None,
                   help="token limit per sentence (default: the model's)")
    p.add_argument("--force", action="store_true",
                   help="replace --out (and the translation file) if they exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # torch: the bulk engine's module, loaded only when this command's parser is built
    from groundroll.distributed.cli import add_engine_options

    add_engine_options(p, task="align")


def _add_aer(subparsers) -> None:
    p = add_command(subparsers, "aer", _run_aer,
                    help="alignment error rate of predicted links against gold")
    p.add_argument("--gold", required=True,
                   help="gold alignments: talp (1-indexed, 's-t' sure, 'spt' possible)")
    p.add_argument("--pred", required=True, help="predicted Pharaoh file (0-indexed)")
    p.add_argument("--gold-format", choices=("talp", "pharaoh"), default="talp")


def register(subparsers) -> None:
    """Add the ``align`` and ``aer`` subcommands to ``parser.add_subparsers()``."""
    _add_align(subparsers)
    _add_aer(subparsers)


def _fail(message: str, code: int = 2) -> int:
    print(f"groundroll: error: {message}", file=sys.stderr)
    return code


def _read(path: str) -> list[str]:
    return read_lines(path)


def _run_align(args) -> int:
    """Word-align sentence pairs (one whitespace-tokenised sentence per line) from a
    translation model's attention; writes one Pharaoh line (0-indexed 's-t' links) per input
    line. Without --tgt the model translates first and the translations (the words the target
    indices refer to) go to a second file (--out-translation). The files are written as one
    set: all or nothing."""
    # torch: the bulk engine and the model code load when the command runs, not before
    from groundroll.distributed.cli import run_align, wants_engine

    if wants_engine(args):  # --engine ray / --resume: sharded, resumable runs
        return run_align(args, _fail)

    try:
        src = _read(args.src)
        tgt = None if args.tgt is None else _read(args.tgt)
    except (OSError, UnicodeDecodeError) as err:
        return _fail(f"cannot read input: {err}")
    if tgt is not None and len(tgt) != len(src):
        return _fail(f"{args.src} has {len(src)} lines but {args.tgt} has {len(tgt)};"
                     " source and target files must have one sentence per line each")
    try:
        check_align_options(link_threshold=args.link_threshold, max_length=args.max_length,
                            batch_size=args.batch_size)
    except OptionError as err:
        return _fail(err.as_flag())
    outputs = _outputs(args)
    try:
        check_directory(Path(args.out).parent)
        check_writable(outputs, force=args.force)
    except FileExistsError as err:
        return _fail(str(err))
    except (OSError, ValueError) as err:
        return _fail(str(err))

    # torch: the model code loads when the command runs, not with the parser
    from groundroll.alignment.api import align

    try:
        result = align(src, tgt, model=args.model, method=args.method, layers=args.layers,
                       heads=args.heads, shift=args.shift, extraction=args.extraction,
                       link_threshold=args.link_threshold, symmetrize=args.symmetrize,
                       reverse_model=args.reverse_model, batch_size=args.batch_size,
                       max_length=args.max_length, progress=not args.quiet)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        return _fail(str(err))
    try:
        _write_outputs(args, outputs, result)
    except FileExistsError as err:
        return _fail(f"{err}; nothing was written")
    except OSError as err:
        return _fail(f"cannot write {args.out}: {err.strerror or err}; nothing was written"
                     " and earlier outputs are unchanged", 1)
    shown = " and ".join(str(p) for p in outputs)
    print(f"wrote {len(result)} alignment line(s) to {shown}", file=sys.stderr)
    return 0


def _outputs(args) -> list:
    """``[pharaoh file]``, plus the translation file when translating (no ``--tgt``)."""
    out = Path(args.out)
    if args.tgt is not None:
        return [out]
    if args.out_translation is not None:
        return [out, Path(args.out_translation)]
    return [out, out.with_name(f"{out.stem}.translation{out.suffix or '.txt'}")]


def _write_outputs(args, outputs: list, result) -> None:
    """Both files as one set (:class:`groundroll._atomic.OutputSet`) per folder."""
    texts = ["".join(format_pharaoh(a.links) + "\n" for a in result)]
    if len(outputs) > 1:
        texts.append("".join(" ".join(a.tgt_words) + "\n" for a in result))
    folders = {}
    for path, text in zip(outputs, texts):
        folders.setdefault(path.parent, []).append((path.name, text))
    sets = []
    try:
        for folder, files in folders.items():
            manifest = f".{outputs[0].name}.groundroll.json"
            output = OutputSet(folder, force=args.force, manifests=[manifest])
            output.open()
            sets.append(output)
            for name, text in files:
                output.add(name, text, manifest=manifest)
        for output in sets:
            output.commit()
    finally:
        for output in sets:
            if not output.committed:
                output.discard()


def _run_aer(args) -> int:
    """Corpus AER, precision, recall and F1 of a Pharaoh prediction file (0-indexed) against a
    gold file."""
    try:
        if args.gold_format == "talp":
            sure, possible = read_talp(args.gold)
        else:
            sure = read_pharaoh(args.gold)
            possible = sure
        pred = read_pharaoh(args.pred)
    except (OSError, ValueError) as err:
        return _fail(str(err))
    if len(pred) != len(sure):
        return _fail(f"{args.gold} has {len(sure)} lines but {args.pred} has {len(pred)}")
    try:
        s = aer(sure, possible, pred)
    except ValueError as err:
        return _fail(str(err))
    print(f"AER       {s.aer:.4f}\nprecision {s.precision:.4f}\nrecall    {s.recall:.4f}\n"
          f"F1        {s.f1:.4f}\nlinks     predicted {s.n_pred}, sure {s.n_sure},"
          f" possible {s.n_possible}")
    return 0


def main(argv=None) -> int:
    """Run ``align`` or ``aer`` from an argument list; returns the exit status.

    Examples
    --------
    >>> main(["aer", "--gold", "gold.talp", "--pred", "pred.txt"])   # doctest: +SKIP
    0
    """
    parser = argparse.ArgumentParser(prog="groundroll",
                                     description="word alignment from translation models")
    register(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

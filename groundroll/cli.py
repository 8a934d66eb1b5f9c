"""The ``groundroll`` command: ``segment``, ``align``, ``aer``, ``report`` and ``app``.

Thin: arguments are parsed here and handed to the library. ``align`` and ``aer``
come from :mod:`groundroll.alignment.cli` (its ``register(subparsers)``), imported only
when the parser is built and only if it is installed; ``report`` from
:mod:`groundroll.explore.cli` and ``app`` from :mod:`groundroll.app` (Gradio is imported
only when the app starts).

    groundroll segment scene.png -p "red circle" -p "blue star" --out results/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from ._atomic import OutputPathError, OutputSet, atomic_write, refuse_symlink
from ._command import EXIT_ERROR, EXIT_OK, EXIT_USAGE, add_command, load_or_fail
from ._command import CommandError as _Failure
from ._interrupt import Terminated, terminate_as_interrupt
from ._locks import warning_scope
from ._options import OptionError, check_segment_options
from .data import example_path, examples

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE"]

#: Stopped by SIGINT (Ctrl-C) or SIGTERM: the shell's 128 + signal number.
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


# --------------------------------------------------------------------------- segment


def _add_segment(subparsers) -> None:
    # torch: grounding loads the model code; main builds only the named command's parser
    from .grounding import DEFAULT_MODEL, METHODS, REFINE

    p = add_command(subparsers, "segment", _run_segment, help="segment images with text prompts")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("-p", "--prompt", dest="prompts", action="append", default=[],
                   metavar="PROMPT", help="a text prompt (repeat for several)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="model spec for groundroll.zoo.load (default: %(default)s)")
    p.add_argument("--method", default=None, choices=METHODS,
                   help="map source (default: the profile's default method for bundled"
                        " models, else relevance)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="output directory (created if missing)")
    p.add_argument("--background", action="append", default=[], metavar="TEXT",
                   help="background prompt mapped to label 0 (repeatable)")
    p.add_argument("--mask-threshold", type=float, default=None,
                   help="threshold of the background rule (alone: probability below"
                        " which a pixel is background)")
    p.add_argument("--background-rule", default=None,
                   choices=("none", "threshold", "relative", "otsu"),
                   help="how pixels become background (default: the profile's rule)")
    p.add_argument("--profile", type=Path, default=None, metavar="JSON",
                   help="postprocessing profile from 'groundroll calibrate' (default: the"
                        " model's bundled profile, if any)")
    p.add_argument("--refine", choices=REFINE, default=None,
                   help="refinement before the argmax (default: the profile's, else none)")
    p.add_argument("--template", dest="templates", action="append", default=None,
                   metavar="TEMPLATE", help="prompt template with one {} (repeatable)")
    p.add_argument("--min-size", type=int, default=0,
                   help="remove components smaller than this many pixels (>= 0)")
    p.add_argument("--fill-holes", action="store_true", help="fill holes in each label")
    p.add_argument("--max-side", type=int, default=1024, metavar="N",
                   help="working resolution: long side in pixels (default: %(default)s)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels (decompression-bomb guard;"
                        " default: %d)" % _default_max_pixels())
    p.add_argument("--force", action="store_true",
                   help="replace existing outputs (each image's previous set whole)")
    # torch: the bulk engine's module; main builds only the named command's parser
    from .distributed.cli import add_engine_options

    add_engine_options(p, task="segment")


def _default_max_pixels() -> int:
    # scipy (through masks): the image commands' module, not loaded by groundroll --help
    from ._images import DEFAULT_MAX_PIXELS

    return DEFAULT_MAX_PIXELS


def _check_image(path: Path, max_pixels: int) -> None:
    """Readable image header within ``max_pixels``, without decoding the pixels."""
    # scipy (through masks): the image commands' module, not loaded by groundroll --help
    from ._images import image_size

    try:
        width, height = image_size(path)
    except (OSError, ValueError) as err:
        raise _Failure(str(err)) from None
    n = width * height
    if n > max_pixels:
        raise _Failure(f"image {path} is {width} x {height} = {n:,} pixels, more than"
                       f" --max-pixels {max_pixels:,} (a guard against decompression"
                       f" bombs); if you trust the file, pass --max-pixels {n}")


def _run_segment(args) -> int:
    """Segment images with text prompts. Per image writes <stem>_labels.png (palette PNG),
    <stem>_<k>_<prompt>.png (one mask per prompt), <stem>_overlay.png and <stem>.json into
    --out."""
    from tqdm.auto import tqdm

    # torch: grounding loads the model code when the command runs, not with the parser
    from . import grounding
    # torch, as grounding
    from .grounding.options import check_prompts, check_templates
    # torch, as grounding
    from .grounding.segment import check_writable_set, manifest_name

    try:
        prompts = check_prompts(args.prompts)
        background = check_prompts(args.background, "background prompts")
    except ValueError as err:
        raise _Failure(f"{err} (use -p PROMPT)") from None
    try:
        check_segment_options(prompts=prompts, mask_threshold=args.mask_threshold,
                              background_rule=args.background_rule, min_size=args.min_size,
                              max_side=args.max_side, max_pixels=args.max_pixels)
    except OptionError as err:
        raise _Failure(err.as_flag()) from None
    profile = None
    if args.profile is not None:
        # torch: grounding loads the model code when the command runs
        from .grounding.profiles import Profile

        try:
            profile = Profile.load(args.profile)
        except (FileNotFoundError, ValueError) as err:
            raise _Failure(f"--profile: {err}") from None
    # torch: the bulk engine's module loads when the command runs
    from .distributed.cli import run_segment, wants_engine

    if wants_engine(args):  # --engine ray / --resume: sharded, resumable runs
        return run_segment(args, prompts, background, _Failure)
    max_pixels = _default_max_pixels() if args.max_pixels is None else args.max_pixels
    try:
        templates = check_templates(args.templates)
    except ValueError as err:
        raise _Failure(f"--template: {err}") from None
    images = [Path(i) for i in args.images]
    # Everything is checked before the model loads and before anything is written.
    for path in images:
        _check_image(path, max_pixels)
    out = args.out
    if out.exists() and not out.is_dir():
        raise _Failure(f"--out {out} exists and is not a directory")
    planned = [grounding.output_paths(out, prompts, stem=path.stem) for path in images]
    files = [p for paths in planned for p in paths.values()]
    if len({p.name for p in files}) != len(files):
        raise _Failure("two images share a file name stem; their outputs would collide")
    try:
        check_writable_set(out, planned, force=args.force)
    except (FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError,
            ValueError) as err:
        raise _Failure(str(err)) from None
    handle = load_or_fail(grounding.resolve_model, args.model)
    if profile is not None:
        try:
            profile.check_model(handle)
        except ValueError as err:
            raise _Failure(f"--profile {args.profile}: {err}") from None

    stems = [path.stem for path in images]
    try:
        # One warning scope for the run: a prompt's warning shows once, not per image.
        with warning_scope(), OutputSet(
                out, force=args.force,
                manifests=[manifest_name(s) for s in stems]) as output:
            bar = tqdm(images, desc="segment", unit="image", disable=None, file=sys.stderr)
            for path in bar:
                try:
                    seg = grounding.segment(
                        path, prompts, model=handle, method=args.method,
                        background=background or None,
                        mask_threshold=args.mask_threshold,
                        background_rule=args.background_rule, profile=profile,
                        refine=args.refine, templates=templates, max_side=args.max_side,
                        max_pixels=max_pixels, min_size=args.min_size,
                        fill_holes=args.fill_holes)
                except (ValueError, FileNotFoundError) as err:
                    raise _Failure(f"{err}; nothing was written") from None
                seg.stage(output, stem=path.stem)
                del seg
            output.commit()
    except FileExistsError as err:
        raise _Failure(f"{err}; nothing was written") from None
    except OSError as err:
        reason = err.strerror or str(err)
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        raise _Failure(f"cannot write the outputs to {out}: {reason}{where}; nothing was"
                       " written and earlier outputs are unchanged", EXIT_ERROR) from None
    print(f"wrote {sum(len(p) for p in planned)} files for {len(images)} image(s) to {out}",
          file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- calibrate


def _add_calibrate(subparsers) -> None:
    # torch: grounding loads the model code; main builds only the named command's parser
    from .grounding import DEFAULT_MODEL, METHODS, REFINE

    p = add_command(subparsers, "calibrate", _run_calibrate,
                    help="fit a segmentation profile on labelled images")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--masks", required=True, type=Path, metavar="DIR",
                   help="directory of label-map PNGs named like the images")
    p.add_argument("-c", "--class", dest="classes", action="append", required=True,
                   metavar="NAME", help="class name of label value 1, 2, ... (repeat)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="model spec for groundroll.zoo.load (default: %(default)s)")
    p.add_argument("--method", dest="methods", action="append", choices=METHODS,
                   help="map source to fit (repeat; the best becomes the default;"
                        " default: the model's default method)")
    p.add_argument("--refine", dest="refines", action="append", choices=REFINE,
                   help="refinement to try (repeat; default: none, slic and superpixels)")
    p.add_argument("--template", dest="templates", action="append", default=None,
                   metavar="TEMPLATE", help="prompt template with one {} (repeatable)")
    p.add_argument("--out", required=True, type=Path, metavar="JSON",
                   help="profile file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")


def _run_calibrate(args) -> int:
    """Fit the postprocessing (background rule, threshold, refinement) of each map source on a
    few labelled images and write a profile JSON that 'groundroll segment --profile' and
    segment(profile=...) read. Each IMAGE needs a label map in --masks with the same file stem
    (pixel value k = the k-th --class, 0 background)."""
    # torch: grounding loads the model code when the command runs
    from .grounding import resolve_model
    # torch, as grounding
    from .grounding.calibrate import CalibrationError, calibrate

    if args.out.exists() and not args.force:
        raise _Failure(f"--out {args.out} exists; pass --force to replace it")
    if args.out.is_dir():
        raise _Failure(f"--out {args.out} is a directory; name the profile file")
    if not args.masks.is_dir():
        raise _Failure(f"--masks {args.masks} is not a directory")
    pairs, missing = [], []
    for image in (Path(i) for i in args.images):
        found = sorted(q for q in args.masks.glob(image.stem + ".*") if q.is_file())
        if not found:
            missing.append(str(image))
        else:
            pairs.append({"image": image, "label_map": found[0], "name": str(image)})
    if missing:
        raise _Failure(f"no label map in {args.masks} for: {', '.join(missing)}")
    handle = load_or_fail(resolve_model, args.model)
    try:
        extra = {"refine": tuple(args.refines)} if args.refines else {}
        profile = calibrate(pairs, model=handle, methods=args.methods,
                            prompts=args.classes, templates=args.templates, **extra)
    except CalibrationError as err:
        raise _Failure(str(err)) from None
    try:
        profile.save(args.out, force=args.force)
    except (FileExistsError, OSError) as err:
        raise _Failure(f"cannot write {args.out}: {err}", EXIT_ERROR) from None
    scores = ", ".join(f"{m} {v:.3f}" for m, v in
                       profile.calibration["mean_object_iou"].items())
    print(f"wrote {args.out}: default method {profile.default_method}; mean object IoU on"
          f" {profile.calibration['images']} image(s): {scores}", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- align


def _add_align(subparsers) -> None:
    try:
        # main builds only the named command's parser: the module is imported here
        from .alignment import cli as align_cli
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


# --------------------------------------------------------------------------- report, app


def _add_report(subparsers) -> None:
    # main builds only the named command's parser: the module is imported here
    from .explore.cli import register

    register(subparsers)


def _add_app(subparsers) -> None:
    # main builds only the named command's parser: the module is imported here
    from .app import register

    register(subparsers)


def _add_audit(subparsers) -> None:
    # main builds only the named command's parser: the module is imported here
    from .auditing import register

    register(subparsers)


# --------------------------------------------------------------------------- examples


def _add_examples(subparsers) -> None:
    p = add_command(subparsers, "examples", _run_examples,
                    help="copy the bundled example files into a folder")
    p.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                   help="folder to copy them into (created if missing; default: here)")
    p.add_argument("--force", action="store_true",
                   help="replace files of the same names whose content differs")


def _run_examples(args) -> int:
    """Copy the example scene that ships with groundroll (shapes_scene.png, its label map
    and its JSON description) into --out, so the commands of the documentation run from
    any folder. A file already there with the same content is left as it is; one with
    other content is kept unless --force is given."""
    out = args.out
    if out.exists() and not out.is_dir():
        raise _Failure(f"--out {out} exists and is not a folder")
    plan = []
    for name in examples():
        source, target = example_path(name), out / name
        data = source.read_bytes()
        if target.is_file() and not target.is_symlink() and target.read_bytes() == data:
            print(f"{target} (already there)")
            continue
        if (target.exists() or target.is_symlink()) and not args.force:
            raise _Failure(f"{target} already exists with other content; pass --force to"
                           " replace it")
        plan.append((target, data))
    out.mkdir(parents=True, exist_ok=True)
    for target, data in plan:
        try:
            refuse_symlink(target, "the example file")
        except OutputPathError as err:
            raise _Failure(str(err)) from None
        with atomic_write(target, force=args.force) as f:
            f.write(data)
        print(target)
    return EXIT_OK


# --------------------------------------------------------------------------- caption

def _add_caption(subparsers) -> None:
    # torch: captioning loads the model code; main builds only the named command's parser
    from .captioning import DEFAULT_CAPTIONER, DEFAULT_METHOD, MAX_NEW_TOKENS, METHODS

    p = add_command(subparsers, "caption", _run_caption,
                    help="ground each word of an image's caption (generated or given)")
    p.add_argument("image", type=Path, help="the image")
    p.add_argument("--model", default=DEFAULT_CAPTIONER,
                   help=f"an image captioner (default: {DEFAULT_CAPTIONER})")
    p.add_argument("--caption", default=None,
                   help="the caption to ground; default: the model's own")
    p.add_argument("--method", default=None, choices=METHODS,
                   help="how a word's map is read (default: the model's measured"
                        f" default, else {DEFAULT_METHOD})")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS,
                   help=f"token limit of a generated caption (default: {MAX_NEW_TOKENS})")
    p.add_argument("--shifts", type=int, default=None,
                   help="sub-patch shifts per side of the input, each map the mean over"
                        " shifts**2 runs (default: the model's measured default, else 1)")
    p.add_argument("--out", type=Path, default=Path("caption-out"), metavar="DIR",
                   help="folder for <stem>.json, <stem>.html and per-word PNGs"
                        " (default: caption-out)")
    p.add_argument("--force", action="store_true", help="replace existing outputs")


def _run_caption(args) -> int:
    """Ground each word of the image's caption. Writes <stem>.json (caption, words,
    log-probabilities, mask areas), <stem>.html and per word a heatmap and a mask PNG
    into --out, as one set; prints the caption."""
    # torch: captioning loads the model code when the command runs
    from . import captioning
    # imported at the top as well; kept with this command's other imports
    from ._locks import warning_scope
    # torch: grounding loads the model code when the command runs
    from .grounding.segment import check_writable_set

    if args.caption is not None and not args.caption.strip():
        raise _Failure("--caption is empty; leave it out to ground the model's own caption")
    if args.max_new_tokens < 1:
        raise _Failure(f"--max-new-tokens must be a positive integer, got {args.max_new_tokens}")
    if args.shifts is not None and args.shifts < 1:
        raise _Failure(f"--shifts must be a positive integer, got {args.shifts}")
    _check_image(args.image, _default_max_pixels())
    if args.out.exists() and not args.out.is_dir():
        raise _Failure(f"--out {args.out} exists and is not a directory")
    stem = args.image.stem
    try:
        check_writable_set(args.out, [{"summary": args.out / f"{stem}.json",
                                       "page": args.out / f"{stem}.html"}], force=args.force)
    except (FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError,
            ValueError) as err:
        raise _Failure(str(err)) from None
    model = load_or_fail(captioning.resolve_captioner, args.model)
    with warning_scope():
        try:
            result = captioning.ground_caption(args.image, args.caption, model=model,
                                               method=args.method,
                                               max_new_tokens=args.max_new_tokens,
                                               shifts=args.shifts)
        except ValueError as err:
            raise _Failure(str(err)) from None
    try:
        result.save(args.out, stem=stem, force=args.force)
    except (FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError) as err:
        raise _Failure(str(err)) from None
    flag = " (cut at the token limit)" if result.truncated else ""
    print(f"{result.caption}{flag}")
    for word, content, logp in zip(result.words, result.content, result.logprobs):
        print(f"  {word:<16} {'content' if content else 'function':<8}  log p {logp:7.3f}")
    return EXIT_OK


# --------------------------------------------------------------------------- main


#: Each command: its line in the command list, and what adds its parser. Building a
#: command's parser imports what it runs (torch, the model libraries), so ``main`` builds
#: only the one on the command line and lists the others by name.
_COMMANDS = {
    "segment": ("segment images with text prompts", _add_segment),
    "calibrate": ("fit a segmentation profile on labelled images", _add_calibrate),
    "align": ("word-align sentence pairs with a translation model", _add_align),
    "aer": ("alignment error rate of predicted links against gold", _add_align),
    "report": ("write an interactive, self-contained HTML report", _add_report),
    "app": ("local web app: segmentation and alignment explorers (needs gradio)", _add_app),
    "audit": ("compare two models' maps on the same inputs", _add_audit),
    "caption": ("ground each word of an image's caption (generated or given)", _add_caption),
    "examples": ("copy the bundled example files into a folder", _add_examples),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``groundroll`` parser: every command's full parser, or with ``command`` that
    command's alone and the others listed by name (their options are not built)."""
    parser = argparse.ArgumentParser(
        prog="groundroll",
        description="Attention rollout on stock open_clip / Hugging Face models:"
                    " text-prompted segmentation and word alignment.")
    parser.add_argument("--version", action="version", version=f"groundroll {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    wanted = {add for name, (_, add) in _COMMANDS.items() if command in (None, name)}
    for name, (help, add) in _COMMANDS.items():
        if add in wanted:
            if name not in subparsers.choices:
                add(subparsers)
        else:
            subparsers.add_parser(name, help=help, add_help=False)
    return parser


def _command_in(argv: Sequence[str]) -> str:
    """The command named on the command line ("" when there is none, or before it an
    option such as ``--help``)."""
    first = next((a for a in argv if not a.startswith("-") or a == "-"), "")
    before = argv[:argv.index(first)] if first else argv
    return first if first in _COMMANDS and not before else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 bad input or
    existing outputs without ``--force``, 1 other failures, 130 after Ctrl-C and 143
    after SIGTERM, with a one-line message and no partial outputs)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        with terminate_as_interrupt():
            code = args.func(args)
    except _Failure as err:
        print(f"groundroll {args.command}: error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt as err:
        # Every output set being staged was discarded on the way out (finally blocks).
        what = "terminated" if isinstance(err, Terminated) else "interrupted"
        print(f"groundroll {args.command}: {what}; outputs not yet complete were discarded"
              " (earlier outputs are unchanged)", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED
    return EXIT_OK if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())

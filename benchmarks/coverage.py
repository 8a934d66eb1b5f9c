"""Capture coverage: every transformers model class from its auto mapping and every
open_clip architecture, built tiny with random weights, checked by
:func:`groundroll.adapters.conformance.check`.

Writes ``benchmarks/results/coverage.json`` (one record per model) and replaces the
table between ``<!-- coverage:start -->`` and ``<!-- coverage:end -->`` in
docs/how-to/rollout.md (with the names of refused and failing models), and the counts
alone between ``<!-- coverage-counts:start -->`` and ``<!-- coverage-counts:end -->`` in
README.md.

    OMP_NUM_THREADS=1 python benchmarks/coverage.py            # full sweep (~15-25 min)
    python benchmarks/coverage.py --only hf --limit 40          # a first slice
    python benchmarks/coverage.py --models mpnet fsmt --out /tmp/cov.json  # some classes
    python benchmarks/coverage.py --readme-only                 # table from the JSON

Transformers classes are reported in two rows: text, vision and multimodal families,
and audio and time-series families (:func:`groundroll.adapters.conformance.hf_modality`).
A run over selected ``--models`` never touches the README and writes ``--out``
(default ``benchmarks/results/coverage_selected.json``), not the full sweep's JSON.

Each model gets ``--timeout`` seconds (build + checks); one that takes longer is
recorded as not built.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import multiprocessing
import signal
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "coverage.json"
SELECTED = ROOT / "benchmarks" / "results" / "coverage_selected.json"
README = ROOT / "docs" / "how-to" / "rollout.md"   # the page with the coverage table
START, END = "<!-- coverage:start -->", "<!-- coverage:end -->"
#: The project README keeps the counts only, between these markers.
PROJECT_README = ROOT / "README.md"
COUNTS_START, COUNTS_END = "<!-- coverage-counts:start -->", "<!-- coverage-counts:end -->"

MODALITIES = ("text_vision_multimodal", "audio_time_series")   # conformance.MODALITIES
MODALITY_LABELS = {"text_vision_multimodal": "text, vision, multimodal",
                   "audio_time_series": "audio, time series"}
LABELS = {"captured": "captured exactly", "refused": "refused with a reason",
          "failing": "failing", "not_built": "not exercised (tiny model does not build"
          " or run, or reports no attention)"}


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass


class _Timeout(Exception):
    pass


def _run(check, name: str, timeout: int) -> dict:
    from groundroll.adapters.conformance import Result

    def alarm(*_):
        raise _Timeout(f"took over {timeout} s")

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    try:
        result = check(name)
    except _Timeout as err:
        result = Result(name, "not_built", str(err), float(timeout))
    except Exception as err:  # a groundroll error the check did not catch
        result = Result(name, "failing", f"{type(err).__name__}: {err}"[:200])
    finally:
        signal.alarm(0)
    record = dict(name=result.name, status=result.status, detail=result.detail[:300],
                  seconds=round(result.seconds, 3), streams=list(result.streams),
                  reported=result.reported)
    if "level" in result.extra:
        record["level"] = result.extra["level"]
    return record


def _import_first(library: str, name: str) -> None:
    """Import the model's code before the clock starts: an import cut by the timeout
    would leave half-initialised modules behind in the worker for every later model."""
    from groundroll.adapters import conformance

    try:
        if library == "transformers":
            import transformers
            from transformers import CONFIG_MAPPING

            CONFIG_MAPPING[name]
            getattr(transformers, conformance.hf_model_types()[name])
        else:
            import open_clip  # noqa: F401
            import timm  # noqa: F401
    except Exception:
        pass   # the check reports it


def _job(args) -> dict:
    library, name, timeout = args
    import torch

    from groundroll.adapters import conformance

    _quiet()
    torch.set_num_threads(1)
    _import_first(library, name)
    check = conformance.check_hf if library == "transformers" else conformance.check_open_clip
    record = _run(check, name, timeout)
    if library == "transformers":
        try:
            record["modality"] = conformance.hf_modality(name)
        except Exception:
            record["modality"] = conformance.MODALITIES[0]
    return record


def sweep(only: str, limit: int | None, timeout: int, workers: int,
          models: list[str] | None = None) -> dict[str, list[dict]]:
    from tqdm import tqdm

    from groundroll.adapters import conformance

    jobs: dict[str, list] = {}
    if only in ("all", "hf"):
        names = list(conformance.hf_model_types())
        if models:
            unknown = sorted(set(models) - set(names))
            if unknown and only == "hf":
                raise SystemExit(f"not in transformers' auto mapping: {unknown}")
            names = [n for n in names if n in models]
        if names:
            jobs["transformers"] = names[:limit]
    if only in ("all", "open_clip"):
        import open_clip

        names = open_clip.list_models()
        if models:
            names = [n for n in names if n in models]
        if names:
            jobs["open_clip"] = names[:limit]
    out: dict[str, list[dict]] = {}
    for library, names in jobs.items():
        tasks = [(library, n, timeout) for n in names]
        with tqdm(total=len(tasks), desc=library) as bar:
            out[library] = _map_with_watchdog(multiprocessing.get_context("spawn"), tasks,
                                              workers, grace=timeout + 90, bar=bar)
    return out


def _map_with_watchdog(ctx, tasks: list, workers: int, *, grace: int, bar) -> list[dict]:
    """``_job`` over ``tasks`` in worker processes, in order. A worker that dies (out of
    memory, a crash in native code) or hangs where the in-process alarm cannot reach it
    would stall a plain ``Pool.imap`` for ever: here a task not back within ``grace``
    seconds of its turn is recorded as lost, the pool is replaced and the remaining
    tasks go on."""
    results: dict[int, dict] = {}
    pending = list(range(len(tasks)))
    while pending:
        # Fresh worker processes now and then: a model's import or build may leak memory.
        pool = ctx.Pool(workers, maxtasksperchild=50)
        handles = {i: pool.apply_async(_job, (tasks[i],)) for i in pending}
        lost = None
        for i in pending:
            try:
                results[i] = handles[i].get(timeout=grace)
            except multiprocessing.TimeoutError:
                lost = i
                break
            bar.update(1)
        if lost is None:
            pool.close()
            pool.join()
            break
        for j in pending:                  # whatever else came back in the meantime
            if j not in results and j != lost and handles[j].ready():
                try:
                    results[j] = handles[j].get(0)
                    bar.update(1)
                except Exception:
                    pass
        pool.terminate()
        pool.join()
        name = tasks[lost][1]
        results[lost] = dict(name=name, status="not_built",
                             detail=f"worker lost: no result within {grace} s (it crashed,"
                                    " ran out of memory or hung in native code)",
                             seconds=float(grace), streams=[], reported=0)
        bar.update(1)
        pending = [j for j in pending if j not in results]
    return [results[i] for i in range(len(tasks))]


def table(results: dict[str, list[dict]], versions: dict[str, str], *,
          names: bool = True) -> str:
    """The coverage table in Markdown between its markers; with ``names`` (the how-to
    page) the refused and failing models are listed below it."""
    start, end = (START, END) if names else (COUNTS_START, COUNTS_END)
    lines = [start, "",
             "| library | models | " + " | ".join(LABELS[s] for s in LABELS) + " |",
             "|---|---:|" + "---:|" * len(LABELS)]
    for library, records in results.items():
        groups = {"": records}
        if any("modality" in r for r in records):
            groups = {f" ({MODALITY_LABELS[kind]})":
                      [r for r in records if r.get("modality", MODALITIES[0]) == kind]
                      for kind in MODALITIES}
        for label, members in groups.items():
            counts = collections.Counter(r["status"] for r in members)
            lines.append(f"| {library} {versions.get(library, '')}{label} | {len(members)} | "
                         + " | ".join(str(counts.get(s, 0)) for s in LABELS) + " |")
    lines.append("")
    if not names:
        lines += ["Per-model records and reasons: `benchmarks/results/coverage.json` and"
                  " [the capture coverage page](docs/how-to/rollout.md).", "", end]
        return "\n".join(lines)
    for library, records in results.items():
        for status in ("refused", "failing"):
            names = sorted(r["name"] for r in records if r["status"] == status)
            if names:
                lines.append(f"- {library}, {LABELS[status]} ({len(names)}): "
                             + ", ".join(f"`{n}`" for n in names))
    lines += ["", "Regenerate with `OMP_NUM_THREADS=1 python benchmarks/coverage.py`"
              " (per-model records and reasons in `benchmarks/results/coverage.json`).",
              "", end]
    return "\n".join(lines)


def write_readme(text: str, page: Path = README, start: str = START,
                 end: str = END) -> None:
    """Replace the block between ``start`` and ``end`` in ``page`` (appended under a
    heading to the how-to page when its markers are missing; the project README is left
    alone without them)."""
    readme = page.read_text()
    if start in readme and end in readme:
        head, _, rest = readme.partition(start)
        _, _, tail = rest.partition(end)
        readme = head + text + tail
    elif page == README:
        readme = readme.rstrip() + "\n\n## Capture coverage\n\n" + text + "\n"
    else:
        return
    tmp = page.with_suffix(".md.tmp")
    tmp.write_text(readme)
    tmp.replace(page)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("all", "hf", "open_clip"), default="all")
    parser.add_argument("--limit", type=int, default=None, help="first N models per library")
    parser.add_argument("--timeout", type=int, default=60, help="seconds per model")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--models", nargs="+", default=None,
                        help="only these model types / architectures (the coverage table untouched)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON written (default: the full sweep's, or"
                             " coverage_selected.json with --models)")
    parser.add_argument("--readme-only", action="store_true",
                        help="rewrite the coverage table of docs/how-to/rollout.md from the saved JSON")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    _quiet()
    out = args.out or (SELECTED if args.models else RESULTS)
    if args.readme_only:
        saved = json.loads(out.read_text())
    else:
        import open_clip
        import transformers

        results = sweep(args.only, args.limit, args.timeout, args.workers, args.models)
        saved = {"versions": {"transformers": transformers.__version__,
                              "open_clip": open_clip.__version__},
                 "results": results}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(saved, indent=1))
        tmp.replace(out)
    text = table(saved["results"], saved["versions"])
    print(text)
    if not args.no_readme and not args.models and out == RESULTS:
        write_readme(text)
        write_readme(table(saved["results"], saved["versions"], names=False),
                     PROJECT_README, COUNTS_START, COUNTS_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())

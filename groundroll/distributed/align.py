"""Bulk word alignment of a parallel corpus: :func:`align_corpus`.

The corpus is cut into shards of consecutive lines. A worker holds the model (loaded
once) and aligns one shard per call with :func:`groundroll.align`; the driver writes
each shard's Pharaoh lines to a shard file and records the shard as done. When every
shard is done, the shard files are joined in input order into the output file: one
line per input line, always (a line that cannot be aligned gets an empty line and an
entry in the failures file).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .. import zoo
from .._atomic import atomic_write
from .._json import jsonable
from .._options import call_keywords, merge_keywords, options_object
from ..alignment import api
from ..alignment.io import read_lines
from ..alignment.options import AlignOptions
from ._engine import (BulkResult, as_path, import_ray, json_lines,
                      map_batches, pool_options, progress_bar, ray_results, ray_start,
                      result_rows, worker_threads)
from ._state import (RunState, Shard, digest, plan_shards,
                     write_if_changed)
from .options import RunOptions, run_options

__all__ = ["align_corpus", "state_dir_for", "BATCH_SIZE", "SHARD_SIZE"]

#: Sentence pairs per forward pass, and lines per shard, when the caller does not say.
BATCH_SIZE, SHARD_SIZE = 16, 256


def state_dir_for(out) -> Path:
    """Folder of the run state of an alignment written to ``out``: ``<out>.run``."""
    out = as_path(out)
    return out.with_name(out.name + ".run")


# ----------------------------------------------------------------------------- worker


class AlignWorker:
    """Callable class for Ray Data ``map_batches`` (and the local engine): loads the
    model once, then aligns shards.

    A batch holds shards: columns ``shard``, ``src`` and ``tgt`` (each a JSON list of the
    shard's lines; ``tgt`` empty text to translate). The result has one row per shard:
    ``shard``, ``lines`` (JSON list of Pharaoh lines), ``targets`` (JSON list of the
    target sentences the links index: the translations when translating), ``failures``
    (JSON list of ``[offset, reason]``), ``pid`` and ``finished`` (the worker's clock when
    the shard was done, seconds since the epoch).
    """

    def __init__(self, *, model, options: AlignOptions | dict | None, batch_size: int,
                 device: str = "cpu", threads: int | None = None):
        worker_threads(threads)
        self.options = options_object(AlignOptions, options, what="AlignWorker")
        self.batch_size = int(batch_size)
        self.pid = os.getpid()
        self.model = zoo.load(model, device=device) if isinstance(model, str) else model
        reverse = self.options.reverse_model
        if isinstance(reverse, str):
            self.options = dataclasses.replace(self.options,
                                               reverse_model=zoo.load(reverse, device=device))

    def align_lines(self, src: list[str], tgt: list[str] | None
                    ) -> tuple[list[str], list[str], list]:
        """Pharaoh lines, target sentences and ``[offset, reason]`` failures."""
        try:
            found = api.align(src, tgt, model=self.model, batch_size=self.batch_size,
                              options=self.options)
            return ([a.pharaoh() for a in found], [" ".join(a.tgt_words) for a in found],
                    [])
        except Exception:
            pass  # find the lines at fault one by one; the others keep their links
        lines, targets, failures = [], [], []
        for k, s in enumerate(src):
            try:
                a = api.align([s], None if tgt is None else [tgt[k]], model=self.model,
                              batch_size=1, options=self.options)[0]
                lines.append(a.pharaoh())
                targets.append(" ".join(a.tgt_words))
            except Exception as err:
                lines.append("")
                targets.append("")
                failures.append([k, f"{type(err).__name__}: {err}"])
        return lines, targets, failures

    def __call__(self, batch: dict) -> dict:
        shards, lines, targets, failures, finished = [], [], [], [], []
        for shard, src, tgt in zip(batch["shard"], batch["src"], batch["tgt"]):
            src = json.loads(src)
            tgt = json.loads(tgt) if tgt else None
            got, words, bad = self.align_lines(src, tgt)
            shards.append(str(shard))
            lines.append(json.dumps(got))
            targets.append(json.dumps(words))
            failures.append(json.dumps(bad))
            finished.append(time.time())
        return {"shard": np.array(shards, dtype=object),
                "lines": np.array(lines, dtype=object),
                "targets": np.array(targets, dtype=object),
                "failures": np.array(failures, dtype=object),
                "pid": np.full(len(shards), self.pid, dtype=np.int64),
                "finished": np.array(finished, dtype=np.float64)}


# ----------------------------------------------------------------------------- engines


def _shard_rows(src, tgt, pending: list[Shard]) -> list[dict]:
    return [{"shard": s.id, "src": json.dumps(src[s.start:s.stop]),
             "tgt": "" if tgt is None else json.dumps(tgt[s.start:s.stop])}
            for s in pending]


def _local_rows(src, tgt, pending, worker_kwargs) -> Iterator[dict]:
    worker = AlignWorker(**worker_kwargs)
    for row in _shard_rows(src, tgt, pending):
        yield from result_rows(worker({k: [v] for k, v in row.items()}))


def _ray_rows(src, tgt, pending, worker_kwargs, run: RunOptions) -> Iterator[dict]:
    ray = ray_start(run.address)
    options, device = pool_options(ray, workers=run.workers,
                                   gpus_per_worker=run.gpus_per_worker,
                                   threads_per_worker=run.threads_per_worker,
                                   retries=run.retries)
    ds = ray.data.from_items(_shard_rows(src, tgt, pending))
    out = map_batches(ds, AlignWorker, batch_size=1,
                      constructor=dict(worker_kwargs, device=device,
                                       threads=run.threads_per_worker), options=options)
    yield from ray_results(ray, out, result_rows)


# ----------------------------------------------------------------------------- api


def _lines_of(value, what: str) -> list[str]:
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"{what} file not found: {path}")
        return read_lines(path)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(f"{what} must be a text file (one sentence per line) or a list of"
                    f" strings, got {type(value).__name__}")


def _plain(x):
    if x is None or isinstance(x, (int, float, str, bool)):
        return x
    return [int(v) for v in x]


#: Options recorded with a run's settings whatever their value (older runs recorded
#: these; the others are recorded when they differ from their defaults).
_ALWAYS_RECORDED = ("method", "layers", "heads", "shift", "extraction", "link_threshold",
                    "symmetrize", "reverse_model", "max_length")


def _recorded(options: AlignOptions) -> dict:
    """The alignment options as a run records them in its settings."""
    given = {}
    for f in dataclasses.fields(AlignOptions):
        value = getattr(options, f.name)
        if f.name == "reverse_model":
            given[f.name] = (value if value is None or isinstance(value, str)
                             else getattr(value, "name", ""))
        elif f.name in _ALWAYS_RECORDED:
            given[f.name] = _plain(value)
        elif not (value is f.default or (isinstance(value, (str, int, float))
                                         and value == f.default)):
            given[f.name] = jsonable(value, other=str)
    return given


def align_corpus(
    src,
    tgt=None,
    *,
    model: Any = "bundled:toy-mt",
    out,
    translation=None,
    method: str | None = None,
    layers=None,
    heads=None,
    shift: bool | None = None,
    extraction: str | None = None,
    link_threshold: float | None = None,
    symmetrize: str | None = None,
    reverse_model: str | None = None,
    max_length: int | None = None,
    profile=None,
    head_fusion="mean",
    residual: float = 0.5,
    options: AlignOptions | dict | None = None,
    engine: str = "ray",
    workers: int = 1,
    batch_size: int | None = None,
    shard_size: int | None = None,
    resume: bool = False,
    force: bool = False,
    gpus_per_worker: float | None = None,
    threads_per_worker: int = 1,
    retries: int = 3,
    address: str | None = None,
    progress: bool = True,
    run: RunOptions | None = None,
) -> BulkResult:
    """Word-align a parallel corpus, on one process or a Ray cluster, resumably.

    Writes ``out``: one Pharaoh line (0-indexed ``s-t`` links) per input line, in input
    order, as ``groundroll align`` does. The run state (manifest and one file per
    completed shard) lives in ``<out>.run``; lines that could not be aligned get an
    empty line and are listed in ``<out>.run/failures.jsonl`` with their reasons.

    Parameters
    ----------
    src : str, PathLike or list of str
        Source sentences, one per line (whitespace-tokenised).
    tgt : like ``src``, optional
        Target sentences; None translates ``src`` first (see :func:`groundroll.align`).
    model : str or Bundle
        A :func:`groundroll.zoo.load` spec; ``engine="ray"`` needs a spec string.
    method, layers, heads, shift, extraction, link_threshold, symmetrize, reverse_model, max_length, profile, head_fusion, residual
        As in :func:`groundroll.align`; None keeps its default. Each shard is one
        :func:`groundroll.align` call, so a default that looks at all sentences of a
        call (a layer chosen from the data) is chosen per shard: pass ``method`` and
        ``layers`` for one choice across the corpus.
    options : AlignOptions or dict, optional
        Every option of :func:`groundroll.align` as one object (or a dict of its
        fields; an unknown name is a TypeError listing the accepted ones), handed whole
        to each shard's call. A keyword given beside it with a value other than its
        default replaces that field. Recorded with the settings.
    out : str or PathLike
        The Pharaoh output file.
    translation : str or PathLike, optional
        Without ``tgt``: the file for the translations the links index, one per line
        (default: ``out`` with ``.translation`` before its suffix, ``pred.txt`` ->
        ``pred.translation.txt``, as ``groundroll align`` names it).
    engine : {"ray", "local"}
    workers : int
        Ray actors, each holding one model (``engine="local"``: must be 1).
    batch_size : int, optional
        Sentence pairs per forward pass (default :data:`BATCH_SIZE`, 16).
    shard_size : int, optional
        Lines per shard, the unit of resumption (default :data:`SHARD_SIZE`, 256).
        Recorded with the settings.
    resume, force
        As in :func:`groundroll.distributed.segment_dataset`; ``force`` also allows
        replacing an existing ``out``.
    gpus_per_worker, threads_per_worker, retries, address, progress
        As in :func:`groundroll.distributed.segment_dataset` (the bar counts lines).
    run : RunOptions, optional
        ``engine`` to ``progress`` as one object; a keyword given beside it with a
        value other than its default replaces that field.

    Returns
    -------
    BulkResult
        Lines in all, aligned by this call, skipped (done by an earlier run) and failed;
        the output files (``"pharaoh"``, ``"failures"``, ``"translation"``).

    Examples
    --------
    >>> from groundroll.distributed import align_corpus
    >>> run = align_corpus("corpus.src", "corpus.tgt", model="bundled:toy-mt",
    ...                    out="corpus.links", engine="ray", workers=2)   # doctest: +SKIP
    >>> run.total                                                         # doctest: +SKIP
    2000
    """
    started = time.perf_counter()
    options = merge_keywords(AlignOptions, options, call_keywords(AlignOptions, locals()),
                             what="align_corpus()")
    run = run_options(run, locals(), what="align_corpus()", batch_size=BATCH_SIZE,
                      shard_size=SHARD_SIZE)
    if run.engine == "ray":
        reverse = options.reverse_model
        if not isinstance(model, str) or not (reverse is None or isinstance(reverse, str)):
            raise TypeError("engine='ray' needs models as spec strings (each worker loads"
                            " its own copy), e.g. 'bundled:toy-mt'")
        import_ray()
    src_lines = _lines_of(src, "src")
    tgt_lines = None if tgt is None else _lines_of(tgt, "tgt")
    if tgt_lines is not None and len(tgt_lines) != len(src_lines):
        raise ValueError(f"src has {len(src_lines)} lines but tgt has {len(tgt_lines)};"
                         " source and target need one sentence per line each")
    if not src_lines:
        raise ValueError("src holds no lines")
    out = as_path(out)
    if out.is_dir():
        raise IsADirectoryError(f"out {out} is a folder; expected the Pharaoh file path")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"folder {out.parent} does not exist (for out {out})")

    settings = {"task": "align", "shard_size": int(run.shard_size),
                "translate": tgt is None,
                "model": model if isinstance(model, str) else getattr(model, "name", ""),
                **_recorded(options)}
    keys = [s + "\t" + (t if tgt_lines is not None else "") for s, t in zip(
        src_lines, tgt_lines if tgt_lines is not None else src_lines)]
    shards = plan_shards(keys, run.shard_size)
    state_dir = state_dir_for(out)
    outputs = [out]
    if tgt_lines is None:
        outputs.append(as_path(translation) if translation is not None else out.with_name(
            f"{out.stem}.translation{out.suffix or '.txt'}"))
    for path in outputs:
        if path.exists() and not run.force and not (run.resume
                                                     and RunState.exists(state_dir)):
            resumable = " (or resume=True to continue its run)" if RunState.exists(
                state_dir) else ""
            raise FileExistsError(f"{path} already exists; pass force=True (--force on the"
                                  f" command line) to overwrite it{resumable}")
    state = RunState.open(state_dir, settings=settings, shards=shards, resume=run.resume,
                          force=run.force, valid=_record_valid)
    for shard_id in list(state.done):
        if not (state.folder / f"{shard_id}.txt").is_file() or (
                tgt_lines is None and not (state.folder / f"{shard_id}.tgt").is_file()):
            state.forget([shard_id])  # its lines went missing: align them again
    pending = state.pending()
    skipped = len(src_lines) - sum(s.size for s in pending)

    processed = 0
    if pending:
        worker_kwargs = dict(model=model, options=options, batch_size=run.batch_size)
        if run.engine == "local":
            rows = _local_rows(src_lines, tgt_lines, pending, worker_kwargs)
        else:
            rows = _ray_rows(src_lines, tgt_lines, pending, worker_kwargs, run)
        processed = _collect(rows, state, pending, len(src_lines), skipped, run.progress)

    files = {"pharaoh": out, "failures": state.folder / "failures.jsonl"}
    if tgt_lines is None:
        files["translation"] = outputs[1]
    written, failed = _finish(state, files, src_lines)
    return BulkResult(out=out, total=len(src_lines), processed=processed, skipped=skipped,
                      failed=failed, shards=len(shards), files=files, written=written,
                      seconds=time.perf_counter() - started)


def _record_valid(shard: Shard, record: dict) -> bool:
    """A done record read back on resume: the digest of its lines and failures as
    ``[line index inside the shard, reason]``."""
    failures = record.get("failures", [])
    return isinstance(record.get("digest"), str) and isinstance(failures, list) and all(
        isinstance(f, list) and len(f) == 2 and isinstance(f[0], int)
        and not isinstance(f[0], bool) and shard.start <= f[0] < shard.stop
        and isinstance(f[1], str) for f in failures)


def _collect(rows: Iterable[dict], state: RunState, pending: list[Shard], total: int,
             skipped: int, progress: bool) -> int:
    by_id = {s.id: s for s in pending}
    processed = 0
    bar = progress_bar(total=total, initial=skipped, unit="line", desc="align",
                       enabled=progress)
    try:
        for row in rows:
            shard = by_id.pop(row["shard"], None)
            if shard is None:
                continue  # delivered twice after a retry
            lines = json.loads(row["lines"])
            if len(lines) != shard.size or any("\n" in line for line in lines):
                raise RuntimeError(f"shard {shard.id}: {len(lines)} output lines for"
                                   f" {shard.size} input lines")
            if state.settings.get("translate"):
                targets = json.loads(row["targets"])
                with atomic_write(state.folder / f"{shard.id}.tgt", force=True,
                                  mode="w") as f:
                    f.write("".join(t.replace("\n", " ") + "\n" for t in targets))
            with atomic_write(state.folder / f"{shard.id}.txt", force=True, mode="w") as f:
                f.write("".join(line + "\n" for line in lines))
            failures = [[shard.start + k, reason] for k, reason in json.loads(
                row["failures"])]
            state.complete(shard, {"start": shard.start, "stop": shard.stop,
                                   "digest": digest(lines), "failures": failures,
                                   "worker": row["pid"], "finished": row["finished"]})
            processed += shard.size
            bar.update(shard.size)
    finally:
        bar.close()
    if by_id:
        raise RuntimeError(f"{len(by_id)} shard(s) came back missing; run again with"
                           " resume to finish them")
    return processed


def _finish(state: RunState, files: dict, src_lines: list[str]):
    parts, targets, failures = [], [], []
    for shard, record in zip(state.shards, state.records()):
        text = (state.folder / f"{shard.id}.txt").read_text(encoding="utf-8")
        lines = text.split("\n")[:-1]
        if len(lines) != shard.size or digest(lines) != record.get("digest"):
            raise RuntimeError(f"shard file {state.folder / (shard.id + '.txt')} does not"
                               " match its record; run again with resume after deleting"
                               f" {state.record_path(shard)}")
        parts.append(text)
        if "translation" in files:
            targets.append((state.folder / f"{shard.id}.tgt").read_text(encoding="utf-8"))
        failures.extend({"line": n + 1, "src": src_lines[n], "error": reason}
                        for n, reason in record.get("failures", []))
    written = []
    if write_if_changed(files["pharaoh"], "".join(parts).encode("utf-8")):
        written.append(files["pharaoh"])
    if "translation" in files and write_if_changed(
            files["translation"], "".join(targets).encode("utf-8")):
        written.append(files["translation"])
    if write_if_changed(files["failures"], json_lines(failures, ensure_ascii=False)):
        written.append(files["failures"])
    return written, len(failures)

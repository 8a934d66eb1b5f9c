"""What both bulk jobs share: engine checks, Ray start-up and pool options, result rows,
progress and the failures file's JSON lines."""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

__all__ = ["ENGINES", "BulkResult", "check_engine", "ray_start", "pool_options",
           "progress_bar", "ray_results", "result_rows", "json_lines", "worker_threads"]

ENGINES = ("local", "ray")


@dataclass
class BulkResult:
    """What a bulk job did.

    Attributes
    ----------
    out : Path
        The output folder (segmentation) or file (alignment).
    total : int
        Items (images or lines) in the input.
    processed : int
        Items processed by this call (0 when a resumed run had nothing left).
    skipped : int
        Items of shards completed by an earlier run and not processed again.
    failed : int
        Items that failed (listed in ``failures_file`` with their reasons).
    shards : int
        Shards in the plan.
    files : dict of str to Path
        The combined outputs (``"coco"``, ``"failures"``, ``"parquet"``, ``"pharaoh"``).
    written : list of Path
        Combined outputs this call wrote or replaced (empty when nothing changed).
    seconds : float
        Wall time of the call.
    """

    out: Path
    total: int
    processed: int
    skipped: int
    failed: int
    shards: int
    files: dict = field(default_factory=dict)
    written: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures_file(self) -> Path | None:
        return self.files.get("failures")


def check_engine(engine: str, workers: int, batch_size: int) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if engine == "local" and workers != 1:
        raise ValueError("engine='local' runs in this process with one worker; use"
                         f" engine='ray' for workers={workers}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ImportError("engine='ray' needs Ray Data: pip install 'groundroll[ray]'"
                          f" ({err})") from None
    return ray


def ray_start(address: str | None = None):
    """Connect to Ray: keep a connection the caller made with ``ray.init``, else join
    ``address`` or ``$RAY_ADDRESS``, else start a local Ray on this machine."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or None,
                 include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours is the one bar, over items
    return ray


def cluster_gpus(ray) -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))


def pool_options(ray, *, workers: int, gpus_per_worker: float | None,
                 threads_per_worker: int, retries: int) -> tuple[dict, str]:
    """``map_batches`` options for an actor pool of ``workers`` model holders, and the
    torch device of each.

    Each actor asks for ``threads_per_worker`` CPUs and, where the cluster has GPUs (or
    ``gpus_per_worker`` says so), one GPU. A worker process that dies is restarted and
    its batch retried up to ``retries`` times (then the job fails and can be resumed).
    """
    gpus = (1.0 if cluster_gpus(ray) >= 1 else 0.0) if gpus_per_worker is None else float(
        gpus_per_worker)
    options = dict(compute=ray.data.ActorPoolStrategy(size=workers),
                   num_cpus=threads_per_worker, max_restarts=-1,
                   max_task_retries=int(retries))
    if gpus > 0:
        options["num_gpus"] = gpus
    return options, "cuda" if gpus > 0 else "cpu"


def map_batches(ds, cls, *, batch_size: int, constructor: dict, options: dict):
    """``ds.map_batches`` with a callable class; retry limits go through the remote
    arguments, which recent Ray marks as deprecated (still the only place for them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        warnings.filterwarnings("ignore", message=".*concurrency.*deprecated.*")
        return ds.map_batches(cls, batch_size=batch_size, batch_format="numpy",
                              fn_constructor_kwargs=constructor, **options)


def ray_results(ray, ds, rows):
    """Result rows of a Ray dataset as they complete; a failure of the Ray job (a batch
    out of retries, a worker that cannot start) becomes a RuntimeError."""
    try:
        for result in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield from rows(result)
    except Exception as err:
        if not (isinstance(err, ray.exceptions.RayError)
                or type(err).__module__.startswith("ray.")):
            raise
        raise RuntimeError(f"the Ray job failed: {type(err).__name__}: {err}") from err


def result_rows(result: dict) -> Iterator[dict]:
    """The rows of a worker's result (columns of equal length, one of them ``shard``),
    numpy scalars as Python values."""
    for i in range(len(result["shard"])):
        yield {k: (v[i].item() if isinstance(v[i], np.generic) else v[i])
               for k, v in result.items()}


def json_lines(records: Iterable, *, ensure_ascii: bool = True) -> bytes:
    """One JSON document per line, UTF-8."""
    text = "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in records)
    return text.encode("utf-8")


def worker_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def progress_bar(*, total: int, initial: int, unit: str, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit=unit, desc=desc, file=sys.stderr,
                disable=None if enabled else True, dynamic_ncols=True)


def as_path(p) -> Path:
    return Path(os.fspath(p))

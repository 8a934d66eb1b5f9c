"""How a bulk run goes, as one object: :class:`RunOptions`.

:func:`~groundroll.distributed.segment_dataset` and
:func:`~groundroll.distributed.align_corpus` take each field as a keyword argument or
the object whole (``run=RunOptions(...)``), beside the options of the job they repeat
(``options=``: a :class:`~groundroll.grounding.SegmentOptions` or an
:class:`~groundroll.alignment.AlignOptions`).

Examples
--------
>>> RunOptions(engine="local", batch_size=4).workers
1
>>> RunOptions(engine="local", workers=2)
Traceback (most recent call last):
...
ValueError: engine='local' runs in this process with one worker; use engine='ray' for workers=2
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .._options import call_keywords, integer, merge_keywords, real
from ._engine import check_engine

__all__ = ["RunOptions", "run_options"]


@dataclass(frozen=True)
class RunOptions:
    """The settings of a bulk run that do not change its outputs (the shard size
    decides how a run resumes, and is recorded with its settings).

    Attributes
    ----------
    engine : {"ray", "local"}
    workers : int
    batch_size, shard_size : int, optional
        None: the job's own default (``segment_dataset``: 8 images, 64 per shard;
        ``align_corpus``: 16 sentence pairs, 256 lines per shard).
    resume, force : bool
    gpus_per_worker : float, optional
    threads_per_worker : int
    retries : int
    address : str, optional
    progress : bool
        As in :func:`~groundroll.distributed.segment_dataset`.
    """

    engine: str = "ray"
    workers: int = 1
    batch_size: int | None = None
    shard_size: int | None = None
    resume: bool = False
    force: bool = False
    gpus_per_worker: float | None = None
    threads_per_worker: int = 1
    retries: int = 3
    address: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        check_engine(self.engine, self.workers,
                     1 if self.batch_size is None else self.batch_size)
        if self.shard_size is not None:
            integer("shard_size", self.shard_size, low=1)
        if self.gpus_per_worker is not None:
            real("gpus_per_worker", self.gpus_per_worker, low=0)
        integer("threads_per_worker", self.threads_per_worker, low=1)
        integer("retries", self.retries, low=0)


def run_options(run, values, *, what: str, batch_size: int,
                shard_size: int) -> RunOptions:
    """The :class:`RunOptions` of a bulk call (``values``: its ``locals()``): its
    keywords, or ``run`` with each keyword other than its default replacing that field
    (:func:`~groundroll._options.merge_keywords`); a batch or shard size left unset
    takes the job's own (``batch_size``, ``shard_size``)."""
    merged = merge_keywords(RunOptions, run, call_keywords(RunOptions, values), what=what)
    unset = {name: default for name, default in (("batch_size", batch_size),
                                                  ("shard_size", shard_size))
             if getattr(merged, name) is None}
    return dataclasses.replace(merged, **unset) if unset else merged

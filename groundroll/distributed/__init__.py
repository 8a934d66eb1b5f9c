"""Bulk segmentation and alignment past one process: local or on a Ray cluster, resumable.

:func:`segment_dataset` labels an image collection with text prompts and
:func:`align_corpus` word-aligns a parallel corpus. Both cut the input into shards with
deterministic ids, run a pool of workers that each load the model once (Ray Data
``map_batches`` with a callable class, ``engine="ray"``; or this process,
``engine="local"``), record every completed shard in a run manifest, and skip completed
shards when called again with ``resume=True``.

Ray is optional (``pip install 'groundroll[ray]'``); ``engine="local"`` needs nothing
beyond groundroll.

>>> from groundroll.distributed import segment_dataset, align_corpus
>>> run = segment_dataset("scenes/", ["red circle", "blue star"], out="labels/",
...                       model="bundled:shapes-clip", engine="local")  # doctest: +SKIP
"""

from ._engine import ENGINES, BulkResult
from ._state import SettingsMismatchError
from .align import AlignWorker, align_corpus
from .options import RunOptions
from .segment import STATE_DIR, SegmentWorker, segment_dataset

__all__ = ["segment_dataset", "align_corpus", "RunOptions", "BulkResult", "SettingsMismatchError",
           "SegmentWorker", "AlignWorker", "ENGINES", "STATE_DIR"]

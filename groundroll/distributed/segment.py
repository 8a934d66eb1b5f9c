"""Bulk text-prompted segmentation: :func:`segment_dataset`.

The images are cut into shards of consecutive items. A worker holds the model (loaded
once) and segments batches of images, writing each image's output set exactly as
``groundroll segment`` does (:meth:`~groundroll.grounding.Segmentation.save`). The
driver collects one small result row per image; when every image of a shard is back it
records the shard as done (:mod:`groundroll.distributed._state`). At the end the
records give the combined COCO file, the failures file and, optionally, a Parquet file
of RLE masks.

Engines: ``"local"`` runs the worker in this process; ``"ray"`` runs a pool of workers
as Ray Data actors (``map_batches`` with a callable class).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .. import grounding, zoo
from .._atomic import check_writable, refuse_symlink
from .._extras import MissingExtraError
from .._json import jsonable
from .._options import call_keywords, check_segment_options, merge_keywords, options_object
from ..grounding._model import DEFAULT_MODEL
from ..grounding.options import SegmentOptions, check_prompts
from ._engine import (BulkResult, as_path, import_ray, json_lines,
                      map_batches, pool_options, progress_bar, ray_results, ray_start,
                      result_rows, worker_threads)
from ._inputs import Items, resolve_images
from .options import RunOptions, run_options
from ._state import (RunState, Shard, describe_missing, plan_shards,
                     write_if_changed)

__all__ = ["segment_dataset", "STATE_DIR", "BATCH_SIZE", "SHARD_SIZE"]

#: Folder inside ``out`` that holds the run manifest and the shard records.
STATE_DIR = "_groundroll_run"

#: Images per ``map_batches`` call, and per shard, when the caller does not say.
BATCH_SIZE, SHARD_SIZE = 8, 64

#: The run's combined outputs in ``out``: no image's own files may take these names.
COMBINED = {"coco": "coco.json", "failures": "failures.jsonl", "parquet": "masks.parquet"}

# ----------------------------------------------------------------------------- worker


def _decode(value):
    """An image cell of a Ray Data batch: encoded bytes, a dict with bytes, or pixels."""
    if isinstance(value, dict):
        value = value.get("bytes") if value.get("bytes") is not None else value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        from PIL import Image

        with Image.open(io.BytesIO(bytes(value))) as im:
            im.load()
            return im.copy()
    return value


class SegmentWorker:
    """Callable class for Ray Data ``map_batches`` (and the local engine): loads the
    model once, then segments batches of images and writes their output sets.

    A batch is a dict of columns ``key`` (output stem), ``shard`` and ``ref`` (a path or
    a ``datasets`` row index), or ``key``, ``shard`` and ``image`` (pixels or encoded
    bytes). The result has one row per image: ``key``, ``shard``, ``ok``, ``error``,
    ``height``, ``width``, ``annotations`` (COCO, JSON text), ``pid``.

    An image that cannot be read or segmented becomes a row with ``ok`` false and the
    reason in ``error``; the other images of the batch go on.
    """

    def __init__(self, *, model, prompts: Sequence[str],
                 options: SegmentOptions | dict | None, out: str,
                 device: str = "cpu", threads: int | None = None, dataset=None,
                 image_column: str = "image"):
        import os

        worker_threads(threads)
        self.prompts = list(prompts)
        self.options = options_object(SegmentOptions, options, what="SegmentWorker")
        self.out = Path(out)
        self.dataset = dataset
        self.image_column = image_column
        self.pid = os.getpid()
        bundle = zoo.load(model, device=device) if isinstance(model, str) else model
        self.model_key = model if isinstance(model, str) else "model"
        self.cache = {self.model_key: grounding.resolve_model(bundle)}

    def _image(self, batch: dict, i: int):
        if "image" in batch:
            return _decode(batch["image"][i])
        ref = batch["ref"][i]
        if self.dataset is not None:
            return self.dataset[int(ref)][self.image_column]
        return str(ref)

    def segment_one(self, image, key: str) -> dict:
        seg = grounding.segment(image, self.prompts, model=self.model_key, cache=self.cache,
                                 options=self.options)
        seg.save(self.out, stem=key, force=True)  # a redone shard overwrites its own files
        h, w = seg.labels.shape
        return {"height": int(h), "width": int(w),
                "annotations": json.dumps(seg.to_coco(image_id=0, start_id=1))}

    def __call__(self, batch: dict) -> dict:
        keys = [str(k) for k in batch["key"]]
        rows = []
        for i, key in enumerate(keys):
            row = {"ok": True, "error": "", "height": 0, "width": 0, "annotations": "[]"}
            try:
                row.update(self.segment_one(self._image(batch, i), key))
            except Exception as err:  # one bad image must not stop the batch
                row.update(ok=False, error=f"{type(err).__name__}: {err}")
            rows.append(row)
        return {
            "key": np.array(keys, dtype=object),
            "shard": np.array([str(s) for s in batch["shard"]], dtype=object),
            "ok": np.array([r["ok"] for r in rows], dtype=bool),
            "error": np.array([r["error"] for r in rows], dtype=object),
            "height": np.array([r["height"] for r in rows], dtype=np.int64),
            "width": np.array([r["width"] for r in rows], dtype=np.int64),
            "annotations": np.array([r["annotations"] for r in rows], dtype=object),
            "pid": np.full(len(keys), self.pid, dtype=np.int64),
        }


def _tag_rows(batch: dict, *, shard_of: dict, key_column: str, image_column: str) -> dict:
    """Ray input datasets: keep rows of pending shards, named by key and shard."""
    keys = [str(k) for k in batch[key_column]]
    keep = [i for i, k in enumerate(keys) if k in shard_of]
    images = np.empty(len(keep), dtype=object)  # one cell per image, whatever its shape
    for j, i in enumerate(keep):
        images[j] = batch[image_column][i]
    return {"key": np.array([keys[i] for i in keep], dtype=object),
            "shard": np.array([shard_of[keys[i]] for i in keep], dtype=object),
            "image": images}


# ----------------------------------------------------------------------------- engines


def _local_rows(items: Items, pending: list[Shard], worker_kwargs: dict,
                batch_size: int) -> Iterator[dict]:
    worker = SegmentWorker(**worker_kwargs)
    if items.kind == "ray":
        shard_of = _shard_of(items, pending)
        for batch in items.dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            tagged = _tag_rows(batch, shard_of=shard_of, key_column=items.key_column,
                               image_column=items.image_column)
            if len(tagged["key"]):
                yield from result_rows(worker(tagged))
        return
    for shard in pending:
        for start in range(shard.start, shard.stop, batch_size):
            stop = min(start + batch_size, shard.stop)
            batch = {"key": np.array(items.keys[start:stop], dtype=object),
                     "shard": np.array([shard.id] * (stop - start), dtype=object),
                     "ref": np.array(items.refs[start:stop], dtype=object)}
            yield from result_rows(worker(batch))


def _shard_of(items: Items, pending: list[Shard]) -> dict:
    return {items.keys[i]: s.id for s in pending for i in range(s.start, s.stop)}


def _ray_rows(items: Items, pending: list[Shard], worker_kwargs: dict,
              run: RunOptions) -> Iterator[dict]:
    ray = ray_start(run.address)
    options, device = pool_options(ray, workers=run.workers,
                                   gpus_per_worker=run.gpus_per_worker,
                                   threads_per_worker=run.threads_per_worker,
                                   retries=run.retries)
    kwargs = dict(worker_kwargs, device=device, threads=run.threads_per_worker)
    if items.kind == "ray":
        tag = functools.partial(_tag_rows, shard_of=_shard_of(items, pending),
                                key_column=items.key_column, image_column=items.image_column)
        ds = items.dataset.map_batches(tag, batch_format="numpy")
    else:
        rows = [{"key": items.keys[i], "shard": s.id, "ref": items.refs[i]}
                for s in pending for i in range(s.start, s.stop)]
        ds = ray.data.from_items(rows)
        if items.kind == "hf":
            kwargs["dataset"] = items.dataset
            kwargs["image_column"] = items.image_column
    out = map_batches(ds, SegmentWorker, batch_size=run.batch_size, constructor=kwargs,
                      options=options)
    yield from ray_results(ray, out, result_rows)


# ----------------------------------------------------------------------------- outputs


def _planned_files(out: Path, prompts: Sequence[str], keys: Iterable[str]) -> Iterator[Path]:
    for key in keys:
        yield from grounding.output_paths(out, prompts, stem=key).values()


def _file_names(prompts: Sequence[str], key: str) -> list[str]:
    return [p.name for p in grounding.output_paths(Path("."), prompts, stem=key).values()]


def check_output_names(keys: Sequence[str], prompts: Sequence[str]) -> None:
    """Every file of the run has its own name: no image's file is one of the combined
    outputs (an image ``coco.png`` would write ``coco.json``), the state folder, or a
    file of another image (stem ``a`` with prompt ``labels`` and stem ``a_0`` both
    write ``a_0_labels.png``).

    Raises
    ------
    ValueError
        The first clash, naming the stems and what to do.
    """
    owner = {name: None for name in COMBINED.values()}
    owner[STATE_DIR] = None
    for key in keys:
        for name in _file_names(prompts, key):
            if name in owner:
                other = owner[name]
                what = (f"the output of image stem {other!r}" if other is not None
                        else "a combined output of the run")
                raise ValueError(
                    f"image stem {key!r} would write {name}, which is {what}; rename the"
                    " image, or list the images in a manifest (.json: [{\"path\": ...,"
                    " \"id\": ...}]) to give it another output stem")
            owner[name] = key


def _valid_annotation(ann) -> bool:
    seg = ann.get("segmentation") if isinstance(ann, dict) else None
    return (isinstance(seg, dict) and isinstance(seg.get("counts"), str)
            and _ints(seg.get("size"), 2) and isinstance(ann.get("category_id"), int)
            and isinstance(ann.get("category_name"), str) and _numbers(ann.get("bbox"), 4)
            and _numbers([ann.get("area"), ann.get("score")], 2))


def _ints(value, n: int) -> bool:
    return (isinstance(value, list) and len(value) == n
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value))


def _numbers(value, n: int) -> bool:
    import math

    return (isinstance(value, list) and len(value) == n
            and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                    and math.isfinite(v) for v in value))


def _record_valid(items: Items, shard: Shard, record: dict) -> bool:
    """A done record read back on resume: one entry per image of ``shard``, in order,
    each with the fields the combined outputs are built from."""
    images = record.get("images")
    if not isinstance(images, list) or len(images) != shard.size:
        return False
    for i, entry in zip(range(shard.start, shard.stop), images):
        if not isinstance(entry, dict) or entry.get("key") != items.keys[i]:
            return False
        if not isinstance(entry.get("name"), str) or not isinstance(entry.get("ok"), bool):
            return False
        if not isinstance(entry.get("error"), str):
            return False
        if entry["ok"] and not (_ints([entry.get("height"), entry.get("width")], 2)
                                and isinstance(entry.get("annotations"), list)
                                and all(map(_valid_annotation, entry["annotations"]))):
            return False
    return True


def _combined(state: RunState, items: Items, prompts: Sequence[str], settings: dict):
    images, annotations, failures, rle_rows = [], [], [], []
    position = 0
    for record in state.records():
        for entry in record["images"]:
            position += 1
            if not entry["ok"]:
                failures.append({"key": entry["key"], "image": entry["name"],
                                 "error": entry["error"]})
                continue
            images.append({"id": position, "file_name": entry["name"], "stem": entry["key"],
                           "height": entry["height"], "width": entry["width"]})
            for ann in entry["annotations"]:
                ann = dict(ann, id=len(annotations) + 1, image_id=position)
                annotations.append(ann)
                rle_rows.append(ann)
    coco = {"info": {"description": "groundroll segment_dataset",
                     "settings": settings},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": p, "supercategory": "prompt"}
                           for k, p in enumerate(prompts)]}
    return coco, failures, rle_rows


def _parquet_bytes(rows: list[dict], images: list[dict]) -> bytes:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError(
            'rle_parquet=True needs pyarrow: pip install "groundroll[parquet]"') from None
    stems = {im["id"]: im["stem"] for im in images}
    table = pa.table({
        "image_id": pa.array([r["image_id"] for r in rows], pa.int64()),
        "stem": pa.array([stems[r["image_id"]] for r in rows], pa.string()),
        "category_id": pa.array([r["category_id"] for r in rows], pa.int32()),
        "prompt": pa.array([r["category_name"] for r in rows], pa.string()),
        "height": pa.array([r["segmentation"]["size"][0] for r in rows], pa.int32()),
        "width": pa.array([r["segmentation"]["size"][1] for r in rows], pa.int32()),
        "rle_counts": pa.array([r["segmentation"]["counts"] for r in rows], pa.string()),
        "area": pa.array([r["area"] for r in rows], pa.float64()),
        "bbox": pa.array([r["bbox"] for r in rows], pa.list_(pa.float64())),
        "score": pa.array([r["score"] for r in rows], pa.float64()),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _finish(state: RunState, items: Items, out: Path, prompts, settings,
            rle_parquet: bool) -> tuple[dict, list, int]:
    coco, failures, rle_rows = _combined(state, items, prompts, settings)
    files = {"coco": out / COMBINED["coco"], "failures": out / COMBINED["failures"]}
    blobs = {"coco": (json.dumps(coco) + "\n").encode(),
             "failures": json_lines(failures)}
    if rle_parquet:
        files["parquet"] = out / COMBINED["parquet"]
        blobs["parquet"] = _parquet_bytes(rle_rows, coco["images"])
    written = [files[k] for k in files if write_if_changed(files[k], blobs[k])]
    return files, written, len(failures)


# ----------------------------------------------------------------------------- api


def _model_name(model) -> str:
    if isinstance(model, str):
        return model
    name = getattr(model, "name", None)
    if not name:
        raise TypeError("model must be a spec string for groundroll.zoo.load or a Bundle"
                        " with a name")
    return name


#: Options recorded with a run's settings whatever their value (older runs recorded
#: these; the others are recorded when they differ from their defaults).
_ALWAYS_RECORDED = ("method", "background", "mask_threshold", "refine", "templates",
                    "min_size", "fill_holes", "max_side")


def _recorded(options: SegmentOptions) -> dict:
    """The segmentation options as a run records them in its settings."""
    given = {name: getattr(options, name) for name in _ALWAYS_RECORDED}
    given.update(background=check_prompts(options.background or [],
                                          "background prompts") or None,
                 templates=list(options.templates) if options.templates else None,
                 min_size=int(options.min_size), fill_holes=bool(options.fill_holes),
                 max_side=int(options.max_side))
    for f in dataclasses.fields(SegmentOptions):
        value = getattr(options, f.name)
        if f.name not in given and value is not f.default and value != f.default:
            given[f.name] = value
    return given


def _check_model_spec(model) -> None:
    if isinstance(model, str) and model.startswith("bundled:"):
        if model.split(":", 1)[1] not in zoo.bundled():
            raise ValueError(f"no bundled model {model!r}; bundled models: {zoo.bundled()}")


def _redo_missing(state: RunState, prompts) -> None:
    """Done shards whose output files went missing are done again (listed first)."""
    missing, shards = [], []
    for shard_id, record in state.done.items():
        gone = [str(state.folder.parent / name) for entry in record["images"] if entry["ok"]
                for name in _file_names(prompts, entry["key"])
                if not (state.folder.parent / name).is_file()]
        if gone:
            missing.extend(gone)
            shards.append(shard_id)
    if missing:
        warnings.warn(describe_missing(missing, what="output file(s) of completed shards are"
                                       f" missing; {len(shards)} shard(s) will be redone"),
                      stacklevel=3)
        state.forget(shards)


def segment_dataset(
    images,
    prompts: Sequence[str],
    *,
    model: Any = DEFAULT_MODEL,
    method: str | None = None,
    out,
    background: Sequence[str] | None = None,
    mask_threshold: float | None = None,
    refine: str | None = None,
    templates: Sequence[str] | None = None,
    min_size: int = 0,
    fill_holes: bool = False,
    max_side: int = 1024,
    options: SegmentOptions | dict | None = None,
    engine: str = "ray",
    workers: int = 1,
    batch_size: int | None = None,
    shard_size: int | None = None,
    resume: bool = False,
    force: bool = False,
    rle_parquet: bool = False,
    image_column: str = "image",
    gpus_per_worker: float | None = None,
    threads_per_worker: int = 1,
    retries: int = 3,
    address: str | None = None,
    progress: bool = True,
    device: str | None = None,
    run: RunOptions | None = None,
    segment_options: None = None,
) -> BulkResult:
    """Segment an image collection with text prompts, on one process or a Ray cluster.

    Every image gets the output set of :meth:`groundroll.grounding.Segmentation.save`
    (``<stem>_labels.png``, ``<stem>_<k>_<prompt>.png``, ``<stem>_overlay.png``,
    ``<stem>.json``) in ``out``; at the end ``out/coco.json`` holds every annotation
    (COCO, RLE masks, image ids in input order), ``out/failures.jsonl`` one line per
    image that failed with its reason, and with ``rle_parquet`` ``out/masks.parquet``
    one row per mask.

    Parameters
    ----------
    images : str, PathLike, list of paths, datasets.Dataset or ray.data.Dataset
        A folder (its image files, sorted by name), an image file, a list of paths, a
        manifest (``.json``/``.jsonl``: a list of paths or of ``{"path", "id"}`` objects,
        or ``{"images": [...]}``; ``.parquet``: a ``path`` column and an optional ``id``
        column; relative paths are relative to the manifest), a ``datasets.Dataset``
        (column ``image_column``; an ``id`` column names the outputs, else the row
        number) or a ``ray.data.Dataset`` (a ``path`` column, e.g.
        ``ray.data.read_images(..., include_paths=True)``, or ``image_column`` and
        ``id`` columns). Output stems are the file stems or the ids, and must be unique.
    prompts : sequence of str
        Label ``k + 1`` is ``prompts[k]``.
    model : str or Bundle
        A :func:`groundroll.zoo.load` spec. ``engine="ray"`` needs a spec string: each
        worker loads its own copy once.
    method, background, mask_threshold, refine, templates, min_size, fill_holes, max_side
        As in :func:`groundroll.segment` (None keeps its default).
    options : SegmentOptions or dict, optional
        Every option of :func:`groundroll.segment` as one object (or a dict of its
        fields; an unknown name is a TypeError listing the accepted ones), handed
        whole to every image's call: the keywords above and the others
        (``logit_scale``, ``normalize``, ``window``, ``profile``, ``source_options``,
        ...). A keyword given beside it with a value other than its default replaces
        that field. Recorded with the settings.
    out : str or PathLike
        Output folder; the run state lives in ``out/_groundroll_run``.
    engine : {"ray", "local"}
        ``"local"``: this process. ``"ray"``: Ray Data actors on the connected cluster.
    workers : int
        Ray actors, each holding one model (``engine="local"``: must be 1).
    batch_size : int, optional
        Images per ``map_batches`` call (default :data:`BATCH_SIZE`, 8).
    shard_size : int, optional
        Images per shard, the unit of resumption (default :data:`SHARD_SIZE`, 64).
        Recorded with the settings.
    resume : bool
        Continue the run in ``out``: shards recorded as done are skipped. The settings
        (model, method, prompts and every option that changes the outputs) must be the
        ones ``out`` was made with.
    force : bool
        Start over in an ``out`` that holds outputs or an earlier run.
    rle_parquet : bool
        Also write ``out/masks.parquet``.
    image_column : str
        Image column of a ``datasets.Dataset`` or ``ray.data.Dataset``.
    gpus_per_worker : float, optional
        GPUs per Ray actor; default 1 when the cluster has GPUs, else 0 (CPU).
    threads_per_worker : int
        CPUs each Ray actor reserves and torch threads it uses.
    retries : int
        Times Ray retries a batch whose worker process died (the worker restarts).
    address : str, optional
        Ray cluster address for ``ray.init`` when Ray is not connected yet (default
        ``$RAY_ADDRESS``, else a local Ray is started).
    device : str, optional
        ``engine="local"``: where the model is loaded and runs (default the CPU).
        Ray actors take a GPU each when the cluster has GPUs (``gpus_per_worker``), so
        with ``engine="ray"`` this must stay unset.
    progress : bool
        Show a progress bar over images (stderr).
    run : RunOptions, optional
        ``engine`` to ``progress`` as one object; a keyword given beside it with a
        value other than its default replaces that field.
    segment_options : None
        The former name of ``options``: passing it is a TypeError that says so.

    Returns
    -------
    BulkResult

    Raises
    ------
    FileNotFoundError
        Image files that do not exist (listed before anything runs).
    FileExistsError
        ``out`` holds outputs or an earlier run and neither ``resume`` nor ``force``.
    SettingsMismatchError
        ``resume`` and ``out`` was made with other settings (the differences are listed).
    ValueError
        Bad prompts or options, or colliding output names (two images' files, or an
        image's file and a combined output such as ``coco.json``).
    OutputPathError
        ``out/_groundroll_run`` is a symbolic link (nothing is written through it).

    Examples
    --------
    >>> from groundroll.distributed import segment_dataset
    >>> run = segment_dataset("scenes/", ["red circle", "blue star"],
    ...                       model="bundled:shapes-clip", out="labels/",
    ...                       engine="ray", workers=2)             # doctest: +SKIP
    >>> run.files["coco"]                                           # doctest: +SKIP
    PosixPath('labels/coco.json')
    """
    if segment_options is not None:
        raise TypeError("segment_dataset() takes the options of groundroll.segment as"
                        " options= (a SegmentOptions or a dict of its fields), not"
                        " segment_options=")
    started = time.perf_counter()
    options = merge_keywords(SegmentOptions, options,
                             call_keywords(SegmentOptions, locals()),
                             what="segment_dataset()")
    run = run_options(run, locals(), what="segment_dataset()", batch_size=BATCH_SIZE,
                      shard_size=SHARD_SIZE)
    if device is not None and run.engine != "local":
        raise ValueError("device= places the model of engine='local'; Ray actors get a"
                         " GPU each through gpus_per_worker, so leave device unset")
    prompts = check_prompts(prompts or [])
    check_segment_options(prompts=prompts)
    if run.engine == "ray" and not isinstance(model, str):
        raise TypeError("engine='ray' needs the model as a spec string (each worker loads"
                        " its own copy), e.g. 'bundled:shapes-clip'")
    _check_model_spec(model)
    if run.engine == "ray":
        import_ray()  # fail before any work when Ray is missing

    items = resolve_images(images, image_column=image_column)
    check_output_names(items.keys, prompts)
    out = as_path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out {out} exists and is not a folder")
    settings = {"task": "segment", "model": _model_name(model), "prompts": prompts,
                "shard_size": int(run.shard_size),
                **jsonable(_recorded(options), other=str)}
    shards = plan_shards(items.keys, run.shard_size)
    state_dir = out / STATE_DIR
    refuse_symlink(state_dir, "the run state folder")
    if not RunState.exists(state_dir) and not run.force and out.is_dir():
        combined = [out / COMBINED[k] for k in COMBINED if k != "parquet" or rle_parquet]
        check_writable([*_planned_files(out, prompts, items.keys), *combined], force=False)
    out.mkdir(parents=True, exist_ok=True)
    state = RunState.open(state_dir, settings=settings, shards=shards, resume=run.resume,
                          force=run.force, valid=functools.partial(_record_valid, items))
    if run.resume:
        _redo_missing(state, prompts)
    pending = state.pending()
    skipped = sum(s.size for s in shards) - sum(s.size for s in pending)

    processed = 0
    if pending:
        worker_kwargs = dict(model=model, prompts=prompts, options=options, out=str(out))
        if items.kind == "hf":
            worker_kwargs.update(dataset=items.dataset, image_column=items.image_column)
        if run.engine == "local":
            rows = _local_rows(items, pending, dict(worker_kwargs, device=device or "cpu"),
                               run.batch_size)
        else:
            worker_kwargs.pop("dataset", None)
            worker_kwargs.pop("image_column", None)
            rows = _ray_rows(items, pending, worker_kwargs, run)
        processed = _collect(rows, state, items, pending, skipped, run.progress)

    files, written, failed = _finish(state, items, out, prompts, settings, rle_parquet)
    return BulkResult(out=out, total=len(items), processed=processed, skipped=skipped,
                      failed=failed, shards=len(shards), files=files, written=written,
                      seconds=time.perf_counter() - started)


def _collect(rows: Iterable[dict], state: RunState, items: Items, pending: list[Shard],
             skipped: int, progress: bool) -> int:
    """Gather result rows (any order) and record each shard once all its images are in."""
    by_id = {s.id: s for s in pending}
    received: dict[str, dict[str, dict]] = {s.id: {} for s in pending}
    processed = 0
    bar = progress_bar(total=len(items), initial=skipped, unit="image", desc="segment",
                       enabled=progress)
    try:
        for row in rows:
            shard_id = row["shard"]
            got = received.get(shard_id)
            if got is None or row["key"] in got:
                continue  # a retried batch delivered again
            got[row["key"]] = row
            processed += 1
            bar.update(1)
            shard = by_id[shard_id]
            if len(got) == shard.size:
                entries = []
                for i in range(shard.start, shard.stop):
                    r = got[items.keys[i]]
                    entries.append({"key": r["key"], "name": items.names[i], "ok": r["ok"],
                                    "error": r["error"], "height": r["height"],
                                    "width": r["width"],
                                    "annotations": json.loads(r["annotations"])})
                state.complete(shard, {"images": entries})
                del received[shard_id]
    finally:
        bar.close()
    if received:
        left = sorted(received)
        raise RuntimeError(f"{len(left)} shard(s) came back incomplete ({left[:5]}); run"
                           " again with resume to finish them")
    return processed

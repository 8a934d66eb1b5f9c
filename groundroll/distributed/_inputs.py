"""Image collections for :func:`segment_dataset`: folders, path lists, manifests, datasets.

Every source becomes an ordered list of :class:`Items` on the driver: one key per image
(the stem of its output files, unique) and a reference the workers resolve (a path, a
row of a ``datasets.Dataset``, or a row of a ``ray.data.Dataset`` that carries the
image itself). Only keys and references travel to the driver; images are decoded by the
workers.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .._extras import MissingExtraError
from ._state import describe_missing, missing_files

__all__ = ["Items", "resolve_images", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
_BAD_KEY = re.compile(r"[/\\\0]")


@dataclass
class Items:
    """Keys and references of the images of one job, in processing order.

    ``kind`` is ``"path"`` (``refs`` are file paths), ``"hf"`` (``refs`` are row
    indices of ``dataset``, a ``datasets.Dataset``) or ``"ray"`` (``refs`` are the keys
    themselves, ``dataset`` a ``ray.data.Dataset`` with the image in ``image_column``
    and the key in ``key_column``).
    """

    kind: str
    keys: list[str]
    refs: list[Any]
    names: list[str]
    dataset: Any = None
    image_column: str = "image"
    key_column: str | None = None
    origin: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)


def _check_keys(keys: Sequence[str], origin: str) -> None:
    seen: dict[str, int] = {}
    dupes = []
    for k in keys:
        if not k or _BAD_KEY.search(k) or k in (".", ".."):
            raise ValueError(f"{origin}: {k!r} cannot name output files (empty, or holds a"
                             " path separator); give each image an 'id' without one")
        seen[k] = seen.get(k, 0) + 1
        if seen[k] == 2:
            dupes.append(k)
    if dupes:
        shown = ", ".join(dupes[:10]) + (" ..." if len(dupes) > 10 else "")
        raise ValueError(f"{origin}: {len(dupes)} output stem(s) occur more than once"
                         f" ({shown}); their outputs would collide. Rename the files or give"
                         " each image a unique 'id' in a manifest")


def _from_paths(paths: Sequence, ids: Sequence | None, origin: str) -> Items:
    paths = [str(p) for p in paths]
    missing = missing_files(paths)
    if missing:
        raise FileNotFoundError(f"{origin}: " + describe_missing(
            missing, what="image file(s) not found (nothing was processed)"))
    keys = [str(i) for i in ids] if ids is not None else [Path(p).stem for p in paths]
    _check_keys(keys, origin)
    return Items("path", keys, paths, list(paths), origin=origin)


def _folder(path: Path) -> Items:
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
    return _from_paths(files, None, f"folder {path}")


def _records_to_items(records: list, base: Path, origin: str) -> Items:
    paths, ids = [], []
    for n, rec in enumerate(records):
        if isinstance(rec, str):
            p, i = rec, None
        elif isinstance(rec, dict):
            p = rec.get("path", rec.get("file_name"))
            i = rec.get("id")
            if not isinstance(p, str):
                raise ValueError(f"{origin}: entry {n} has no 'path' (or 'file_name')"
                                 f" string: {rec!r}")
        else:
            raise ValueError(f"{origin}: entry {n} must be a path string or an object with"
                             f" 'path', got {type(rec).__name__}")
        paths.append(str(base / p) if not os.path.isabs(p) else p)
        ids.append(i)
    if not paths:
        raise ValueError(f"{origin} lists no images")
    given = [i for i in ids if i is not None]
    if given and len(given) != len(ids):
        raise ValueError(f"{origin}: either every entry has an 'id' or none has")
    return _from_paths(paths, [str(i) for i in ids] if given else None, origin)


def _json_manifest(path: Path) -> Items:
    origin = f"manifest {path}"
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".jsonl":
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{origin} is not valid JSON: {err}") from None
    if isinstance(data, dict):
        if "images" not in data:
            raise ValueError(f"{origin}: expected a list of images or an object with an"
                             " 'images' list")
        data = data["images"]
    if not isinstance(data, list):
        raise ValueError(f"{origin}: expected a list of images, got {type(data).__name__}")
    return _records_to_items(data, path.parent, origin)


def _parquet_manifest(path: Path) -> Items:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with datasets and ray
        raise MissingExtraError("reading a Parquet manifest needs pyarrow:"
                                ' pip install "groundroll[parquet]"') from None
    origin = f"manifest {path}"
    table = pq.read_table(path)
    column = next((c for c in ("path", "file_name") if c in table.column_names), None)
    if column is None:
        raise ValueError(f"{origin}: needs a 'path' column (has {table.column_names})")
    records = [{"path": p, **({"id": i} if i is not None else {})} for p, i in zip(
        table.column(column).to_pylist(),
        table.column("id").to_pylist() if "id" in table.column_names
        else [None] * table.num_rows)]
    return _records_to_items(records, path.parent, origin)


def _hf_dataset(ds, image_column: str) -> Items:
    origin = "datasets.Dataset"
    if image_column not in ds.column_names:
        raise ValueError(f"{origin} has no column {image_column!r} (columns"
                         f" {ds.column_names}); pass image_column=")
    if "id" in ds.column_names:
        keys = [str(i) for i in ds["id"]]
    else:
        width = max(6, len(str(len(ds))))
        keys = [f"{i:0{width}d}" for i in range(len(ds))]
    _check_keys(keys, origin)
    return Items("hf", keys, list(range(len(ds))), list(keys), dataset=ds,
                 image_column=image_column, origin=origin)


def _ray_dataset(ds, image_column: str) -> Items:
    origin = "ray.data.Dataset"
    columns = list(ds.schema().names)
    if "path" in columns:
        paths = [r["path"] for r in ds.select_columns(["path"]).take_all()]
        return _from_paths(paths, None, origin)
    if image_column not in columns or "id" not in columns:
        raise ValueError(f"{origin} needs a 'path' column, or an {image_column!r} column"
                         f" and an 'id' column (has {columns})")
    keys = sorted(str(r["id"]) for r in ds.select_columns(["id"]).take_all())
    _check_keys(keys, origin)
    return Items("ray", keys, list(keys), list(keys), dataset=ds, image_column=image_column,
                 key_column="id", origin=origin)


def resolve_images(images, *, image_column: str = "image") -> Items:
    """Turn any supported image source into :class:`Items` (see
    :func:`groundroll.distributed.segment_dataset` for the sources).

    Raises
    ------
    FileNotFoundError
        Image files that do not exist (all of them are listed, up to 20), or a missing
        folder or manifest.
    ValueError
        Output stems that would collide, an empty source, an unreadable manifest.
    """
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if path.is_dir():
            return _folder(path)
        if not path.exists():
            raise FileNotFoundError(f"no such image folder, manifest or image: {path}")
        suffix = path.suffix.lower()
        if suffix in (".json", ".jsonl"):
            return _json_manifest(path)
        if suffix in (".parquet", ".pq"):
            return _parquet_manifest(path)
        if suffix in IMAGE_SUFFIXES:
            return _from_paths([path], None, f"image {path}")
        raise ValueError(f"{path}: expected a folder, a .json/.jsonl/.parquet manifest or"
                         " an image file")
    module = type(images).__module__
    if module.startswith("datasets") and hasattr(images, "column_names"):
        return _hf_dataset(images, image_column)
    if module.startswith("ray.data") and hasattr(images, "map_batches"):
        return _ray_dataset(images, image_column)
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("no images given")
        if all(isinstance(p, (str, os.PathLike)) for p in images):
            return _from_paths(list(images), None, "image list")
    raise TypeError("images must be a folder, a list of paths, a .json/.jsonl/.parquet"
                    " manifest, a datasets.Dataset or a ray.data.Dataset; got"
                    f" {type(images).__name__}")

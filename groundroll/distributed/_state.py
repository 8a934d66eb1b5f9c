"""Run state of a resumable bulk job: the plan, the settings and the completed shards.

Layout inside a job's state folder::

    run.json            settings, engine-independent plan (shard ids and sizes), format
    done/<shard>.json   one record per completed shard, written whole (atomically)

A shard counts as done when, and only when, its record exists: the record is written
after every output of the shard is in place, and it is written to a temporary file and
renamed, so an interrupted run can leave outputs of an unfinished shard behind (they
are rewritten on resume) but never a record of a shard that is not complete.

Everything read back is checked against its schema: a ``run.json`` that is not a
manifest of this format is a :class:`SettingsMismatchError`; a record that does not
match its shard (hand-edited, truncated, of another release) is not trusted and the
shard is done again. The state folder, ``done/`` and the files in them are never
symbolic links (:class:`groundroll._atomic.OutputPathError`): a run writes and deletes
only inside its own folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .._atomic import atomic_write, refuse_symlink

__all__ = ["Shard", "RunState", "SettingsMismatchError", "plan_shards", "digest"]

FORMAT = "groundroll-run/1"


class SettingsMismatchError(ValueError):
    """The output folder holds a run made with other settings than the ones given."""


def digest(parts: Iterable[str], *, size: int = 12) -> str:
    """Hex SHA-1 prefix of the parts joined by NUL (deterministic across processes)."""
    h = hashlib.sha1()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:size]


@dataclass(frozen=True)
class Shard:
    """Items ``start:stop`` of the input; ``id`` depends on the position and content."""

    id: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_shards(keys: Sequence[str], shard_size: int) -> list[Shard]:
    """Cut ``keys`` into consecutive shards of ``shard_size`` items.

    A shard id is its index and a digest of the keys it holds, so the same input gives
    the same ids in every run, and a shard whose items changed gets a new id.

    Examples
    --------
    >>> [s.id[:6] for s in plan_shards(["a", "b", "c"], 2)]
    ['000000', '000001']
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    shards = []
    for k, start in enumerate(range(0, len(keys), shard_size)):
        stop = min(start + shard_size, len(keys))
        shards.append(Shard(f"{k:06d}-{digest(keys[start:stop], size=10)}", start, stop))
    return shards


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode()


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically unless the file already holds exactly it.

    Returns whether anything was written.
    """
    try:
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    with atomic_write(path, force=True) as f:
        f.write(data)
    return True


#: Larger state files are not ours (a run manifest lists shard ids and sizes).
_MAX_STATE_BYTES = 256 << 20


def read_json(path: Path):
    """The JSON value in ``path``, or None if it cannot be read or parsed (missing,
    oversized, not UTF-8, malformed, nested too deeply)."""
    try:
        if path.stat().st_size > _MAX_STATE_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def read_run_manifest(path: Path) -> dict:
    """``run.json`` of a run, checked: a JSON object of :data:`FORMAT` whose
    ``settings`` is an object.

    Raises
    ------
    SettingsMismatchError
        Anything else, with what was wrong and what to do.
    """
    recorded = read_json(path)
    hint = "; start over with force, or use another output location"
    if recorded is None:
        raise SettingsMismatchError(f"cannot read the run manifest {path} (missing,"
                                    f" unreadable or not JSON){hint}")
    if not isinstance(recorded, dict) or recorded.get("format") != FORMAT:
        found = recorded.get("format") if isinstance(recorded, dict) else type(
            recorded).__name__
        raise SettingsMismatchError(f"{path} is not a {FORMAT} manifest (found"
                                    f" {str(found)[:60]!r}){hint}")
    if not isinstance(recorded.get("settings"), dict):
        raise SettingsMismatchError(f"{path}: 'settings' is not a JSON object{hint}")
    return recorded


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)!r} in the folder, {new.get(key)!r} now")
    return out


@dataclass
class RunState:
    """State folder of one job (see the module notes)."""

    folder: Path
    settings: dict
    shards: list[Shard]
    done: dict[str, dict] = field(default_factory=dict)
    valid: Callable[[Shard, dict], bool] | None = field(default=None, repr=False)

    @property
    def run_file(self) -> Path:
        return self.folder / "run.json"

    @property
    def done_folder(self) -> Path:
        return self.folder / "done"

    def record_path(self, shard: Shard) -> Path:
        return self.done_folder / f"{shard.id}.json"

    @staticmethod
    def exists(folder) -> bool:
        return (Path(folder) / "run.json").is_file()

    @classmethod
    def open(cls, folder, *, settings: dict, shards: list[Shard], resume: bool,
             force: bool, valid: Callable[[Shard, dict], bool] | None = None
             ) -> "RunState":
        """Start or continue the run in ``folder``.

        Parameters
        ----------
        valid : callable, optional
            ``valid(shard, record)``: whether a done record read back on resume is
            whole and belongs to ``shard`` (the job's schema). Records it refuses (and
            any that are not JSON objects naming their shard) are redone.

        Raises
        ------
        FileExistsError
            ``folder`` holds a run and neither ``resume`` nor ``force`` is set.
        SettingsMismatchError
            ``resume`` and the folder's run was made with other settings, or its
            ``run.json`` is not a run manifest.
        OutputPathError
            The state folder, its ``done`` folder or ``run.json`` is a symbolic link.
        """
        folder = Path(folder)
        state = cls(folder, json.loads(json.dumps(settings)), list(shards))
        state.valid = valid
        refuse_symlink(folder, "the run state folder")
        refuse_symlink(state.done_folder, "the run state folder")
        refuse_symlink(state.run_file, "the run manifest")
        if os.path.lexists(folder) and not folder.is_dir():
            raise NotADirectoryError(f"the run state folder {folder} exists and is not a"
                                     " folder; remove it or choose another output location")
        if cls.exists(folder):
            if resume:
                recorded = read_run_manifest(state.run_file)
                diff = _differences(recorded["settings"], state.settings)
                if diff:
                    raise SettingsMismatchError(
                        f"{folder} holds a run made with other settings; resuming would"
                        " mix outputs of two jobs:\n  " + "\n  ".join(diff) +
                        "\nuse another output location, or start over with force")
                state._read_done()
            elif force:
                if state.done_folder.is_dir():
                    shutil.rmtree(state.done_folder)
            else:
                raise FileExistsError(
                    f"{folder} holds an earlier run ({state.run_file}); pass resume to"
                    " continue it or force to start over")
        state.done_folder.mkdir(parents=True, exist_ok=True)
        write_if_changed(state.run_file, _json_bytes(state._manifest()))
        return state

    def _manifest(self) -> dict:
        return {"format": FORMAT, "settings": self.settings,
                "items": sum(s.size for s in self.shards),
                "shards": [[s.id, s.size] for s in self.shards]}

    def _read_done(self) -> None:
        by_id = {s.id: s for s in self.shards}
        for path in sorted(self.done_folder.glob("*.json")):
            shard = by_id.get(path.stem)
            if shard is None or path.is_symlink():
                continue  # a shard of an earlier input (its id no longer occurs), or a link
            record = read_json(path)
            if not isinstance(record, dict) or record.get("shard") != shard.id:
                continue  # unreadable or not this shard's: redo the shard
            try:
                ok = self.valid is None or bool(self.valid(shard, record))
            except (KeyError, TypeError, ValueError, AttributeError, IndexError):
                ok = False
            if ok:
                self.done[shard.id] = record

    def pending(self) -> list[Shard]:
        return [s for s in self.shards if s.id not in self.done]

    def forget(self, shard_ids: Iterable[str]) -> None:
        """Mark shards as not done (their records are removed)."""
        for shard_id in shard_ids:
            self.done.pop(shard_id, None)
            with_suffix = self.done_folder / f"{shard_id}.json"
            if with_suffix.exists():
                with_suffix.unlink()

    def complete(self, shard: Shard, record: dict) -> None:
        """Record ``shard`` as done; call only once all its outputs are written."""
        record = dict(record, shard=shard.id)
        with atomic_write(self.record_path(shard), force=True) as f:
            f.write(_json_bytes(record))
        self.done[shard.id] = record

    @property
    def finished(self) -> bool:
        return all(s.id in self.done for s in self.shards)

    def records(self) -> list[dict]:
        """Records of all shards in plan order (all must be done)."""
        return [self.done[s.id] for s in self.shards]


def missing_files(paths: Iterable[os.PathLike | str]) -> list[str]:
    return [str(p) for p in paths if not os.path.isfile(p)]


def describe_missing(missing: Sequence[str], *, what: str, limit: int = 20) -> str:
    shown = "\n  ".join(missing[:limit])
    more = f"\n  ... and {len(missing) - limit} more" if len(missing) > limit else ""
    return f"{len(missing)} {what}:\n  {shown}{more}"

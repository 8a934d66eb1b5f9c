"""Run state of a resumable bulk job: the plan, the settings and the completed shards.

Layout inside a job's state folder::

    run.json            settings, engine-independent plan (shard ids and sizes), format
    done/<shard>.json   one record per completed shard, written whole (atomically)

A shard counts as done when, and only when, its record exists: the record is written
after every output of the shard is in place, and it is written to a temporary file and
renamed, so an interrupted run can leave outputs of an unfinished shard behind (they
are rewritten on resume) but never a record of a shard that is not complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .._atomic import atomic_write

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
             force: bool) -> "RunState":
        """Start or continue the run in ``folder``.

        Raises
        ------
        FileExistsError
            ``folder`` holds a run and neither ``resume`` nor ``force`` is set.
        SettingsMismatchError
            ``resume`` and the folder's run was made with other settings.
        """
        folder = Path(folder)
        state = cls(folder, json.loads(json.dumps(settings)), list(shards))
        if cls.exists(folder):
            if resume:
                try:
                    recorded = json.loads(state.run_file.read_text(encoding="utf-8"))
                except (OSError, ValueError) as err:
                    raise SettingsMismatchError(
                        f"cannot read the run manifest {state.run_file}: {err}") from None
                if recorded.get("format") != FORMAT:
                    raise SettingsMismatchError(
                        f"{state.run_file} is not a {FORMAT} manifest"
                        f" (format {recorded.get('format')!r})")
                diff = _differences(recorded.get("settings", {}), state.settings)
                if diff:
                    raise SettingsMismatchError(
                        f"{folder} holds a run made with other settings; resuming would"
                        " mix outputs of two jobs:\n  " + "\n  ".join(diff) +
                        "\nuse another output location, or start over with force")
                state._read_done()
            elif force:
                shutil.rmtree(state.done_folder, ignore_errors=True)
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
        wanted = {s.id for s in self.shards}
        for path in sorted(self.done_folder.glob("*.json")):
            shard_id = path.stem
            if shard_id not in wanted:
                continue  # a shard of an earlier input; its id no longer occurs
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # unreadable: redo the shard
            if record.get("shard") == shard_id:
                self.done[shard_id] = record

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


def recorded_names(state_dir: Path, settings: dict, renamed: dict[str, str]) -> dict:
    """``settings`` with each renamed option (``renamed``: new name -> old name) under
    the old name when the run in ``state_dir`` was started by a release that recorded it
    so, so that the run can be resumed.

    Examples
    --------
    >>> recorded_names(Path("/nonexistent"), {"a": 1}, {"a": "b"})
    {'a': 1}
    """
    try:
        recorded = json.loads((Path(state_dir) / "run.json").read_text(encoding="utf-8"))
        names = set(recorded["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return settings     # RunState.open reports an unreadable manifest
    return {(renamed[k] if k in renamed and renamed[k] in names and k not in names else k): v
            for k, v in settings.items()}

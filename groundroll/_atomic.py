"""Atomic file writing for command-line outputs.

Single outputs are written to a temporary file in the destination directory and moved
into place with :func:`os.replace` only when writing succeeded, so a failed run
never leaves a half-written file behind.

Output *sets* (a segmentation's label map, masks, overlay and JSON; an alignment and
its translation) are staged whole by :class:`OutputSet`: every file is written into a
temporary folder inside the destination and moved into place only when all are
written. A manifest beside the files records what the set holds, so replacing a set
(``force``) removes the previous set's files that the new one does not have, and never
a file groundroll did not write.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator, Union

__all__ = ["atomic_write", "check_writable", "check_directory", "OutputSet",
           "manifest_files"]

PathLike = Union[str, "os.PathLike[str]"]


def _exists_message(path: Path) -> str:
    return f"{path} already exists; pass --force to overwrite it"


def check_writable(paths: Iterable[PathLike], *, force: bool = False) -> None:
    """Check that every output path can be written, before anything is written.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        Output files that a command is about to write.
    force : bool, optional
        Allow overwriting existing files.

    Raises
    ------
    FileExistsError
        If a path exists and ``force`` is false (the message names the path and
        says to pass ``--force``).
    IsADirectoryError
        If a path is an existing directory.
    FileNotFoundError
        If the parent directory of a path does not exist.
    ValueError
        If the same path is given twice.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> check_writable([os.path.join(d, "a.png"), os.path.join(d, "b.json")])
    """
    seen = set()
    for p in paths:
        path = Path(p)
        key = os.path.abspath(path)
        if key in seen:
            raise ValueError(f"output path given twice: {path}")
        seen.add(key)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory, expected a file path")
        if path.exists() and not force:
            raise FileExistsError(_exists_message(path))
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise FileNotFoundError(f"directory {parent} does not exist (for output {path})")


def _target_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(
    path: PathLike, *, force: bool = False, mode: str = "wb", encoding: str | None = None
) -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    force : bool, optional
        Overwrite ``path`` if it exists. Without it an existing file is an error.
    mode : {"wb", "w"}, optional
        Binary or text mode.
    encoding : str, optional
        Text encoding for ``mode="w"`` (default UTF-8).

    Yields
    ------
    file object
        Open handle on the temporary file (same directory as ``path``).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``force`` is false; nothing is written.

    Notes
    -----
    On an exception inside the block the temporary file is deleted, ``path`` is
    left untouched and the exception propagates.

    Examples
    --------
    >>> import tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "links.txt")
    >>> with atomic_write(out, mode="w") as f:
    ...     _ = f.write("0-0 1-1\\n")
    >>> open(out).read()
    '0-0 1-1\\n'
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(_exists_message(path))
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp creates 0600 files; give the output the permissions a plain open() would.
        os.chmod(tmp, _target_mode(path))
        if mode == "w":
            handle = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline="")
        else:
            handle = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # Re-check: another process may have created the file meanwhile.
        if path.exists() and not force:
            raise FileExistsError(_exists_message(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- sets

_MANIFEST_TOOL = "groundroll"
_STAGING_PREFIX = ".groundroll-staging-"


def check_directory(directory: PathLike) -> None:
    """Check that files can be created in ``directory`` (or in the folder that
    creating it would need), before any work is done.

    Raises
    ------
    NotADirectoryError
        ``directory`` or one of its ancestors exists and is not a directory.
    PermissionError
        The directory (or its nearest existing ancestor) is not writable.

    Examples
    --------
    >>> import tempfile
    >>> check_directory(tempfile.mkdtemp())
    """
    path = Path(directory)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise NotADirectoryError(f"{probe} exists and is not a directory (output folder"
                                 f" {path})")
    try:
        # A real probe: os.access says yes to root on a read-only mount's folders.
        fd, tmp = tempfile.mkstemp(prefix=".groundroll-probe-", dir=probe)
    except OSError as err:
        raise PermissionError(f"cannot write to {probe}: {err.strerror or err}"
                              f" (output folder {path})") from None
    os.close(fd)
    os.unlink(tmp)


def manifest_files(manifest: PathLike) -> list[str]:
    """File names a manifest written by :class:`OutputSet` lists (``[]`` if it is
    missing or not one of ours)."""
    try:
        data = json.loads(Path(manifest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("tool") != _MANIFEST_TOOL:
        return []
    return [str(n) for n in data.get("files", []) if isinstance(n, str)
            and n == Path(n).name and not n.startswith(".")]


class OutputSet:
    """Files of one run, staged in a temporary folder and moved into place together.

    Parameters
    ----------
    directory : str or os.PathLike
        Destination folder; created (with parents) if missing.
    force : bool
        Replace existing files. The previous sets named by ``manifests`` are replaced
        whole: their files that the new set does not have are removed.
    manifests : sequence of str
        Names of the manifest files (one per set; a run may commit several sets).

    Notes
    -----
    Use :meth:`add` for each file (``name`` is a plain file name inside
    ``directory``; ``manifest`` says which set it belongs to), then :meth:`commit`.
    Before :meth:`commit` nothing is visible in ``directory``; on any error the staged
    files are removed (:meth:`discard`), a folder created for the set is removed again
    and previous files are left byte-identical. :meth:`commit` first moves the files
    it replaces or removes aside, then moves the new ones in, and on failure moves
    everything back.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with OutputSet(d, manifests=[".run.manifest.json"]) as out:
    ...     _ = out.add("a.txt", b"A", manifest=".run.manifest.json")
    ...     out.commit()
    >>> sorted(os.listdir(d))
    ['.run.manifest.json', 'a.txt']
    """

    def __init__(self, directory: PathLike, *, force: bool = False,
                 manifests: tuple[str, ...] | list[str] = ()) -> None:
        self.directory = Path(directory)
        self.force = bool(force)
        self.members: dict[str, list[str]] = {m: [] for m in manifests}
        self.staging: Path | None = None
        self.created: list[Path] = []
        self.committed = False

    def __enter__(self) -> "OutputSet":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.discard()

    def open(self) -> None:
        check_directory(self.directory)
        missing = []
        probe = self.directory
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        self.directory.mkdir(parents=True, exist_ok=True)
        self.created = missing           # deepest first
        self.staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.directory))

    def path(self, name: str) -> Path:
        """Final path of ``name``."""
        return self.directory / name

    def add(self, name: str, data: bytes | str, *, manifest: str | None = None) -> Path:
        """Stage file ``name`` with ``data`` (bytes, or str written as UTF-8)."""
        if self.staging is None:
            raise RuntimeError("OutputSet.add before open()")
        if name != Path(name).name or name in ("", ".", ".."):
            raise ValueError(f"output name must be a plain file name, got {name!r}")
        target = self.path(name)
        if target.is_dir():
            raise IsADirectoryError(f"{target} is a directory, expected a file path")
        if target.exists() and not self.force:
            raise FileExistsError(_exists_message(target))
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        staged = self.staging / name
        with open(staged, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(staged, _target_mode(target))
        if manifest is not None:
            self.members.setdefault(manifest, []).append(name)
        return target

    def commit(self) -> None:
        """Move every staged file (and the manifests) into place."""
        if self.staging is None:
            raise RuntimeError("OutputSet.commit before open()")
        for manifest, names in self.members.items():
            body = json.dumps({"tool": _MANIFEST_TOOL, "files": sorted(names)}, indent=1)
            target = self.path(manifest)
            if target.exists() and not self.force and not manifest_files(target):
                raise FileExistsError(_exists_message(target))
            with open(self.staging / manifest, "w", encoding="utf-8") as f:
                f.write(body + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(self.staging / manifest, _target_mode(target))
        new = sorted(p.name for p in self.staging.iterdir() if p.is_file())
        stale = set()
        for manifest in self.members:
            stale.update(manifest_files(self.path(manifest)))
        stale = {n for n in stale - set(new) if self.path(n).is_file()}
        replaced = [n for n in new if self.path(n).exists()]
        if (replaced or stale) and not self.force:
            taken = sorted(set(replaced) | stale)[0]
            raise FileExistsError(_exists_message(self.path(taken)))
        aside = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.directory))
        moved_aside: list[str] = []
        moved_in: list[str] = []
        try:
            for name in sorted(set(replaced) | stale):
                os.replace(self.path(name), aside / name)
                moved_aside.append(name)
            for name in new:
                os.replace(self.staging / name, self.path(name))
                moved_in.append(name)
        except BaseException:
            for name in reversed(moved_in):
                with contextlib.suppress(OSError):
                    os.replace(self.path(name), self.staging / name)
            for name in reversed(moved_aside):
                with contextlib.suppress(OSError):
                    os.replace(aside / name, self.path(name))
            shutil.rmtree(aside, ignore_errors=True)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None
        self.committed = True

    def discard(self) -> None:
        """Remove the staged files and any folder created for the set."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        for folder in self.created:
            with contextlib.suppress(OSError):
                folder.rmdir()           # only if still empty
        self.created = []

"""Atomic file writing for command-line outputs.

Single outputs are written to a temporary file in the destination directory and moved
into place with :func:`os.replace` only when writing succeeded, so a failed run
never leaves a half-written file behind.

Output *sets* (a segmentation's label map, masks, overlay and JSON; an alignment and
its translation) are staged whole by :class:`OutputSet`: every file is written into a
temporary folder inside the destination and moved into place only when all are
written. A manifest beside the files records what the set holds and the SHA-256 of each
file, so replacing a set (``force``) removes the previous set's files that the new one
does not have, and never a file groundroll did not write (or one changed since). Nothing
is written or removed through a symbolic link.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator, Union

__all__ = ["atomic_write", "check_writable", "check_directory", "check_set", "OutputSet",
           "OutputPathError", "manifest_files", "read_manifest", "owned_files",
           "refuse_symlink", "sweep_staging"]

PathLike = Union[str, "os.PathLike[str]"]


def _exists_message(path: Path) -> str:
    return (f"{path} already exists; pass force=True (--force on the command line) to"
            " overwrite it")


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
#: A manifest larger than this is not one of ours (they list a few file names).
_MANIFEST_MAX_BYTES = 4 << 20
_HOST_TAG = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_STAGING_NAME = re.compile(re.escape(_STAGING_PREFIX) + r"([0-9a-f]{8})-(\d+)-")


def refuse_symlink(path: PathLike, what: str) -> None:
    """Raise if ``path`` is a symbolic link: groundroll writes and deletes only inside
    the output folder, never through a link that may point elsewhere.

    Raises
    ------
    OutputPathError
        ``path`` is a symbolic link (the message names it and says what to do).

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> os.symlink("/", os.path.join(d, "state"))
    >>> refuse_symlink(os.path.join(d, "state"), "the run state folder")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    groundroll._atomic.OutputPathError: the run state folder ... is a symbolic link; ...
    """
    if os.path.islink(path):
        raise OutputPathError(f"{what} {path} is a symbolic link; groundroll does not write"
                              " through links: remove the link or choose another output"
                              " folder")


class OutputPathError(OSError):
    """An output location groundroll refuses to use (a symbolic link, a reserved name)."""


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
        if os.path.lexists(probe) or probe.parent == probe:
            break                        # a dangling link: not a folder
        probe = probe.parent
    if os.path.lexists(probe) and not probe.is_dir():
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


def _file_name(name) -> bool:
    """A name for a file directly inside the output folder."""
    return (isinstance(name, str) and name not in ("", ".", "..") and name == Path(name).name
            and "\0" not in name)


def _plain_name(name) -> bool:
    """A name a manifest may list: a visible file directly inside the folder (never
    another manifest, a staging folder or a path elsewhere)."""
    return _file_name(name) and not name.startswith(".") and "\\" not in name


def read_manifest(manifest: PathLike) -> dict[str, str | None]:
    """The files a manifest written by :class:`OutputSet` lists, with the SHA-256 of
    each as written (None where the manifest records none: an older release's).

    Anything else (a missing, unreadable, oversized or malformed file, one that is not
    a groundroll manifest, a symbolic link, entries that are not plain file names) gives
    ``{}`` or leaves those entries out: a manifest is only ever a reason to remove files,
    so doubt means removing nothing.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> m = os.path.join(d, ".x.groundroll.json")
    >>> _ = open(m, "w").write('{"tool": "groundroll", "files": ["a.png", "../etc"]}')
    >>> read_manifest(m)
    {'a.png': None}
    """
    path = Path(manifest)
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _MANIFEST_MAX_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("tool") != _MANIFEST_TOOL:
        return {}
    files = data.get("files")
    digests = data.get("sha256")
    if not isinstance(files, list):
        return {}
    if not isinstance(digests, dict):
        digests = {}
    out: dict[str, str | None] = {}
    for name in files:
        if _plain_name(name):
            digest = digests.get(name)
            out[name] = digest if isinstance(digest, str) and _SHA256.fullmatch(digest) else None
    return out


_SHA256 = re.compile(r"[0-9a-f]{64}")


def manifest_files(manifest: PathLike) -> list[str]:
    """File names a manifest written by :class:`OutputSet` lists (``[]`` if it is
    missing or not one of ours; see :func:`read_manifest`)."""
    return list(read_manifest(manifest))


def _sha256_of(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def owned_files(directory: PathLike, manifest: str) -> list[str]:
    """Files of ``directory`` that its manifest ``manifest`` lists and that are still
    exactly as groundroll wrote them: regular files (not links) whose SHA-256 is the
    one recorded. Only these may be removed when the set is replaced; a listed file
    that was edited, replaced or never written by groundroll is left alone.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with OutputSet(d, manifests=[".m.json"]) as out:
    ...     _ = out.add("a.txt", b"A", manifest=".m.json")
    ...     out.commit()
    >>> owned_files(d, ".m.json")
    ['a.txt']
    >>> _ = open(os.path.join(d, "a.txt"), "w").write("edited by hand")
    >>> owned_files(d, ".m.json")
    []
    """
    directory = Path(directory)
    owned = []
    for name, digest in read_manifest(directory / manifest).items():
        path = directory / name
        if digest is None or path.is_symlink() or not path.is_file():
            continue
        if _sha256_of(path) == digest:
            owned.append(name)
    return owned


def check_set(directory: PathLike, names: Iterable[str], manifest: str | None = None, *,
              force: bool = False) -> None:
    """Check, before any work, that the set ``names`` (plain file names) with its
    manifest ``manifest`` can be written into ``directory``.

    The folder (or the nearest existing one that would hold it) must be writable and
    no name may be a folder; without ``force`` no name may exist, and an existing
    manifest must be ours with none of the files it owns left over (a manifest whose
    files were all deleted by hand is simply replaced).

    Raises
    ------
    NotADirectoryError, PermissionError, IsADirectoryError, FileExistsError, ValueError

    Examples
    --------
    >>> import tempfile
    >>> check_set(tempfile.mkdtemp(), ["audit.json", "audit.md"], ".audit.groundroll.json")
    """
    check_directory(directory)
    directory = Path(directory)
    names = list(names)
    for name in names:
        if not _file_name(name):
            raise ValueError(f"output name must be a plain file name, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError("two outputs share a file name")
    if not directory.is_dir():
        return
    for name in names:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(f"{path} is a directory, expected a file path")
        if os.path.lexists(path) and not force:
            raise FileExistsError(_exists_message(path))
    if manifest is None or force:
        return
    target = directory / manifest
    if os.path.lexists(target):
        if not read_manifest(target):
            raise FileExistsError(_exists_message(target))
        left = sorted(set(owned_files(directory, manifest)) - set(names))
        if left:
            raise FileExistsError(_exists_message(directory / left[0]))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def sweep_staging(directory: PathLike) -> list[str]:
    """Remove staging folders that a groundroll process on this machine left in
    ``directory`` when it was killed (its process is gone); returns their names.

    Only real folders named by :class:`OutputSet` with this machine's tag and a dead
    process id are removed; anything else (a live run's staging, another machine's on a
    shared disk, a link) is left alone.
    """
    directory = Path(directory)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _STAGING_NAME.match(entry.name)
        if not match or match.group(1) != _HOST_TAG:
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
        except OSError:
            continue
        if _pid_alive(int(match.group(2))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.name)
    return removed


def _staging_folder(directory: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{_HOST_TAG}-{os.getpid()}-",
                                 dir=directory))


class OutputSet:
    """Files of one run, staged in a temporary folder and moved into place together.

    Parameters
    ----------
    directory : str or os.PathLike
        Destination folder; created (with parents) if missing.
    force : bool
        Replace existing files. The previous sets named by ``manifests`` are replaced
        whole: their files that the new set does not have are removed, if they are
        still byte-identical to what groundroll wrote (:func:`owned_files`).
    manifests : sequence of str
        Names of the manifest files (one per set; a run may commit several sets).

    Notes
    -----
    Use :meth:`add` for each file (``name`` is a plain file name inside
    ``directory``; ``manifest`` says which set it belongs to), then :meth:`commit`.
    Before :meth:`commit` nothing is visible in ``directory``; on any error (and on an
    interrupt: :mod:`groundroll._interrupt` turns SIGTERM into one) the staged files
    are removed (:meth:`discard`), a folder created for the set is removed again and
    previous files are left byte-identical. :meth:`commit` first moves the files it
    replaces or removes aside, then moves the new ones in, and on failure moves
    everything back. A manifest records each file's SHA-256, so a file is removed
    later only if it is still the one written. Staging folders left by a killed run
    are removed by the next set opened in the same folder (:func:`sweep_staging`).

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
        self.digests: dict[str, str] = {}
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
        sweep_staging(self.directory)
        self.staging = _staging_folder(self.directory)

    def path(self, name: str) -> Path:
        """Final path of ``name``."""
        return self.directory / name

    def add(self, name: str, data: bytes | str, *, manifest: str | None = None) -> Path:
        """Stage file ``name`` with ``data`` (bytes, or str written as UTF-8)."""
        if self.staging is None:
            raise RuntimeError("OutputSet.add before open()")
        if not _file_name(name):
            raise ValueError(f"output name must be a plain file name, got {name!r}")
        target = self.path(name)
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(f"{target} is a directory, expected a file path")
        if os.path.lexists(target) and not self.force:
            raise FileExistsError(_exists_message(target))
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        staged = self.staging / name
        with open(staged, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(staged, _target_mode(target))
        self.digests[name] = hashlib.sha256(payload).hexdigest()
        if manifest is not None:
            self.members.setdefault(manifest, []).append(name)
        return target

    def commit(self) -> None:
        """Move every staged file (and the manifests) into place."""
        if self.staging is None:
            raise RuntimeError("OutputSet.commit before open()")
        ours = set()                     # existing manifests of ours: replaceable
        for manifest, names in self.members.items():
            body = json.dumps({"tool": _MANIFEST_TOOL, "files": sorted(names),
                               "sha256": {n: self.digests[n] for n in sorted(names)}},
                              indent=1)
            target = self.path(manifest)
            if os.path.lexists(target):
                if read_manifest(target):
                    ours.add(manifest)
                elif not self.force:
                    raise FileExistsError(_exists_message(target))
            with open(self.staging / manifest, "w", encoding="utf-8") as f:
                f.write(body + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(self.staging / manifest, _target_mode(target))
        new = sorted(p.name for p in self.staging.iterdir() if p.is_file())
        stale = set()
        for manifest in self.members:
            stale.update(owned_files(self.directory, manifest))
        stale -= set(new)
        replaced = [n for n in new if os.path.lexists(self.path(n))]
        taken = sorted((set(replaced) - ours) | stale)
        if taken and not self.force:
            raise FileExistsError(_exists_message(self.path(taken[0])))
        aside = _staging_folder(self.directory)
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

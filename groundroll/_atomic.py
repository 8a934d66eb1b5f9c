"""Atomic file writing for command-line outputs.

Outputs are written to a temporary file in the destination directory and moved
into place with :func:`os.replace` only when writing succeeded, so a failed run
never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator, Union

__all__ = ["atomic_write", "check_writable"]

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

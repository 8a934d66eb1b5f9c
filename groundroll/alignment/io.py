"""Reading and writing word alignments: Pharaoh and talp gold files.

Formats
-------
Pharaoh (what fast_align, Moses and awesome-align write): one line per
sentence pair, space-separated ``s-t`` links, **0-indexed**, source index
first. An empty line means "no links" and is kept, so line ``k`` of the file
is always sentence ``k``.

talp gold (the Lambert et al. 2005 EPPS release and the Graça et al. 2008
multi-language gold, as used by SimAlign and awesome-align): one line per
sentence pair, space-separated links, **1-indexed**, source index first.
Supported link tokens (the mark is case-insensitive):

* ``s-t`` -- sure link;
* ``spt`` and ``s?t`` -- possible link (``p`` instead of the hyphen);
* ``s-t-S`` / ``s-t-P`` -- explicit sure / possible mark.

Optionally (``with_ids=True``) each line starts with a sentence id and a tab,
as in SimAlign's gold files: ``"12\\t1-1 2p3"``. Possible sets always include
the sure links (``S ⊆ P``). The one-link-per-line NAACL 2003 format is not
read here.

In memory, every reader returns 0-indexed ``(s, t)`` tuples in sets, the
convention of :mod:`groundroll.alignment.links`.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, AbstractSet, Iterable, Iterator, Sequence, Union

from groundroll._atomic import atomic_write
from groundroll.alignment.links import Link, Links

__all__ = [
    "AlignmentFormatError",
    "parse_pharaoh",
    "format_pharaoh",
    "read_pharaoh",
    "write_pharaoh",
    "parse_talp",
    "format_talp",
    "read_talp",
    "write_talp",
]

Source = Union[str, "os.PathLike[str]", IO[str]]

_PHARAOH = re.compile(r"^(\d+)-(\d+)$")
_TALP = re.compile(r"^(\d+)(?:(-)(\d+)(?:-([SsPp]))?|([pP?])(\d+))$")


class AlignmentFormatError(ValueError):
    """A malformed line in an alignment file (the message names the line)."""


def _where(lineno: int | None, name: str | None) -> str:
    parts = [p for p in (name, None if lineno is None else f"line {lineno}") if p]
    return (", ".join(parts) + ": ") if parts else ""


def _links(pattern: re.Pattern, line: str, *, kind: str, expected: str, lineno: int | None,
           name: str | None) -> Iterator[tuple[str, re.Match]]:
    """``(token, match)`` for each space-separated token of ``line``; a token that
    ``pattern`` does not match raises :class:`AlignmentFormatError` naming the line."""
    for token in line.split():
        match = pattern.match(token)
        if match is None:
            raise AlignmentFormatError(
                f"{_where(lineno, name)}malformed {kind} link {token!r} ({expected})")
        yield token, match


def parse_pharaoh(line: str, *, lineno: int | None = None, name: str | None = None) -> Links:
    """Parse one Pharaoh line into 0-indexed ``(s, t)`` links.

    Parameters
    ----------
    line : str
        Space-separated ``s-t`` tokens; may be empty.
    lineno : int, optional
        1-based line number, used in error messages.
    name : str, optional
        File name, used in error messages.

    Raises
    ------
    ValueError
        (:class:`AlignmentFormatError`) on a token that is not ``int-int``.

    Examples
    --------
    >>> sorted(parse_pharaoh("0-0 2-1"))
    [(0, 0), (2, 1)]
    >>> parse_pharaoh("")
    set()
    """
    tokens = _links(_PHARAOH, line, kind="Pharaoh",
                    expected="expected 0-indexed 'source-target', e.g. '0-1'",
                    lineno=lineno, name=name)
    return {(int(match.group(1)), int(match.group(2))) for _, match in tokens}


def format_pharaoh(links: Iterable[Link]) -> str:
    """Format links as one Pharaoh line (sorted, 0-indexed, no newline).

    Examples
    --------
    >>> format_pharaoh({(2, 1), (0, 0)})
    '0-0 2-1'
    """
    return " ".join(f"{s}-{t}" for s, t in sorted(_checked(links)))


def _checked(links: Iterable[Link]) -> list[Link]:
    out = []
    for s, t in links:
        s, t = int(s), int(t)
        if s < 0 or t < 0:
            raise ValueError(f"negative index in link ({s}, {t})")
        out.append((s, t))
    return out


@contextmanager
def _open_text(source: Source) -> Iterator[tuple[IO[str], str | None]]:
    if isinstance(source, (str, os.PathLike)):
        with open(source, encoding="utf-8") as handle:
            yield handle, os.fspath(source)
    else:
        yield source, getattr(source, "name", None)


def read_lines(path) -> list[str]:
    """The lines of a UTF-8 text file of one sentence per line, split at ``"\\n"`` only.

    ``str.splitlines`` would also split inside a line at U+2028, U+0085, form feeds and
    other separators, so a sentence holding one would shift every later line.
    """
    text = Path(path).read_text(encoding="utf-8")
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _lines(handle: IO[str]) -> Iterator[str]:
    for line in handle:
        yield line.rstrip("\r\n")


def read_pharaoh(source: Source) -> list[Links]:
    """Read a Pharaoh file: one set of 0-indexed ``(s, t)`` links per line.

    Parameters
    ----------
    source : str, os.PathLike or text file object

    Returns
    -------
    list of set of (int, int)
        One entry per line; empty lines give empty sets.

    Raises
    ------
    AlignmentFormatError
        A ``ValueError``: on a token that is not ``int-int``; the message gives the file
        and line number.

    Examples
    --------
    >>> import io
    >>> [sorted(links) for links in read_pharaoh(io.StringIO("0-0 1-1\\n\\n0-1\\n"))]
    [[(0, 0), (1, 1)], [], [(0, 1)]]
    """
    with _open_text(source) as (handle, name):
        return [parse_pharaoh(line, lineno=k, name=name) for k, line in enumerate(_lines(handle), 1)]


@contextmanager
def _open_out(target: Source, force: bool) -> Iterator[IO[str]]:
    if isinstance(target, (str, os.PathLike)):
        with atomic_write(target, force=force, mode="w") as handle:
            yield handle
    else:
        with nullcontext(target) as handle:
            yield handle


def write_pharaoh(target: Source, alignments: Iterable[Iterable[Link]], *, force: bool = False) -> None:
    """Write one Pharaoh line per sentence (empty line for no links).

    Parameters
    ----------
    target : str, os.PathLike or text file object
        A path is written atomically and must not exist unless ``force``.
    alignments : iterable of iterable of (int, int)
        0-indexed ``(s, t)`` links per sentence.
    force : bool, optional
        Overwrite an existing file.

    Examples
    --------
    >>> import io
    >>> buf = io.StringIO()
    >>> write_pharaoh(buf, [{(0, 0)}, set()])
    >>> buf.getvalue()
    '0-0\\n\\n'
    """
    with _open_out(target, force) as handle:
        for links in alignments:
            handle.write(format_pharaoh(links) + "\n")


def parse_talp(
    line: str, *, lineno: int | None = None, name: str | None = None, swap: bool = False
) -> tuple[Links, Links]:
    """Parse one talp gold line (1-indexed) into 0-indexed sure and possible sets.

    Parameters
    ----------
    line : str
        Space-separated link tokens (see the module docstring for the marks).
    lineno, name : optional
        Line number and file name for error messages.
    swap : bool, optional
        The file lists the target index first; swap to ``(s, t)``.

    Returns
    -------
    sure, possible : set of (int, int)
        0-indexed links, ``sure ⊆ possible``.

    Examples
    --------
    >>> sure, possible = parse_talp("1-1 2p3 3-2-P")
    >>> sorted(sure), sorted(possible)
    ([(0, 0)], [(0, 0), (1, 2), (2, 1)])
    """
    sure: Links = set()
    possible: Links = set()
    tokens = _links(_TALP, line, kind="talp",
                    expected="expected 1-indexed 's-t' (sure), 'spt' or 's?t' (possible),"
                             " or 's-t-S' / 's-t-P'", lineno=lineno, name=name)
    for token, match in tokens:
        first, hyphen, second_h, mark, p_mark, second_p = match.groups()
        if hyphen:
            second = second_h
            is_sure = mark is None or mark.upper() == "S"
        else:
            second = second_p
            is_sure = False
        s, t = int(first), int(second)
        if s < 1 or t < 1:
            raise AlignmentFormatError(
                f"{_where(lineno, name)}index 0 in talp link {token!r}: talp files are 1-indexed"
            )
        link = (t - 1, s - 1) if swap else (s - 1, t - 1)
        possible.add(link)
        if is_sure:
            sure.add(link)
    return sure, possible


def format_talp(sure: AbstractSet[Link], possible: AbstractSet[Link] = frozenset()) -> str:
    """Format one talp gold line: sure as ``s-t``, possible-only as ``spt`` (1-indexed).

    Examples
    --------
    >>> format_talp({(0, 0)}, {(0, 0), (1, 2)})
    '1-1 2p3'
    """
    sure_set = set(_checked(sure))
    tokens = [(s, t, "-") for s, t in sure_set]
    tokens += [(s, t, "p") for s, t in set(_checked(possible)) - sure_set]
    return " ".join(f"{s + 1}{mark}{t + 1}" for s, t, mark in sorted(tokens))


def read_talp(
    source: Source, *, with_ids: bool = False, swap: bool = False
) -> tuple[list[Links], list[Links]]:
    """Read a talp gold file into per-sentence sure and possible link sets.

    Parameters
    ----------
    source : str, os.PathLike or text file object
    with_ids : bool, optional
        Each line is ``"<id>\\t<links>"``; the id is dropped (line order is kept).
    swap : bool, optional
        The file lists the target index first.

    Returns
    -------
    sure, possible : list of set of (int, int)
        0-indexed ``(s, t)`` links, one set per line, ``sure[k] ⊆ possible[k]``.

    Raises
    ------
    AlignmentFormatError
        A ``ValueError``: on a malformed link, or with ``with_ids`` a line without a tab;
        the message gives the file and line number.

    Examples
    --------
    >>> import io
    >>> sure, possible = read_talp(io.StringIO("1-1 2p2\\n\\n"))
    >>> sure, [sorted(p) for p in possible]
    ([{(0, 0)}, set()], [[(0, 0), (1, 1)], []])
    """
    sure_all: list[Links] = []
    possible_all: list[Links] = []
    with _open_text(source) as (handle, name):
        for k, line in enumerate(_lines(handle), 1):
            if with_ids:
                if "\t" not in line:
                    raise AlignmentFormatError(
                        f"{_where(k, name)}expected '<id>\\t<links>' (with_ids=True)"
                    )
                line = line.split("\t", 1)[1]
            sure, possible = parse_talp(line, lineno=k, name=name, swap=swap)
            sure_all.append(sure)
            possible_all.append(possible)
    return sure_all, possible_all


def write_talp(
    target: Source,
    sure: Sequence[AbstractSet[Link]],
    possible: Sequence[AbstractSet[Link]] | None = None,
    *,
    force: bool = False,
) -> None:
    """Write a talp gold file (1-indexed; ``s-t`` sure, ``spt`` possible).

    Parameters
    ----------
    target : str, os.PathLike or text file object
        A path is written atomically and must not exist unless ``force``.
    sure : sequence of set of (int, int)
        0-indexed sure links per sentence.
    possible : sequence of set of (int, int), optional
        0-indexed possible links per sentence (sure links in it are written once, as sure).
    force : bool, optional
        Overwrite an existing file.

    Examples
    --------
    >>> import sys
    >>> write_talp(sys.stdout, [{(0, 0)}, set()], [{(0, 0), (1, 1)}, {(2, 0)}])
    1-1 2p2
    3p1
    """
    if possible is None:
        possible = [set() for _ in sure]
    if len(possible) != len(sure):
        raise ValueError(f"{len(sure)} sure sets but {len(possible)} possible sets")
    with _open_out(target, force) as handle:
        for s, p in zip(sure, possible):
            handle.write(format_talp(s, p) + "\n")

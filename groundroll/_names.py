"""A live, read-only view of a list of names that can grow (registries)."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

__all__ = ["LiveNames"]


class LiveNames(Sequence):
    """Read-only live view of ``names()``: reads, compares and prints as the tuple it
    returns now, so names registered later are included.

    Examples
    --------
    >>> registry = {"raw": 1}
    >>> names = LiveNames(lambda: tuple(registry))
    >>> registry["flow"] = 2
    >>> names, "flow" in names, names == ("raw", "flow")
    (('raw', 'flow'), True, True)
    """

    def __init__(self, names: Callable[[], tuple[str, ...]]):
        self._names = names

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name) -> bool:
        return name in self._names()

    def __repr__(self) -> str:
        return repr(self._names())

    def __eq__(self, other) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, LiveNames))
                               else other)

    __hash__ = None

"""One registry style for everything users can add to by name: model families, map
sources, composition methods.

Each registry is a :class:`Registry`; its module exposes ``register_<kind>(item, *,
replace=False)``, ``unregister_<kind>(name)`` and the names in order. An unknown name is
an :class:`UnknownNameError` that lists what exists; registering a name that exists is a
ValueError unless ``replace=True``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Generic, Iterator, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name no registry entry has; the message lists the registered names. A KeyError
    (a lookup) and a ValueError (a bad argument) both catch it."""

    def __str__(self) -> str:            # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Named entries in the order they are consulted.

    Parameters
    ----------
    kind : str
        What an entry is, for messages (``"family"``, ``"map source"``, ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, item: T, *, replace: bool = False, first: bool = False) -> T:
        """Register ``item`` as ``name``: last in order, or first with ``first=True``; a
        name that exists is a ValueError unless ``replace=True`` (then the entry is
        replaced and moved where ``first`` says)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass"
                             " replace=True to replace it")
        self._entries.pop(name, None)
        if first:                         # in place: views of the dict stay live
            rest = dict(self._entries)
            self._entries.clear()
            self._entries.update({name: item, **rest})
        else:
            self._entries[name] = item
        return item

    def remove(self, name: str) -> T:
        """Remove and return the entry ``name`` (:class:`UnknownNameError` if none)."""
        item = self.get(name)
        del self._entries[name]
        return item

    def get(self, name: str) -> T:
        """The entry ``name``; :class:`UnknownNameError` listing the names if none."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(
                f"no {self.kind} {name!r}; registered: {', '.join(self._entries) or 'none'}"
            ) from None

    def view(self):
        """A read-only live mapping of name -> entry."""
        return MappingProxyType(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

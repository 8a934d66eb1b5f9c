"""The map methods :func:`~groundroll.alignment.align` accepts, and their default shift.

One list: the composition methods registered in :mod:`groundroll.compose`
(:func:`groundroll.compose.method_names`, including any registered later), then the
alignment's own compositions (:data:`groundroll.alignment.composition.COMPOSED_METHODS`).
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

from groundroll._names import LiveNames
from groundroll.alignment.composition import COMPOSED_METHODS
from groundroll.compose import method_names as _composition_names

__all__ = ["METHODS", "DEFAULT_SHIFT", "method_names"]


def method_names() -> tuple[str, ...]:
    """Names of the alignment methods: the registered composition methods, then the
    alignment's own compositions.

    Examples
    --------
    >>> method_names()
    ('raw', 'rollout', 'relevance', 'norm', 'flow', 'decoder-rollout', 'peak-weighted')
    """
    return (*_composition_names(), *COMPOSED_METHODS)


class _Shifts(Mapping):
    """Default ``shift`` of every method in :data:`METHODS`: AWO (``False``) for all of
    them (see :mod:`groundroll.alignment.api`)."""

    def __getitem__(self, method: str) -> bool:
        if method not in METHODS:
            raise KeyError(method)
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(method_names())

    def __len__(self) -> int:
        return len(method_names())

    def __repr__(self) -> str:
        return repr(dict(self))


#: Names of the alignment methods (live: includes composition methods registered later).
METHODS: Sequence[str] = LiveNames(method_names)
#: Default ``shift`` of each method when ``align(shift=None)`` (see :mod:`groundroll.alignment.api`).
DEFAULT_SHIFT: Mapping[str, bool] = _Shifts()

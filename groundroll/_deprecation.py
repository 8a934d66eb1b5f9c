"""Renamed keyword arguments: the old name keeps working for one release, with a warning.

Torch-free, so that :mod:`groundroll.masks` can use it too.
"""

from __future__ import annotations

import warnings

_UNSET = object()


def renamed(where: str, old: str, new: str, old_value, new_value, *, default=None,
            stacklevel: int = 3):
    """Resolve a keyword argument renamed from ``old`` to ``new``.

    Returns ``new_value`` unless the caller passed ``old`` (``old_value`` is not
    ``_UNSET``); then a :class:`FutureWarning` names the new spelling and ``old_value``
    is returned. Passing both, with ``new_value`` differing from ``default``, is an
    error.

    Examples
    --------
    >>> renamed("f", "how", "head_fusion", _UNSET, "max")
    'max'
    """
    if old_value is _UNSET:
        return new_value
    same = new_value is default or (type(new_value) is type(default)
                                    and new_value == default)
    if not same:
        raise TypeError(f"{where}: pass {new}= only ({old}= is its deprecated old name)")
    warnings.warn(f"{where}: {old}= is deprecated and will be removed in the next"
                  f" release; use {new}=", FutureWarning, stacklevel=stacklevel)
    return old_value

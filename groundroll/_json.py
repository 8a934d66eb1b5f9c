"""Plain JSON values from settings, summaries and metrics that hold numpy values."""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

__all__ = ["jsonable"]


def jsonable(value: Any, *, other: Callable[[Any], Any] | None = repr) -> Any:
    """``value`` as plain JSON data, converted all the way down.

    Dict keys become strings; lists, tuples and sets become lists; numpy scalars and
    arrays become Python numbers and (nested) lists; paths become strings; ``None``,
    strings, numbers and booleans stay as they are.

    Parameters
    ----------
    value : object
    other : callable or None
        Applied to anything else (default :func:`repr`); None leaves it as it is, for
        :func:`json.dumps` to refuse.

    Examples
    --------
    >>> import numpy as np
    >>> jsonable({"layers": (0, np.int64(2)), 3: np.ones(2, np.float32)})
    {'layers': [0, 2], '3': [1.0, 1.0]}
    >>> jsonable({"model": object}, other=str)
    {'model': "<class 'object'>"}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v, other=other) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, other=other) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return value if other is None else other(value)

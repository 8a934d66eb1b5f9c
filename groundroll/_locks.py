"""Per-model re-entrant locks and per-call warning de-duplication.

Several threads may share one loaded model (a web service, a data-loader pool).
Everything in groundroll that hooks, switches or rewrites a model holds that model's
lock for the whole public call, so concurrent calls on one model run one after the
other and each sees the model exactly as it was loaded. The locks are re-entrant: a
public call (``segment``) may enter others (``capture``) on the same thread.

Models are keys of a :class:`weakref.WeakKeyDictionary`, so a lock never keeps a
model alive. Calls on different models do not wait for each other.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import warnings
import weakref
from typing import Any, Iterator

__all__ = ["model_lock", "locked", "warning_scope", "warn_once"]

_REGISTRY: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
    """The re-entrant lock of ``model`` (created on first use).

    Parameters
    ----------
    model : object
        Usually a ``torch.nn.Module``; any weak-referenceable, hashable object.

    Returns
    -------
    threading.RLock
        The same lock object for the same model, whichever thread asks.

    Examples
    --------
    >>> import torch
    >>> m = torch.nn.Linear(2, 2)
    >>> model_lock(m) is model_lock(m)
    True
    """
    with _REGISTRY_LOCK:
        lock = _REGISTRY.get(model)
        if lock is None:
            lock = threading.RLock()
            _REGISTRY[model] = lock
        return lock


@contextlib.contextmanager
def locked(model: Any) -> Iterator[None]:
    """Hold ``model``'s lock for the duration of the block (re-entrant).

    Examples
    --------
    >>> import torch
    >>> m = torch.nn.Linear(2, 2)
    >>> with locked(m), locked(m):      # the same thread may enter again
    ...     pass
    """
    lock = model_lock(model)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


# ----------------------------------------------------------------------------- warnings

_SEEN: contextvars.ContextVar[set | None] = contextvars.ContextVar(
    "groundroll_warnings_seen", default=None)


@contextlib.contextmanager
def warning_scope() -> Iterator[None]:
    """Within the block, :func:`warn_once` shows each message at most once.

    Scopes nest (the outermost one counts) and are per thread / per context, so
    concurrent calls do not hide each other's warnings. Unlike
    :class:`warnings.catch_warnings` this changes no global state.
    """
    if _SEEN.get() is not None:
        yield
        return
    token = _SEEN.set(set())
    try:
        yield
    finally:
        _SEEN.reset(token)


def warn_once(message: str, category: type[Warning] = UserWarning, *,
              stacklevel: int = 2) -> None:
    """``warnings.warn`` unless the same message was already shown in this scope."""
    seen = _SEEN.get()
    if seen is not None:
        key = (category, message)
        if key in seen:
            return
        seen.add(key)
    warnings.warn(message, category, stacklevel=stacklevel + 1)


def short(text: str, limit: int = 60) -> str:
    """``repr`` of ``text``, cut to about ``limit`` characters for messages."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[: limit - 3] + "...") + f" ({len(text)} characters)"

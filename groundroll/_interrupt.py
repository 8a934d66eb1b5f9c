"""SIGTERM as an interrupt, so a killed command cleans up like one stopped with Ctrl-C.

Python's default SIGTERM action ends the process at once: no ``finally`` block runs, so
an output set being staged (:class:`groundroll._atomic.OutputSet`) leaves its staging
folder behind. :func:`terminate_as_interrupt` raises :class:`Terminated` (a
:class:`KeyboardInterrupt`) instead, which unwinds through every ``finally`` and
``__exit__`` on the way out, exactly as SIGINT does.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["Terminated", "terminate_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (raised in the main thread)."""

    signal = signal.SIGTERM


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread.

    Outside the main thread (where no handler can be installed) the block runs with the
    signal disposition unchanged. The previous handler is restored on exit.

    Examples
    --------
    >>> with terminate_as_interrupt():
    ...     pass
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

"""One model's check in a fresh worker process, memory-capped and timed out: what the
coverage sweeps (``align_coverage.py``, ``caption_coverage.py``) run each model in."""

from __future__ import annotations


def limit_memory(gigabytes: float) -> None:
    """Cap the worker's address space: a tiny build that is still huge fails with a
    MemoryError in its own process instead of taking the machine's memory."""
    import resource

    limit = int(gigabytes * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_isolated(job, name: str, *, memory_gb: float, timeout: int) -> dict:
    """``job(name)`` in a fresh spawned process (nothing left from the last model); a
    job past ``timeout`` seconds or a worker that dies is recorded as not built."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=limit_memory, initargs=(memory_gb,))
    try:
        return pool.submit(job, name).result(timeout=timeout)
    except FutureTimeout:
        return dict(name=name, status="not_built", detail=f"took over {timeout} s")
    except Exception as err:              # the worker died (out of memory in native code)
        return dict(name=name, status="not_built",
                    detail=f"worker lost: {type(err).__name__}")
    finally:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

"""Shared test fixtures: tolerances defined once, and one ``close`` assertion.

Tolerances (absolute, ``rtol=0`` unless stated):

* ``tol.SAME`` - float32 agreement between two computations of the same quantity
  (rows-only vs full product, compose vs the core, two batch orders).
* ``tol.HAND`` - agreement with numbers worked on paper.
* ``tol.FLOW`` - scipy's integer max flow vs networkx's float flow, after row
  normalisation (capacities are rounded to 1e-6).
* ``tol.MODEL`` / ``tol.MODEL_RTOL`` - weights, outputs and gradients read through real
  modules (hooked vs ``output_attentions``).

Determinism: every test starts from the same global seeds (torch, numpy's legacy global
generator, ``random``), so a test that draws without its own generator still draws the
same numbers in every run and in every order; hypothesis runs derandomized (its examples
come from the test's own source, not from the clock).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:          # the test extra brings it; tests that need it import it
    pass
else:
    _hypothesis_settings.register_profile("groundroll", derandomize=True)
    _hypothesis_settings.load_profile("groundroll")

GLOBAL_SEED = 0


@pytest.fixture(autouse=True)
def _seed_global_generators():
    """Seed torch, numpy and ``random`` before every test (see the module docstring)."""
    random.seed(GLOBAL_SEED)
    np.random.seed(GLOBAL_SEED)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(GLOBAL_SEED)


class Tolerances:
    SAME = 1e-6
    HAND = 1e-6
    FLOW = 1e-4
    MODEL = 1e-5
    MODEL_RTOL = 1e-4


def assert_close(actual, expected, atol: float = Tolerances.SAME, rtol: float = 0.0,
                 msg: str = "") -> None:
    """``actual`` equals ``expected`` within ``atol + rtol * |expected|``, elementwise.

    Tensors are compared with ``torch.testing.assert_close`` (shape and dtype of
    ``actual``; ``expected`` may be a nested list), arrays with numpy.
    """
    if isinstance(actual, np.ndarray):
        np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol, err_msg=msg)
        return
    import torch

    expected = torch.as_tensor(expected, dtype=actual.dtype, device=actual.device)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol,
                               msg=(lambda m: f"{msg}: {m}") if msg else None)


@pytest.fixture(scope="session")
def tol() -> type[Tolerances]:
    """The suite's tolerances (see the module docstring)."""
    return Tolerances


@pytest.fixture(scope="session")
def close():
    """``close(actual, expected, atol=tol.SAME, rtol=0)``: assert elementwise agreement."""
    return assert_close


@pytest.fixture(autouse=True, scope="module")
def _release_memory_after_each_file():
    """Keep ``make test`` within its memory budget (4 GB resident on a 2-core CI machine):
    after each test file, drop the models groundroll's process-wide cache holds, collect
    garbage and hand freed heap pages back to the system (glibc keeps them otherwise), so
    one file's models and buffers do not stay resident for the rest of the session."""
    yield
    import gc
    import sys

    zoo = sys.modules.get("groundroll.zoo")
    if zoo is not None:
        zoo.clear_cache()
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc: nothing to trim
        pass

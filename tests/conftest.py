"""Shared test fixtures: tolerances defined once, and one ``close`` assertion.

Tolerances (absolute, ``rtol=0`` unless stated):

* ``tol.SAME`` - float32 agreement between two computations of the same quantity
  (rows-only vs full product, compose vs the core, two batch orders).
* ``tol.HAND`` - agreement with numbers worked on paper.
* ``tol.FLOW`` - scipy's integer max flow vs networkx's float flow, after row
  normalisation (capacities are rounded to 1e-6).
* ``tol.MODEL`` / ``tol.MODEL_RTOL`` - weights, outputs and gradients read through real
  modules (hooked vs ``output_attentions``).
"""

from __future__ import annotations

import numpy as np
import pytest


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

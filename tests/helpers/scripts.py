"""The training recipes under ``training/`` loaded as modules, by file path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["TRAINING", "training_script"]

TRAINING = Path(__file__).resolve().parents[2] / "training"


def training_script(name: str, *, as_name: str | None = None) -> ModuleType:
    """Load ``training/<name>.py`` as a module.

    The module is kept in ``sys.modules`` under ``as_name`` (default ``name``), so a second
    call returns the same module and objects defined in it can be pickled by name.

    Parameters
    ----------
    name : str
        The script's file name without ``.py``, e.g. ``"_shapes_common"``.
    as_name : str, optional
        The module name to register it under.
    """
    key = as_name or name
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, TRAINING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module

"""Whether the Hugging Face hub is switched off for this process."""

from __future__ import annotations

import os

__all__ = ["hub_offline"]

#: Environment switches that turn the hub off (``TRANSFORMERS_OFFLINE`` is transformers'
#: older spelling; huggingface_hub reads both).
OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value,
    now or when huggingface_hub was imported (its ``constants.HF_HUB_OFFLINE``)."""
    if any(os.environ.get(flag, "").strip().lower() in _TRUE for flag in OFFLINE_FLAGS):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))

"""Word alignment: links from score matrices, symmetrisation, Pharaoh/talp IO.

The module is itself callable: ``groundroll.align(src, tgt, model=...)`` is
:func:`groundroll.align.api.align`.

Conventions: score matrices are ``[T, S]`` (target rows, source columns); links
are sets of 0-indexed ``(s, t)`` pairs, source first (Pharaoh ``s-t``).
"""

import sys

from groundroll.align.io import (
    AlignmentFormatError,
    format_pharaoh,
    format_talp,
    parse_pharaoh,
    parse_talp,
    read_pharaoh,
    read_talp,
    write_pharaoh,
    write_talp,
)
from groundroll.align.links import (
    Link,
    Links,
    argmax_links,
    grow_diag,
    grow_diag_final,
    grow_diag_final_and,
    intersection,
    itermax,
    links_to_matrix,
    symmetrize,
    threshold_links,
    union,
)

# The model-facing alignment API lives in groundroll/align/api.py. It is loaded on
# first use, so links and IO stay importable without torch or a model library.
_API = ("align", "Alignment", "layer_scan", "LayerScan", "extract_links")


_PROFILE = ("AlignProfile", "fit_profile", "find_profile")


def __getattr__(name: str):
    if name in _API:
        from importlib import import_module

        return getattr(import_module("groundroll.align.api"), name)
    if name in _PROFILE:
        from importlib import import_module

        return getattr(import_module("groundroll.align.profile"), name)
    raise AttributeError(f"module 'groundroll.align' has no attribute {name!r}")

__all__ = [
    "AlignmentFormatError",
    "Link",
    "Links",
    "argmax_links",
    "format_pharaoh",
    "format_talp",
    "grow_diag",
    "grow_diag_final",
    "grow_diag_final_and",
    "intersection",
    "itermax",
    "links_to_matrix",
    "parse_pharaoh",
    "parse_talp",
    "read_pharaoh",
    "read_talp",
    "symmetrize",
    "threshold_links",
    "union",
    "write_pharaoh",
    "write_talp",
]


class _CallableModule(type(sys.modules[__name__])):
    """Lets ``groundroll.align(...)`` call :func:`align` while ``groundroll.align``
    stays the package."""

    def __call__(self, *args, **kwargs):
        from groundroll.align.api import align

        return align(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

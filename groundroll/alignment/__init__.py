"""Word alignment: links from score matrices, symmetrisation, Pharaoh/talp IO.

:func:`groundroll.align` (this package's :func:`~groundroll.alignment.api.align`) aligns
sentence pairs with a translation model.

Conventions: score matrices are ``[T, S]`` (target rows, source columns); links
are sets of 0-indexed ``(s, t)`` pairs, source first (Pharaoh ``s-t``).
"""

from groundroll.alignment.io import (
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
from groundroll.alignment.links import (
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

# The model-facing alignment API lives in groundroll/alignment/api.py. It is loaded on
# first use, so links and IO stay importable without torch or a model library.
_API = ("align", "AlignOptions", "Alignment", "layer_scan", "LayerScan", "extract_links")


_PROFILE = ("AlignProfile", "fit_profile", "find_profile")


def __getattr__(name: str):
    if name in _API:
        from importlib import import_module

        return getattr(import_module("groundroll.alignment.api"), name)
    if name in _PROFILE:
        from importlib import import_module

        return getattr(import_module("groundroll.alignment.profile"), name)
    raise AttributeError(f"module 'groundroll.alignment' has no attribute {name!r}")

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

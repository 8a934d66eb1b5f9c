"""Self-contained interactive HTML reports.

Every report is one HTML file with its styles, script and data inline (images as
``data:`` URIs): it opens from disk in any browser, needs no network and refers to no
external address.

* :func:`alignment_report`: words, links and scores of a word alignment, with method,
  layer, head, shift and extraction switches, a links view, a matrix view and Pharaoh
  export.
* :func:`segmentation_report`: an image with per-prompt heatmaps and masks as toggleable
  layers, an opacity slider, scores and per-layer maps of one prompt.
* :func:`audit_report`: any result with ``to_dict()`` (and optional figures) as a page.
* :func:`write_report`: write one atomically (never over an existing file without
  ``force``).
* :func:`notebook_frame`: a page as one sandboxed frame for a notebook output (what the
  results' ``_repr_html_`` return, rendered within :data:`NOTEBOOK_MAX_BYTES`).

Every function here takes results (or plain arrays) and runs no model: the pages that run
a pipeline first (``explore_segmentation``, ``explore_alignment``) are in
:mod:`groundroll.explore`, one layer up.
"""

from ._page import DEFAULT_MAX_BYTES, NOTEBOOK_MAX_BYTES, notebook_frame
from ._page import write_html as write_report
from .audit import audit_report
from .captions import caption_report
from .alignment import alignment_report, alignment_variants
from .segmentation import segmentation_report

__all__ = ["DEFAULT_MAX_BYTES", "NOTEBOOK_MAX_BYTES", "alignment_report", "audit_report",
           "caption_report", "alignment_variants", "notebook_frame", "segmentation_report",
           "write_report"]

"""Model auditing: where did relevance move between two models?

:func:`audit` runs two models on the same inputs (the same images and prompts for
segmentation, the same sentence pairs for alignment) and measures, per example and in
aggregate, how much their maps agree:

* ``spearman``: Spearman rank correlation of the two maps (all pixels of every prompt's
  heatmap; all cells of the word matrix);
* ``iou_top``: intersection over union of the top ``top`` fraction of each map
  (per prompt, then averaged; the whole matrix for alignment);
* ``mass_moved``: the share of relevance that moved. Segmentation: each prompt's map
  normalised to a distribution over pixels, total-variation distance between the two
  models, averaged over prompts. Alignment: each target word's row normalised to a
  distribution over source words, total-variation distance, averaged over target words;
* ``label_agreement`` (segmentation): fraction of pixels with the same label;
  ``aer`` (alignment): AER of model B's links with model A's links as the gold.

The same model audited against itself agrees perfectly (Spearman 1, IoU 1, no mass
moved, AER 0). The examples that changed most are those with the lowest Spearman.

Metrics are functions of numpy arrays (:func:`spearman`, :func:`top_iou`,
:func:`mass_moved`), usable on maps from anywhere.

The package is itself callable: ``groundroll.audit(model_a, model_b, data)`` is
:func:`audit`. Its modules: :mod:`~groundroll.auditing.metrics` (the metrics, numpy only),
:mod:`~groundroll.auditing.result` (:class:`Audit`), :mod:`~groundroll.auditing.compare`
(:func:`audit`) and :mod:`~groundroll.auditing.cli` (``groundroll audit``).
"""

from groundroll.auditing.cli import register  # noqa: F401  (groundroll.cli adds the subcommand)
from groundroll.auditing.compare import audit
from groundroll.auditing.metrics import (
    TASKS,
    mass_moved,
    spearman,
    top_iou,
)
from groundroll.auditing.result import Audit

__all__ = ["Audit", "audit", "spearman", "top_iou", "mass_moved", "TASKS"]

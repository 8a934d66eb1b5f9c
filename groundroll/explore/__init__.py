"""Explorer pages: run a model for every variant a page switches between, then render it.

This is the application layer (beside :mod:`groundroll.app` and :mod:`groundroll.cli`):
it calls the task layers (:func:`groundroll.segment`, :func:`groundroll.align`) and hands
their results to :mod:`groundroll.report`, which renders what it is given and runs
nothing.

* :func:`explore_segmentation`: a segmentation with per-layer maps of one prompt.
* :func:`explore_alignment`: alignments of every method, layer, head and shift.
* :func:`layer_maps`: relevance or rollout of one prompt read after each vision layer.

``groundroll report ...`` (:mod:`groundroll.explore.cli`) writes these pages from the
command line.
"""

from importlib import import_module

__all__ = ["explore_alignment", "explore_segmentation", "layer_maps", "LAYER_METHODS"]


def __getattr__(name: str):
    # Loaded on first use: the ``groundroll report`` command parses its arguments (and
    # prints its help) without torch.
    if name in __all__:
        return getattr(import_module("groundroll.explore.pages"), name)
    raise AttributeError(f"module 'groundroll.explore' has no attribute {name!r}")

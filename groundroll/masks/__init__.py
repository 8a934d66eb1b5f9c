"""From per-prompt score maps to label maps and masks (numpy + scikit-image).

Conventions
-----------
* ``maps``: float array ``[P, h, w]``, one score or heatmap per prompt (a single
  ``[h, w]`` map is accepted where noted). Floating dtypes are kept (float16 is
  promoted to float32, integers to float64); nothing is rescaled unless the
  function says so.
* ``image``: ``[H, W, C]`` or ``[H, W]``, any numeric dtype.
* ``labels``: int32 ``[H, W]`` with ``0`` = background and ``k + 1`` = prompt ``k``.
* ``masks``: bool ``[P, H, W]``.
* Sizes are ``(height, width)``; windows are ``(y0, x0, y1, x1)`` with exclusive ends.

None of this package needs torch or a model.

Modules: :mod:`~groundroll.masks.geometry` (resize, letterbox, tiling),
:mod:`~groundroll.masks.labels` (normalisation, softmax, label maps),
:mod:`~groundroll.masks.refine` (SLIC pooling, PAMR, small components and holes),
:mod:`~groundroll.masks.prompts` (prompt ensembling), :mod:`~groundroll.masks.colours`.
"""

from .colours import palette
from .geometry import (
    Letterbox,
    fit_size,
    letterbox_geometry,
    letterbox_image,
    resize_maps,
    sliding_windows,
    stitch,
    unletterbox,
)
from .labels import label_map, masks_from_labels, normalize_maps, softmax_maps
from .prompts import DEFAULT_TEMPLATES, average_groups, ensemble_prompts
from .refine import (SUPERPIXEL_GRAPH_SIDE, SUPERPIXEL_SCALES, SUPERPIXEL_SIZES,
                     SUPERPIXEL_SLIC_ITERATIONS, fill_holes, pamr, remove_small, slic_pool,
                     superpixel_partitions, superpixel_pool)

__all__ = [
    "DEFAULT_TEMPLATES",
    "Letterbox",
    "average_groups",
    "ensemble_prompts",
    "fill_holes",
    "fit_size",
    "label_map",
    "letterbox_geometry",
    "letterbox_image",
    "masks_from_labels",
    "normalize_maps",
    "palette",
    "pamr",
    "remove_small",
    "resize_maps",
    "sliding_windows",
    "slic_pool",
    "superpixel_partitions",
    "superpixel_pool",
    "SUPERPIXEL_GRAPH_SIDE",
    "SUPERPIXEL_SCALES",
    "SUPERPIXEL_SIZES",
    "SUPERPIXEL_SLIC_ITERATIONS",
    "softmax_maps",
    "stitch",
    "unletterbox",
]


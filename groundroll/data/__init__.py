"""Synthetic benchmark data with exact ground truth.

Submodules (imported lazily, so ``import groundroll.data`` stays cheap):

- ``shapes``: scenes of coloured shapes with exact per-object masks, labels and captions,
  used to train and evaluate the bundled open_clip models and segmentation.
- ``toy_translation``: a toy language pair with gold word alignments.

Example files ship inside the package: :func:`example_path` gives one's path wherever
groundroll is installed, :func:`example_scene` the example scene with its ground truth.

>>> from groundroll.data import example_path, example_scene
>>> example_path().name
'shapes_scene.png'
>>> scene = example_scene()
>>> scene["labels"], scene["label_map"].shape
(['red circle', 'blue star', 'yellow triangle'], (128, 160))
"""

from __future__ import annotations

import importlib
import json
from importlib import resources
from pathlib import Path

__all__ = ["shapes", "toy_translation", "examples", "example_path", "example_scene"]

_SUBMODULES = ("shapes", "toy_translation")


def examples() -> list[str]:
    """The names of the example files that ship with groundroll."""
    folder = resources.files(__name__).joinpath("examples")
    return sorted(entry.name for entry in folder.iterdir() if entry.is_file())


def example_path(name: str = "shapes_scene.png") -> Path:
    """The path of a bundled example file (default: the example scene's image).

    Parameters
    ----------
    name : str
        One of :func:`examples`.

    Returns
    -------
    pathlib.Path
        Inside the installed package: read it, do not write to it.

    Raises
    ------
    FileNotFoundError
        ``name`` is not a bundled example; the message lists those that are.
    """
    resource = resources.files(__name__).joinpath("examples", name)
    if not resource.is_file():
        raise FileNotFoundError(f"no bundled example {name!r}; the bundled examples are"
                                f" {', '.join(examples())}")
    return Path(str(resource))


def example_scene() -> dict:
    """The example scene: ``image`` (PIL RGB), ``labels`` (its objects' names),
    ``masks`` (bool ``[K, H, W]``, one per label), ``label_map`` (uint8 ``[H, W]``: 0
    background, ``k + 1`` where ``labels[k]`` is), ``caption`` and ``boxes``
    (``[x0, y0, x1, y1]`` pixels, exclusive ends)."""
    import numpy as np
    from PIL import Image

    meta = json.loads(example_path("shapes_scene.json").read_text())
    with Image.open(example_path(meta["image"])) as image:
        rgb = image.convert("RGB")
    with Image.open(example_path(meta["label_map"])) as labels:
        ids = np.asarray(labels)
    # scikit-image (through shapes): loaded here, not by import groundroll.data. The file
    # stores each object as its name's index in shapes.LABELS, plus one.
    from .shapes import LABELS

    masks = np.stack([ids == LABELS.index(label) + 1 for label in meta["labels"]])
    label_map = np.zeros(ids.shape, np.uint8)
    for k, mask in enumerate(masks):
        label_map[mask] = k + 1
    return {"image": rgb, "label_map": label_map, "labels": list(meta["labels"]),
            "caption": meta.get("caption", ""),
            # The file stores shapes' (row0, col0, row1, col1); groundroll's boxes are x, y.
            "boxes": [[c0, r0, c1, r1] for r0, c0, r1, c1 in meta.get("boxes", [])],
            "masks": masks}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

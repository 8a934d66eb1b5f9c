"""Synthetic scenes of coloured shapes with exact per-object masks.

Each scene holds 1-4 objects (a colour and a shape each) on a muted background, or on
request (``background="photo"``) on a random crop of a photograph that ships with
scikit-image or matplotlib (:data:`PHOTOS`, split into :data:`TRAIN_PHOTOS` and the
held-out :data:`EVAL_PHOTOS`), so no download is needed. Objects are drawn back to
front; every mask is what stays visible after occlusion, so masks are disjoint and each
masked pixel has exactly its object's colour.

Held-out convention
-------------------
Training recipes draw scenes from seeds ``0 .. 10**6 - 1`` (``TRAIN_SEED_OFFSET``);
evaluation uses seeds ``>= EVAL_SEED_OFFSET = 10**6``. ``scenes(n, seed=s)`` uses the
scene seeds ``s, s + 1, ..., s + n - 1``, so ``scenes(500, seed=EVAL_SEED_OFFSET)`` is
the standard held-out set.

Examples
--------
>>> from groundroll.data import shapes
>>> s = shapes.scene(0)
>>> s.image.shape, s.image.dtype
((128, 160, 3), dtype('uint8'))
>>> len(s.labels) == s.masks.shape[0]
True
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from skimage import draw

__all__ = [
    "COLORS",
    "SHAPES",
    "LABELS",
    "BACKGROUNDS",
    "PHOTOS",
    "TRAIN_PHOTOS",
    "EXTRA_TRAIN_PHOTOS",
    "EVAL_PHOTOS",
    "EVAL_SEED_OFFSET",
    "TRAIN_SEED_OFFSET",
    "Scene",
    "scene",
    "scenes",
    "as_dataset",
    "caption_for",
]

#: Colour name -> RGB. Saturated, pairwise distinct, none close to the muted backgrounds.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 20),
    "purple": (140, 40, 180),
    "orange": (250, 130, 0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ellipse")
#: All colour x shape labels in a fixed order (colour-major); index ``i`` is class
#: ``i + 1`` in ``Scene.label_map`` (0 is background).
LABELS: tuple[str, ...] = tuple(f"{c} {s}" for c in COLORS for s in SHAPES)
BACKGROUNDS: tuple[str, ...] = ("flat", "gradient", "noise")
#: Photographs and micrographs shipped inside scikit-image (``skimage/data``) and
#: matplotlib (``mpl-data/sample_data``), usable as ``background="photo"`` offline.
#: Split in two so that a model trained on crops of ``TRAIN_PHOTOS`` can be scored on
#: scenes over ``EVAL_PHOTOS``, which it never saw: every everyday colour photo (person,
#: cat, cups, rocket, motorcycle) is held out, with two greyscale ones.
TRAIN_PHOTOS: tuple[str, ...] = (
    "skimage:brick.png", "skimage:grass.png", "skimage:gravel.png", "skimage:moon.png",
    "skimage:page.png", "skimage:text.png", "skimage:clock_motion.png",
    "skimage:hubble_deep_field.jpg", "skimage:retina.jpg", "skimage:ihc.png",
    "skimage:cell.png", "matplotlib:grace_hopper.jpg")
EVAL_PHOTOS: tuple[str, ...] = (
    "skimage:astronaut.png", "skimage:chelsea.png", "skimage:coffee.png",
    "skimage:rocket.jpg", "skimage:motorcycle_left.png", "skimage:camera.png",
    "skimage:coins.png")
#: More training backgrounds, graphics rather than photographs (a colour wheel, the
#: scikit-image logo, a gift box, a retinal micrograph), which a recipe may add to
#: ``TRAIN_PHOTOS``; kept apart so that earlier recipes replay exactly.
EXTRA_TRAIN_PHOTOS: tuple[str, ...] = (
    "skimage:color.png", "skimage:logo.png", "skimage:microaneurysms.png",
    "matplotlib:Minduka_Present_Blue_Pack.png")
PHOTOS: tuple[str, ...] = TRAIN_PHOTOS + EXTRA_TRAIN_PHOTOS + EVAL_PHOTOS

TRAIN_SEED_OFFSET = 0
EVAL_SEED_OFFSET = 10**6
DEFAULT_SIZE = (128, 160)  # (height, width)


@dataclass
class Scene:
    """One synthetic scene.

    Attributes
    ----------
    image : ndarray, uint8, [H, W, 3]
    masks : ndarray, bool, [K, H, W]
        Visible pixels of each object, after occlusion; pairwise disjoint, non-empty.
    labels : list of str
        ``"colour shape"`` per object, in drawing order (back to front).
    caption : str
        e.g. ``"a red circle and a blue star"``.
    label_map : ndarray, int64, [H, W]
        0 for background, ``LABELS.index(label) + 1`` for object pixels.
    seed : int or None
        Scene seed when drawn from an integer seed.
    boxes : ndarray, int64, [K, 4]
        ``(row_min, col_min, row_max_exclusive, col_max_exclusive)`` of each mask.
    """

    image: np.ndarray
    masks: np.ndarray
    labels: list[str]
    caption: str
    label_map: np.ndarray
    seed: int | None = None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))

    @property
    def class_ids(self) -> list[int]:
        """``LABELS`` index (0-based) of each object."""
        return [LABELS.index(lab) for lab in self.labels]


def caption_for(labels: Sequence[str], *, order: Sequence[int] | None = None) -> str:
    """Caption listing ``labels``: ``"a red circle, a blue star and a green square"``."""
    items = [f"a {labels[i]}" for i in (order if order is not None else range(len(labels)))]
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _background(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    # Muted greys/pastels (low saturation, mid brightness) so shapes stay visible.
    base = rng.uniform(90, 170) + rng.uniform(-15, 15, size=3)
    if kind == "flat":
        img = np.broadcast_to(base, (h, w, 3)).copy()
    elif kind == "gradient":
        other = rng.uniform(90, 170) + rng.uniform(-15, 15, size=3)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        img = base + t[..., None] * (other - base)
    elif kind == "noise":
        cell = int(rng.integers(4, 17))
        coarse = rng.normal(0, 18, size=(h // cell + 2, w // cell + 2, 1))
        img = base + np.repeat(np.repeat(coarse, cell, 0), cell, 1)[:h, :w]
        img = img + rng.normal(0, 6, size=(h, w, 1))
    else:
        raise ValueError(f"unknown background {kind!r}; expected one of {BACKGROUNDS} "
                         "or 'photo'")
    return np.clip(img, 0, 255)


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """The photo ``"package:file"`` of :data:`PHOTOS` as uint8 ``[H, W, 3]``."""
    from PIL import Image

    package, _, file = name.partition(":")
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; expected one of shapes.PHOTOS")
    if package == "skimage":
        import skimage

        folder = Path(skimage.__file__).parent / "data"
    else:
        import matplotlib

        folder = Path(matplotlib.get_data_path()) / "sample_data"
    with Image.open(folder / file) as im:
        pixels = np.array(im.convert("RGB"))
    pixels.setflags(write=False)         # cached: shared by every call
    return pixels


def _photo_background(rng: np.random.Generator, h: int, w: int,
                      photos: Sequence[str]) -> np.ndarray:
    """A random crop of one of ``photos`` resized to ``h x w``: crop side 35-100 % of
    what fits at the scene's aspect ratio, mirrored half the time; a greyscale photo is
    tinted along a random two-colour ramp, a colour one jittered in brightness."""
    from PIL import Image

    photo = _photo(photos[int(rng.integers(len(photos)))])
    ph, pw = photo.shape[:2]
    fit = min(ph / h, pw / w)
    scale = fit * rng.uniform(0.35, 1.0)
    ch, cw = max(1, int(h * scale)), max(1, int(w * scale))
    top, left = int(rng.integers(ph - ch + 1)), int(rng.integers(pw - cw + 1))
    crop = Image.fromarray(photo[top:top + ch, left:left + cw]).resize((w, h),
                                                                       Image.BICUBIC)
    img = np.asarray(crop, np.float64)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if np.ptp(img - img.mean(-1, keepdims=True)) < 1.0:            # greyscale photo
        lo, hi = rng.uniform(0, 110, size=3), rng.uniform(140, 255, size=3)
        img = lo + img[..., :1] / 255.0 * (hi - lo)
    else:
        img = img * rng.uniform(0.8, 1.15) + rng.uniform(-20, 20)
    return np.clip(img, 0, 255)


def _shape_mask(rng: np.random.Generator, shape: str, h: int, w: int, cy: float, cx: float,
                r: float) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    rot = rng.uniform(0, 2 * np.pi)
    if shape == "circle":
        rr, cc = draw.disk((cy, cx), r, shape=(h, w))
    elif shape == "ellipse":
        rr, cc = draw.ellipse(cy, cx, r * rng.uniform(0.45, 0.6), r * 1.05, shape=(h, w),
                              rotation=rot)
    elif shape == "square":
        angles = rot + np.pi / 4 + np.arange(4) * np.pi / 2
        s = r * 0.95
        rr, cc = draw.polygon(cy + s * np.sin(angles), cx + s * np.cos(angles), shape=(h, w))
    elif shape == "triangle":
        angles = rot + np.arange(3) * 2 * np.pi / 3
        rr, cc = draw.polygon(cy + r * np.sin(angles), cx + r * np.cos(angles), shape=(h, w))
    elif shape == "star":
        angles = rot + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r * 1.1, r * 0.45)
        rr, cc = draw.polygon(cy + radii * np.sin(angles), cx + radii * np.cos(angles),
                              shape=(h, w))
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    mask[rr, cc] = True
    return mask


def scene(
    seed: int | np.random.Generator = 0,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    n_objects: int | tuple[int, int] = (1, 4),
    labels: Sequence[str] | None = None,
    background: str | None = None,
    radius: tuple[float, float] = (0.12, 0.26),
    max_overlap: float = 0.4,
    min_visible: int = 30,
    photos: Sequence[str] = EVAL_PHOTOS,
) -> Scene:
    """Draw one scene.

    Parameters
    ----------
    seed : int or numpy.random.Generator
        An integer seed (reproducible) or a Generator (advanced in place).
    size : (int, int)
        ``(height, width)`` of the image; not square by default (128 x 160).
    n_objects : int or (int, int)
        Exact count, or inclusive range ``(low, high)`` drawn uniformly.
    labels : sequence of str, optional
        Force these object labels (each from ``LABELS``); overrides ``n_objects``.
    background : {"flat", "gradient", "noise", "photo"}, optional
        Drawn uniformly from :data:`BACKGROUNDS` when not given; ``"photo"`` (never
        drawn by default) puts the objects on a random crop of one of ``photos``.
    radius : (float, float)
        Range of object radius as a fraction of ``min(height, width)``.
    max_overlap : float
        Largest fraction of a new object's area that earlier objects' visible pixels
        may share with it (so later objects partially occlude earlier ones).
    min_visible : int
        Every object keeps at least this many visible pixels after occlusion.
    photos : sequence of str
        Names from :data:`PHOTOS` that ``background="photo"`` crops; the held-out
        :data:`EVAL_PHOTOS` by default (training recipes pass :data:`TRAIN_PHOTOS`).

    Returns
    -------
    Scene
        An object that finds no place within the overlap limits after 60 tries is left
        out, so ``labels`` lists the objects actually drawn (at the default sizes the first
        object always fits).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    scene_seed = None if isinstance(seed, np.random.Generator) else int(seed)
    h, w = size
    if labels is None:
        if isinstance(n_objects, int):
            k = n_objects
        else:
            k = int(rng.integers(n_objects[0], n_objects[1] + 1))
        chosen = rng.choice(len(LABELS), size=k, replace=False)
        labels = [LABELS[i] for i in chosen]
    else:
        labels = list(labels)
        for lab in labels:
            if lab not in LABELS:
                raise ValueError(f"unknown label {lab!r}; expected one of LABELS")
    if background is None:
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    if background == "photo":
        if isinstance(photos, str) or not photos:
            raise ValueError(f"photos must be a non-empty sequence of names from "
                             f"shapes.PHOTOS, got {photos!r}")
        for name in photos:
            _photo(name)                 # every name checked, not only the one drawn
        img = _photo_background(rng, h, w, photos)
    else:
        img = _background(rng, h, w, background)

    owner = np.full((h, w), -1, np.int64)  # index of the visible object per pixel
    placed: list[str] = []
    for lab in labels:
        colour, shape = lab.split(" ")
        for _ in range(60):
            r = rng.uniform(*radius) * min(h, w)
            cy = rng.uniform(r * 0.8, h - r * 0.8)
            cx = rng.uniform(r * 0.8, w - r * 0.8)
            m = _shape_mask(rng, shape, h, w, cy, cx, r)
            if m.sum() < 2 * min_visible:
                continue
            covered = owner[m] >= 0
            if covered.mean() > max_overlap:
                continue
            # Every earlier object must stay visible enough after this one covers it.
            idx = len(placed)
            remaining = [np.count_nonzero((owner == j) & ~m) for j in range(idx)]
            if any(c < min_visible for c in remaining):
                continue
            owner[m] = idx
            placed.append(lab)
            break
    colours = np.array([COLORS[lab.split(" ")[0]] for lab in placed], np.float64)
    fg = owner >= 0
    if fg.any():
        img[fg] = colours[owner[fg]]
    image = np.round(img).astype(np.uint8)
    masks = np.stack([owner == j for j in range(len(placed))]) if placed else \
        np.zeros((0, h, w), bool)
    label_map = np.zeros((h, w), np.int64)
    for j, lab in enumerate(placed):
        label_map[masks[j]] = LABELS.index(lab) + 1
    boxes = np.zeros((len(placed), 4), np.int64)
    for j in range(len(placed)):
        rows = np.flatnonzero(masks[j].any(1))
        cols = np.flatnonzero(masks[j].any(0))
        boxes[j] = (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
    return Scene(image=image, masks=masks, labels=placed, caption=caption_for(placed),
                 label_map=label_map, seed=scene_seed, boxes=boxes)


def scenes(n: int, *, seed: int = TRAIN_SEED_OFFSET, **kwargs) -> Iterator[Scene]:
    """Yield ``n`` scenes with scene seeds ``seed, seed + 1, ..., seed + n - 1``.

    Keyword arguments go to :func:`scene`. Use ``seed=EVAL_SEED_OFFSET`` for held-out data.

    Examples
    --------
    >>> from groundroll.data.shapes import scenes, EVAL_SEED_OFFSET
    >>> [len(s.labels) > 0 for s in scenes(2, seed=EVAL_SEED_OFFSET)]
    [True, True]
    """
    for i in range(n):
        yield scene(seed + i, **kwargs)


def as_dataset(n: int, *, seed: int = TRAIN_SEED_OFFSET, **kwargs):
    """Scenes as a Hugging Face ``datasets.Dataset``.

    Columns: ``image`` (``datasets.Image``, PIL on access), ``masks`` (bool
    ``[K, H, W]``, one mask per object), ``labels`` (list of str), ``caption`` (str),
    ``label_map`` (int ``[H, W]``), ``seed`` (int).

    Examples
    --------
    >>> from groundroll.data.shapes import as_dataset
    >>> ds = as_dataset(2, seed=0)
    >>> ds.column_names
    ['image', 'masks', 'labels', 'caption', 'label_map', 'seed']
    """
    import datasets  # optional dependency

    h, w = kwargs.get("size", DEFAULT_SIZE)
    features = datasets.Features({
        "image": datasets.Image(),
        "masks": datasets.Array3D(shape=(None, h, w), dtype="bool"),
        "labels": datasets.Sequence(datasets.Value("string")),
        "caption": datasets.Value("string"),
        "label_map": datasets.Array2D(shape=(h, w), dtype="int32"),
        "seed": datasets.Value("int64"),
    })

    def gen():
        from PIL import Image

        for s in scenes(n, seed=seed, **kwargs):
            yield {
                "image": Image.fromarray(s.image),
                "masks": s.masks,
                "labels": s.labels,
                "caption": s.caption,
                "label_map": s.label_map.astype(np.int32),
                "seed": s.seed,
            }

    return datasets.Dataset.from_list(list(gen()), features=features)

import numpy as np
import pytest

from groundroll.data import shapes


def test_constants():
    assert len(shapes.SHAPES) >= 5 and len(shapes.COLORS) >= 6
    assert len(set(shapes.COLORS.values())) == len(shapes.COLORS)
    assert len(shapes.LABELS) == len(shapes.SHAPES) * len(shapes.COLORS)
    assert shapes.LABELS[0] == f"{next(iter(shapes.COLORS))} {shapes.SHAPES[0]}"


def test_deterministic():
    a, b, c = shapes.scene(7), shapes.scene(7), shapes.scene(8)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.masks.tobytes() == b.masks.tobytes() and a.labels == b.labels
    assert a.image.tobytes() != c.image.tobytes()
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    assert shapes.scene(g1).image.tobytes() == shapes.scene(g2).image.tobytes()


def test_default_not_square():
    s = shapes.scene(0)
    h, w = s.image.shape[:2]
    assert h != w and s.image.dtype == np.uint8 and s.masks.dtype == bool


@pytest.mark.parametrize("seed", range(40))
def test_masks_exact(seed):
    s = shapes.scene(seed)
    k = len(s.labels)
    assert 1 <= k <= 4 and s.masks.shape == (k, *s.image.shape[:2])
    assert (s.masks.sum(0) <= 1).all(), "masks overlap"
    for m, lab in zip(s.masks, s.labels):
        assert m.sum() >= 30
        colour = np.array(shapes.COLORS[lab.split(" ")[0]])
        assert (s.image[m] == colour).all()
        assert (s.label_map[m] == shapes.LABELS.index(lab) + 1).all()
    assert ((s.label_map == 0) == ~s.masks.any(0)).all()
    for lab in s.labels:
        assert f"a {lab}" in s.caption
    assert s.caption.count(" a ") + s.caption.startswith("a ") == k
    for box, m in zip(s.boxes, s.masks):
        assert m[box[0]:box[2], box[1]:box[3]].sum() == m.sum()


def test_forced_labels_and_options():
    s = shapes.scene(1, labels=["red circle", "blue star"], background="noise", size=(64, 96))
    assert s.labels == ["red circle", "blue star"] and s.image.shape == (64, 96, 3)
    assert s.caption == "a red circle and a blue star"
    with pytest.raises(ValueError):
        shapes.scene(1, labels=["pink cube"])


def test_scenes_and_held_out():
    train = list(shapes.scenes(3, seed=0))
    assert [s.seed for s in train] == [0, 1, 2]
    held = next(shapes.scenes(1, seed=shapes.EVAL_SEED_OFFSET))
    assert held.seed == shapes.EVAL_SEED_OFFSET


def test_as_dataset():
    pytest.importorskip("datasets")
    ds = shapes.as_dataset(3, seed=5)
    assert len(ds) == 3
    assert {"image", "masks", "labels", "caption"} <= set(ds.column_names)
    row = ds[1]
    ref = shapes.scene(6)
    assert row["image"].size == (ref.image.shape[1], ref.image.shape[0])
    assert np.array_equal(np.asarray(row["image"]), ref.image)
    assert np.array_equal(np.asarray(row["masks"], bool), ref.masks)
    assert row["labels"] == ref.labels and row["caption"] == ref.caption


def test_example_scene_matches_generator():
    import json
    from pathlib import Path

    from PIL import Image

    folder = Path(shapes.__file__).parent / "examples"
    meta = json.loads((folder / "shapes_scene.json").read_text())
    s = shapes.scene(meta["seed"], labels=meta["labels"], background="gradient")
    image = np.asarray(Image.open(folder / meta["image"]).convert("RGB"))
    assert image.shape[0] != image.shape[1] and 2 <= len(meta["labels"]) <= 3
    assert np.array_equal(image, s.image)
    assert np.array_equal(np.asarray(Image.open(folder / meta["label_map"])), s.label_map)
    assert meta["caption"] == s.caption


def test_photo_background_crops_the_named_photos():
    from groundroll.data.shapes import _photo

    assert not set(shapes.TRAIN_PHOTOS + shapes.EXTRA_TRAIN_PHOTOS) & set(shapes.EVAL_PHOTOS)
    for name in shapes.PHOTOS:                       # every photo ships with a dependency
        assert _photo(name).ndim == 3 and _photo(name).shape[2] == 3
    a = shapes.scene(5, background="photo", size=(100, 140))
    b = shapes.scene(5, background="photo", size=(100, 140))
    assert a.image.tobytes() == b.image.tobytes() and a.labels == b.labels
    for m, lab in zip(a.masks, a.labels):            # objects keep their exact colours
        assert (a.image[m] == np.array(shapes.COLORS[lab.split(" ")[0]])).all()
    # The background is a photo crop: far more distinct colours than any muted kind.
    bg = a.image[a.label_map == 0]
    assert len(np.unique(bg, axis=0)) > 500
    flat = shapes.scene(5, background="flat", size=(100, 140)).image
    assert len(np.unique(flat[shapes.scene(5, background="flat", size=(100, 140))
                              .label_map == 0], axis=0)) == 1
    only = shapes.scene(3, background="photo", photos=["skimage:moon.png"])
    assert only.image.shape == (128, 160, 3)
    with pytest.raises(ValueError, match="unknown photo"):
        shapes.scene(3, background="photo", photos=["skimage:missing.png"])
    with pytest.raises(ValueError, match="unknown photo 'skimage:nope.png'"):
        shapes.scene(3, background="photo", photos=["skimage:moon.png", "skimage:nope.png"])
    for bad in ([], "skimage:moon.png"):
        with pytest.raises(ValueError, match="photos must be a non-empty sequence"):
            shapes.scene(3, background="photo", photos=bad)
    with pytest.raises(ValueError, match="'photo'"):
        shapes.scene(3, background="marble")


"""``groundroll examples`` and ``groundroll.data.example_path``: the bundled example files
reach any folder, a second copy is a no-op, and nothing of the user's is replaced without
``--force``."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from groundroll.cli import main
from groundroll.data import example_path, example_scene, examples


def test_copies_every_example_byte_for_byte_and_twice_is_a_no_op(tmp_path, capsys):
    out = tmp_path / "new" / "folder"
    assert main(["examples", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == examples()
    for name in examples():
        assert (out / name).read_bytes() == example_path(name).read_bytes()
    assert main(["examples", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("(already there)") == len(examples())


def test_other_content_is_kept_without_force_and_nothing_else_is_written(tmp_path, capsys):
    (tmp_path / "shapes_scene.json").write_text("mine")
    assert main(["examples", "--out", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "shapes_scene.json").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["shapes_scene.json"]
    assert main(["examples", "--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "shapes_scene.json").read_bytes() == example_path(
        "shapes_scene.json").read_bytes()


def test_a_link_or_a_file_in_the_way_is_refused(tmp_path, capsys):
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "shapes_scene.png").symlink_to(victim)
    assert main(["examples", "--out", str(out), "--force"]) == 2
    assert victim.read_bytes() == b"precious"
    assert main(["examples", "--out", str(victim)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_example_scene_matches_its_files():
    scene = example_scene()
    labels = np.asarray(Image.open(example_path("shapes_scene_labels.png")))
    assert scene["image"].size == (labels.shape[1], labels.shape[0])
    assert scene["masks"].shape == (3,) + labels.shape
    # Objects do not overlap, each is one value of the stored map, and the label map
    # numbers them in the order of ``labels``.
    assert scene["masks"].sum(0).max() == 1
    for k, mask in enumerate(scene["masks"]):
        assert mask.any() and len(np.unique(labels[mask])) == 1
        assert (scene["label_map"][mask] == k + 1).all()
    assert ((scene["label_map"] == 0) == ~scene["masks"].any(0)).all()
    # Boxes are [x0, y0, x1, y1] with exclusive ends around each mask.
    for mask, (x0, y0, x1, y1) in zip(scene["masks"], scene["boxes"]):
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)


def test_an_unknown_example_names_the_known_ones():
    with pytest.raises(FileNotFoundError, match="shapes_scene.png"):
        example_path("nope.png")

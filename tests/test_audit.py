"""gr.audit: agreement metrics, perfect self-agreement, the two bundled CLIPs, save, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

import groundroll as gr
from groundroll.auditing import Audit, audit, mass_moved, spearman, top_iou
from groundroll.data import shapes
from groundroll.data import toy_translation as toy


# ----------------------------------------------------------------------------- metrics


def test_spearman_hand_worked():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ranks [1, 2, 3] vs [1, 3, 2]: 1 - 6 * 2 / (3 * 8) = 0.5.
    assert spearman([0.1, 0.5, 0.9], [0.0, 0.9, 0.4]) == pytest.approx(0.5)
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.random((6, 7)), rng.random((6, 7))
    b[0, :3] = b[0, 3]                                    # ties
    assert spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel())[0])
    assert spearman(np.ones(4), np.ones(4)) == 1.0
    assert spearman(np.ones(4), np.arange(4)) == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        spearman([1, 2], [1, 2, 3])


def test_top_iou_and_mass_moved_hand_worked():
    a = np.array([[0.0, 0.1], [0.2, 0.9]])
    assert top_iou(a, a, top=0.25) == 1.0
    # Top half: {3, 2} vs {3, 1} -> 1 / 3.
    assert top_iou(a, np.array([[0.0, 0.5], [0.2, 0.9]]), top=0.5) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="top"):
        top_iou(a, a, top=0)
    # Row 0 moves all its mass, row 1 half of it.
    x = np.array([[2.0, 0.0], [1.0, 1.0]])
    y = np.array([[0.0, 5.0], [0.0, 3.0]])
    assert mass_moved(x, y) == pytest.approx((1.0 + 0.5) / 2)
    assert mass_moved(x, 3 * x) == 0.0
    assert mass_moved(x.T, y.T, axis=0) == pytest.approx(0.75)


def test_most_changed_and_markdown():
    ex = [dict(index=k, label=f"s{k}", spearman=s, iou_top=1.0, mass_moved=m, aer=0.0)
          for k, (s, m) in enumerate([(0.9, 0.1), (0.2, 0.5), (0.5, 0.7)])]
    a = Audit("align", ex, dict(n=3, **{f"{k}{suffix}": 0.5 for k in
                                        ("spearman", "iou_top", "mass_moved", "aer")
                                        for suffix in ("", "_median")}))
    assert [e["index"] for e in a.most_changed(2)] == [1, 2]
    assert [e["index"] for e in a.most_changed(1, by="mass_moved")] == [2]
    assert "| spearman |" in a.to_markdown()
    with pytest.raises(ValueError, match="by must be"):
        a.most_changed(by="loss")


# ----------------------------------------------------------------------------- alignment


@pytest.fixture(scope="module")
def toy_mt():
    return gr.load("bundled:toy-mt")


@pytest.fixture(scope="module")
def self_audit(toy_mt):
    return gr.audit(toy_mt, toy_mt, toy.pairs(6, split="test"))


def test_audit_model_against_itself_is_perfect(self_audit):
    a = self_audit
    assert a.task == "align" and a.perfect
    assert a.aggregate["spearman"] == 1.0 and a.aggregate["iou_top"] == 1.0
    assert a.aggregate["mass_moved"] == 0.0 and a.aggregate["aer"] == 0.0
    assert len(a.examples) == 6 and all(e["links_a"] == e["links_b"] for e in a.examples)


def test_audit_alignment_settings_differ(toy_mt):
    data = toy.pairs(6, split="test")
    a = audit(toy_mt, toy_mt, data, options=dict(method="raw", layers=[2]),
              options_b=dict(method="raw", layers=[0]))
    assert not a.perfect
    assert a.aggregate["aer"] > 0.2 and a.aggregate["mass_moved"] > 0.2
    worst = a.most_changed(1)[0]
    assert worst["spearman"] == min(e["spearman"] for e in a.examples)
    with pytest.raises(ValueError, match="source and a target"):
        audit(toy_mt, toy_mt, [("su tuga", "")])


def test_audit_save_is_atomic(tmp_path, self_audit, monkeypatch):
    out = self_audit.save(tmp_path / "a")
    assert sorted(p.name for p in out.iterdir()) == [".audit.groundroll.json", "audit.json",
                                                     "audit.md", "audit.png", "maps.npz"]
    back = Audit.load(out)
    assert back.aggregate == pytest.approx(self_audit.aggregate)
    assert len(back.maps_a) == 6
    np.testing.assert_array_equal(back.maps_b[0], self_audit.maps_b[0])
    with pytest.raises(FileExistsError):
        self_audit.save(out)
    # A failure while writing leaves nothing behind, and the existing folder intact.
    monkeypatch.setattr(Audit, "plot", lambda self, **kw: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        self_audit.save(tmp_path / "b")
    with pytest.raises(ZeroDivisionError):
        self_audit.save(out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert json.loads((out / "audit.json").read_text())["task"] == "align"


# ----------------------------------------------------------------------------- segmentation


def test_bundled_clips_do_not_agree():
    scenes = [shapes.scene(shapes.EVAL_SEED_OFFSET + k) for k in range(2)]
    a = gr.audit("bundled:shapes-clip", "bundled:shapes-clip-short", scenes)
    assert a.task == "segment" and not a.perfect
    assert a.aggregate["spearman"] < 0.95 and a.aggregate["mass_moved"] > 0.05
    assert a.maps_a[0].shape == (len(set(scenes[0].labels)),) + scenes[0].image.shape[:2]
    same = gr.audit("bundled:shapes-clip", "bundled:shapes-clip", scenes[:1],
                    prompts=["red circle", "blue square"])
    assert same.perfect
    import matplotlib.pyplot as plt

    plt.close(a.plot(n=1))


# ----------------------------------------------------------------------------- CLI


def test_cli_audit(tmp_path, capsys):
    from groundroll.cli import main

    out = tmp_path / "audit"
    assert main(["audit", "bundled:toy-mt", "bundled:toy-mt", "--toy", "3", "--out",
                 str(out), "--quiet"]) == 0
    assert "spearman" in capsys.readouterr().out
    assert json.loads((out / "audit.json").read_text())["aggregate"]["aer"] == 0.0
    # Existing output: refused without --force, nothing changed.
    before = (out / "audit.json").read_text()
    assert main(["audit", "bundled:toy-mt", "bundled:toy-mt", "--toy", "3", "--out",
                 str(out), "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "audit.json").read_text() == before
    assert main(["audit", "bundled:toy-mt", "bundled:toy-mt", "--out",
                 str(tmp_path / "x"), "--quiet"]) == 2
    assert not (tmp_path / "x").exists()

"""HTML reports without a browser: self-containment, escaping, size limits, data
agreeing with the library, writing, and ``groundroll report``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from groundroll.alignment import Alignment, extract_links
from groundroll.explore import explore_alignment, layer_maps
from groundroll.report import alignment_report, alignment_variants, segmentation_report, write_report

EXAMPLE = Path(__file__).resolve().parents[1] / "groundroll" / "data" / "examples" / "shapes_scene.png"
EXTERNAL = re.compile(r"(?i)(?:https?|ftp)://|\bsrc\s*=\s*[\"']?//|<link\b")
SRC, TGT = "su tuga vefin", "thun krakron quxe"


def data_of(html: str) -> dict:
    block = re.search(r'<script id="gr-data" type="application/json">(.*?)</script>', html, re.S)
    assert block, "no embedded data"
    return json.loads(block.group(1))


def toy():
    from groundroll.zoo import cached

    return cached("bundled:toy-mt")


def _alignment(src, tgt, seed=0):
    m = np.random.default_rng(seed).random((len(tgt), len(src)))
    return Alignment(list(src), list(tgt), m, extract_links(m), settings={"method": "raw"})


def test_hostile_words_stay_text():
    words = ["</script><script>alert(1)</script>", "http://evil.example/x.js", "a&b", "<!--"]
    a = _alignment(words, ["x", "https://cdn.example", "z"])
    html = a.to_html(title="see http://example.org")
    assert html.startswith("<!DOCTYPE html>")
    assert not EXTERNAL.search(html)
    assert "<script>alert" not in html
    data = data_of(html)
    assert data["pairs"][0]["src"] == words                 # JSON escapes decode back
    assert data["pairs"][0]["tgt"][1] == "https://cdn.example"
    np.testing.assert_allclose(data["pairs"][0]["matrices"][0], a.matrix, atol=1e-5)
    assert html.count("<script") == 3                      # data block, shared helpers, page script


def test_many_pairs_are_paged_under_the_size_limit():
    pairs = [_alignment([f"s{i}" for i in range(12)], [f"t{i}" for i in range(12)], seed=k)
             for k in range(300)]
    html = alignment_report(pairs, max_bytes=120_000)
    assert len(html.encode()) <= 120_000
    data = data_of(html)
    assert 1 <= len(data["pairs"]) < 300
    assert f"Showing the first {len(data['pairs'])} of 300 sentence pairs" in html
    assert data["pairs"][1]["src"] == pairs[1].src_words
    full = alignment_report(pairs[:3])
    assert "Showing the first" not in full and len(data_of(full)["pairs"]) == 3


def test_one_huge_pair_keeps_the_variants_that_fit():
    from groundroll.report.alignment import _html, _variant

    m = np.random.default_rng(0).random((150, 150)).round(5).tolist()
    variants = [_variant("raw", l, "fused", False) for l in range(20)]
    pair = dict(src=[f"s{i}" for i in range(150)], tgt=[f"t{i}" for i in range(150)],
                matrices=[m] * 20)
    html = _html([pair], variants, initial=0, extraction="argmax", link_threshold=None,
                 title="t", settings={}, max_bytes=1_500_000)
    data = data_of(html)
    assert 1 <= len(data["variants"]) < 20
    assert len(data["pairs"][0]["matrices"]) == len(data["variants"])
    assert "computed variants" in html
    assert "<noscript>" not in html                        # no static table for huge pairs


def test_variants_cover_methods_layers_heads_and_shift():
    v = alignment_variants(n_layers=3, n_heads=4)
    assert len(v) == 40 + 40 + 6
    keys = {(x["method"], x["layer"], x["head"], x["shift"]) for x in v}
    assert len(keys) == len(v)
    assert ("raw", 2, 3, True) in keys and ("rollout", 1, "fused", False) in keys
    assert ("rollout", 2, "fused", False) not in keys      # "all" is the last layer already


def test_explored_matrices_equal_align():
    import groundroll as gr

    html = explore_alignment(SRC, TGT, model=toy(), methods=("raw", "norm", "rollout"))
    data = data_of(html)
    assert not EXTERNAL.search(html)
    index = {(v["method"], v["layer"], v["head"], v["shift"]): k
             for k, v in enumerate(data["variants"])}
    cases = [(("raw", "all", "fused", False), dict(layers=[0, 1, 2])),
             (("raw", 2, 0, False), dict(layers=[2], heads=[0])),
             (("raw", 1, "fused", True), dict(layers=[1], shift=True)),
             (("rollout", 0, "fused", False), dict(method="rollout", layers=[0])),
             (("rollout", "all", "fused", True), dict(method="rollout", layers=[0, 1, 2],
                                                      shift=True))]
    for key, options in cases:
        got = np.asarray(data["pairs"][0]["matrices"][index[key]])
        ref = gr.align(SRC, TGT, model=toy(), **{"method": "raw", **options}).matrix
        np.testing.assert_allclose(got, ref, atol=1e-5, err_msg=str(key))
    # the page opens on what gr.align picks for this model by default
    default = gr.align(SRC, TGT, model=toy())
    np.testing.assert_allclose(data["pairs"][0]["matrices"][data["initial"]], default.matrix,
                               atol=1e-5)
    assert data["extraction"] == default.settings["extraction"]


def test_explore_alignment_translates_without_target():
    import groundroll as gr

    data = data_of(explore_alignment(SRC, model=toy(), methods=("raw",), per_head=False))
    assert data["pairs"][0]["tgt"] == gr.align(SRC, model=toy()).tgt_words
    assert data["settings"]["generated"] is True


def _segmentation(hw, prompts=("a", "b")):
    from groundroll.grounding import Segmentation

    h, w = hw
    rng = np.random.default_rng(0)
    labels = np.zeros(hw, np.int32)
    labels[: h // 2, : w // 2] = 1
    labels[h // 2:, w // 2:] = 2
    masks = np.stack([labels == k + 1 for k in range(len(prompts))])
    heat = rng.random((len(prompts),) + hw).astype(np.float32)
    image = rng.integers(0, 255, hw + (3,), dtype=np.uint8)
    return Segmentation(labels, masks, heat, np.array([0.3, 0.2], np.float32), list(prompts),
                        {"model": "test"}, image)


def test_segmentation_report_layers_and_scores():
    seg = _segmentation((40, 60))
    html = seg.to_html()
    assert html.startswith("<!DOCTYPE html>") and not EXTERNAL.search(html)
    data = data_of(html)
    assert [p["name"] for p in data["prompts"]] == ["a", "b"]
    assert (data["width"], data["height"]) == (60, 40)
    assert data["prompts"][0]["area"] == pytest.approx(0.25)
    assert data["prompts"][0]["score"] == pytest.approx(0.3)
    from PIL import Image
    import base64, io

    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(
        data["prompts"][1]["mask"].split(",", 1)[1]))))
    assert mask.shape == (40, 60, 4)
    np.testing.assert_array_equal(mask[..., 3] > 0, seg.masks[1])   # the layer is the mask
    assert "shown at" not in html


def test_huge_image_is_downscaled_with_a_note():
    seg = _segmentation((1500, 2400))
    html = segmentation_report(seg, max_side=512)
    data = data_of(html)
    assert max(data["width"], data["height"]) == 512
    assert "(2400 x 1500 pixels)" in html and "shown at 512 x 320" in html
    small = segmentation_report(seg, max_side=512, max_bytes=300_000)
    assert len(small.encode()) <= 300_000
    assert max(data_of(small)["width"], data_of(small)["height"]) < 512


def test_layer_maps_end_at_the_full_model_maps():
    from groundroll import masks as M
    from groundroll.grounding import load_image, resolve_model
    from groundroll.grounding.sources import relevance_maps, rollout_maps

    handle = resolve_model("bundled:shapes-clip-short")
    rgb = load_image(EXAMPLE)
    geometry = M.letterbox_geometry(rgb.shape[:2], handle.image_size, mode="pad")
    model_input = M.letterbox_image(rgb, geometry, fill=0)

    def full(grid):
        m = M.unletterbox(grid.astype(np.float32), geometry, order=1)[0]
        return (m - m.min()) / (m.max() - m.min())

    n_layers = len(handle.model.visual.transformer.resblocks)
    ro = layer_maps(EXAMPLE, "red circle", model=handle, method="rollout")
    assert ro.shape == (n_layers,) + rgb.shape[:2] and ro.dtype == np.float32
    np.testing.assert_allclose(ro[-1], full(rollout_maps(handle, model_input, ["x"])), atol=1e-4)
    rel = layer_maps(EXAMPLE, "red circle", model=handle, method="relevance")
    np.testing.assert_allclose(rel[-1], full(relevance_maps(handle, model_input, ["red circle"])),
                               atol=1e-4)
    assert not np.allclose(rel[0], rel[-1], atol=1e-2)    # layers differ
    assert rel.min() >= 0 and rel.max() <= 1
    with pytest.raises(ValueError, match="prompt"):
        layer_maps(EXAMPLE, " ", model=handle)
    with pytest.raises(ValueError, match="method"):
        layer_maps(EXAMPLE, "x", model=handle, method="flow")


def test_write_report_is_atomic_and_never_overwrites(tmp_path):
    out = tmp_path / "r.html"
    write_report("<p>one</p>", out)
    with pytest.raises(FileExistsError, match="--force"):
        write_report("<p>two</p>", out)
    assert out.read_text() == "<p>one</p>"
    write_report("<p>two</p>", out, force=True)
    assert out.read_text() == "<p>two</p>"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]     # no temporary left


# ----------------------------------------------------------------------------- CLI


def run_cli(*argv):
    from groundroll.cli import main

    return main(list(map(str, argv)))


def test_cli_report_align(tmp_path, capsys):
    out = tmp_path / "a.html"
    assert run_cli("report", "align", SRC, TGT, "--methods", "raw", "--out", out) == 0
    data = data_of(out.read_text(encoding="utf-8"))
    assert data["pairs"][0]["src"] == SRC.split() and data["pairs"][0]["tgt"] == TGT.split()
    before = out.read_bytes()
    assert run_cli("report", "align", SRC, "--out", out) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    assert run_cli("report", "align", SRC, "--methods", "raw", "--out", out, "--force") == 0
    assert out.read_bytes() != before
    # a saved alignment, and files of sentences
    saved = tmp_path / "a.json"
    _alignment(["a", "b"], ["x", "y"]).save(saved)
    assert run_cli("report", "align", "--load", saved, "--out", tmp_path / "b.html") == 0
    assert data_of((tmp_path / "b.html").read_text())["pairs"][0]["src"] == ["a", "b"]
    (tmp_path / "s.txt").write_text(f"{SRC}\nsu vefin\n")
    (tmp_path / "t.txt").write_text(f"{TGT}\n")
    assert run_cli("report", "align", "--src", tmp_path / "s.txt", "--tgt", tmp_path / "t.txt",
                   "--out", tmp_path / "c.html") == 2
    assert "2 lines" in capsys.readouterr().err and not (tmp_path / "c.html").exists()
    assert run_cli("report", "align", "--out", tmp_path / "d.html") == 2
    assert run_cli("report", "align", SRC, "--out", tmp_path / "e.txt") == 2
    assert run_cli("report", "align", SRC, "--model", "bundled:no-such-model",
                   "--out", tmp_path / "f.html") == 1
    assert not (tmp_path / "f.html").exists()


def test_cli_report_segment_errors_write_nothing(tmp_path, capsys):
    out = tmp_path / "s.html"
    assert run_cli("report", "segment", EXAMPLE, "--out", out) == 2
    assert "no prompts" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert run_cli("report", "segment", bad, "-p", "x", "--out", out) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert run_cli("report", "segment", EXAMPLE, "-p", "x", "--layer-prompt", "3",
                   "--out", out) == 2
    assert run_cli("report", "segment", EXAMPLE, "-p", "x", "--model", "bundled:nope",
                   "--out", out) == 1
    assert not out.exists()


def test_cli_report_segment(tmp_path):
    out = tmp_path / "s.html"
    assert run_cli("report", "segment", EXAMPLE, "-p", "red circle", "-p", "blue star",
                   "--model", "bundled:shapes-clip-short", "--mask-threshold", "0.6",
                   "--out", out) == 0
    html = out.read_text(encoding="utf-8")
    assert not EXTERNAL.search(html)
    data = data_of(html)
    assert [p["name"] for p in data["prompts"]] == ["red circle", "blue star"]
    assert len(data["layers"]["maps"]) == 4 and "red circle" in data["layers"]["title"]


# ----------------------------------------------------------------------------- audit


def _audit():
    from groundroll.auditing import Audit

    rng = np.random.default_rng(0)
    maps_a = [rng.random((3, 4)) for _ in range(5)]
    maps_b = [m if k != 3 else m[::-1] for k, m in enumerate(maps_a)]
    examples = [dict(index=k, label=f"pair {k}", spearman=1.0 if k != 3 else -0.2,
                     iou_top=1.0, mass_moved=0.0 if k != 3 else 0.4, aer=0.0)
                for k in range(5)]
    aggregate = {m: float(np.mean([e[m] for e in examples])) for m in
                 ("spearman", "iou_top", "mass_moved", "aer")}
    aggregate.update({m + "_median": float(np.median([e[m] for e in examples]))
                      for m in ("spearman", "iou_top", "mass_moved", "aer")})
    aggregate["n"] = 5
    return Audit("align", examples, aggregate, maps_a, maps_b,
                 {"model_a": "m1", "model_b": "m2", "top": 0.1})


def test_audit_report_and_cli(tmp_path):
    a = _audit()
    html = a.to_html()
    assert html.startswith("<!DOCTYPE html>") and not EXTERNAL.search(html)
    data = data_of(html)
    assert data["first"] == 3                               # the most changed example
    assert set(data["pictures"]) == {"3", "0", "1", "2", "4"}
    assert data["aggregate"]["mass_moved"] == pytest.approx(0.08)
    small = data_of(__import__("groundroll.report", fromlist=["x"]).audit_report(
        a, max_bytes=len(html.encode()) - 2000))
    assert 0 < len(small["pictures"]) < 5 and "3" in small["pictures"]
    a.save(tmp_path / "audit", figure=False)
    out = tmp_path / "audit.html"
    assert run_cli("report", "audit", tmp_path / "audit", "--out", out) == 0
    assert data_of(out.read_text())["first"] == 3
    assert run_cli("report", "audit", tmp_path, "--out", tmp_path / "x.html") == 2


def test_audit_of_a_model_against_itself():
    from groundroll.auditing import audit

    result = audit(toy(), toy(), [(SRC, TGT), ("su vefin", "thun quxe")])
    data = data_of(result.to_html())
    assert data["aggregate"]["spearman"] == pytest.approx(1.0)
    assert len(data["examples"]) == 2


def test_pairs_with_an_empty_side_still_render():
    a = Alignment(["a", "b"], [], np.zeros((0, 2)), set())
    data = data_of(alignment_report([a, _alignment(["c"], ["d"])]))
    assert data["pairs"][0]["tgt"] == [] and data["pairs"][0]["matrices"][0] == []

"""groundroll.distributed with the local engine (no Ray needed): image sources, shards,
resumption, refusals, failures and the combined outputs, checked against plain
``groundroll.segment`` / ``groundroll.align`` calls."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import groundroll as gr
from groundroll.alignment.io import read_lines
from groundroll.data import toy_translation
from groundroll.data.shapes import EVAL_SEED_OFFSET, scene
from groundroll.distributed import (STATE_DIR, SettingsMismatchError, align_corpus,
                                    segment_dataset)
from groundroll.distributed import segment as dseg
from groundroll.distributed._state import plan_shards

PROMPTS = ["red circle", "blue star"]
SEG_MODEL = "bundled:shapes-clip-short"
ALIGN_MODEL = "bundled:toy-mt"
N_IMAGES = 7
SIZE = (48, 64)


@pytest.fixture(scope="module")
def seg_bundle():
    return gr.load(SEG_MODEL)


@pytest.fixture(scope="module")
def align_bundle():
    return gr.load(ALIGN_MODEL)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    for i in range(N_IMAGES):
        Image.fromarray(scene(EVAL_SEED_OFFSET + i, size=SIZE).image).save(
            folder / f"scene{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def reference(scene_dir, seg_bundle):
    """Label maps and COCO annotations of plain segment() calls, one image at a time."""
    out = {}
    for path in sorted(scene_dir.glob("*.png")):
        seg = gr.segment(path, PROMPTS, model=seg_bundle, mask_threshold=0.5)
        out[path.stem] = (seg.labels, seg.to_coco())
    return out


def _run(images, out, bundle, **kw):
    kw.setdefault("mask_threshold", 0.5)
    kw.setdefault("shard_size", 3)
    kw.setdefault("batch_size", 2)
    return segment_dataset(images, PROMPTS, model=bundle, out=out, engine="local",
                           progress=False, **kw)


def _labels(out, stem):
    return np.asarray(Image.open(out / f"{stem}_labels.png"))


def _snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_shard_ids_are_deterministic_and_follow_the_content():
    keys = [f"k{i}" for i in range(7)]
    a, b = plan_shards(keys, 3), plan_shards(list(keys), 3)
    assert [s.id for s in a] == [s.id for s in b]
    assert [(s.start, s.stop) for s in a] == [(0, 3), (3, 6), (6, 7)]
    changed = plan_shards(keys[:4] + ["other"] + keys[5:], 3)
    assert changed[0].id == a[0].id and changed[1].id != a[1].id and changed[2].id == a[2].id


def test_folder_run_matches_plain_segment_and_writes_combined_coco(scene_dir, seg_bundle,
                                                                  reference, tmp_path):
    out = tmp_path / "out"
    run = _run(scene_dir, out, seg_bundle, rle_parquet=True)
    assert (run.total, run.processed, run.skipped, run.failed, run.shards) == (
        N_IMAGES, N_IMAGES, 0, 0, 3)
    coco = json.loads((out / "coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == PROMPTS
    assert [im["stem"] for im in coco["images"]] == sorted(reference)
    from pycocotools import mask as mask_util

    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    for im in coco["images"]:
        labels, anns = reference[im["stem"]]
        assert np.array_equal(_labels(out, im["stem"]), labels)
        got = by_image.get(im["id"], [])
        assert [a["category_id"] for a in got] == [a["category_id"] for a in anns]
        for a in got:  # each RLE decodes to the reference label map's mask
            m = mask_util.decode({"size": a["segmentation"]["size"],
                                  "counts": a["segmentation"]["counts"].encode()})
            assert np.array_equal(m.astype(bool), labels == a["category_id"])
    import pyarrow.parquet as pq

    table = pq.read_table(out / "masks.parquet").to_pylist()
    assert len(table) == len(coco["annotations"])
    assert [r["rle_counts"] for r in table] == [
        a["segmentation"]["counts"] for a in coco["annotations"]]
    assert (out / "failures.jsonl").read_text() == ""


def test_resume_writes_nothing_and_skips_every_shard(scene_dir, seg_bundle, tmp_path):
    out = tmp_path / "out"
    _run(scene_dir, out, seg_bundle)
    before = _snapshot(out)
    run = _run(scene_dir, out, seg_bundle, resume=True)
    assert (run.processed, run.skipped, run.written) == (0, N_IMAGES, [])
    assert _snapshot(out) == before


def test_interrupted_run_records_only_whole_shards_and_resume_completes(
        scene_dir, seg_bundle, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = dseg.SegmentWorker.segment_one
    calls = []

    def dies_at_the_fifth_image(self, image, key):
        calls.append(key)
        if len(calls) == 5:  # second shard (images 3-5) is half written
            raise KeyboardInterrupt
        return real(self, image, key)

    monkeypatch.setattr(dseg.SegmentWorker, "segment_one", dies_at_the_fifth_image)
    with pytest.raises(KeyboardInterrupt):
        _run(scene_dir, out, seg_bundle)
    done = sorted(p.stem for p in (out / STATE_DIR / "done").glob("*.json"))
    shards = plan_shards(sorted(reference), 3)
    assert done == [shards[0].id]  # the half-written shard is not recorded
    assert (out / "scene03_labels.png").is_file() and not (out / "coco.json").exists()
    monkeypatch.setattr(dseg.SegmentWorker, "segment_one", real)
    with pytest.raises(FileExistsError, match="resume"):
        _run(scene_dir, out, seg_bundle)
    run = _run(scene_dir, out, seg_bundle, resume=True)
    assert (run.processed, run.skipped) == (N_IMAGES - 3, 3)
    for stem, (labels, _) in reference.items():
        assert np.array_equal(_labels(out, stem), labels)


def test_resume_with_other_settings_is_refused(scene_dir, seg_bundle, tmp_path):
    out = tmp_path / "out"
    _run(scene_dir, out, seg_bundle)
    before = _snapshot(out)
    with pytest.raises(SettingsMismatchError, match="prompts") as err:
        segment_dataset(scene_dir, ["green square"], model=seg_bundle, out=out,
                        engine="local", mask_threshold=0.5, shard_size=3, resume=True,
                        progress=False)
    assert "'red circle'" in str(err.value) and "green square" in str(err.value)
    with pytest.raises(SettingsMismatchError, match="mask_threshold"):
        _run(scene_dir, out, seg_bundle, mask_threshold=0.7, resume=True)
    with pytest.raises(SettingsMismatchError, match="shard_size"):
        _run(scene_dir, out, seg_bundle, shard_size=4, resume=True)
    assert _snapshot(out) == before


def test_fresh_run_does_not_overwrite_outputs_without_force(scene_dir, seg_bundle,
                                                            tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "scene02_labels.png").write_bytes(b"someone else's file")
    with pytest.raises(FileExistsError, match="scene02_labels.png"):
        _run(scene_dir, out, seg_bundle)
    assert sorted(p.name for p in out.iterdir()) == ["scene02_labels.png"]


def test_manifest_with_missing_files_lists_them_before_any_work(scene_dir, seg_bundle,
                                                               tmp_path):
    manifest = tmp_path / "images.json"
    entries = [str(p) for p in sorted(scene_dir.glob("*.png"))]
    entries[1:1] = [str(tmp_path / "gone_a.png"), str(tmp_path / "gone_b.png")]
    manifest.write_text(json.dumps(entries))
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError) as err:
        _run(manifest, out, seg_bundle)
    assert "2 image file(s) not found" in str(err.value)
    assert "gone_a.png" in str(err.value) and "gone_b.png" in str(err.value)
    assert not out.exists()


def test_missing_outputs_of_done_shards_are_redone_on_resume(scene_dir, seg_bundle,
                                                             reference, tmp_path):
    out = tmp_path / "out"
    _run(scene_dir, out, seg_bundle)
    (out / "scene04_labels.png").unlink()
    with pytest.warns(UserWarning, match="scene04_labels.png"):
        run = _run(scene_dir, out, seg_bundle, resume=True)
    assert (run.processed, run.skipped) == (3, N_IMAGES - 3)
    assert np.array_equal(_labels(out, "scene04"), reference["scene04"][0])


def test_bad_image_goes_to_the_failures_file_and_the_others_finish(scene_dir, seg_bundle,
                                                                  reference, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    paths = sorted(scene_dir.glob("*.png"))
    images = paths[:2] + [bad] + paths[2:]
    out = tmp_path / "out"
    run = _run(images, out, seg_bundle, shard_size=4, batch_size=4)
    assert (run.processed, run.failed) == (N_IMAGES + 1, 1)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 1 and failures[0]["key"] == "broken"
    assert "cannot read image" in failures[0]["error"]
    for p in paths:
        assert np.array_equal(_labels(out, p.stem), reference[p.stem][0])
    assert not (out / "broken_labels.png").exists()
    coco = json.loads((out / "coco.json").read_text())
    assert [im["id"] for im in coco["images"]] == [1, 2] + list(range(4, N_IMAGES + 2))


def test_parquet_manifest_and_ids_name_the_outputs(scene_dir, seg_bundle, reference,
                                                   tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = sorted(scene_dir.glob("*.png"))[:3]
    manifest = tmp_path / "images.parquet"
    pq.write_table(pa.table({"path": [os.path.relpath(p, tmp_path) for p in paths],
                             "id": ["a", "b", "c"]}), manifest)
    out = tmp_path / "out"
    _run(manifest, out, seg_bundle)
    for key, p in zip("abc", paths):
        assert np.array_equal(_labels(out, key), reference[p.stem][0])


def test_datasets_input_reads_rows(seg_bundle, tmp_path):
    datasets = pytest.importorskip("datasets")
    images = [scene(EVAL_SEED_OFFSET + i, size=SIZE).image for i in range(3)]
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(im) for im in images],
                                     "id": ["x0", "x1", "x2"]}).cast_column(
        "image", datasets.Image())
    out = tmp_path / "out"
    _run(ds, out, seg_bundle)
    for key, im in zip(["x0", "x1", "x2"], images):
        seg = gr.segment(im, PROMPTS, model=seg_bundle, mask_threshold=0.5)
        assert np.array_equal(_labels(out, key), seg.labels)


def test_colliding_stems_and_bad_options_are_refused(scene_dir, seg_bundle, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "scene00.png").write_bytes((scene_dir / "scene00.png").read_bytes())
    with pytest.raises(ValueError, match="scene00"):
        _run([scene_dir / "scene00.png", other / "scene00.png"], tmp_path / "o", seg_bundle)
    with pytest.raises(ValueError, match="workers"):
        segment_dataset(scene_dir, PROMPTS, out=tmp_path / "o", engine="local", workers=2)
    with pytest.raises(ValueError, match="engine"):
        segment_dataset(scene_dir, PROMPTS, out=tmp_path / "o", engine="spark")
    with pytest.raises(TypeError, match="spec string"):
        segment_dataset(scene_dir, PROMPTS, model=seg_bundle, out=tmp_path / "o",
                        engine="ray")
    with pytest.raises(ValueError, match="prompts"):
        segment_dataset(scene_dir, [], out=tmp_path / "o", engine="local")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- align


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    toy_translation.write_corpus(folder, 23, split="test")
    return folder


def _align(corpus, out, bundle, **kw):
    kw.setdefault("shard_size", 5)
    kw.setdefault("batch_size", 4)
    kw.setdefault("method", "raw")
    return align_corpus(corpus / "src.txt", corpus / "tgt.txt", model=bundle, out=out,
                        engine="local", progress=False, **kw)


def test_align_corpus_keeps_order_and_line_count(corpus, align_bundle, tmp_path):
    out = tmp_path / "pred.txt"
    run = _align(corpus, out, align_bundle)
    src = read_lines(corpus / "src.txt")
    tgt = read_lines(corpus / "tgt.txt")
    expected = [a.pharaoh() for a in gr.align(src, tgt, model=align_bundle, method="raw",
                                                batch_size=7)]
    assert out.read_text().split("\n")[:-1] == expected
    assert (run.total, run.processed, run.shards, run.failed) == (23, 23, 5, 0)
    before = _snapshot(tmp_path)
    again = _align(corpus, out, align_bundle, resume=True)
    assert (again.processed, again.skipped, again.written) == (0, 23, [])
    assert _snapshot(tmp_path) == before


def test_align_corpus_symmetrize(corpus, align_bundle, tmp_path):
    src = read_lines(corpus / "src.txt")
    tgt = read_lines(corpus / "tgt.txt")
    expected = [a.pharaoh() for a in gr.align(src, tgt, model=align_bundle, method="raw",
                                                symmetrize="union")]
    _align(corpus, tmp_path / "new.txt", align_bundle, symmetrize="union")
    assert (tmp_path / "new.txt").read_text().split("\n")[:-1] == expected
    again = _align(corpus, tmp_path / "new.txt", align_bundle, symmetrize="union",
                   resume=True)
    assert (again.processed, again.skipped) == (0, 23)


def test_align_corpus_passes_profile_head_fusion_and_residual_to_each_shard(
        corpus, align_bundle, tmp_path):
    src = read_lines(corpus / "src.txt")
    tgt = read_lines(corpus / "tgt.txt")
    given = dict(method="rollout", head_fusion="max", residual=0.2, profile=False)
    expected = [gr.align(s, t, model=align_bundle, **given).pharaoh()
                for s, t in zip(src, tgt)]
    _align(corpus, tmp_path / "kw.txt", align_bundle, **given)
    assert (tmp_path / "kw.txt").read_text().split("\n")[:-1] == expected
    _align(corpus, tmp_path / "obj.txt", align_bundle, method=None,
           options=gr.AlignOptions(**given))
    assert (tmp_path / "obj.txt").read_text().split("\n")[:-1] == expected
    plain = [a.pharaoh() for a in gr.align(src, tgt, model=align_bundle, method="rollout")]
    assert plain != expected      # the options reached the shards' align calls
    settings = json.loads((tmp_path / "kw.txt.run" / "run.json").read_text())["settings"]
    assert (settings["head_fusion"], settings["residual"], settings["profile"]) == (
        "max", 0.2, False)
    # Without method, profile=False is align's unsupervised rule; with one-line shards
    # it is chosen per pair, as in per-pair calls, and differs from the model's profile.
    rule = [gr.align(s, t, model=align_bundle, profile=False).pharaoh()
            for s, t in zip(src, tgt)]
    _align(corpus, tmp_path / "rule.txt", align_bundle, method=None, profile=False,
           shard_size=1)
    assert (tmp_path / "rule.txt").read_text().split("\n")[:-1] == rule
    profiled = [gr.align(s, t, model=align_bundle).pharaoh() for s, t in zip(src, tgt)]
    assert rule != profiled


def test_bulk_runs_hand_their_options_object_to_every_call_whole(
        corpus, align_bundle, scene_dir, seg_bundle, tmp_path, monkeypatch):
    from groundroll.alignment import api
    from groundroll.distributed import RunOptions

    seen = []
    real_align, real_segment = api.align, gr.grounding.segment

    def spy_align(*args, options, **kw):
        seen.append(options)
        return real_align(*args, options=options, **kw)

    def spy_segment(*args, options, **kw):
        seen.append(options)
        return real_segment(*args, options=options, **kw)

    monkeypatch.setattr(api, "align", spy_align)
    monkeypatch.setattr(gr.grounding, "segment", spy_segment)
    align_options = gr.AlignOptions(method="raw", residual=0.4)
    align_corpus(corpus / "src.txt", corpus / "tgt.txt", model=align_bundle,
                 out=tmp_path / "a.txt", options=align_options,
                 run=RunOptions(engine="local", shard_size=10, progress=False))
    assert len(seen) == 3 and all(o is align_options for o in seen)
    seen.clear()
    segment_options = gr.SegmentOptions(mask_threshold=0.5, min_size=2)
    segment_dataset(scene_dir, PROMPTS, model=seg_bundle, out=tmp_path / "s",
                    options=segment_options, engine="local", progress=False)
    assert len(seen) == N_IMAGES and all(o is segment_options for o in seen)
    with pytest.raises(TypeError, match=r"align_corpus\(\) takes no option\(s\)"
                       r" \['resdiual'\]; it accepts .*'residual'"):
        align_corpus(corpus / "src.txt", model=align_bundle, out=tmp_path / "b.txt",
                     options={"resdiual": 0.2}, engine="local")
    with pytest.raises(TypeError, match=r"segment_dataset\(\) takes no option\(s\)"
                       r" \['mask_treshold'\]"):
        segment_dataset(scene_dir, PROMPTS, out=tmp_path / "t", engine="local",
                        options={"mask_treshold": 0.5})
    with pytest.raises(ValueError, match="retries must be >= 0"):
        RunOptions(retries=-1)


def test_align_failed_line_keeps_its_place(align_bundle, tmp_path):
    src = ["su tuga vefin", "", "su tuga vefin"]
    tgt = ["thun krakron quxe", "", "thun krakron quxe"]
    out = tmp_path / "pred.txt"
    run = align_corpus(src, tgt, model=align_bundle, out=out, engine="local",
                       shard_size=3, progress=False)
    lines = out.read_text().split("\n")[:-1]
    assert len(lines) == 3 and lines[0] == lines[2] != ""
    if run.failed:  # an empty pair may align to nothing or fail: either way it keeps line 2
        assert lines[1] == ""
        failure = json.loads(run.failures_file.read_text().splitlines()[0])
        assert failure["line"] == 2 and failure["error"]


def test_align_resume_refuses_other_settings_and_existing_output(corpus, align_bundle,
                                                                 tmp_path):
    out = tmp_path / "pred.txt"
    _align(corpus, out, align_bundle)
    with pytest.raises(SettingsMismatchError, match="method"):
        _align(corpus, out, align_bundle, method="rollout", resume=True)
    with pytest.raises(FileExistsError, match="force"):
        _align(corpus, out, align_bundle)


def test_align_corpus_translating_writes_the_translations_the_links_index(
        align_bundle, tmp_path):
    src = [p.src for p in toy_translation.pairs(6, split="test")]
    out = tmp_path / "pred.txt"
    run = align_corpus(src, None, model=align_bundle, method="raw", out=out,
                       engine="local", shard_size=4, progress=False)
    expected = gr.align(src, model=align_bundle, method="raw")
    assert run.files["translation"] == tmp_path / "pred.translation.txt"
    assert read_lines(tmp_path / "pred.translation.txt") == [
        " ".join(a.tgt_words) for a in expected]
    assert read_lines(out) == [a.pharaoh() for a in expected]


# ----------------------------------------------------------------------------- command line


def test_cli_resume_runs_the_sharded_local_engine_and_refuses_other_prompts(
        scene_dir, reference, tmp_path, monkeypatch, capsys, seg_bundle):
    from groundroll import zoo
    from groundroll.cli import main

    monkeypatch.setattr(zoo, "load", lambda spec, **kw: seg_bundle)  # loaded once here
    out = tmp_path / "out"
    base = ["segment", str(scene_dir), "-p", PROMPTS[0], "-p", PROMPTS[1], "--model",
            SEG_MODEL, "--mask-threshold", "0.5", "--out", str(out), "--shard-size", "3"]
    assert main(base + ["--resume"]) == 0
    assert "7 image(s) processed" in capsys.readouterr().err
    for stem, (labels, _) in reference.items():
        assert np.array_equal(_labels(out, stem), labels)
    assert main(base + ["--resume"]) == 0
    assert "0 image(s) processed, 7 skipped" in capsys.readouterr().err
    code = main(base[:2] + ["-p", "green square"] + base[6:] + ["--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "other settings" in err and "green square" in err


def test_cli_align_resume_writes_every_line(corpus, tmp_path, capsys):
    from groundroll.cli import main

    out = tmp_path / "pred.txt"
    args = ["align", "--model", ALIGN_MODEL, "--method", "raw", "--src",
            str(corpus / "src.txt"), "--tgt", str(corpus / "tgt.txt"), "--out", str(out),
            "--shard-size", "6", "--resume", "--quiet"]
    assert main(args) == 0
    assert len(read_lines(out)) == 23
    assert main(args) == 0
    assert "0 line(s) processed, 23 skipped" in capsys.readouterr().err


def test_the_local_engine_needs_no_ray_and_the_ray_engine_says_how_to_get_it(
        scene_dir, monkeypatch, tmp_path):
    import subprocess
    import sys

    code = ("import sys, groundroll.distributed as d; d.segment_dataset; d.align_corpus;"
            " print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ImportError, match=r"groundroll\[ray\]"):
        segment_dataset(scene_dir, PROMPTS, out=tmp_path / "o", engine="ray")
    with pytest.raises(ImportError, match=r"groundroll\[ray\]"):
        align_corpus(["a b"], ["c d"], out=tmp_path / "p.txt", engine="ray")
    assert not (tmp_path / "o").exists()

"""segment(): input handling, postprocessing on hand-made maps, export, large images."""

import json

import numpy as np
import pytest
from PIL import Image

import importlib
from groundroll.grounding import Segmentation, load_image, resolve_model, segment

from test_grounding_support import tiny_bundle

seg_module = importlib.import_module("groundroll.grounding.segment")
result_module = importlib.import_module("groundroll.grounding.result")


@pytest.fixture(scope="module")
def clip():
    return resolve_model(tiny_bundle("open_clip"))


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------ inputs


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P", "RGB", "1", "F"])
def test_every_pil_mode_becomes_rgb_uint8(mode):
    base = Image.fromarray(_rgb(9, 13))
    if mode == "I;16":
        im = Image.fromarray((np.arange(9 * 13).reshape(9, 13) * 500).astype(np.uint16))
    elif mode == "F":
        im = Image.fromarray(np.linspace(0, 1, 9 * 13, dtype=np.float32).reshape(9, 13))
    else:
        im = base.convert(mode)
    out = load_image(im)
    assert out.shape == (9, 13, 3) and out.dtype == np.uint8
    if mode == "I;16":
        assert out.max() > 200  # scaled from 16 bits, not clipped


def test_arrays_of_other_dtypes_and_shapes():
    assert load_image(np.zeros((4, 5), np.uint16)).shape == (4, 5, 3)
    assert load_image(np.ones((4, 5, 4), np.float32))[0, 0].tolist() == [255, 255, 255]
    assert load_image(np.full((2, 2), 65535, np.uint16)).max() == 255
    with pytest.raises(ValueError, match="shape"):
        load_image(np.zeros((2, 2, 7)))


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        load_image(bad)


def test_palette_and_16_bit_files_segment(tmp_path, clip):
    for mode in ("P", "I;16", "LA"):
        path = tmp_path / f"im_{mode.replace(';', '')}.png"
        im = Image.fromarray(_rgb(20, 30)).convert("L" if mode != "P" else "P")
        if mode == "I;16":
            im = Image.fromarray((np.asarray(im).astype(np.uint16) * 257))
        elif mode == "LA":
            im = im.convert("LA")
        im.save(path)
        seg = segment(path, ["a"], model=clip)
        assert seg.labels.shape == (20, 30)


def test_prompt_errors(clip):
    image = _rgb(8, 8)
    with pytest.raises(ValueError, match="no prompts"):
        segment(image, [], model=clip)
    with pytest.raises(ValueError, match="non-empty"):
        segment(image, ["ok", "  "], model=clip)
    with pytest.raises(ValueError, match="method"):
        segment(image, ["ok"], model=clip, method="magic")
    with pytest.raises(ValueError, match="refine"):
        segment(image, ["ok"], model=clip, refine="crf")


def test_long_prompt_is_truncated_with_a_warning(clip):
    with pytest.warns(UserWarning, match="truncated"):
        seg = segment(_rgb(8, 8), [" ".join(["word"] * 40)], model=clip)
    assert seg.labels.shape == (8, 8)


# ------------------------------------------------------------ hand-made maps


def _fake_source(maps):
    def fake(handle, image, prompts, **kwargs):
        assert image.shape[:2] == handle.image_size
        return np.asarray(maps, np.float32)[: len(prompts)]
    return fake


def test_letterbox_geometry_maps_grid_halves_to_image_halves(clip, monkeypatch):
    # Grid 4 x 4: prompt 0 on the left half, prompt 1 on the right half.
    left = np.zeros((4, 4))
    left[:, :2] = 1
    monkeypatch.setattr(seg_module, "prompt_maps", _fake_source([left, 1 - left]))
    s = segment(_rgb(16, 64), ["l", "r"], model=clip)   # wide image: padded top/bottom
    assert (s.labels[:, :30] == 1).all() and (s.labels[:, 34:] == 2).all()
    assert s.masks.sum() == 16 * 64


def test_threshold_and_background_prompts(clip, monkeypatch):
    blob = np.zeros((4, 4))
    blob[1:3, 1:3] = 1
    flat = np.full((4, 4), 0.5)
    monkeypatch.setattr(seg_module, "prompt_maps", _fake_source([blob, flat]))
    s = segment(_rgb(32, 32), ["thing"], model=clip, mask_threshold=0.5)
    assert s.labels[16, 16] == 1 and s.labels[0, 0] == 0
    s = segment(_rgb(32, 32), ["thing"], background=["background"], model=clip,
                normalize="none", logit_scale=50)
    assert s.labels[16, 16] == 1 and s.labels[0, 0] == 0 and s.masks.shape[0] == 1
    s = segment(_rgb(32, 32), ["thing"], model=clip, refine="pamr", mask_threshold=0.5,
                min_size=4, fill_holes=True)
    assert s.labels[16, 16] == 1


def test_mask_threshold_alone_is_a_probability_threshold(clip, monkeypatch):
    blob = np.zeros((4, 4))
    blob[1:3, 1:3] = 1
    monkeypatch.setattr(seg_module, "prompt_maps", _fake_source([blob]))
    new = segment(_rgb(32, 32), ["thing"], model=clip, mask_threshold=0.5)
    assert new.settings["mask_threshold"] == 0.5 and "threshold" not in new.settings
    assert new.settings["background_rule"] == "threshold"
    assert new.labels[16, 16] == 1 and new.labels[0, 0] == 0


def test_superpixel_refinement_snaps_a_coarse_map_to_the_object(clip, monkeypatch):
    # A red square on grey; the source's map is a blurry 4 x 4 grid blob around it.
    image = np.full((32, 32, 3), 128, np.uint8)
    image[8:20, 8:20] = (220, 30, 30)
    blob = np.zeros((4, 4))
    blob[1:3, 1:3] = 1.0
    blob[0:4, 0:4] += 0.2
    monkeypatch.setattr(seg_module, "prompt_maps", _fake_source([blob, 1 - blob]))
    truth = np.zeros((32, 32), bool)
    truth[8:20, 8:20] = True
    iou = {}
    for refine in ("none", "superpixels"):
        s = segment(image, ["red square"], model=clip, refine=refine,
                    background_rule="otsu", mask_threshold=1.0)
        assert s.settings["refine"] == refine
        iou[refine] = (s.masks[0] & truth).sum() / (s.masks[0] | truth).sum()
    assert iou["superpixels"] > 0.9 > 0.6 > iou["none"], iou


def _square_scene(side):
    image = np.full((side, side, 3), 128, np.uint8)
    lo, hi = side // 4, side * 3 // 4
    image[lo:hi, lo:hi] = (220, 30, 30)
    truth = np.zeros((side, side), bool)
    truth[lo:hi, lo:hi] = True
    return image, truth


def test_superpixels_on_a_large_image_refine_at_superpixel_side(clip, monkeypatch):
    # The 1024-pixel scene is refined at SUPERPIXEL_SIDE: its labels are those of the
    # same scene drawn at 256 pixels, resized by nearest neighbour (the map is the same
    # grid blob, so the shrunk maps agree up to interpolation).
    assert seg_module.SUPERPIXEL_SIDE == 256
    blob = np.zeros((4, 4))
    blob[1:3, 1:3] = 1.0
    blob += 0.2
    monkeypatch.setattr(seg_module, "prompt_maps", _fake_source([blob, 1 - blob]))
    calls = []
    real = seg_module.M.superpixel_partitions
    monkeypatch.setattr(seg_module.M, "superpixel_partitions",
                        lambda image, **kw: calls.append(image.shape) or real(image, **kw))
    big, truth = _square_scene(1024)
    options = dict(model=clip, refine="superpixels", background_rule="otsu",
                   mask_threshold=1.0)
    s = segment(big, ["red square"], **options)
    assert calls == [(256, 256, 3)]
    assert s.labels.shape == (1024, 1024)
    iou = (s.masks[0] & truth).sum() / (s.masks[0] | truth).sum()
    assert iou > 0.95, iou
    small = segment(_square_scene(256)[0], ["red square"], **options)
    same = (np.kron(small.labels, np.ones((4, 4), np.int32)) == s.labels).mean()
    assert same > 0.99, same


def test_the_cache_keeps_an_images_partitions_across_calls(clip, monkeypatch):
    blob = np.zeros((4, 4))
    blob[1:3, 1:3] = 1.0
    monkeypatch.setattr(seg_module, "prompt_maps", _fake_source([blob, 1 - blob]))
    calls = []
    real = seg_module.M.superpixel_partitions
    monkeypatch.setattr(seg_module.M, "superpixel_partitions",
                        lambda image, **kw: calls.append(1) or real(image, **kw))
    image, _ = _square_scene(64)
    cache = {}
    prompts = ["red square", "grey"]
    first = segment(image, prompts, model=clip, refine="superpixels", cache=cache)
    again = segment(image, prompts, model=clip, refine="superpixels", cache=cache)
    assert len(calls) == 1                      # the second call reused the partitions
    alone = segment(image, prompts, model=clip, refine="superpixels")
    assert len(calls) == 2                      # no cache: partitioned again
    assert (first.labels == 1).any() and (first.labels == 2).any()
    np.testing.assert_array_equal(first.labels, again.labels)
    np.testing.assert_array_equal(first.labels, alone.labels)
    for k in range(seg_module.CACHED_PARTITIONS + 3):
        segment(_rgb(16, 16, seed=k), ["a"], model=clip, refine="superpixels",
                cache=cache)
    kept = [key for key in cache if isinstance(key, tuple)]
    assert len(kept) == seg_module.CACHED_PARTITIONS


def test_refined_probabilities_pool_probabilities_and_scores_in_one_pass():
    from groundroll import masks as M
    from groundroll.grounding.profiles import refine_scores

    rng = np.random.default_rng(3)
    image = _rgb(20, 24, seed=3)
    maps = rng.random((3, 20, 24)).astype(np.float32)
    parts = M.superpixel_partitions(image)
    probs, scores = seg_module.refined_probabilities(
        maps, image, n_prompts=2, normalize="minmax", logit_scale=10.0,
        refine="superpixels", rule="relative", partitions=parts)
    want_probs = seg_module.channel_probabilities(maps, image, normalize="minmax",
                                                  logit_scale=10.0, refine="superpixels",
                                                  partitions=parts)
    want_scores = refine_scores(maps[:2], image, refine="superpixels", partitions=parts)
    np.testing.assert_allclose(probs, want_probs, atol=1e-6)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6)
    _, raw = seg_module.refined_probabilities(
        maps, image, n_prompts=2, normalize="minmax", logit_scale=10.0,
        refine="superpixels", rule="threshold", partitions=parts)
    assert raw is maps                          # the threshold rule reads no scores


def test_maps_shrink_by_area_average():
    maps = np.arange(32, dtype=np.float32).reshape(2, 4, 4)
    out = seg_module._shrink_maps(maps, (2, 2))
    want = maps.reshape(2, 2, 2, 2, 2).mean(axis=(2, 4))   # 2 x 2 block means
    np.testing.assert_allclose(out, want, atol=1e-5)


# ------------------------------------------------------------------- export


def _hand_segmentation():
    labels = np.zeros((10, 12), np.int32)
    labels[2:5, 3:8] = 1
    labels[6:9, 0:2] = 2
    masks = np.stack([labels == 1, labels == 2, labels == 3])
    return Segmentation(labels, masks, masks.astype(np.float32),
                        np.array([0.3, 0.2, 0.1], np.float32), ["a cat", "dog!", "x"],
                        image=_rgb(10, 12))


def test_boxes_coco_and_polygons_on_a_hand_mask():
    from pycocotools import mask as mask_util

    s = _hand_segmentation()
    assert s.boxes() == [(3, 2, 8, 5), (0, 6, 2, 9), None]
    coco = s.to_coco(image_id=7)
    assert [a["category_name"] for a in coco] == ["a cat", "dog!"]
    for ann, m in zip(coco, s.masks):
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), m)
        assert ann["area"] == m.sum() and ann["image_id"] == 7
    assert coco[0]["bbox"] == [3.0, 2.0, 5.0, 3.0]
    polys = s.polygons()
    assert len(polys) == 3 and len(polys[0]) == 1 and polys[2] == []
    rows, cols = polys[0][0][:, 0], polys[0][0][:, 1]
    assert rows.min() >= 1 and rows.max() <= 5 and cols.min() >= 2 and cols.max() <= 8


def test_save_writes_everything_and_needs_force(tmp_path):
    s = _hand_segmentation()
    paths = s.save(tmp_path, stem="img")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".img.groundroll.json", "img.json", "img_0_a_cat.png",
                     "img_1_dog.png", "img_2_x.png", "img_labels.png", "img_overlay.png"]
    labels = Image.open(paths["labels"])
    assert labels.mode == "P"
    np.testing.assert_array_equal(np.asarray(labels), s.labels)
    summary = json.loads(paths["summary"].read_text())
    assert summary["areas"] == [15, 6, 0] and summary["boxes"][2] is None
    before = paths["labels"].read_bytes()
    with pytest.raises(FileExistsError, match="force"):
        s.save(tmp_path, stem="img")
    assert paths["labels"].read_bytes() == before
    s.save(tmp_path, stem="img", force=True)
    assert s.overlay().shape == (10, 12, 3)


# ------------------------------------------------------------------- large images


def test_a_6000_by_4000_image_completes(clip):
    big = np.zeros((4000, 6000, 3), np.uint8)
    big[1000:3000, 2000:4000] = 220
    s = segment(big, ["square"], model=clip, method="maskclip", mask_threshold=0.5)
    assert s.labels.shape == (4000, 6000) and s.masks.shape == (1, 4000, 6000)
    assert s.heatmaps.dtype == np.float32 and s.settings["working_size"] == [683, 1024]
    assert s.settings["window"]


def _png_header_only(path, width, height):
    """A PNG whose header claims ``width x height`` pixels (a decompression bomb's
    header; the pixel data is never reached)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, clip):
    bomb = _png_header_only(tmp_path / "bomb.png", 15000, 12000)      # 180 megapixels
    with pytest.raises(ValueError, match="max_pixels") as err:
        segment(bomb, ["a"], model=clip)
    assert "--max-pixels" in str(err.value) and "180,000,000" in str(err.value)
    small = tmp_path / "small.png"
    Image.fromarray(_rgb(50, 60)).save(small)
    with pytest.raises(ValueError, match="max_pixels=1,000"):
        load_image(small, max_pixels=1000)
    assert load_image(small, max_pixels=None).shape == (50, 60, 3)


def test_cli_names_max_pixels_for_a_bomb(tmp_path, capsys):
    from groundroll.cli import main

    bomb = _png_header_only(tmp_path / "bomb.png", 15000, 12000)
    assert main(["segment", str(bomb), "-p", "a", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--max-pixels 180000000" in err and "Traceback" not in err


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_files_are_decoded_near_the_working_resolution(tmp_path, fmt):
    path = tmp_path / f"big.{fmt.lower()}"
    image = np.zeros((1500, 2000, 3), np.uint8)
    image[300:900, 500:1500] = (200, 40, 40)
    Image.fromarray(image).save(path, format=fmt)
    rgb, full = seg_module._read_image(path, max_side=240)
    assert full == (1500, 2000)
    # JPEG: DCT scaling to 1/8 (250 x 188); PNG: reduce by 8 (250 x 188).
    assert 240 <= max(rgb.shape[:2]) < 500 and rgb.shape[1] >= rgb.shape[0]
    assert np.abs(rgb[100, 125].astype(int) - [200, 40, 40]).max() < 30


def test_a_large_file_segments_at_full_size(tmp_path, clip):
    path = tmp_path / "big.jpg"
    Image.fromarray(_rgb(1200, 1600)).save(path, quality=90)
    seg = segment(path, ["a", "b"], model=clip, max_side=200)
    assert seg.labels.shape == (1200, 1600) and seg.masks.shape == (2, 1200, 1600)
    assert seg.settings["working_size"] == [150, 200]
    assert seg.overlay().shape == (1200, 1600, 3)


# ------------------------------------------------------------------- small traps


def test_float_arrays_outside_0_1_are_an_error():
    with pytest.raises(ValueError, match=r"\[0, 1\], got \[255, 255\]; divide"):
        load_image(np.full((4, 4, 3), 255.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_image(np.full((4, 4), -0.5, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        load_image(np.full((4, 4), np.nan))
    assert load_image(np.full((2, 2), 0.5)).max() == 128


def test_a_directory_is_not_an_image(tmp_path, clip):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        segment(tmp_path, ["a"], model=clip)


def test_option_errors_before_the_model_runs(clip):
    with pytest.raises(ValueError, match="min_size"):
        segment(_rgb(8, 8), ["a"], model=clip, min_size=-1)
    for bad in (["a photo"], ["{} and {}"], ["{x} {}"]):
        with pytest.raises(ValueError, match="exactly one"):
            segment(_rgb(8, 8), ["a"], model=clip, templates=bad)


def _warnings_of(call):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_duplicate_prompts_warn_once(clip):
    seg, messages = _warnings_of(
        lambda: segment(_rgb(16, 16), ["a cat", "A  cat", "dog"], model=clip))
    repeats = [m for m in messages if "repeats prompt 0" in m]
    assert len(repeats) == 1 and "prompt 1" in repeats[0]
    assert not seg.masks[1].any()


def test_a_long_prompt_warns_once_and_briefly(clip):
    prompt = " ".join(["word"] * 2000)
    _, messages = _warnings_of(lambda: segment(_rgb(8, 8), [prompt], model=clip))
    truncated = [m for m in messages if "truncated" in m]
    assert len(truncated) == 1 and len(truncated[0]) < 200


def test_out_of_vocabulary_prompt_warns():
    from groundroll.zoo import cached

    bundle = cached("bundled:shapes-clip-short")
    _, messages = _warnings_of(lambda: segment(
        _rgb(32, 32), ["zebra giraffe", "red circle"], model=bundle, method="rollout"))
    unknown = [m for m in messages if "no word the model's tokenizer knows" in m]
    assert len(unknown) == 1 and "zebra giraffe" in unknown[0]


def test_reprs_are_one_short_line(clip):
    import torch

    from groundroll.adapters import capture
    from groundroll.zoo import cached

    bundle = cached("bundled:toy-mt")
    text = repr(bundle)
    assert "\n" not in text and len(text) < 120 and "toy-mt" in text
    with torch.no_grad(), capture(clip.model, streams="vision") as trace:
        clip.model.encode_image(torch.zeros(1, 3, *clip.image_size))
    text = repr(trace)
    assert "\n" not in text and len(text) < 120 and "vision" in text


def test_bundled_loads_show_no_progress_bar(capfd):
    from groundroll.zoo import load

    load("bundled:toy-mt")
    assert "Loading weights" not in capfd.readouterr().err


def test_large_overlays_are_written_in_blocks_with_the_same_pixels(monkeypatch):
    import io

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, (301, 203)).astype(np.int32)
    masks = np.stack([labels == 1, labels == 2])
    s = Segmentation(labels, masks, masks.astype(np.float32), np.zeros(2, np.float32),
                     ["a", "b"], image=_rgb(151, 102))
    monkeypatch.setattr(result_module, "_STREAM_PNG_PIXELS", 0)
    streamed = np.asarray(Image.open(io.BytesIO(s._overlay_png())))
    np.testing.assert_array_equal(streamed, s.overlay())


def test_source_options_are_checked_against_the_source_and_may_be_typed(clip):
    from groundroll.grounding import SOURCES

    image = _rgb(32, 32)
    with pytest.raises(ValueError, match=r"no option\(s\) \['sigmaa'\]; it takes \['sigma'\]"):
        segment(image, ["x"], model=clip, method="naclip", source_options={"sigmaa": 2.0})
    typed = segment(image, ["x", "y"], model=clip, method="naclip",
                    source_options=SOURCES["naclip"].options(sigma=3.0))
    plain = segment(image, ["x", "y"], model=clip, method="naclip",
                    source_options={"sigma": 3.0})
    assert typed.settings["source_options"] == {"sigma": 3.0}
    np.testing.assert_array_equal(typed.heatmaps, plain.heatmaps)
    # The defaults a source declares: cosine maps are not normalised and use the
    # model's logit scale; attention maps are min-max normalised, temperature 10.
    assert typed.settings["normalize"] == "none"
    assert typed.settings["logit_scale"] == pytest.approx(clip.logit_scale())
    rel = segment(image, ["x", "y"], model=clip, method="relevance")
    assert (rel.settings["normalize"], rel.settings["logit_scale"]) == ("minmax", 10.0)


def test_device_defaults_to_the_models_and_a_mismatch_is_refused(clip):
    import torch

    image = _rgb(24, 24)
    here = segment(image, ["a"], model=clip)
    same = segment(image, ["a"], model=clip, device="cpu")
    np.testing.assert_array_equal(here.labels, same.labels)
    np.testing.assert_allclose(here.heatmaps, same.heatmaps)
    with pytest.raises(ValueError, match=r"device='cuda:0' but the model is on cpu; move"):
        segment(image, ["a"], model=clip, device="cuda:0")
    with pytest.raises(ValueError, match=r"device='meta' but the model is on cpu"):
        resolve_model(clip, device=torch.device("meta"))


def test_a_spec_is_loaded_on_the_device_asked_for():
    cache = {}
    handle = resolve_model("bundled:shapes-clip-short", cache=cache, device="cpu")
    assert handle.device.type == "cpu"
    assert resolve_model("bundled:shapes-clip-short", cache=cache, device="cpu") is handle
    assert ("bundled:shapes-clip-short", "cpu") in cache


def test_segment_dataset_takes_device_for_the_local_engine_only(tmp_path):
    from groundroll.distributed import segment_dataset

    path = tmp_path / "scene.png"
    Image.fromarray(_rgb(16, 16)).save(path)
    with pytest.raises(ValueError, match=r"device= places the model of engine='local'"):
        segment_dataset([str(path)], ["a"], model="bundled:shapes-clip-short",
                        out=tmp_path / "o", engine="ray", device="cpu")
    result = segment_dataset([str(path)], ["a"], model="bundled:shapes-clip-short",
                             out=tmp_path / "p", engine="local", device="cpu",
                             progress=False)
    assert result.processed == 1 and result.failed == 0


# ------------------------------------------------------------------------ options


def _same_segmentation(a, b):
    for name in ("labels", "masks", "heatmaps", "scores"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    drop = lambda s: {k: v for k, v in s.items() if k != "seconds"}  # noqa: E731
    assert drop(a.settings) == drop(b.settings)


def test_an_options_object_and_the_keywords_give_the_same_segmentation(clip):
    from groundroll.grounding import SegmentOptions

    image = _rgb(40, 56, seed=3)
    given = dict(method="rollout", mask_threshold=0.4, refine="slic", min_size=2,
                 fill_holes=True, background=["sky"], source_options={"residual": 0.3})
    by_keywords = segment(image, ["a", "b"], model=clip, **given)
    _same_segmentation(by_keywords, segment(image, ["a", "b"], model=clip,
                                            options=SegmentOptions(**given)))
    _same_segmentation(by_keywords, segment(image, ["a", "b"], model=clip, options=given))
    # A keyword other than its default replaces that field of the object.
    moved = segment(image, ["a", "b"], model=clip, mask_threshold=0.4,
                    options=SegmentOptions(**dict(given, mask_threshold=0.9)))
    _same_segmentation(by_keywords, moved)
    assert by_keywords.settings["mask_threshold"] == 0.4
    assert by_keywords.settings["source_options"] == {"residual": 0.3}


def test_an_unknown_segment_option_is_an_error_listing_the_accepted_ones(clip):
    from groundroll.grounding import SegmentOptions

    with pytest.raises(TypeError, match=r"segment\(\) takes no option\(s\)"
                       r" \['mask_treshold'\]; it accepts .*'mask_threshold'"):
        segment(_rgb(8, 8), ["a"], model=clip, options={"mask_treshold": 0.5})
    with pytest.raises(TypeError, match="SegmentOptions or a dict"):
        segment(_rgb(8, 8), ["a"], model=clip, options=[("min_size", 2)])
    with pytest.raises(ValueError, match="min_size"):
        SegmentOptions(min_size=-1)
    with pytest.raises(ValueError, match="source 'naclip' has no option"):
        SegmentOptions(method="naclip", source_options={"residual": 0.5})
    with pytest.raises(ValueError, match="background_rule must be one of"):
        SegmentOptions(background_rule="otsus")


def test_the_options_object_is_passed_down_whole(clip, monkeypatch):
    import inspect

    from groundroll.grounding import SegmentOptions

    seen = []
    real = seg_module._segment_image

    def spy(handle, rgb, full_hw, prompts, started, options, **kw):
        seen.append(options)
        return real(handle, rgb, full_hw, prompts, started, options, **kw)

    monkeypatch.setattr(seg_module, "_segment_image", spy)
    options = SegmentOptions(method="rollout", mask_threshold=0.3, min_size=1)
    segment(_rgb(16, 16), ["a"], model=clip, options=options)
    (got,) = seen
    # One object, resolved once: the caller's fields plus what the profile fills in.
    assert isinstance(got, SegmentOptions)
    assert (got.method, got.mask_threshold, got.min_size) == ("rollout", 0.3, 1)
    assert (got.background_rule, got.refine, got.source_options) == ("threshold", "none",
                                                                      {})
    # No level below segment() lists the fields one by one.
    fields = set(inspect.signature(SegmentOptions).parameters)
    for level in (seg_module._segment, seg_module._segment_image):
        assert not fields & set(inspect.signature(level).parameters), level.__name__

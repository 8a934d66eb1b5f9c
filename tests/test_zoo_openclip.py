import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from groundroll.zoo import openclip as oc  # noqa: E402
from groundroll.zoo.bundle import Bundle  # noqa: E402
from helpers.scripts import training_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "groundroll" / "zoo" / "bundled"
MODELS = {"shapes-clip": ("open_clip", open_clip.CLIP),
          "shapes-clip-short": ("open_clip", open_clip.CLIP),
          "shapes-coca": ("open_clip_coca", open_clip.CoCa)}


def _forward(bundle: Bundle):
    from PIL import Image

    from groundroll.data import shapes

    s = shapes.scene(3)
    image = bundle.preprocess(Image.fromarray(s.image)).unsqueeze(0)
    size = bundle.meta["image_size"]
    assert image.shape == (1, 3, size, size)
    text = bundle.tokenizer(["a photo of a red circle.", "a blue star"])
    assert text.shape == (2, bundle.meta["context_length"]) and text.dtype == torch.long
    with torch.no_grad():
        img = bundle.model.encode_image(image)
        txt = bundle.model.encode_text(text)
    assert img.shape[-1] == txt.shape[-1] and torch.isfinite(img).all()
    assert img.dtype == torch.float32
    return img, txt


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bundled_loads_offline(name, monkeypatch):
    path = BUNDLED / name
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundle = oc.load_open_clip_dir(path)
    adapter, cls = MODELS[name]
    assert bundle.adapter == adapter and type(bundle.model) is cls
    from groundroll.adapters import adapter_for

    assert adapter_for(bundle.model).name == bundle.adapter
    assert not bundle.model.training
    assert set(bundle.meta["labels"]) and bundle.meta["held_out"]["single_object_top1"] > 0
    _forward(bundle)
    assert oc.load_open_clip(str(path)).adapter == adapter
    total = sum(f.stat().st_size for f in path.iterdir())
    assert total < 6 * 2**20


def test_bundled_shapes_clip_names_held_out_scenes():
    """The shipped shapes-clip weights keep their zero-shot accuracy (card: 100% on 500
    held-out single-object scenes), measured here on 60 against a 90% bar."""
    common = training_script("_shapes_common")

    bundle = oc.load_open_clip_dir(BUNDLED / "shapes-clip")
    result = common.zero_shot(bundle.model, bundle.preprocess, bundle.tokenizer, n=60)
    assert result["single_object_top1"] >= 0.9, result
    assert result["multi_object_precision_at_k"] >= 0.85, result


def test_word_tokenizer(tmp_path):
    common = training_script("_shapes_common")

    tok = oc.WordTokenizer(common.build_tokenizer(), 8)
    ids = tok(["a red circle", "A RED CIRCLE", "a zebra"])
    assert ids.shape == (3, 8) and (ids[0] == ids[1]).all()
    assert ids[0, 0] == tok.sot_token_id and ids.argmax(-1)[0] == 4  # [SOT] a red circle [EOT]
    assert tok.tokens(ids[2][:5]) == ["[SOT]", "a", "[UNK]", "[EOT]", "[PAD]"]
    assert tok.decode(ids[0]) == "a red circle"
    assert tok("a red circle").shape == (1, 8)
    with pytest.warns(UserWarning, match="truncated"):
        long = tok(["a red circle and a blue star and a green square"])
    assert long[0, -1] == tok.eot_token_id and long.argmax(-1).item() == 7


def _no_download(monkeypatch):
    """Fail the test if open_clip is asked to build registry weights (a download with
    huggingface_hub's retries): failing fast means failing before that call."""
    def download(*args, **kwargs):
        raise AssertionError(f"open_clip.create_model_and_transforms{args} was called")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", download)


def test_registry_tag_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(oc, "_is_cached", lambda cfg: False)
    _no_download(monkeypatch)
    with pytest.raises(RuntimeError, match="ViT-B-16@/path/to/open_clip_model.safetensors"):
        oc.load_open_clip("ViT-B-16/openai")


def test_unreachable_host_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(oc, "hub_offline", lambda: False)
    monkeypatch.setattr(oc, "_is_cached", lambda cfg: False)
    monkeypatch.setattr(oc, "_unreachable", lambda cfg: "host unreachable (test)")
    _no_download(monkeypatch)
    with pytest.raises(RuntimeError, match="local path"):
        oc.load_open_clip("ViT-B-16/openai")


def test_bad_specs(tmp_path):
    with pytest.raises(FileNotFoundError):
        oc.load_open_clip(f"ViT-B-16@{tmp_path / 'missing.safetensors'}")
    with pytest.raises(ValueError, match="no pretrained tag"):
        oc.load_open_clip("ViT-B-16/not-a-tag")
    with pytest.raises(ValueError):
        oc.load_open_clip("nonsense")
    with pytest.raises(FileNotFoundError):
        oc.load_open_clip_dir(tmp_path)


@pytest.mark.parametrize("recipe", ["shapes_clip", "shapes_coca"])
def test_recipe_two_steps(recipe, tmp_path):
    out = tmp_path / recipe
    cmd = [sys.executable, str(ROOT / "training" / f"{recipe}.py"), "--out", str(out),
           "--steps", "2", "--batch-size", "4", "--eval-n", "0", "--seed", "1"]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=300)
    for name in ("open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json",
                 "meta.json"):
        assert (out / name).is_file()
    bundle = oc.load_open_clip_dir(out)
    assert bundle.meta["training"]["steps"] == 2
    _forward(bundle)


@pytest.mark.parametrize("recipe", ["shapes_clip", "shapes_coca"])
def test_recipe_with_loader_processes_and_a_time_schedule(recipe, tmp_path):
    out = tmp_path / recipe
    cmd = [sys.executable, str(ROOT / "training" / f"{recipe}.py"), "--out", str(out),
           "--steps", "3", "--batch-size", "4", "--eval-n", "0", "--seed", "1",
           "--workers", "1", "--warmup", "1", "--schedule", "time", "--max-minutes", "5"]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=300)
    training = oc.load_open_clip_dir(out).meta["training"]
    assert training["steps"] == 3 and training["workers"] == 1
    assert training["schedule"] == "time" and training["warmup"] == 1
    bad = subprocess.run(cmd[:-2], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "--schedule time needs --max-minutes" in bad.stderr


def test_batch_stream_is_reproducible_and_masks_true_pairs():
    common = training_script("_shapes_common")

    tok = oc.WordTokenizer(common.build_tokenizer(), common.CONTEXT_LENGTH)
    first = next(iter(common.BatchStream(3, 6, tok)))
    again = next(iter(common.BatchStream(3, 6, tok)))
    other = next(iter(common.BatchStream(4, 6, tok)))
    images, text, drop = first
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 96, 96)
    assert text.shape == (12, common.CONTEXT_LENGTH) and drop.shape == (6, 12)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(images, other[0])
    hwc = [im.permute(1, 2, 0).numpy() for im in images]
    assert torch.allclose(common.normalise_images(images), common.to_tensor(hwc), atol=1e-6)
    # Two loader processes take turns: consecutive batches come from different streams.
    loader = torch.utils.data.DataLoader(common.BatchStream(3, 6, tok), batch_size=None,
                                         num_workers=2)
    batches = iter(loader)
    from_worker_0, from_worker_1 = next(batches), next(batches)
    assert torch.equal(from_worker_0[0], images)  # worker 0 draws default_rng([3, 0])
    assert not torch.equal(from_worker_0[0], from_worker_1[0])
    del batches
    # Hand-made label sets: image 0 holds {a, b}; text 1 ("a") is a true pair for it.
    mask = common.false_negatives([{"a", "b"}, {"c"}], [{"a", "b"}, {"a"}, {"c", "a"}, {"b"}])
    assert mask.tolist() == [[False, True, False, True], [False, False, False, False]]
    assert common.cosine_lr(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert common.cosine_lr(50, 100, 1.0, 10, progress=0.5) == pytest.approx(0.5)
    assert common.cosine_lr(50, 100, 1.0, 10, progress=1.5) == pytest.approx(0.0)

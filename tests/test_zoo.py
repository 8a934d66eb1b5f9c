from pathlib import Path

import pytest
import torch

from groundroll.data import toy_translation as toy
from groundroll.zoo import ACCEPTED_FORMS, bundled, load
from helpers.scripts import training_script

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "</s>", "<unk>", "[CLS]", "[SEP]", "▁a", "▁b", "▁c"]
    tok = Tokenizer(models.WordLevel({w: k for k, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def toy_mt():
    if "toy-mt" not in bundled():
        pytest.fail("bundled toy-mt is missing; run training/toy_mt.py")
    return load("bundled:toy-mt")


# ----------------------------------------------------------------------------- bundled


def test_bundled_lists_toy_mt():
    assert "toy-mt" in bundled()


def test_bundled_models_fit_the_size_budget():
    from groundroll.zoo import BUNDLED_DIR

    names = bundled()
    assert {"shapes-clip", "shapes-clip-short", "shapes-coca", "shapes-captioner",
            "toy-mt"} <= set(names)
    total = sum(f.stat().st_size for f in BUNDLED_DIR.rglob("*") if f.is_file())
    # Seven toy models of 3.0-4.6 MB each (float16 weights).
    assert total <= 24 * 10**6, f"bundled models take {total / 1e6:.1f} MB; the budget is 24 MB"


@pytest.fixture(scope="module")
def captioner():
    if "shapes-captioner" not in bundled():
        pytest.fail("bundled shapes-captioner is missing; run training/shapes_captioner.py")
    return load("bundled:shapes-captioner")


def test_shapes_captioner_loads_offline_with_eager_attention(captioner, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundle = load("bundled:shapes-captioner")
    assert type(bundle.model).__name__ == "VisionEncoderDecoderModel"
    assert bundle.meta["family"] == "hf_vision_encoder_decoder"
    assert bundle.meta["kind"] == "hf_captioner" and bundle.meta["model_type"] == (
        "vision-encoder-decoder")
    assert not bundle.model.training and bundle.model.dtype == torch.float32
    for config in (bundle.model.config.encoder, bundle.model.config.decoder):
        assert config._attn_implementation == "eager"
    tok = bundle.tokenizer
    ids = tok("a red circle, a blue star and a green square")["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == (
        "a red circle, a blue star and a green square")


def test_shapes_captioner_preprocess_is_open_clips_letterbox(captioner):
    """A 128 x 160 scene through the captioner's preprocess equals shapes-clip's open_clip
    transform (long side to 96, centred on black, OpenAI mean/std)."""
    pytest.importorskip("open_clip")
    from PIL import Image

    from groundroll.data import shapes
    from groundroll.zoo.openclip import load_open_clip_dir

    clip = load_open_clip_dir(ROOT / "groundroll" / "zoo" / "bundled" / "shapes-clip")
    for size in [(128, 160), (160, 100), (64, 64)]:
        image = Image.fromarray(shapes.scene(3, size=size).image)
        ours, reference = captioner.preprocess(image), clip.preprocess(image)
        assert ours.shape == (3, 96, 96)
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


# Measured on 300 held-out scenes per background (training/eval_captioner.py --n 300):
# object precision / recall 0.978 / 0.969 on the training backgrounds, 0.922 / 0.918 on
# crops of photos no training stage cropped (shapes.EVAL_PHOTOS).
@pytest.mark.parametrize("background,offset,floor", [(None, 5000, 0.85), ("photo", 7000, 0.75)])
def test_shapes_captioner_names_the_objects_of_held_out_scenes(captioner, background, offset,
                                                               floor):
    from groundroll.data import shapes

    eval_captioner = training_script("eval_captioner")
    scenes = list(shapes.scenes(16, seed=shapes.EVAL_SEED_OFFSET + offset,
                                background=background))
    captions = eval_captioner.caption(captioner, [s.image for s in scenes])
    named = [[" ".join(o) for o in eval_captioner.objects(c)] for c in captions]
    right = sum(len(set(n) & set(s.labels)) for n, s in zip(named, scenes))
    pairs = list(zip(captions, [s.labels for s in scenes]))
    assert right >= floor * sum(len(n) for n in named), pairs
    assert right >= floor * sum(len(s.labels) for s in scenes), pairs


def test_eval_captioner_scores_each_held_out_photo_alone(captioner):
    from groundroll.data import shapes

    result = training_script("eval_captioner").by_photo(captioner, n=2)
    assert list(result) == list(shapes.EVAL_PHOTOS)
    for row in result.values():
        assert row["n"] == 2 and 0 <= row["content_word_recall_any_order"] <= 1
        assert set(row["added"]) | set(row["missed"]) <= set(shapes.COLORS) | set(
            shapes.SHAPES)


def test_shapes_captioner_conversion_reproduces_open_clips_tower():
    pytest.importorskip("open_clip")
    recipe = training_script("shapes_captioner")
    assert recipe.check_conversion(recipe.shapes_clip_encoder()) <= 1e-5


def test_eval_captioner_scores_objects_and_content_words():
    scores = training_script("eval_captioner").scores
    refs = ["a red circle and a blue star", "a green square"]
    assert scores(refs, refs) == {"object_precision": 1.0, "object_recall": 1.0,
                                  "content_word_accuracy": 1.0,
                                  "content_word_recall_any_order": 1.0, "exact_match": 1.0}
    # Swapped order: the same objects, every content word in the wrong place.
    got = scores(["a blue star and a red circle", "a green square, a red star"], refs)
    assert got["object_precision"] == pytest.approx(3 / 4)
    assert got["object_recall"] == 1.0
    assert got["content_word_accuracy"] == pytest.approx(2 / 8)
    assert got["content_word_recall_any_order"] == pytest.approx(6 / 8)
    assert got["exact_match"] == 0.0


def test_toy_mt_loads_offline_and_translates_held_out_sentences(toy_mt, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load("bundled:toy-mt").meta["model_type"] == "marian"
    assert toy_mt.name == "bundled:toy-mt"
    assert toy_mt.adapter == toy_mt.meta["family"] == "hf_marian"
    assert toy_mt.meta["kind"] == "hf_seq2seq"
    assert not toy_mt.model.training
    assert toy_mt.model.dtype == torch.float32
    test = toy.pairs(10, split="test")
    eval_toy_mt = training_script("eval_toy_mt")
    hyps = eval_toy_mt.translate(toy_mt, [p.src for p in test])
    correct = sum(h == p.tgt for h, p in zip(hyps, test))
    assert correct >= 9, list(zip(hyps, [p.tgt for p in test]))
    assert hyps[0] == test[0].tgt


def test_toy_mt_tokenizer_splits_words_and_keeps_word_ids(toy_mt):
    tok, model = toy_mt.tokenizer, toy_mt.model
    assert tok.eos_token == "</s>" and tok.pad_token == "<pad>"
    assert model.config.decoder_start_token_id == tok.pad_token_id
    pair = toy.pairs(1, split="test")[0]
    enc = tok(pair.src, text_target=pair.tgt)
    assert enc["input_ids"][-1] == tok.eos_token_id
    assert enc["labels"][-1] == tok.eos_token_id
    assert tok.decode(enc["labels"], skip_special_tokens=True) == pair.tgt
    lex_words = sorted(toy.lexicon().source_words() | toy.lexicon().target_words())
    pieces = [len(tok.tokenize(w)) for w in lex_words]
    assert max(pieces) >= 3 and sum(n > 1 for n in pieces) > len(lex_words) // 4
    batch = tok(pair.src)
    word_ids = batch.word_ids()
    assert word_ids[-1] is None
    assert max(w for w in word_ids if w is not None) == len(pair.src_words) - 1


def test_toy_mt_meta_records_recipe_and_quality(toy_mt):
    meta = toy_mt.meta
    assert meta["quality"]["test_exact_match"] >= 0.95
    assert meta["quality"]["test_pairs"] >= 500
    assert meta["recipe"].startswith("python training/toy_mt.py")
    assert meta["max_length"] >= 40


# ----------------------------------------------------------------------------- hf folders


def test_hf_local_folder_marian(tmp_path):
    config = transformers.MarianConfig(
        vocab_size=8, decoder_vocab_size=8, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=32, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0)
    transformers.MarianMTModel(config).save_pretrained(tmp_path / "marian")
    _word_tokenizer().save_pretrained(tmp_path / "marian")
    bundle = load(f"hf:{tmp_path / 'marian'}")
    assert bundle.name == f"hf:{tmp_path / 'marian'}"
    assert type(bundle.model).__name__ == "MarianMTModel"
    assert (bundle.adapter, bundle.meta["family"], bundle.meta["kind"]) == (
        "hf_marian", "hf_marian", "hf_seq2seq")
    assert not bundle.model.training and bundle.preprocess is None
    assert bundle.tokenizer("a b c")["input_ids"] == [5, 6, 7]
    from groundroll.adapters import adapter_for

    assert adapter_for(bundle.model).name == bundle.adapter


def test_hf_local_folder_bert(tmp_path):
    config = transformers.BertConfig(
        vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16)
    transformers.BertModel(config).save_pretrained(tmp_path)
    _word_tokenizer().save_pretrained(tmp_path)
    bundle = load(f"hf:{tmp_path}")
    assert type(bundle.model).__name__ == "BertModel"
    assert (bundle.adapter, bundle.meta["family"], bundle.meta["kind"]) == (
        "hf_bert", "hf_bert", "hf_encoder")
    from groundroll.adapters import adapter_for

    assert adapter_for(bundle.model).name == bundle.adapter


def test_hf_local_folder_vit_has_image_preprocess(tmp_path):
    from PIL import Image

    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32)
    transformers.ViTModel(config).save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    bundle = load(f"hf:{tmp_path}")
    assert bundle.adapter == "hf_vit" and bundle.tokenizer is None
    pixels = bundle.preprocess(Image.new("RGB", (40, 30), "red"))
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("offline_env", [True, False])
def test_hf_repo_offline_fails_fast_with_instructions(monkeypatch, offline_env):
    if offline_env:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        # No network from a test: the hub's reachability probe answers "unreachable".
        import groundroll.zoo.hf as hf

        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(hf, "_hub_reachable", lambda timeout=1.5: False)
    # Fast means no download attempt with retries: the config is read from the local
    # cache only (how long that takes is benchmarks/fail_fast.py's business).
    calls = []
    real = transformers.AutoConfig.from_pretrained.__func__

    def spy(cls, name, *args, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        return real(cls, name, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(spy))
    with pytest.raises(RuntimeError) as info:
        load("hf:groundroll-nonexistent/some-repo")
    assert calls == [True]
    message = str(info.value)
    assert "groundroll-nonexistent/some-repo" in message
    assert "hf:/path/to/folder" in message and "save_pretrained" in message


def test_missing_local_folder_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(f"hf:{tmp_path / 'absent'}")


@pytest.mark.parametrize("spec", ["toy-mt", "bundled:", "torchvision:resnet", ":x", "hf:"])
def test_unknown_specs_list_accepted_forms(spec):
    with pytest.raises(ValueError) as info:
        load(spec)
    for form in ACCEPTED_FORMS:
        assert form in str(info.value)


def test_unknown_bundled_name_lists_bundled_models():
    with pytest.raises(ValueError, match="toy-mt"):
        load("bundled:no-such-model")


@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_one_offline_switch_for_both_loaders(monkeypatch, flag):
    from huggingface_hub import constants

    from groundroll.zoo import _offline

    for name in _offline.OFFLINE_FLAGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not _offline.hub_offline()
    monkeypatch.setenv(flag, "1")
    assert _offline.hub_offline()
    monkeypatch.delenv(flag)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)   # set before the import
    assert _offline.hub_offline()


# ----------------------------------------------------------------------------- recipes


def test_recipe_runs_two_steps(tmp_path):
    recipe = training_script("toy_mt")
    meta = recipe.main([
        "--out", str(tmp_path), "--steps", "2", "--seed", "1", "--eval-n", "2",
        "--eval-every", "0", "--tokenizer-sentences", "300", "--vocab-size", "300",
        "--threads", "1"])
    assert meta["steps"] == 2
    bundle = load(f"hf:{tmp_path}")
    assert bundle.meta["steps"] == 2 and bundle.adapter == "hf_marian"
    assert bundle.tokenizer.decode(bundle.tokenizer("su tuga")["input_ids"],
                                   skip_special_tokens=True) == "su tuga"


def test_captioner_recipe_runs_two_steps_and_continues(tmp_path):
    from PIL import Image

    recipe = training_script("shapes_captioner")
    first, second = tmp_path / "first", tmp_path / "second"
    recipe.main(["--out", str(first), "--steps", "2", "--batch-size", "4", "--eval-n", "0"])
    meta = recipe.main(["--out", str(second), "--init", str(first), "--steps", "2",
                        "--batch-size", "4", "--eval-n", "1", "--photo-fraction", "0.5"])
    assert [stage["steps"] for stage in meta["stages"]] == [2, 2]
    assert [stage["photo_fraction"] for stage in meta["stages"]] == [0.0, 0.5]
    bundle = load(f"hf:{second}")
    # one scene per set: three backgrounds, held-out photos, the variant generator
    assert bundle.meta["held_out"]["all"]["n"] == 5
    assert {"photo", "variant"} <= set(bundle.meta["held_out"])
    assert bundle.meta["encoder"]["conversion_max_abs_diff"] <= 1e-5
    assert bundle.preprocess(Image.new("RGB", (50, 80))).shape == (3, 96, 96)


def test_captioner_training_photos_are_never_the_held_out_ones(monkeypatch):
    import numpy as np

    from groundroll.data import shapes

    recipe = training_script("shapes_captioner")
    seen = []
    real = shapes._photo_background
    monkeypatch.setattr(shapes, "_photo_background",
                        lambda rng, h, w, photos: seen.append(tuple(photos))
                        or real(rng, h, w, photos))
    rng = np.random.default_rng(0)
    scenes = [recipe.train_scene(rng, photo_fraction=0.5) for _ in range(40)]
    assert 8 <= len(seen) <= 32 and set(seen) == {shapes.TRAIN_PHOTOS}
    # No draw is spent on the choice at fraction 0: the earlier recipe's stream (a size,
    # then the scene) replays exactly.
    monkeypatch.setattr(shapes, "_photo_background", real)
    for seed in range(3):
        old = np.random.default_rng(seed)
        sizes, weights = zip(*recipe.TRAIN_SIZES)
        size = sizes[int(old.choice(len(sizes), p=weights))]
        want = shapes.scene(old, size=size, radius=(0.1, 0.28))
        got = recipe.train_scene(np.random.default_rng(seed))
        assert np.array_equal(got.image, want.image) and got.labels == want.labels
    assert len(scenes) == 40
    # With --extra-photos the graphics join the crops; still none of the held-out ones.
    seen.clear()
    monkeypatch.setattr(shapes, "_photo_background",
                        lambda rng, h, w, photos: seen.append(tuple(photos))
                        or real(rng, h, w, photos))
    wide = shapes.TRAIN_PHOTOS + shapes.EXTRA_TRAIN_PHOTOS
    for _ in range(10):
        recipe.train_scene(rng, photo_fraction=1.0, photos=wide, recolour=0.5)
    assert set(seen) == {wide} and not set(wide) & set(shapes.EVAL_PHOTOS)


def test_captioner_recipe_recolours_only_the_background():
    import numpy as np

    from groundroll.data import shapes

    recipe = training_script("shapes_captioner")
    drawn = shapes.scene(4, background="photo", photos=["matplotlib:grace_hopper.jpg"])
    background = drawn.label_map == 0
    out = recipe.recolour_background(np.random.default_rng(1), drawn.image, background)
    assert out.dtype == np.uint8 and out.shape == drawn.image.shape
    for m, lab in zip(drawn.masks, drawn.labels):     # objects keep their exact colours
        assert (out[m] == np.array(shapes.COLORS[lab.split(" ")[0]])).all()
    before = drawn.image[background].astype(float)
    after = out[background].astype(float)
    assert np.abs(after - before).mean() > 10         # the hue really moved
    # A turn about the grey axis keeps each pixel's grey level (up to clipping and
    # rounding) and leaves grey pixels grey.
    unclipped = ((after > 0) & (after < 255)).all(1)
    assert unclipped.sum() > 1000
    assert np.abs(after.mean(1) - before.mean(1))[unclipped].max() <= 1.0
    grey = np.full((4, 4, 3), 120, np.uint8)
    assert (recipe.recolour_background(np.random.default_rng(2), grey,
                                       np.ones((4, 4), bool)) == 120).all()
    # Recolouring and blobs are drawn only for photo scenes and only when asked for: at 0
    # the stream of the recipe without them replays.
    a = recipe.train_scene(np.random.default_rng(7), photo_fraction=0.5)
    b = recipe.train_scene(np.random.default_rng(7), photo_fraction=0.5, recolour=0.0,
                           distractors=0.0)
    assert np.array_equal(a.image, b.image)


def test_captioner_recipe_paints_large_blobs_on_the_background_only():
    import numpy as np
    from skimage import measure

    from groundroll.data import shapes

    recipe = training_script("shapes_captioner")
    for seed in range(4):
        drawn = shapes.scene(seed, background="photo", photos=["skimage:grass.png"])
        background = drawn.label_map == 0
        out = recipe.paint_distractors(np.random.default_rng(seed), drawn.image, background)
        assert np.array_equal(out[~background], drawn.image[~background])   # objects kept
        changed = (out != drawn.image).any(-1)
        assert changed.any() and not (changed & ~background).any()
        # No painted piece passes for a small shape: each covers at least 3 % of the
        # image (or is a larger blob cut by an object).
        blobs = measure.label(changed | ~background)
        sizes = [r.area for r in measure.regionprops(blobs)
                 if changed[blobs == r.label].any()]
        assert min(sizes) >= 0.03 * changed.size


def test_captioner_recipe_glossy_blobs_are_shaded_with_a_highlight():
    import numpy as np

    recipe = training_script("shapes_captioner")
    # A flat red square blob on a 40 x 40 canvas: the gloss ramps its lightness across
    # the blob and whitens a spot, and leaves the pixels outside the blob alone.
    painted = np.zeros((40, 40, 3))
    painted[...] = (200.0, 30.0, 30.0)
    blob = np.zeros((40, 40), bool)
    blob[10:30, 10:30] = True
    out = recipe._gloss(np.random.default_rng(3), painted, blob)
    inside = out[blob]
    assert inside[:, 0].max() / inside[:, 0].min() > 1.3          # lit, not flat
    whitest = inside[np.argmax(inside[:, 1])]
    assert whitest[1] > 100 and whitest[2] > 100                  # a highlight
    assert recipe._gloss(np.random.default_rng(3), painted, np.zeros_like(blob)) is painted
    # At glossy 0 the blobs of the recipe without gloss replay exactly.
    a = recipe.train_scene(np.random.default_rng(11), photo_fraction=1.0, distractors=1.0)
    b = recipe.train_scene(np.random.default_rng(11), photo_fraction=1.0, distractors=1.0,
                           glossy=0.0)
    c = recipe.train_scene(np.random.default_rng(11), photo_fraction=1.0, distractors=1.0,
                           glossy=1.0)
    assert np.array_equal(a.image, b.image) and not np.array_equal(a.image, c.image)
    assert np.array_equal(a.label_map, c.label_map)               # objects unchanged
    objects = c.label_map > 0
    assert np.array_equal(a.image[objects], c.image[objects])


def test_corpus_bleu():
    bleu = training_script("eval_toy_mt").corpus_bleu
    assert bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)
    assert bleu(["x y z w"], ["a b c d"]) == 0.0
    assert 0 < bleu(["a b c d e f"], ["a b c d e g"]) < 100

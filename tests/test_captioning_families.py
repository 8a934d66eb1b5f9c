"""Word grounding in captions on the captioner and VLM families, each built from a tiny
random config of the real transformers architecture (random weights: plumbing, not
quality).

Per family: the capture leaves the model's outputs unchanged; ``ground_caption`` runs
end to end with every method (one map per word, of the image's size, finite, not all
equal); the ``"cross"`` maps of decoder-only models equal the last layer's attention
from the word's rows to the image tokens that the model itself returns
(``output_attentions``); word log-probabilities equal the model's own. Qwen2-VL's
patches match its image processor's. Families whose words cannot be mapped to pixels
(Q-Former, resampler, windowed tower) and models that do not caption are refused with
the reason and the supported families.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import groundroll as gr  # noqa: E402
from groundroll.adapters import capture, conformance  # noqa: E402
from groundroll.captioning.api import (_caption_ids, _word_maps, _words,  # noqa: E402
                                      resolve_captioner)
from groundroll.families import family_for, family_named  # noqa: E402

WORDS = ["[BOS]", "[PAD]", "[EOS]", "[UNK]", "a", "red", "blue", "circle", "square", "and",
         "star"]
CAPTION = "a red circle and a blue square"
#: The tiny configs' bos, pad and eos ids are 0, 1 and 2 (conformance._IDS).
BOS, PAD, EOS = 0, 1, 2


@pytest.fixture(scope="module")
def tokenizer():
    from helpers.tiny_models import word_tokenizer

    return word_tokenizer(WORDS)


def _build(model_type, cls, configure=None, **edits):
    config = conformance.tiny_config(model_type)
    if configure is not None:
        configure(config)
    for path, value in edits.items():
        target = config
        *parents, name = path.split("__")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)
    torch.manual_seed(0)
    model = getattr(transformers, cls)(config).eval()
    # Generation stays inside the toy vocabulary (content words and the end token).
    model.generation_config.suppress_tokens = [
        i for i in range(config.get_text_config().vocab_size) if i not in range(4, 11)
        and i != EOS]
    return model


def _blip():
    # BLIP's vision tower initialises with std 1e-10 (all tokens alike) by default.
    return _build("blip", "BlipForConditionalGeneration", text_config__sep_token_id=EOS,
                  vision_config__initializer_range=0.02)


def _qwen2_vl():
    def rotary(config):       # 4 rotary pairs a head: 2 + 1 + 1 for (time, rows, cols)
        config.text_config.rope_parameters["mrope_section"] = [2, 1, 1]

    # A 32 x 48 input: a 2 x 3 grid of merged tokens (rows != cols).
    return _build("qwen2_vl", "Qwen2VLForConditionalGeneration", rotary,
                  vision_config__image_size=[32, 48], vision_start_token_id=61,
                  vision_end_token_id=60)


def _paligemma():
    config = conformance.tiny_config("paligemma")
    # The projector maps the tower to the language model's width.
    return _build("paligemma", "PaliGemmaForConditionalGeneration",
                  vision_config__projection_dim=config.text_config.hidden_size)


#: family -> (builder, image tokens put before the ids, patch grid)
BUILDERS = {
    "hf_blip_captioner": (_blip, None, (4, 4)),
    "hf_llava": (lambda: _build("llava", "LlavaForConditionalGeneration"), 0, (4, 4)),
    "hf_paligemma": (_paligemma, 0, (4, 4)),
    "hf_qwen2_vl": (_qwen2_vl, 0, (2, 3)),
    "hf_git": (lambda: _build("git", "GitForCausalLM"), 17, (4, 4)),
    "hf_idefics3": (lambda: _build("idefics3", "Idefics3ForConditionalGeneration"), 0,
                    (2, 2)),
    "smolvlm": (lambda: _build("smolvlm", "SmolVLMForConditionalGeneration"), 0, (2, 2)),
}
FAMILY_OF = {"smolvlm": "hf_idefics3"}
DECODER_ONLY = [k for k, (_, before, _) in BUILDERS.items() if before is not None]

_MODELS: dict = {}


def _model(key):
    if key not in _MODELS:
        _MODELS[key] = BUILDERS[key][0]()
    return _MODELS[key]


def _image(cm, seed=0):
    """An image at the model's input size (the letterbox leaves it as it is)."""
    h, w = cm.image_size
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _inputs(key, tokenizer):
    model = _model(key)
    cm = resolve_captioner(model, tokenizer=tokenizer)
    image = _image(cm)
    start = cm.hooks.start_ids(model, tokenizer)
    ids = tokenizer(CAPTION, add_special_tokens=False)["input_ids"]
    return model, cm, image, start, ids


@pytest.mark.parametrize("key", list(BUILDERS))
def test_each_captioner_has_its_family_and_capture_leaves_outputs_unchanged(key, tokenizer):
    model, cm, image, start, ids = _inputs(key, tokenizer)
    assert family_for(model).name == FAMILY_OF.get(key, key)
    assert cm.hooks.decoder_only == (key in DECODER_ONLY)
    pixels = cm.pixels(image)
    full = torch.tensor([start + ids])
    extra = {"prompt": len(start)} if cm.hooks.decoder_only else {}
    with torch.no_grad():
        plain = cm.hooks.forward(model, pixels, full, **extra)
        with capture(model, streams=list(cm.hooks.streams)) as trace:
            captured = cm.hooks.forward(model, pixels, full, **extra)
    assert plain.shape[:2] == full.shape
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-4)
    assert set(cm.hooks.streams) <= set(trace.streams)


def _direct_logits(key, model, cm, image, full, prompt):
    """The model's own logits of the text rows, called as transformers documents it."""
    pixels = cm.pixels(image)
    ones = torch.ones_like(full)
    if key == "hf_qwen2_vl":
        processor = transformers.Qwen2VLImageProcessor(
            patch_size=8, merge_size=2, temporal_patch_size=2, do_resize=False)
        images = processor(images=image, return_tensors="pt")
        mm = (full == model.config.image_token_id).int()
        return model(input_ids=full, attention_mask=ones, mm_token_type_ids=mm,
                     **images).logits
    if key == "hf_paligemma":
        kinds = torch.ones_like(full)
        kinds[:, :prompt] = 0
        return model(input_ids=full, pixel_values=pixels, token_type_ids=kinds).logits
    if key in ("hf_idefics3", "smolvlm"):
        return model(input_ids=full, pixel_values=pixels[:, None]).logits
    logits = model(input_ids=full, pixel_values=pixels).logits
    return logits[:, BUILDERS[key][1] or 0:] if key == "hf_git" else logits


@pytest.mark.parametrize("key", list(BUILDERS))
def test_word_logprobs_are_the_models_own(key, tokenizer):
    model, cm, image, start, ids = _inputs(key, tokenizer)
    full = torch.tensor([start + ids])
    with torch.no_grad():
        logits = _direct_logits(key, model, cm, image, full, len(start))
    logp = logits[0].float().log_softmax(-1)
    token = np.array([float(logp[len(start) + k - 1, t]) for k, t in enumerate(ids)])
    result = gr.ground_caption(image, CAPTION, model=model, tokenizer=tokenizer,
                               method="cross")
    caption_ids, word_ids = _caption_ids(cm, CAPTION)
    assert caption_ids == ids
    words, groups = _words(cm, ids, CAPTION, word_ids)
    expected = np.array([token[g].sum() for g in groups], np.float32)
    np.testing.assert_allclose(result.logprobs, expected, atol=1e-4)


def test_qwen2_vl_patches_are_its_image_processors(tokenizer):
    from groundroll.families import hf_qwen2_vl

    model, cm, image, _, _ = _inputs("hf_qwen2_vl", tokenizer)
    processor = transformers.Qwen2VLImageProcessor(
        patch_size=8, merge_size=2, temporal_patch_size=2, do_resize=False)
    reference = processor(images=image, return_tensors="pt")
    mean, std = processor.image_mean, processor.image_std
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(hf_qwen2_vl.flat_patches(model, x),
                               reference["pixel_values"], atol=1e-5, rtol=1e-5)
    assert reference["image_grid_thw"].tolist() == [[1, 4, 6]]
    assert cm.hooks.grid(model, 6) == (0, (2, 3))        # 4 x 6 patches merged 2 x 2


@pytest.mark.parametrize("key", DECODER_ONLY)
def test_cross_maps_are_the_last_layers_attention_to_the_image_tokens(key, tokenizer):
    """An independent reading: transformers' own attention of the last language-model
    layer (``output_attentions``), heads averaged, at the rows predicting each word and
    the image placeholder positions (GIT: the image tokens before the text)."""
    model, cm, image, start, ids = _inputs(key, tokenizer)
    full = torch.tensor([start + ids])
    words, groups = _words(cm, ids, CAPTION, _caption_ids(cm, CAPTION)[1])
    pixels = cm.pixels(image)
    maps, _ = _word_maps(cm, pixels, ids, start, groups, "cross")
    before, (rows, cols) = BUILDERS[key][1:]
    was = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            inputs = _model_inputs(key, model, cm, pixels, full, len(start))
            attention = model(**inputs, output_attentions=True).attentions[-1]
    finally:
        model.set_attn_implementation(was)
    attention = attention[0].float().mean(0)                     # [T, T]
    if key == "hf_git":
        image_cols = torch.arange(1, before)                      # class token left out
    else:
        image_cols = (full[0] == model.config.image_token_id).nonzero().flatten()
    assert len(image_cols) == rows * cols
    for w, group in enumerate(groups):
        rows_ = [before + len(start) + p - 1 for p in group]
        expected = attention[rows_][:, image_cols].mean(0).reshape(rows, cols).numpy()
        # up to the row's scale (fused rows are renormalised with the residual)
        got = maps[w] / maps[w].sum()
        np.testing.assert_allclose(got, expected / expected.sum(), atol=1e-4)


def _model_inputs(key, model, cm, pixels, full, prompt):
    from groundroll.families import _vlm, hf_idefics3, hf_paligemma, hf_qwen2_vl

    build = {"hf_paligemma": hf_paligemma._inputs, "hf_qwen2_vl": hf_qwen2_vl._inputs,
             "hf_idefics3": hf_idefics3._inputs, "smolvlm": hf_idefics3._inputs}
    return build.get(key, _vlm.plain_inputs)(model, pixels, full, prompt)


@pytest.mark.parametrize("method", ["cross", "rollout", "relevance", "legrad"])
@pytest.mark.parametrize("key", list(BUILDERS))
def test_ground_caption_runs_every_method(key, method, tokenizer):
    model = _model(key)
    image = np.random.default_rng(1).integers(0, 256, (30, 44, 3), dtype=np.uint8)
    result = gr.ground_caption(image, CAPTION, model=model, tokenizer=tokenizer,
                               method=method)
    assert result.words == CAPTION.split()
    assert result.settings["family"] == FAMILY_OF.get(key, key)
    assert result.heatmaps.shape == (7, 30, 44) and result.masks.shape == (7, 30, 44)
    assert np.isfinite(result.heatmaps).all() and np.isfinite(result.logprobs).all()
    content = result.heatmaps[result.content]
    spread = max(np.abs(a - b).max() for a in content for b in content)
    assert spread > 1e-3, "every word has the same map"


@pytest.mark.filterwarnings("ignore:the generated caption reached max_new_tokens")
@pytest.mark.parametrize("key", ["hf_blip_captioner", "hf_llava", "hf_git"])
def test_generated_captions_are_grounded(key, tokenizer):
    model = _model(key)
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    result = gr.ground_caption(image, model=model, tokenizer=tokenizer, max_new_tokens=4,
                               method="legrad")
    assert result.generated
    assert result.caption and set(result.caption.split()) <= set(WORDS[4:])
    # greedy: the words of the family's generate from the same start, cut at the end
    cm = resolve_captioner(model, tokenizer=tokenizer)
    start = cm.hooks.start_ids(model, tokenizer)
    new = cm.hooks.generate(model, cm.pixels(image), start, 4)[0, len(start):].tolist()
    ended = EOS in new
    assert result.settings["token_ids"] == (new[:new.index(EOS)] if ended else new)
    assert result.truncated == (not ended)


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("model_type, cls, family, reason", [
    ("blip-2", "Blip2ForConditionalGeneration", "hf_blip_2", "Q-Former"),
    ("instructblip", "InstructBlipForConditionalGeneration", "hf_blip_2", "Q-Former"),
    ("kosmos-2", "Kosmos2ForConditionalGeneration", "hf_kosmos_2", "resampler"),
    ("florence2", "Florence2ForConditionalGeneration", "hf_florence2", "local windows"),
])
def test_captioners_that_cannot_map_words_to_pixels_are_refused_with_the_reason(
        model_type, cls, family, reason, tokenizer):
    model = getattr(transformers, cls)(conformance.tiny_config(model_type)).eval()
    assert family_for(model).name == family
    with pytest.raises(TypeError, match=reason) as refused:
        gr.ground_caption(np.zeros((32, 32, 3), np.uint8), CAPTION, model=model,
                          tokenizer=tokenizer)
    assert "hf_llava" in str(refused.value) and family not in str(
        refused.value).rpartition("families that are")[2]


@pytest.mark.parametrize("model_type, cls", [("bert", "BertModel"), ("clip", "CLIPModel")])
def test_a_model_that_does_not_caption_is_refused_naming_the_captioners(model_type, cls,
                                                                      tokenizer):
    model = getattr(transformers, cls)(conformance.tiny_config(model_type)).eval()
    with pytest.raises(TypeError, match="not an image captioner") as refused:
        gr.ground_caption(np.zeros((32, 32, 3), np.uint8), CAPTION, model=model,
                          tokenizer=tokenizer)
    supported = str(refused.value).rpartition("families that are: ")[2].split(", ")
    assert {"hf_vision_encoder_decoder", "hf_blip_captioner", "hf_llava", "hf_paligemma",
            "hf_qwen2_vl", "hf_git", "hf_idefics3"} <= set(supported)
    assert all(family_named(name).captions for name in supported)

"""Word grounding in captions on the captioner and VLM families, each built from a tiny
random config of the real transformers architecture (random weights: plumbing, not
quality).

Per family: the capture leaves the model's outputs unchanged; ``ground_caption`` runs
end to end with every method (one map per word, of the image's size, finite, not all
equal); the ``"cross"`` maps of decoder-only models equal the last layer's attention
from the word's rows to the image tokens that the model itself returns
(``output_attentions``); word log-probabilities equal the model's own. Qwen2-VL's
patches match its image processor's. BLIP-2 and InstructBLIP: the capture holds the
model's own attention stream by stream (tower, Q-Former self- and cross-attention,
language model), and the rollout maps equal the product computed here from that
attention. Families whose words cannot be mapped to pixels (resampler, windowed tower,
BLIP-2 with Flan-T5) and models that do not caption are refused with the reason and
the supported families.
"""

from __future__ import annotations

import re

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
    model = _build("blip", "BlipForConditionalGeneration", text_config__sep_token_id=EOS,
                   vision_config__initializer_range=0.02)
    # Its generate is the text decoder's, with the decoder's own generation config.
    model.text_decoder.generation_config.suppress_tokens = \
        model.generation_config.suppress_tokens
    return model


def _qwen2_vl(model_type="qwen2_vl", cls="Qwen2VLForConditionalGeneration", size=(32, 48)):
    def rotary(config):       # 4 rotary pairs a head: 2 + 1 + 1 for (time, rows, cols)
        config.text_config.rope_parameters["mrope_section"] = [2, 1, 1]

    # A 32 x 48 input: a 2 x 3 grid of merged tokens (rows != cols). (GLM-4V's tower
    # interpolates its position table for a square size only.)
    marks = ({"image_start_token_id": 61, "image_end_token_id": 60} if "glm" in model_type
             else {"vision_start_token_id": 61, "vision_end_token_id": 60})
    size = list(size) if isinstance(size, tuple) else size
    return _build(model_type, cls, rotary, vision_config__image_size=size, **marks)


def _paligemma():
    config = conformance.tiny_config("paligemma")
    # The projector maps the tower to the language model's width.
    return _build("paligemma", "PaliGemmaForConditionalGeneration",
                  vision_config__projection_dim=config.text_config.hidden_size)


def _gemma3(model_type="gemma3"):
    """Gemma 3 with its 4 x 4 patches pooled to 2 x 2 image tokens; the projection is
    random (zeros by default: every image token would be the same)."""
    model = _build(model_type, "Gemma3ForConditionalGeneration")
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(
            generator=torch.Generator().manual_seed(0))
    return model


def _q_former(model_type, cls):
    """A Q-Former of 3 blocks with cross-attention in blocks 0 and 2 (every second), 4
    random queries (zeros by default: every query would read the same)."""
    model = _build(model_type, cls, num_query_tokens=4,
                   qformer_config__num_hidden_layers=3,
                   qformer_config__cross_attention_frequency=2,
                   vision_config__initializer_range=0.02)
    with torch.no_grad():
        model.query_tokens.normal_(generator=torch.Generator().manual_seed(0))
    model.language_model.generation_config.suppress_tokens = \
        model.generation_config.suppress_tokens
    return model


def _llava_next(model_type="llava_next", cls="LlavaNextForConditionalGeneration"):
    # One 32 x 64 pinpoint (the model input: two 32 x 32 tiles side by side) and a
    # square one; the tiles' grid is 4 x 8 patches.
    return _build(model_type, cls,
                  image_grid_pinpoints=[[32, 64], [32, 32]],
                  text_config__max_position_embeddings=128)


def _llava_onevision():
    # LLaVA-NeXT's tiling with a SigLIP tower read whole ("full": no class token).
    return _build("llava_onevision", "LlavaOnevisionForConditionalGeneration",
                  image_grid_pinpoints=[[32, 64], [32, 32]],
                  text_config__max_position_embeddings=128)


def _llava_pixtral():
    """LLaVA over a Pixtral tower (Pixtral 12B's layout): 32 px, 8 px patches."""
    def pixtral(config):
        config.vision_config = transformers.PixtralVisionConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, image_size=32, patch_size=8, head_dim=8)

    return _build("llava", "LlavaForConditionalGeneration", pixtral,
                  vision_feature_layer=-1, vision_feature_select_strategy="full")


def _llava_siglip():
    """LLaVA over a SigLIP tower (no class token) whose every patch is read ("full")."""
    def siglip(config):
        config.vision_config = conformance.tiny_config("llava_onevision").vision_config

    return _build("llava", "LlavaForConditionalGeneration", siglip,
                  vision_feature_select_strategy="full")


#: family -> (builder, image tokens put before the ids, patch grid)
BUILDERS = {
    "hf_blip_captioner": (_blip, None, (4, 4)),
    "hf_llava": (lambda: _build("llava", "LlavaForConditionalGeneration"), 0, (4, 4)),
    "vipllava": (lambda: _build("vipllava", "VipLlavaForConditionalGeneration"), 0, (4, 4)),
    "deepseek_vl": (lambda: _build("deepseek_vl", "DeepseekVLForConditionalGeneration"), 0,
                    (4, 4)),
    "hf_paligemma": (_paligemma, 0, (4, 4)),
    "hf_qwen2_vl": (_qwen2_vl, 0, (2, 3)),
    "qwen3_vl": (lambda: _qwen2_vl("qwen3_vl", "Qwen3VLForConditionalGeneration"), 0,
                 (2, 3)),
    "glm4v": (lambda: _qwen2_vl("glm4v", "Glm4vForConditionalGeneration", 32), 0, (2, 2)),
    # the thinkers (text out) of Qwen2.5-Omni and Qwen3-Omni: Qwen2.5-VL's image path
    "qwen2_5_omni": (lambda: _qwen2_vl("qwen2_5_omni_thinker",
                                       "Qwen2_5OmniThinkerForConditionalGeneration"), 0,
                     (2, 3)),
    "qwen3_omni": (lambda: _qwen2_vl("qwen3_omni_moe_thinker",
                                     "Qwen3OmniMoeThinkerForConditionalGeneration"), 0,
                   (2, 3)),
    "hf_gemma3": (_gemma3, 0, (2, 2)),
    "shieldgemma2": (lambda: _gemma3("shieldgemma2"), 0, (2, 2)),
    "hf_mistral3": (lambda: _build("mistral3", "Mistral3ForConditionalGeneration"), 0,
                    (2, 2)),
    # pixel shuffles: 4 x 4 patches merged 2 x 2
    "hf_aya_vision": (lambda: _build("aya_vision", "AyaVisionForConditionalGeneration"), 0,
                      (2, 2)),
    "hf_internvl": (lambda: _build("internvl", "InternVLForConditionalGeneration",
                                   vision_config__image_size=[56, 56]), 0, (2, 2)),
    "hf_cohere2_vision": (lambda: _build("cohere2_vision",
                                         "Cohere2VisionForConditionalGeneration"), 0, (2, 2)),
    "hf_git": (lambda: _build("git", "GitForCausalLM"), 17, (4, 4)),
    "hf_idefics3": (lambda: _build("idefics3", "Idefics3ForConditionalGeneration"), 0,
                    (2, 2)),
    "smolvlm": (lambda: _build("smolvlm", "SmolVLMForConditionalGeneration"), 0, (2, 2)),
    "hf_blip_2": (lambda: _q_former("blip-2", "Blip2ForConditionalGeneration"), 0,
                  (4, 4)),
    "instructblip": (lambda: _q_former("instructblip",
                                       "InstructBlipForConditionalGeneration"), 0, (4, 4)),
    "hf_llava_next": (_llava_next, 0, (4, 8)),
    "llava_onevision": (_llava_onevision, 0, (4, 8)),
    "llava_next_video": (lambda: _llava_next("llava_next_video",
                                             "LlavaNextVideoForConditionalGeneration"), 0,
                         (4, 8)),
    "llava_siglip": (_llava_siglip, 0, (4, 4)),
    "llava_pixtral": (_llava_pixtral, 0, (4, 4)),
    "hf_fuyu": (lambda: _build("fuyu", "FuyuForCausalLM"), 0, (4, 4)),
    # 4 x 4 patches merged 2 x 2 by the pixel shuffle
    "hf_llama4": (lambda: _build("llama4", "Llama4ForConditionalGeneration"), 0, (2, 2)),
    # a 128-pixel tower: 16 x 16 patches, shrunk twice by the projector to 4 x 4 tokens
    # laid back on the patches
    "hf_got_ocr2": (lambda: _build("got_ocr2", "GotOcr2ForConditionalGeneration",
                                   vision_config__image_size=128,
                                   vision_config__initializer_range=0.02), 0, (16, 16)),
}
FAMILY_OF = {"smolvlm": "hf_idefics3", "instructblip": "hf_blip_2", "vipllava": "hf_llava",
             "deepseek_vl": "hf_llava", "llava_siglip": "hf_llava", "llava_pixtral": "hf_llava",
             "llava_onevision": "hf_llava_next", "llava_next_video": "hf_llava_next",
             "qwen3_vl": "hf_qwen2_vl", "glm4v": "hf_qwen2_vl", "shieldgemma2": "hf_gemma3",
             "qwen2_5_omni": "hf_qwen2_vl", "qwen3_omni": "hf_qwen2_vl"}
DECODER_ONLY = [k for k, (_, before, _) in BUILDERS.items() if before is not None]
#: decoder-only models whose image-token columns are a Q-Former's learned queries
Q_FORMER = ["hf_blip_2", "instructblip"]
#: decoder-only models whose image tokens are several grids (a base image and tiles)
TILED = ["hf_llava_next", "llava_onevision", "llava_next_video"]
#: the other families read with Qwen2-VL's inputs
QWEN_LIKE = ["qwen3_vl", "glm4v", "qwen2_5_omni", "qwen3_omni"]
#: decoder-only models whose image tokens are laid on the patch grid by a layout
#: (tiles; GOT-OCR 2.0's tokens reading overlapping blocks of patches)
LAID_OUT = [*TILED, "hf_got_ocr2"]

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


def _caption_case(model, tokenizer):
    """``(captioner, image, start ids, caption ids, word groups, pixels, start + caption
    as [1, T])`` of CAPTION on an image at the model's input size."""
    cm = resolve_captioner(model, tokenizer=tokenizer)
    image = _image(cm)
    start = cm.hooks.start_ids(model, tokenizer)
    ids = tokenizer(CAPTION, add_special_tokens=False)["input_ids"]
    _, groups = _words(cm, ids, CAPTION, _caption_ids(cm, CAPTION)[1])
    return cm, image, start, ids, groups, cm.pixels(image), torch.tensor([start + ids])


def _assert_word_rows(maps, scores, start, groups, keys: slice, grid):
    """Each word's map is, up to scale, the mean of ``scores [T, K]`` at the rows that
    predict its tokens, over the ``keys`` columns laid on ``grid``."""
    assert maps.shape[1:] == grid
    for w, group in enumerate(groups):
        expected = scores[[len(start) + p - 1 for p in group]][:, keys].mean(0)
        expected = expected.reshape(grid).numpy()
        np.testing.assert_allclose(maps[w] / maps[w].sum(), expected / expected.sum(),
                                   atol=1e-5)


def _every_method_gives_finite_maps(image, model, tokenizer, *, distinct=False):
    """``relevance``, ``legrad`` and ``rollout``: one finite map per word at the image's
    size (and, with ``distinct``, not the same map for every content word)."""
    for method in ("relevance", "legrad", "rollout"):
        result = gr.ground_caption(image, CAPTION, model=model, tokenizer=tokenizer,
                                   method=method)
        assert result.heatmaps.shape == (7, *image.shape[:2])
        assert np.isfinite(result.heatmaps).all()
        if distinct:
            content = result.heatmaps[result.content]
            assert max(np.abs(a - b).max() for a in content for b in content) > 1e-3


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
    if key == "hf_fuyu":                      # patches cut by Fuyu's image processor
        patches = transformers.FuyuImageProcessor(
            patch_size={"height": 8, "width": 8}).patchify_image(pixels)
        return model(input_ids=full, pixel_values=patches).logits
    if key == "hf_paligemma":
        kinds = torch.ones_like(full)
        kinds[:, :prompt] = 0
        return model(input_ids=full, pixel_values=pixels, token_type_ids=kinds).logits
    if key in ("hf_idefics3", "smolvlm"):
        return model(input_ids=full, pixel_values=pixels[:, None]).logits
    if key in ("hf_gemma3", "shieldgemma2"):  # the processor marks the image tokens
        kinds = (full == model.config.image_token_id).long()
        return model(input_ids=full, pixel_values=pixels, token_type_ids=kinds).logits
    if key in TILED:
        from groundroll.families import hf_llava_next

        return model(input_ids=full, pixel_values=hf_llava_next.tiles(model, pixels),
                     image_sizes=torch.tensor([list(cm.image_size)])).logits
    if key == "instructblip":
        no_instruction = torch.zeros((1, 0), dtype=torch.long)
        return model(input_ids=full, pixel_values=pixels,
                     qformer_input_ids=no_instruction).logits
    if key in ("hf_mistral3", "llava_pixtral"):
        return model(input_ids=full, pixel_values=pixels,
                     image_sizes=torch.tensor([list(pixels.shape[-2:])])).logits
    if key in QWEN_LIKE:                      # laid out as Qwen2-VL's processor does
        return model(**_model_inputs(key, model, cm, pixels, full, prompt)).logits
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


@pytest.mark.parametrize("key", [k for k in DECODER_ONLY if k not in Q_FORMER + LAID_OUT])
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


@pytest.mark.parametrize("key", [k for k in DECODER_ONLY
                                 if k not in Q_FORMER + LAID_OUT + ["hf_git"]])
def test_each_image_token_comes_from_the_pixels_its_grid_cell_covers(key, tokenizer):
    """Where the grid puts each image token, checked against the model itself: with the
    vision tower's attention silenced (each patch then feeds only the tokens built from
    it), noise in one grid cell of the input changes exactly the language model's input
    at that cell's image token. A transposed or mis-pooled grid fails."""
    model, cm, image, start, ids = _inputs(key, tokenizer)
    full = torch.tensor([start + ids])
    pixels = cm.pixels(image)
    prefix, (rows, cols) = cm.hooks.grid(model, int(cm.hooks.columns(model, full).numel()))
    columns = cm.hooks.columns(model, full)[prefix:]
    seen = []

    def silence(module, args, output):
        if isinstance(output, tuple):
            return (torch.zeros_like(output[0]), *output[1:])
        return torch.zeros_like(output)

    def embeds(module, args, kwargs):
        seen.append(kwargs["inputs_embeds"][0, columns].detach().clone())

    handles = [m.register_forward_hook(silence) for n, m in model.named_modules()
               if re.search(r"vision|visual", n) and type(m).__name__.endswith("Attention")]
    handles.append(model.get_decoder().register_forward_pre_hook(embeds, with_kwargs=True))
    extra = {"prompt": len(start)}
    h, w = pixels.shape[-2:]
    try:
        with torch.no_grad():
            cm.hooks.forward(model, pixels, full, **extra)
            for r in range(rows):
                for c in range(cols):
                    noisy = pixels.clone()
                    cell = (slice(r * h // rows, (r + 1) * h // rows),
                            slice(c * w // cols, (c + 1) * w // cols))
                    noisy[0, :, cell[0], cell[1]] += torch.randn_like(
                        noisy[0, :, cell[0], cell[1]])
                    cm.hooks.forward(model, noisy, full, **extra)
                    changed = (seen[-1] - seen[0]).abs().amax(-1) > 1e-5
                    assert changed.nonzero().flatten().tolist() == [r * cols + c], (r, c)
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("key, side", [("hf_mistral3", 2), ("llava_pixtral", 4)])
def test_mistral3_rows_of_image_tokens_end_in_break_tokens(key, side):
    """Mistral 3 (2 x 2 merged tokens) and LLaVA over a Pixtral tower (4 x 4, no merger):
    each row of image tokens ends in ``[IMG_BREAK]``, the last in ``[IMG_END]``."""
    from helpers.tiny_models import word_tokenizer

    tok = word_tokenizer(WORDS + ["[IMG_BREAK]", "[IMG_END]"])
    model = _model(key)
    cm = resolve_captioner(model, tokenizer=tok)
    image_id, brk, end = model.config.image_token_id, 11, 12
    start = cm.hooks.start_ids(model, tok)
    layout = ([image_id] * side + [brk]) * (side - 1) + [image_id] * side + [end]
    assert any(start[i:i + len(layout)] == layout for i in range(len(start)))
    image = _image(cm)
    with torch.no_grad():
        columns = cm.hooks.columns(model, torch.tensor([start]))
    assert len(columns) == side * side and brk not in [start[c] for c in columns]
    result = gr.ground_caption(image, CAPTION, model=model, tokenizer=tok, method="cross")
    assert result.heatmaps.shape == (7, *image.shape[:2])


def _model_inputs(key, model, cm, pixels, full, prompt):
    from groundroll.families import (_vlm, hf_fuyu, hf_gemma3, hf_idefics3, hf_llava_next,
                                     hf_mistral3, hf_paligemma, hf_qwen2_vl)

    build = {"hf_paligemma": hf_paligemma._inputs, "hf_qwen2_vl": hf_qwen2_vl._inputs,
             **dict.fromkeys(QWEN_LIKE, hf_qwen2_vl._inputs),
             "hf_gemma3": hf_gemma3._inputs, "shieldgemma2": hf_gemma3._inputs,
             "hf_mistral3": hf_mistral3._inputs, "llava_pixtral": hf_mistral3._inputs,
             "hf_idefics3": hf_idefics3._inputs, "smolvlm": hf_idefics3._inputs,
             "hf_fuyu": hf_fuyu._inputs, **dict.fromkeys(TILED, hf_llava_next._inputs)}
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


@pytest.mark.filterwarnings("ignore:the generated caption reached the token limit")
@pytest.mark.parametrize("key", ["hf_blip_captioner", "hf_llava", "hf_git", "hf_blip_2",
                                 "hf_llava_next"])
def test_generated_captions_are_grounded(key, tokenizer):
    model = _model(key)
    cm = resolve_captioner(model, tokenizer=tokenizer)
    image = _image(cm, seed=2)               # at the input size: no letterbox
    result = gr.ground_caption(image, model=model, tokenizer=tokenizer, max_new_tokens=4,
                               method="legrad")
    assert result.generated
    assert result.caption and set(result.caption.split()) <= set(WORDS[4:])
    # greedy: the words of the family's generate from the same start, cut at the end
    start = cm.hooks.start_ids(model, tokenizer)
    new = cm.hooks.generate(model, cm.pixels(image), start, 4)[0, len(start):].tolist()
    ended = EOS in new
    assert result.settings["token_ids"] == (new[:new.index(EOS)] if ended else new)
    assert result.truncated == (not ended)


# --------------------------------------------------------------------------- Q-Former

def _q_former_attentions(key, model, cm, image, full):
    """The attention transformers itself returns (``output_attentions``), calling the
    vision tower, the Q-Former and the language model one after the other as the model
    does: ``(vision, Q-Former self, Q-Former cross, language model)`` lists."""
    pixels = cm.pixels(image)
    queries = model.config.num_query_tokens
    was = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            vision = model.vision_model(pixel_values=pixels, output_attentions=True)
            extra = {}
            if key == "instructblip":
                extra = dict(input_ids=torch.zeros((1, 0), dtype=torch.long),
                             attention_mask=torch.ones(1, queries, dtype=torch.long))
            q_former = model.qformer(query_embeds=model.query_tokens,
                                     encoder_hidden_states=vision.last_hidden_state,
                                     output_attentions=True, **extra)
            embeds = model.get_input_embeddings()(full).clone()
            embeds[0, :queries] = model.language_projection(
                q_former.last_hidden_state[0, :queries])
            lm = model.language_model(inputs_embeds=embeds, output_attentions=True)
    finally:
        model.set_attn_implementation(was)
    # transformers' "attentions" record holds the cross-attention too (".attention" is
    # in both module names): the queries' own attention is the square one.
    own = [a for a in q_former.attentions if a.shape[-1] == queries]
    return vision.attentions, own, q_former.cross_attentions, lm.attentions


@pytest.mark.parametrize("key", Q_FORMER)
def test_q_former_capture_is_the_models_own_attention_stream_by_stream(key, tokenizer):
    model, cm, image, start, ids = _inputs(key, tokenizer)
    full = torch.tensor([start + ids])
    with torch.no_grad(), capture(model, values=True) as trace:
        cm.hooks.forward(model, cm.pixels(image), full, prompt=len(start))
    vision, own, cross, lm = _q_former_attentions(key, model, cm, image, full)
    assert all(layer.value_norms is not None for layer in trace)     # value sites found
    assert (len(vision), len(own), len(cross), len(lm)) == (2, 3, 2, 2)
    for stream, expected in (("vision", vision), ("qformer", own),
                             ("qformer_cross", cross), ("decoder", lm)):
        got = trace.weights(stream)
        assert len(got) == len(expected), stream
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    layers = trace.stream("qformer_cross")
    assert [(l.kind, l.query_stream, l.key_stream) for l in layers] == [
        ("cross", "qformer", "vision")] * 2
    # the second cross-attention layer sits in block 2: the chain pairs it there
    blocks = cm.hooks.queries.layers(trace).stream("qformer_cross")
    assert [l.index for l in blocks] == [0, 2]


def _fused(a, residual=0.5):
    """Heads averaged, ``rownorm((1 - r) A + r I)`` (a square layer) or ``rownorm(A)``."""
    a = a[0].float().mean(0)
    if a.shape[0] == a.shape[1]:
        a = (1 - residual) * a + residual * torch.eye(a.shape[0])
    return a / a.sum(-1, keepdim=True)


@pytest.mark.parametrize("key", Q_FORMER)
def test_q_former_rollout_is_the_explicit_product_of_the_returned_attention(key,
                                                                           tokenizer):
    """Language-model rollout at the query columns, times the queries' rollout over the
    Q-Former's blocks (self-attention, then cross-attention where the block has one,
    onto the tower's rollout), computed here from ``output_attentions``."""
    model, cm, image, start, ids = _inputs(key, tokenizer)
    full = torch.tensor([start + ids])
    vision, own, cross, lm = _q_former_attentions(key, model, cm, image, full)
    r_vision = torch.eye(vision[0].shape[-1])
    for a in vision:
        r_vision = _fused(a) @ r_vision
    n = model.config.num_query_tokens
    r_tt, r_ts = torch.eye(n), torch.zeros(n, r_vision.shape[0])
    crosses = iter(cross)
    for block, a in enumerate(own):
        r_tt, r_ts = _fused(a) @ r_tt, _fused(a) @ r_ts
        if block % model.config.qformer_config.cross_attention_frequency == 0:
            r_ts = 0.5 * r_ts + 0.5 * _fused(next(crosses)) @ r_vision
            r_tt = 0.5 * r_tt
    r_lm = torch.eye(full.shape[1])
    for a in lm:
        r_lm = _fused(a) @ r_lm
    words, groups = _words(cm, ids, CAPTION, _caption_ids(cm, CAPTION)[1])
    maps, _ = _word_maps(cm, cm.pixels(image), ids, start, groups, "rollout")
    assert maps.shape == (len(words), 4, 4)
    for w, group in enumerate(groups):
        rows = r_lm[[len(start) + p - 1 for p in group]].mean(0)
        expected = rows[:n] @ r_ts                         # the queries: first n columns
        np.testing.assert_allclose(maps[w], expected[1:].reshape(4, 4).numpy(),
                                   rtol=1e-4, atol=1e-7)


def test_blip_2_with_flan_t5_is_captured_but_its_captions_refused(tokenizer):
    model = _build("blip-2", "Blip2ForConditionalGeneration",
                   use_decoder_only_language_model=False,
                   text_config=transformers.T5Config(
                       vocab_size=64, d_model=32, d_kv=8, d_ff=37, num_layers=2,
                       num_heads=4, decoder_start_token_id=0, pad_token_id=1,
                       eos_token_id=2))
    pixels = torch.randn(1, 3, 32, 32)
    ids = torch.tensor([[model.config.image_token_index] * 32 + [4, 5]])
    with torch.no_grad(), capture(model) as trace:
        model(pixel_values=pixels, input_ids=ids, decoder_input_ids=torch.tensor([[0, 4]]))
    assert {"vision", "qformer", "qformer_cross", "encoder", "decoder", "cross"} <= set(
        trace.streams)
    assert trace.stream("cross")[0].key_stream == "encoder"
    with pytest.raises(TypeError, match="Flan-T5"):
        gr.ground_caption(np.zeros((32, 32, 3), np.uint8), CAPTION, model=model,
                          tokenizer=tokenizer)


# --------------------------------------------------------------------------- LLaVA-NeXT

def _packed_order(model, image_size):
    """``[N, 3]`` ``(kind, row, col)`` of each image token, read from the model's own
    ``pack_image_features``: features that carry their own position (0 and the tower's
    grid cell for the base image; 1 and the cell on the tiles' grid over the pinpoint),
    packed, unpadded and newline-separated (newlines: ``(2, -1, -1)``) by the model."""
    from transformers.image_processing_utils import select_best_resolution

    side = model.config.vision_config.image_size
    per = side // model.config.vision_config.patch_size
    height, width = select_best_resolution(image_size, model.config.image_grid_pinpoints)
    across = width // side
    features = [torch.tensor([0, r, c]) for r in range(per) for c in range(per)]
    for t in range(height // side * across):
        down, right = divmod(t, across)
        features += [torch.tensor([1, down * per + r, right * per + c])
                     for r in range(per) for c in range(per)]
    features = torch.stack(features).float().reshape(-1, per * per, 3)
    sizes, newline = torch.tensor([list(image_size)]), torch.tensor([2.0, -1.0, -1.0])
    if model.config.model_type == "llava_onevision":
        packed, _ = model.model.pack_image_features(
            [features], sizes, image_newline=newline,
            vision_aspect_ratio=model.config.vision_aspect_ratio)
    else:
        packed, _ = model.model.pack_image_features([features], sizes, "default",
                                                    image_newline=newline)
    return packed[0].long()


@pytest.mark.parametrize("key", TILED)
@pytest.mark.parametrize("image_size", [(32, 64), (30, 44), (20, 64), (32, 32)])
def test_llava_next_token_positions_are_the_models_own_packing(key, image_size):
    """Base image first, then the tiles' rows (unpadded: 30 x 44 keeps 6 of 8 columns,
    20 x 64 3 of 4 rows), each ended by a newline."""
    from groundroll.families import hf_llava_next

    model = _model(key)
    expected = _packed_order(model, image_size)
    torch.testing.assert_close(hf_llava_next.token_positions(model, image_size), expected)


@pytest.mark.parametrize("key", TILED)
def test_llava_next_cross_maps_are_the_last_layers_attention_on_both_grids(key, tokenizer):
    """The model's own last-layer attention (``output_attentions``) at the rows that
    predict each word and the image placeholder columns, placed by the model's packing
    order: per cell of the 4 x 8 tiles' grid, the tile token's weight plus the covering
    base token's (one of 4 x 4 over the whole input) divided by the 1 x 2 cells it
    covers."""
    model, cm, image, start, ids = _inputs(key, tokenizer)
    assert cm.image_size == (32, 64)
    full = torch.tensor([start + ids])
    words, groups = _words(cm, ids, CAPTION, _caption_ids(cm, CAPTION)[1])
    pixels = cm.pixels(image)
    maps, _ = _word_maps(cm, pixels, ids, start, groups, "cross")
    assert maps.shape == (len(words), 4, 8)
    was = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            inputs = _model_inputs(key, model, cm, pixels, full, len(start))
            attention = model(**inputs, output_attentions=True).attentions[-1]
    finally:
        model.set_attn_implementation(was)
    attention = attention[0].float().mean(0)                     # [T, T]
    image_cols = (full[0] == model.config.image_token_id).nonzero().flatten()
    order = _packed_order(model, (32, 64))
    assert len(image_cols) == len(order) == 16 + 4 * (8 + 1)
    for w, group in enumerate(groups):
        weights = attention[[len(start) + p - 1 for p in group]][:, image_cols].mean(0)
        expected = torch.zeros(4, 8)
        for (kind, r, c), a in zip(order.tolist(), weights.tolist()):
            if kind == 1:
                expected[r, c] += a
            elif kind == 0:
                expected[r:r + 1, 2 * c:2 * c + 2] += a / 2
        got = maps[w] / maps[w].sum()
        np.testing.assert_allclose(got, (expected / expected.sum()).numpy(), atol=1e-5)


# ------------------------------------------------------------ VisionEncoderDecoderModel

def _vision_encoder_decoder(encoder, decoder):
    """A ``VisionEncoderDecoderModel`` joining two tiny configs, the decoder built to
    cross-attend; its config names no decoder start token (the decoder's bos serves)."""
    enc, dec = conformance.tiny_config(encoder), conformance.tiny_config(decoder)
    dec.is_decoder, dec.add_cross_attention = True, True
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    torch.manual_seed(0)
    model = transformers.VisionEncoderDecoderModel(config=config).eval()
    model.generation_config.suppress_tokens = [
        i for i in range(dec.vocab_size) if i not in range(4, 11) and i != EOS]
    return model


#: The encoders and decoders transformers documents for image captioning and OCR; TrOCR
#: declares no attention and is read from what the whole model returns.
VISION_ENCODER_DECODERS = [("vit", "gpt2"), ("deit", "bert"), ("beit", "roberta"),
                           ("vit", "trocr")]


@pytest.mark.filterwarnings("ignore:the generated caption reached the token limit")
@pytest.mark.parametrize("encoder, decoder", VISION_ENCODER_DECODERS)
def test_vision_encoder_decoder_words_read_the_models_own_cross_attention(encoder, decoder,
                                                                          tokenizer):
    model = _vision_encoder_decoder(encoder, decoder)
    assert family_for(model).name == "hf_vision_encoder_decoder"
    cm, image, start, ids, groups, pixels, full = _caption_case(model, tokenizer)
    with torch.no_grad():
        plain = cm.hooks.forward(model, pixels, full)
        with capture(model, streams=list(cm.hooks.streams)):
            captured = cm.hooks.forward(model, pixels, full)
        torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-4)
        maps, _ = _word_maps(cm, pixels, ids, start, groups, "cross")
        model.set_attn_implementation("eager")
        out = model(pixel_values=pixels, decoder_input_ids=full, output_attentions=True)
    cross = out.cross_attentions[-1][0].float().mean(0)          # [T, tokens]
    prefix, (rows, cols) = cm.hooks.grid(model, cross.shape[-1])
    _assert_word_rows(maps, cross, start, groups, slice(prefix, prefix + rows * cols),
                      (rows, cols))
    _every_method_gives_finite_maps(image, model, tokenizer)
    # Its own caption, generated from the decoder's start token although the config
    # names none (words only, so it runs to the token limit).
    model.generation_config.suppress_tokens.append(EOS)
    generated = gr.ground_caption(image, model=model, tokenizer=tokenizer,
                                  max_new_tokens=4)
    assert generated.settings["generated"] and generated.truncated
    assert len(generated.words) == 4
    assert set(generated.words) <= set(WORDS[4:])


def test_generated_ids_the_tokenizer_lacks_mean_the_wrong_tokenizer(tokenizer):
    model = _vision_encoder_decoder("vit", "gpt2")
    model.generation_config.suppress_tokens = list(range(11))    # only ids past the toy
    with pytest.raises(ValueError, match="tokenizer does not have.*belongs to this model"):
        gr.ground_caption(_image(resolve_captioner(model, tokenizer=tokenizer)),
                          model=model, tokenizer=tokenizer, max_new_tokens=3)


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("model_type, cls, family, reason", [
    ("kosmos-2", "Kosmos2ForConditionalGeneration", "hf_kosmos_2", "resampler"),
    ("florence2", "Florence2ForConditionalGeneration", "hf_florence2", "local windows"),
    ("idefics2", "Idefics2ForConditionalGeneration", "hf_idefics2", "perceiver resampler"),
    ("qwen3_5", "Qwen3_5ForConditionalGeneration", "hf_qwen3_5", "linear-attention"),
    ("qwen3_5_moe", "Qwen3_5MoeForConditionalGeneration", "hf_qwen3_5", "Gated DeltaNet"),
    ("lfm2_vl", "Lfm2VlForConditionalGeneration", "hf_lfm2_vl", "convolution layers"),
    ("kosmos-2.5", "Kosmos2_5ForConditionalGeneration", "hf_kosmos_2", "resampler"),
    ("aria", "AriaForConditionalGeneration", "hf_aria", "learned queries of its projector"),
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


def test_instructblip_video_is_refused_as_a_video_captioner(tokenizer):
    model = transformers.InstructBlipVideoForConditionalGeneration(
        conformance.tiny_config("instructblipvideo")).eval()
    assert family_for(model).name == "hf_blip_2"
    with pytest.raises(TypeError, match="captions videos"):
        gr.ground_caption(np.zeros((32, 32, 3), np.uint8), CAPTION, model=model,
                          tokenizer=tokenizer)


@pytest.mark.parametrize("encoder, decoder, reason", [
    ("swin", "mbart", "the encoder: .*local windows"),           # Donut's layout
    ("vit", "llama", "LlamaForCausalLM\\) has no cross-attention"),
])
def test_vision_encoder_decoders_that_cannot_ground_words_are_refused(encoder, decoder,
                                                                     reason, tokenizer):
    model = _vision_encoder_decoder(encoder, decoder)
    with pytest.raises(TypeError, match=reason):
        gr.ground_caption(np.zeros((32, 32, 3), np.uint8), CAPTION, model=model,
                          tokenizer=tokenizer)


@pytest.mark.parametrize("model_type, cls, reason", [
    ("bert", "BertModel", "not an image captioner"),
    ("clip", "CLIPModel", "not an image captioner"),
    # an image-to-text model of a family without caption hooks
    ("ovis2", "Ovis2ForConditionalGeneration",
     "writes text from images, but .* not yet know how .* map back to pixels"),
])
def test_a_model_that_does_not_caption_is_refused_naming_the_captioners(model_type, cls,
                                                                      reason, tokenizer):
    model = getattr(transformers, cls)(conformance.tiny_config(model_type)).eval()
    with pytest.raises(TypeError, match=reason) as refused:
        gr.ground_caption(np.zeros((32, 32, 3), np.uint8), CAPTION, model=model,
                          tokenizer=tokenizer)
    supported = str(refused.value).rpartition("families that are: ")[2].split(", ")
    assert {"hf_vision_encoder_decoder", "hf_blip_captioner", "hf_llava", "hf_paligemma",
            "hf_qwen2_vl", "hf_git", "hf_idefics3", "hf_blip_2"} <= set(supported)
    assert all(family_named(name).captions for name in supported)


# --------------------------------------------------------------------------- the sweep

def test_caption_sweep_sorts_grounded_refused_and_unsupported_models(tmp_path):
    """benchmarks/caption_coverage.py's check on one model of each outcome, and its table
    written only between the page's markers."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "caption_coverage.py"
    spec = importlib.util.spec_from_file_location("caption_coverage", path)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    tok = sweep._tokenizer()
    records = [sweep.check_caption(name, tok) for name in (
        "vision-encoder-decoder:vit+trocr", "kosmos-2", "ovis2")]
    assert [r["status"] for r in records] == ["grounded", "refused", "unsupported"]
    assert records[0]["family"] == "hf_vision_encoder_decoder"
    assert "resampler" in records[1]["detail"]
    assert "vision-encoder-decoder:swin+mbart" in sweep.names()
    page = tmp_path / "page.md"
    page.write_text(f"before\n{sweep.START}\nold\n{sweep.END}\nafter\n")
    sweep.write_page(sweep.table(records, "5.x"), page)
    text = page.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "| 1 | 1 | 1 | 0 | 0 |" in text and "`kosmos-2`: " in text


# ------------------------------------------------------------ towers without a class token

def test_a_siglip_tower_whose_first_patch_is_dropped_is_refused(tokenizer):
    """LLaVA's "default" strategy drops the tower's first token: a class token for a
    CLIP tower, a patch for a SigLIP one, whose remaining tokens form no grid."""
    model = _model("llava_siglip")
    model.config.vision_feature_select_strategy = "default"
    try:
        with pytest.raises(ValueError, match="cannot be mapped back to pixels"):
            gr.ground_caption(np.zeros((32, 32, 3), np.uint8), CAPTION, model=model,
                              tokenizer=tokenizer)
    finally:
        model.config.vision_feature_select_strategy = "full"


def test_llava_onevision_input_is_the_largest_square_within_its_tile_budgets():
    """At most 4 tiles (``MAX_TILES``), and none that LLaVA-OneVision would shrink (past
    ``anyres_max_N`` tiles by more than 1.1 in side): the pinpoint holding the largest
    square among those, so 2 x 2 tiles rather than a 1 x 4 strip; a model whose every
    pinpoint is out of budget is refused, naming its pinpoints."""
    from groundroll.families import hf_llava_next

    model = _model("llava_onevision")
    config = model.config
    saved = config.image_grid_pinpoints, config.vision_aspect_ratio
    try:
        config.image_grid_pinpoints = [[32 * i, 32 * j] for i in range(1, 7)
                                       for j in range(1, 7)]
        assert hf_llava_next.canvas(model) == (64, 64)           # anyres_max_9, 4 tiles
        config.vision_aspect_ratio = "anyres_max_1"
        assert hf_llava_next.canvas(model) == (32, 32)
        config.vision_aspect_ratio = "anyres_max_3"              # 2 x 2 shrunk: 1 x 3
        assert hf_llava_next.canvas(model) == (32, 96)
        config.image_grid_pinpoints = [[64, 64]]
        config.vision_aspect_ratio = "anyres_max_2"
        with pytest.raises(ValueError, match="no grid pinpoint .*64, 64"):
            hf_llava_next.canvas(model)
    finally:
        config.image_grid_pinpoints, config.vision_aspect_ratio = saved
    assert hf_llava_next.canvas(model) == (32, 64)


def test_fuyu_prompt_puts_a_newline_token_after_each_row_of_image_tokens():
    """As Fuyu's processor lays out its prompt: each row of image placeholders ended by
    ``|NEWLINE|``, then bos, the instruction and the beginning-of-answer token."""
    from helpers.tiny_models import word_tokenizer

    from groundroll.families import hf_fuyu

    model = _model("hf_fuyu")
    tok = word_tokenizer([*WORDS, "|NEWLINE|", "<0x04>", "generate", "coco-style",
                          "caption."])
    newline, answer = tok.convert_tokens_to_ids(["|NEWLINE|", "<0x04>"])
    start = hf_fuyu._start_ids(model, tok)
    image = model.config.image_token_id
    rows = [start[5 * r:5 * r + 5] for r in range(4)]
    assert rows == [[image] * 4 + [newline]] * 4
    assert start[-1] == answer and image not in start[20:]


def test_got_ocr2_tokens_read_the_patches_of_their_footprint(tokenizer):
    """Checked against the model itself: with the tower's attention silenced, noise in
    one patch changes exactly the image tokens whose footprint holds that patch (the
    neck's and the projector's convolutions overlap, so a token reads beyond its block
    of 4 x 4 patches); and the layout spreads one token's score over that footprint."""
    from groundroll.families import hf_got_ocr2

    model, cm, image, start, ids = _inputs("hf_got_ocr2", tokenizer)
    full = torch.tensor([start + ids])
    pixels = cm.pixels(image)
    columns = cm.hooks.columns(model, full)
    foot = hf_got_ocr2.footprint(16)                           # [4 tokens, 16 patches]
    seen = []

    def silence(module, args, output):
        return (torch.zeros_like(output[0]), *output[1:])

    def embeds(module, args, kwargs):
        seen.append(kwargs["inputs_embeds"][0, columns].detach().clone())

    handles = [m.register_forward_hook(silence) for n, m in model.named_modules()
               if n.startswith("model.vision_tower") and n.endswith(".attn")]
    handles.append(model.get_decoder().register_forward_pre_hook(embeds, with_kwargs=True))
    try:
        with torch.no_grad():
            cm.hooks.forward(model, pixels, full, prompt=len(start))
            for pr, pc in [(0, 0), (3, 4), (4, 4), (7, 13), (15, 15), (9, 2)]:
                noisy = pixels.clone()
                noisy[0, :, 8 * pr:8 * pr + 8, 8 * pc:8 * pc + 8] += 1.0
                cm.hooks.forward(model, noisy, full, prompt=len(start))
                changed = ((seen[-1] - seen[0]).abs().amax(-1) > 1e-6).reshape(4, 4)
                expected = (foot[:, pr, None] > 0) & (foot[None, :, pc] > 0)
                assert torch.equal(changed, expected), (pr, pc)
    finally:
        for handle in handles:
            handle.remove()
    one = torch.zeros(1, 16)
    one[0, 5] = 1.0                                              # token (1, 1)
    spread = hf_got_ocr2.layout(model, one)[0]
    assert spread.shape == (16, 16) and spread.sum().item() == pytest.approx(1.0)
    assert torch.equal(spread > 0, (foot[1, :, None] > 0) & (foot[1, None, :] > 0))


def test_got_ocr2_captures_its_language_model_and_keeps_its_tower_refused():
    """GOT-OCR 2.0's SAM-style tower attends within windows: capture reads only the
    language model, and rollout over the tower stays refused with the reason."""
    from groundroll.families import adapter_for, refusal

    model = _model("hf_got_ocr2")
    assert adapter_for(model).streams == ("encoder",)
    assert "local windows" in refusal(model)


# --------------------------------------------------------------------------- Pix2Struct

def _pix2struct():
    """Pix2Struct with row and column tables of 5 ids: a 4 x 4 patch input, 64 px."""
    model = _build("pix2struct", "Pix2StructForConditionalGeneration",
                   vision_config__seq_len=5)
    model.config.text_config.eos_token_id = EOS
    return model


def test_pix2struct_patches_are_its_image_processors():
    """Standardised per image and flattened after their 1-based row and column, as
    ``Pix2StructImageProcessor`` makes them at the same size (which it leaves as is)."""
    from transformers.image_processing_utils import SizeDict

    from groundroll.families import hf_pix2struct

    model = _pix2struct()
    assert hf_pix2struct._image_size(model) == (64, 64)
    pixels = torch.rand(2, 3, 64, 64)
    processor = transformers.Pix2StructImageProcessor()
    expected = processor.extract_flattened_patches(
        processor.normalize(pixels), max_patches=16,
        patch_size=SizeDict(height=16, width=16))
    torch.testing.assert_close(hf_pix2struct.flattened_patches(model, pixels), expected,
                               atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:the generated caption reached the token limit")
def test_pix2struct_words_read_the_models_own_cross_attention(tokenizer):
    model = _pix2struct()
    assert family_for(model).name == "hf_pix2struct"
    cm, image, start, ids, groups, pixels, full = _caption_case(model, tokenizer)
    patches = transformers.Pix2StructImageProcessor()(
        images=image, max_patches=16, return_tensors="pt")
    with torch.no_grad():
        plain = cm.hooks.forward(model, pixels, full)
        direct = model(**patches, decoder_input_ids=full).logits
        torch.testing.assert_close(plain, direct, atol=1e-4, rtol=1e-4)
        with capture(model, streams=list(cm.hooks.streams)):
            captured = cm.hooks.forward(model, pixels, full)
        torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-4)
        maps, _ = _word_maps(cm, pixels, ids, start, groups, "cross")
        model.set_attn_implementation("eager")
        out = model(**patches, decoder_input_ids=full, output_attentions=True)
    cross = out.cross_attentions[-1][0].float().mean(0)          # [T, 16 patches]
    _assert_word_rows(maps, cross, start, groups, slice(0, 16), (4, 4))
    assert image.shape[:2] == (64, 64)
    _every_method_gives_finite_maps(image, model, tokenizer)
    generated = gr.ground_caption(image, model=model, tokenizer=tokenizer, max_new_tokens=4)
    assert generated.settings["generated"] and 1 <= len(generated.words) <= 4


def test_pix2struct_question_answering_checkpoints_are_refused(tokenizer):
    model = _pix2struct()
    model.config.vision_config.is_vqa = True
    with pytest.raises(TypeError, match="questions rendered as a header"):
        gr.ground_caption(np.zeros((64, 64, 3), np.uint8), CAPTION, model=model,
                          tokenizer=tokenizer)


def test_llama4_image_tokens_follow_its_start_and_image_markers():
    """As Llama 4's processor lays out one tile: ``<|image_start|><|image|>``, the
    ``<|patch|>`` placeholders, ``<|image_end|>``."""
    from helpers.tiny_models import word_tokenizer

    model = _model("hf_llama4")
    tok = word_tokenizer([*WORDS, "<|image_start|>", "<|image|>", "<|image_end|>"])
    start = family_named("hf_llama4").captioning.start_ids(model, tok)
    begin, image, end = tok.convert_tokens_to_ids(["<|image_start|>", "<|image|>",
                                                    "<|image_end|>"])
    at = start.index(begin)
    patch = model.config.image_token_id
    assert start[at:at + 7] == [begin, image, patch, patch, patch, patch, end]


# ------------------------------------------------------------ Llama 3.2 Vision (Mllama)

def _mllama():
    """Three language layers, the middle one cross-attention; gates opened (zeros by
    default: the text would not read the image at all)."""
    model = _build("mllama", "MllamaForConditionalGeneration",
                   text_config__num_hidden_layers=3, text_config__cross_attention_layers=[1])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("_gate"):
                param.fill_(1.0)
    return model


@pytest.mark.filterwarnings("ignore:the generated caption reached the token limit")
def test_mllama_words_read_the_models_own_cross_attention(tokenizer):
    """Inputs as Llama 3.2 Vision's image processor makes them for one tile; ``cross``
    maps equal the model's own cross-attention (``output_attentions``) at the rows that
    predict each word over the first tile's patches; the composer meets the self- and
    cross-attention layers in the model's order; every method runs, generation too."""
    from groundroll.compose.layers import LayerReader, decoder_blocks
    from groundroll.families import _hf, hf_mllama
    from groundroll.trace import Chain

    model = _mllama()
    assert family_for(model).name == "hf_mllama"
    cm, image, start, ids, groups, pixels, full = _caption_case(model, tokenizer)
    assert cm.image_size == (32, 32)
    ours = hf_mllama._inputs(model, pixels, full)
    mean, std = _hf.OPENAI_MEAN_STD                  # Llama 3.2 Vision's processor's
    processed = transformers.MllamaImageProcessor(
        size={"height": 32, "width": 32}, max_image_tiles=4, image_mean=list(mean),
        image_std=list(std))(images=[[image]], return_tensors="pt")
    torch.testing.assert_close(ours["pixel_values"], processed["pixel_values"],
                               atol=1e-5, rtol=0)
    assert torch.equal(ours["aspect_ratio_ids"], processed["aspect_ratio_ids"])
    assert torch.equal(ours["aspect_ratio_mask"], processed["aspect_ratio_mask"])
    with torch.no_grad():
        plain = cm.hooks.forward(model, pixels, full)
        with capture(model, streams=list(cm.hooks.streams)) as trace:
            captured = cm.hooks.forward(model, pixels, full)
        torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-4)
        maps, _ = _word_maps(cm, pixels, ids, start, groups, "cross")
        model.set_attn_implementation("eager")
        out = model(**ours, output_attentions=True)
    chain = Chain("encoder", "decoder", source_self="encoder", target_self="decoder",
                  target_cross="cross")
    blocks = decoder_blocks(LayerReader(hf_mllama.by_decoder_layer(trace)), chain, None)
    assert [(i, s is not None, c is not None) for i, s, c in blocks] == [
        (0, True, False), (1, False, True), (2, True, False)]
    cross = out.attentions[1][0].float().mean(0)                 # [T, tiles * tokens]
    _assert_word_rows(maps, cross, start, groups, slice(1, 17), (4, 4))
    # Every row the chain reads is the model's own cross-attention.
    (layer,) = hf_mllama.by_decoder_layer(trace).stream("cross")
    torch.testing.assert_close(layer.weights.float(), out.attentions[1].float(), atol=1e-6,
                               rtol=0)
    # Rollout by hand from the model's own attention: the cross block (residual 0.5)
    # after layer 0's self-attention, then layer 2's self-attention (A / 2 + I / 2).
    a2 = out.attentions[2][0].float().mean(0)
    a2 = 0.5 * a2 + 0.5 * torch.eye(len(a2))
    carried = a2 @ cross                                          # [T, keys]
    rolled, _ = _word_maps(cm, pixels, ids, start, groups, "rollout")
    _assert_word_rows(rolled, carried, start, groups, slice(1, 17), (4, 4))
    _every_method_gives_finite_maps(image, model, tokenizer, distinct=True)
    generated = gr.ground_caption(image, model=model, tokenizer=tokenizer, max_new_tokens=4)
    assert generated.settings["generated"] and 1 <= len(generated.words) <= 4


def test_mllama_without_cross_attention_layers_is_refused(tokenizer):
    model = _build("mllama", "MllamaForConditionalGeneration")   # layers 3, 8, ... of 2
    with pytest.raises(TypeError, match="names none of its 2 layers"):
        gr.ground_caption(np.zeros((32, 32, 3), np.uint8), CAPTION, model=model,
                          tokenizer=tokenizer)


def test_shieldgemma2s_classifier_head_is_refused_saying_what_to_load(tokenizer):
    """ShieldGemma 2's classifier head writes no text."""
    shield = transformers.ShieldGemma2ForImageClassification(
        conformance.tiny_config("shieldgemma2")).eval()
    with pytest.raises(TypeError, match="two class scores.*AutoModelForImageTextToText"):
        gr.ground_caption(np.zeros((32, 32, 3), np.uint8), CAPTION, model=shield,
                          tokenizer=tokenizer)


@pytest.mark.filterwarnings("ignore:Casting complex values to real")   # rotary tables
@pytest.mark.parametrize("key", ["hf_fuyu", "hf_got_ocr2", "hf_llama4", "pix2struct",
                                 "mllama"])
def test_half_precision_models_get_pixels_in_their_dtype(key, tokenizer):
    """These towers do not cast their input: the hooks hand them pixels in the model's
    dtype (bfloat16 here), as a large checkpoint is loaded."""
    build = {"pix2struct": _pix2struct, "mllama": _mllama}.get(key) or BUILDERS[key][0]
    model = build().to(torch.bfloat16)
    cm = resolve_captioner(model, tokenizer=tokenizer)
    result = gr.ground_caption(_image(cm), CAPTION, model=model, tokenizer=tokenizer,
                               method="cross")
    assert np.isfinite(result.heatmaps).all() and result.heatmaps.max() > 0

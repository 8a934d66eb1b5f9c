"""Capture conformance on models groundroll has no hand-written adapter for.

Hugging Face models are generated from transformers' own auto mapping and built tiny
from their config classes (:mod:`groundroll.adapters.conformance`): under capture the
outputs are unchanged, every attention tensor the model reports with
``output_attentions=True`` is found in the trace within 1e-5, and after an exception no
hook is left and the attention implementation is restored. open_clip timm trunks give
row-stochastic ``[batch, head, query, key]`` weights equal to a hand recomputation.
Windowed, local, sparse and convolutional models are refused with a reason.

The full sweep (every class, every open_clip architecture) is
``benchmarks/coverage.py``; here a deterministic sample of the auto mapping runs.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

pytest.importorskip("transformers")

from groundroll.adapters import adapter_for, capture, register_adapter  # noqa: E402
from groundroll.adapters import conformance  # noqa: E402
from groundroll.families import UnsupportedModelError, derive_adapter  # noqa: E402
from helpers import tiny_models as tm  # noqa: E402

ATOL = 1e-5

#: Families people load every day that had no adapter of their own.
NAMED = ("plbart", "blenderbot", "blenderbot-small", "whisper", "distilbert", "albert",
         "dinov2", "beit", "siglip2", "owlvit", "clipseg", "bert", "vit", "t5",
         # no declaration: read from the attention they return (output_attentions=True)
         "mpnet", "deberta", "deberta-v2", "xlnet", "xlm", "roformer", "funnel", "canine",
         "fsmt", "prophetnet", "longt5", "mvp",
         # declared, with a global-local encoder left out: decoder and cross captured
         "pegasus_x",
         # one merged attention module declared for self- and cross-attention
         "t5gemma2",
         # tiny builds fixed: per-layer lists cut to the layer count (gpt_neo), the
         # AutoConfig text tower shrunk and image placeholders in the text (llava)
         "gpt_neo", "llava")
REFUSED = {"swin": "windows", "longformer": "sliding-window", "led": "sliding-window",
           "big_bird": "block-sparse", "convnext": "convolutional", "rwkv": "recurrent",
           "yoso": "hashing or sampling", "deformable_detr": "deformable",
           "groupvit": "groups its image tokens"}

# A fixed sample of the auto mapping beyond the named families, chosen by name (never by
# position in transformers' list, which shifts with every release): decoder-only language
# models, encoders, vision and seq2seq families that build tiny in about a second and a
# few hundred MB. Heavy tiny builds (pi0: 14.5 GB, qwen3_asr: 8.8 GB, gemma3n) and models
# whose tiny config does not run stay in the full sweep, ``make coverage``.
SAMPLE = ("afmoe", "deit", "electra", "gpt2", "gpt_bigcode", "llama", "m2m_100", "marian",
          "mbart", "mellum", "mistral", "olmo3", "qwen2", "roberta", "sam3_vit_model",
          "xlm-roberta", "mpnet")
# Sampled classes known to fail (none at present); the coverage table lists them all.
KNOWN_FAILING: set[str] = set()


def _check(model_type):
    """Every named and sampled model builds and runs tiny with the pinned transformers
    (``constraints.txt``): a build failure here is a failure, not a skip."""
    assert model_type in conformance.hf_model_types(), (
        f"{model_type} is no longer in transformers' auto mapping: update the sample")
    result = conformance.check_hf(model_type)
    assert result.status != "not_built", f"tiny {model_type} did not build: {result.detail}"
    return result


@pytest.mark.parametrize("model_type", NAMED)
def test_named_families_captured_exactly(model_type):
    result = _check(model_type)
    assert result.status == "captured", result.detail
    assert result.reported > 0


@pytest.mark.parametrize("model_type", SAMPLE)
def test_sample_of_the_auto_mapping(model_type):
    result = _check(model_type)
    if model_type in KNOWN_FAILING:
        assert result.status == "failing", "now captured: take it off KNOWN_FAILING"
        pytest.xfail("declares no attention that groundroll can read")
    assert result.status in ("captured", "refused"), result.detail


@pytest.mark.parametrize("model_type", sorted(REFUSED))
def test_windowed_local_sparse_and_cnn_models_are_refused(model_type):
    model, inputs = conformance.tiny_hf(model_type)
    with pytest.raises(UnsupportedModelError) as info:
        with capture(model):
            pass
    message = str(info.value)
    assert REFUSED[model_type] in message
    assert "Use" in message or "use" in message or "original_full" in message
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("model_type", ("fnet", "mamba", "mamba2", "cvt"))
def test_hf_models_without_attention_to_read_are_refused(model_type):
    """Fourier mixing, a state-space model and a convolutional ViT hybrid: no family, no
    declaration and no ``output_attentions``, so ``capture`` says why it cannot apply."""
    model, inputs = conformance.tiny_hf(model_type)
    with pytest.raises(UnsupportedModelError, match="reports no attention.*Grad-CAM"):
        with capture(model):
            model(**inputs)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert conformance.check_hf(model_type).status == "refused"


def test_a_module_that_no_adapter_serves_still_raises_type_error():
    with pytest.raises(TypeError) as info:
        with capture(torch.nn.Linear(2, 2)):
            pass
    assert not isinstance(info.value, UnsupportedModelError)


def test_modality_split_of_the_coverage_table():
    assert conformance.hf_modality("wav2vec2") == "audio_time_series"
    assert conformance.hf_modality("patchtst") == "audio_time_series"
    assert conformance.hf_modality("bert") == "text_vision_multimodal"
    assert conformance.hf_modality("llava") == "text_vision_multimodal"
    assert conformance.hf_modality("mimi_decoder") == "audio_time_series"      # a codec
    assert conformance.hf_modality("qwen2_audio") == "audio_time_series"       # speech LM
    assert conformance.hf_modality("qwen2_5_omni_thinker") == "text_vision_multimodal"


def test_tiny_config_cuts_per_layer_lists_to_the_layer_count():
    config = conformance.tiny_config("gpt_neo")
    assert config.num_layers == 2
    assert config.attention_layers == ["global", "local"]


def test_less_shrunk_levels_keep_the_class_widths():
    from transformers import CONFIG_MAPPING

    default = CONFIG_MAPPING["bert"]()
    assert conformance.tiny_config("bert").hidden_size == 32
    level2 = conformance.tiny_config("bert", level=2)
    assert (level2.hidden_size, level2.num_hidden_layers) == (default.hidden_size, 2)
    assert level2.vocab_size == 64
    level3 = conformance.tiny_config("bert", level=3)
    assert level3.vocab_size == default.vocab_size


#: One model type per rule of the tiny-config and input derivation, each of which did not
#: build or run before the rule; each must now be captured exactly.
RULES = {
    "qwen3_next": "per-layer list keeps its one full-attention layer",
    "jamba": "attention period and offset under two layers",
    "mixtral": "expert feed-forward widths grouped matmuls accept",
    "deepseek_v2": "experts per token set where the config leaves it unset",
    "ministral": "head_dim set where the config leaves it unset",
    "gptj": "partial rotary width inside head_dim",
    "deepseek_v3": "low-rank attention with its rotary head_dim",
    "recurrent_gemma": "block pattern of the type table",
    "qwen2_vl_text": "M-RoPE sections that split head_dim / 2",
    "d_fine": "object queries within the anchors of a 32 x 32 image",
    "videomae": "video frames as 5-D pixels",
    "idefics3": "an image list as 5-D pixels with its placeholders",
    "llava_next": "any-resolution tiles with their image sizes",
    "mistral3": "image sizes the image features require",
    "gemma3": "image tokens pooled from a small patch grid",
    "esm": "vocabulary and special ids the config leaves unset",
    "lxmert": "region features made by name",
    "vjepa2": "video main input made by name",
    "sam3": "a transformer backbone shrunk like any sub-config",
    "vipllava": "image feature layers among the two there are",
    # the long tail of the sweep
    "blip_2_qformer": "learned queries and the image features its cross-attention reads",
    "xmod": "language ids for X-MOD's adapters",
    "cohere_compass_text": "RoPE per layer type the config leaves empty",
    "vilt": "pixels for a text-and-image model without a vision sub-config",
    "idefics": "one image per text with its image attention mask",
    "mgp-str": "a [height, width] image size, aspect kept",
    "seggpt": "prompt and image stacked along the configured height",
    "pe_video_encoder": "a timm ViT tower made small through model_args",
    "aria": "image queries per patch count of a tiny image",
    "depth_pro": "hooked layers within the tiny towers",
    "mllama": "tiles, aspect ratio ids and the cross-attention mask",
    "gemma4_vision": "patches with their (x, y) positions",
    "qwen4_exp_text": "the sparse attention indexer the default leaves unset",
    "embedding_gemma2": "text only where the vision sub-config is unset",
    "lfm2_vl": "image placeholders for NaFlex patches",
    "granite_docling": "the tile mask get_image_features requires",
    "dots1": "expert counts and widths the config leaves unset",
    "bailing_hybrid": "one expert group for four experts",
    "zamba": "two hybrid layers sharing one attention block",
    "diffusion_gemma": "text only for a forward that takes no pixel_values",
    "dots3_note": "the vision adapter's output width",
    "perceiver": "embedded inputs for a model without an embedding layer",
    "decision_transformer": "states, actions, returns and timesteps",
    "instructblipvideo": "clips and the video placeholder of a video-only model",
    "kosmos-2": "image embedding positions inside the text",
}


@pytest.mark.parametrize("model_type", sorted(RULES))
def test_derivation_rules_build_models_that_are_captured(model_type):
    result = conformance.check_hf(model_type)
    assert result.status == "captured", f"{RULES[model_type]}: {result.detail}"
    assert result.extra["level"] == 0
    assert result.reported > 0


def test_q_former_text_after_its_queries_is_sized_by_its_attention():
    """InstructBLIP's Q-Former gets the text ids and a mask over query embeddings plus
    text: the stream is as long as the attention, not as the ids."""
    model, inputs = conformance.tiny_hf("instructblip")
    assert conformance.check(model, inputs).status == "captured"
    with torch.no_grad(), capture(model) as trace:
        model(**inputs)
    queries = model.config.num_query_tokens
    length = queries + inputs["qformer_input_ids"].shape[1]
    assert trace.tokens["qformer"].length == length
    assert trace.stream("qformer")[0].weights.shape[-2:] == (length, length)


def test_a_class_allowed_more_parameters_builds_at_its_codec_widths():
    result = conformance.check_hf("csm")
    assert result.status == "captured", result.detail
    assert result.extra["level"] == 1                   # the codec at its own widths


def test_per_layer_lists_keep_every_kind_of_layer():
    assert conformance._cut(["linear", "linear", "linear", "full"], 2) == ["linear", "full"]
    assert conformance._cut(["a", "a", "a"], 2) == ["a", "a"]
    assert conformance._cut([4, 4, 8], 2) == [4, 4]             # numbers: cut only
    config = conformance.tiny_config("qwen3_next")
    assert config.layer_types == ["linear_attention", "full_attention"]


def test_expert_models_get_aligned_widths_and_fewer_experts():
    config = conformance.tiny_config("mixtral")
    assert config.intermediate_size * 4 % 16 == 0
    assert (config.num_local_experts, config.num_experts_per_tok) == (4, 2)
    assert conformance.tiny_config("bert").intermediate_size == 37     # no experts


def test_patch_grid_inputs_of_a_qwen2_vl_vision_tower():
    model, inputs = conformance.tiny_hf("qwen2_vl")
    vision = model.config.vision_config
    per_patch = (vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2)
    grid = inputs["image_grid_thw"]
    assert inputs["pixel_values"].shape == (int(grid.prod(-1).sum()), per_patch)
    merged = int(grid[0].prod()) // vision.spatial_merge_size ** 2
    image_token = model.config.image_token_id
    assert ((inputs["input_ids"] == image_token).sum(-1) == merged).all()
    assert torch.equal(inputs["mm_token_type_ids"], (inputs["input_ids"] == image_token).long())
    with torch.no_grad():
        model(**inputs)                                   # the model accepts them


def test_patch_grid_reads_the_temporal_patch_under_either_name():
    model, inputs = conformance.tiny_hf("muse_glimmer_vision")      # patch_temporal
    config = model.config
    per_patch = 3 * config.patch_temporal * config.patch_size ** 2
    patches = next(iter(inputs.values()))                           # its first input
    assert patches.shape[-1] == per_patch and "grid_thw" in inputs
    with torch.no_grad():
        model(**inputs)


def test_big_bird_with_full_attention_is_captured():
    import transformers

    config = conformance.tiny_config("big_bird")
    config.attention_type = "original_full"
    model = transformers.BigBirdModel(config).eval()
    result = conformance.check(model, conformance.tiny_inputs(model), name="big_bird")
    assert result.status == "captured", result.detail


def test_albert_shared_layer_gives_one_layer_per_call():
    model, inputs = conformance.tiny_hf("albert")
    with torch.no_grad(), capture(model) as trace:
        model(**inputs)
        model(**inputs)
    layers = model.config.num_hidden_layers
    assert trace.calls("encoder") == 2
    assert [l.index for l in trace.stream("encoder", call=1)] == list(range(layers))


def test_causality_and_streams_of_a_derived_seq2seq():
    model, inputs = conformance.tiny_hf("plbart")
    with torch.no_grad(), capture(model) as trace:
        model(**inputs)
    assert trace.streams == ["encoder", "decoder", "cross"]
    assert [l.causal for l in trace.stream("decoder")] == [True, True]
    assert not any(l.causal for l in trace.stream("encoder"))
    cross = trace.stream("cross")[0]
    assert (cross.query_stream, cross.key_stream) == ("decoder", "encoder")
    assert trace.tokens["encoder"].mask is not None      # the padded row
    assert trace.tokens["decoder"].causal
    chain = trace.chains[0]                              # the family's own chain
    assert (chain.source, chain.target, chain.target_cross) == ("encoder", "decoder", "cross")


def test_derived_image_tokens_count_prefix_tokens():
    model, inputs = conformance.tiny_hf("dinov2")
    with torch.no_grad(), capture(model) as trace:
        model(**inputs)
    tokens = trace.tokens["encoder"]
    assert tokens.grid == (4, 4) and tokens.prefix == 1 and tokens.length == 17


@pytest.mark.parametrize("name", sorted(tm.HF_FAMILIES))
def test_hand_written_adapters_agree_with_the_declarations(name):
    """Where a hand-written adapter and the declarations both apply, the same weights
    come out under the same stream names."""
    tiny = tm.build(name)
    hand = adapter_for(tiny.model)
    derived = derive_adapter(tiny.model)
    assert derived is not None
    derived = dataclasses.replace(derived, name="declared-only")
    with torch.no_grad(), capture(tiny.model) as want:
        tiny.model(**tiny.inputs)
    register_adapter(derived)
    try:
        assert adapter_for(tiny.model).name == derived.name
        with torch.no_grad(), capture(tiny.model) as got:
            tiny.model(**tiny.inputs)
    finally:
        from groundroll.families import unregister_family
        unregister_family(derived.name)
    assert adapter_for(tiny.model) is hand
    assert set(got.streams) == set(want.streams)
    for stream in want.streams:
        for g, w in zip(got.stream(stream), want.stream(stream), strict=True):
            assert (g.query_stream, g.key_stream, g.causal) == (
                w.query_stream, w.key_stream, w.causal), stream
            assert torch.allclose(g.weights, w.weights, atol=ATOL), stream


def test_values_say_when_no_projection_is_known():
    model, inputs = conformance.tiny_hf("plbart")
    with torch.no_grad(), capture(model, values=True) as trace:
        model(**inputs)
    assert all(l.value_norms is not None for l in trace)


# --------------------------------------------------------------------------- open_clip

TIMM = ("ViT-B-16-SigLIP", "EVA02-B-16", "ViT-SO400M-14-SigLIP")


def _timm_reference(module, x):
    """softmax(q k^T / sqrt(d)) of a timm Attention recomputed from its qkv."""
    b, n, _ = x.shape
    qkv = module.qkv(x).reshape(b, n, 3, module.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = module.q_norm(qkv[0]), module.k_norm(qkv[1])
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)


@pytest.mark.parametrize("arch", TIMM)
def test_open_clip_timm_trunks(arch):
    pytest.importorskip("timm")
    model, inputs = conformance.tiny_open_clip(arch)
    result = conformance.check(model, inputs, name=arch, reference="rows")
    assert result.status == "captured", result.detail
    trunk = model.visual.trunk
    seen = {}
    first = trunk.blocks[0].attn
    handle = first.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    try:
        with torch.no_grad(), capture(model) as trace:
            assert all(not m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))
            model(**inputs)
    finally:
        handle.remove()
    vision = trace.weights("vision")
    assert len(vision) == len(trunk.blocks)
    tokens = trace.tokens["vision"]
    assert tokens.grid == (4, 4)
    assert tokens.prefix == trunk.num_prefix_tokens
    assert vision[0].shape == (2, first.num_heads, tokens.length, tokens.length)
    if type(first).__name__ == "Attention":
        with torch.no_grad():
            assert torch.allclose(vision[0], _timm_reference(first, seen["x"]), atol=ATOL)
    if getattr(trunk, "attn_pool", None) is not None:
        pool = trace.weights("pool")[0]
        assert pool.shape == (2, trunk.attn_pool.num_heads, trunk.attn_pool.latent_len,
                              tokens.length)


def test_timm_capture_gives_gradients_and_restores_fused_after_an_error():
    pytest.importorskip("timm")
    model, inputs = conformance.tiny_open_clip("ViT-B-16-SigLIP")
    before = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    with torch.enable_grad(), capture(model, grads=True) as trace:
        out = model(**inputs)
        (out[0] * out[1]).sum().backward()
    assert all(l.grad is not None and l.grad.shape == l.weights.shape for l in trace)
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model):
            model(**inputs)
            raise RuntimeError("boom")
    assert [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")] == before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_open_clip_resnet_is_refused():
    model, _ = conformance.tiny_open_clip("RN50")
    with pytest.raises(UnsupportedModelError, match="ResNet.*ViT"):
        with capture(model):
            pass


def test_minimax_linear_attention_state_is_not_captured_as_attention():
    """MiniMax's lightning (linear) attention layers return their [batch, head, dim,
    dim] key-value state where softmax layers return probabilities: only the softmax
    layers are captured, each equal to what the model reports for it."""
    model, inputs = conformance.tiny_hf("minimax")
    kinds = list(model.config.layer_types)
    assert set(kinds) == {"full_attention", "linear_attention"}
    reference = conformance._eager_reference(model, inputs).attentions
    with torch.no_grad(), capture(model) as trace:
        model(**inputs)
    full = [i for i, kind in enumerate(kinds) if kind == "full_attention"]
    layers = trace.stream("encoder")
    assert [layer.module_name for layer in layers] == [f"layers.{i}.self_attn" for i in full]
    for layer, i in zip(layers, full):
        assert torch.allclose(layer.weights, reference[i], atol=ATOL)
        assert torch.allclose(layer.weights.sum(-1), torch.ones(()), atol=ATOL)
    assert conformance.check_hf("minimax").status == "captured"


def test_attention_classes_fixed_as_sdpa_are_refused_with_the_way_out():
    # Data2VecVision picks *SdpaSelfAttention classes when it is built; they return no
    # weights whatever the config says afterwards, so capture says how to load it.
    import transformers

    config = conformance.tiny_config("data2vec-vision")
    config._attn_implementation = "sdpa"
    model = transformers.Data2VecVisionModel(config).eval()
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    with pytest.raises(UnsupportedModelError, match="attn_implementation='eager'"):
        with capture(model):
            pass
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks))
            for m in model.modules()] == hooks
    assert config._attn_implementation == "sdpa"
    # Built in eager (what the sweep and groundroll.load do), it is captured exactly.
    assert conformance.check_hf("data2vec-vision").status == "captured"


def test_attention_reported_per_stage_is_compared_layer_by_layer():
    # PVTv2 returns one tuple of layers per stage (nested tuples of different sizes).
    model, inputs = conformance.tiny_hf("pvt_v2")
    reported = conformance._reported(conformance._eager_reference(model, inputs))
    stages = model.config.num_encoder_blocks
    assert len(reported) == sum(model.config.depths[:stages])
    assert reported[0][0] == "attentions[0][0]"
    assert conformance.check_hf("pvt_v2").status == "captured"

"""Rules of the coverage sweep's tiny builds and the refusals they meet.

Rules of :mod:`groundroll.adapters.conformance` that need more than one build to show
(config shrinking, inputs made by name) are checked here; the one-model builds of every
rule are in ``tests/test_conformance.py``'s ``RULES``. Each new
refusal group is checked on a real model of one of its types: groundroll's adapter
lookup raises with the reason and what to use instead, and leaves no hook behind.
"""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch

pytest.importorskip("transformers")

from groundroll.adapters import capture  # noqa: E402
from groundroll.adapters import conformance  # noqa: E402
from groundroll.families import UnsupportedModelError, adapter_for  # noqa: E402
from groundroll.families.derive import REFUSALS  # noqa: E402

# The rules' one-model builds are in tests/test_conformance.py's RULES.


def test_a_width_left_at_zero_stays_switched_off():
    """GLM-5's DSA heads have no rotary part (qk_rope_head_dim=0): shrinking must not
    switch one on, which its config validation rejects."""
    config = conformance.tiny_config("glm5_next_text")
    assert config.qk_rope_head_dim == 0
    assert config.hidden_size == 32


def test_rope_per_layer_type_gets_multimodal_sections_in_each_type():
    config = conformance.tiny_config("cohere_compass")
    rope = config.text_config.rope_parameters
    assert set(rope) == set(config.text_config.layer_types)
    for parameters in rope.values():
        assert sum(parameters["mrope_section"]) == config.text_config.head_dim // 2


def test_unset_sliding_window_spans_every_position():
    config = conformance.tiny_config("step3p7").text_config
    assert config.sliding_window == config.max_position_embeddings


def test_q_former_is_fed_its_queries_not_the_inherited_input_ids():
    model, inputs = conformance.tiny_hf("blip_2_qformer")
    assert set(inputs) == {"query_embeds", "encoder_hidden_states"}
    assert inputs["encoder_hidden_states"].shape[-1] == model.config.encoder_hidden_size
    with torch.no_grad(), capture(model) as trace:
        model(**inputs)
    queries, states = inputs["query_embeds"].shape[1], inputs["encoder_hidden_states"].shape[1]
    shapes = {tuple(layer.weights.shape[-2:]) for layer in trace}
    assert shapes == {(queries, queries), (queries, states)}   # self- and cross-attention


def test_pixels_go_to_text_and_image_models_only_where_the_image_is_not_in_the_text():
    """ViLT takes pixels beside its text; Fuyu takes image patches at placeholder
    positions, not pixels, so its tiny run stays text only."""
    assert "pixel_values" in conformance.tiny_hf("vilt")[1]
    assert "pixel_values" not in conformance.tiny_hf("fuyu")[1]


def _built(model_type):
    """A real model of ``model_type`` at the first shrink level that builds."""
    errors = []
    for level in range(conformance.LEVELS):
        try:
            return conformance.tiny_hf(model_type, level=level)[0]
        except Exception as err:   # this level's config or build is rejected
            errors.append(f"level {level}: {err}")
    pytest.fail(f"{model_type} builds at no level: {errors}")


#: One model type per refusal group, with words its reason must give.
REFUSED = {
    "sam2": "windows in most of its layers",
    "sam3_tracker": "windows in most of its layers",
    "deepseek_vl_hybrid": "windows in most of its layers",
    "edgetam": "RepViT, a convolutional network",
    "sam2_video": "inference session",
    "omdet-turbo": "deformable attention",
    "mask2former": "deformable attention",
    "uvdoc": "convolutional network",
    "pp_ocrv6_small_det": "convolutional network",
    "xlstm": "matrix-memory cells",
    "glm_image_vqmodel": "vector-quantised image tokenizer",
    "align": "EfficientNet, a convolutional network",
}


@pytest.mark.parametrize("model_type", sorted(REFUSED))
def test_refused_groups_raise_from_the_adapter_lookup(model_type):
    model = _built(model_type)
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    with pytest.raises(UnsupportedModelError) as info:
        adapter_for(model)
    message = str(info.value)
    assert REFUSED[model_type] in message
    assert re.search(r"\b[Uu]se\b", message)   # says what to use instead
    with pytest.raises(UnsupportedModelError):
        with capture(model):
            pass
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks))
            for m in model.modules()] == hooks   # none of ours left (the model has its own)


def test_timm_backbone_is_refused_as_a_wrapped_timm_network():
    pytest.importorskip("timm")
    from transformers import TimmBackbone, TimmBackboneConfig

    model = TimmBackbone(TimmBackboneConfig(backbone="resnet18", use_pretrained_backbone=False))
    with pytest.raises(UnsupportedModelError, match="timm network behind a transformers"):
        adapter_for(model)


@pytest.mark.parametrize(("model_type", "package", "words"), (
    ("dinat", "natten", "local windows"),))
def test_a_refused_type_that_does_not_build_is_refused_by_the_sweep(model_type, package,
                                                                     words):
    """DiNAT needs natten to build at all: the sweep refuses it by type, with the reason
    a built model would get."""
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{model_type} builds where {package} is installed")
    result = conformance.check_hf(model_type)
    assert result.status == "refused"
    assert words in result.detail


@pytest.mark.parametrize("model_type", ("gemma3n_audio", "clvp", "moshi",
                                        "nemotron3_5_transcribe_word_timestamp",
                                        "higgs_audio_v2_tokenizer"))
def test_speech_classes_count_as_audio(model_type):
    assert conformance.hf_modality(model_type) == "audio_time_series"


def test_audio_visual_and_vision_language_classes_stay_multimodal():
    assert conformance.hf_modality("pe_audio_video") == "text_vision_multimodal"
    assert conformance.hf_modality("qwen2_5_omni_thinker") == "text_vision_multimodal"
    assert conformance.hf_modality("llava") == "text_vision_multimodal"


def test_a_model_that_only_lacks_a_package_is_not_refused():
    # LayoutLMv2's attention is ordinary; without detectron2 its tiny build fails, which
    # the sweep reports as not exercised, never as a refusal.
    if importlib.util.find_spec("detectron2") is not None:
        pytest.skip("detectron2 is installed")
    assert "layoutlmv2" not in REFUSALS
    assert conformance.check_hf("layoutlmv2").status == "not_built"

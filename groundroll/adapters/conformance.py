"""Does ``capture`` read a model exactly? Checks for any model, and tiny random models of
every transformers class with declared attention and of open_clip's architectures.

:func:`check` runs one model three ways and compares: its plain output, its output under
``capture`` (must be unchanged), and what it reports itself with
``output_attentions=True`` (every reported tensor must be found in the trace within
``1e-5``); then it raises inside a capture and checks that no hook is left and that the
attention implementation (and timm ``fused_attn``) is restored. Vision towers that attend
image by image and report no weights (``chunked`` sites, Qwen2-VL-style) are checked
against an independent reference instead (:func:`_chunked_reference`).

:func:`hf_model_types` lists the classes from transformers' own auto mappings
(``MODEL_MAPPING_NAMES``), not from a hand list; :func:`tiny_hf` builds a tiny random
model of one of them from its config class; :func:`tiny_open_clip` builds an open_clip
architecture with small widths (timm trunks included). Nothing is downloaded.

Examples
--------
>>> from groundroll.adapters.conformance import tiny_hf, check  # doctest: +SKIP
>>> model, inputs = tiny_hf("plbart")                          # doctest: +SKIP
>>> check(model, inputs).status                                # doctest: +SKIP
'captured'
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import re
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from ..families import UnsupportedModelError, adapter_for, refusal
from ..families._hf import fixed_sdpa_attention
from ..families.derive import NOT_GLOBAL, REFUSALS, declared_attention
from .capture import _linear_part, _relative, capture

__all__ = ["Result", "check", "check_hf", "check_open_clip", "hf_model_types",
           "hf_modality", "tiny_hf", "tiny_config", "tiny_open_clip", "STATUSES", "ATOL",
           "MODALITIES", "LEVELS"]

#: Tolerance for weights and outputs.
ATOL = 1e-5
#: Outputs under capture run in eager attention; the plain run may use SDPA.
OUTPUT_ATOL = 1e-4

#: ``captured``: every reported attention tensor found, outputs unchanged, cleanup done.
#: ``refused``: a clear error says why rollout does not apply. ``failing``: anything
#: else that went wrong in groundroll. ``not_built``: the tiny model could not be built
#: or run without groundroll (not counted against coverage).
STATUSES = ("captured", "refused", "failing", "not_built")

_SIZES = dict(
    hidden_size=32, d_model=32, dim=32, n_embd=32, embed_dim=32, width=32,
    num_hidden_layers=2, num_layers=2, n_layers=2, n_layer=2, encoder_layers=2,
    decoder_layers=2, depth=2, num_decoder_layers=2, num_encoder_layers=2,
    num_attention_heads=4, n_heads=4, n_head=4, num_heads=4, encoder_attention_heads=4,
    decoder_attention_heads=4, num_key_value_heads=4, head_dim=8, d_kv=8,
    attention_head_size=8,
    intermediate_size=37, encoder_ffn_dim=37, decoder_ffn_dim=37, hidden_dim=37, d_ff=37,
    ffn_dim=37, n_inner=37, decoder_hidden_size=32, encoder_hidden_size=32,
    out_hidden_size=32, vocab_size=64, decoder_vocab_size=64, max_position_embeddings=64,
    n_positions=64, max_source_positions=64, max_target_positions=64, embedding_size=32,
    projection_dim=32,
    image_size=32, patch_size=8, num_channels=3,
    # partial rotary and low-rank attention (GPT-J, CodeGen, DeepSeek-V3) inside head_dim
    rotary_dim=4, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8, kv_lora_rank=16,
    q_lora_rank=16, attention_head_dim=8,
    # state-space heads of hybrids: mamba_n_heads * mamba_d_head == 2 * hidden_size
    mamba_n_heads=8, mamba_d_head=8, mamba_d_ssm=64,
    # widths another part must match (Inkling2's projector, Dots3's adapter, a quantizer,
    # SAM 3's feature pyramid, Kimi K2.5's projector norm, Dots3's adapter output)
    text_hidden_size=32, adapter_in_dim=32, adapter_input_size=32, codebook_dim=32,
    fpn_hidden_size=32, projection_hidden_size=32, adapter_out_dim=32,
)

#: Structure, not widths: set at every level but the last (it keeps all but layers).
#: Object queries within the anchors of a 32 x 32 image (RT-DETR's top-k), 2 video
#: frames, 4 image embeddings inside the text (Kosmos-2), image tokens pooled from a
#: 4 x 4 patch grid (Gemma 3), one 32 x 32 tile for LLaVA-NeXT's any-resolution images,
#: layer periods under which 2 layers still hold an attention layer (Jamba), and no
#: layers sharing another's cache (Gemma 3n).
_STRUCTURE = dict(image_grid_pinpoints=[[32, 32]], num_queries=8, num_frames=2,
                  latent_query_num=4,
                  mm_tokens_per_image=4, attn_layer_period=2, attn_layer_offset=1,
                  expert_layer_period=2, expert_layer_offset=1, num_kv_shared_layers=0)

#: Widths the config leaves unset (None) and its model reads as numbers (HunYuan's and
#: Ministral's ``head_dim``, Nemotron's ``num_key_value_heads``, ESM's ``vocab_size``).
_UNSET = ("head_dim", "num_key_value_heads", "vocab_size")

#: Keys whose presence says the model routes to experts: grouped expert matmuls need
#: 16-byte aligned rows, so their feed-forward widths are :data:`_EXPERT_WIDTH`.
_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
_EXPERT_WIDTH = 48
_EXPERT_COUNTS = dict(num_experts=4, num_local_experts=4, n_routed_experts=4,
                      moe_num_experts=4, n_group=1, num_expert_group=1, topk_group=1)
#: Experts each token is routed to: at most this many (ZAYA allows only one).
_PER_TOKEN_KEYS = ("num_experts_per_tok", "num_experts_per_token", "moe_k", "top_k_experts")
_PER_TOKEN = 2

#: What no general rule derives, by ``model_type``: the repeating block pattern of
#: RecurrentGemma (its own length, not the layer count's), and where the attention layers
#: of hybrids that default to state-space layers only go.
_TYPE_SIZES = {
    "recurrent_gemma": dict(block_types=["recurrent", "attention"]),
    # hybrids whose default is all state-space layers: one attention layer of two
    "bamba": dict(attn_layer_indices=[1]),
    "granitemoehybrid": dict(layer_types=["mamba", "attention"]),
    "lfm2_moe": dict(layer_types=["conv", "full_attention"]),
    # state-space heads: num_heads * head_dim == expand * hidden_size
    "mamba2": dict(num_heads=8),
    # vision adapters after a 2 x 2 pixel shuffle (width 4 * 32) into the text width
    "llama4_vision_model": dict(intermediate_size=128, projector_input_dim=32,
                                projector_output_dim=32, vision_output_dim=32),
    **{t: dict(out_hidden_size=128, projector_hidden_size=32)
       for t in ("muse_glimmer", "muse_spark")},
    # Perceiver's latent array and its self-attention layers per block
    "perceiver": dict(d_latents=32, num_latents=8, num_self_attends_per_block=2),
    # a dense and a routed feed-forward layer, which the default leaves unset
    "deepseek_ocr2_text": dict(mlp_layer_types=["dense", "sparse"]),
    # Zamba ties its shared attention block across hybrid layers: two of them
    "zamba": dict(num_hidden_layers=4, layers_block_type=["mamba", "hybrid"] * 2),
    # keys and values rounded to NVFP4 in blocks of 16; its indexer scores keys with
    # the query heads of key head 0
    "kolibri1_1": dict(head_dim=16, num_key_value_heads=1, index_num_heads=2),
    # nn.MultiheadAttention with hidden_size // 64 heads: 2 heads
    "bridgetower_vision_model": dict(hidden_size=128),
    # its query-selected sparse attention indexer, which the default leaves unset
    "qwen4_exp_text": dict(indexer_n_heads=4, indexer_kv_heads=1, indexer_head_dim=8,
                           indexer_budget=4, indexer_compress_ratio=2),
}


#: timm ViT towers behind ``TimmWrapperConfig``: what ``timm.create_model`` makes small.
_TIMM_VIT = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=4)


# Special ids inside the small vocabulary.
_IDS = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
            sep_token_id=2, cls_token_id=0, mask_token_id=3,
            # placeholders of image positions in one causal sequence (LLaVA, PaliGemma)
            image_token_id=63, image_token_index=63, video_token_id=62,
            video_token_index=62)
#: Placeholder ids set also where the config leaves them unset (BLIP-2).
_PLACEHOLDERS = ("image_token_id", "image_token_index")
_VIDEO = ("video_token_id", "video_token_index")


@dataclass
class Result:
    """Outcome of one model's check."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0
    streams: tuple[str, ...] = ()
    reported: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- models

def hf_model_types() -> dict[str, str]:
    """``config.model_type -> base model class name`` from transformers' auto mapping."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    out = {}
    for model_type, names in MODEL_MAPPING_NAMES.items():
        out[model_type] = names[0] if isinstance(names, (tuple, list)) else names
    return dict(sorted(out.items()))


_LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layers", "n_layer", "encoder_layers",
               "decoder_layers", "depth", "num_decoder_layers", "num_encoder_layers")

#: How far each level of :func:`tiny_config` shrinks: 0 everything in ``_SIZES``, in every
#: sub-config; 1 the same, with sub-configs typed ``AutoConfig`` left as the class
#: defaults them; 2 layers, vocabulary and images only (widths and heads as the class
#: defaults them, so every width/head rule of the config's own validation holds); 3
#: layers only.
LEVELS = 4
_LEVEL_KEYS = (None, None, set(_LAYER_KEYS) | {"vocab_size", "decoder_vocab_size",
                                               "image_size", "patch_size", "num_channels"},
               set(_LAYER_KEYS))


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: What :func:`hf_modality` returns.
MODALITIES = ("text_vision_multimodal", "audio_time_series")


def hf_modality(model_type: str) -> str:
    """``"audio_time_series"`` for a model type in one of transformers' audio, speech or
    time-series auto mappings, taking ``input_values`` / ``past_values`` /
    ``input_features`` / ``audio_mel``, an audio codec (its config has a
    ``sampling_rate`` or a ``codebook_size``), a speech recognition head (a CTC
    ``blank_token_id``) or a speech language model (an audio or speech sub-config and no
    vision or video one); else ``"text_vision_multimodal"``.

    Examples
    --------
    >>> hf_modality("wav2vec2"), hf_modality("bert")               # doctest: +SKIP
    ('audio_time_series', 'text_vision_multimodal')
    """
    from transformers.models.auto import modeling_auto

    for name in dir(modeling_auto):
        if name.endswith("MAPPING_NAMES") and any(
                w in name for w in ("AUDIO", "SPEECH", "CTC", "TIME_SERIES", "WAVEFORM",
                                    "SPECTROGRAM")):
            if model_type in getattr(modeling_auto, name):
                return MODALITIES[1]
    import transformers

    try:
        cls = getattr(transformers, hf_model_types().get(model_type, ""), None)
        main = getattr(cls, "main_input_name", None)
    except ImportError:   # a class that needs a package not installed (torchaudio)
        main = None
    if main in ("input_values", "past_values", "input_features", "audio_mel"):
        return MODALITIES[1]
    try:
        keys = transformers.CONFIG_MAPPING[model_type]().to_dict()
    except Exception:   # a config that does not build at its defaults
        return MODALITIES[0]
    towers = [k for k in keys if k.endswith("_config")]
    speech = any("audio" in k or "speech" in k for k in towers)
    seeing = any("vision" in k or "video" in k for k in towers)   # audio-visual: not audio
    if "sampling_rate" in keys or "codebook_size" in keys or "blank_token_id" in keys or (
            speech and not seeing):
        return MODALITIES[1]
    return MODALITIES[0]


def _shrink(config_cls, seen=(), level: int = 0) -> dict:
    default = config_cls()
    values = default.to_dict()
    allowed = _LEVEL_KEYS[level]
    # a width the class leaves at 0 is switched off (GLM-5's rotary part of the DSA
    # heads): it stays so
    kwargs = {k: v for k, v in _SIZES.items() if k in values and _int(values[k])
              and values[k] != 0 and (allowed is None or k in allowed)}
    size = values.get("image_size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(_int(v) for v in size) \
            and (allowed is None or "image_size" in allowed):
        # [height, width] images (MGP-STR's text lines, SegGPT's stacked pairs): the
        # shorter side 32, the aspect kept
        kwargs["image_size"] = [_SIZES["image_size"] * v // min(size) for v in size]
    if "hidden_dim" in kwargs and "dim_feedforward" in values:
        # a config naming its feed-forward width apart (Mask2Former, OneFormer): its
        # hidden_dim is the model width, which the heads divide
        kwargs["hidden_dim"] = _SIZES["hidden_size"]
    if level < 3:
        # a video-only model's placeholder (InstructBLIP-Video) is set like an image one
        unset = _PLACEHOLDERS if any(k in values for k in _PLACEHOLDERS) else _VIDEO
        for key, value in {**_IDS, **_STRUCTURE}.items():
            if _int(values.get(key)) or isinstance(values.get(key), list) or (
                    key in unset and key in values and values[key] is None):
                kwargs[key] = value
    if level < 2:
        kwargs.update({k: _SIZES[k] for k in _UNSET if k in values and values[k] is None})
        if "sliding_window" in values and values["sliding_window"] is None:
            # a window the model builds its masks from all the same (Step3p7), as long
            # as the positions: no row is cut
            kwargs["sliding_window"] = _SIZES["max_position_embeddings"]
        if "vocab_size" in values and values["vocab_size"] is None:
            # no vocabulary, no special ids either (ESM): those of the small vocabulary
            kwargs.update({k: v for k, v in _IDS.items() if k in values and values[k] is None})
        kwargs.update(_experts(values))
        if "qk_rope_head_dim" in kwargs and "head_dim" in values:
            kwargs["head_dim"] = kwargs["qk_rope_head_dim"]   # DeepSeek-V3's rotary width
    # Per-layer lists (layer_types, attention pattern, window sizes, ...) follow the
    # layer count: a list as long as a layer count it had is cut to the new one.
    counts = {values[k]: kwargs[k] for k in _LAYER_KEYS if k in kwargs and _int(values[k])}
    for key, value in values.items():
        if isinstance(value, list) and value and len(value) in counts and key not in kwargs:
            kwargs[key] = _cut(value, counts[len(value)])
    rope = values.get("rope_parameters")
    if rope == {} and isinstance(values.get("layer_types"), list) and values["layer_types"]:
        # RoPE per layer type that the config leaves empty (Cohere Compass): the
        # default rotary embedding for each type its layers have
        rope = kwargs["rope_parameters"] = {
            kind: {"rope_type": "default", "rope_theta": 10000.0}
            for kind in dict.fromkeys(values["layer_types"])}
    if "mrope_section" in (getattr(config_cls, "ignore_keys_at_rope_validation", None) or ()) \
            and isinstance(rope, dict) and level < 2:
        # Multimodal RoPE (Qwen2-VL, GLM-4V): its sections split head_dim / 2, in each
        # layer type's parameters where RoPE is set per type
        per_type = bool(rope) and all(isinstance(v, dict) for v in rope.values())
        kwargs["rope_parameters"] = (
            {kind: _mrope(kwargs, values, p) for kind, p in rope.items()} if per_type
            else _mrope(kwargs, values, rope))
    for key, value in values.items():
        if "feature_layer" in key and key not in kwargs and value is not None:
            # layers read as image features (VipLlava, Molmo2) among the 2 there are
            kwargs[key] = _within_layers(value)
    layers = next((kwargs[k] for k in _LAYER_KEYS if _int(kwargs.get(k))), None)
    for key, value in values.items():
        if "global_attn_ind" in key and isinstance(value, list) and value and layers and (
                key not in kwargs and min(value) >= layers):
            # ViTDet's global layers (SAM's encoder), all past the layers there are: the
            # last one is global, as a model reading its output expects (DeepSeek-VL)
            kwargs[key] = [layers - 1]
        elif key.endswith(("hook_ids", "layers_indices")) and isinstance(value, list) and (
                key not in kwargs):
            # layers whose output a head reads (Depth Pro's towers, Mllama's vision
            # encoder): those past the layers there are read at the last one
            last = (layers or _SIZES["num_hidden_layers"]) - 1
            kwargs[key] = [min(i, last) for i in value]
    if _int(values.get("vision_output_dim")) and isinstance(
            values.get("intermediate_layers_indices"), list):
        # Mllama: the last layer's output and each intermediate one's, side by side
        kwargs["vision_output_dim"] = kwargs.get("hidden_size", values["hidden_size"]) * (
            1 + len(values["intermediate_layers_indices"]))
    if isinstance(values.get("projector_patch_to_query_dict"), dict):
        # image queries per patch count (Aria): 4 for the 4 x 4 patches of a tiny image
        kwargs["projector_patch_to_query_dict"] = {
            (_SIZES["image_size"] // _SIZES["patch_size"]) ** 2: 4}
    kwargs.update({k: v for k, v in _TYPE_SIZES.get(getattr(config_cls, "model_type", ""),
                                                    {}).items() if k in values})
    for key, sub_cls in (getattr(config_cls, "sub_configs", None) or {}).items():
        instance = getattr(default, key, None)
        # Backbones stay as the config sets them up (DETR's timm/ResNet switches), but
        # for transformer backbones (SAM 3's ViT), shrunk like any sub-config.
        if level == 0 and (key != "backbone_config" or _int(getattr(
                instance, "num_attention_heads", None))) and hasattr(instance, "to_dict") and (
                hasattr(instance, "model_type")):
            # AutoConfig sub-configs (LLaVA's text_config): the default's own class
            sub_cls = type(instance)
        if getattr(instance, "model_type", None) == "timm_wrapper" and str(getattr(
                instance, "architecture", "")).startswith("vit") and level < 2:
            # a timm ViT tower (Perception Encoder's): built small by timm from its
            # model_args
            kwargs[key] = {**instance.to_dict(),
                           "model_args": {**(instance.model_args or {}), **_TIMM_VIT}}
            continue
        if isinstance(sub_cls, type) and sub_cls not in seen and key in values:
            try:
                kwargs[key] = _shrink(sub_cls, seen + (config_cls,), level)
            except Exception:   # keep the default sub-config
                continue
            if sub_cls is not declared_class(config_cls, key):
                # Keep the switches the default set on it (EncoderDecoder's decoder:
                # is_decoder, add_cross_attention), sizes shrunk.
                own = {k: v for k, v in instance.to_dict().items()
                       if isinstance(v, bool) and not k.startswith("_")}
                kwargs[key] = {**own, **kwargs[key],
                               "model_type": getattr(sub_cls, "model_type", None)
                               or instance.model_type}
    return kwargs


def _mrope(kwargs: dict, values: dict, rope: dict) -> dict:
    """``rope`` with multimodal RoPE sections (temporal, rows, cols) that split the
    rotary half of the shrunk ``head_dim``."""
    rotary = kwargs.get("head_dim", _SIZES["head_dim"]) * rope.get(
        "partial_rotary_factor", values.get("partial_rotary_factor") or 1)
    half = int(rotary) // 2
    return {**rope, "mrope_section": [half - 2 * (half // 3)] + [half // 3] * 2}


def _cut(values: list, count: int) -> list:
    """The first ``count`` entries of a per-layer list, with every kind of layer the
    list names kept: a hybrid's only ``full_attention`` layer (Qwen3-Next, Zamba, NeoMMe)
    replaces the last entries rather than being cut off.

    >>> _cut(["linear", "linear", "linear", "full"], 2)
    ['linear', 'full']
    """
    head = list(values[:count])
    if not all(isinstance(v, str) for v in values):
        return head
    missing = [v for v in dict.fromkeys(values) if v not in head]
    if missing and len(missing) < count:
        head = head[: count - len(missing)] + missing
    return head


def _within_layers(index, layers: int = 2):
    """A layer index (or a list of them) that exists among ``layers`` layers: indices
    past them become the last layer."""
    if isinstance(index, (list, tuple)):
        return [_within_layers(i, layers) for i in index]
    return index if not _int(index) or -layers <= index < layers else -1


def _experts(values: dict) -> dict:
    """Fewer experts, and feed-forward widths grouped expert matmuls accept, for a
    config that routes to experts; ``{}`` for others. Expert counts and widths a
    config leaves unset (None) are set too: models that build their experts whatever
    the config says (dots.llm1, DiffusionGemma) read them as numbers."""
    if not any(k in values and (values[k] is None or _int(values[k])) for k in _EXPERT_KEYS):
        return {}
    widths = {k: _EXPERT_WIDTH for k, v in values.items()
              if k.endswith("intermediate_size") and (_int(v) or v is None)}
    # DeepSeek-V2 leaves num_experts_per_tok unset (None) and routes with it
    per_token = {k: min(values[k] or _PER_TOKEN, _PER_TOKEN) for k in _PER_TOKEN_KEYS
                 if k in values}
    shared = {k: 1 for k in ("n_shared_experts",) if k in values and values[k] is None}
    return {**widths, **{k: v for k, v in _EXPERT_COUNTS.items() if k in values},
            **per_token, **shared}


def declared_class(config_cls, key: str):
    """The sub-config class ``config_cls.sub_configs`` declares for ``key``."""
    return (getattr(config_cls, "sub_configs", None) or {}).get(key)


def tiny_config(model_type: str, *, level: int = 0):
    """A small config of ``model_type``.

    Parameters
    ----------
    model_type : str
    level : int
        0: 2 layers, width 32, 4 heads, 32 x 32 images, in every sub-config; 1: the
        same with ``AutoConfig`` sub-configs at their defaults; 2: 2 layers, vocabulary
        64 and 32 x 32 images with the class's own widths and heads (for configs whose
        validation ties widths, heads and sub-configs together); 3: 2 layers only
        (see :data:`LEVELS`).
    """
    from transformers import CONFIG_MAPPING

    config_cls = CONFIG_MAPPING[model_type]
    return config_cls(**_shrink(config_cls, level=level))


def _size(config, name, default=None):
    for cfg in (config, getattr(config, "vision_config", None), getattr(config, "text_config", None)):
        value = getattr(cfg, name, None)
        if value is not None:
            return value
    return default


def _image_placeholders(model, pixels, batch: int, **image) -> tuple[int, int] | None:
    """``(placeholder id, features per image)`` for a model that puts image features
    at placeholder positions of its text (``config.image_token_id``), else None.
    ``image``: further keyword arguments of ``get_image_features`` (the patch grid)."""
    config = model.config
    token = next((getattr(config, k) for k in ("image_token_id", "image_token_index")
                  if isinstance(getattr(config, k, None), int)), None)
    if token is None or not hasattr(model, "get_image_features"):
        return None
    try:
        with torch.no_grad():
            features = model.get_image_features(pixel_values=pixels, **image)
    except Exception:
        return None
    if not isinstance(features, torch.Tensor):
        features = getattr(features, "pooler_output", None)
        if features is None:
            return None
    if isinstance(features, (tuple, list)):
        features = torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
    return token, features.reshape(-1, features.shape[-1]).shape[0] // batch


def _with_placeholders(model, inputs: dict, params, batch: int, pixels, image: dict) -> dict:
    """``inputs`` with image positions inside the text, one placeholder per image
    feature in front of each row (for a model that has them, see
    :func:`_image_placeholders`)."""
    placeholders = _image_placeholders(model, pixels, batch, **image)
    if placeholders is None:
        return inputs
    token, n = placeholders
    ids = torch.cat([torch.full((batch, n), token), inputs["input_ids"]], 1)
    mask = torch.cat([torch.ones(batch, n, dtype=torch.long), inputs["attention_mask"]], 1)
    inputs = {**inputs, "input_ids": ids, "attention_mask": mask}
    if "mm_token_type_ids" in params:   # M-RoPE positions: 1 marks image tokens
        inputs["mm_token_type_ids"] = (ids == token).long()
    return inputs


def _patch_grid(config, batch: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(patches, grid)`` for vision towers fed flattened patches with their
    ``[time, rows, cols]`` grid (Qwen2-VL, GLM-4V and their kin): ``patches`` is
    ``[batch * rows * cols, channels * temporal_patch * patch * patch]``, ``grid`` is
    ``[batch, 3]``, with rows and cols a multiple of the spatial merge. Towers that
    merge with a ``merge_kernel_size`` (Kimi K2.5) take each patch as a small image,
    ``[patches, channels, patch, patch]``."""
    vision = getattr(config, "vision_config", None) or config
    patch = getattr(vision, "patch_size", 8) or 8
    temporal = (getattr(vision, "temporal_patch_size", None)
                or getattr(vision, "patch_temporal", None) or 1)
    channels = next((v for v in (getattr(vision, k, None) for k in (
        "in_channels", "num_channels", "in_chans")) if _int(v)), 3)
    kernel = getattr(vision, "merge_kernel_size", None)
    merge = getattr(vision, "spatial_merge_size", None) or getattr(vision, "merge_size", 1)
    merge = kernel[0] if isinstance(kernel, (list, tuple)) else merge
    side = 2 * (merge if _int(merge) else 1)
    shape = ((channels, patch, patch) if kernel is not None
             else (channels * temporal * patch * patch,))
    patches = torch.randn(batch * side * side, *shape, generator=generator)
    return patches, torch.tensor([[1, side, side]] * batch)


def tiny_inputs(model, *, batch: int = 2, length: int = 9) -> dict | None:
    """Inputs for ``model`` (text ids with a padded row, images, or both), or None when
    its main input is of another kind (audio features, ...)."""
    config = model.config
    generator = torch.Generator().manual_seed(1)
    vocab = _size(config, "vocab_size", 64) or 64
    ids = torch.randint(3, max(4, min(vocab, 64) - 1), (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1:, length - 2:] = 0
    image = _size(config, "image_size", 32)
    height, width = (image, image) if isinstance(image, int) else map(int, image)
    main = getattr(model, "main_input_name", "input_ids")
    if isinstance(main, (list, tuple)):   # OneFormer: the image, then the task text
        main = main[0]
    inputs: dict[str, Any] = {}
    params = inspect.signature(model.forward).parameters
    if "prompt_pixel_values" in params:   # SegGPT: prompt and image, stacked, fill it
        height //= 2
    pixels = torch.randn(batch, _size(config, "num_channels", 3) or 3, height, width,
                         generator=generator)
    if main not in params:
        # a main input the forward does not take (the Q-Former's inherited input_ids):
        # its first parameter is the main input (the Q-Former's learned queries)
        main = next(iter(params))
    frames = _size(config, "num_frames")
    if _int(frames) or "pixel_attention_mask" in params and "spatial_shapes" not in params:
        # Videos (VideoMAE, ViViT, X-CLIP) and image lists (Idefics2/3, SmolVLM):
        # [batch, frames or images, channel, height, width]
        pixels = pixels[:, None].repeat(1, frames if _int(frames) else 1, 1, 1, 1)
    keys = config.to_dict()
    if pixels.dim() == 4 and any(k in keys for k in _VIDEO) \
            and not any(k in keys for k in _PLACEHOLDERS):
        # a video-only model (InstructBLIP-Video): its pixels are clips of 2 frames
        pixels = _video(pixels)
    if "image_attention_mask" in params:
        # IDEFICS: one image per text, [batch, images, channel, height, width], and
        # which images each text position sees (all)
        pixels = pixels[:, None]
    if getattr(config, "image_grid_pinpoints", None):
        # any-resolution images (LLaVA-NeXT): the whole image and its one 32 x 32 tile
        pixels = pixels[:, None].repeat(1, 2, 1, 1, 1)
    image: dict[str, Any] = {}
    if "aspect_ratio_ids" in params:
        # Mllama: one image in one tile of its max_num_tiles, the rest padding;
        # [batch, images, tiles, channel, height, width]
        tiles = _size(config, "max_num_tiles", 1)
        pixels = pixels[:, None, None].repeat(1, 1, tiles, 1, 1, 1)
        image["aspect_ratio_ids"] = torch.ones(batch, 1, dtype=torch.long)   # 1 x 1
        image["aspect_ratio_mask"] = torch.zeros(batch, 1, tiles, dtype=torch.long)
        image["aspect_ratio_mask"][..., 0] = 1
        image["cross_attention_mask"] = image["aspect_ratio_mask"][:, None].repeat(
            1, length, 1, 1)
    if _requires(getattr(model, "get_image_features", None), "image_sizes"):
        # LLaVA-NeXT, Mistral 3: each image's height and width
        image["image_sizes"] = torch.tensor([list(pixels.shape[-2:])] * batch)
    if "grid_thw" in params or "image_grid_thw" in params:
        pixels, grid = _patch_grid(config, batch, generator)
        if "image_grid_thw" in params:
            image = dict(image_grid_thw=grid)
        else:   # a vision tower: patches as its first input, the grid beside them
            tower = {next(iter(params)): pixels, "grid_thw": grid}
            return {**tower, **_by_name(params, tower, main, dict(
                ids=ids, mask=mask, pixels=pixels, image={}, config=config,
                generator=generator))}
    positioned = next((k for k in ("pixel_position_ids", "image_position_ids")
                       if k in params), None)
    if positioned:
        # Gemma 4's tower: patches with their (x, y) positions in the image
        pixels, image[positioned] = _positioned_patches(config, batch, generator)
    if "target_sizes" in params:
        # NaViT towers (MiniCPM-V): every image's patches side by side in one row of
        # patches, [1, channel, patch, patch * patches], and each image's grid
        pixels, image["target_sizes"] = _packed_patches(config, batch, generator)
    for name in ("image_merge_sizes", "high_res_pixel_values"):
        # what get_image_features needs beside the pixels (VideoLLaMA 3, DeepSeek-VL)
        if _requires(getattr(model, "get_image_features", None), name):
            image[name] = _INPUTS[name](pixels=pixels, image=image, config=config,
                                        generator=generator)
    if pixels.dim() == 5 and _requires(getattr(model, "get_image_features", None),
                                       "pixel_attention_mask"):
        # which tiles are real, required (Granite Docling): all, [batch, tiles]
        image["pixel_attention_mask"] = torch.ones(pixels.shape[:2], dtype=torch.bool)
    if "spatial_shapes" in params:
        # NaFlex towers (SigLIP2): flattened patches with their grid and mask.
        patch = _size(config, "patch_size", 8)
        rows = cols = 4
        pixels = torch.randn(batch, rows * cols, 3 * patch * patch, generator=generator)
        extra = dict(pixel_values=pixels,
                     pixel_attention_mask=torch.ones(batch, rows * cols, dtype=torch.long),
                     spatial_shapes=torch.tensor([[rows, cols]] * batch))
        if "input_ids" in params:
            inputs = dict(input_ids=ids, attention_mask=mask, **extra)
            return _with_placeholders(model, inputs, params, batch, pixels, dict(
                spatial_shapes=extra["spatial_shapes"],
                pixel_attention_mask=extra["pixel_attention_mask"]))
        return extra
    if main == "input_features":
        mels = _size(config, "num_mel_bins", 80)
        frames = 2 * (_size(config, "max_source_positions", 32) or 32)
        inputs = dict(input_features=torch.randn(batch, mels, frames, generator=generator))
        if getattr(config, "is_encoder_decoder", False):
            inputs["decoder_input_ids"] = ids[:, :5]
        return inputs
    if getattr(config, "text_config", None) is not None and getattr(
            config, "vision_config", None) is not None and "pixel_values" in params:
        inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, **image)
        inputs = _with_placeholders(model, inputs, params, batch, pixels, image)
    elif main == "input_ids":
        inputs = dict(input_ids=ids, attention_mask=mask)
        if "pixel_values" in params and _size(config, "image_size") is not None and not any(
                k in config.to_dict() for k in _PLACEHOLDERS):
            # text and image in one model without a vision sub-config, the image not
            # placed inside the text (ViLT; Fuyu's patches at placeholders are not pixels)
            inputs["pixel_values"] = pixels
    elif main == "pixel_values":
        inputs = dict(pixel_values=pixels)
    parts = dict(ids=inputs.get("input_ids", ids), mask=inputs.get("attention_mask", mask),
                 pixels=pixels, image=image, config=config, generator=generator)
    inputs.update(_by_name(params, inputs, main, parts))
    if main not in inputs:
        return None
    if getattr(config, "is_encoder_decoder", False) and "input_ids" in inputs:
        inputs["decoder_input_ids"] = ids[:, :5]
    return inputs


def _by_name(params, inputs: dict, main: str, parts: dict) -> dict:
    """Inputs the forward requires (or needs, though optional: LayoutLM-style boxes,
    LLaVA-NeXT image sizes) beside those in ``inputs``, generated by name from
    ``parts`` (see :data:`_INPUTS`; a maker returning None leaves its input out)."""
    made = {name: _INPUTS[name](**parts) for name, param in params.items()
            if name not in inputs and name in _INPUTS and (
                param.default is inspect.Parameter.empty or name in _NEEDED
                or name == main)}
    return {name: value for name, value in made.items() if value is not None}


def _requires(function, name: str) -> bool:
    """Whether ``function`` has a parameter ``name`` without a default."""
    if function is None:
        return False
    param = inspect.signature(function).parameters.get(name)
    return param is not None and param.default is inspect.Parameter.empty


def _boxes(ids, generator, **_) -> torch.Tensor:
    """``[batch, length, 4]`` word boxes ``x0 <= x1``, ``y0 <= y1`` on LayoutLM's 0-1000
    page scale."""
    corners = torch.randint(0, 500, (*ids.shape, 2), generator=generator)
    return torch.cat([corners, corners + 100], -1)


def _video(pixels, **_) -> torch.Tensor:
    """``[batch, frames, channel, height, width]`` with 2 frames."""
    return pixels if pixels.dim() == 5 else pixels[:, None].repeat(1, 2, 1, 1, 1)


def _visual_features(ids, config, generator, **_) -> torch.Tensor:
    """LXMERT's region features: ``[batch, 4, visual_feat_dim]``."""
    return torch.randn(ids.shape[0], 4, config.visual_feat_dim, generator=generator)


def _query_embeds(ids, config, generator, **_) -> torch.Tensor:
    """A Q-Former's learned queries, as its caller passes them: ``[batch, 4, hidden]``."""
    return torch.randn(ids.shape[0], 4, config.hidden_size, generator=generator)


def _encoder_states(ids, config, generator, **_) -> torch.Tensor | None:
    """What a Q-Former's cross-attention reads (image features): ``[batch, 6,
    encoder_hidden_size]``; None for a config without an ``encoder_hidden_size``."""
    width = getattr(config, "encoder_hidden_size", None)
    if not _int(width):
        return None
    return torch.randn(ids.shape[0], 6, width, generator=generator)


def _positioned_patches(config, batch: int, generator):
    """``(patches, positions)`` for towers fed patches with their ``(x, y)`` positions
    (Gemma 4): ``[batch, side * side, channels * patch * patch]`` and ``[batch, side *
    side, 2]``, ``side`` twice the pooling kernel so the pooled grid is 2 x 2."""
    patch = _size(config, "patch_size", 8)
    channels = _size(config, "num_channels", 3) or 3
    side = 2 * (_size(config, "pooling_kernel_size", 1) or 1)
    pixels = torch.randn(batch, side * side, channels * patch * patch, generator=generator)
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    positions = torch.stack([cols.flatten(), rows.flatten()], -1)
    return pixels, positions[None].repeat(batch, 1, 1)


def _packed_patches(config, batch: int, generator, side: int = 4):
    """``(pixels, sizes)`` for NaViT towers that take the patches of all images packed
    in one row (MiniCPM-V): ``pixels`` is ``[1, channel, patch, patch * batch * side *
    side]``, ``sizes`` ``[batch, 2]``, each image ``side x side`` patches."""
    patch = _size(config, "patch_size", 8)
    channels = _size(config, "num_channels", 3) or 3
    pixels = torch.randn(1, channels, patch, patch * batch * side * side,
                         generator=generator)
    return pixels, torch.tensor([[side, side]] * batch)


def _trajectory(ids, config, generator, **_) -> dict[str, torch.Tensor]:
    """A Decision Transformer's trajectory: ``states`` ``[batch, steps, state_dim]``,
    ``actions`` ``[batch, steps, act_dim]``, ``returns_to_go`` ``[batch, steps, 1]``,
    ``timesteps`` ``[batch, steps]``."""
    batch, steps = ids.shape
    return dict(states=torch.randn(batch, steps, config.state_dim, generator=generator),
                actions=torch.randn(batch, steps, config.act_dim, generator=generator),
                returns_to_go=torch.randn(batch, steps, 1, generator=generator),
                timesteps=torch.arange(steps).repeat(batch, 1))


def _embeddings(ids, config, generator, **_) -> torch.Tensor:
    """Embedded inputs of a model without an embedding layer of its own (Perceiver
    without a preprocessor): ``[batch, length, d_model]``."""
    return torch.randn(*ids.shape, config.d_model, generator=generator)


def _denoiser_inputs(ids, config, generator, **_) -> dict[str, torch.Tensor]:
    """A block-diffusion drafter's inputs (Muse Glimmer's assistant): one block of noise
    embeddings ``[batch, block_size, hidden]`` and the target model's states of the
    tokens before it, ``[batch, length, hidden * len(target_layer_ids)]``."""
    batch, length = ids.shape
    width = config.hidden_size
    return dict(noise_embeds=torch.randn(batch, config.block_size, width, generator=generator),
                context_hidden_states=torch.randn(
                    batch, length, width * len(config.target_layer_ids), generator=generator))


def _image_embeds_positions(ids, config, **_) -> torch.Tensor:
    """Where Kosmos-2 puts its image embeddings in the text: ``[batch, length]``, 1 at
    the ``latent_query_num`` positions after the first token."""
    mask = torch.zeros(ids.shape, dtype=torch.long)
    mask[:, 1:1 + config.latent_query_num] = 1
    return mask


def _one_of(maker, name: str):
    """The maker of input ``name`` from ``maker``, which makes several together."""
    return lambda **parts: maker(**parts)[name]


def _task_inputs(ids, config, generator, **_) -> torch.Tensor:
    """OneFormer's tokenized task prompt, ``[batch, config.task_seq_len]`` ids."""
    return torch.randint(3, 60, (ids.shape[0], config.task_seq_len), generator=generator)


def _merge_sizes(image, config, **_) -> torch.Tensor:
    """Each image's spatial merge (VideoLLaMA 3): ``[images]``, the vision config's."""
    vision = getattr(config, "vision_config", None) or config
    merge = getattr(vision, "spatial_merge_size", None) or getattr(vision, "merge_size", 1)
    grid = image.get("image_grid_thw")
    return torch.full((2 if grid is None else len(grid),), merge, dtype=torch.long)


def _high_res_pixels(pixels, config, generator, **_) -> torch.Tensor:
    """The same images at the high-resolution tower's own size (DeepSeek-VL hybrid):
    ``[batch, channel, size, size]``."""
    size = config.high_res_vision_config.image_size
    return torch.randn(pixels.shape[0], pixels.shape[1], size, size, generator=generator)


#: Inputs made by name: ``name -> maker(ids=, mask=, pixels=, image=, config=,
#: generator=)``.
_INPUTS = {
    "input_ids": lambda ids, **_: ids,
    "attention_mask": lambda mask, **_: mask,
    "pixel_values": lambda pixels, **_: pixels,
    "pixel_values_videos": _video,
    "qformer_input_ids": lambda ids, **_: ids,
    "qformer_attention_mask": lambda mask, **_: mask,
    "bbox": _boxes,
    "image_sizes": lambda ids, pixels, **_: torch.tensor([list(pixels.shape[-2:])]
                                                         * ids.shape[0]),
    "visual_feats": _visual_features,
    "visual_pos": lambda ids, generator, **_: torch.rand(ids.shape[0], 4, 4,
                                                         generator=generator),
    "prompt_pixel_values": lambda pixels, **_: pixels,
    "prompt_masks": lambda pixels, **_: pixels,
    "query_embeds": _query_embeds,
    "image_embeds_position_mask": _image_embeds_positions,
    "inputs": _embeddings,
    **{name: _one_of(_trajectory, name)
       for name in ("states", "actions", "returns_to_go", "timesteps")},
    **{name: _one_of(_denoiser_inputs, name)
       for name in ("noise_embeds", "context_hidden_states")},
    "target_sizes": lambda image, **_: image.get("target_sizes"),
    "pixel_position_ids": lambda image, **_: image.get("pixel_position_ids"),
    "image_attention_mask": lambda ids, pixels, **_: torch.ones(*ids.shape, pixels.shape[1],
                                                                dtype=torch.long),
    "task_inputs": _task_inputs,
    "encoder_hidden_states": _encoder_states,
    # X-MOD's language adapters: every row in the first language of the config
    "lang_ids": lambda ids, **_: torch.zeros(ids.shape[0], dtype=torch.long),
    "merge_sizes": _merge_sizes,
    "image_merge_sizes": _merge_sizes,
    "high_res_pixel_values": _high_res_pixels,
    "image_grid_thw": lambda image, **_: image["image_grid_thw"],
}
#: Optional in the signature, needed by the model all the same.
_NEEDED = frozenset({"bbox", "qformer_attention_mask", "visual_feats",
                     "visual_pos", "lang_ids", "image_merge_sizes",
                     "high_res_pixel_values", "encoder_hidden_states",
                     "image_attention_mask", "target_sizes", "states", "actions",
                     "returns_to_go", "timesteps", "image_embeds_position_mask"})


#: Most parameters a less-shrunk tiny build (level 1 or 2) may have: past it the class's
#: own widths make a model too large for a sweep's worker.
MAX_PARAMETERS = 40_000_000


#: Classes allowed more parameters than :data:`MAX_PARAMETERS`, each with its reason:
#: CSM's audio codec (Mimi) only builds at its own widths (its grouped convolutions do
#: not divide at width 32), about 88M parameters that build and run in seconds.
LARGER = {"csm": 100_000_000}


def check_size(cls, config, limit: int = MAX_PARAMETERS) -> None:
    """Raise ValueError when ``cls(config)`` would have more than ``limit`` parameters
    (counted on the meta device: nothing is allocated)."""
    with torch.device("meta"):
        count = sum(p.numel() for p in cls(config).parameters())
    if count > limit:
        raise ValueError(f"{cls.__name__} at this shrink level has {count / 1e6:.0f}M"
                         f" parameters (limit {limit / 1e6:.0f}M)")


def tiny_hf(model_type: str, *, seed: int = 0, level: int = 0):
    """``(model, inputs)``: a tiny random base model of ``model_type`` in eval mode,
    built from :func:`tiny_config` at ``level``."""
    import transformers

    config = tiny_config(model_type, level=level)
    cls = getattr(transformers, hf_model_types()[model_type])
    if level:
        check_size(cls, config, LARGER.get(model_type, MAX_PARAMETERS))
    torch.manual_seed(seed)
    model = cls(config).eval()
    if fixed_sdpa_attention(model):
        # Built as a user must load it (capture refuses fixed SDPA classes).
        config._attn_implementation = "eager"
        torch.manual_seed(seed)
        model = cls(config).eval()
    return model, tiny_inputs(model)


@contextlib.contextmanager
def _small_timm(width: int = 32, depth: int = 2, heads: int = 4, image: int = 32,
                patch: int = 8):
    """Within the block, timm builds its ViT/EVA trunks small (same classes)."""
    import timm

    real = timm.create_model

    def small(name, **kwargs):
        vit = dict(depth=depth, embed_dim=width, num_heads=heads, img_size=image,
                   patch_size=patch)
        try:
            return real(name, **kwargs, **vit)
        except TypeError:   # not a ViT: a CNN trunk (ConvNeXt), made small its own way
            try:
                return real(name, **kwargs, depths=(1, 1, 1, 1), dims=(8, 16, 24, width))
            except TypeError:
                return real(name, **kwargs)

    timm.create_model = small
    try:
        yield
    finally:
        timm.create_model = real


def tiny_open_clip(arch: str, *, seed: int = 0, image: int = 32):
    """``(model, inputs)``: open_clip architecture ``arch`` with small widths, random
    weights (timm trunks built with 2 blocks of width 32)."""
    import open_clip

    cfg = copy.deepcopy(open_clip.get_model_config(arch))
    if cfg is None:
        raise ValueError(f"open_clip has no architecture {arch!r}")
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    vision["image_size"] = image
    if not vision.get("timm_model_name"):
        layers = vision.get("layers", 2)
        vision.update(width=32, head_width=8, patch_size=8,
                      layers=[1, 1, 1, 1] if isinstance(layers, (list, tuple)) else 2)
    context = 12
    text.update(width=32, heads=4, layers=2, vocab_size=64, context_length=context)
    if "hf_model_name" in text:
        raise ValueError(f"{arch}: Hugging Face text tower needs its pretrained config")
    kwargs = {k: cfg[k] for k in ("vision_cfg", "text_cfg") if k in cfg}
    if "multimodal_cfg" in cfg:
        cfg["multimodal_cfg"].update(width=32, heads=4, layers=2, vocab_size=64,
                                     context_length=context)
        kwargs["multimodal_cfg"] = cfg["multimodal_cfg"]
    torch.manual_seed(seed)
    import logging

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    with _small_timm(image=image):
        model = open_clip.create_model(arch, pretrained=None, embed_dim=32, **kwargs).eval()
    decoder = getattr(model, "text_decoder", None)
    if isinstance(getattr(decoder, "text_projection", None), torch.nn.Parameter):
        # open_clip leaves it uninitialised (torch.empty) until weights are loaded.
        torch.nn.init.normal_(decoder.text_projection, std=32 ** -0.5)
    generator = torch.Generator().manual_seed(1)
    ids = torch.zeros(2, context, dtype=torch.long)
    ids[:, 0] = 1
    ids[:, 1:6] = torch.randint(2, 60, (2, 5), generator=generator)
    ids[:, 6] = 63
    pixels = torch.randn(2, 3, image, image, generator=generator)
    return model, dict(image=pixels, text=ids)


# --------------------------------------------------------------------------- checks

def _tensors(out) -> list[torch.Tensor]:
    """Every tensor of a model output, in a stable order (dicts and ``ModelOutput`` in
    key order)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    elif hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, (tuple, list)):
        return [t for x in out for t in _tensors(x)]
    return []


def _reported(out) -> list[tuple[str, torch.Tensor]]:
    """Every attention tensor a transformers output reports (nested outputs too)."""
    found = []
    if hasattr(out, "keys"):
        for key in out.keys():
            value = out[key]
            if "attentions" in key and isinstance(value, (tuple, list)):
                found += _indexed(key, value)
            elif hasattr(value, "keys"):
                found += [(f"{key}.{n}", t) for n, t in _reported(value)]
    return found


def _indexed(name: str, values, nested: bool = False) -> list[tuple[str, torch.Tensor]]:
    """The tensors of a (nested) tuple, named by index: a hierarchical model such as
    PVTv2 reports one tuple of layers per stage. Inside a nested tuple only
    ``[batch, head, query, key]`` tensors count (the per-image vision towers of Qwen2-VL's
    kind report each layer as its module's output tuple, not as attention)."""
    found = []
    for i, value in enumerate(values):
        if isinstance(value, torch.Tensor) and (not nested or value.dim() >= 4):
            found.append((f"{name}[{i}]", value))
        elif isinstance(value, (tuple, list)):
            found += _indexed(f"{name}[{i}]", value, nested=True)
    return found


def _hook_state(model) -> list:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def _settings(model) -> list:
    configs = {id(m.config): m.config for m in model.modules()
               if hasattr(getattr(m, "config", None), "_attn_implementation_internal")}
    fused = [getattr(m, "fused_attn") for m in model.modules() if hasattr(m, "fused_attn")]
    return [str(c._attn_implementation_internal) for c in configs.values()] + fused


def _close(a: torch.Tensor, b: torch.Tensor, atol: float) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), atol=atol,
                                                      rtol=0))


def _cleanup_after_error(model, inputs) -> str | None:
    hooks, settings = _hook_state(model), _settings(model)

    class Boom(Exception):
        pass

    try:
        with torch.no_grad(), capture(model):
            model(**inputs)
            raise Boom
    except Boom:
        pass
    if _hook_state(model) != hooks:
        return "hooks left after an exception"
    if _settings(model) != settings:
        return "attention implementation not restored after an exception"
    return None


def check(model, inputs: dict, *, name: str = "", reference: str = "hf") -> Result:
    """Check that ``capture`` reads ``model`` exactly; see the module docstring.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode.
    inputs : dict
        Keyword arguments of one forward call.
    name : str
        Recorded in the result.
    reference : {"hf", "rows"}
        ``"hf"``: compare with ``output_attentions=True``; ``"rows"``: the model reports
        no attention itself, check that captured rows sum to one (open_clip timm trunks).
    """
    start = time.perf_counter()
    result = Result(name or type(model).__name__, "failing")
    try:
        with torch.no_grad():
            torch.manual_seed(0)    # models that draw noise (ViT-MAE masks, VITS) repeat
            plain = _tensors(model(**inputs))
    except Exception as err:  # the tiny model itself does not run
        result.status, result.detail = "not_built", f"forward: {type(err).__name__}: {err}"
        return result
    hooks, settings = _hook_state(model), _settings(model)
    try:
        with torch.no_grad(), capture(model) as trace:
            torch.manual_seed(0)
            captured = _tensors(model(**inputs))
    except UnsupportedModelError as err:
        result.status, result.detail = "refused", str(err).split(": it ", 1)[-1]
        result.seconds = time.perf_counter() - start
        return result
    except Exception as err:
        result.detail = f"capture: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
        result.extra["traceback"] = traceback.format_exc()
        if reference == "hf" and not _reported(_eager_reference(model, inputs)):
            # The model reports no attention either; groundroll must still refuse it
            # with a reason rather than crash, so this stays a failure.
            result.detail += " (the model reports no attentions: refuse it with a reason)"
        result.seconds = time.perf_counter() - start
        return result
    result.streams = tuple(trace.streams)
    problems = []
    if _hook_state(model) != hooks or _settings(model) != settings:
        problems.append("hooks or settings left after a normal exit")
    if len(plain) != len(captured) or not all(
            _close(a, b, OUTPUT_ATOL) for a, b in zip(plain, captured)):
        problems.append("outputs changed under capture")
    layers = [layer.weights for layer in trace]
    if not layers:
        problems.append("no attention captured")
    if reference == "hf":
        reported = _reported(_eager_reference(model, inputs))
        chunked, chunk_problems = _chunked_reference(model, inputs)
        problems += chunk_problems
        if chunked:
            # transformers records a chunked module's output (a [tokens, dim] tensor,
            # or None) as its attention: those entries are checked by the reference.
            reported = [(key, t) for key, t in reported if t.dim() >= 4]
        others = _not_attention(model, inputs)
        reported = [(key, t) for key, t in reported
                    if not any(t.shape == o.shape and torch.equal(t, o) for o in others)]
        result.reported = len(reported)
        candidates = layers + _joined(trace)
        missing = [key for key, t in reported
                   if not any(_close(_as_probabilities(_folded(t)), w, ATOL)
                              for w in candidates)
                   and not (chunked and _a_diagonal_block(_folded(t), layers))]
        if missing:
            problems.append(f"{len(missing)}/{len(reported)} reported attention tensors"
                            f" not in the trace (first: {missing[0]})")
        if not reported and not chunked:
            problems.append("the model reports no attentions to compare with")
    else:
        for w in layers:
            if not torch.allclose(w.sum(-1), torch.ones(()), atol=ATOL):
                problems.append("captured rows do not sum to 1")
                break
    error = _cleanup_after_error(model, inputs)
    if error:
        problems.append(error)
    result.status = "failing" if problems else "captured"
    result.detail = "; ".join(problems)
    result.seconds = time.perf_counter() - start
    return result


def _chunked_reference(model, inputs) -> tuple[int, list[str]]:
    """Check the layers of ``chunked`` sites (one attention per image or window, no
    weights reported) against what the modules themselves compute.

    The module's input and its output projection's input are hooked in a captured
    run. Each captured ``[batch, head, N, N]`` layer must have rows that sum to 1, be
    exactly zero between the chunks that the call's ``cu_seqlens`` delimit, and times
    the values (the module's own value projection of its input, split by head)
    reproduce the output projection's input within :data:`ATOL`.

    Returns
    -------
    (int, list of str)
        How many layers were checked and what was wrong.
    """
    try:
        sites = [s for s in adapter_for(model).sites if s.reader == "chunked"]
    except TypeError:
        return 0, []
    if not sites:
        return 0, []
    modules = dict(model.named_modules())
    calls: dict[str, list[dict]] = {}
    handles = []
    try:
        for name, module in modules.items():
            site = next((s for s in sites if re.search(s.pattern, name)), None)
            if site is None:
                continue
            if site.value is None or site.out is None:
                return 0, [f"chunked site {name}: no value or output projection known to"
                           " check it against"]
            seen = calls.setdefault(name, [])

            def enter(module, args, kwargs, seen=seen):
                seen.append(dict(
                    hidden=kwargs.get("hidden_states", args[0] if args else None),
                    bounds=kwargs.get("cu_seqlens", args[1] if len(args) > 1 else None)))

            def mixed(module, args, seen=seen):
                seen[-1]["mixed"] = args[0]
            handles.append(module.register_forward_pre_hook(enter, with_kwargs=True))
            handles.append(_relative(modules, name, site.out).register_forward_pre_hook(mixed))
        with torch.no_grad(), capture(model, streams=list({s.stream for s in sites})) as trace:
            torch.manual_seed(0)
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    problems = []
    layers = [layer for layer in trace if layer.module_name in calls]
    for name, seen in calls.items():
        mine = [layer for layer in layers if layer.module_name == name]
        if len(mine) != len(seen):
            problems.append(f"{name}: {len(seen)} calls, {len(mine)} captured layers")
            continue
        site = next(s for s in sites if re.search(s.pattern, name))
        for layer, call in zip(mine, seen):
            problem = _chunk_problem(modules, name, site, layer.weights, **call)
            if problem:
                problems.append(f"{name}: {problem}")
    return len(layers), problems[:1]


def _chunk_problem(modules, name, site, weights, *, hidden, bounds, mixed) -> str | None:
    """What is wrong with one chunked layer's ``[batch, head, N, N]`` weights, given the
    module's input ``hidden`` and ``cu_seqlens`` ``bounds``, and ``mixed``, the input of
    its output projection; None if nothing."""
    batch, heads, n, _ = weights.shape
    hidden = hidden.reshape(batch, n, hidden.shape[-1])
    mixed = mixed.reshape(batch, n, -1)
    if not torch.allclose(weights.sum(-1), torch.ones(()), atol=ATOL):
        return "captured rows do not sum to 1"
    chunk = torch.bucketize(torch.arange(n), bounds[1:].cpu().long(), right=True)
    outside = chunk[:, None] != chunk[None, :]
    if bool((weights[..., outside] != 0).any()):
        return "captured weights are not zero between chunks"
    w_v, b_v = _linear_part(modules, name, site.value)
    values = torch.nn.functional.linear(hidden, w_v, b_v)       # [batch, N, kv * dim]
    dim = mixed.shape[-1] // heads
    values = values.reshape(batch, n, -1, dim).transpose(1, 2)  # [batch, kv, N, dim]
    values = values.repeat_interleave(heads // values.shape[1], dim=1)
    expected = (weights @ values).transpose(1, 2).reshape(batch, n, -1)
    if not _close(expected, mixed, ATOL):
        error = (expected - mixed).abs().max().item()
        return f"weights times values miss the output projection's input by {error:.2g}"
    return None


def _a_diagonal_block(t: torch.Tensor, layers: list[torch.Tensor]) -> bool:
    """Whether ``t`` equals a diagonal block of a captured layer: a chunked layer may
    be reported chunk by chunk (LFM2-VL's and VideoLLaMA 3's towers report each layer
    as a tuple of per-image matrices)."""
    n = t.shape[-1]
    return t.shape[-2] == n and any(
        w.shape[:2] == t.shape[:2] and w.shape[-1] > n
        and any(_close(t, w[..., s:s + n, s:s + n], ATOL) for s in range(w.shape[-1] - n + 1))
        for w in layers)


def _not_attention(model, inputs) -> list[torch.Tensor]:
    """What declared modules that hold no ``[query, key]`` matrix (``NOT_GLOBAL``:
    MiniMax's linear attention returns its key-value state) give at their declared
    index in an eager run: transformers reports it among the attentions, the capture
    leaves it out, so it is no reference."""
    modules = dict(model.named_modules())
    found: list[torch.Tensor] = []
    handles = []
    for declared in declared_attention(model):
        module = modules[declared.name]
        if type(module).__name__ not in NOT_GLOBAL:
            continue

        def keep(module, args, output, index=declared.index):
            if isinstance(output, (tuple, list)) and isinstance(output[index], torch.Tensor):
                found.append(output[index])
        handles.append(module.register_forward_hook(keep))
    if not handles:
        return []
    try:
        _eager_reference(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return found


def _folded(t: torch.Tensor) -> torch.Tensor:
    """``[batch, block, head, query, key]`` -> ``[batch, block * head, query, key]``, as
    the capture records attention reported with more than four axes."""
    return t.flatten(1, -3) if t.dim() > 4 else t


def _as_probabilities(t: torch.Tensor) -> torch.Tensor:
    """Reported pre-softmax scores (negative entries: ProphetNet's encoder and
    cross-attention) -> the probabilities the capture records, their softmax."""
    return t.softmax(-1) if bool((t < 0).any()) else t


def _joined(trace) -> list[torch.Tensor]:
    """Layers one reported tensor was split into (ProphetNet's cross-attention: main
    stream rows, then n-gram rows), joined back along the query axis."""
    parts: dict[tuple, list[torch.Tensor]] = {}
    for layer in trace:
        parts.setdefault((layer.module_name, layer.call), []).append(layer.weights)
    return [torch.cat(p, dim=-2) for p in parts.values()
            if len(p) > 1 and len({w.shape[-1] for w in p}) == 1]


def _eager_reference(model, inputs):
    """The model's own ``output_attentions=True`` output in eager attention (the
    implementation is restored afterwards)."""
    saved = [(c, c._attn_implementation_internal) for c in _configs(model)]
    try:
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        with torch.no_grad():
            torch.manual_seed(0)
            return model(**inputs, output_attentions=True)
    except Exception:
        return {}
    finally:
        for config, value in saved:
            config._attn_implementation_internal = value


def _configs(model):
    return list({id(m.config): m.config for m in model.modules()
                 if hasattr(getattr(m, "config", None), "_attn_implementation_internal")
                 }.values())


def _not_built(name: str, err: Exception, start: float) -> Result:
    """A ``not_built`` result naming the build error (its first line, at most 160
    characters)."""
    first = str(err).splitlines()[0][:160] if str(err) else ""
    return Result(name, "not_built", f"build: {type(err).__name__}: {first}",
                  time.perf_counter() - start)


def check_hf(model_type: str) -> Result:
    """Build the tiny model of ``model_type`` (:func:`tiny_hf`) and :func:`check` it.

    Parameters
    ----------
    model_type : str
        A transformers ``model_type`` (a key of :func:`hf_model_types`).

    Returns
    -------
    Result
        ``refused`` without a check where groundroll says why rollout does not apply;
        ``extra["class"]`` names the model class.

    Examples
    --------
    >>> check_hf("bert").status                                     # doctest: +SKIP
    'captured'
    """
    start = time.perf_counter()
    first = result = None
    for level in range(LEVELS):
        # A tiny build that fails its config's validation or does not run is retried
        # with less shrunk: the class's own widths and heads, then only fewer layers.
        result = _check_hf_at(model_type, level, start)
        if result.status != "not_built" or result.detail.startswith("main input"):
            break
        first = first or result
    if result.status == "not_built" and first is not None and first is not result:
        # The smallest build's reason says most; the last level's is kept beside it.
        first.detail = f"{first.detail} (level {level}: {result.detail[:80]})"
        first.seconds = result.seconds
        result = first
    result.extra["level"] = level
    return result


def _check_hf_at(model_type: str, level: int, start: float) -> Result:
    try:
        model, inputs = tiny_hf(model_type, level=level)
    except Exception as err:
        if model_type in REFUSALS:
            # Refused by type whatever the tiny build does (DiNAT needs natten to build,
            # LW-DETR's windowed backbone rejects a 32 x 32 image).
            return Result(model_type, "refused", REFUSALS[model_type],
                          time.perf_counter() - start)
        return _not_built(model_type, err, start)
    if inputs is None:
        # Refusals do not need inputs.

        try:
            adapter_for(model)
        except UnsupportedModelError as err:
            return Result(model_type, "refused", str(err).split(": it ", 1)[-1])
        except TypeError:
            pass
        return Result(model_type, "not_built",
                      f"main input {model.main_input_name!r} not generated",
                      time.perf_counter() - start)
    built = time.perf_counter() - start

    reason = refusal(model)
    if reason is not None:
        return Result(model_type, "refused", reason.split(": it ", 1)[-1], built)
    result = check(model, inputs, name=model_type)
    result.seconds += built
    result.extra["class"] = type(model).__name__
    return result


def check_open_clip(arch: str) -> Result:
    """Build open_clip ``arch`` small (:func:`tiny_open_clip`) and :func:`check` it.

    open_clip models report no attention themselves, so the reference is that the
    captured rows sum to one (``reference="rows"``).

    Parameters
    ----------
    arch : str
        An open_clip architecture name, e.g. ``"ViT-B-32"``.

    Returns
    -------
    Result

    Examples
    --------
    >>> result = check_open_clip("ViT-B-32")                       # doctest: +SKIP
    >>> result.status, result.streams                               # doctest: +SKIP
    ('captured', ('vision', 'text'))
    """
    start = time.perf_counter()
    try:
        model, inputs = tiny_open_clip(arch)
    except Exception as err:
        return _not_built(arch, err, start)
    result = check(model, inputs, name=arch, reference="rows")
    result.seconds = time.perf_counter() - start
    return result

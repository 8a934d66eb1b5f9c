"""Capture sites read from what a Hugging Face model declares about its own attention.

In transformers 5 each encoder, decoder and tower class carries ``_can_record_outputs``:
which module class yields self- or cross-attention probabilities, at which output index,
under which layer name (``PLBartDecoder._can_record_outputs["cross_attentions"] ==
OutputRecorder(PLBartAttention, index=1, layer_name="encoder_attn")``). The modules
found here are exactly those transformers itself reads for ``output_attentions=True``
(same walk: a submodel's own declaration applies below it), so a model whose attention
is declared is captured with no hand-written adapter:

- self-attention streams are named after the module they live in (``vision``, ``text``,
  ``audio``, ``decoder``, ``encoder``; ``encoder`` when nothing else says);
- cross-attention streams go from their queries' stream to the other self-attention
  stream (``cross`` for decoder -> encoder, ``<query>_cross`` otherwise);
- causality is read from each call's weights (strict upper triangle exactly zero);
- vision towers that run one attention per image or window of a flat patch sequence
  (called with ``cu_seqlens``: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, GLM-4V and their kin)
  return no weights; their sites read every softmax of the call and place the chunks
  block-diagonally (``Site.reader == "chunked"``);
- token metadata (ids, padding mask, patch grid; prefix tokens counted from the first
  layer) is read where the stream's tower is called;
- value and output projections for ``values=True`` are found by their conventional
  names, or left unset (then ``values=True`` says so).

Models whose attention is not global (windowed, local, block-sparse) or which have no
attention (convolutional trunks) are refused by :func:`refusal` with the reason and
what works instead.
"""

from __future__ import annotations

import inspect
import re
from collections import defaultdict
from dataclasses import dataclass

import torch

from ..trace import Chain
from .sites import Adapter, Site, TokenSource

__all__ = ["derive_adapter", "declared_attention", "refusal", "returned_adapter",
           "returned_site", "Declared", "REFUSALS"]

_WINDOWED = (
    "attends within local windows (shifted from layer to layer), so no layer relates every"
    " token to every other and the product of attention matrices that rollout needs is"
    " not defined over the image. Use a global-attention vision model (ViT, DeiT, DINOv2,"
    " BEiT, CLIP, SigLIP) for rollout or relevance maps, or a gradient attribution on the"
    " last feature map (Grad-CAM) for this one.")
_LOCAL = (
    "uses sliding-window local attention with a few global tokens: its attention comes"
    " as [batch, head, query, window] bands, not [query, key] matrices, and no layer"
    " relates every token to every other. For alignment or token attributions use a"
    " full-attention model (BART, mBART, Marian, T5, BERT-style encoders).")
_SPARSE = (
    "is configured with block-sparse attention (attention_type='block_sparse'): each"
    " token attends to a few random, window and global blocks, so there is no full"
    " [query, key] matrix to roll out. Build or load it with"
    " config.attention_type='original_full' (the same weights with full attention) and"
    " it is captured like BERT.")
_CNN = (
    "is a convolutional network: it has no attention to capture or roll out. Use a"
    " gradient attribution (Grad-CAM) for it, or a ViT-based model with groundroll.")

_RECURRENT = (
    "is a recurrent model (RWKV's time mixing): it has no attention matrix to capture or"
    " roll out, only per-channel states. Use a transformer language model, or a gradient"
    " attribution on its inputs.")
_SAMPLED = (
    "approximates attention by hashing or sampling (YOSO's LSH Bernoulli sampling): no"
    " [query, key] probability matrix is ever computed. Use a full-attention encoder"
    " (BERT, RoBERTa, DeBERTa, MPNet) for rollout or relevance.")
_DEFORMABLE = (
    "uses multi-scale deformable attention: each query reads a few sampled points of the"
    " feature maps, not a [query, key] matrix over tokens, so rollout is not defined. Use"
    " DETR or Conditional DETR (global attention) or a gradient attribution (Grad-CAM).")

_MOSTLY_WINDOWED = (
    "attends within local windows in most of its layers (a ViTDet / Hiera / DaViT backbone"
    " with a few global layers), so the product of attention matrices that rollout needs"
    " is not defined over the image. Use a global-attention vision model (ViT, DeiT,"
    " DINOv2, BEiT, CLIP, SigLIP) for rollout or relevance maps, or a gradient attribution"
    " on the last feature map (Grad-CAM) for this one.")
_WRAPPED_TIMM = (
    "is a timm network behind a transformers wrapper, which refuses output_attentions and"
    " declares no attention module: there is no attention to read. Load a timm ViT"
    " through open_clip (its timm trunks are captured) or use a gradient attribution"
    " (Grad-CAM) on its last stage.")
_MOBILE = (
    "is a mobile convolutional network (MobileNet-V5 blocks with a few multi-query"
    " attention blocks over pooled feature maps): no attention relates the image's patch"
    " tokens layer after layer, so rollout is not defined. Use a gradient attribution"
    " (Grad-CAM) on its last stage.")

_GROUPING = (
    "groups its image tokens between stages (GroupViT: learned group tokens take the"
    " patches by a hard Gumbel-softmax assignment, 196 patches -> 64 groups -> 8 in the"
    " released configuration), so the"
    " self-attention of different stages relates different token sets and no product of"
    " layers runs from the output back to the patches. Its own grouping maps"
    " (output_attentions=True) are its segmentation; for rollout use a ViT-based CLIP.")
_CONVOLUTIONAL_ENCODER = (
    "encodes images with RepViT, a convolutional network (a timm trunk): no attention"
    " relates the image's patches, and its decoder attends over prompt tokens and one"
    " feature map, so rollout over the image is not defined. Use a global-attention"
    " vision model (ViT, DeiT, DINOv2, CLIP, SigLIP) for rollout, or a gradient"
    " attribution (Grad-CAM) on its last feature map.")
_CNN_IMAGE_TOWER = (
    "encodes images with EfficientNet, a convolutional network: its only attention is in"
    " its BERT text tower, so no map over the image can be rolled out. Use CLIP or SigLIP"
    " (ViT image towers) for text-prompted maps, or a gradient attribution (Grad-CAM) on"
    " its last feature map.")
_SESSION = (
    "is a video tracker: its forward needs an inference session holding the frames,"
    " prompts and memory bank of earlier frames (forward(inference_session=...,"
    " frame_idx=...)), and each frame's attention reaches into that memory, not over"
    " one input's tokens. Run its image model (SAM 2 / SAM 3 image predictor) on single"
    " frames, or use a global-attention vision model (ViT, DINOv2, CLIP) for rollout.")
_MATRIX_MEMORY = (
    "is a recurrent model (xLSTM's matrix-memory cells with exponential gating): it"
    " keeps a running state instead of an attention matrix, so there is nothing to"
    " capture or roll out. Use a transformer language model, or a gradient attribution"
    " on its inputs.")
_QUANTISER = (
    "is a vector-quantised image tokenizer (a codebook with 1x1 convolutions around"
    " it): it has no attention to capture or roll out. Use the model that consumes its"
    " tokens (GLM-Image's language model) for rollout instead.")

#: ``config.model_type`` -> why attention rollout does not apply and what works instead.
REFUSALS: dict[str, str] = {
    **{t: _WINDOWED for t in ("swin", "swinv2", "donut-swin", "maskformer-swin", "swin2sr",
                              "nat", "dinat", "focalnet")},
    **{t: _MOSTLY_WINDOWED for t in ("sam", "sam_vision_model", "sam_hq",
                                     "sam_hq_vision_model", "sam2_hiera_det_model",
                                     "got_ocr2", "florence2",
                                     # their (high-resolution) tower is SAM's encoder
                                     "deepseek_vl_hybrid", "deepseek_ocr2",
                                     "unlimited_ocr")},
    **{t: _DEFORMABLE for t in ("rt_detr", "rf_detr", "pp_doclayout_v3", "pp_doclayout_v4",
                                "grounding-dino", "mm-grounding-dino")},
    "timm_wrapper": _WRAPPED_TIMM, "gemma3n_vision": _MOBILE,
    **{t: _LOCAL for t in ("longformer", "led")},
    **{t: _CNN for t in ("convnext", "convnextv2", "resnet", "regnet", "efficientnet",
                         "mobilenet_v1", "mobilenet_v2", "bit", "van", "poolformer")},
    "sam2_vision_model": _WINDOWED, "rwkv": _RECURRENT, "yoso": _SAMPLED,
    "deformable_detr": _DEFORMABLE, "groupvit": _GROUPING,
    # SAM 2's Hiera and SAM 3's ViT attend within windows but in a few global layers
    **{t: _MOSTLY_WINDOWED for t in ("sam2", "sam3_tracker")},
    **{t: _CONVOLUTIONAL_ENCODER for t in ("edgetam", "edgetam_vision_model")},
    **{t: _SESSION for t in ("sam2_video", "sam3_video", "edgetam_video",
                             "sam3_tracker_video")},
    # LW-DETR's and OmDet-Turbo's decoders, Mask2Former's and OneFormer's pixel
    # decoders read the image through deformable attention
    **{t: _DEFORMABLE for t in ("lw_detr", "omdet-turbo", "mask2former", "oneformer")},
    # text detection, recognition and document unwarping networks (PP-OCRv6 detectors,
    # PP-OCRv6 tiny recognizer, UVDoc)
    **{t: _CNN for t in ("pp_ocrv6_medium_det", "pp_ocrv6_small_det", "pp_ocrv6_tiny_rec",
                         "uvdoc")},
    "timm_backbone": _WRAPPED_TIMM, "xlstm": _MATRIX_MEMORY, "align": _CNN_IMAGE_TOWER,
    "glm_image_vqmodel": _QUANTISER,
}

_SPARSE_TYPES = ("big_bird", "bigbird_pegasus")

#: Declared attention modules whose attention is not a global ``[query, key]`` matrix
#: (they return none at the declared index, or something else: MiniMax's lightning
#: attention, a linear attention, returns its ``[batch, head, dim, dim]`` key-value
#: state): left out of derived adapters, so the rest of the model (Pegasus-X's decoder
#: and cross-attention, MiniMax's softmax-attention layers) is still captured.
NOT_GLOBAL = frozenset({"PegasusXGlobalLocalAttention", "MiniMaxLightningAttention"})


def refusal(model: torch.nn.Module) -> str | None:
    """Why attention rollout does not apply to ``model`` (with what works instead), or
    None. Knows windowed (Swin; SAM, Hiera, Florence-2's DaViT), local (Longformer,
    LED), block-sparse (BigBird), deformable (Deformable DETR, RT-DETR, Grounding DINO),
    convolutional (ConvNeXt, ResNet, MobileNet-V5, EdgeTAM's RepViT), recurrent (RWKV,
    xLSTM), session-driven video trackers, image tokenizers and wrapped timm Hugging Face
    models by ``config.model_type``.

    Examples
    --------
    >>> import torch
    >>> refusal(torch.nn.Linear(2, 2)) is None
    True
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        return None
    name = f"{type(model).__name__} (config.model_type={model_type!r})"
    if model_type in REFUSALS:
        return f"groundroll cannot roll out {name}: it {REFUSALS[model_type]}"
    if model_type in _SPARSE_TYPES and getattr(config, "attention_type", "") == "block_sparse":
        return f"groundroll cannot roll out {name}: it {_SPARSE}"
    return None


def writes_text_from_images(model: torch.nn.Module) -> bool:
    """Whether ``model`` is one of transformers' image-text-to-text models (a captioner
    or vision-language model by transformers' own auto mapping), not a trunk.

    Examples
    --------
    >>> writes_text_from_images(torch.nn.Linear(2, 2))
    False
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as names)

    kind = getattr(getattr(model, "config", None), "model_type", None)
    return kind in names and not type(model).__name__.endswith("Model")


@dataclass(frozen=True)
class Declared:
    """One attention module that a model declares (``_can_record_outputs``).

    Attributes
    ----------
    name : str
        Qualified module name in the model.
    key : str
        The declaration's key (``"attentions"``, ``"cross_attentions"``, ...).
    index : int
        Position of the probabilities in the module's output tuple.
    declarer : str
        Qualified name of the submodel whose declaration names the module.
    """

    name: str
    key: str
    index: int
    declarer: str


def _specs(declaration) -> list[tuple[str, object]]:
    out = []
    for key, specs in (declaration or {}).items():
        if not key.endswith("attentions"):
            continue
        for spec in specs if isinstance(specs, list) else [specs]:
            out.append((key, spec))
    return out


def _matches(spec, module: torch.nn.Module, name: str) -> tuple[bool, int]:
    """transformers' own rule (``recursively_install_hooks``) for one recorder spec."""
    if isinstance(spec, type):
        return isinstance(module, spec), 1
    if isinstance(spec, str):
        return name.endswith(spec), 1
    target = getattr(spec, "target_class", None)
    class_name = getattr(spec, "class_name", None)
    hit = (target is not None and isinstance(module, target)) or (
        class_name is not None and name.endswith(class_name))
    layer = getattr(spec, "layer_name", None)
    if hit and layer is not None:
        hit = "." + layer.strip(".") + "." in name + "."
    return hit, int(getattr(spec, "index", 1))


def declared_attention(model: torch.nn.Module) -> list[Declared]:
    """The attention modules ``model`` declares, in module order.

    Walks the module tree as transformers does for ``output_attentions``: below each
    ``PreTrainedModel`` its own ``_can_record_outputs`` applies. Returns ``[]`` for a
    model that declares nothing (or when transformers is not installed).

    Examples
    --------
    >>> import transformers  # doctest: +SKIP
    >>> cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=4, intermediate_size=37)  # doctest: +SKIP
    >>> [d.name for d in declared_attention(transformers.BertModel(cfg))]  # doctest: +SKIP
    ['encoder.layer.0.attention.self', 'encoder.layer.1.attention.self']
    """
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return []
    if not isinstance(model, PreTrainedModel):
        return []
    found: list[Declared] = []

    def walk(module, name, specs, declarer):
        if isinstance(module, PreTrainedModel):
            specs = _specs(getattr(type(module), "_can_record_outputs", None))
            declarer = name
        for child_name, child in module.named_children():
            walk(child, f"{name}.{child_name}" if name else child_name, specs, declarer)
        keys = set()
        for key, spec in specs:
            hit, index = _matches(spec, module, "." + name if name else "")
            # One spec per key; a module may yield several keys at different indices
            # (T5Gemma2's merged attention: self-attention and cross-attention).
            if hit and key not in keys and (not keys or all(
                    d.index != index for d in found if d.name == name)):
                found.append(Declared(name, key, index, declarer))
                keys.add(key)

    walk(model, "", [], "")
    # transformers' walk is post-order (children first); keep module order.
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(found, key=lambda d: order[d.name])


_ROLES = (("vision", ("vision", "visual", "image", "pixel", "patch")),
          ("audio", ("audio", "speech")),
          ("text", ("text",)),
          ("decoder", ("decoder",)),
          ("encoder", ("encoder",)))

_VALUE_NAMES = ("v_proj", "value", "v", "values", "v_lin", "value_proj")
_OUT_NAMES = ("out_proj", "o_proj", "o", "out_lin", "out", "proj", "projection", "dense",
              "output.dense")


def _role(relative: str, *, seq2seq: bool = False) -> str | None:
    # In an encoder-decoder, "text_encoder" / "text_decoder" (SeamlessM4T) are the two
    # sides of the translation: encoder and decoder come before the modality.
    roles = _ROLES[3:] + _ROLES[:3] if seq2seq else _ROLES
    for part in relative.split("."):
        lowered = part.lower()
        for role, words in roles:
            if any(w in lowered for w in words):
                return role
    return None


def _linear(modules: dict, name: str, path: str) -> bool:
    full = f"{name}.{path}" if name else path
    return isinstance(modules.get(full), torch.nn.Linear)


def _projections(modules: dict, name: str) -> tuple[str | None, str | None]:
    value = next((n for n in _VALUE_NAMES if _linear(modules, name, n)), None)
    if value is None:
        for fused, parts in (("qkv", 3), ("in_proj", 3), ("c_attn", 3)):
            if _linear(modules, name, fused):
                value = f"{fused}:2/{parts}"
                break
    out = next((n for n in _OUT_NAMES if _linear(modules, name, n)), None)
    if out is None:
        parent = name.rpartition(".")[0]
        out = next((f"../{n}" for n in ("output.dense", "dense", "out_proj", "o_proj")
                    if _linear(modules, parent, n)), None)
    return value, out


def _chunked(module: torch.nn.Module) -> bool:
    """Whether ``module`` runs one attention per chunk of a flat token sequence, between
    the ``cu_seqlens`` boundaries it must be called with (one per image, video frame or
    window: Qwen2-VL's vision tower and the towers built like it); under eager attention
    such a module returns no weights, so they are read from its softmaxes. (Where
    ``cu_seqlens`` is optional, as in RADIO, the module attends over its whole input by
    default and returns its weights.)"""
    try:
        parameter = inspect.signature(module.forward).parameters.get("cu_seqlens")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is inspect.Parameter.empty


def _common_root(names: list[str], modules: dict, declarer: str) -> str:
    if len(names) == 1:
        return declarer
    parts = [n.split(".") for n in names]
    common = []
    for items in zip(*parts):
        if len(set(items)) > 1:
            break
        common.append(items[0])
    root = ".".join(common)
    containers = (torch.nn.ModuleList, torch.nn.ModuleDict, torch.nn.Sequential)
    while root and isinstance(modules.get(root), containers):
        root = root.rpartition(".")[0]
    if len(root) < len(declarer):
        return declarer
    return root


def _below(name: str, parent: str) -> bool:
    return not parent or name == parent or name.startswith(parent + ".")


def _exact(names) -> str:
    return "^(?:" + "|".join(re.escape(n) for n in names) + ")$"


def _pooling_heads(modules: dict, self_names: list[str]) -> tuple[list, list]:
    """Attention-pooling heads (a learned ``probe`` attending over a tower's tokens
    through ``nn.MultiheadAttention``, as SigLIP's), which no declaration names: one
    ``pool`` stream from ``pool_queries`` to the tower's stream."""
    sites, tokens = [], []
    for name, module in modules.items():
        parent = name.rpartition(".")[0]
        if not (isinstance(module, torch.nn.MultiheadAttention)
                and isinstance(getattr(modules.get(parent), "probe", None), torch.Tensor)):
            continue
        key = _role(name) or "vision"
        if key not in self_names or any(s.stream == "pool" for s in sites):
            continue
        sites.append(Site(_exact([name]), "pool", query="pool_queries", key=key,
                          reader="mha"))
        tokens.append(TokenSource("pool_queries", pattern=_exact([parent]), reader="queries"))
    return sites, tokens


def derive_adapter(model: torch.nn.Module) -> Adapter | None:
    """An :class:`~groundroll.adapters.Adapter` built from ``model``'s own attention
    declarations, or None when it declares none.

    The adapter is specific to this model's module tree (its sites name the modules
    exactly); ``capture`` calls this for any Hugging Face model no registered adapter
    serves.

    Examples
    --------
    >>> import transformers  # doctest: +SKIP
    >>> cfg = transformers.PLBartConfig(vocab_size=64, d_model=32, encoder_layers=2,
    ...     decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    ...     encoder_ffn_dim=37, decoder_ffn_dim=37)  # doctest: +SKIP
    >>> derive_adapter(transformers.PLBartModel(cfg)).streams  # doctest: +SKIP
    ('encoder', 'decoder', 'cross')
    """
    modules = dict(model.named_modules())
    declared = [d for d in declared_attention(model)
                if type(modules[d.name]).__name__ not in NOT_GLOBAL]
    if not declared:
        return None
    from transformers import PreTrainedModel
    # Group into streams: one declarer and key, split by role (CLIPModel declares one
    # "attentions" entry for both towers).
    groups: dict[tuple, list[Declared]] = defaultdict(list)
    seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    for d in declared:
        relative = d.name[len(d.declarer):].lstrip(".") if d.declarer else d.name
        role = (_role(d.declarer, seq2seq=seq2seq) or _role(relative, seq2seq=seq2seq)
                or "encoder")
        groups[(d.declarer, d.key, role)].append(d)

    self_streams: dict[tuple, str] = {}
    used: dict[str, int] = defaultdict(int)
    for (declarer, key, role), members in groups.items():
        if "cross" in key:
            continue
        base = role if key == "attentions" else key.removesuffix("_attentions")
        used[base] += 1
        self_streams[(declarer, key, role)] = base if used[base] == 1 else f"{base}{used[base]}"
    self_names = list(self_streams.values())

    sites: list[Site] = []
    tokens: list[TokenSource] = []
    roots: dict[str, str] = {}
    for (declarer, key, role), members in groups.items():
        names = [d.name for d in members]
        index = members[0].index
        value, out = _projections(modules, names[0])
        root = _common_root(names, modules, declarer)
        if "cross" not in key:
            stream = self_streams[(declarer, key, role)]
            roots[stream] = root
            reader = "chunked" if _chunked(modules[names[0]]) else "output"
            sites.append(Site(_exact(names), stream, causal=None, reader=reader,
                              index=index, root=root, value=value, out=out))
            continue
        query = next((s for (d, k, r), s in self_streams.items()
                      if d == declarer and k == "attentions" and r == role),
                     next((s for s in self_names if s == role), role))
        others = [s for s in self_names if s != query]
        preferred = {"decoder": "encoder", "text": "vision"}.get(query)
        key_stream = (preferred if preferred in others
                      else others[0] if len(others) == 1
                      # an encoder whose own attention is not captured (Pegasus-X)
                      else preferred if query == "decoder" else f"{query}_memory")
        stream = "cross" if (query, key_stream) == ("decoder", "encoder") else f"{query}_cross"
        sites.append(Site(_exact(names), stream, query=query, key=key_stream, index=index,
                          root=root, value=value, out=out))

    # Token metadata where each self stream's tower is called: the declaring submodel,
    # or its child holding the stream when one submodel declares several towers.
    by_declarer: dict[str, list[str]] = defaultdict(list)
    for (declarer, key, role), stream in self_streams.items():
        by_declarer[declarer].append(stream)
    for (declarer, key, role), stream in self_streams.items():
        where = declarer
        if len(by_declarer[declarer]) > 1:
            first = groups[(declarer, key, role)][0].name
            relative = first[len(declarer):].lstrip(".") if declarer else first
            head = relative.split(".")[0]
            where = f"{declarer}.{head}" if declarer else head
        # Outer submodels holding this stream only see the raw inputs (pixel values,
        # ids) that an inner encoder gets as embeddings.
        others = [d.name for (dc, k, r), ms in groups.items()
                  if self_streams.get((dc, k, r)) not in (None, stream) for d in ms]
        wheres = [where]
        parent = where
        while parent:
            parent = parent.rpartition(".")[0]
            if isinstance(modules.get(parent), PreTrainedModel) and not any(
                    _below(o, parent) for o in others):
                wheres.append(parent)
        tokens.append(TokenSource(stream, pattern=_exact(wheres), reader="hf_auto"))
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False) and (
            "encoder" not in self_names and any(s.key_stream == "encoder" for s in sites)):
        tokens.append(TokenSource("encoder", pattern=r"(^|\.)encoder$", reader="hf_auto"))
    sites_, tokens_ = _pooling_heads(modules, self_names)
    sites += sites_
    tokens += tokens_
    # Cross-attention streams composed with the self-attention streams around them
    # (decoder -> encoder is the built-in seq2seq chain already).
    chains = tuple(
        Chain(site.key_stream, site.query_stream,
              source_self=site.key_stream if site.key_stream in self_names else None,
              target_self=site.query_stream if site.query_stream in self_names else None,
              target_cross=site.stream)
        for site in sites if site.kind == "cross" and site.stream != "pool")
    cls = type(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return Adapter(
        name=f"hf_{model_type}" if model_type else f"hf_{cls.__name__}",
        classes=(f"{cls.__module__}.{cls.__qualname__}",),
        sites=tuple(sites), tokens=tuple(tokens), switch="hf_eager", chains=chains,
        description=f"derived from {cls.__name__}'s _can_record_outputs")


# --------------------------------------------------------------------------- returned

def _takes_output_attentions(model: torch.nn.Module) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "output_attentions" in params


def returned_site(path: str, level: tuple[str, ...] = ()) -> Site:
    """The stream of an attention tuple a model returns under output key ``path``.

    ``path`` is the dotted key path in the output (``"cross_attentions"``,
    ``"vision_model_output.attentions"``); ``level`` lists the attention keys returned
    beside it (same nesting). Streams are named from where the tuple comes from:
    ``attentions`` and ``encoder_attentions`` -> ``encoder``, ``decoder_attentions`` ->
    ``decoder``, ``cross_attentions`` -> ``cross`` (``decoder`` -> ``encoder``) where a
    decoder is returned beside it, else ``<query>_cross`` over ``<query>_memory``; other
    keys keep their name (``decoder_ngram_attentions`` -> ``decoder_ngram``). A nested
    output is named by its role (``vision_model_output`` -> ``vision``,
    ``text_output`` -> ``text``, ``multimodal_output`` -> ``multimodal``).

    Examples
    --------
    >>> returned_site("cross_attentions", ("encoder_attentions", "decoder_attentions",
    ...     "cross_attentions")).stream
    'cross'
    >>> returned_site("vision_model_output.attentions").stream
    'vision'
    """
    prefix, _, key = path.rpartition(".")
    base = key.removesuffix("attentions").rstrip("_")
    owner = ""
    if prefix:
        last = prefix.rpartition(".")[2]
        owner = _role(last) or last.removesuffix("_outputs").removesuffix(
            "_output").removesuffix("_model") or last

    def name(part: str) -> str:
        if not owner:
            return part or "encoder"
        if part in ("", "encoder") and owner not in ("encoder", "decoder"):
            return owner
        return f"{owner}_{part}" if part and part != owner else owner

    if base != "cross":
        return Site("^" + re.escape(path) + "$", name(base), causal=None, reader="returned")
    if not level or "decoder_attentions" in level or "encoder_attentions" in level:
        query, key_stream = name("decoder"), name("encoder")
    else:
        query = name("")
        key_stream = f"{query}_memory"
    stream = "cross" if (query, key_stream) == ("decoder", "encoder") else f"{query}_cross"
    return Site("^" + re.escape(path) + "$", stream, query=query, key=key_stream,
                reader="returned")


def returned_adapter(model: torch.nn.Module) -> Adapter | None:
    """An adapter reading the attention a Hugging Face model returns when called with
    ``output_attentions=True``, for models that declare none (``_can_record_outputs``)
    but return it (MPNet, DeBERTa, XLNet, FSMT, ProphetNet, LongT5, MVP, ...); None for
    other models.

    No module is hooked: during ``capture`` the call to ``model`` itself is given
    ``output_attentions=True`` (attention switched to eager), the returned tuples are
    read into the trace and removed from the output again, so the caller gets what it
    would have got without the capture. Streams are named by :func:`returned_site`.

    Examples
    --------
    >>> import transformers  # doctest: +SKIP
    >>> cfg = transformers.MPNetConfig(vocab_size=64, hidden_size=32,
    ...     num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)  # doctest: +SKIP
    >>> returned_adapter(transformers.MPNetModel(cfg)).streams  # doctest: +SKIP
    ('encoder',)
    """
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return None
    if not isinstance(model, PreTrainedModel) or not _takes_output_attentions(model):
        return None
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        keys = ("encoder_attentions", "decoder_attentions", "cross_attentions")
        tokens = (TokenSource("encoder", pattern=r"(^|\.)encoder$", special=("eos@last",)),
                  TokenSource("decoder", pattern=r"(^|\.)decoder$", causal=True))
    else:
        keys = ("attentions",)
        tokens = (TokenSource("encoder", pattern="^$", reader="hf_auto"),)
    sites = tuple(returned_site(k, keys) for k in keys)
    cls = type(model)
    model_type = getattr(config, "model_type", None)
    return Adapter(
        name=f"hf_{model_type}" if model_type else f"hf_{cls.__name__}",
        classes=(f"{cls.__module__}.{cls.__qualname__}",), sites=sites, tokens=tokens,
        switch="hf_eager",
        description=f"{cls.__name__}'s returned attentions (output_attentions=True)")

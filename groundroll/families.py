"""One record per model family: everything groundroll knows about it, in one place.

A :class:`Family` holds what capture, composition, grounding and loading need:

- ``adapter``: the registered capture adapter's name (None: sites derived from the
  model's own declarations, :mod:`groundroll.adapters.derive`);
- ``chains``: composition chains over its streams (:class:`groundroll.compose.Chain`);
- ``grounding``: the hooks grounding calls (:class:`Grounding`: input size,
  normalisation, text and image embeddings, pooling target, cross-attention run, dense
  rewrite support);
- ``loader``: how :func:`groundroll.zoo.load` builds it (:class:`HFLoader`).

:func:`family_for` finds the record of a model; :func:`register_family` adds one (one
file is enough for a new family: see ``tests/test_families.py``).

Examples
--------
>>> from groundroll.families import family_named
>>> family_named("hf_siglip").grounding.vision_target
'pool_queries'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

__all__ = ["Family", "Grounding", "CrossRun", "HFLoader", "register_family", "family_for",
           "family_named", "families", "hf_loader"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(int(s) for s in size)


def _features(out) -> torch.Tensor:
    """transformers 5 returns model outputs from ``get_*_features``; older a tensor."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    return pooled if pooled is not None else out[0]


@dataclass(frozen=True)
class CrossRun:
    """How a family's cross-attention maps are captured (``method="cross"``).

    Attributes
    ----------
    streams : tuple of str
        Streams to capture.
    run : callable
        ``run(model, pixels, ids, mask)``: the forward call that fills them.
    source, target : str
        Token streams of :func:`groundroll.compose.compose`.
    shift : int
        Row offset of a caption token: 1 when decoder row ``t`` predicts token ``t+1``
        (read ``"predict"``), else 0.
    score : callable, optional
        ``score(output, rows)``: the ``[batch]`` scores that gradient relevance
        (``compose_method="relevance"``) back-propagates, from ``run``'s output and the
        ``[batch]`` target row each copy explains. None: the family has no relevance.
    row_scores : bool
        Whether each target row has a score of its own (a decoder row: the
        log-probability of the token it predicts), so each row read is explained by a
        copy of its own; False: one score per caption (a matching logit).
    """

    streams: tuple[str, ...]
    run: Callable[..., Any]
    source: str = "vision"
    target: str = "text"
    shift: int = 0
    score: Callable[[Any, torch.Tensor], torch.Tensor] | None = None
    row_scores: bool = False


@dataclass(frozen=True)
class Grounding:
    """The calls text-prompted grounding makes on a model of the family.

    Every callable takes the model first. ``text_embeddings(model, enc)`` and
    ``image_embeddings(model, pixels)`` return unnormalised ``[batch, D]`` embeddings;
    ``vision_forward(model, pixels)`` runs the vision tower only (for rollout);
    ``score(model, pixels, enc)`` replaces the cosine score (BLIP's matching head).
    """

    image_size: Callable[[Any], tuple[int, int]]
    patch_size: Callable[[Any], tuple[int, int]]
    mean_std: Callable[[Any, Any], tuple[Sequence[float], Sequence[float]]]
    context_length: Callable[[Any, Any], int]
    image_embeddings: Callable[[Any, torch.Tensor], torch.Tensor]
    text_embeddings: Callable[[Any, dict], torch.Tensor] | None = None
    vision_forward: Callable[[Any, torch.Tensor], Any] | None = None
    #: ``"vision"``: read the class-token row; ``"pool_queries"``: through the pooling head.
    vision_target: str = "vision"
    vision_streams: tuple[str, ...] = ("vision",)
    tokenizer_style: str = "hf"          # "open_clip" (callable -> ids) or "hf"
    pad_to_max: bool = False
    cross: CrossRun | None = None
    score: Callable[..., torch.Tensor] | None = None
    #: whether the vision tower's class token (or pooling head) carries the image
    #: embedding, so gradient relevance and rollout read it (False: CoCa, BLIP)
    relevance: bool = True
    dense: bool = False                  # open_clip native ViT: dense rewrites apply
    #: why dense sources do not apply, when ``dense`` is False
    dense_reason: str = "dense sources rewrite the last block of an open_clip ViT tower"

    @property
    def contrastive(self) -> bool:
        """Whether prompts are scored by a text embedding (CLIP-style)."""
        return self.text_embeddings is not None


@dataclass(frozen=True)
class HFLoader:
    """How a Hugging Face family is loaded: a transformers class and its companion."""

    model_class: str          # attribute of the transformers package
    #: "tokenizer", "processor", "image_processor" or "tokenizer_and_image_processor"
    companion: str
    kind: str                 # coarse kind recorded in Bundle.meta["family"]
    #: attention implementation to load with (None: transformers' default)
    attn_implementation: str | None = None


@dataclass(frozen=True)
class Family:
    """One model family's record.

    Parameters
    ----------
    name : str
        Family name (``ModelHandle.family``, ``Trace.family`` for registered adapters).
    matches : callable
        ``matches(model) -> bool``.
    adapter : str, optional
        Registered adapter name; None when capture sites are derived.
    chains : tuple of Chain
        Composition chains over the family's streams.
    grounding : Grounding or callable, optional
        The grounding hooks, or ``grounding(model) -> Grounding`` when they depend on
        the instance; None for families grounding does not serve (translation models).
    loader : HFLoader, optional
    model_types : tuple of str
        Hugging Face ``config.model_type`` values (for loading by config).
    """

    name: str
    matches: Callable[[Any], bool] = field(repr=False)
    adapter: str | None = None
    chains: tuple = ()
    grounding: Grounding | Callable[[Any], Grounding] | None = None
    loader: HFLoader | None = None
    model_types: tuple[str, ...] = ()

    def grounding_for(self, model) -> Grounding | None:
        """The grounding hooks for this model instance."""
        if callable(self.grounding) and not isinstance(self.grounding, Grounding):
            return self.grounding(model)
        return self.grounding


_FAMILIES: list[Family] = []


def register_family(family: Family, *, first: bool = True) -> Family:
    """Add ``family``, consulted before the built-in ones unless ``first=False``; a
    family of the same name is replaced.

    Examples
    --------
    >>> from groundroll.families import Family, register_family  # doctest: +SKIP
    >>> register_family(Family("mine", matches=lambda m: hasattr(m, "mine")))  # doctest: +SKIP
    """
    if not isinstance(family, Family):
        raise TypeError(f"expected a Family, got {type(family).__name__}")
    _FAMILIES[:] = [f for f in _FAMILIES if f.name != family.name]
    _FAMILIES.insert(0, family) if first else _FAMILIES.append(family)
    return family


def families() -> list[str]:
    """Names of the registered families, consulted in this order."""
    return [f.name for f in _FAMILIES]


def family_named(name: str) -> Family:
    for family in _FAMILIES:
        if family.name == name:
            return family
    raise KeyError(f"no family {name!r}; families: {families()}")


def family_for(model) -> Family:
    """The record serving ``model``: a registered family, else one derived for a Hugging
    Face model with declared attention (dual encoders get CLIP-style grounding).

    Raises
    ------
    TypeError
        When no family serves the model; the message lists the families.
    """
    for family in _FAMILIES:
        if family.matches(model):
            return family
    derived = _derived_family(model)
    if derived is not None:
        return derived
    raise TypeError(
        f"groundroll has no family record for {type(model).__module__}."
        f"{type(model).__qualname__}; families: {families()}. Register one with"
        " groundroll.families.register_family(Family(...)).")


def _model_type(model) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def _classes(model) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(model).__mro__}


# --------------------------------------------------------------------------- open_clip

def _oc_image_size(model):
    return _pair(model.visual.image_size)


def _oc_patch_size(model):
    visual = model.visual
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "patch_embed"):
        return _pair(trunk.patch_embed.patch_size)
    return _pair(visual.patch_size)


def _oc_mean_std(model, processor):
    visual = model.visual
    return (getattr(visual, "image_mean", None) or OPENAI_MEAN,
            getattr(visual, "image_std", None) or OPENAI_STD)


def _oc_context(model, tokenizer):
    length = getattr(tokenizer, "context_length", None) or getattr(model, "context_length", None)
    return int(length or 77)


def _oc_vision_target(model) -> tuple[str, tuple[str, ...]]:
    trunk = getattr(model.visual, "trunk", None)
    if getattr(trunk, "attn_pool", None) is not None:
        return "pool_queries", ("vision", "pool")
    return "vision", ("vision",)


def _open_clip_grounding(model=None) -> Grounding:
    target, streams = _oc_vision_target(model) if model is not None else ("vision", ("vision",))
    native = model is None or getattr(model.visual, "trunk", None) is None
    return Grounding(
        image_size=_oc_image_size, patch_size=_oc_patch_size, mean_std=_oc_mean_std,
        context_length=_oc_context,
        image_embeddings=lambda m, pixels: m.encode_image(pixels),
        text_embeddings=lambda m, enc: m.encode_text(enc["input_ids"]),
        vision_target=target, vision_streams=streams, tokenizer_style="open_clip",
        dense=native,
        dense_reason="dense sources rewrite the last block of an open_clip ViT tower built"
                     " by open_clip itself; this model's vision tower is a timm trunk: use"
                     " method='relevance' or 'rollout'")


def _coca_cross_run(model, pixels, ids, mask):
    return model(pixels, ids)


def _coca_cross_score(out, rows):
    """``log p(labels[b, rows[b]])``: decoder row ``t`` predicts caption token ``t+1``
    under teacher forcing (open_clip returns those labels beside the logits)."""
    copies = torch.arange(rows.shape[0], device=out["logits"].device)
    logp = out["logits"][copies, rows].float().log_softmax(-1)          # [batch, V]
    return logp[copies, out["labels"][copies, rows]]


_COCA_GROUNDING = Grounding(
    image_size=_oc_image_size, patch_size=_oc_patch_size, mean_std=_oc_mean_std,
    context_length=_oc_context, image_embeddings=lambda m, pixels: m.encode_image(pixels),
    text_embeddings=lambda m, enc: m.encode_text(enc["input_ids"]),
    tokenizer_style="open_clip", relevance=False,
    cross=CrossRun(("vision", "pool", "text", "decoder", "decoder_cross"), _coca_cross_run,
                   source="vision", target="decoder", shift=1, score=_coca_cross_score,
                   row_scores=True))


def _is_open_clip(model) -> bool:
    return bool(_classes(model) & {"open_clip.model.CLIP", "open_clip.model.CustomTextCLIP"})


# --------------------------------------------------------------------------- HF towers

def _hf_vision_config(model):
    config = model.config
    return getattr(config, "vision_config", config)


def _hf_image_size(model):
    return _pair(_hf_vision_config(model).image_size)


def _hf_patch_size(model):
    return _pair(_hf_vision_config(model).patch_size)


def _hf_mean_std(default):
    def mean_std(model, processor):
        if processor is not None:
            return processor.image_mean, processor.image_std
        return default
    return mean_std


def _hf_context(model, tokenizer):
    limit = int(model.config.text_config.max_position_embeddings)
    tok_limit = getattr(tokenizer, "model_max_length", None)
    return min(limit, int(tok_limit)) if tok_limit and tok_limit < 10**6 else limit


def _hf_text(model, enc):
    return _features(model.get_text_features(**enc))


def _hf_image(model, pixels):
    return _features(model.get_image_features(pixel_values=pixels))


def _blip_cross_run(model, pixels, ids, mask):
    return model(input_ids=ids, attention_mask=mask, pixel_values=pixels, use_itm_head=True)


def _blip_cross_score(out, rows):
    """The image-text matching logit of "match" (the same for every text row)."""
    itm = out.itm_score if hasattr(out, "itm_score") else out[0]
    return itm[:, 1].float()


def _blip_score(model, pixels, enc):
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                pixel_values=pixels, use_itm_head=True)
    itm = out.itm_score if hasattr(out, "itm_score") else out[0]
    return itm.float().softmax(-1)[:, 1]


_HF_DUAL = dict(image_size=_hf_image_size, patch_size=_hf_patch_size,
                context_length=_hf_context, image_embeddings=_hf_image,
                text_embeddings=_hf_text)

_CLIP_GROUNDING = Grounding(mean_std=_hf_mean_std((OPENAI_MEAN, OPENAI_STD)), **_HF_DUAL)
_SIGLIP_GROUNDING = Grounding(
    mean_std=_hf_mean_std(((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))),
    **{**_HF_DUAL, "context_length": lambda m, t: int(
        m.config.text_config.max_position_embeddings)},
    vision_target="pool_queries", vision_streams=("vision", "pool"), pad_to_max=True)
_BLIP_GROUNDING = Grounding(
    mean_std=_hf_mean_std((OPENAI_MEAN, OPENAI_STD)), image_size=_hf_image_size,
    patch_size=_hf_patch_size, context_length=_hf_context,
    image_embeddings=lambda m, pixels: m.vision_model(pixel_values=pixels)[1],
    vision_forward=lambda m, pixels: m.vision_model(pixel_values=pixels),
    cross=CrossRun(("vision", "text", "text_cross"), _blip_cross_run, "vision", "text", 0,
                   score=_blip_cross_score),
    score=_blip_score, relevance=False)


# NaFlex towers (SigLIP2): the image goes in as flattened patches with their grid.
def _naflex_inputs(model, pixels):
    patch = _hf_vision_config(model).patch_size
    b, c, h, w = pixels.shape
    rows, cols = h // patch, w // patch
    x = pixels[:, :, :rows * patch, :cols * patch]
    x = x.reshape(b, c, rows, patch, cols, patch).permute(0, 2, 4, 3, 5, 1)
    x = x.reshape(b, rows * cols, patch * patch * c)
    return dict(pixel_values=x,
                pixel_attention_mask=torch.ones(b, rows * cols, dtype=torch.long,
                                                device=pixels.device),
                spatial_shapes=torch.tensor([[rows, cols]] * b, device=pixels.device))


def _naflex_image(model, pixels):
    return _features(model.get_image_features(**_naflex_inputs(model, pixels)))


def _naflex_size(model):
    side = int(round(_hf_vision_config(model).num_patches ** 0.5))
    patch = _hf_vision_config(model).patch_size
    return (side * patch, side * patch)


def _derived_grounding(model) -> Grounding | None:
    """CLIP-style grounding for a derived dual encoder (text and image features)."""
    if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
        return None
    from .adapters.derive import derive_adapter

    adapter = derive_adapter(model)
    if adapter is None or "vision" not in adapter.streams:
        return None
    pool = "pool" in adapter.streams
    naflex = "spatial_shapes" in __import__("inspect").signature(
        model.get_image_features).parameters
    return Grounding(
        image_size=_naflex_size if naflex else _hf_image_size, patch_size=_hf_patch_size,
        mean_std=_hf_mean_std(((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) if pool
                              else (OPENAI_MEAN, OPENAI_STD)),
        context_length=_hf_context, text_embeddings=_hf_text,
        image_embeddings=_naflex_image if naflex else _hf_image,
        vision_target="pool_queries" if pool else "vision",
        vision_streams=("vision", "pool") if pool else ("vision",), pad_to_max=pool)


def _derived_family(model) -> Family | None:
    model_type = _model_type(model)
    if model_type is None:
        return None
    from .adapters.derive import derive_adapter

    adapter = derive_adapter(model)
    if adapter is None:
        return None
    config = model.config
    if model_type == "vision-encoder-decoder":
        loader = CAPTIONER_LOADER
    elif getattr(config, "is_encoder_decoder", False):
        loader = HFLoader("AutoModelForSeq2SeqLM", "tokenizer", "hf_seq2seq")
    elif hasattr(config, "vision_config") and hasattr(config, "text_config"):
        loader = HFLoader("AutoModel", "processor", "hf_dual")
    elif getattr(model, "main_input_name", "") == "pixel_values":
        loader = HFLoader("AutoModel", "image_processor", "hf_encoder")
    else:
        loader = HFLoader("AutoModel", "tokenizer", "hf_encoder")
    name = f"hf_{model_type}"
    return Family(name, matches=lambda m, t=model_type: _model_type(m) == t,
                  adapter=None, chains=adapter.chains,
                  grounding=_derived_grounding(model), loader=loader,
                  model_types=(model_type,))


#: Image captioners (``VisionEncoderDecoderModel``): a tokenizer for the text and an image
#: processor for the pixels (no processor class joins them); eager attention, so that
#: attention weights can be read.
CAPTIONER_LOADER = HFLoader("VisionEncoderDecoderModel", "tokenizer_and_image_processor",
                            "hf_captioner", attn_implementation="eager")


def hf_loader(config) -> tuple[HFLoader, str | None]:
    """``(loader, adapter name)`` for a Hugging Face config, from the family records;
    an unknown model type gets the loader its config suggests (sites derived)."""
    for family in _FAMILIES:
        if config.model_type in family.model_types and family.loader is not None:
            return family.loader, family.adapter
    if config.model_type == "vision-encoder-decoder":
        return CAPTIONER_LOADER, None
    if getattr(config, "is_encoder_decoder", False):
        return HFLoader("AutoModelForSeq2SeqLM", "tokenizer", "hf_seq2seq"), None
    if hasattr(config, "vision_config") and hasattr(config, "text_config"):
        return HFLoader("AutoModel", "processor", "hf_dual"), None
    if hasattr(config, "image_size") and hasattr(config, "patch_size"):
        return HFLoader("AutoModel", "image_processor", "hf_encoder"), None
    return HFLoader("AutoModel", "tokenizer", "hf_encoder"), None


# --------------------------------------------------------------------------- registry

def _by_type(*types):
    return lambda m: _model_type(m) in types


def _open_clip_matches(model) -> bool:
    return _is_open_clip(model)


def _seq2seq(name, types):
    return Family(name, matches=_by_type(*types), adapter=name,
                  loader=HFLoader("AutoModelForSeq2SeqLM", "tokenizer", "hf_seq2seq"),
                  model_types=types)


for _family in (
    Family("open_clip_coca", matches=lambda m: "open_clip.coca_model.CoCa" in _classes(m),
           adapter="open_clip_coca", grounding=_COCA_GROUNDING),
    # Instance-dependent: a native ViT tower or a timm trunk (with or without a pool).
    Family("open_clip", matches=_open_clip_matches, adapter="open_clip",
           grounding=_open_clip_grounding),
    Family("hf_clip", matches=_by_type("clip"), adapter="hf_clip", grounding=_CLIP_GROUNDING,
           loader=HFLoader("CLIPModel", "processor", "hf_clip"), model_types=("clip",)),
    Family("hf_siglip", matches=_by_type("siglip"), adapter="hf_siglip",
           grounding=_SIGLIP_GROUNDING,
           loader=HFLoader("SiglipModel", "processor", "hf_siglip"), model_types=("siglip",)),
    Family("hf_blip", matches=_by_type("blip"), adapter="hf_blip", grounding=_BLIP_GROUNDING,
           loader=HFLoader("BlipForImageTextRetrieval", "processor", "hf_blip"),
           model_types=("blip",)),
    _seq2seq("hf_marian", ("marian",)),
    _seq2seq("hf_bart", ("bart", "mbart", "m2m_100", "pegasus")),
    _seq2seq("hf_t5", ("t5", "mt5")),
    Family("hf_bert", matches=_by_type("bert", "roberta", "xlm-roberta"), adapter="hf_bert",
           loader=HFLoader("AutoModel", "tokenizer", "hf_encoder"),
           model_types=("bert", "roberta", "xlm-roberta")),
    Family("hf_vit", matches=_by_type("vit", "deit"), adapter="hf_vit",
           loader=HFLoader("AutoModel", "image_processor", "hf_encoder"),
           model_types=("vit", "deit")),
):
    register_family(_family, first=False)
del _family


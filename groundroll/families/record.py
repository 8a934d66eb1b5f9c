"""The record of one model family: what capture, composition, grounding and loading
need to know about it (:class:`Family`, :class:`Grounding`, :class:`CrossRun`,
:class:`HFLoader`). Each built-in family fills one in its own module of
:mod:`groundroll.families`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..trace import Chain, Trace
from .sites import Adapter

__all__ = ["Family", "Grounding", "CrossRun", "Captioning", "Queries", "HFLoader",
           "OPENAI_MEAN", "OPENAI_STD"]

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

    The per-method hooks: ``legrad_lens(model)`` gives ``(blocks, head, batch_first)``
    for LeGrad (the vision tower's residual blocks, the map from a pooled token to the
    joint space, the blocks' layout) or None where the tower has no such lens;
    ``gradcam_layer(model)`` gives ``(layer, batch_first)``, the Grad-CAM target layer
    and whether its output is ``[batch, N, D]`` (None: a convolutional stage, no
    reshaping); ``dense_tower(model)`` gives the vision tower whose last block dense
    sources rewrite (raising TypeError where it cannot be rewritten).
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
    dense_tower: Callable[[Any], Any] | None = None
    legrad_lens: Callable[[Any], tuple | None] | None = None
    gradcam_layer: Callable[[Any], tuple] | None = None
    #: whether :func:`groundroll.explore.layer_maps` reads this family's vision tower
    #: (the class-token row of a CLIP-style tower, one map per layer)
    layer_maps: bool = False

    @property
    def contrastive(self) -> bool:
        """Whether prompts are scored by a text embedding (CLIP-style)."""
        return self.text_embeddings is not None


@dataclass(frozen=True)
class Queries:
    """Learned query tokens between the image and a language model that reads only them
    (BLIP-2's and InstructBLIP's Q-Former): the language model's image-token columns
    hold the queries, and each query reads the image tokens through a chain of its own.

    Attributes
    ----------
    chain : Chain
        From the image tokens (``chain.source``, the vision tower's stream) to the
        queries (``chain.target``): the tower's self-attention, then per block the
        queries' self-attention and their cross-attention to the image tokens.
    layers : callable
        ``layers(trace) -> Trace``: the captured trace as the chain reads it (each
        cross-attention layer indexed by the block it sits in, so that it pairs with
        that block's self-attention).
    """

    chain: Chain
    layers: Callable[[Trace], Trace]


@dataclass(frozen=True)
class Captioning:
    """The calls word grounding in captions (:func:`groundroll.ground_caption`) makes on
    a captioner of the family. Every callable takes the model first.

    Two kinds of captioner: an encoder-decoder (``columns`` None), whose decoder rows
    read the image tokens of another stream through cross-attention (``source`` the
    image tokens' stream, ``target`` the decoder's); and a decoder-only model whose
    language model attends over image tokens placed in its own sequence (``columns``
    set, ``source == target`` the language model's self-attention stream).

    Attributes
    ----------
    image_size, patch_size : callable
        ``(height, width)`` of the model input and of one patch.
    mean_std : callable
        ``mean_std(model, image_processor)``: the pixel normalisation.
    streams : tuple of str
        Layer streams to capture for the maps.
    source, target : str
        Token streams of the chain: image tokens and caption rows.
    forward : callable
        ``forward(model, pixels, ids) -> logits [batch, T, vocab]``, teacher-forced:
        row ``t`` predicts ``ids[:, t + 1]``. A decoder-only family's is also given
        ``prompt=``, the number of start ids (PaliGemma reads its prompt prefix
        bidirectionally).
    generate : callable
        ``generate(model, pixels, start, max_new_tokens) -> ids [1, T]``: greedy
        decoding from the ``start`` ids, which it returns first.
    start_ids : callable
        ``start_ids(model, tokenizer) -> list of int``: what the decoder input begins
        with before the caption's tokens.
    end_ids : callable
        ``end_ids(model, tokenizer) -> set of int``: ids that end a caption.
    grid : callable, optional
        ``grid(model, n_tokens) -> (prefix, (rows, cols))``: where the patch tokens sit
        among the ``n_tokens`` image tokens. Needed unless ``layout`` is given.
    columns : callable, optional
        Decoder-only models: ``columns(model, ids) -> LongTensor``, the positions of the
        image tokens in the language model's sequence for the input ``ids [1, T]``.
        Tokens the model puts before ``ids`` (GIT's image tokens) count in these
        positions and shift every text row by their number. None: an encoder-decoder.
    queries : Queries, optional
        Decoder-only models whose image-token columns are learned queries rather than
        patches (BLIP-2): the chain from the queries to the image tokens, composed with
        the same method as the language model and multiplied in. ``grid`` then places
        the patches among the vision tower's tokens.
    layout : callable, optional
        ``layout(model, scores) -> [W, rows, cols]``: scores over the ``[W, n_tokens]``
        image tokens as one patch grid over the model input, for image tokens that are
        not one grid (LLaVA-NeXT's whole image and its tiles); used instead of ``grid``.
    layers : callable, optional
        ``layers(trace) -> Trace``: the captured trace as the chain reads it, for a
        decoder whose self- and cross-attention sit in different layers (Llama 3.2
        Vision): each layer indexed by the decoder layer it sits in, so that the
        composer interleaves them in the model's order.
    """

    image_size: Callable[[Any], tuple[int, int]]
    patch_size: Callable[[Any], tuple[int, int]]
    mean_std: Callable[[Any, Any], tuple[Sequence[float], Sequence[float]]]
    streams: tuple[str, ...]
    source: str
    target: str
    forward: Callable[..., torch.Tensor]
    generate: Callable[..., torch.Tensor]
    start_ids: Callable[[Any, Any], list]
    end_ids: Callable[[Any, Any], set]
    grid: Callable[[Any, int], tuple[int, tuple[int, int]]] | None = None
    columns: Callable[[Any, torch.Tensor], torch.Tensor] | None = None
    queries: Queries | None = None
    layout: Callable[[Any, torch.Tensor], torch.Tensor] | None = None
    layers: Callable[[Trace], Trace] | None = None

    def __post_init__(self) -> None:
        if self.grid is None and self.layout is None:
            raise ValueError("Captioning needs grid= or layout= to map image tokens back"
                             " to pixels")

    @property
    def decoder_only(self) -> bool:
        """Whether the image tokens sit in the language model's own sequence."""
        return self.columns is not None


@dataclass(frozen=True)
class HFLoader:
    """How a Hugging Face family is loaded: a transformers class and its companion."""

    model_class: str          # attribute of the transformers package
    #: "tokenizer", "processor", "image_processor" or "tokenizer_and_image_processor"
    companion: str
    kind: str                 # coarse kind recorded in Bundle.meta["kind"]
    #: attention implementation to load with (None: transformers' default)
    attn_implementation: str | None = None


@dataclass(frozen=True)
class Family:
    """One model family's record.

    Parameters
    ----------
    name : str
        Family name (``ModelHandle.family``, ``Trace.family``, ``Bundle.meta["family"]``).
    matches : callable, optional
        ``matches(model) -> bool``; by default the adapter's own rule (its classes and
        model types), else ``model_types``.
    adapter : Adapter, optional
        The capture sites (:class:`~groundroll.families.sites.Adapter`); None when they
        are derived from the model's own declarations
        (:mod:`groundroll.families.derive`).
    chains : tuple of Chain
        Composition chains over the family's streams.
    grounding : Grounding or callable, optional
        The grounding hooks, or ``grounding(model) -> Grounding`` when they depend on
        the instance; None for families grounding does not serve (translation models).
    loader : HFLoader, optional
    model_types : tuple of str
        Hugging Face ``config.model_type`` values (for loading by config); by default
        the adapter's.
    generate_kwargs : callable, optional
        ``generate_kwargs(model, tokenizer) -> dict``: keywords the family's
        ``generate`` needs (a forced first token, ...), for translating aligners.
    captioning : Captioning, callable or str, optional
        The hooks of word grounding in captions, or ``captioning(model) -> Captioning``;
        None for families that do not caption images; a string for captioners whose
        words cannot be grounded in pixels: the reason, which
        :func:`groundroll.ground_caption` gives when it refuses them.
    """

    name: str
    matches: Callable[[Any], bool] | None = field(default=None, repr=False)
    adapter: Adapter | None = None
    chains: tuple = ()
    grounding: Grounding | Callable[[Any], Grounding] | None = None
    loader: HFLoader | None = None
    model_types: tuple[str, ...] = ()
    generate_kwargs: Callable[[Any, Any], dict] | None = field(default=None, repr=False)
    captioning: Captioning | Callable[[Any], Captioning] | str | None = field(
        default=None, repr=False)

    def __post_init__(self) -> None:
        if self.adapter is not None and not isinstance(self.adapter, Adapter):
            raise TypeError(f"family {self.name!r}: adapter must be an Adapter (capture"
                            f" sites), got {type(self.adapter).__name__}")
        if not self.model_types and self.adapter is not None:
            object.__setattr__(self, "model_types", tuple(self.adapter.model_types))
        if self.matches is None:
            if self.adapter is not None:
                object.__setattr__(self, "matches", self.adapter.matches)
            elif self.model_types:
                object.__setattr__(self, "matches", _by_model_type(self.model_types))
            else:
                raise ValueError(f"family {self.name!r} needs matches=, an adapter or"
                                 " model_types to know its models")

    def grounding_for(self, model) -> Grounding | None:
        """The grounding hooks for this model instance."""
        if callable(self.grounding) and not isinstance(self.grounding, Grounding):
            return self.grounding(model)
        return self.grounding

    @property
    def captions(self) -> bool:
        """Whether words of this family's captions can be grounded (not refused)."""
        return self.captioning is not None and not isinstance(self.captioning, str)

    def captioning_for(self, model) -> Captioning | None:
        """The caption grounding hooks for this model instance (None for a family that
        does not caption or is refused: :attr:`captioning` says why)."""
        if not self.captions:
            return None
        if callable(self.captioning) and not isinstance(self.captioning, Captioning):
            return self.captioning(model)
        return self.captioning


def model_type(model) -> str | None:
    """The Hugging Face ``config.model_type`` of ``model``, None for other models."""
    return getattr(getattr(model, "config", None), "model_type", None)


def class_names(model) -> set[str]:
    """Qualified names of the model's class and its bases."""
    return {f"{c.__module__}.{c.__qualname__}" for c in type(model).__mro__}


def _by_model_type(types: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda model: model_type(model) in types

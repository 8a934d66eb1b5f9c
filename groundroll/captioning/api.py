"""Ground each word of a caption in the image: ``ground_caption``.

The caption is the model's own (greedy ``generate`` up to a token limit) or given
(teacher-forced). Either way the model is run once more, teacher-forced on the caption,
with its attention captured; each word's map is read at the decoder rows that predict
the word's tokens (row ``t`` predicts token ``t + 1``), through the family's chain from
the image tokens to the caption rows (:mod:`groundroll.families`, ``Captioning``):

``"cross"``
    The last cross-attention layer, heads averaged: where the decoder read when it
    produced the word.
``"rollout"``
    Encoder rollout, then cross-attention and decoder self-attention composed layer by
    layer (:func:`groundroll.compose`, ``method="rollout"``).
``"relevance"``
    Chefer's rules for encoder-decoder attention, gradients from the log-probability of
    the word's tokens, one backward pass for all words (a copy of the input per word).
``"legrad"``
    The gradient of the word's log-probability with respect to each cross-attention
    layer's probabilities, positive part times the probabilities, summed over layers
    and heads (a LeGrad-style per-layer reading of the decoder).
``"phrase"``
    ``"relevance"``, then each run of adjacent content words ("red circle": a
    colour and the shape it qualifies) shares one map, the geometric mean of its
    words' maps (:func:`phrase_maps`): what the phrase names, where each word alone
    also lights up the other objects its word could describe. The run is read from the
    words alone (no parser): a noun followed by a verb ("dog running") is one run too.

A decoder-only model (LLaVA, LLaVA-NeXT, PaliGemma, Qwen2-VL, Idefics3, GIT:
``Captioning.columns`` set) has no cross-attention: its language model's self-attention
runs over image and text tokens in one sequence, and each method reads that stream,
keeping the columns of the image tokens: ``"cross"`` its last layer, heads averaged;
``"rollout"`` and ``"relevance"`` its rollout and Chefer relevance; ``"legrad"`` its
layers with their gradients. Tokens the model puts before the text (GIT's image tokens)
shift the rows. Image tokens that are not one patch grid (LLaVA-NeXT's base image and
tiles) are laid on one grid by the family (``Captioning.layout``).

A decoder-only model whose image-token columns are learned queries (BLIP-2 and
InstructBLIP: ``Captioning.queries``) adds one hop: each word's row over the queries is
multiplied by what each query reads from the image tokens, by the same method over the
Q-Former's chain (``"cross"`` its last cross-attention layer, ``"rollout"`` and
``"relevance"`` the composed chain, ``"legrad"`` its cross-attention layers with their
gradients).

With ``shifts=k`` (k > 1) the map is the mean of the maps of ``k * k`` inputs, the
letterboxed image moved right and down by ``i / k`` and ``j / k`` of a patch, each map
moved back (:func:`shift_averaged`): a patch grid of ``g`` cells then resolves ``k * g``
positions per side.

Maps go back to the image's pixels through the letterbox the model input was made with;
masks go through the superpixel refinement of :func:`groundroll.segment` and a
threshold per word.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import masks as M
from .._locks import locked, warning_scope
from ..adapters import capture
from ..alignment.subwords import word_ids_from_offsets, words_from_ids
from ..compose import compose
from ..families import (Captioning, families, family_for, family_named,
                        writes_text_from_images)
from ..grounding import load_image
from ..grounding._model import normalized_pixels
from ..grounding.segment import refine_inputs
from ..zoo import cached
from .result import CaptionGrounding

__all__ = ["ground_caption", "CaptionModel", "resolve_captioner", "word_masks",
           "refine_word_maps", "phrase_maps", "shift_averaged", "METHODS",
           "DEFAULT_CAPTIONER", "DEFAULT_METHOD", "FUNCTION_WORDS", "MAX_NEW_TOKENS"]

#: The model a call uses when none is named.
DEFAULT_CAPTIONER = "bundled:shapes-captioner"
#: Ways of reading a word's map (see the module's documentation).
METHODS = ("cross", "rollout", "relevance", "legrad", "phrase")
#: What a call uses when no method is named and the model has no measured default: the
#: best-scoring method that reads each word on its own (``benchmarks/captions.py``, the
#: captioner's card). ``"phrase"`` scores higher on the bundled captioner, whose captions
#: are runs of colour and shape words, but joins any adjacent content words of free text.
DEFAULT_METHOD = "relevance"
#: The token limit of a generated caption.
MAX_NEW_TOKENS = 32
#: Words flagged as not naming anything in the image (articles, conjunctions,
#: prepositions, auxiliaries); their maps are computed all the same.
FUNCTION_WORDS = frozenset("""
a an the and or but nor of in on at to for with by from into onto over under above below
near beside between behind next is are was were be been being has have had do does did
this that these those it its there here some any each every no not as than then so
""".split())
#: Threshold of a word's refined, min-max normalised map that its mask keeps.
MASK_THRESHOLD = 0.5
#: Sub-patch shifts per side of the input when a model has no measured default.
SHIFTS = 1
#: Methods that post-process another method's maps, and the method they read.
_READS = {"phrase": "relevance"}


@dataclass
class CaptionModel:
    """A captioner with its tokenizer and the family's caption hooks."""

    model: Any
    tokenizer: Any
    hooks: Captioning
    family: str
    name: str = ""
    image_processor: Any = None
    #: the model's measured defaults (``meta.json``'s ``caption_defaults``: ``method``,
    #: ``mask_threshold``, ``shifts``), for the options a call leaves unset
    defaults: dict = field(default_factory=dict)

    def default(self, option: str, fallback):
        """The model's measured default of ``option``, else ``fallback``."""
        return self.defaults.get(option, fallback)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.hooks.image_size(self.model))

    def pixels(self, image: np.ndarray) -> torch.Tensor:
        """``[1, 3, h, w]`` normalised float32 input from a uint8 image at the input size."""
        mean, std = self.hooks.mean_std(self.model, self.image_processor)
        return normalized_pixels([image], mean, std).to(self.device)


def resolve_captioner(model, *, tokenizer=None, device=None) -> CaptionModel:
    """A :class:`CaptionModel` for a Bundle, a ``groundroll.load`` spec string or a bare
    model with ``tokenizer=``.

    Raises
    ------
    TypeError
        When the model's family does not caption images; the message names the families
        that do.
    """
    if isinstance(model, CaptionModel):
        return model
    name = ""
    processor = None
    defaults: dict = {}
    if isinstance(model, str):
        name = model
        model = cached(model, device=str(device or "cpu"))
    bundle_model = getattr(model, "model", None)
    if bundle_model is not None and hasattr(model, "adapter"):        # a Bundle
        name = name or getattr(model, "name", "")
        processor = getattr(getattr(model, "preprocess", None), "image_processor", None)
        tokenizer = tokenizer or model.tokenizer
        defaults = dict((getattr(model, "meta", None) or {}).get("caption_defaults") or {})
        model = bundle_model
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a Bundle, a spec string such as"
                        f" {DEFAULT_CAPTIONER!r} or a torch model, got {type(model).__name__}")
    try:
        family = family_for(model)
    except TypeError:                    # no record at all: not a captioner groundroll knows
        family = None
    hooks = family.captioning_for(model) if family is not None else None
    if hooks is None:
        able = [n for n in families() if family_named(n).captions]
        if family is not None and isinstance(family.captioning, str):
            why = f"its words cannot be grounded in the image: {family.captioning}"
        elif writes_text_from_images(model):
            why = ("it writes text from images, but groundroll does not yet know how this"
                   " family's image tokens map back to pixels (describe them with"
                   " groundroll.families.register_family(Family(..., captioning="
                   "Captioning(...))))")
        else:
            why = "it is not an image captioner groundroll can ground words in"
        named = f"family {family.name!r}" if family is not None else "no family record"
        raise TypeError(f"{type(model).__name__} ({named}): {why};"
                        f" families that are: {', '.join(able)}")
    if tokenizer is None:
        raise ValueError("a bare model needs tokenizer=; or pass a Bundle from"
                         " groundroll.load")
    if device is not None and torch.device(device).type != next(model.parameters()).device.type:
        raise ValueError(f"device={str(device)!r} but the model is on"
                         f" {next(model.parameters()).device}; move the model there first")
    return CaptionModel(model, tokenizer, hooks, family.name, name or type(model).__name__,
                        processor, defaults)


# --------------------------------------------------------------------------- caption

def _caption_ids(cm: CaptionModel, caption: str) -> tuple[list[int], list | None]:
    """The caption's token ids (no special tokens added) and, from a fast tokenizer's
    offsets, the whitespace word of each token (unknown words keep their tokens)."""
    fast = getattr(cm.tokenizer, "is_fast", False)
    enc = cm.tokenizer(caption, add_special_tokens=False, return_offsets_mapping=fast)
    ids = [int(i) for i in enc["input_ids"]]
    if not ids:
        raise ValueError(f"caption {caption!r} gives no tokens")
    if not fast:
        return ids, None
    word_ids = word_ids_from_offsets(enc["offset_mapping"], [0] * len(ids), caption.split())
    return ids, word_ids


def _generated_ids(cm: CaptionModel, pixels: torch.Tensor, start: list[int],
                   max_new_tokens: int) -> tuple[list[int], bool]:
    """The generated caption's token ids (start and end tokens dropped) and whether the
    generation hit the token limit before an end token."""
    out = cm.hooks.generate(cm.model, pixels, start, max_new_tokens)[0].tolist()
    new = out[len(start):]
    ends = cm.hooks.end_ids(cm.model, cm.tokenizer)
    pad = getattr(cm.tokenizer, "pad_token_id", None)
    for k, token in enumerate(new):
        if token in ends:
            return [t for t in new[:k] if t != pad], False
    return [t for t in new if t != pad], True


def _check_known(tokenizer, ids: list[int]) -> None:
    """Refuse generated ids past the tokenizer's vocabulary: they decode to nothing, and
    mean the tokenizer is not the model's."""
    try:
        size = len(tokenizer)
    except TypeError:
        return
    outside = sorted({t for t in ids if t >= size})
    if outside:
        raise ValueError(f"the captioner generated token ids {outside[:5]} that its"
                         f" tokenizer does not have (it knows {size} tokens): pass the"
                         " tokenizer that belongs to this model")


def _words(cm: CaptionModel, ids: list[int], text: str, word_ids=None):
    """``(words, groups)``: the caption's words and, per word, the positions of its
    tokens in ``ids`` (subwords merged by the tokenizer's own offsets or markers)."""
    if word_ids is not None:
        words = text.split()
    else:
        enc = words_from_ids(cm.tokenizer, ids)
        words, word_ids = enc.words, enc.word_ids
    groups: list[list[int]] = [[] for _ in words]
    for position, word in enumerate(word_ids):
        if word is not None:
            groups[word].append(position)
    # A word's map is read at its own tokens, not at punctuation attached to it
    # ("circle," -> "circle").
    pieces = [str(t) for t in cm.tokenizer.convert_ids_to_tokens(list(ids))]
    for k, group in enumerate(groups):
        words_only = [p for p in group if any(c.isalnum() for c in pieces[p])]
        if words_only:
            groups[k] = words_only
    keep = [k for k, g in enumerate(groups) if g]
    return [words[k] for k in keep], [groups[k] for k in keep]


def _is_content(word: str) -> bool:
    core = word.strip(".,;:!?\"'()[]").lower()
    return bool(core) and core not in FUNCTION_WORDS and any(c.isalnum() for c in core)


# --------------------------------------------------------------------------- maps

def _patch_maps(cm: CaptionModel, rows: torch.Tensor, columns=None,
                queries: torch.Tensor | None = None) -> np.ndarray:
    """``[W, S]`` scores over the image tokens (over the whole sequence of a decoder-only
    model, of which ``columns`` are the image tokens) -> ``[W, rows, cols]`` patch
    maps. ``queries`` (``[1 or W, Q, S_image]``, see :func:`_query_map`) carries
    scores over learned query columns on to the image tokens."""
    if columns is not None:
        rows = rows[:, columns.to(rows.device)]
    if queries is not None:
        rows = (rows.float().unsqueeze(1) @ queries.to(rows.device)).squeeze(1)
    if cm.hooks.layout is not None:
        grids = cm.hooks.layout(cm.model, rows.float())
        return grids.cpu().numpy().astype(np.float32)
    prefix, (gh, gw) = cm.hooks.grid(cm.model, rows.shape[-1])
    patches = rows[:, prefix:prefix + gh * gw].float()
    return patches.reshape(-1, gh, gw).cpu().numpy().astype(np.float32)


def _read(source_map: torch.Tensor, groups: list[list[int]], shift: int, batch=None):
    """``[W, S]``: per word, the mean of the rows that predict its tokens."""
    rows = []
    for w, group in enumerate(groups):
        b = w if batch else 0
        rows.append(source_map[b, [shift + p - 1 for p in group]].mean(0))
    return torch.stack(rows)


def _word_maps(cm: CaptionModel, pixels: torch.Tensor, ids: list[int], start: list[int],
               groups: list[list[int]], method: str) -> tuple[np.ndarray, np.ndarray]:
    """``(maps [W, rows, cols], token log-probabilities [T])`` of the caption ``ids``."""
    hooks, model = cm.hooks, cm.model
    full = torch.tensor([start + ids], dtype=torch.long, device=pixels.device)
    shift = len(start)
    positions = torch.arange(shift - 1, shift - 1 + len(ids), device=pixels.device)
    targets = full[0, shift:]
    # A decoder-only model: the image tokens are columns of its own sequence, after
    # any tokens it puts before the ids (which shift the text rows).
    columns = hooks.columns(model, full) if hooks.decoder_only else None
    extra = {"prompt": shift} if hooks.decoder_only else {}
    if method in ("cross", "rollout"):
        with torch.no_grad(), capture(model, streams=list(hooks.streams)) as trace:
            logits = hooks.forward(model, pixels, full, **extra)
        trace = hooks.layers(trace) if hooks.layers is not None else trace
        logp = logits[0, positions].float().log_softmax(-1)[torch.arange(len(ids)), targets]
        if method == "cross":
            last = len(trace.layers[_attention_stream(trace, hooks)]) - 1
            comp = compose(trace, source=hooks.source, target=hooks.target, method="raw",
                           layers=(last,))
        else:
            comp = compose(trace, source=hooks.source, target=hooks.target,
                           method="rollout")
        rows = _read(comp.source_map, groups, shift + _offset(comp.source_map, full))
        return (_patch_maps(cm, rows, columns, _query_map(hooks, trace, method)),
                logp.cpu().numpy())
    # Gradient methods: one copy of the input per word, each explained by the
    # log-probability of its own word's tokens; one backward pass for all.
    n = len(groups)
    batch_pixels = pixels.float().repeat(n, 1, 1, 1)
    batch_ids = full.repeat(n, 1)
    with torch.enable_grad(), capture(
            model, grads=True, streams=list(hooks.streams)) as trace:
        logits = hooks.forward(model, batch_pixels, batch_ids, **extra)
        logp_all = logits[:, positions].float().log_softmax(-1)        # [n, T, V]
        token_logp = logp_all[:, torch.arange(len(ids)), targets]      # [n, T]
        chosen = torch.zeros_like(token_logp)
        for w, group in enumerate(groups):
            chosen[w, group] = 1.0
        trace.backward((token_logp * chosen).sum())
    logp = token_logp[0].detach().cpu().numpy()
    trace = trace.detach()
    trace = hooks.layers(trace) if hooks.layers is not None else trace
    queries = _query_map(hooks, trace, method)
    if method == "relevance":
        comp = compose(trace, source=hooks.source, target=hooks.target,
                       method="relevance")
        source_map = comp.source_map.float()
        rows = _read(source_map, groups, shift + _offset(source_map, full), batch=True)
        return _patch_maps(cm, rows, columns, queries), logp
    total = _legrad(trace.layers[_attention_stream(trace, hooks)])
    rows = _read(total, groups, shift + _offset(total, full), batch=True)
    return _patch_maps(cm, rows, columns, queries), logp


def _legrad(layers) -> torch.Tensor:
    """``[n, T, S]``: positive gradient times probability, summed over the ``layers``
    (``[n, heads, T, S]`` each, with their gradients) and their heads."""
    return sum((layer.grad.float().clamp(min=0) * layer.weights.float()).sum(1)
               for layer in layers)


def _query_map(hooks: Captioning, trace, method: str) -> torch.Tensor | None:
    """``[batch, Q, S]``: what each learned query (``hooks.queries``: BLIP-2's Q-Former)
    reads from the image tokens, by ``method`` over the queries' own chain; None for a
    model whose image-token columns are the image tokens themselves."""
    if hooks.queries is None:
        return None
    chain = hooks.queries.chain
    trace = hooks.queries.layers(trace)
    if method == "legrad":
        return _legrad(trace.stream(chain.target_cross))
    options = {"method": "raw", "layers": (-1,)} if method == "cross" else {"method": method}
    return compose(trace, source=chain.source, target=chain.target, chain=chain,
                   **options).source_map.float()


def shift_averaged(read, model_input: np.ndarray, grids: np.ndarray, *,
                   shifts: int) -> np.ndarray:
    """``[W, h, w]`` word maps at the model input's pixels, averaged over sub-patch
    shifts of the input.

    Parameters
    ----------
    read : callable
        ``read(image)`` -> ``[W, gh, gw]`` patch maps of a uint8 model input
        ``[h, w, 3]``.
    model_input : ndarray, shape [h, w, 3]
        The letterboxed image the model reads.
    grids : ndarray, shape [W, gh, gw]
        ``read(model_input)``, already computed.
    shifts : int
        Shifts per side: the input moves right and down by ``i * (h // gh) // shifts``
        and ``j * (w // gw) // shifts`` pixels (``i, j < shifts``), the uncovered edge
        black (the letterbox's fill).

    Returns
    -------
    ndarray, float32, shape [W, h, w], values in [0, 1]
        Per shift, each word's map with negatives clipped is divided by its maximum,
        resized bilinearly to the input's pixels and moved back; each pixel is the mean
        over the shifts that cover it.
    """
    h, w = model_input.shape[:2]
    gh, gw = grids.shape[1:]
    identity = M.letterbox_geometry((h, w), (h, w), mode="pad")
    total = np.zeros((len(grids), h, w), np.float64)
    count = np.zeros((h, w), np.float64)
    for i in range(shifts):
        for j in range(shifts):
            dy, dx = i * (h // gh) // shifts, j * (w // gw) // shifts
            moved = np.zeros_like(model_input)
            moved[dy:, dx:] = model_input[:h - dy, :w - dx]
            maps = grids if dy == dx == 0 else read(moved)
            maps = np.clip(np.asarray(maps, np.float64), 0.0, None)
            peak = maps.reshape(len(maps), -1).max(1)
            maps = maps / np.where(peak > 0, peak, 1.0)[:, None, None]
            up = M.unletterbox(maps, identity, order=1)
            total[:, :h - dy, :w - dx] += up[:, dy:, dx:]
            count[:h - dy, :w - dx] += 1
    return (total / count).astype(np.float32)


def phrase_maps(maps: np.ndarray, content, words=None) -> np.ndarray:
    """Word maps with each run of adjacent content words sharing one map.

    Parameters
    ----------
    maps : ndarray, shape [W, ...]
        Non-negative word maps.
    content : sequence of bool, length W
        Which words are content words; a run is a maximal stretch of them.
    words : sequence of str, optional
        The words; a word ending in punctuation (",", ";", ":", ".") ends its run.

    Returns
    -------
    ndarray, float32, same shape
        Each word of a run of two or more gets the geometric mean of the run's maps,
        each map divided by its maximum first (an all-zero map stays zero); other words
        keep their maps.

    Examples
    --------
    >>> maps = np.array([[1.0, 1.0], [4.0, 0.0], [1.0, 1.0]])
    >>> phrase_maps(maps, [True, True, False])
    array([[1., 0.],
           [1., 0.],
           [1., 1.]], dtype=float32)
    """
    maps = np.asarray(maps, np.float64)
    out = maps.copy()
    runs, run = [], []
    for k, is_content in enumerate(content):
        if is_content:
            run.append(k)
        if run and (not is_content or (words is not None
                                       and str(words[k]).endswith((",", ";", ":", ".")))):
            runs.append(run)
            run = []
    runs.append(run)
    for run in runs:
        if len(run) < 2:
            continue
        peak = maps[run].reshape(len(run), -1).max(1)
        scaled = maps[run] / np.where(peak > 0, peak, 1.0).reshape((-1,) + (1,) * (maps.ndim - 1))
        out[run] = np.prod(np.clip(scaled, 0.0, None), axis=0) ** (1.0 / len(run))
    return out.astype(np.float32)


def _offset(source_map: torch.Tensor, full: torch.Tensor) -> int:
    """How many tokens the model put before the ids in the rows of ``source_map``: 0
    for an encoder-decoder's decoder, GIT's image tokens for a decoder-only model."""
    return int(source_map.shape[-2]) - int(full.shape[1])


def _attention_stream(trace, hooks: Captioning) -> str:
    """The stream whose layers ``"cross"`` and ``"legrad"`` read: the cross-attention
    from the caption rows to the image tokens, or a decoder-only model's self-attention
    (text rows and image columns in one sequence)."""
    kind = "self" if hooks.decoder_only else "cross"
    for stream, layers in trace.layers.items():
        if layers and layers[0].kind == kind and layers[0].key_stream == hooks.source:
            return stream
    raise ValueError(f"the capture holds no {kind}-attention from {hooks.target!r} to"
                     f" {hooks.source!r}; streams: {trace.streams}")


# --------------------------------------------------------------------------- masks

def refine_word_maps(heatmaps: np.ndarray, image: np.ndarray, *,
                     refine: str = "superpixels", threshold: float = MASK_THRESHOLD,
                     cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(heatmaps, masks)`` from raw word heatmaps ``[W, H, W_img]`` in [0, 1] at the
    image's pixels.

    With ``refine="superpixels"`` each map is pooled over the image's superpixels (the
    partitions :func:`groundroll.segment` refines with) and min-max normalised; the mask
    keeps what is at least ``threshold`` of that range, and the heatmap returned is the
    mean of the raw map and the pooled one (its maximum then sits on the object rather
    than on a patch straddling its edge: with relevance maps of the bundled captioner the
    strict pointing game on held-out scenes goes from 0.37 / 0.43 to 0.66 / 0.62,
    ``benchmarks/captions.py``'s "pt raw" and "pointing" columns). With
    ``refine="none"`` the raw maps are thresholded and returned unchanged.
    """
    if refine not in ("superpixels", "none"):
        raise ValueError(f"refine must be 'superpixels' or 'none', got {refine!r}")
    if len(heatmaps) == 0:
        return heatmaps, np.zeros((0,) + image.shape[:2], bool)
    small_maps, small, partitions = refine_inputs(heatmaps, image, refine=refine,
                                                  cache=cache)
    if partitions is not None:
        small_maps = M.superpixel_pool(small_maps, partitions=partitions)
    norm = M.normalize_maps(np.asarray(small_maps, np.float32), how="minmax")
    masks = norm >= float(threshold)
    if masks.shape[1:] != image.shape[:2]:
        masks = M.resize_maps(masks.astype(np.float32), image.shape[:2], order=0) > 0.5
    if partitions is None:
        return heatmaps, masks
    pooled = norm if norm.shape[1:] == image.shape[:2] else \
        M.resize_maps(norm, image.shape[:2], order=1)
    heat = M.normalize_maps(0.5 * heatmaps + 0.5 * np.clip(pooled, 0, 1), how="minmax")
    return np.clip(heat, 0.0, 1.0).astype(np.float32), masks


def word_masks(heatmaps: np.ndarray, image: np.ndarray, *, refine: str = "superpixels",
               threshold: float = MASK_THRESHOLD, cache: dict | None = None) -> np.ndarray:
    """``[W, H, W]`` bool masks from word heatmaps at the image's pixels
    (:func:`refine_word_maps`'s masks)."""
    return refine_word_maps(heatmaps, image, refine=refine, threshold=threshold,
                            cache=cache)[1]


# --------------------------------------------------------------------------- entry

def ground_caption(image, caption: str | None = None, *, model: Any = DEFAULT_CAPTIONER,
                   method: str | None = None, max_new_tokens: int = MAX_NEW_TOKENS,
                   refine: str = "superpixels", mask_threshold: float | None = None,
                   shifts: int | None = None, tokenizer: Any = None,
                   device=None) -> CaptionGrounding:
    """Where in the image each word of a caption comes from.

    Parameters
    ----------
    image : str, PathLike, PIL.Image or ndarray
    caption : str, optional
        The caption to ground (teacher-forced). None: the model's own greedy caption.
    model : Bundle, str or torch model
        An image captioner (default: the bundled ``shapes-captioner``); a bare model
        needs ``tokenizer=``.
    method : {"cross", "rollout", "relevance", "legrad", "phrase"}, optional
        How a word's map is read (see :mod:`groundroll.captioning.api`); None: the
        model's measured default (its ``meta.json``'s ``caption_defaults``, written by
        ``benchmarks/captions.py --write-defaults``), else :data:`DEFAULT_METHOD`.
    max_new_tokens : int
        Token limit of a generated caption; a caption cut there is flagged
        (``truncated``).
    refine : {"superpixels", "none"}
        Mask refinement.
    mask_threshold : float, optional
        Fraction of a word's refined map range its mask keeps; None: the model's measured
        default, else :data:`MASK_THRESHOLD`.
    shifts : int, optional
        Sub-patch shifts per side of the input (:func:`shift_averaged`; ``shifts**2``
        model runs); 1: the input once. None: the model's measured default, else
        :data:`SHIFTS`.
    device : str or torch.device, optional
        Where the model runs: a spec string is loaded there; a loaded model must be
        there already.

    Returns
    -------
    CaptionGrounding
        ``caption``, ``words``, ``content`` (False for function words), ``heatmaps``
        (float32 ``[words, H, W]`` in [0, 1]), ``masks`` (bool ``[words, H, W]``),
        ``logprobs`` (per word), ``generated``, ``truncated``, ``settings``.

    Examples
    --------
    >>> import groundroll as gr
    >>> scene = gr.data.example_path()
    >>> result = gr.ground_caption(scene)
    >>> result.caption                                        # doctest: +SKIP
    'a red circle and a blue star'
    >>> result.heatmaps.shape[0] == len(result.words)
    True
    """
    started = time.perf_counter()
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) \
            or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if mask_threshold is not None and not 0.0 <= float(mask_threshold) <= 1.0:
        raise ValueError(f"mask_threshold must be in [0, 1], got {mask_threshold!r}")
    if shifts is not None and (not isinstance(shifts, int) or isinstance(shifts, bool)
                               or shifts < 1):
        raise ValueError(f"shifts must be a positive integer, got {shifts!r}")
    if caption is not None and (not isinstance(caption, str) or not caption.strip()):
        raise ValueError(f"caption must be a non-empty string or None, got {caption!r}")
    rgb = load_image(image)
    cm = resolve_captioner(model, tokenizer=tokenizer, device=device)
    method = cm.default("method", DEFAULT_METHOD) if method is None else method
    if mask_threshold is None:
        mask_threshold = float(cm.default("mask_threshold", MASK_THRESHOLD))
    if shifts is None:
        shifts = int(cm.default("shifts", SHIFTS))
    geometry = M.letterbox_geometry(rgb.shape[:2], cm.image_size, mode="pad")
    model_input = M.letterbox_image(rgb, geometry, fill=0)
    with warning_scope(), locked(cm.model):
        try:
            pixels = cm.pixels(model_input)
        except Exception as err:                          # noqa: BLE001 - reworded
            raise ValueError(f"the captioner cannot take this image ({err})") from err
        start = cm.hooks.start_ids(cm.model, cm.tokenizer)
        truncated = False
        if caption is None:
            ids, truncated = _generated_ids(cm, pixels, start, max_new_tokens)
            _check_known(cm.tokenizer, ids)
            if truncated:
                warnings.warn(f"the generated caption reached the token limit"
                              f" (max_new_tokens={max_new_tokens}, or the decoder's"
                              " positions) before ending; it is cut there"
                              " (result.truncated)", stacklevel=2)
            special = set(getattr(cm.tokenizer, "all_special_ids", None) or ())
            ids = [t for t in ids if t not in special]
            if not ids:
                raise ValueError("the captioner generated no words for this image (only"
                                 " special tokens); pass caption= to ground a given one")
            text = cm.tokenizer.decode(ids, skip_special_tokens=True).strip()
            word_ids = None
        else:
            text = caption.strip()
            ids, word_ids = _caption_ids(cm, text)
        unknown = getattr(cm.tokenizer, "unk_token_id", None)
        words, groups = _words(cm, ids, text, word_ids)
        known = [not (unknown is not None and all(ids[p] == unknown for p in g))
                 for g in groups]
        if not any(known):
            raise ValueError(f"no word of {text!r} is known to the captioner's tokenizer")
        read = _READS.get(method, method)
        grids, token_logp = _word_maps(cm, pixels, ids, start, groups, read)
        if shifts > 1:
            grids = shift_averaged(
                lambda moved: _word_maps(cm, cm.pixels(moved), ids, start, groups, read)[0],
                model_input, grids, shifts=shifts)
    content = np.array([_is_content(w) and k for w, k in zip(words, known)], bool)
    if method == "phrase":
        grids = phrase_maps(grids, content, words)
    heat = M.unletterbox(grids.astype(np.float32), geometry, order=1)
    heat = M.normalize_maps(heat, how="minmax").astype(np.float32)
    np.clip(heat, 0.0, 1.0, out=heat)
    heat, masks = refine_word_maps(heat, rgb, refine=refine, threshold=mask_threshold)
    logprobs = np.array([float(token_logp[g].sum()) for g in groups], np.float32)
    settings = {"model": cm.name, "family": cm.family, "method": method,
                "generated": caption is None, "max_new_tokens": max_new_tokens,
                "refine": refine, "mask_threshold": float(mask_threshold),
                "shifts": shifts,
                "image_size": list(rgb.shape[:2]), "model_input": list(cm.image_size),
                "token_ids": [int(i) for i in ids], "unknown_words":
                [w for w, k in zip(words, known) if not k],
                "seconds": round(time.perf_counter() - started, 4)}
    return CaptionGrounding(caption=text, words=words, content=content, heatmaps=heat,
                            masks=masks, logprobs=logprobs, generated=caption is None,
                            truncated=truncated, settings=settings, image=rgb)


"""Map sources: one ``[prompt, rows, cols]`` map on the patch grid per prompt.

Every source takes one image already at the model's input size (uint8
``[h, w, 3]``) and returns float32 maps on the patch grid; the geometry back to the
image lives in :mod:`groundroll.grounding.segment`.

==============  =====================================================================
method          what it reads
==============  =====================================================================
``relevance``   Chefer et al. gradient-weighted relevance of the vision stream read at
                the class token (SigLIP: through the pooling head), for the score
                ``logits_per_image[i, i]`` of image copy ``i`` with prompt ``i``; one
                backward pass for all prompts, in float32.
``rollout``     Plain attention rollout of the vision stream at the class token. It
                does not depend on the prompt: every prompt gets the same map.
``cross``       Text-token -> patch maps through cross-attention (CoCa: vision ->
                pooler -> decoder; BLIP: vision -> text encoder cross-attention); the
                prompt is the caption and its content tokens' rows are averaged.
``maskclip``,   Training-free dense patch features (:mod:`groundroll.grounding.dense`)
``sclip``,      compared with the text embeddings (cosine).
``clearclip``,
``naclip``
``legrad``      LeGrad (:mod:`groundroll.grounding.legrad`): positive gradients of each
                layer's score w.r.t. that layer's attention, averaged over heads, query
                rows and layers, read at the patch keys.
``gradcam``,    Through pytorch-grad-cam and captum
``ig``,         (:mod:`groundroll.grounding.attribution`); maps at the model input
``saliency``    resolution.
``ensemble``    Weighted mean of normalised maps of other sources
                (:mod:`groundroll.grounding.ensemble`).
==============  =====================================================================
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..adapters import capture
from ..compose import compose, method_options
from ._model import ModelHandle
from .dense import DENSE_METHODS
from .registry import source

__all__ = ["ATTENTION_METHODS", "DENSE_METHODS", "prompt_maps",
           "relevance_maps", "rollout_maps", "cross_maps", "caption_word_maps",
           "image_text_scores"]

ATTENTION_METHODS = ("relevance", "rollout", "cross")


def _patch_maps(rows: torch.Tensor, tokens) -> np.ndarray:
    """``[batch, N]`` scores over a vision token stream -> ``[batch, rows, cols]``
    patch maps (prefix tokens dropped, grid from the token metadata)."""
    gh, gw = tokens.grid
    patches = rows[:, tokens.patches]
    return patches.reshape(rows.shape[0], gh, gw).detach().float().cpu().numpy()


def relevance_maps(handle: ModelHandle, image: np.ndarray, prompts: Sequence[str], *,
                   templates: Sequence[str] | None = None) -> np.ndarray:
    """Gradient-weighted relevance maps ``[P, rows, cols]`` (float32, >= 0).

    The image is repeated once per prompt; the score of copy ``i`` is its logit with
    prompt ``i`` (``logit_scale * cos(image_i, text_i)``); the sum of these diagonal
    logits is back-propagated once, so each copy's attention gradients belong to its
    own prompt only.

    Examples
    --------
    >>> maps = relevance_maps(handle, image, ["a red circle", "a blue star"])
    ... # doctest: +SKIP
    >>> maps.shape  # doctest: +SKIP
    (2, 12, 12)
    """
    if not handle.grounding.relevance:
        raise ValueError(f"method='relevance' reads a CLIP-style vision tower; for"
                         f" {handle.family} use method='cross'")
    text = handle.text_embeddings(prompts, templates)            # [P, D]
    pixels = handle.prompt_copies(image, len(prompts)).requires_grad_(True)
    streams = list(handle.grounding.vision_streams)
    with handle.float32(), torch.enable_grad(), capture(handle.model, grads=True,
                                                        streams=streams) as trace:
        image_emb = handle.image_embeddings(pixels)          # [P, D]
        logits = handle.logit_scale() * (image_emb * text).sum(-1)
        # Gradients w.r.t. the input only: parameters keep no .grad of ours.
        torch.autograd.grad(logits.sum(), pixels)
    tokens = trace.tokens["vision"]
    if handle.grounding.vision_target != "vision":      # through a pooling head
        comp = compose(trace, source="vision", target=handle.grounding.vision_target,
                       method="relevance")
        rows = comp.source_map[:, 0]
    else:
        comp = compose(trace, source="vision", target="vision", method="relevance",
                       rows="cls")
        rows = comp.source_map[:, 0]
    return _patch_maps(rows, tokens)


@torch.no_grad()
def rollout_maps(handle: ModelHandle, image: np.ndarray, prompts: Sequence[str], *,
                 residual: float = 0.5, head_fusion: str = "mean") -> np.ndarray:
    """Plain attention rollout at the class token, ``[P, rows, cols]``.

    The map does not depend on the prompts; it is repeated once per prompt (the
    reference that prompt-specific methods are measured against).
    """
    pixels = handle.pixels([image])
    model = handle.model
    if handle.grounding.vision_target != "vision":      # through a pooling head
        with capture(model, streams=list(handle.grounding.vision_streams)) as trace:
            handle.image_embeddings(pixels)
        comp = compose(trace, source="vision", target=handle.grounding.vision_target,
                       method="rollout",
                       residual=residual, head_fusion=head_fusion)
        rows = comp.source_map[:, 0]
    else:
        options = {"rows": [0], "residual": residual, "head_fusion": head_fusion}
        with capture(model, streams=["vision"], reduce=options) as trace:
            handle.vision_forward(pixels)
        rows = trace.reduced["vision"][:, 0]
    maps = _patch_maps(rows, trace.tokens["vision"])
    return np.repeat(maps, len(prompts), axis=0)


def _cross_source_map(handle: ModelHandle, image: np.ndarray, texts: Sequence[str], *,
                      compose_method: str, read: str, residual: float,
                      weighting: str = "attention"):
    """``[P, T, S]`` text-row x vision-token map of each text run as the caption, with
    the row offset of each text position and the token metadata."""
    run = handle.grounding.cross
    if run is None:
        raise ValueError(f"method='cross' needs a model with cross-attention (open_clip"
                         f" CoCa, BLIP retrieval); got {handle.family}")
    if read not in ("predict", "input"):
        raise ValueError(f"read must be 'predict' or 'input', got {read!r}")
    enc = handle.tokenize(texts)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    # A decoder row t predicts text token t + 1 (run.shift); "input" reads row t.
    shift = run.shift if read == "predict" else 0
    values = compose_method == "norm" or weighting == "norm"
    if compose_method == "relevance":
        # The decoder has one row per input token less the shift (CoCa's teacher
        # forcing drops the last token); rows outside it are not read.
        read_rows = [[t - shift for t in keep if 0 <= t - shift < ids.shape[1] - run.shift]
                     for keep in handle.content_positions(ids, mask)]
        source_map, tokens = _cross_relevance(handle, run, image, ids, mask, read_rows,
                                              values=values, weighting=weighting)
        return source_map, ids, mask, shift, tokens
    pixels = handle.pixels([image]).repeat(len(texts), 1, 1, 1)
    model = handle.model
    with capture(model, streams=list(run.streams), values=values) as trace:
        run.run(model, pixels, ids, mask)
    # raw and norm read single layers: no residual to weigh.
    mixing = {"residual": residual} if "residual" in method_options(compose_method) else {}
    comp = compose(trace, source=run.source, target=run.target, method=compose_method,
                   weighting=weighting, **mixing)
    return comp.source_map, ids, mask, shift, trace.tokens["vision"]


def _cross_relevance(handle: ModelHandle, run, image: np.ndarray, ids: torch.Tensor,
                     mask: torch.Tensor, read_rows: list[list[int]], *, values: bool,
                     weighting: str):
    """``[P, T, S]`` Chefer relevance of the rows ``read_rows[p]`` of each prompt (the
    other rows stay zero), and the vision token metadata.

    Each read row is explained by its own score where the family has one per row
    (``run.row_scores``: a CoCa decoder row by the log-probability of the token it
    predicts), else every row of a prompt by the prompt's score (BLIP: the matching
    logit). The input is copied once per (prompt, score); the sum of the copies' scores
    is back-propagated once, so each copy's attention gradients are its own score's.
    """
    if run.score is None:
        raise ValueError(f"compose_method='relevance' needs a score to back-propagate,"
                         f" and {handle.family} declares none; use 'rollout', 'raw' or"
                         " 'norm'")
    copies = [(p, rows[i:i + 1] if run.row_scores else rows)
              for p, rows in enumerate(read_rows)
              for i in range(len(rows) if run.row_scores else min(1, len(rows)))]
    if not copies:
        raise ValueError("no prompt has content tokens to ground")
    owner = torch.tensor([p for p, _ in copies])
    explained = torch.tensor([rows[0] for _, rows in copies])
    pixels = handle.prompt_copies(image, len(copies))
    model = handle.model
    with handle.float32(), torch.enable_grad(), capture(
            model, grads=True, streams=list(run.streams), values=values) as trace:
        device = pixels.device
        out = run.run(model, pixels, ids[owner].to(device), mask[owner].to(device))
        trace.backward(run.score(out, explained.to(device)).sum())
    comp = compose(trace.detach(), source=run.source, target=run.target,
                   method="relevance", weighting=weighting)
    maps = comp.source_map.float()
    out_map = maps.new_zeros(len(read_rows), *maps.shape[1:])
    for c, (p, rows) in enumerate(copies):
        out_map[p, rows] = maps[c, rows]
    return out_map, trace.tokens["vision"]


@torch.no_grad()
def cross_maps(handle: ModelHandle, image: np.ndarray, prompts: Sequence[str], *,
               compose_method: str = "rollout", read: str = "predict",
               residual: float = 0.5, weighting: str = "attention") -> np.ndarray:
    """Text-token -> patch maps through cross-attention, ``[P, rows, cols]``.

    Each prompt is run as the caption of the image. ``compose_method`` is the
    :func:`~groundroll.compose.compose` method of the chain (CoCa: vision -> pool ->
    decoder, BLIP: vision -> text). The prompt's map is the mean of the rows of its
    content tokens (special tokens excluded). For CoCa's decoder, ``read="predict"``
    reads the row that predicts each word, ``read="input"`` the row where the word is
    the decoder input. ``weighting="norm"`` weights attention by value norms.
    ``compose_method="relevance"`` back-propagates the family's score in float32 (CoCa:
    each row read by the log-probability of the token that row predicts; BLIP: the
    image-text matching logit).
    """
    source_map, ids, mask, shift, tokens = _cross_source_map(
        handle, image, prompts, compose_method=compose_method, read=read,
        residual=residual, weighting=weighting)
    rows = []
    for p, keep in enumerate(handle.content_positions(ids, mask)):
        keep = [t - shift for t in keep if 0 <= t - shift < source_map.shape[1]]
        if not keep:
            raise ValueError(f"prompt {prompts[p]!r} has no content tokens to ground")
        rows.append(source_map[p, keep].mean(0))
    return _patch_maps(torch.stack(rows), tokens)


@torch.no_grad()
def caption_word_maps(handle: ModelHandle, image: np.ndarray, caption: str, *,
                      compose_method: str = "rollout", read: str = "predict",
                      residual: float = 0.5) -> tuple[list[str], np.ndarray]:
    """One cross-attention map per content token of ``caption``.

    Returns
    -------
    words : list of str
        Token strings of the caption's content tokens.
    maps : ndarray of float32, shape [len(words), rows, cols]
    """
    source_map, ids, mask, shift, tokens = _cross_source_map(
        handle, image, [caption], compose_method=compose_method, read=read,
        residual=residual)
    keep = [t for t in handle.content_positions(ids, mask)[0]
            if 0 <= t - shift < source_map.shape[1]]
    if not keep:
        raise ValueError(f"caption {caption!r} has no content tokens to ground")
    words = handle.token_strings(ids[0, keep])
    maps = _patch_maps(source_map[0, [t - shift for t in keep]], tokens)
    return words, maps


@torch.no_grad()
def image_text_scores(handle: ModelHandle, image: np.ndarray, prompts: Sequence[str], *,
                      templates: Sequence[str] | None = None) -> np.ndarray:
    """Per-prompt score ``[P]`` of the whole image: cosine similarity of the image and
    text embeddings (BLIP: image-text matching probability).
    """
    pixels = handle.pixels([image])
    if handle.grounding.score is not None:              # e.g. BLIP's matching head
        enc = handle.tokenize(prompts)
        score = handle.grounding.score(handle.model, pixels.repeat(len(prompts), 1, 1, 1),
                                       enc)
        return score.cpu().numpy().astype(np.float32)
    text = handle.text_embeddings(prompts, templates)
    image_emb = handle.image_embeddings(pixels)
    return (image_emb @ text.T)[0].cpu().numpy().astype(np.float32)


def prompt_maps(handle: ModelHandle, image: np.ndarray, prompts: Sequence[str], *,
                method: str = "relevance", templates: Sequence[str] | None = None,
                **options) -> np.ndarray:
    """``[P, rows, cols]`` float32 maps of the source ``method`` for one image at the
    model's input size (:data:`groundroll.grounding.registry.SOURCES`; ``options``
    are checked against the source's options).

    Attention sources give non-negative relevance (scale differs per prompt); dense
    sources give cosine similarities in [-1, 1], comparable across prompts.
    """
    return source(method).maps(handle, image, prompts, templates=templates, **options)

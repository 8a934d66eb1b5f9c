"""LeGrad: layer-wise gradients of the image-text score w.r.t. attention maps.

Bousselham et al. 2024, "LeGrad: An Explainability Method for Vision Transformers via
Feature Formation Sensitivity". For every layer ``l`` of the vision tower the tokens
leaving the block are pooled and sent through the tower's own head (``ln_post`` and
``proj`` for open_clip, ``post_layernorm`` and ``visual_projection`` for Hugging Face
CLIP), giving a per-layer image embedding ``e_l`` and the score
``s_l = <e_l / |e_l|, t>`` with the prompt's text embedding ``t``. The map is

    ``sum_l mean_{head, query} clamp(d s_l / d A^(l), min=0)[:, :, :, patches]``

read at the patch keys. ``score="final"`` uses the model's own final score ``s_L`` for
every layer instead (one backward pass; any tower that :func:`~groundroll.adapters.capture`
supports).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..adapters import capture
from ._model import ModelHandle

__all__ = ["legrad_maps"]


def _lens(handle: ModelHandle):
    """``(blocks, head, batch_first)``: the vision tower's residual blocks, a function
    sending a pooled ``[batch, D]`` token to the joint embedding space, and whether the
    blocks' outputs are ``[batch, N, D]``; None where unknown."""
    lens = handle.grounding.legrad_lens
    return lens(handle.model) if lens is not None else None


def _in_graph(weights: torch.Tensor):
    """``(tensor, to_weights)``: the tensor autograd can differentiate with respect to
    and the map from its gradient to the gradient of ``weights``.

    nn.MultiheadAttention returns a view of the probabilities it multiplied with the
    values; the view itself is not on the path to the output, its base is.
    """
    base = weights._base if weights._is_view() else None
    if base is None:
        return weights, lambda g: g
    size, stride = weights.size(), weights.stride()
    offset = weights.storage_offset() - base.storage_offset()
    return base, lambda g: g.contiguous().as_strided(size, stride, offset)


@contextmanager
def _block_outputs(blocks):
    """Collect each block's output ``[batch, N, D]`` (graph kept) in a list."""
    outputs: list[torch.Tensor] = []
    handles = []

    def hook(_module, _inputs, output):
        outputs.append(output[0] if isinstance(output, (tuple, list)) else output)

    try:
        for block in blocks:
            handles.append(block.register_forward_hook(hook))
        yield outputs
    finally:
        for h in handles:
            h.remove()


def legrad_maps(handle: ModelHandle, image: np.ndarray, prompts: Sequence[str], *,
                templates: Sequence[str] | None = None, score: str = "layer",
                pool: str = "mean", start_layer: int = 0) -> np.ndarray:
    """LeGrad maps ``[P, rows, cols]`` (float32, >= 0) for one image at the model's
    input size.

    Parameters
    ----------
    handle : ModelHandle
        A CLIP-style model (open_clip ViT, Hugging Face CLIP; SigLIP with
        ``score="final"``).
    image : ndarray of uint8, shape [h, w, 3]
    prompts : sequence of str
    templates : sequence of str, optional
        Prompt templates averaged into each text embedding.
    score : {"layer", "final"}
        ``"layer"`` (the paper): each layer's gradient comes from that layer's own
        score through the tower's head. ``"final"``: the model's final score for every
        layer (one backward pass).
    pool : {"mean", "cls"}
        How a layer's tokens are pooled before the head (``"layer"`` only): the mean
        over all tokens (the paper) or the class token.
    start_layer : int
        First layer that contributes (0-based; negative counts from the end).

    Returns
    -------
    ndarray of float32, shape [P, rows, cols]

    Examples
    --------
    >>> from groundroll.grounding import resolve_model
    >>> handle = resolve_model("bundled:shapes-clip")                # doctest: +SKIP
    >>> legrad_maps(handle, image, ["a red circle"]).shape            # doctest: +SKIP
    (1, 12, 12)
    """
    if score not in ("layer", "final"):
        raise ValueError(f"score must be 'layer' or 'final', got {score!r}")
    if pool not in ("mean", "cls"):
        raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
    if not handle.grounding.relevance:
        raise ValueError(f"method='legrad' reads a CLIP-style vision tower; for"
                         f" {handle.family} use method='cross'")
    lens = _lens(handle) if score == "layer" else None
    if score == "layer" and lens is None:
        raise ValueError(f"LeGrad's per-layer score needs a ViT tower with a known head;"
                         f" {handle.family} is not supported: pass score='final'")
    text = handle.text_embeddings(prompts, templates)            # [P, D]
    pixels = handle.prompt_copies(image, len(prompts)).requires_grad_(True)
    streams = list(handle.grounding.vision_streams)
    with handle.float32(), torch.enable_grad():
        blocks = lens[0] if lens else []
        with _block_outputs(blocks) as outputs, capture(handle.model, grads=True,
                                                        streams=streams) as trace:
            image_emb = handle.image_embeddings(pixels)      # [P, D]
        layers = trace.stream("vision")
        weights = [layer.weights for layer in layers]
        bases = [_in_graph(w) for w in weights]
        first = start_layer % len(weights) if start_layer < 0 else start_layer
        if not 0 <= first < len(weights):
            raise ValueError(f"start_layer {start_layer} outside the {len(weights)}"
                             f" layers of the vision tower")
        total = None
        if score == "final":
            final = (image_emb * text).sum()
            raw = torch.autograd.grad(final, [b for b, _ in bases[first:]])
            grads = [view(g) for g, (_, view) in zip(raw, bases[first:])]
        else:
            if len(outputs) != len(weights):
                raise RuntimeError(f"{len(outputs)} block outputs for {len(weights)}"
                                   f" attention layers; cannot pair them")
            grads = []
            for l in range(first, len(weights)):
                tokens = outputs[l] if lens[2] else outputs[l].transpose(0, 1)
                pooled = tokens.mean(1) if pool == "mean" else tokens[:, 0]
                emb = F.normalize(lens[1](pooled).float(), dim=-1)
                s_l = (emb * text).sum()
                base, view = bases[l]
                grad = torch.autograd.grad(s_l, base, retain_graph=True)[0]
                grads.append(view(grad))
        for g in grads:
            # [P, H, Q, K] -> positive part, mean over heads and query rows -> [P, K]
            part = g.float().clamp(min=0).mean(dim=(1, 2))
            total = part if total is None else total + part
    tokens_meta = trace.tokens["vision"]
    gh, gw = tokens_meta.grid
    maps = total[:, tokens_meta.patches].reshape(len(prompts), gh, gw)
    return maps.detach().cpu().numpy().astype(np.float32)

"""Training-free dense patch features for open_clip ViT towers.

CLIP's last block mixes every patch with the class token's view of the image, so its
patch tokens are poor local descriptors. The methods below rewrite only the last
residual block, reversibly, inside :func:`dense_rewrite` (a forward hook bound to
the call replaces the block's output; the block's ``forward`` is never touched).
Patch tokens then go through ``ln_post`` and ``proj`` as the class token does, and
are compared with the text embeddings by cosine similarity.

Notation for the last block with input ``x``: ``h = ln_1(x)``, ``q, k, v`` the
multi-head projections of ``h``, ``O`` the output projection, ``s = head_dim ** -0.5``.

=============  ==================================================================
method         last block output
=============  ==================================================================
``maskclip``   ``O(v)``: value path only, no query-key attention, no residual, no
               FFN (Zhou et al. 2022).
``sclip``      ``x + O((softmax(s q q^T) + softmax(s k k^T)) v)``: correlative
               self-attention, residual kept, no FFN (Wang et al. 2024).
``clearclip``  ``O(softmax(s q q^T) v)``: query-query attention without the residual
               and without the FFN (Lan et al. 2024).
``naclip``     ``O(softmax(s k k^T + G) v)``: key-key attention plus a Gaussian
               neighbourhood prior ``G_ij = exp(-|p_i - p_j|^2 / (2 sigma^2))`` over
               patch positions (zero for prefix tokens); no residual, no FFN
               (Hajimiri et al. 2025, "reduced" architecture).
=============  ==================================================================
"""

from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..families import family_for
from ._model import ModelHandle
from .._locks import locked

__all__ = ["DENSE_METHODS", "dense_rewrite", "dense_features", "dense_maps"]

DENSE_METHODS = ("maskclip", "sclip", "clearclip", "naclip")


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """``[batch, N, D]`` -> ``[batch, head, N, D / head]``."""
    b, n, d = t.shape
    return t.view(b, n, heads, d // heads).transpose(1, 2)


def _merge(t: torch.Tensor) -> torch.Tensor:
    """``[batch, head, N, d]`` -> ``[batch, N, head * d]``."""
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def _qkv(attn: torch.nn.MultiheadAttention, h: torch.Tensor):
    if not attn._qkv_same_embed_dim:
        raise TypeError("dense rewrites need nn.MultiheadAttention with a fused in_proj")
    return F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)


def _gaussian_prior(n: int, grid: tuple[int, int], sigma: float, like: torch.Tensor):
    """``[N, N]`` additive prior: Gaussian of patch distance, zero on prefix tokens."""
    gh, gw = grid
    prefix = n - gh * gw
    yy, xx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], -1).float()
    d2 = torch.cdist(pos, pos).pow(2)
    prior = torch.zeros(n, n)
    prior[prefix:, prefix:] = torch.exp(-d2 / (2 * sigma ** 2))
    return prior.to(like.device, like.dtype)


def _rewritten_forward(block, method: str, grid: tuple[int, int], sigma: float,
                       q_x: torch.Tensor, k_x=None, v_x=None, attn_mask=None):
    attn = block.attn
    batch_first = getattr(attn, "batch_first", False)
    x = q_x if batch_first else q_x.transpose(0, 1)              # [batch, N, D]
    h = block.ln_1(x)
    q, k, v = _qkv(attn, h)
    if method == "maskclip":
        out = attn.out_proj(v)
    else:
        heads = attn.num_heads
        q, k, v = _heads(q, heads), _heads(k, heads), _heads(v, heads)
        scale = q.shape[-1] ** -0.5
        if method == "sclip":
            weights = ((q @ q.transpose(-1, -2)) * scale).softmax(-1) + (
                (k @ k.transpose(-1, -2)) * scale).softmax(-1)
        elif method == "clearclip":
            weights = ((q @ q.transpose(-1, -2)) * scale).softmax(-1)
        elif method == "naclip":
            logits = (k @ k.transpose(-1, -2)) * scale
            weights = (logits + _gaussian_prior(x.shape[1], grid, sigma, logits)).softmax(-1)
        else:
            raise ValueError(f"unknown dense method {method!r}")
        out = attn.out_proj(_merge(weights @ v))
        if method == "sclip":
            out = x + block.ls_1(out)
    return out if batch_first else out.transpose(0, 1)


def _visual(model):
    """The vision tower whose last block is rewritten, from the model's family record."""
    try:
        hooks = family_for(model).grounding_for(model)
    except TypeError:
        hooks = None
    tower = getattr(hooks, "dense_tower", None)
    if tower is None:
        raise TypeError("dense sources need an open_clip ViT vision tower with stock"
                        " ResidualAttentionBlock / nn.MultiheadAttention blocks")
    return tower(model)


@contextmanager
def dense_rewrite(model, method: str, *, sigma: float = 5.0) -> Iterator[None]:
    """Rewrite the last block of an open_clip ViT tower for dense features.

    Inside the block, calls of ``model.visual.transformer.resblocks[-1]`` made by the
    calling thread return the ``method``'s output (see the module docstring). The
    block's ``forward`` is never replaced: a forward hook, bound to this call and to
    the calling thread, replaces the block's output, and the model's lock
    (:func:`groundroll._locks.model_lock`) is held for the whole block, so concurrent
    calls on the same model wait and calls from other threads see the stock block.
    On exit, also after an exception, the hook is removed and the model's outputs
    are exactly what they were.

    Parameters
    ----------
    model : open_clip CLIP (or its ``visual`` tower's parent)
    method : {"maskclip", "sclip", "clearclip", "naclip"}
    sigma : float
        NACLIP's Gaussian width in patches.

    Examples
    --------
    >>> with dense_rewrite(model, "clearclip"):        # doctest: +SKIP
    ...     tokens = model.visual.transformer(x)
    """
    if method not in DENSE_METHODS:
        raise ValueError(f"method must be one of {DENSE_METHODS}, got {method!r}")
    visual = _visual(model)
    block = visual.transformer.resblocks[-1]
    grid = tuple(visual.grid_size)
    owner = threading.get_ident()

    def rewrite(module, args, kwargs, output):
        if threading.get_ident() != owner:
            return None                     # another thread's plain call: stock output
        bound = inspect.signature(_rewritten_forward).bind_partial(
            module, method, grid, sigma, *args, **kwargs)
        return _rewritten_forward(**bound.arguments)

    with locked(model):
        handle = block.register_forward_hook(rewrite, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()


@torch.no_grad()
def dense_features(model, pixels: torch.Tensor, method: str, *,
                   sigma: float = 5.0) -> torch.Tensor:
    """``[batch, rows, cols, D]`` L2-normalised patch embeddings in the joint space.

    The tower runs with its last block rewritten (:func:`dense_rewrite`); the patch
    tokens of the transformer output go through ``ln_post`` and ``proj``.
    """
    visual = _visual(model)
    seen = {}
    owner = threading.get_ident()

    def keep(module, args, output):
        if threading.get_ident() == owner:
            seen["tokens"] = output

    with locked(model), dense_rewrite(model, method, sigma=sigma):
        handle = visual.transformer.register_forward_hook(keep)
        try:
            visual(pixels)
        finally:
            handle.remove()
    tokens = seen["tokens"]                                      # [batch, N, D]
    gh, gw = visual.grid_size
    prefix = tokens.shape[1] - gh * gw
    patches = visual.ln_post(tokens[:, prefix:])
    if visual.proj is not None:
        patches = patches @ visual.proj
    patches = F.normalize(patches.float(), dim=-1)
    return patches.reshape(tokens.shape[0], gh, gw, -1)


def dense_maps(handle: ModelHandle, image: np.ndarray, prompts: Sequence[str], *,
               method: str = "maskclip", templates: Sequence[str] | None = None,
               sigma: float = 5.0) -> np.ndarray:
    """Cosine similarity of dense patch features and prompt embeddings,
    ``[P, rows, cols]`` float32 in [-1, 1]."""
    if not handle.grounding.dense:
        raise ValueError(f"method={method!r}: {handle.grounding.dense_reason}; got"
                         f" {handle.family}")
    text = handle.text_embeddings(prompts, templates)            # [P, D]
    feats = dense_features(handle.model, handle.pixels([image]), method, sigma=sigma)
    maps = torch.einsum("bhwd,pd->bphw", feats, text)[0]
    return maps.cpu().numpy().astype(np.float32)

"""The transformers LLaVA-NeXT family (``LlavaNextForConditionalGeneration``;
LLaVA-NeXT-Video on images and ``LlavaOnevisionForConditionalGeneration``, which pack
an image's tokens the same way): LLaVA with any-resolution images. The vision tower sees
the whole image resized to its input (the base image) and the image cut into tiles of
that size at one of the model's grid pinpoints; the language model reads the base
image's patch tokens, then the tiles' patch tokens as one finer grid over the image,
unpadded and with an ``image_newline`` token at the end of each row.

Capture sites are derived from the model's declarations: ``vision`` (the tower, once
per tile) and ``encoder`` (the language model's self-attention over image and text
tokens). Caption maps read the ``encoder`` rows that predict a word at the image-token
columns, as for LLaVA.

The model input is a grid pinpoint (:func:`canvas`; the image is letterboxed into it, so
``image_sizes`` is the pinpoint itself and unpadding keeps every tile token); the base
image is that input resized to the tower's size. :func:`token_positions` says where
each image token sits: a cell of the base grid (``rows x cols`` of the tower) or of the
tiles' grid (``tiles x`` finer), or a newline. :func:`layout` puts a word's scores back
on the tiles' grid: each token's score spread evenly over the pixels it covers, summed
over the two views (the base image's cells are the tiles' grid's cells in blocks of
``tile rows x tile cols``), so every pixel gets the attention the word paid to it in
either view.
"""

from __future__ import annotations

import torch

from . import _vlm
from .hf_llava import PROMPT
from .record import Family, HFLoader, model_type

__all__ = ["FAMILY", "CAPTIONING", "LOADER", "MAX_TILES", "token_positions", "layout",
           "canvas"]

#: The processor with the tokenizer and the image processor; eager attention.
LOADER = HFLoader("AutoModelForImageTextToText", "processor", "hf_vlm",
                  attn_implementation="eager")

#: Kind of an image token in :func:`token_positions`.
BASE, TILE, NEWLINE = 0, 1, 2


#: Tiles of the input at most: LLaVA-NeXT's largest pinpoint (2 x 2). LLaVA-OneVision
#: reads up to 3 x 3 unshrunk, 7,371 image tokens at 384-pixel tiles: every captured
#: layer would hold a 7k x 7k matrix per head.
MAX_TILES = 4


def _max_tiles(model) -> float:
    """How many tiles the input may have: :data:`MAX_TILES`, and no more than the
    language model reads at full resolution (LLaVA-OneVision, ``vision_aspect_ratio``
    ``"anyres_max_N"``, shrinks the tiles' grid bilinearly once it exceeds ``N`` tiles by
    more than a factor of 1.1 in side; LLaVA-NeXT never does)."""
    ratio = getattr(model.config, "vision_aspect_ratio", None)
    if not (isinstance(ratio, str) and ratio.startswith("anyres_max_")):
        return MAX_TILES
    return min(MAX_TILES, int(ratio.removeprefix("anyres_max_")) * 1.1 ** 2)


def canvas(model) -> tuple[int, int]:
    """``(height, width)`` of the model input: of the grid pinpoints with at most
    :func:`_max_tiles` tiles, the one that holds the largest square, then the largest
    (the first of equal ones): 2 x 2 tiles for LLaVA-NeXT (672 px) and LLaVA-OneVision
    (768 px)."""
    side, _ = _tower(model)
    pinpoints = [tuple(int(v) for v in p) for p in model.config.image_grid_pinpoints]
    kept = [p for p in pinpoints if (p[0] // side) * (p[1] // side) <= _max_tiles(model)]
    if not kept:
        raise ValueError(f"no grid pinpoint of this model ({pinpoints}) has at most"
                         f" {_max_tiles(model):g} tiles of {side} px (vision_aspect_ratio="
                         f"{getattr(model.config, 'vision_aspect_ratio', None)!r}): add a"
                         " smaller one to config.image_grid_pinpoints")
    return max(kept, key=lambda p: (min(p), p[0] * p[1]))


def _tower(model) -> tuple[int, int]:
    """``(side, patches per side)`` of the vision tower's square input."""
    side = int(_vlm.vision_size(model)[0])
    return side, side // int(_vlm.vision_patch(model)[0])


def _unpadded(fine: tuple[int, int], image_size: tuple[int, int]) -> tuple[slice, slice]:
    """The rows and columns of the tiles' ``fine`` grid that unpadding keeps for an image
    of ``image_size`` (transformers' ``unpad_image``: the centred image, the padding
    bands on the long side cut)."""
    rows, cols = fine
    height, width = image_size
    if width / height > cols / rows:
        kept = int(round(height * cols / width, 7))
        pad = (rows - kept) // 2
        return slice(pad, rows - pad), slice(0, cols)
    kept = int(round(width * rows / height, 7))
    pad = (cols - kept) // 2
    return slice(0, rows), slice(pad, cols - pad)


def _select(image_size, pinpoints) -> tuple[int, int]:
    """transformers' ``select_best_resolution``: the pinpoint that keeps most of the
    image, then wastes least."""
    height, width = image_size
    best, most, waste = None, 0, float("inf")
    for h, w in pinpoints:
        scale = min(w / width, h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = h * w - effective
        if effective > most or (effective == most and wasted < waste):
            best, most, waste = (int(h), int(w)), effective, wasted
    return best


def token_positions(model, image_size=None) -> torch.Tensor:
    """``[N, 3]`` ``(kind, row, col)`` of each of the ``N`` image tokens the language
    model reads for one image of ``image_size`` ``(height, width)`` (default: the
    model input, :func:`canvas`), in their order: the base image's cells (``BASE``,
    row and column on the tower's grid), then the tiles' cells row by row (``TILE``,
    row and column on the tiles' grid over the pinpoint), each row ended by a
    ``NEWLINE`` (row and column -1).

    Raises
    ------
    ValueError
        When a tile's tokens are not its patch grid: a CLIP tower's class token kept
        (``vision_feature_select_strategy`` ``"full"``), or a SigLIP tower's first patch
        dropped (``"default"``).
    """
    strategy = getattr(model.config, "vision_feature_select_strategy", "default")
    if _vlm.class_tokens(model) != int(strategy == "default"):
        what = ("keeps the class token in" if strategy == "full"
                else "drops the first patch of")
        raise ValueError(f"this model's vision_feature_select_strategy={strategy!r} {what}"
                         " every tile: the tiles' tokens form no patch grid and cannot be"
                         " mapped back to pixels")
    side, per = _tower(model)
    image_size = canvas(model) if image_size is None else tuple(int(v) for v in image_size)
    height, width = _select(image_size, model.config.image_grid_pinpoints)
    fine = (height // side * per, width // side * per)
    rows, cols = _unpadded(fine, image_size)
    out = [(BASE, r, c) for r in range(per) for c in range(per)]
    for r in range(fine[0])[rows]:
        out += [(TILE, r, c) for c in range(fine[1])[cols]] + [(NEWLINE, -1, -1)]
    return torch.tensor(out, dtype=torch.long)


def layout(model, scores: torch.Tensor) -> torch.Tensor:
    """``[W, rows, cols]`` maps on the tiles' grid over the model input from ``[W, N]``
    scores over the image tokens: per cell, the tile token's score plus the base token's
    covering it divided by the cells it covers (newline tokens carry no pixels)."""
    positions = token_positions(model).to(scores.device)
    if scores.shape[-1] != len(positions):
        raise ValueError(f"the prompt holds {scores.shape[-1]} image tokens, not the"
                         f" {len(positions)} of one LLaVA-NeXT image (base image, tiles,"
                         " newlines): they cannot be mapped back to pixels")
    (height, width), (side, per) = canvas(model), _tower(model)
    tiles_down, tiles_across = height // side, width // side
    base = scores[:, positions[:, 0] == BASE].reshape(-1, per, per)
    maps = base.repeat_interleave(tiles_down, 1).repeat_interleave(tiles_across, 2)
    maps = maps / (tiles_down * tiles_across)
    tile = positions[:, 0] == TILE
    maps[:, positions[tile, 1], positions[tile, 2]] += scores[:, tile]
    return maps


def _n_image_tokens(model) -> int:
    return len(token_positions(model))


#: LLaVA-OneVision's prompt around the image tokens: its Qwen2 chat turns.
ONEVISION_PROMPT = ("<|im_start|>user\n", "\nDescribe the image.<|im_end|>\n"
                    "<|im_start|>assistant\n")


def _start_ids(model, tokenizer):
    """bos (none for LLaVA-OneVision: its Qwen2 prompt has none), the prompt around the
    image tokens."""
    onevision = model_type(model) == "llava_onevision"
    before, after = ONEVISION_PROMPT if onevision else PROMPT
    return (([] if onevision else _vlm.bos_ids(model, tokenizer))
            + _vlm.text_ids(tokenizer, before)
            + [_vlm.image_token(model)] * _n_image_tokens(model)
            + _vlm.text_ids(tokenizer, after))


def tiles(model, pixels: torch.Tensor) -> torch.Tensor:
    """``[batch, 1 + tiles, 3, side, side]``: the base image (``pixels`` at the model
    input, resized bilinearly to the tower's side) and the tiles, row by row."""
    side, _ = _tower(model)
    b, c, h, w = pixels.shape
    base = torch.nn.functional.interpolate(pixels, size=(side, side), mode="bilinear",
                                           align_corners=False, antialias=True)
    cut = pixels.reshape(b, c, h // side, side, w // side, side).permute(0, 2, 4, 1, 3, 5)
    return torch.cat([base[:, None], cut.reshape(b, -1, c, side, side)], dim=1)


def _inputs(model, pixels, ids, prompt=None):
    sizes = torch.tensor([list(pixels.shape[-2:])] * pixels.shape[0], device=pixels.device)
    return dict(input_ids=ids, pixel_values=tiles(model, pixels), image_sizes=sizes,
                attention_mask=torch.ones_like(ids))


CAPTIONING = _vlm.captioning(stream="encoder", start_ids=_start_ids, layout=layout,
                             inputs=_inputs, image_size=canvas)

FAMILY = Family("hf_llava_next",
                model_types=("llava_next", "llava_next_video", "llava_onevision"),
                loader=LOADER, captioning=CAPTIONING)

"""The transformers Fuyu family (``FuyuForCausalLM``): no vision tower; the image is
cut into patches, each flattened and projected linearly into a Persimmon language
model, which reads them at the image placeholder tokens (``|SPEAKER|``) of its prompt,
row by row, each row followed by a ``|NEWLINE|`` token, then the text.

The input size is the config's ``image_size`` (the model takes any size that is a
multiple of the patch; the processor pads to one). Capture sites are derived from the
language model's declarations (its self-attention, ``encoder``); caption maps read its
rows that predict a word at the image-token columns (the newline tokens are not image
tokens), on the patch grid.
"""

from __future__ import annotations

import torch

from . import _hf, _vlm
from .record import Family, HFLoader, _pair

__all__ = ["FAMILY", "CAPTIONING", "LOADER", "PROMPT", "patches"]

LOADER = HFLoader("FuyuForCausalLM", "processor", "hf_vlm", attn_implementation="eager")

#: The instruction after the image (Fuyu's captioning prompt), then its
#: beginning-of-answer token.
PROMPT = "Generate a coco-style caption.\n"
ANSWER = "<0x04>"


def _image_size(model) -> tuple[int, int]:
    return _pair(model.config.image_size)


def _patch_size(model) -> tuple[int, int]:
    return _pair(model.config.patch_size)


def _grid_size(model) -> tuple[int, int]:
    (h, w), (ph, pw) = _image_size(model), _patch_size(model)
    return h // ph, w // pw


def patches(model, pixels: torch.Tensor) -> torch.Tensor:
    """The patches of ``pixels`` row by row, each flattened as Fuyu's image processor
    flattens them (rows of the patch, then columns, then channels).

    Parameters
    ----------
    model : FuyuForCausalLM
        Gives the patch size (``config.patch_size``).
    pixels : torch.Tensor, shape [batch, 3, h, w]
        Normalised pixels, ``h`` and ``w`` multiples of the patch size.

    Returns
    -------
    torch.Tensor, shape [batch, rows * cols, ph * pw * 3]
    """
    ph, pw = _patch_size(model)
    b, c = pixels.shape[:2]
    cut = pixels.unfold(2, ph, ph).unfold(3, pw, pw)               # [b, c, R, C, ph, pw]
    return cut.reshape(b, c, -1, ph, pw).permute(0, 2, 3, 4, 1).reshape(b, -1, ph * pw * c)


def _start_ids(model, tokenizer):
    rows, cols = _grid_size(model)
    newline = _vlm.special_ids(tokenizer, "|NEWLINE|")
    image: list[int] = []
    for _ in range(rows):
        image += [_vlm.image_token(model)] * cols + newline
    return (image + _vlm.bos_ids(model, tokenizer) + _vlm.text_ids(tokenizer, PROMPT)
            + _vlm.special_ids(tokenizer, ANSWER))


def _inputs(model, pixels, ids, prompt=None):
    return dict(input_ids=ids, pixel_values=patches(model, pixels).to(model.dtype),
                attention_mask=torch.ones_like(ids))


CAPTIONING = _vlm.captioning(
    stream="encoder", start_ids=_start_ids, inputs=_inputs, image_size=_image_size,
    patch_size=_patch_size, mean_std=_hf.mean_std(_hf.SIGLIP_MEAN_STD),
    grid=_vlm.one_image_grid(_grid_size, "patch grid"))

FAMILY = Family("hf_fuyu", model_types=("fuyu",), loader=LOADER, captioning=CAPTIONING)

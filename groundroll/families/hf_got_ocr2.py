"""The transformers GOT-OCR 2.0 family (``GotOcr2ForConditionalGeneration``): a SAM-style
vision tower, two stride-2 convolutions that shrink its patch grid four times a side
into image tokens (row by row), and a Qwen2 language model that reads them between
``<img>`` and ``</img>`` in its OCR prompt.

Capture sites are derived from the model's declarations, the language model's only
(``encoder``): the tower attends within local windows in most layers, so no rollout
runs through it (``refusal``). Caption maps read the language model's rows that
predict a word at the image-token columns, each token's score spread over the patches
it reads through the projector (:func:`layout`): where the model looked when it read
each word of the text it transcribes.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from . import _hf, _vlm
from .derive import derive_adapter
from .record import Family, HFLoader
from .sites import Adapter

__all__ = ["FAMILY", "ADAPTER", "CAPTIONING", "LOADER", "PROMPT", "footprint", "layout"]

LOADER = HFLoader("AutoModelForImageTextToText", "processor", "hf_vlm",
                  attn_implementation="eager")

#: The OCR conversation around the image, as GOT-OCR 2.0's processor writes it.
PROMPT = ("<|im_start|>system\nYou should follow the instructions carefully and explain"
          " your answers in detail.<|im_end|><|im_start|>user\n",
          "\n OCR: <|im_end|><|im_start|>assistant\n")


def _patch_grid(model) -> tuple[int, int]:
    (h, w), (ph, pw) = _vlm.vision_size(model), _vlm.vision_patch(model)
    return h // ph, w // pw


def _halve(n: int) -> int:
    return (n + 1) // 2          # a 3 x 3 convolution, stride 2, padding 1


def _grid_size(model) -> tuple[int, int]:
    """The tower's patch grid after the projector's two 3 x 3 stride-2 convolutions."""
    rows, cols = _patch_grid(model)
    return _halve(_halve(rows)), _halve(_halve(cols))


def _count(model) -> int:
    rows, cols = _grid_size(model)
    return rows * cols


def footprint(patches: int) -> torch.Tensor:
    """Through how many paths each patch reaches each image token along one side,
    through the tower's neck (a 3 x 3 convolution, stride 1) and the projector's two
    3 x 3 stride-2 convolutions (padding 1 each). Token ``k`` is centred on patch ``4k``
    and reaches patches ``4k - 4 .. 4k + 4``, so it straddles the edge of the block of
    four patches it would cover on a plain grid.

    Parameters
    ----------
    patches : int
        Patches along the side (64 for the released 1024-pixel tower).

    Returns
    -------
    torch.Tensor, shape [tokens, patches]
        Path counts, ``tokens = ceil(ceil(patches / 2) / 2)``.

    Examples
    --------
    >>> footprint(8)[1].tolist()
    [1.0, 2.0, 4.0, 4.0, 5.0, 4.0, 4.0, 2.0]
    """
    def conv(n_in: int, stride: int) -> torch.Tensor:
        out = torch.arange(-(-n_in // stride))[:, None]
        return ((torch.arange(n_in)[None] - stride * out).abs() <= 1).float()
    paths = conv(patches, 1)
    for _ in range(2):
        paths = conv(paths.shape[0], 2) @ paths
    return paths


def layout(model, scores: torch.Tensor) -> torch.Tensor:
    """Maps on the tower's patch grid from scores over the image tokens: each token's
    score spread over the patches it reads (:func:`footprint`, normalised to sum 1), so
    a word's map sits where the tokens it attended to look, not half a token off.

    Parameters
    ----------
    model : GotOcr2ForConditionalGeneration
        Gives the tower's input and patch sizes.
    scores : torch.Tensor, shape [W, N]
        Per word, a score for each of the ``N`` image tokens (row by row).

    Returns
    -------
    torch.Tensor, shape [W, patch rows, patch cols]

    Raises
    ------
    ValueError
        When ``N`` is not the tower's shrunk grid.
    """
    rows, cols = _grid_size(model)
    if scores.shape[-1] != rows * cols:
        raise ValueError(f"the prompt holds {scores.shape[-1]} image tokens, not the"
                         f" {rows} x {cols} shrunk grid of the vision tower: they cannot"
                         " be mapped back to pixels")
    down, across = (footprint(n).to(scores) for n in _patch_grid(model))
    down, across = down / down.sum(1, keepdim=True), across / across.sum(1, keepdim=True)
    return torch.einsum("wrc,rp,cq->wpq", scores.reshape(-1, rows, cols), down, across)


def _language_model_only(adapter: Adapter, model) -> Adapter:
    """The sites derived from ``model``'s declarations, less the windowed tower's."""
    derived = derive_adapter(model)
    if derived is None:
        raise TypeError(f"{type(model).__name__} declares no attention modules to capture;"
                        " load it with transformers' GotOcr2ForConditionalGeneration")
    sites = tuple(s for s in derived.sites if s.stream != "vision")
    return replace(derived, name=adapter.name, sites=sites)


ADAPTER = Adapter(name="hf_got_ocr2", model_types=("got_ocr2",), sites=(),
                  description="transformers GOT-OCR 2.0 (language model only)",
                  specialise=_language_model_only)

CAPTIONING = _vlm.captioning(
    stream="encoder",
    start_ids=_vlm.framed_start_ids(PROMPT, _count, "<img>", "</img>", bos=False),
    layout=layout, mean_std=_hf.mean_std(_hf.OPENAI_MEAN_STD))

FAMILY = Family("hf_got_ocr2", model_types=("got_ocr2",), adapter=ADAPTER, loader=LOADER,
                captioning=CAPTIONING)

"""What the decoder-only vision-language families share (LLaVA, PaliGemma, Qwen2-VL,
Idefics3 / SmolVLM, GIT): a language model whose self-attention runs over image tokens
and text alike.

Word grounding reads that one self-attention stream: the rows that predict a word's
tokens, the columns of the image tokens (:attr:`Captioning.columns`). Each family says
how its prompt is laid out (where the image placeholders go and how many), how its
inputs are built from ``[batch, 3, h, w]`` pixels, and how image tokens map to a patch
grid; the helpers here do the rest.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import _hf
from .record import Captioning, _pair

__all__ = ["captioning", "plain_inputs", "one_image_grid", "shuffled_grid_size",
           "shuffled_captioning", "framed_start_ids", "image_token", "placeholder_columns",
           "text_ids", "special_ids", "end_ids", "bos_ids", "class_tokens", "vision_mean_std",
           "vision_size", "vision_patch", "forward_from", "generate_from"]


def image_token(model) -> int:
    """The id of the image placeholder token the model replaces by image features."""
    config = model.config
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"{type(model).__name__}'s config names no image placeholder token"
                     " (image_token_id or image_token_index): set it on model.config")


def placeholder_columns(model, ids: torch.Tensor) -> torch.Tensor:
    """Positions of the image placeholder tokens in ``ids [1, T]`` (where the model puts
    the image features)."""
    return (ids[0] == image_token(model)).nonzero().flatten()


def text_ids(tokenizer, text: str) -> list[int]:
    """The tokenizer's ids of ``text`` with no special tokens added ([] for "")."""
    if not text:
        return []
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def special_ids(tokenizer, *tokens: str) -> list[int]:
    """The ids of the named special tokens the tokenizer knows (unknown ones left out)."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return [int(vocab[t]) for t in tokens if t in vocab]


def _text_config(model):
    return getattr(model.config, "text_config", model.config)


def bos_ids(model, tokenizer) -> list[int]:
    """``[bos]`` from the language model's config or the tokenizer; [] when neither names
    one."""
    for value in (_text_config(model).bos_token_id, getattr(tokenizer, "bos_token_id", None)):
        if isinstance(value, int):
            return [value]
    return []


def end_ids(model, tokenizer) -> set[int]:
    """The ids that end a caption: the generation config's, the language model's and the
    tokenizer's end-of-sequence tokens."""
    ends = (getattr(model.generation_config, "eos_token_id", None),
            _text_config(model).eos_token_id, getattr(tokenizer, "eos_token_id", None))
    out: set[int] = set()
    for end in ends:
        out.update(end if isinstance(end, (list, tuple)) else [end])
    return {int(e) for e in out if e is not None}


def one_image_grid(grid_size, what: str):
    """``grid(model, n_tokens)`` for a model whose prompt holds one image's tokens, a
    ``grid_size(model)`` grid of them with nothing before; ``what`` names the grid in the
    error a count that does not match raises."""
    def grid(model, n_tokens):
        rows, cols = grid_size(model)
        if n_tokens != rows * cols:
            raise ValueError(f"the prompt holds {n_tokens} image tokens, not the {rows} x"
                             f" {cols} {what}: they cannot be mapped back to pixels")
        return 0, (rows, cols)
    return grid


def shuffled_grid_size(factor) -> Callable[[Any], tuple[int, int]]:
    """``grid_size(model)`` of a tower whose patch grid a pixel shuffle merges
    ``factor(model) x factor(model)`` patches at a time into one token, row by row (Aya
    Vision, InternVL, Cohere2-Vision, as Idefics3)."""
    def grid_size(model) -> tuple[int, int]:
        (h, w), (ph, pw) = vision_size(model), vision_patch(model)
        merge = int(factor(model))
        return h // ph // merge, w // pw // merge
    return grid_size


def shuffled_captioning(factor, prompt: tuple[str, str], markers: tuple,
                        mean_std=None) -> Captioning:
    """The caption hooks of a decoder-only family whose tower's grid a pixel shuffle
    merges ``factor(model)`` x ``factor(model)`` at a time (:func:`shuffled_grid_size`),
    the image tokens framed by ``markers`` in a chat ``prompt`` (:func:`framed_start_ids`)
    and read by the language model's ``encoder`` stream; ``mean_std`` as
    :func:`captioning`'s (None: :func:`vision_mean_std`)."""
    grid_size = shuffled_grid_size(factor)

    def count(model) -> int:
        rows, cols = grid_size(model)
        return rows * cols

    return captioning(stream="encoder", start_ids=framed_start_ids(prompt, count, *markers),
                      grid=one_image_grid(grid_size, "merged grid of the vision tower"),
                      mean_std=mean_std or vision_mean_std)


def _marker_ids(tokenizer, names: str | tuple[str, ...]) -> list[int]:
    return special_ids(tokenizer, *((names,) if isinstance(names, str) else names))


def framed_start_ids(prompt: tuple[str, str], count, *markers: str | tuple[str, ...],
                     bos: bool = True):
    """``start_ids(model, tokenizer)`` of a chat prompt ``(before, after)`` around one
    image: bos (unless ``bos`` is False: Qwen-style prompts begin without one),
    ``before``, the first marker token (or tokens, given as a tuple), ``count(model)``
    placeholders, the second marker, ``after`` (marker tokens the tokenizer lacks are
    left out)."""
    def start_ids(model, tokenizer) -> list[int]:
        before, after = prompt
        opening, closing = (list(markers) + ["", ""])[:2]
        return ((bos_ids(model, tokenizer) if bos else []) + text_ids(tokenizer, before)
                + _marker_ids(tokenizer, opening) + [image_token(model)] * int(count(model))
                + _marker_ids(tokenizer, closing) + text_ids(tokenizer, after))
    return start_ids


def vision_size(model) -> tuple[int, int]:
    return _pair(_hf.vision_config(model).image_size)


def vision_patch(model) -> tuple[int, int]:
    return _pair(_hf.vision_config(model).patch_size)


def class_tokens(model) -> int:
    """1 when the vision tower puts a class token before its patch tokens (a CLIP-style
    tower's ``class_embedding``), 0 when it has none (SigLIP-style towers)."""
    return int(any(name.rpartition(".")[2] == "class_embedding" and "vision" in name
                   for name, _ in model.named_parameters()))


def vision_mean_std(model, processor):
    """The processor's normalisation, else the vision tower's usual one (SigLIP-style
    towers 0.5 / 0.5, CLIP-style the OpenAI statistics)."""
    if processor is not None:
        return processor.image_mean, processor.image_std
    if "siglip" in str(_hf.vision_config(model).model_type):
        return _hf.SIGLIP_MEAN_STD
    return _hf.OPENAI_MEAN_STD


def forward_from(inputs: Callable[..., dict]):
    """``forward(model, pixels, ids, prompt=None) -> logits``: the model called on
    ``inputs(model, pixels, ids, prompt)``."""
    def forward(model, pixels, ids, prompt=None):
        return model(**inputs(model, pixels, ids, prompt)).logits
    return forward


def generate_from(inputs: Callable[..., dict]):
    """``generate(model, pixels, start, max_new_tokens) -> ids``: greedy decoding from the
    ``start`` ids, the model given ``inputs(model, pixels, start ids, len(start))``."""
    @torch.no_grad()
    def generate(model, pixels, start, max_new_tokens):
        ids = torch.as_tensor([list(start)], dtype=torch.long, device=pixels.device)
        return model.generate(**inputs(model, pixels, ids, len(start)),
                              max_new_tokens=int(max_new_tokens), do_sample=False,
                              num_beams=1)
    return generate


def plain_inputs(model, pixels, ids, prompt=None) -> dict[str, Any]:
    """``input_ids``, ``pixel_values`` (in the model's dtype: some towers do not cast
    their input) and an all-ones ``attention_mask``."""
    return dict(input_ids=ids, pixel_values=pixels.to(model.dtype),
                attention_mask=torch.ones_like(ids))


def captioning(*, stream: str, start_ids, grid=None, inputs=plain_inputs,
               columns=placeholder_columns, image_size=vision_size,
               patch_size=vision_patch, mean_std=vision_mean_std,
               layout=None) -> Captioning:
    """The caption hooks of a decoder-only family whose language model's self-attention
    stream is ``stream``.

    ``inputs(model, pixels, ids, prompt) -> dict`` builds the model's keyword inputs
    from ``[batch, 3, h, w]`` pixels and ``[batch, T]`` ids whose first ``prompt`` are
    the start ids (None: not known); ``forward`` and ``generate`` call the model with
    them. ``grid`` or ``layout`` maps the image tokens back to pixels
    (:class:`~groundroll.families.Captioning`).
    """
    return Captioning(
        image_size=image_size, patch_size=patch_size, mean_std=mean_std,
        streams=(stream,), source=stream, target=stream, forward=forward_from(inputs),
        generate=generate_from(inputs), start_ids=start_ids, end_ids=end_ids, grid=grid,
        columns=columns, layout=layout)

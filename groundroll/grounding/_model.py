"""What the map sources need from a model, whatever its family.

:class:`ModelHandle` wraps a :class:`~groundroll.zoo.Bundle` (or a model with its
tokenizer) and gives every source the same few operations: image size and pixel
normalisation, tokenising with a truncation warning, normalised text and image
embeddings, the logit scale, and the positions of a prompt's content tokens.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._locks import locked, short, warn_once
from ..families import Family, Grounding, family_for
from ..masks import ensemble_prompts
from ..zoo import cached

__all__ = ["ModelHandle", "resolve_model", "DEFAULT_MODEL"]

#: The model a segmentation call uses when none is named: of the bundled CLIPs, the one
#: whose calibrated default call segments best on held-out scenes (its card's table).
DEFAULT_MODEL = "bundled:shapes-clip"

def _family_of(model) -> str:
    family = family_for(model)
    if family.grounding_for(model) is None:
        raise TypeError(
            f"grounding needs an image-text model (open_clip CLIP/CoCa, Hugging Face"
            f" CLIP, SigLIP, SigLIP2, OWL-ViT, BLIP retrieval or a registered family with"
            f" grounding hooks); {type(model).__module__}.{type(model).__qualname__}"
            f" (family {family.name!r}) has none")
    return family.name


@dataclass
class ModelHandle:
    """A model with its tokenizer, seen through the operations grounding needs.

    Attributes
    ----------
    model : torch.nn.Module
    tokenizer : callable
        open_clip style (``tokenizer(texts) -> [batch, context]``) for open_clip
        families, a Hugging Face tokenizer otherwise.
    family : str
        The name of the model's family record (:func:`groundroll.families.family_for`).
    name : str
        Spec or description, recorded in settings.
    image_processor : optional
        Hugging Face image processor, for its pixel mean and std.
    """

    model: Any
    tokenizer: Any
    family: str
    name: str = ""
    image_processor: Any = None

    # ------------------------------------------------------------------ the record

    @property
    def record(self) -> Family:
        """The model family's record (:mod:`groundroll.families`)."""
        return family_for(self.model)

    @property
    def grounding(self) -> Grounding:
        """The family's grounding hooks for this model."""
        hooks = self.record.grounding_for(self.model)
        if hooks is None:
            raise TypeError(f"family {self.family!r} has no grounding hooks")
        return hooks

    # ------------------------------------------------------------------ geometry

    @property
    def open_clip(self) -> bool:
        """Whether prompts are tokenised open_clip style (a callable giving ids)."""
        return self.grounding.tokenizer_style == "open_clip"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def image_size(self) -> tuple[int, int]:
        """Model input ``(height, width)``."""
        return tuple(self.grounding.image_size(self.model))

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.grounding.patch_size(self.model))

    def _mean_std(self) -> tuple[Sequence[float], Sequence[float]]:
        return self.grounding.mean_std(self.model, self.image_processor)

    def pixels(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """``[batch, 3, h, w]`` normalised model input from uint8 ``[h, w, 3]`` images
        already at the model's input size."""
        mean, std = self._mean_std()
        return normalized_pixels(images, mean, std).to(self.device, self.dtype)

    # ------------------------------------------------------------------ text

    @property
    def context_length(self) -> int:
        return int(self.grounding.context_length(self.model, self.tokenizer))

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{"input_ids": [batch, T], "attention_mask": [batch, T]}``; prompts longer
        than the context are truncated with a warning naming them."""
        texts = list(texts)
        length = self.context_length
        if self.open_clip:
            encode = getattr(self.tokenizer, "encode", None)
            if encode is not None:
                for text in texts:
                    n = len(encode(text)) + 2
                    if n > length:
                        warn_once(f"prompt {short(text)} has {n} tokens; truncated to"
                                  f" the text context of {length}", stacklevel=3)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ids = self.tokenizer(texts)
            ids = torch.as_tensor(ids, dtype=torch.long)
            return {"input_ids": ids.to(self.device), "attention_mask": (ids != 0).long()}
        for text in texts:
            n = len(self.tokenizer(text)["input_ids"])
            if n > length:
                warn_once(f"prompt {short(text)} has {n} tokens; truncated to the text"
                          f" context of {length}", stacklevel=3)
        padding = "max_length" if self.grounding.pad_to_max else True
        enc = self.tokenizer(texts, padding=padding, truncation=True, max_length=length,
                             return_tensors="pt")
        out = {"input_ids": enc["input_ids"].to(self.device)}
        mask = enc.get("attention_mask") if hasattr(enc, "get") else None
        out["attention_mask"] = (mask if mask is not None
                                 else torch.ones_like(enc["input_ids"])).to(self.device)
        return out

    def special_ids(self) -> set[int]:
        """Ids of special tokens (padding, start, end, class, ...)."""
        tok = self.tokenizer
        ids = set(getattr(tok, "all_special_ids", None) or [])
        for attr in ("pad_token_id", "sot_token_id", "eot_token_id", "unk_token_id",
                     "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"):
            value = getattr(tok, attr, None)
            if isinstance(value, int):
                ids.add(value)
        if self.open_clip:
            ids.add(0)
            for attr in ("sot_token_id", "eot_token_id"):
                value = getattr(tok, attr, None)
                if isinstance(value, int):
                    ids.add(value)
        return ids

    def content_positions(self, ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Per row, positions of the prompt's own tokens (special tokens excluded).

        open_clip text is ``[SOT] words [EOT] pad...`` with ``[EOT]`` at the argmax.
        """
        special = self.special_ids()
        out = []
        for row, row_mask in zip(ids.tolist(), mask.tolist()):
            if self.open_clip:
                end = int(np.argmax(row))
                keep = [t for t in range(1, end) if row[t] not in special]
            else:
                keep = [t for t, (i, m) in enumerate(zip(row, row_mask))
                        if m and i not in special]
            out.append(keep)
        return out

    def token_strings(self, ids) -> list[str]:
        """Token strings of one row of ids."""
        ids = [int(i) for i in ids]
        tok = self.tokenizer
        if hasattr(tok, "tokens"):                       # groundroll WordTokenizer
            return list(tok.tokens(ids))
        if hasattr(tok, "convert_ids_to_tokens"):        # Hugging Face
            return list(tok.convert_ids_to_tokens(ids))
        decoder = getattr(tok, "decoder", None)          # open_clip SimpleTokenizer
        if isinstance(decoder, dict):
            return [decoder.get(i, str(i)).replace("</w>", "") for i in ids]
        if hasattr(tok, "decode"):
            return [tok.decode([i]) for i in ids]
        return [str(i) for i in ids]

    @torch.no_grad()
    def text_embeddings(self, prompts: Sequence[str],
                        templates: Sequence[str] | None = None) -> torch.Tensor:
        """``[P, D]`` L2-normalised text embeddings, averaged over ``templates`` (prompt
        ensembling: normalise, average, normalise again)."""
        if templates:
            texts, groups = ensemble_prompts(list(prompts), list(templates))
        else:
            texts, groups = list(prompts), np.arange(len(prompts))
        if not self.grounding.contrastive:
            raise ValueError(f"{self.family} scores image-text pairs with cross-attention,"
                             " not with a text embedding; use method='cross'")
        enc = self.tokenize(texts)
        emb = self.grounding.text_embeddings(self.model, enc)
        emb = F.normalize(emb.float(), dim=-1)
        groups_t = torch.as_tensor(groups, device=emb.device)
        sums = torch.zeros(len(prompts), emb.shape[-1], device=emb.device)
        sums.index_add_(0, groups_t, emb)
        return F.normalize(sums, dim=-1)

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[batch, D]`` L2-normalised image embeddings (differentiable)."""
        emb = self.grounding.image_embeddings(self.model, pixels)
        return F.normalize(emb.float(), dim=-1)

    def vision_forward(self, pixels: torch.Tensor):
        """Run the vision tower alone (for rollout)."""
        forward = self.grounding.vision_forward
        return forward(self.model, pixels) if forward else self.image_embeddings(pixels)

    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        if scale is None:
            return 100.0
        return float(torch.as_tensor(scale).detach().float().exp())

    # ------------------------------------------------------------------ gradients

    @contextmanager
    def float32(self) -> Iterator[None]:
        """Run the model in float32 within the block (half-precision gradients
        underflow), holding its lock (:func:`groundroll._locks.locked`): the cast
        changes the shared model, so every other groundroll call on it waits until the
        dtype is restored on exit."""
        with locked(self.model):
            dtype = self.dtype
            if dtype != torch.float32:
                self.model.float()
            try:
                yield
            finally:
                if dtype != torch.float32:
                    self.model.to(dtype)

    def prompt_copies(self, image: np.ndarray, n: int) -> torch.Tensor:
        """``[n, 3, h, w]`` float32 model input: ``image`` (uint8 ``[h, w, 3]`` at the
        model's input size) once per prompt, so each copy's score and gradients can
        belong to one prompt."""
        return self.pixels([image]).float().repeat(n, 1, 1, 1)


def normalized_pixels(images: Sequence[np.ndarray], mean: Sequence[float],
                      std: Sequence[float]) -> torch.Tensor:
    """``[batch, 3, h, w]`` float32 ``(x / 255 - mean) / std`` of uint8 ``[h, w, 3]``
    images, on the CPU."""
    x = torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2)
    x = x.float() / 255.0
    mean_ = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
    std_ = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean_) / std_


def resolve_model(model, *, tokenizer=None, cache: dict | None = None,
                  device=None) -> ModelHandle:
    """A :class:`ModelHandle` for a Bundle, a ``groundroll.zoo.load`` spec string, a
    handle, or a bare model with ``tokenizer=``.

    ``cache`` (a dict owned by the caller) keeps loaded bundles by spec, so a loop over
    images loads the model once. ``device``: where a spec string is loaded (default
    the CPU); a model already loaded runs where it is, and a ``device`` other than its
    own is a ValueError (groundroll does not move a caller's model).
    """
    if isinstance(model, str):
        key = model if device is None else (model, str(torch.device(device)))
        if cache is not None and key in cache:
            return cache[key]
        handle = resolve_model(cached(model, device=str(device or "cpu")))
        if cache is not None:
            cache[key] = handle
        return handle
    handle = _handle_of(model, tokenizer)
    check_device(handle, device)
    return handle


def check_device(handle: "ModelHandle", device) -> None:
    """Raise ValueError when ``device`` is given and is not the model's device."""
    if device is None:
        return
    want, have = torch.device(device), handle.device
    if want.type != have.type or (want.index is not None and want.index != have.index):
        raise ValueError(f"device={str(device)!r} but the model is on {have}; move the"
                         f" model there first (model.to({str(device)!r})) or leave device"
                         " unset to run where the model is")


def _handle_of(model, tokenizer) -> "ModelHandle":
    if isinstance(model, ModelHandle):
        return model
    bundle_model = getattr(model, "model", None)
    if bundle_model is not None and hasattr(model, "adapter"):  # a Bundle
        processor = getattr(getattr(model, "preprocess", None), "image_processor", None)
        handle = ModelHandle(bundle_model, tokenizer or model.tokenizer,
                             _family_of(bundle_model), getattr(model, "name", ""), processor)
        if handle.tokenizer is None:
            raise ValueError(f"bundle {handle.name!r} has no tokenizer")
        return handle
    if isinstance(model, torch.nn.Module):
        if tokenizer is None:
            raise ValueError("a bare model needs tokenizer=; or pass a Bundle from"
                             " groundroll.zoo.load")
        return ModelHandle(model, tokenizer, _family_of(model), type(model).__name__)
    raise TypeError(f"model must be a Bundle, a spec string such as 'bundled:shapes-clip'"
                    f" or a torch model, got {type(model).__name__}")

"""The transformers BLIP captioner (``BlipForConditionalGeneration``): a ViT tower and
a BERT-style text decoder whose layers cross-attend to all the tower's tokens (class
token first). It shares ``config.model_type`` ``"blip"`` with the retrieval model
(:mod:`~groundroll.families.hf_blip`), so it is known by its class.

Capture sites are derived from the model's declarations: ``vision``, ``text`` (the
decoder, causal) and ``text_cross`` (decoder -> patches). Caption maps compose
``vision`` -> ``text_cross`` -> ``text``; decoder row ``t`` predicts token ``t + 1``
after the decoder start token (``text_config.bos_token_id``, BLIP's ``[DEC]``).
"""

from __future__ import annotations

import torch

from . import _hf
from .record import Captioning, Family, class_names

__all__ = ["FAMILY", "CAPTIONING"]

_CLASS = "BlipForConditionalGeneration"


def _matches(model) -> bool:
    return any(name.rpartition(".")[2] == _CLASS for name in class_names(model))


def _text_config(model):
    return model.config.text_config


def _forward(model, pixels, ids):
    return model(pixel_values=pixels, input_ids=ids).logits


@torch.no_grad()
def _generate(model, pixels, start, max_new_tokens):
    # BLIP's generate drops the last input id (the [SEP] its processor appends).
    ids = torch.as_tensor([list(start) + [_text_config(model).sep_token_id]],
                          dtype=torch.long, device=pixels.device)
    return model.generate(pixel_values=pixels, input_ids=ids,
                          max_new_tokens=int(max_new_tokens), do_sample=False, num_beams=1)


def _start_ids(model, tokenizer):
    return [int(_text_config(model).bos_token_id)]


def _end_ids(model, tokenizer):
    """BLIP's generate stops at ``[SEP]`` (``text_config.sep_token_id``)."""
    ends = (_text_config(model).sep_token_id, getattr(tokenizer, "sep_token_id", None))
    return {int(e) for e in ends if e is not None}


def _grid(model, n_tokens):
    return _hf.class_token_grid(n_tokens, _hf.image_size(model), _hf.patch_size(model),
                                "the vision tower returns")


CAPTIONING = Captioning(
    image_size=_hf.image_size, patch_size=_hf.patch_size,
    mean_std=_hf.mean_std(_hf.OPENAI_MEAN_STD), streams=("vision", "text", "text_cross"),
    source="vision", target="text", forward=_forward, generate=_generate,
    start_ids=_start_ids, end_ids=_end_ids, grid=_grid)

FAMILY = Family("hf_blip_captioner", matches=_matches, captioning=CAPTIONING)

"""Tiny models wrapped as bundles with toy tokenizers, for the grounding tests."""

from __future__ import annotations

import zlib

import torch

from groundroll.zoo import Bundle
from helpers.tiny_models import CONTEXT, VOCAB, build


class ToyOpenClipTokenizer:
    """open_clip-style word tokenizer for the tiny models: [SOT]=1 words [EOT]=VOCAB-1."""

    pad_token_id, sot_token_id, eot_token_id = 0, 1, VOCAB - 1
    context_length = CONTEXT

    def encode(self, text):
        return [2 + zlib.crc32(w.encode()) % (VOCAB - 4) for w in text.lower().split()]

    def __call__(self, texts, context_length=None):
        texts = [texts] if isinstance(texts, str) else texts
        n = context_length or self.context_length
        out = torch.zeros(len(texts), n, dtype=torch.long)
        for r, t in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(t)][: n - 1] + [self.eot_token_id]
            out[r, : len(ids)] = torch.tensor(ids)
        return out


class ToyHFTokenizer:
    """Hugging Face call convention: tokenizer(texts, padding=, truncation=, ...)."""

    def __init__(self, bos, eos, pad=0, model_max_length=CONTEXT):
        self.bos_token_id, self.eos_token_id, self.pad_token_id = bos, eos, pad
        self.all_special_ids = [bos, eos, pad]
        self.model_max_length = model_max_length

    def _ids(self, text):
        words = [4 + zlib.crc32(w.encode()) % (VOCAB - 8) for w in text.lower().split()]
        return [self.bos_token_id, *words, self.eos_token_id]

    def __call__(self, texts, padding=False, truncation=False, max_length=None,
                 return_tensors=None):
        single = isinstance(texts, str)
        rows = [self._ids(t) for t in ([texts] if single else texts)]
        if truncation and max_length:
            rows = [r if len(r) <= max_length else r[: max_length - 1] + [self.eos_token_id]
                    for r in rows]
        if single and return_tensors is None:
            return {"input_ids": rows[0], "attention_mask": [1] * len(rows[0])}
        width = max_length if padding == "max_length" else max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def tiny_bundle(family: str = "open_clip", seed: int = 0) -> Bundle:
    """A tiny random model of ``family`` as a Bundle with a toy tokenizer."""
    model = build(family, seed).model
    if family.startswith("open_clip"):
        tokenizer = ToyOpenClipTokenizer()
    elif family == "clip":
        tokenizer = ToyHFTokenizer(VOCAB - 2, VOCAB - 1)
    elif family == "siglip":
        tokenizer = ToyHFTokenizer(3, 2, pad=1)
        tokenizer.all_special_ids = [1, 2]
    else:
        tokenizer = ToyHFTokenizer(1, 2)
    return Bundle(name=f"tiny:{family}", model=model, adapter=family, tokenizer=tokenizer)

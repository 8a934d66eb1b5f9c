"""The model side of alignment: the model, padded teacher-forcing batches, translation.

Under teacher forcing, decoder row ``t`` has target token ``t - 1`` as input and
predicts target token ``t`` (``labels[:, t]``); row 0 has the decoder start token as
input. Without a target, :func:`_translate` generates with ``model.generate`` and the
generated ids are then run through one forced pass, never read from cached steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from groundroll import zoo
from groundroll._options import check_align_options
from groundroll.alignment.subwords import Encoded, word_matrix, words_from_ids
from groundroll.families import family_for

#: Sentences longer than this many tokens are truncated when neither ``max_length`` nor
#: a finite tokenizer/model limit says otherwise.
FALLBACK_MAX_LENGTH = 512


def bundle_of(model, device=None):
    """The loaded :class:`~groundroll.zoo.Bundle` that ``model`` names: a Bundle as it is
    (on ``device`` if one is given, else a ValueError), a spec loaded on ``device``
    (default the CPU) through the process-wide cache (:func:`groundroll.zoo.cached`)."""
    if isinstance(model, zoo.Bundle):
        if device is not None:
            want = torch.device(device)
            have = next(model.model.parameters()).device
            if want.type != have.type or (want.index is not None and want.index != have.index):
                raise ValueError(f"device={str(device)!r} but the model is on {have}; move"
                                 f" the model there first or leave device unset to run"
                                 " where the model is")
        return model
    if isinstance(model, (str, Path)):
        return zoo.cached(str(model), device=str(device or "cpu"))
    raise TypeError("model must be a groundroll.zoo.Bundle or a spec for"
                    " groundroll.zoo.load (e.g. 'bundled:toy-mt'), got"
                    f" {type(model).__name__}")


def _bundle(model, device=None):
    """The translation model ``model`` names (:func:`bundle_of`), checked to be an
    encoder-decoder (a CLIP or a decoder-only model is a TypeError saying so)."""
    bundle = bundle_of(model, device)
    config = getattr(bundle.model, "config", None)
    if not getattr(config, "is_encoder_decoder", False):
        name = getattr(bundle, "name", None) or type(bundle.model).__name__
        raise TypeError(f"model {name!r} ({type(bundle.model).__name__}) is not an"
                        " encoder-decoder translation model; alignment needs one, e.g."
                        " 'bundled:toy-mt' or an hf: Marian/T5/BART model")
    return bundle


def _limit(bundle, max_length: int | None) -> int:
    if max_length is not None:
        return check_align_options(max_length=max_length)["max_length"]
    limits = [getattr(bundle.tokenizer, "model_max_length", None),
              getattr(bundle.model.config, "max_position_embeddings", None)]
    finite = [int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < 1e6]
    return min(finite) if finite else FALLBACK_MAX_LENGTH


def _words(sentence) -> list[str]:
    if isinstance(sentence, str):
        return sentence.split()
    return [str(w) for w in sentence]


@dataclass
class _Batch:
    """A padded batch of sentence pairs, forced decoding ready."""

    src: list[Encoded]
    tgt: list[Encoded]
    input_ids: torch.Tensor           # [batch, S]
    attention_mask: torch.Tensor      # [batch, S]
    decoder_input_ids: torch.Tensor   # [batch, L]
    decoder_attention_mask: torch.Tensor  # [batch, L]
    labels: torch.Tensor              # [batch, L]; row t of the decoder predicts labels[:, t]
    label_lengths: list[int]

    def model_inputs(self, repeat: int = 1) -> dict:
        def rep(x):
            return x if repeat == 1 else x.repeat_interleave(repeat, 0)

        return dict(input_ids=rep(self.input_ids), attention_mask=rep(self.attention_mask),
                    decoder_input_ids=rep(self.decoder_input_ids),
                    decoder_attention_mask=rep(self.decoder_attention_mask))


def _pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
        mask[b, : len(r)] = 1
    return ids, mask


def _pad_id(bundle) -> int:
    pad = getattr(bundle.tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(bundle.model.config, "pad_token_id", None)
    if pad is None:
        raise ValueError("neither the tokenizer nor the model config names a padding "
                         "token: set tokenizer.pad_token (or model.config.pad_token_id)")
    return int(pad)


def _decoder_inputs(model, labels: torch.Tensor, pad: int) -> torch.Tensor:
    """Decoder inputs for teacher forcing on ``labels``, the way the model trains."""
    prepare = getattr(model, "prepare_decoder_input_ids_from_labels", None)
    if prepare is not None:
        return prepare(labels=labels)
    config = model.config
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
    if start is None:
        raise ValueError("the model config has no decoder_start_token_id")
    out = labels.new_full(labels.shape, pad)
    out[:, 1:] = labels[:, :-1]
    out[:, 0] = int(start)
    return out


def _make_batch(bundle, src: list[Encoded], tgt: list[Encoded], *,
                decoder_inputs: list[list[int]] | None = None) -> _Batch:
    pad = _pad_id(bundle)
    input_ids, attention_mask = _pad([e.ids for e in src], pad)
    labels, label_mask = _pad([e.ids for e in tgt], pad)
    if decoder_inputs is None:
        dec = _decoder_inputs(bundle.model, labels, pad)
    else:
        dec, _ = _pad(decoder_inputs, pad)
    device = _device(bundle.model)
    return _Batch(src, tgt, input_ids.to(device), attention_mask.to(device), dec.to(device),
                  label_mask.to(device), labels.to(device), [len(e.ids) for e in tgt])


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _generate_kwargs(bundle, extra: dict | None) -> dict:
    """``generate`` keywords: the family's own (a forced first token, ...) under the
    caller's ``extra``."""
    family_kwargs = family_for(bundle.model).generate_kwargs
    own = family_kwargs(bundle.model, bundle.tokenizer) if family_kwargs else {}
    return {**own, **(extra or {})}


@torch.no_grad()
def _translate(bundle, src: list[Encoded], *, max_length: int,
               generate_kwargs: dict | None) -> tuple[list[Encoded], list[list[int]]]:
    """Greedy (or as configured) translations: target encodings and decoder inputs."""
    pad = _pad_id(bundle)
    ids, mask = _pad([e.ids for e in src], pad)
    device = _device(bundle.model)
    configured = getattr(getattr(bundle.model, "generation_config", None), "max_length", None)
    kwargs = dict(max_length=min(max_length, configured or max_length))
    kwargs.update(_generate_kwargs(bundle, generate_kwargs))
    out = bundle.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                **kwargs)
    if not isinstance(out, torch.Tensor):
        out = out.sequences
    eos = getattr(bundle.model.config, "eos_token_id", None)
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
    targets, decoder_inputs = [], []
    for row in out.tolist():
        # row = [decoder start, y_1, ..., y_n (= EOS), pad...]; labels are y_1..y_n.
        labels = []
        for token in row[1:]:
            labels.append(token)
            if token in eos:
                break
        while labels and labels[-1] == pad and pad not in eos:
            labels.pop()
        targets.append(words_from_ids(bundle.tokenizer, labels, target=True))
        decoder_inputs.append(row[: len(labels)])
    return targets, decoder_inputs



def _shift_rows(m: torch.Tensor) -> torch.Tensor:
    """Row ``t`` <- row ``t + 1`` (AWI); the last row becomes zero."""
    out = torch.zeros_like(m)
    out[..., :-1, :] = m[..., 1:, :]
    return out


def _word_matrices(maps: torch.Tensor, batch: _Batch, shift: bool) -> list[np.ndarray]:
    if shift:
        maps = _shift_rows(maps)
    out = []
    for b, (s, t) in enumerate(zip(batch.src, batch.tgt)):
        m = maps[b, : len(t.ids), : len(s.ids)].cpu().numpy()
        out.append(word_matrix(m, t.word_ids, s.word_ids, n_tgt=len(t.words),
                               n_src=len(s.words)))
    return out


def _batches(order: list[int], batch_size: int) -> Iterable[list[int]]:
    for k in range(0, len(order), batch_size):
        yield order[k:k + batch_size]



def _n_decoder_layers(bundle) -> int:
    config = bundle.model.config
    for name in ("decoder_layers", "num_decoder_layers", "num_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError("cannot tell the number of decoder layers from the model config")



def _plain(x):
    if x is None or isinstance(x, int):
        return x
    return [int(i) for i in x]


"""Word score matrices from a model's attention, for many settings at once.

:func:`_matrices` encodes the sentence pairs, runs them in padded batches (translating
first when there is no target) and returns one ``[T_words, S_words]`` matrix per
``(method, layers, shift)`` spec and pair. The methods that need no gradients share one
captured forward pass per batch; ``relevance`` takes one backward per target token.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch

from groundroll._locks import locked, warn_once, warning_scope
from groundroll.adapters import capture
from groundroll.alignment import composition
from groundroll.alignment.batching import (
    _Batch,
    _batches,
    _device,
    _limit,
    _make_batch,
    _translate,
    _word_matrices,
)
from groundroll.alignment.subwords import Encoded, encode_words
from groundroll.compose import compose, method_options

def _token_map(trace, method: str, *, layers, heads, head_fusion, residual) -> torch.Tensor:
    # align's head_fusion and residual go to the methods that take them (relevance
    # fuses heads by gradient; raw and norm have no residual).
    wanted = dict(head_fusion=head_fusion, residual=residual)
    taken = {k: v for k, v in wanted.items() if k in method_options(method)}
    comp = compose(trace, source="encoder", target="decoder", method=method, layers=layers,
                   heads=heads, shift=False, **taken)
    return comp.source_map.detach().float()   # [batch, L, S]


def _forward_maps(bundle, batch: _Batch, specs: Sequence[tuple[str, Any]], *,
                  heads, head_fusion, residual) -> list[torch.Tensor]:
    """Unshifted ``[batch, L, S]`` maps for each ``(method, layers)`` spec that needs no
    gradients, all from one captured forward pass."""
    values = any(method == "norm" for method, _ in specs)
    with torch.no_grad(), capture(bundle.model, values=values) as trace:
        bundle.model(**batch.model_inputs())
    rows = batch.decoder_attention_mask.float().cpu()
    return [composition.token_map(trace, method, layers=layers, heads=heads,
                                  residual=residual, row_mask=rows).to(_device(bundle.model))
            if method in composition.COMPOSED_METHODS else
            _token_map(trace, method, layers=layers, heads=heads, head_fusion=head_fusion,
                       residual=residual) for method, layers in specs]


def _relevance_maps(bundle, batch: _Batch, layer_sets: Sequence[Any], *, heads,
                    max_tokens: int, chunk: int) -> list[torch.Tensor]:
    """Relevance ``[batch, L, S]`` maps, row ``t`` explaining ``log p(labels[t])``.

    One backward per target token: the batch is repeated once per target position in a
    chunk, copy ``(b, t)`` back-propagates only its own score, so one
    ``torch.autograd.grad`` call serves the whole chunk.
    """
    model = bundle.model
    batch_size, length = batch.labels.shape
    n_src = batch.input_ids.shape[1]
    outs = [torch.zeros(batch_size, length, n_src) for _ in layer_sets]
    positions = list(range(min(length, max_tokens)))
    per_pass = max(1, chunk // max(1, batch_size))
    lengths = torch.as_tensor(batch.label_lengths)
    for start in range(0, len(positions), per_pass):
        pos = torch.as_tensor(positions[start:start + per_pass])
        k = len(pos)
        rows = pos.repeat(batch_size)                               # [batch * k]
        owner = torch.arange(batch_size).repeat_interleave(k)       # [batch * k]
        valid = rows < lengths[owner]
        if not bool(valid.any()):
            continue
        device = _device(model)
        with torch.enable_grad(), capture(model, grads=True) as trace:
            logits = model(**batch.model_inputs(repeat=k)).logits.float()
            logp = logits.log_softmax(-1)                           # [batch * k, L, V]
            copies = torch.arange(batch_size * k, device=device)
            rows_d = rows.to(device)
            wanted = batch.labels.to(device)[owner.to(device), rows_d]
            score = logp[copies, rows_d, wanted]
            trace.backward(torch.where(valid.to(device), score,
                                       torch.zeros_like(score)).sum())
        detached = trace.detach()
        for out, layer_set in zip(outs, layer_sets):
            m = compose(detached, source="encoder", target="decoder", method="relevance",
                        layers=layer_set, heads=heads, shift=False).source_map.float()
            picked = m[copies.cpu(), rows].view(batch_size, k, -1)  # [batch, k, S]
            picked = picked * valid.view(batch_size, k, 1)
            out[:, pos] = picked.cpu()
    return outs


def _matrices(bundle, *args, **kwargs):
    """:func:`_matrices_unlocked` holding the model's lock (concurrent calls on one
    model run one after another) with each warning shown once."""
    with warning_scope(), locked(bundle.model):
        return _matrices_unlocked(bundle, *args, **kwargs)


def _matrices_unlocked(bundle, srcs: list[list[str]], tgts: list[list[str]] | None, *,
              specs: Sequence[tuple[str, Any, bool]], heads, head_fusion, residual,
              batch_size: int, max_length, max_relevance_tokens: int, relevance_chunk: int,
              generate_kwargs, progress: bool):
    """Word matrices for every ``(method, layers, shift)`` spec and every pair.

    Returns ``(matrices per spec, source words, target words)``; pairs with an empty
    side get ``[T, S]`` matrices with a zero dimension.
    """
    tok = bundle.tokenizer
    if tok is None:
        raise ValueError(f"model {getattr(bundle, 'name', '')!r} has no tokenizer")
    limit = _limit(bundle, max_length)
    n = len(srcs)
    encoded_src: list[Encoded | None] = [None] * n
    truncated = []
    for i, words in enumerate(srcs):
        if words:
            encoded_src[i] = encode_words(tok, words, max_length=limit)
            if encoded_src[i].truncated:
                truncated.append(i)
    encoded_tgt: list[Encoded | None] = [None] * n
    if tgts is not None:
        for i, words in enumerate(tgts):
            if words and encoded_src[i] is not None:
                encoded_tgt[i] = encode_words(tok, words, target=True, max_length=limit)
                if encoded_tgt[i].truncated and i not in truncated:
                    truncated.append(i)
    if truncated:
        warn_once(f"{len(truncated)} sentence(s) longer than {limit} tokens were"
                  f" truncated (first: #{min(truncated)}); their cut-off words get no"
                  " links", stacklevel=4)
    todo = [i for i in range(n) if encoded_src[i] is not None
            and (tgts is None or encoded_tgt[i] is not None)]
    # Similar lengths together: less padding (results do not depend on the grouping).
    todo.sort(key=lambda i: len(encoded_src[i].ids))
    out = [[None] * n for _ in specs]
    tgt_words = [list(t) for t in tgts] if tgts is not None else [[] for _ in range(n)]
    grad_free = [(k, (m, l)) for k, (m, l, _) in enumerate(specs) if m != "relevance"]
    relevance = [(k, l) for k, (m, l, _) in enumerate(specs) if m == "relevance"]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="sent", desc="align")
    rel_warned = False
    for chunk in _batches(todo, batch_size):
        src_enc = [encoded_src[i] for i in chunk]
        if tgts is None:
            tgt_enc, dec_in = _translate(bundle, src_enc, max_length=limit,
                                         generate_kwargs=generate_kwargs)
            keep = [j for j, t in enumerate(tgt_enc) if t.words]
            for j, t in zip(chunk, tgt_enc):
                tgt_words[j] = list(t.words)
            chunk = [chunk[j] for j in keep]
            src_enc = [src_enc[j] for j in keep]
            tgt_enc, dec_in = [tgt_enc[j] for j in keep], [dec_in[j] for j in keep]
            if not chunk:
                if bar is not None:
                    bar.update(len(keep))
                continue
            batch = _make_batch(bundle, src_enc, tgt_enc, decoder_inputs=dec_in)
        else:
            batch = _make_batch(bundle, src_enc, [encoded_tgt[i] for i in chunk])
        if grad_free:
            maps = _forward_maps(bundle, batch, [spec for _, spec in grad_free], heads=heads,
                                 head_fusion=head_fusion, residual=residual)
            for (k, _), m in zip(grad_free, maps):
                for i, w in zip(chunk, _word_matrices(m, batch, specs[k][2])):
                    out[k][i] = w
        if relevance:
            if not rel_warned and batch.labels.shape[1] > max_relevance_tokens:
                warnings.warn(f"relevance: target tokens beyond {max_relevance_tokens}"
                              " get zero rows (raise max_relevance_tokens)", stacklevel=3)
                rel_warned = True
            maps = _relevance_maps(bundle, batch, [l for _, l in relevance], heads=heads,
                                   max_tokens=max_relevance_tokens, chunk=relevance_chunk)
            for (k, _), m in zip(relevance, maps):
                for i, w in zip(chunk, _word_matrices(m, batch, specs[k][2])):
                    out[k][i] = w
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    for k in range(len(specs)):
        for i in range(n):
            if out[k][i] is None:
                out[k][i] = np.zeros((len(tgt_words[i]), len(srcs[i])))
    return out, [list(s) for s in srcs], tgt_words

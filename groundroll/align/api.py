"""Word alignments from a translation model's attention.

:func:`align` runs a seq2seq model (Marian, BART, mBART, M2M100/NLLB, Pegasus, T5) with
teacher forcing on a sentence pair, turns its attention into a target x source map with
:func:`groundroll.compose.compose`, aggregates subwords into words and extracts hard
links. :func:`layer_scan` scores every layer x method x shift against gold alignments.

Row offsets
-----------
Under teacher forcing, decoder row ``t`` has target token ``t - 1`` as input and predicts
target token ``t`` (row 0 has the decoder start token as input). Two readings of "the row
of target word ``t``":

* ``shift=False`` (AWO, *alignment by word output*): the row that predicts the word;
* ``shift=True`` (AWI, *shift-att*, Chen et al. 2020): the row where the word is the
  decoder input, one row later.

Every method defaults to AWO (:data:`DEFAULT_SHIFT`): on the bundled toy-mt model AWO
beats AWI at every layer and for every method (``benchmarks/alignment.py``: raw last
layer 5% AER with AWO against 80% with AWI). On large real NMT models the literature
reports the opposite for raw cross-attention of the middle layers (shift-att, Chen et
al. 2020), so the better setting depends on the model and the layer: measure with
:func:`layer_scan` and pass ``shift=`` explicitly.

Without a target, :func:`align` translates with ``model.generate`` and then runs one
forced forward pass on the generated ids; attention is never read from cached
generation steps.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from groundroll.align import links as _links
from groundroll.align.subwords import Encoded, encode_words, word_matrix, words_from_ids

__all__ = [
    "Alignment",
    "align",
    "extract_links",
    "layer_scan",
    "LayerScan",
    "METHODS",
    "EXTRACTIONS",
    "SYMMETRISATIONS",
    "DEFAULT_SHIFT",
    "DEFAULT_THRESHOLD",
]

METHODS = ("raw", "rollout", "relevance", "norm", "flow", "decoder-rollout", "peak-weighted")
EXTRACTIONS = ("argmax", "threshold", "itermax")
SYMMETRISATIONS = ("intersection", "union", "grow-diag", "grow-diag-final",
                   "grow-diag-final-and")
#: Default ``shift`` of each method when ``align(shift=None)`` (see the module notes).
DEFAULT_SHIFT = {"raw": False, "norm": False, "rollout": False, "relevance": False,
                 "flow": False, "decoder-rollout": False, "peak-weighted": False}
#: Default exclusive lower limit of ``extraction="threshold"`` on row-normalised scores.
DEFAULT_THRESHOLD = 0.3
#: Sentences longer than this many tokens are truncated when neither ``max_length`` nor
#: a finite tokenizer/model limit says otherwise.
FALLBACK_MAX_LENGTH = 512


# ----------------------------------------------------------------------------- result


@dataclass
class Alignment:
    """A word alignment of one sentence pair.

    Attributes
    ----------
    src_words, tgt_words : list of str
        Source and target words (whitespace-split).
    matrix : numpy.ndarray
        ``[T_words, S_words]`` float64 word scores, target rows, source columns: the
        mean over a target word's subwords of the sum over a source word's subwords of
        the token map. Not renormalised.
    links : set of (int, int)
        Hard links ``(source index, target index)``, 0-indexed (Pharaoh order).
    scores : dict of (int, int) to float
        ``matrix[t, s]`` of every link ``(s, t)``.
    settings : dict
        Everything the alignment was computed with (model, method, layers, heads, shift,
        extraction, threshold, symmetrise, whether the target was generated, ...).
    """

    src_words: list[str]
    tgt_words: list[str]
    matrix: np.ndarray
    links: set[tuple[int, int]]
    scores: dict[tuple[int, int], float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def pharaoh(self) -> str:
        """The links as one Pharaoh line, ``"s-t s-t ..."`` (0-indexed, sorted).

        Examples
        --------
        >>> Alignment(["a", "b"], ["x"], np.ones((1, 2)), {(1, 0), (0, 0)}).pharaoh()
        '0-0 1-0'
        """
        from groundroll.align.io import format_pharaoh

        return format_pharaoh(self.links)

    def plot(self, *, gold=None, ax=None, title: str | None = None, cmap: str = "Greys"):
        """The matrix with links (red dots) and optional gold links (blue squares).

        Returns
        -------
        matplotlib.figure.Figure
        """
        from groundroll.viz import plot_alignment

        if title is None:
            title = f"{self.settings.get('method', '')} " + (
                "AWI" if self.settings.get("shift") else "AWO")
        return plot_alignment(self.matrix, self.src_words, self.tgt_words,
                              links=self.links, gold=gold, ax=ax, cmap=cmap, title=title)

    def to_html(self, *, title: str | None = None) -> str:
        """A self-contained interactive HTML page: hover a word to see its links and
        scores, links and matrix views, Pharaoh export
        (:func:`groundroll.report.alignment_report`; no network, data inline).

        Examples
        --------
        >>> a = Alignment(["a", "b"], ["x"], np.ones((1, 2)), {(0, 0)})
        >>> a.to_html().startswith("<!DOCTYPE html>")
        True
        """
        from groundroll.report import alignment_report

        return alignment_report(self, title=title)

    def to_dict(self) -> dict:
        """JSON-ready dict (links as sorted ``[s, t]`` lists)."""
        return dict(src_words=list(self.src_words), tgt_words=list(self.tgt_words),
                    matrix=self.matrix.tolist(), links=[list(l) for l in sorted(self.links)],
                    scores=[[s, t, v] for (s, t), v in sorted(self.scores.items())],
                    settings=self.settings)

    @classmethod
    def from_dict(cls, d: dict) -> "Alignment":
        t, s = len(d["tgt_words"]), len(d["src_words"])
        return cls(list(d["src_words"]), list(d["tgt_words"]),
                   np.asarray(d["matrix"], dtype=np.float64).reshape(t, s),
                   {(int(a), int(b)) for a, b in d["links"]},
                   {(int(a), int(b)): float(v) for a, b, v in d.get("scores", [])},
                   dict(d.get("settings", {})))

    def save(self, path, *, force: bool = False) -> None:
        """Write :meth:`to_dict` as JSON (atomically; no overwrite unless ``force``)."""
        import json

        from groundroll._atomic import atomic_write

        with atomic_write(path, force=force, mode="w") as handle:
            json.dump(self.to_dict(), handle)

    @classmethod
    def load(cls, path) -> "Alignment":
        import json

        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# ----------------------------------------------------------------------------- links


def extract_links(matrix, *, extraction: str = "argmax", threshold: float | None = None,
                  symmetrise: str | None = None, backward=None) -> set[tuple[int, int]]:
    """Hard links from a ``[T, S]`` word matrix.

    Parameters
    ----------
    matrix : array_like, shape [T, S]
        Target x source scores (the forward, target-to-source direction).
    extraction : {"argmax", "threshold", "itermax"}
        ``"argmax"``: each target word links to its best source word.
        ``"threshold"``: every cell whose row-normalised score is above ``threshold``.
        ``"itermax"``: SimAlign's IterMax (already uses both directions).
    threshold : float, optional
        Exclusive lower limit for ``"threshold"``, on rows normalised to sum 1 (and, for
        the backward direction, on columns normalised to sum 1). Default
        :data:`DEFAULT_THRESHOLD`.
    symmetrise : str, optional
        ``"intersection"``, ``"union"``, ``"grow-diag"``, ``"grow-diag-final"`` or
        ``"grow-diag-final-and"``: also extract the source-to-target direction and
        combine both with this heuristic. None: the forward direction only.
    backward : array_like, shape [T, S], optional
        Source-to-target scores from a reverse model, laid out like ``matrix`` (target
        rows). Default: the columns of ``matrix``.

    Returns
    -------
    set of (int, int)
        ``(s, t)`` links.

    Examples
    --------
    >>> m = [[0.8, 0.2, 0.0], [0.1, 0.1, 0.8]]
    >>> sorted(extract_links(m))
    [(0, 0), (2, 1)]
    >>> sorted(extract_links(m, symmetrise="union"))
    [(0, 0), (1, 0), (2, 1)]
    >>> sorted(extract_links(m, symmetrise="intersection"))
    [(0, 0), (2, 1)]
    """
    if extraction not in EXTRACTIONS:
        raise ValueError(f"extraction must be one of {EXTRACTIONS}, got {extraction!r}")
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"expected a [T, S] matrix, got shape {m.shape}")
    if m.size == 0:
        return set()
    if symmetrise is not None:
        key = symmetrise.replace("_", "-")
        if key not in SYMMETRISATIONS:
            raise ValueError(f"symmetrise must be one of {SYMMETRISATIONS} or None, got"
                             f" {symmetrise!r}")
    if extraction == "itermax":
        if symmetrise is not None:
            raise ValueError("extraction='itermax' intersects both directions itself;"
                             " leave symmetrise=None")
        if backward is not None:
            m = 0.5 * (_norm_rows(m) + _norm_cols(np.asarray(backward, np.float64)))
        return _drop_unscored(_links.itermax(m), m)
    limit = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    if extraction == "argmax":
        forward = _links.argmax_links(m, axis=1)
    else:
        forward = _links.threshold_links(_norm_rows(m), threshold=limit)
    if symmetrise is None:
        return _drop_unscored(forward, m)
    b = m if backward is None else np.asarray(backward, dtype=np.float64)
    if b.shape != m.shape:
        raise ValueError(f"backward matrix {b.shape} does not match {m.shape}")
    if extraction == "argmax":
        reverse = _links.argmax_links(b, axis=0)
    else:
        reverse = _links.threshold_links(_norm_cols(b), threshold=limit)
    return _drop_unscored(_links.symmetrize(forward, reverse, how=symmetrise), m)


def _drop_unscored(found: set, m: np.ndarray) -> set:
    """Links of words whose row or column is all zero (words cut off by the model's
    length limit, or given no score) are dropped: there is no evidence for them."""
    rows, cols = np.any(m != 0, axis=1), np.any(m != 0, axis=0)
    return {(s, t) for s, t in found if rows[t] and cols[s]}


def _norm_rows(m: np.ndarray) -> np.ndarray:
    total = np.clip(m, 0, None).sum(1, keepdims=True)
    return np.divide(np.clip(m, 0, None), total, out=np.zeros_like(m), where=total > 0)


def _norm_cols(m: np.ndarray) -> np.ndarray:
    return _norm_rows(m.T).T


# ----------------------------------------------------------------------------- model side


def _bundle(model):
    from groundroll.zoo import Bundle, cached

    if isinstance(model, Bundle):
        return model
    if isinstance(model, (str, Path)):
        return cached(str(model))
    raise TypeError("model must be a groundroll.zoo.Bundle or a spec for"
                    f" groundroll.zoo.load (e.g. 'bundled:toy-mt'), got {type(model).__name__}")


def _limit(bundle, max_length: int | None) -> int:
    if max_length is not None:
        return int(max_length)
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
        pad = bundle.model.config.pad_token_id
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
    kwargs = dict(extra or {})
    tok = bundle.tokenizer
    tgt_lang = getattr(tok, "tgt_lang", None)
    gen = getattr(bundle.model, "generation_config", None)
    if (tgt_lang and "forced_bos_token_id" not in kwargs
            and getattr(gen, "forced_bos_token_id", None) is None
            and bundle.model.config.model_type in ("m2m_100", "nllb", "mbart")):
        # mBART-50 / M2M100 / NLLB start the translation with the target language code.
        kwargs["forced_bos_token_id"] = tok.convert_tokens_to_ids(tgt_lang)
    return kwargs


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
    eos = bundle.model.config.eos_token_id
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


def _token_map(trace, method: str, *, layers, heads, head_fusion, residual) -> torch.Tensor:
    from groundroll.compose import compose

    comp = compose(trace, source="encoder", target="decoder", method=method, layers=layers,
                   heads=heads, head_fusion=head_fusion, residual=residual, shift=False)
    return comp.source_map.detach().float()   # [batch, L, S]


def _shift_rows(m: torch.Tensor) -> torch.Tensor:
    """Row ``t`` <- row ``t + 1`` (AWI); the last row becomes zero."""
    out = torch.zeros_like(m)
    out[..., :-1, :] = m[..., 1:, :]
    return out


def _forward_maps(bundle, batch: _Batch, specs: Sequence[tuple[str, Any]], *,
                  heads, head_fusion, residual) -> list[torch.Tensor]:
    """Unshifted ``[batch, L, S]`` maps for each ``(method, layers)`` spec that needs no
    gradients, all from one captured forward pass."""
    from groundroll.adapters import capture

    values = any(method == "norm" for method, _ in specs)
    with torch.no_grad(), capture(bundle.model, values=values) as trace:
        bundle.model(**batch.model_inputs())
    from groundroll.align import composition

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
    from groundroll.adapters import capture
    from groundroll.compose import compose

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
            score = torch.where(valid.to(device), score, torch.zeros_like(score)).sum()
            layers = list(trace)
            grads = torch.autograd.grad(score, [l.weights for l in layers],
                                        allow_unused=True)
        for layer, g in zip(layers, grads):
            layer.grad = torch.zeros_like(layer.weights) if g is None else g.detach()
        detached = trace.detach()
        for out, layer_set in zip(outs, layer_sets):
            m = compose(detached, source="encoder", target="decoder", method="relevance",
                        layers=layer_set, heads=heads, shift=False).source_map.float()
            picked = m[copies.cpu(), rows].view(batch_size, k, -1)  # [batch, k, S]
            picked = picked * valid.view(batch_size, k, 1)
            out[:, pos] = picked.cpu()
    return outs


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


# ----------------------------------------------------------------------------- align


def align(
    src, tgt=None, *, model, method: str | None = None, layers=None, heads=None,
    shift: bool | None = None, extraction: str | None = None, threshold: float | None = None,
    symmetrise: str | None = None, profile=None, reverse_model=None, batch_size: int = 16,
    max_length: int | None = None, head_fusion="mean", residual: float = 0.5,
    max_relevance_tokens: int = 128, relevance_chunk: int = 256,
    generate_kwargs: dict | None = None, progress: bool = False,
):
    """Word alignment of sentence pairs from a translation model's attention.

    Parameters
    ----------
    src : str, sequence of str, or sequence of sequence of str
        One source sentence (a string, split on whitespace) or a list of them (each a
        string or a list of words).
    tgt : like ``src``, optional
        Target sentences (forced decoding on them). None: translate ``src`` with
        ``model.generate``, then run one forced pass on the translation.
    model : groundroll.zoo.Bundle or str
        A loaded bundle or a spec for :func:`groundroll.zoo.load`
        (``"bundled:toy-mt"``, ``"hf:Helsinki-NLP/opus-mt-de-en"``, ...).
    method : {"raw", "rollout", "relevance", "norm", "flow"}, optional
        None (the default call): the settings of the model's alignment profile
        (:mod:`groundroll.align.profile`: method, layers, shift and extraction that
        measured best on gold pairs, stored beside the model), or, without a profile,
        ``raw`` cross-attention of the single most peaked layer
        (:func:`~groundroll.align.profile.peak_mass_layer`, chosen over all sentences of
        the call). ``raw``: fused cross-attention averaged over ``layers``. ``norm``: the same with
        value-norm weighting. ``rollout``: encoder rollout composed through the
        decoder's self- and cross-attention. ``relevance``: gradient-weighted relevance
        (Chefer et al.), one score per target token (its log-probability). ``flow``:
        attention flow over the composed graph (slow). See
        :func:`groundroll.compose.compose`. ``decoder-rollout``: the rollout without
        encoder mixing; ``peak-weighted``: the layers' cross-attention weighted by how
        peaked each is (:mod:`groundroll.align.composition`).
    layers : int or sequence of int, optional
        ``raw``/``norm``: cross-attention layers averaged (default all). ``rollout``,
        ``relevance``, ``flow``: decoder layers taking part (default all).
    heads : int or sequence of int, optional
        Heads kept before fusion (default all).
    shift : bool, optional
        Read target word ``t`` at the row where it is the decoder input (AWI) instead of
        the row that predicts it (AWO). None: :data:`DEFAULT_SHIFT` of the method.
    extraction : {"argmax", "threshold", "itermax"}, optional
        Default: the profile's (when ``method`` is None), else ``"argmax"``.
    threshold : float, optional
        For ``extraction="threshold"`` (on row-normalised scores; default
        :data:`DEFAULT_THRESHOLD`).
    symmetrise : {"intersection", "union", "grow-diag", "grow-diag-final", "grow-diag-final-and"}, optional
        Combine target-to-source and source-to-target links (see :func:`extract_links`).
    profile : None, False, path or AlignProfile
        Used when ``method`` is None. None: the profile stored with the model, if any;
        False: none (the unsupervised rule); a path or an
        :class:`~groundroll.align.profile.AlignProfile`: that one. Options passed
        explicitly always win over the profile's.
    reverse_model : Bundle or str, optional
        A target-to-source model; with ``symmetrise`` its alignment gives the backward
        direction instead of the columns of the forward matrix.
    batch_size : int
        Sentence pairs per forward pass (padded; results do not depend on it).
    max_length : int, optional
        Token limit per sentence (default: the tokenizer's/model's). Longer sentences are
        truncated with a warning; words cut off get no links.
    head_fusion, residual
        As in :func:`groundroll.compose.compose`.
    max_relevance_tokens : int
        ``relevance``: target tokens beyond this get zero rows (with a warning).
    relevance_chunk : int
        ``relevance``: at most this many (sentence, target token) copies per pass.
    generate_kwargs : dict, optional
        Passed to ``model.generate`` when ``tgt`` is None.
    progress : bool
        Show a progress bar (tqdm, on stderr).

    Returns
    -------
    Alignment, or list of Alignment
        A list when ``src`` is a list.

    Examples
    --------
    >>> import groundroll as gr
    >>> a = gr.align("su tuga vefin", model="bundled:toy-mt")      # doctest: +SKIP
    >>> a.pharaoh()                                                 # doctest: +SKIP
    '0-0 1-1 2-1'
    """
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if extraction is not None and extraction not in EXTRACTIONS:
        raise ValueError(f"extraction must be one of {EXTRACTIONS}, got {extraction!r}")
    if extraction == "itermax" and symmetrise is not None:
        raise ValueError("extraction='itermax' intersects both directions itself;"
                         " leave symmetrise=None")
    if symmetrise is not None and symmetrise.replace("_", "-") not in SYMMETRISATIONS:
        raise ValueError(f"symmetrise must be one of {SYMMETRISATIONS} or None, got"
                         f" {symmetrise!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    single = isinstance(src, str)
    srcs = [src] if single else list(src)
    if tgt is not None:
        tgts = [tgt] if isinstance(tgt, str) else list(tgt)
        if single != isinstance(tgt, str) or len(tgts) != len(srcs):
            raise ValueError(f"src and tgt must both be one sentence or lists of the same"
                             f" length; got {len(srcs)} source and {len(tgts)} target")
    else:
        tgts = None
    bundle = _bundle(model)
    from groundroll.align.profile import peak_mass_layer, resolve_defaults

    chosen = resolve_defaults(bundle, method=method, layers=layers, shift=shift,
                              extraction=extraction, threshold=threshold,
                              symmetrise=symmetrise, profile=profile)
    method, layers, shift = chosen["method"], chosen["layers"], chosen["shift"]
    extraction, threshold, symmetrise = (chosen["extraction"], chosen["threshold"],
                                         chosen["symmetrise"])
    if extraction == "itermax" and symmetrise is not None:
        raise ValueError("extraction='itermax' intersects both directions itself;"
                         " leave symmetrise=None")
    if chosen["rule"]:
        # Every layer from the same forward passes; keep the most peaked one.
        specs = [(method, [k], shift) for k in range(_n_decoder_layers(bundle))]
    else:
        specs = [(method, layers, shift)]
    matrices, src_words, tgt_words = _matrices(
        bundle, [_words(s) for s in srcs], None if tgts is None else [_words(t) for t in tgts],
        specs=specs, heads=heads, head_fusion=head_fusion,
        residual=residual, batch_size=batch_size, max_length=max_length,
        max_relevance_tokens=max_relevance_tokens, relevance_chunk=relevance_chunk,
        generate_kwargs=generate_kwargs, progress=progress)
    peak = None
    if chosen["rule"]:
        best, peak = peak_mass_layer(matrices)
        layers = [best]
        matrices = [matrices[best]]
    forward = matrices[0]
    backward = [None] * len(srcs)
    if reverse_model is not None and (symmetrise is not None or extraction == "itermax"):
        rev, _, _ = _matrices(
            _bundle(reverse_model), tgt_words, src_words, specs=[(method, layers, shift)],
            heads=heads, head_fusion=head_fusion, residual=residual, batch_size=batch_size,
            max_length=max_length, max_relevance_tokens=max_relevance_tokens,
            relevance_chunk=relevance_chunk, generate_kwargs=None, progress=progress)
        backward = [m.T for m in rev[0]]
    settings = dict(model=getattr(bundle, "name", ""), method=method,
                    layers=_plain(layers), heads=_plain(heads), shift=shift,
                    extraction=extraction, threshold=threshold, symmetrise=symmetrise,
                    reverse_model=None if reverse_model is None else str(
                        getattr(reverse_model, "name", reverse_model)),
                    head_fusion=head_fusion if isinstance(head_fusion, str) else "tensor",
                    residual=residual, generated=tgts is None, defaults=chosen["defaults"])
    if peak is not None:
        settings["peak_mass"] = [round(x, 4) for x in peak]
    out = []
    for m, b, sw, tw in zip(forward, backward, src_words, tgt_words):
        found = extract_links(m, extraction=extraction, threshold=threshold,
                              symmetrise=symmetrise, backward=b)
        out.append(Alignment(list(sw), list(tw), m, found,
                             {(s, t): float(m[t, s]) for s, t in found}, dict(settings)))
    return out[0] if single else out


def _plain(x):
    if x is None or isinstance(x, int):
        return x
    return [int(i) for i in x]


def _matrices(bundle, *args, **kwargs):
    """:func:`_matrices_unlocked` holding the model's lock (concurrent calls on one
    model run one after another) with each warning shown once."""
    from groundroll._locks import locked, warning_scope

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
        from groundroll._locks import warn_once

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


# ----------------------------------------------------------------------------- layer scan


@dataclass
class LayerScan:
    """AER, precision and recall for every method x layer x shift setting.

    Attributes
    ----------
    rows : list of dict
        One dict per setting: ``method``, ``layer`` (int; ``"all"`` for the mean over
        all cross-attention layers of ``raw``/``norm``), ``shift`` (bool),
        ``layers`` (the decoder layers used), ``aer``, ``precision``, ``recall``,
        ``f1``, ``n_pairs``.
    settings : dict
        Extraction, symmetrisation, model, number of pairs per method.
    seconds : dict of str to float
        Wall time spent per method (forward passes, composition, aggregation).
    """

    rows: list[dict]
    settings: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    def best(self, metric: str = "aer", *, method: str | None = None) -> dict:
        """The best row (lowest AER; highest precision/recall/F1)."""
        rows = [r for r in self.rows if method is None or r["method"] == method]
        if not rows:
            raise ValueError(f"no rows for method {method!r}")
        sign = 1 if metric == "aer" else -1
        return min(rows, key=lambda r: sign * r[metric])

    def save_profile(self, path, *, metric: str = "aer", method: str | None = None,
                     force: bool = False):
        """Store the best row as the model's alignment profile, which :func:`align`
        then uses by default (see :mod:`groundroll.align.profile`).

        ``path``: a file, or the model folder (the file is then ``align_profile.json``
        in it). Returns the :class:`~groundroll.align.profile.AlignProfile`.

        Examples
        --------
        >>> scan = layer_scan(toy.pairs(100, split="dev"), model="bundled:toy-mt")  # doctest: +SKIP
        >>> scan.save_profile("path/to/model-folder")                              # doctest: +SKIP
        """
        from groundroll.align.profile import AlignProfile

        profile = AlignProfile.from_scan(self, metric=metric, method=method)
        profile.save(path, force=force)
        return profile

    def to_markdown(self, *, baseline: str | None = "raw") -> str:
        """A markdown table, best row in bold; with ``baseline``, that method's AER at
        the same layer and shift sits beside every row."""
        base = {(r["layer"], r["shift"]): r["aer"] for r in self.rows
                if r["method"] == baseline}
        best = self.best()
        head = ["method", "layer", "shift", "AER", "P", "R", "F1"]
        if base:
            head += [f"{baseline} AER", "Δ AER"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r["method"], str(r["layer"]), "AWI" if r["shift"] else "AWO",
                     f"{100 * r['aer']:.1f}", f"{100 * r['precision']:.1f}",
                     f"{100 * r['recall']:.1f}", f"{100 * r['f1']:.1f}"]
            if base:
                b = base.get((r["layer"], r["shift"]))
                cells += ["" if b is None else f"{100 * b:.1f}",
                          "" if b is None or r["method"] == baseline
                          else f"{100 * (r['aer'] - b):+.1f}"]
            if r is best:
                cells = [f"**{c}**" if c else c for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plot(self, *, metric: str = "aer", ax=None, title: str | None = None):
        """Metric per layer, one line per method and shift
        (:func:`groundroll.viz.plot_layer_scan`); the ``"all"`` rows are left out."""
        from groundroll.viz import plot_layer_scan

        rows = [dict(r, shift=int(r["shift"])) for r in self.rows
                if isinstance(r["layer"], int)]
        return plot_layer_scan(rows, metric=metric, lower_is_better=metric == "aer",
                               ax=ax, title=title)


def _read_lines(path) -> list[str]:
    from groundroll.align.io import read_lines

    return read_lines(path)


def _scan_inputs(pairs, gold):
    """``(src words, tgt words, sure, possible)`` from pairs, files or toy pairs."""
    from groundroll.align.io import read_talp

    if isinstance(pairs, tuple) and len(pairs) == 2 and all(
            isinstance(p, (str, Path)) for p in pairs) and Path(pairs[0]).is_file():
        srcs = [line.split() for line in _read_lines(pairs[0])]
        tgts = [line.split() for line in _read_lines(pairs[1])]
        if len(srcs) != len(tgts):
            raise ValueError(f"{pairs[0]} has {len(srcs)} lines but {pairs[1]} has"
                             f" {len(tgts)}")
    else:
        srcs, tgts, own = [], [], []
        for p in pairs:
            if hasattr(p, "src_words"):
                srcs.append(list(p.src_words))
                tgts.append(list(p.tgt_words))
                own.append(set(p.alignment))
            else:
                s, t = p
                srcs.append(_words(s))
                tgts.append(_words(t))
        if gold is None and len(own) == len(srcs) and own:
            return srcs, tgts, own, own
    if gold is None:
        raise ValueError("gold alignments are needed: a talp file, a list of link sets or"
                         " a (sure, possible) tuple")
    if isinstance(gold, (str, Path)):
        sure, possible = read_talp(gold)
    elif isinstance(gold, tuple) and len(gold) == 2:
        sure, possible = list(gold[0]), list(gold[1])
    else:
        sure = [set(g) for g in gold]
        possible = sure
    if len(sure) != len(srcs):
        raise ValueError(f"{len(sure)} gold alignments for {len(srcs)} sentence pairs")
    return srcs, tgts, sure, possible


def _n_decoder_layers(bundle) -> int:
    config = bundle.model.config
    for name in ("decoder_layers", "num_decoder_layers", "num_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError("cannot tell the number of decoder layers from the model config")


def layer_scan(
    pairs, gold=None, *, model, methods: Sequence[str] = ("raw", "rollout", "relevance", "norm"),
    shifts: Sequence[bool] = (False, True), extraction: str = "argmax",
    threshold: float | None = None, symmetrise: str | None = None, heads=None,
    batch_size: int = 16, max_length: int | None = None, limits: dict | None = None,
    include_mean: bool = True, progress: bool = False,
) -> LayerScan:
    """Score every layer x method x shift against gold alignments.

    For ``raw`` and ``norm``, layer ``l`` is the cross-attention of decoder layer ``l``
    alone (plus, with ``include_mean``, a row ``layer="all"``: the mean over all
    layers, :func:`align`'s default). For ``rollout``, ``relevance`` and ``flow``, layer
    ``l`` means the composition through decoder layers ``0..l`` (the encoder is always
    used in full); the last layer is the whole model.

    Parameters
    ----------
    pairs : sequence of (src, tgt), sequence of toy ``Pair``, or (src_file, tgt_file)
        Sentence pairs; files hold one whitespace-tokenised sentence per line.
    gold : str or path, sequence of link sets, or (sure, possible), optional
        A talp gold file (1-indexed; ``s-t`` sure, ``spt`` possible) or 0-indexed
        ``(s, t)`` sets. Optional when ``pairs`` carry their own ``alignment``.
    model : Bundle or str
    methods : sequence of str
    shifts : sequence of bool
        ``False``: AWO, ``True``: AWI.
    extraction, threshold, symmetrise, heads
        As in :func:`align`.
    limits : dict of str to int, optional
        Use only the first ``n`` pairs for a method, e.g. ``{"relevance": 100}`` (one
        backward per target token is expensive).
    include_mean : bool
        Add the all-layer mean rows of ``raw``/``norm``.

    Returns
    -------
    LayerScan

    Examples
    --------
    >>> from groundroll.data import toy_translation as toy
    >>> scan = layer_scan(toy.pairs(50, split="test"), model="bundled:toy-mt",
    ...                   methods=("raw",))                      # doctest: +SKIP
    >>> print(scan.to_markdown())                                # doctest: +SKIP
    """
    from groundroll.evaluate import aer

    bundle = _bundle(model)
    srcs, tgts, sure, possible = _scan_inputs(pairs, gold)
    n_layers = _n_decoder_layers(bundle)
    limits = dict(limits or {})
    rows, seconds = [], {}
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method in ("raw", "norm"):
            layer_specs = [(l, [l]) for l in range(n_layers)]
            if include_mean:
                layer_specs.append(("all", None))
        else:
            layer_specs = [(l, list(range(l + 1))) for l in range(n_layers)]
        specs = [(method, layers, bool(s)) for _, layers in layer_specs for s in shifts]
        labels = [(name, bool(s)) for name, _ in layer_specs for s in shifts]
        n = min(len(srcs), limits.get(method, len(srcs)))
        start = time.perf_counter()
        mats, _, _ = _matrices(bundle, srcs[:n], tgts[:n], specs=specs, heads=heads,
                               head_fusion="mean", residual=0.5, batch_size=batch_size,
                               max_length=max_length, max_relevance_tokens=10**6,
                               relevance_chunk=256, generate_kwargs=None, progress=progress)
        preds_all = [[extract_links(m, extraction=extraction, threshold=threshold,
                                    symmetrise=symmetrise) for m in per_spec]
                     for per_spec in mats]
        seconds[method] = time.perf_counter() - start
        for (name, shift), (_, layers, _), preds in zip(labels, specs, preds_all):
            score = aer(sure[:n], possible[:n], preds)
            rows.append(dict(method=method, layer=name, shift=shift,
                             layers=None if layers is None else list(layers),
                             aer=score.aer, precision=score.precision, recall=score.recall,
                             f1=score.f1, n_pairs=n))
    settings = dict(model=getattr(bundle, "name", ""), extraction=extraction,
                    threshold=threshold, symmetrise=symmetrise, heads=_plain(heads),
                    n_pairs={m: min(len(srcs), limits.get(m, len(srcs))) for m in methods})
    return LayerScan(rows, settings, seconds)

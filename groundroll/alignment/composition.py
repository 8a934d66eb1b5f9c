"""Why end-to-end rollout loses to one cross-attention layer, measured piece by piece.

The end-to-end rollout of an encoder-decoder (``method="rollout"``) mixes three things
into the target x source map besides the cross-attention of one layer:

1. **encoder mixing**: every cross-attention row is multiplied by the encoder rollout
   ``R_enc`` (``C R_enc``), moving mass from an encoder position to the inputs its
   representation was built from;
2. **decoder self-attention**: before each cross-attention block the running rows are
   mixed by the decoder's self-attention (``R_dec <- Ã_self R_dec``), so a target row
   inherits the links that earlier target words made;
3. **the residual share**: each layer adds ``(1 - r) C^(l) [R_enc | 0]`` to ``r R_dec``,
   so the source map is a geometric mixture of all layers' cross-attention, with the last
   layer weighted ``(1 - r)`` against ``r (1 - r)``, ``r^2 (1 - r)``, ... for the earlier
   ones.

:func:`variant_maps` computes the rollout with each of these switched on or off, plus
the single layers and two composed alternatives, from one captured trace, so that
:func:`composition_study` can score all of them on the same gold pairs. The functions here
take fused ``[batch, query, key]`` tensors and return tensors; the study runs the model.

Variants (``[batch, T, S]`` source maps)
----------------------------------------
``raw:l``
    Cross-attention of decoder layer ``l`` (the baseline).
``rollout``
    Full end-to-end rollout, residual ``r`` (equal to ``compose(method="rollout")``).
``rollout-no-encoder``, ``rollout-no-self``, ``rollout-cross-only``
    The rollout with ``R_enc = I``, without the decoder self-attention step, or both
    (a residual-weighted mix of the layers' cross-attention).
``last-encoder``
    The last layer's cross-attention composed with the encoder rollout, ``C^(L) R_enc``.
``last-self``
    The last layer's cross-attention after the last decoder self-attention block,
    ``Ã_self^(L) C^(L)`` (rows inherit earlier words' links).
``peak-weighted``
    Composition across layers that keeps the best layer's sharpness: the mean of the
    layers' cross-attention weighted by ``peak_mass(l) ** gamma`` (``gamma = 8``), where
    ``peak_mass`` is the mean largest share of a row on one source token, measured on the
    batch. Unsupervised; at ``gamma -> inf`` it is the most peaked layer.
``product``
    Geometric mean of the last two layers' cross-attention (rows renormalised): a
    source token must be attended by both layers.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from groundroll._markup import markdown_text
from groundroll.adapters import capture
from groundroll.alignment.batching import _batches, _bundle, _limit, _make_batch, _word_matrices
from groundroll.alignment.extract import extract_links
from groundroll.alignment.subwords import encode_words
from groundroll.evaluate import aer

__all__ = ["VARIANTS", "COMPOSED_METHODS", "fuse", "residual_rows", "rollout_variants",
           "variant_maps", "peak_weighted", "token_map", "composition_study",
           "CompositionStudy"]

VARIANTS = ("rollout", "rollout-no-encoder", "rollout-no-self", "rollout-cross-only",
            "last-encoder", "last-self", "peak-weighted", "product")
_EPS = 1e-12
#: Composed methods :func:`groundroll.align` offers from this module: the rollout without
#: encoder mixing (decoder self-attention and every layer's cross-attention, residual
#: share kept) and the peak-weighted mean of the layers' cross-attention.
COMPOSED_METHODS = ("decoder-rollout", "peak-weighted")


def fuse(weights: torch.Tensor) -> torch.Tensor:
    """Mean over heads: ``[batch, head, query, key]`` -> ``[batch, query, key]``."""
    return weights.float().mean(1)


def _rownorm(m: torch.Tensor) -> torch.Tensor:
    return m / m.sum(-1, keepdim=True).clamp_min(_EPS)


def residual_rows(a: torch.Tensor, r: float) -> torch.Tensor:
    """``rownorm((1 - r) A + r I)`` for ``[batch, n, n]`` self-attention."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return _rownorm((1 - r) * a + r * eye)


def rollout_variants(enc: Sequence[torch.Tensor], dec_self: Sequence[torch.Tensor],
                     cross: Sequence[torch.Tensor], *, residual: float = 0.5,
                     use_encoder: bool = True, use_self: bool = True) -> torch.Tensor:
    """End-to-end rollout source map with parts switched off.

    Parameters
    ----------
    enc : sequence of [batch, S, S]
        Fused encoder self-attention, first layer first.
    dec_self : sequence of [batch, T, T]
        Fused decoder self-attention.
    cross : sequence of [batch, T, S]
        Fused cross-attention (same number of layers as ``dec_self``).
    residual : float
        ``r`` of the residual correction and of the cross-attention blocks.
    use_encoder, use_self : bool
        Compose with the encoder rollout; apply the decoder self-attention blocks.

    Returns
    -------
    torch.Tensor
        ``[batch, T, S]``: the source part of ``R_dec``.

    Examples
    --------
    >>> c = [torch.eye(2)[None]]
    >>> rollout_variants([torch.eye(2)[None]], [torch.eye(2)[None]], c)[0]
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]])
    """
    if len(dec_self) != len(cross):
        raise ValueError(f"{len(dec_self)} decoder self-attention layers but {len(cross)}"
                         " cross-attention layers")
    b, t, s = cross[0].shape
    dev = cross[0].device
    r_enc = torch.eye(s, device=dev).expand(b, s, s)
    if use_encoder:
        for a in enc:
            r_enc = residual_rows(a, residual) @ r_enc
    src = torch.zeros(b, t, s, device=dev)
    tgt = torch.eye(t, device=dev).expand(b, t, t)
    for a_self, c in zip(dec_self, cross):
        if use_self:
            mix = residual_rows(a_self, residual)
            src, tgt = mix @ src, mix @ tgt
        src = residual * src + (1 - residual) * (_rownorm(c) @ r_enc)
        tgt = residual * tgt
    return src


def peak_weighted(cross: Sequence[torch.Tensor], *, gamma: float = 8.0,
                  row_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the layers' cross-attention weighted by ``peak_mass ** gamma``, per sentence.

    Parameters
    ----------
    cross : sequence of [batch, T, S]
        Row-normalised, head-fused cross-attention, one tensor per layer.
    gamma : float
        Sharpness of the weighting (0: plain mean; large: the most peaked layer).
    row_mask : [batch, T], optional
        1 for real target rows; padded rows do not count toward a sentence's peak mass.

    Returns
    -------
    torch.Tensor
        ``[batch, T, S]``; each sentence's weights depend on that sentence only.

    Examples
    --------
    >>> flat, sharp = torch.full((1, 2, 2), 0.5), torch.eye(2)[None]
    >>> peak_weighted([flat, sharp], gamma=50.0)[0].round(decimals=6)
    tensor([[1., 0.],
            [0., 1.]])
    """
    peaks = torch.stack([c.max(-1).values for c in cross])       # [layer, batch, T]
    if row_mask is None:
        per = peaks.mean(-1)
    else:
        m = row_mask.to(device=peaks.device, dtype=peaks.dtype)
        per = (peaks * m).sum(-1) / m.sum(-1).clamp_min(1)        # [layer, batch]
    w = per.clamp_min(_EPS).log() * gamma
    w = torch.softmax(w, dim=0)                                   # [layer, batch]
    return sum(w[k][:, None, None] * c for k, c in enumerate(cross))


def token_map(trace, method: str, *, layers=None, heads=None, residual: float = 0.5,
              gamma: float = 8.0, row_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[batch, T, S]`` map of a method in :data:`COMPOSED_METHODS` from a trace.

    ``layers``: decoder layers taking part (default all; others are left out);
    ``heads``: heads kept before the mean over heads.
    """
    if method not in COMPOSED_METHODS:
        raise ValueError(f"method must be one of {COMPOSED_METHODS}, got {method!r}")

    def fused(name):
        out = []
        for w in trace.weights(name):
            if heads is not None:
                keep = [heads] if isinstance(heads, int) else list(heads)
                w = w[:, keep]
            out.append(fuse(w))
        return out

    cross, dec_self = fused("cross"), fused("decoder")
    n = len(cross)
    chosen = list(range(n)) if layers is None else (
        [layers] if isinstance(layers, int) else list(layers))
    bad = [k for k in chosen if not -n <= k < n]
    if bad or not chosen:
        raise ValueError(f"layers {layers!r} out of range for {n} decoder layers")
    chosen = sorted({k % n for k in chosen})
    cross = [_rownorm(cross[k]) for k in chosen]
    if method == "peak-weighted":
        return peak_weighted(cross, gamma=gamma, row_mask=row_mask)
    return rollout_variants([], [dec_self[k] for k in chosen], cross, residual=residual,
                            use_encoder=False)


def variant_maps(enc, dec_self, cross, *, residual: float = 0.5, gamma: float = 8.0,
                 row_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every study variant (see the module notes) as ``[batch, T, S]`` maps.

    ``row_mask`` (``[batch, T]``, 1 for real target rows) restricts the peak-mass
    statistic of ``peak-weighted`` to real rows.
    """
    cross = [_rownorm(c) for c in cross]
    out = {f"raw:{k}": c for k, c in enumerate(cross)}
    out["rollout"] = rollout_variants(enc, dec_self, cross, residual=residual)
    out["rollout-no-encoder"] = rollout_variants(enc, dec_self, cross, residual=residual,
                                                 use_encoder=False)
    out["rollout-no-self"] = rollout_variants(enc, dec_self, cross, residual=residual,
                                              use_self=False)
    out["rollout-cross-only"] = rollout_variants(enc, dec_self, cross, residual=residual,
                                                 use_encoder=False, use_self=False)
    r_enc = torch.eye(cross[0].shape[-1]).expand_as(enc[0]) if enc else None
    for a in enc:
        r_enc = residual_rows(a, residual) @ r_enc
    out["last-encoder"] = cross[-1] @ r_enc if r_enc is not None else cross[-1]
    out["last-self"] = residual_rows(dec_self[-1], residual) @ cross[-1]
    out["peak-weighted"] = peak_weighted(cross, gamma=gamma, row_mask=row_mask)
    if len(cross) >= 2:
        out["product"] = _rownorm((cross[-1].clamp_min(_EPS) * cross[-2].clamp_min(_EPS)).sqrt())
    else:
        out["product"] = cross[-1]
    return out


class CompositionStudy:
    """AER, precision, recall per variant and shift; ``to_markdown()`` for reports.

    Attributes
    ----------
    rows : list of dict
        ``variant``, ``shift``, ``aer``, ``precision``, ``recall``, ``n_pairs``.
    residual_share : dict
        Measured decomposition of the rollout's source mass: the share contributed by
        the last layer's own row (``last_row``), by the earlier layers (``earlier``), and
        the mean mass the encoder rollout keeps on the diagonal (``encoder_diagonal``).
    seconds : float
    """

    def __init__(self, rows, residual_share, seconds, settings):
        self.rows, self.residual_share = rows, residual_share
        self.seconds, self.settings = seconds, settings

    def best(self, *, shift: bool | None = None) -> dict:
        rows = [r for r in self.rows if shift is None or r["shift"] == shift]
        return min(rows, key=lambda r: r["aer"])

    def row(self, variant: str, shift: bool = False) -> dict:
        for r in self.rows:
            if r["variant"] == variant and r["shift"] == shift:
                return r
        raise KeyError(f"no row for {variant!r} shift={shift}")

    def to_markdown(self) -> str:
        best = self.best()
        raw = {r["shift"]: r for r in self.rows if r["variant"].startswith("raw:")}
        best_raw = {s: min((r for r in self.rows if r["variant"].startswith("raw:")
                            and r["shift"] == s), key=lambda r: r["aer"]) for s in raw}
        lines = ["| variant | AWO AER | AWO P | AWO R | AWI AER | Δ vs best raw (AWO) |",
                 "|---|---|---|---|---|---|"]
        names = list(dict.fromkeys(r["variant"] for r in self.rows))
        for name in names:
            awo = self.row(name, False)
            awi = next((r for r in self.rows if r["variant"] == name and r["shift"]), None)
            cells = [markdown_text(name), f"{100 * awo['aer']:.1f}", f"{100 * awo['precision']:.1f}",
                     f"{100 * awo['recall']:.1f}",
                     "" if awi is None else f"{100 * awi['aer']:.1f}",
                     f"{100 * (awo['aer'] - best_raw[False]['aer']):+.1f}"]
            if awo is best:
                cells = [f"**{c}**" for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def composition_study(pairs, *, model, residual: float = 0.5, gamma: float = 8.0,
                      batch_size: int = 16, progress: bool = False) -> CompositionStudy:
    """Score every composition variant against gold alignments (argmax extraction).

    Parameters
    ----------
    pairs : sequence of toy ``Pair`` (or objects with ``src_words``, ``tgt_words``,
        ``alignment``)
    model : Bundle or str
        An encoder-decoder translation model.
    residual, gamma : float
        As in :func:`variant_maps`.

    Returns
    -------
    CompositionStudy

    Examples
    --------
    >>> from groundroll.data import toy_translation as toy
    >>> study = composition_study(toy.pairs(50, split="dev"), model="bundled:toy-mt")  # doctest: +SKIP
    >>> print(study.to_markdown())                                                      # doctest: +SKIP
    """
    bundle = _bundle(model)
    limit = _limit(bundle, None)
    srcs = [list(p.src_words) for p in pairs]
    tgts = [list(p.tgt_words) for p in pairs]
    gold = [set(p.alignment) for p in pairs]
    enc_src = [encode_words(bundle.tokenizer, w, max_length=limit) for w in srcs]
    enc_tgt = [encode_words(bundle.tokenizer, w, target=True, max_length=limit) for w in tgts]
    order = sorted(range(len(srcs)), key=lambda i: len(enc_src[i].ids))
    preds: dict[tuple[str, bool], list] = {}
    share = {"last_row": [], "earlier": [], "encoder_diagonal": []}
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), unit="sent", desc="composition")
    for chunk in _batches(order, batch_size):
        batch = _make_batch(bundle, [enc_src[i] for i in chunk], [enc_tgt[i] for i in chunk])
        with torch.no_grad(), capture(bundle.model) as trace:
            bundle.model(**batch.model_inputs())
        enc = [fuse(w).cpu() for w in trace.weights("encoder")]
        dec_self = [fuse(w).cpu() for w in trace.weights("decoder")]
        cross = [fuse(w).cpu() for w in trace.weights("cross")]
        row_mask = batch.decoder_attention_mask.float().cpu()
        maps = variant_maps(enc, dec_self, cross, residual=residual, gamma=gamma,
                            row_mask=row_mask)
        _residual_share(enc, dec_self, cross, residual, row_mask,
                        batch.attention_mask.float().cpu(), share)
        for name, m in maps.items():
            for shift in (False, True):
                words = _word_matrices(m, batch, shift)
                for i, w in zip(chunk, words):
                    preds.setdefault((name, shift), [None] * len(srcs))[i] = extract_links(w)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    rows = []
    for (name, shift), found in preds.items():
        score = aer(gold, gold, found)
        rows.append(dict(variant=name, shift=shift, aer=score.aer, precision=score.precision,
                         recall=score.recall, n_pairs=len(gold)))
    measured = {k: float(np.mean(v)) if v else float("nan") for k, v in share.items()}
    return CompositionStudy(rows, measured, time.perf_counter() - start,
                            dict(model=getattr(bundle, "name", ""), residual=residual,
                                 gamma=gamma, n_pairs=len(gold)))


def _residual_share(enc, dec_self, cross, residual, row_mask, src_mask, out) -> None:
    """Split the rollout's source mass into the last layer's own row and the rest."""
    full = rollout_variants(enc, dec_self, cross, residual=residual)       # [B, T, S]
    own = (1 - residual) * _rownorm(cross[-1])
    r_enc = torch.eye(full.shape[-1]).expand_as(enc[0]).clone()
    for a in enc:
        r_enc = residual_rows(a, residual) @ r_enc
    own = own @ r_enc
    total = full.sum(-1)                                                    # [B, T]
    real = row_mask > 0
    out["last_row"].append(float((own.sum(-1)[real] / total[real].clamp_min(_EPS)).mean()))
    out["earlier"].append(float(((total - own.sum(-1))[real] / total[real].clamp_min(_EPS)).mean()))
    diag = torch.diagonal(r_enc, dim1=-2, dim2=-1)                         # [B, S]
    keep = src_mask > 0
    out["encoder_diagonal"].append(float(diag[keep].mean()))

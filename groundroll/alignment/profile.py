"""Alignment profiles: the settings that measured best on a model, stored beside it.

A profile is written from a gold-aligned development set with
``layer_scan(...).save_profile(path)`` (or :func:`best_profile` over several scans, e.g.
one per extraction) and lives in the model folder as :data:`PROFILE_FILENAME`.
:func:`groundroll.align` reads it when the caller names no method: the default call uses
the method, layers, shift and extraction that scored the lowest AER on that model.

Without a profile the default call falls back to an unsupervised rule,
:func:`peak_mass_layer`: the single cross-attention layer whose attention is most peaked,
measured on the sentences being aligned. On both toy language pairs the most peaked
layer is the layer with the lowest AER (see the toy-mt model cards), while the mean over
all layers, the previous default, is clearly worse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from groundroll.alignment.batching import _bundle, _n_decoder_layers
from groundroll.alignment.extract import extract_links
from groundroll.alignment.maps import _matrices
from groundroll.alignment.methods import DEFAULT_SHIFT
from groundroll.alignment.profile_file import PROFILE_FILENAME, AlignProfile, best_profile
from groundroll.alignment.scan import LayerScan, _scan_inputs
from groundroll.evaluate import aer
from groundroll.zoo import BUNDLED_DIR

__all__ = [
    "AlignProfile",
    "PROFILE_FILENAME",
    "best_profile",
    "find_profile",
    "fit_profile",
    "peak_mass",
    "peak_mass_layer",
    "resolve_defaults",
]

#: Extraction settings :func:`fit_profile` tries by default: (extraction, symmetrize) or
#: (extraction, symmetrize, link_threshold); ``"mutual"`` over a grid of thresholds.
FIT_EXTRACTIONS = (("argmax", None), ("argmax", "grow-diag-final-and"), ("itermax", None),
                   *(("mutual", None, t) for t in (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45,
                                                  0.5)))


def fit_profile(pairs, gold=None, *, model, methods: Sequence[str] = ("raw", "norm"),
                shifts: Sequence[bool] = (False, True),
                extractions: Sequence[tuple] = FIT_EXTRACTIONS,
                reverse_model=None, batch_size: int = 16,
                progress: bool = False) -> AlignProfile:
    """Scan methods x layers x shifts x extractions on gold pairs; return the best.

    Parameters
    ----------
    pairs, gold
        As in :func:`groundroll.alignment.layer_scan` (a small development set: a hundred
        or two gold-aligned pairs, not the pairs you report on).
    model : Bundle or str
    methods, shifts
        What to scan (``relevance`` needs one backward pass per target token: slow).
    extractions : sequence of tuples
        ``(extraction, symmetrize)`` or ``(extraction, symmetrize, link_threshold)``
        settings to try.
    reverse_model : Bundle or str, optional
        A target-to-source model. Every setting with a symmetrisation (or ``itermax``,
        ``mutual``)
        is then scored twice: with the backward direction from the columns of the
        forward matrix, and from the reverse model read with the same method, layers
        and shift. A profile that picks the reverse model names it (its spec), and
        :func:`groundroll.align` loads it for the default call.

    Returns
    -------
    AlignProfile
        Save it beside the model with ``profile.save(model_folder)``.

    Examples
    --------
    >>> from groundroll.data import toy_translation as toy
    >>> p = fit_profile(toy.pairs(200, split="dev"), model="bundled:toy-mt")  # doctest: +SKIP
    >>> p.save("path/to/model-folder")                                      # doctest: +SKIP
    """
    bundle = _bundle(model)
    srcs, tgts, sure, possible = _scan_inputs(pairs, gold)
    n_layers = _n_decoder_layers(bundle)
    specs, labels = [], []
    for method in methods:
        per = [(l, [l]) for l in range(n_layers)]
        if method in ("raw", "norm"):
            per.append(("all", None))
        else:
            per = [(l, list(range(l + 1))) for l in range(n_layers)]
        for name, layers in per:
            for shift in shifts:
                specs.append((method, layers, bool(shift)))
                labels.append((method, name))
    # One set of forward passes; every extraction is scored on the same matrices.
    mats, _, _ = _matrices(bundle, srcs, tgts, specs=specs, heads=None, head_fusion="mean",
                           residual=0.5, batch_size=batch_size, max_length=None,
                           max_relevance_tokens=10**6, relevance_chunk=256,
                           generate_kwargs=None, progress=progress)
    backwards = {None: [[None] * len(srcs) for _ in specs]}
    if reverse_model is not None:
        reverse = _bundle(reverse_model)
        rev, _, _ = _matrices(reverse, tgts, srcs, specs=specs, heads=None,
                              head_fusion="mean", residual=0.5, batch_size=batch_size,
                              max_length=None, max_relevance_tokens=10**6,
                              relevance_chunk=256, generate_kwargs=None, progress=progress)
        backwards[getattr(reverse, "name", "") or str(reverse_model)] = [
            [m.T for m in per_pair] for per_pair in rev]
    scans = []
    for setting in extractions:
        extraction, symmetrize, link_threshold = (tuple(setting) + (None,))[:3]
        both_ways = symmetrize is not None or extraction in ("itermax", "mutual")
        for reverse_name, backward in backwards.items():
            if reverse_name is not None and not both_ways:
                continue
            rows = []
            for (method, name), (_, layers, shift), per_pair, back in zip(
                    labels, specs, mats, backward):
                found = [extract_links(m, extraction=extraction, symmetrize=symmetrize,
                                       link_threshold=link_threshold, backward=b)
                         for m, b in zip(per_pair, back)]
                score = aer(sure, possible, found)
                rows.append(dict(method=method, layer=name, shift=shift, layers=layers,
                                 aer=score.aer, precision=score.precision,
                                 recall=score.recall, f1=score.f1, n_pairs=len(srcs)))
            scans.append(LayerScan(rows, dict(model=getattr(bundle, "name", ""),
                                              extraction=extraction,
                                              link_threshold=link_threshold,
                                              symmetrize=symmetrize,
                                              reverse_model=reverse_name)))
    return best_profile(scans)


def _model_folder(bundle) -> Path | None:
    """The folder a bundle was loaded from, when there is one."""
    name = str(getattr(bundle, "name", "") or "")
    if name.startswith("bundled:"):
        folder = BUNDLED_DIR / name.split(":", 1)[1]
        return folder if folder.is_dir() else None
    candidates = []
    if name.startswith("hf:"):
        candidates.append(name.split(":", 1)[1])
    model = getattr(bundle, "model", None)
    candidates.append(getattr(model, "name_or_path", "") or "")
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def find_profile(bundle) -> AlignProfile | None:
    """The profile stored with a model (``PROFILE_FILENAME`` in its folder), or None.

    Examples
    --------
    >>> import groundroll as gr
    >>> find_profile(gr.load("bundled:toy-mt")).method           # doctest: +SKIP
    'raw'
    """
    folder = _model_folder(bundle)
    if folder is None or not (folder / PROFILE_FILENAME).is_file():
        return None
    return AlignProfile.load(folder / PROFILE_FILENAME)


# ----------------------------------------------------------------------------- rule


def peak_mass(matrices: Sequence[np.ndarray]) -> float:
    """Mean over target words of the largest attention mass on one source word.

    ``matrices`` are ``[T, S]`` word matrices (rows: the share of a target word's
    attention on each source word; what goes to special tokens is not in them). A layer
    that concentrates each target word on one source word scores near 1; a layer that
    spreads attention, or parks it on the end-of-sentence token, scores low.

    Examples
    --------
    >>> peak_mass([np.array([[0.9, 0.1], [0.2, 0.7]])])
    0.8
    """
    peaks = [m.max(axis=1) for m in matrices if m.size]
    if not peaks:
        return 0.0
    return float(np.concatenate(peaks).mean())


def peak_mass_layer(per_layer: Sequence[Sequence[np.ndarray]]) -> tuple[int, list[float]]:
    """The layer whose word matrices have the highest :func:`peak_mass`.

    Parameters
    ----------
    per_layer : sequence (one per layer) of sequences of [T, S] arrays

    Returns
    -------
    (int, list of float)
        The chosen layer index and every layer's peak mass. Ties go to the later layer.

    Examples
    --------
    >>> flat, sharp = [np.full((2, 2), 0.5)], [np.eye(2)]
    >>> peak_mass_layer([flat, sharp])
    (1, [0.5, 1.0])
    """
    scores = [peak_mass(ms) for ms in per_layer]
    if not scores:
        raise ValueError("no layers to choose from")
    best = max(range(len(scores)), key=lambda k: (scores[k], k))
    return best, scores


def resolve_defaults(bundle, *, method, layers, shift, extraction, link_threshold=None,
                     symmetrize=None, profile) -> dict:
    """Fill the options a caller left unset, from a profile or the unsupervised rule.

    Returns a dict with ``method``, ``layers``, ``shift``, ``extraction``,
    ``link_threshold``, ``symmetrize``, ``reverse_model`` and ``reverse_layers`` (a
    profile's reverse model, used when the caller set no extraction and no reverse
    model), ``defaults`` (where they came from: ``"explicit"``,
    ``"profile:<path or object>"`` or ``"rule:peak-mass"``) and ``rule`` (True when the
    layer is still to be chosen by :func:`peak_mass_layer`).
    """
    chosen = None
    source = "explicit"
    if method is None:
        if isinstance(profile, AlignProfile):
            chosen, source = profile, "profile"
        elif isinstance(profile, (str, Path)):
            chosen, source = AlignProfile.load(profile), f"profile:{profile}"
        elif profile is None:
            chosen = find_profile(bundle)
            if chosen is not None:
                source = f"profile:{_model_folder(bundle) / PROFILE_FILENAME}"
        elif profile is not False:
            raise TypeError("profile must be None (look beside the model), False (none),"
                            f" a path or an AlignProfile; got {type(profile).__name__}")
    elif profile not in (None, False):
        raise ValueError("profile= sets the method; leave method=None to use a profile")
    rule = False
    reverse_model = reverse_layers = None
    if chosen is not None:
        method = chosen.method
        if layers is None:
            layers = chosen.layers
        if shift is None:
            shift = chosen.shift
        if extraction is None and symmetrize is None:
            # The profile's extraction (and reverse model); a link_threshold given alone
            # tunes the profile's cut-off.
            extraction, symmetrize = chosen.extraction, chosen.symmetrize
            if link_threshold is None:
                link_threshold = chosen.link_threshold
            reverse_model, reverse_layers = chosen.reverse_model, chosen.reverse_layers
    elif method is None:
        method, source = "raw", "rule:peak-mass"
        rule = layers is None
    if shift is None:
        shift = DEFAULT_SHIFT[method]
    if extraction is None:
        extraction = "argmax"
    return dict(method=method, layers=layers, shift=bool(shift), extraction=extraction,
                link_threshold=link_threshold, symmetrize=symmetrize,
                reverse_model=reverse_model,
                reverse_layers=reverse_layers, defaults=source, rule=rule)

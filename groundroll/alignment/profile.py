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

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np

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

#: File name of a profile inside a model folder.
PROFILE_FILENAME = "align_profile.json"
# 2: the options are named link_threshold and symmetrize.
_VERSION = 2


@dataclass
class AlignProfile:
    """Alignment settings for one model, chosen by measurement.

    Attributes
    ----------
    method : str
        One of :data:`groundroll.alignment.api.METHODS`.
    layers : list of int or None
        Decoder layers (``None``: all layers, i.e. the mean for ``raw``/``norm``).
    shift : bool
        AWI (True) or AWO (False).
    extraction : str
        ``"argmax"``, ``"threshold"``, ``"itermax"`` or ``"mutual"``.
    link_threshold : float or None
        For ``extraction="threshold"`` and ``"mutual"``.
    symmetrize : str or None
        Symmetrisation heuristic, or None for the target-to-source direction only.
    fitted : dict
        Where the choice came from: model, number of gold pairs, AER, precision and
        recall of the chosen row, and the runner-up settings.
    reverse_model : str or None
        Spec (:func:`groundroll.zoo.load`) of a target-to-source model whose links give
        the backward direction of ``symmetrize``, ``itermax`` and ``mutual``; None:
        the columns of the forward matrix.
    reverse_layers : list of int or None
        Decoder layers read in the reverse model (None: ``layers``).

    Examples
    --------
    >>> p = AlignProfile("raw", [2], False, "argmax")
    >>> p.align_kwargs()["layers"]
    [2]
    """

    method: str
    layers: list[int] | None
    shift: bool
    extraction: str = "argmax"
    link_threshold: float | None = None
    symmetrize: str | None = None
    fitted: dict = field(default_factory=dict)
    reverse_model: str | None = None
    reverse_layers: list[int] | None = None

    def __post_init__(self) -> None:
        from groundroll.alignment.api import EXTRACTIONS, METHODS

        if self.method not in METHODS:
            raise ValueError(f"profile method must be one of {METHODS}, got {self.method!r}")
        if self.extraction not in EXTRACTIONS:
            raise ValueError(f"profile extraction must be one of {EXTRACTIONS}, got"
                             f" {self.extraction!r}")
        if self.layers is not None:
            self.layers = [int(x) for x in self.layers]
        if self.reverse_layers is not None:
            self.reverse_layers = [int(x) for x in self.reverse_layers]
        self.shift = bool(self.shift)

    def align_kwargs(self) -> dict:
        """The keyword arguments of :func:`groundroll.align` this profile stands for."""
        out = dict(method=self.method,
                   layers=None if self.layers is None else list(self.layers),
                   shift=self.shift, extraction=self.extraction,
                   link_threshold=self.link_threshold, symmetrize=self.symmetrize)
        if self.reverse_model is not None:
            out["reverse_model"] = self.reverse_model
        return out

    def to_dict(self) -> dict:
        return dict(asdict(self), version=_VERSION)

    @classmethod
    def from_dict(cls, d: dict) -> "AlignProfile":
        """The inverse of :meth:`to_dict` (ValueError naming any key it does not know)."""
        d = dict(d)
        version = d.pop("version", _VERSION)
        if version > _VERSION:
            raise ValueError(f"alignment profile version {version} is newer than this"
                             f" groundroll understands ({_VERSION}); upgrade groundroll")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"alignment profile: unknown keys {unknown}; a profile holds"
                             f" {[f.name for f in fields(cls)]} (write it again with"
                             " layer_scan(...).save_profile)")
        return cls(**d)

    def save(self, path, *, force: bool = False) -> Path:
        """Write the profile as JSON, atomically (no overwrite unless ``force``).

        ``path`` may be a model folder: the file is then ``path / PROFILE_FILENAME``.
        """
        from groundroll._atomic import atomic_write

        path = Path(path)
        if path.is_dir():
            path = path / PROFILE_FILENAME
        with atomic_write(path, force=force, mode="w") as handle:
            json.dump(self.to_dict(), handle, indent=2)
            handle.write("\n")
        return path

    @classmethod
    def load(cls, path) -> "AlignProfile":
        """Read a profile file (or ``folder / PROFILE_FILENAME``)."""
        path = Path(path)
        if path.is_dir():
            path = path / PROFILE_FILENAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a valid alignment profile ({err})") from None
        return cls.from_dict(data)

    @classmethod
    def from_scan(cls, scan, *, metric: str = "aer", method: str | None = None) -> "AlignProfile":
        """The best row of a :class:`~groundroll.alignment.api.LayerScan` as a profile."""
        return best_profile([scan], metric=metric, method=method)




def _row_key(row: dict, metric: str) -> float:
    return row[metric] if metric == "aer" else -row[metric]


def best_profile(scans: Sequence, *, metric: str = "aer", method: str | None = None) -> AlignProfile:
    """The best setting over several layer scans (e.g. one scan per extraction).

    Parameters
    ----------
    scans : sequence of LayerScan
        Scans of the same model on the same gold pairs.
    metric : {"aer", "f1", "precision", "recall"}
        Lowest AER, or highest of the others.
    method : str, optional
        Only consider this method.

    Returns
    -------
    AlignProfile

    Examples
    --------
    >>> from groundroll.alignment.api import layer_scan
    >>> from groundroll.data import toy_translation as toy
    >>> dev = toy.pairs(100, split="dev")
    >>> scans = [layer_scan(dev, model="bundled:toy-mt", methods=("raw",), symmetrize=s)
    ...          for s in (None, "grow-diag-final-and")]           # doctest: +SKIP
    >>> best_profile(scans).save("my-model/")                       # doctest: +SKIP
    """
    if metric not in ("aer", "f1", "precision", "recall"):
        raise ValueError(f"metric must be 'aer', 'f1', 'precision' or 'recall', got {metric!r}")
    candidates = []
    for scan in scans:
        for row in scan.rows:
            if method is None or row["method"] == method:
                candidates.append((scan, row))
    if not candidates:
        raise ValueError("no scan rows to choose from" + (f" for method {method!r}" if method else ""))
    candidates.sort(key=lambda c: _row_key(c[1], metric))
    scan, row = candidates[0]
    s = scan.settings

    def summary(c):
        sc, r = c
        return dict(method=r["method"], layers=r["layers"], shift=r["shift"],
                    extraction=sc.settings.get("extraction", "argmax"),
                    symmetrize=sc.settings.get("symmetrize"),
                    link_threshold=sc.settings.get("link_threshold"),
                    reverse_model=sc.settings.get("reverse_model"),
                    aer=round(r["aer"], 5))

    fitted = dict(model=s.get("model", ""), metric=metric, n_pairs=row["n_pairs"],
                  aer=round(row["aer"], 5), precision=round(row["precision"], 5),
                  recall=round(row["recall"], 5),
                  runners_up=[summary(c) for c in candidates[1:4]])
    return AlignProfile(method=row["method"], layers=row["layers"], shift=row["shift"],
                        extraction=s.get("extraction", "argmax"),
                        link_threshold=s.get("link_threshold"),
                        symmetrize=s.get("symmetrize"), reverse_model=s.get("reverse_model"),
                        fitted=fitted)


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
    from groundroll.alignment.api import (LayerScan, _bundle, _matrices, _n_decoder_layers,
                                      _scan_inputs, extract_links)
    from groundroll.evaluate import aer

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
        from groundroll.zoo import BUNDLED_DIR

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
    from groundroll.alignment.api import DEFAULT_SHIFT

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

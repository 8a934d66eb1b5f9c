"""The alignment profile as a record: :class:`AlignProfile`, its JSON file, and
:func:`best_profile`, the best row of some layer scans as a profile.

:mod:`groundroll.alignment.profile` fits profiles, finds them beside models and fills
the options a caller left unset from them; this module holds the record alone, so that
:class:`~groundroll.alignment.scan.LayerScan` can save one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

from groundroll._atomic import atomic_write
from groundroll.alignment.extract import EXTRACTIONS
from groundroll.alignment.methods import METHODS

__all__ = ["AlignProfile", "PROFILE_FILENAME", "best_profile"]

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

"""Postprocessing profiles: the settings a (model, map source) pair segments best with.

A profile is a small JSON file::

    {"format": "groundroll-profile/1",
     "model": "bundled:shapes-clip",
     "fingerprint": "3f9a...",
     "default_method": "legrad",
     "methods": {"legrad": {"background_rule": "relative", "threshold": 0.45,
                            "refine": "none", "normalize": "minmax",
                            "logit_scale": 10.0, "templates": ["a photo of {}."],
                            "source_options": {}},
                 ...},
     "calibration": {...}}

Bundled models ship one as ``groundroll/zoo/bundled/<name>/profiles.json``;
:func:`groundroll.segment` uses it when the caller passes nothing, and
:func:`groundroll.calibrate` fits one on a user's labelled images. A profile records
the fingerprint of the model it was fitted on (parameter names, shapes and a few
parameter sums) and is refused for any other model.

Background rules (how a pixel becomes background, label 0):

=============  ======================================================================
rule           a pixel won by prompt ``k`` is background when
=============  ======================================================================
``none``       never (every pixel gets a prompt unless background prompts win)
``threshold``  the winning probability (softmax across channels) is below
               ``threshold``
``relative``   prompt ``k``'s min-max normalised map is below ``threshold`` (a fraction
               of that map's own range: scale-free, so it carries across images)
``otsu``       prompt ``k``'s normalised map is below ``threshold`` times its Otsu
               threshold (``threshold`` 1.0: plain Otsu)
=============  ======================================================================

A method's entry keeps the rule's threshold under the key ``"threshold"``: it sits next
to ``background_rule``, which says what it measures. The same value is the
``mask_threshold`` option of :func:`groundroll.segment` (and ``--mask-threshold`` of
``groundroll segment``) and the ``mask_threshold`` key of
:attr:`~groundroll.grounding.Segmentation.settings`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import masks as M
from .._atomic import atomic_write, check_writable
from .._options import OptionError, check_segment_options
from ..zoo import BUNDLED_DIR

__all__ = ["Profile", "PROFILE_FORMAT", "BACKGROUND_RULES", "POSTPROCESS_KEYS",
           "model_fingerprint", "bundled_profile", "resolve_profile", "background_labels",
           "refine_maps", "refine_scores", "resolve_settings", "REFINE", "ProfileFormatError"]

PROFILE_FORMAT = "groundroll-profile/1"
BACKGROUND_RULES = ("none", "threshold", "relative", "otsu")
#: Refinements of the probabilities before the argmax (:func:`refine_maps`).
REFINE = ("none", "slic", "superpixels", "pamr")
#: Keys a method's entry may hold (anything else in a profile file is an error).
POSTPROCESS_KEYS = ("background_rule", "threshold", "refine", "normalize", "logit_scale",
                    "templates", "source_options")


def model_fingerprint(model) -> str:
    """Short hex digest identifying a model's weights: every parameter's name and
    shape, and the sums of up to 8 evenly spaced parameters (cheap for large models,
    different for two trainings of one architecture).

    Examples
    --------
    >>> import torch
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> model_fingerprint(a) == model_fingerprint(a), model_fingerprint(a) == model_fingerprint(b)
    (True, False)
    """
    import torch

    module = getattr(model, "model", model)   # a ModelHandle or a Bundle
    params = list(module.state_dict().items())
    digest = hashlib.sha1()
    for name, tensor in params:
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
    picks = np.unique(np.linspace(0, len(params) - 1, num=min(8, len(params))).astype(int))
    with torch.no_grad():
        for i in picks:
            tensor = params[int(i)][1]
            if tensor.is_floating_point():
                digest.update(f"{float(tensor.double().sum()):.6e};".encode())
    return digest.hexdigest()[:16]


class ProfileFormatError(ValueError):
    """A profile file or dict that is not a valid profile (says what is wrong where)."""


def _check_entry(method: str, entry: Mapping[str, Any], where: str) -> dict:
    if not isinstance(method, str) or not method:
        raise ProfileFormatError(f"{where}: method names are non-empty strings, got"
                                 f" {method!r}")
    if not isinstance(entry, Mapping):
        raise ProfileFormatError(f"{where}: the entry of method {method!r} must be a JSON"
                                 f" object, got {type(entry).__name__}")
    unknown = set(entry) - set(POSTPROCESS_KEYS)
    if unknown:
        raise ProfileFormatError(f"{where}: method {method!r} has unknown settings"
                                 f" {sorted(map(str, unknown))}; allowed:"
                                 f" {list(POSTPROCESS_KEYS)}")
    out = dict(entry)
    rule = out.get("background_rule", "none")
    if not isinstance(rule, str) or rule not in BACKGROUND_RULES:
        raise ProfileFormatError(f"{where}: background_rule of {method!r} must be one of"
                                 f" {BACKGROUND_RULES}, got {rule!r}")
    if rule in ("threshold", "relative", "otsu") and out.get("threshold") is None:
        raise ProfileFormatError(f"{where}: background_rule {rule!r} of {method!r} needs a"
                                 " threshold")
    try:
        check_segment_options(mask_threshold=out.get("threshold"), background_rule=rule,
                              logit_scale=out.get("logit_scale"))
    except OptionError as err:
        raise ProfileFormatError(f"{where}: method {method!r}: {err}"
                                 .replace("mask_threshold", "threshold")) from None
    refine = out.get("refine")
    if refine is not None and (not isinstance(refine, str) or refine not in REFINE):
        raise ProfileFormatError(f"{where}: refine of {method!r} must be one of {REFINE},"
                                 f" got {refine!r}")
    normalize = out.get("normalize")
    if normalize is not None and not isinstance(normalize, str):
        raise ProfileFormatError(f"{where}: normalize of {method!r} must be a string, got"
                                 f" {normalize!r}")
    templates = out.get("templates")
    if templates is not None and not (isinstance(templates, list) and all(
            isinstance(t, str) for t in templates)):
        raise ProfileFormatError(f"{where}: templates of {method!r} must be a list of"
                                 " strings")
    options = out.get("source_options")
    if options is not None and not isinstance(options, Mapping):
        raise ProfileFormatError(f"{where}: source_options of {method!r} must be a JSON"
                                 f" object, got {type(options).__name__}")
    return out


#: A profile file larger than this is not one (they hold a few settings per method).
_MAX_PROFILE_BYTES = 16 << 20


@dataclass
class Profile:
    """Per-method postprocessing for one model.

    Attributes
    ----------
    model : str
        Name of the model the profile was fitted on (for messages).
    fingerprint : str
        :func:`model_fingerprint` of that model; empty means "any model" (not checked).
    default_method : str
        Map source a call without ``method=`` uses.
    methods : dict of str to dict
        Method -> settings (keys in :data:`POSTPROCESS_KEYS`).
    calibration : dict
        How the profile was fitted (data, number of images and objects, scores).
    """

    model: str
    fingerprint: str
    default_method: str
    methods: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.methods, Mapping):
            raise ProfileFormatError(f"profile for {self.model!r}: methods must be a JSON"
                                     " object of method -> settings, got"
                                     f" {type(self.methods).__name__}")
        self.methods = {m: _check_entry(m, e, f"profile for {self.model!r}")
                        for m, e in self.methods.items()}
        if self.default_method not in self.methods:
            raise ProfileFormatError(f"profile for {self.model!r}: default_method"
                             f" {self.default_method!r} has no entry in methods"
                             f" {sorted(self.methods)}")

    def settings(self, method: str) -> dict:
        """The settings of ``method`` (a copy); empty when the profile has none."""
        return json.loads(json.dumps(self.methods.get(method, {})))

    def check_model(self, handle) -> None:
        """Raise ValueError when the profile was fitted on another model."""
        if not self.fingerprint:
            return
        got = model_fingerprint(handle)
        if got != self.fingerprint:
            raise ValueError(
                f"this profile was fitted on model {self.model!r} (fingerprint"
                f" {self.fingerprint}), not on {getattr(handle, 'name', '') or 'the given model'!r}"
                f" (fingerprint {got}); calibrate a profile for this model with"
                f" `groundroll calibrate --model ...` or gr.calibrate(...)")

    def to_dict(self) -> dict:
        return {"format": PROFILE_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "profile") -> "Profile":
        if not isinstance(data, Mapping):
            raise ProfileFormatError(f"{where}: a profile is a JSON object, got"
                                     f" {type(data).__name__}")
        fmt = data.get("format")
        if fmt != PROFILE_FORMAT:
            raise ProfileFormatError(f"{where}: format must be {PROFILE_FORMAT!r}, got"
                                     f" {str(fmt)[:60]!r}")
        missing = [k for k in ("model", "default_method", "methods") if k not in data]
        if missing:
            raise ProfileFormatError(f"{where}: missing keys {missing}")
        for key in ("model", "default_method", "fingerprint"):
            if not isinstance(data.get(key, ""), str):
                raise ProfileFormatError(f"{where}: {key} must be a string, got"
                                         f" {type(data[key]).__name__}")
        for key in ("methods", "calibration"):
            if not isinstance(data.get(key, {}), Mapping):
                raise ProfileFormatError(f"{where}: {key} must be a JSON object, got"
                                         f" {type(data[key]).__name__}")
        return cls(model=data["model"], fingerprint=data.get("fingerprint", ""),
                   default_method=data["default_method"],
                   methods=dict(data["methods"]),
                   calibration=dict(data.get("calibration", {})))

    def save(self, path, *, force: bool = False) -> Path:
        """Write the profile as JSON (atomically; an existing file needs ``force``)."""
        path = Path(path)
        check_writable([path], force=force)
        with atomic_write(path, force=force) as f:
            f.write((json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return path

    @classmethod
    def load(cls, path) -> "Profile":
        """Read a profile file written by :meth:`save`.

        Examples
        --------
        >>> Profile.load("my_profile.json").default_method         # doctest: +SKIP
        'legrad'
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"profile file not found: {path}")
        try:
            if path.stat().st_size > _MAX_PROFILE_BYTES:
                raise ProfileFormatError(f"profile {path} is larger than"
                                         f" {_MAX_PROFILE_BYTES >> 20} MB: not a profile")
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ProfileFormatError(f"profile {path} is not valid JSON: {err}") from None
        except RecursionError:
            raise ProfileFormatError(f"profile {path} is nested too deeply to be a"
                                     " profile") from None
        except OSError as err:
            raise ProfileFormatError(f"cannot read profile {path}:"
                                     f" {err.strerror or err}") from None
        return cls.from_dict(data, where=f"profile {path}")


def bundled_profile(handle) -> Profile | None:
    """The profile shipped with a bundled model (``bundled:<name>``), else None."""
    name = getattr(handle, "name", "") or ""
    if not name.startswith("bundled:"):
        return None
    path = Path(BUNDLED_DIR) / name.split(":", 1)[1] / "profiles.json"
    return Profile.load(path) if path.is_file() else None


def resolve_profile(profile, handle) -> Profile | None:
    """A checked :class:`Profile` from ``profile`` (a Profile, a dict, a path, or None
    for the bundled model's own profile)."""
    if profile is None:
        found = bundled_profile(handle)
        if found is not None and found.fingerprint:
            try:
                found.check_model(handle)
            except ValueError:
                return None     # a bundled name reloaded with other weights
        return found
    if isinstance(profile, Profile):
        found = profile
    elif isinstance(profile, Mapping):
        found = Profile.from_dict(profile)
    else:
        found = Profile.load(profile)
    found.check_model(handle)
    return found


def refine_maps(maps: np.ndarray, image: np.ndarray, *, refine: str,
                partitions=None) -> np.ndarray:
    """Maps ``[C, H, W]`` snapped to the image's structure.

    ``"none"``: unchanged; ``"superpixels"``: averaged within superpixels at several
    scales (:func:`groundroll.masks.superpixel_pool`; ``partitions`` from
    :func:`groundroll.masks.superpixel_partitions` of ``image`` to reuse them);
    ``"slic"``: averaged within one SLIC partition of about 150 pixels per
    superpixel; ``"pamr"``: pixel-adaptive mask refinement.

    Examples
    --------
    >>> refine_maps(np.ones((1, 2, 2)), np.zeros((2, 2, 3), np.uint8), refine="none").shape
    (1, 2, 2)
    """
    if refine == "none":
        return maps
    if refine == "superpixels":
        if partitions is None:
            partitions = M.superpixel_partitions(image)
        return M.superpixel_pool(maps, partitions=partitions)
    if refine == "slic":
        n_segments = max(50, int(np.prod(image.shape[:2]) / 150))
        return M.slic_pool(maps, image, n_segments=n_segments, compactness=10.0)
    if refine == "pamr":
        return M.pamr(maps, image)
    raise ValueError(f"refine must be one of {REFINE}, got {refine!r}")


def refine_scores(maps: np.ndarray, image: np.ndarray, *, refine: str,
                  partitions=None) -> np.ndarray:
    """Per-prompt min-max normalised maps ``[P, H, W]`` (float32), refined as
    :func:`~groundroll.grounding.channel_probabilities` refines probabilities
    (:func:`refine_maps`), for the ``relative`` and ``otsu`` rules.

    Examples
    --------
    >>> refine_scores(np.array([[[1.0, 3.0]]]), np.zeros((1, 2, 3), np.uint8),
    ...               refine="none")
    array([[[0., 1.]]], dtype=float32)
    """
    norm = M.normalize_maps(np.asarray(maps, dtype=np.float32), how="minmax")
    return np.asarray(refine_maps(norm, image, refine=refine, partitions=partitions),
                      dtype=np.float32)


def background_labels(probs: np.ndarray, maps: np.ndarray, *, n_prompts: int,
                      rule: str = "none", threshold: float | None = None,
                      background: Sequence[int] | None = None) -> np.ndarray:
    """Label map ``[H, W]`` (int32; 0 background, ``k + 1`` prompt ``k``) from channel
    probabilities and the raw maps of the prompts.

    Parameters
    ----------
    probs : ndarray, shape [C, H, W]
        Probabilities across channels (prompts, then background prompts).
    maps : ndarray, shape [C, H, W]
        The source's maps (or :func:`refine_scores` of them); the first ``n_prompts``
        are min-max normalised per prompt for the ``relative`` and ``otsu`` rules.
    n_prompts : int
    rule : {"none", "threshold", "relative", "otsu"}
        See the module docstring.
    threshold : float, optional
    background : sequence of int, optional
        Channel indices of background prompts (their pixels become 0).

    Examples
    --------
    >>> maps = np.array([[[0.0, 0.4, 1.0]]])
    >>> background_labels(maps, maps, n_prompts=1, rule="relative", threshold=0.5)
    array([[0, 0, 1]], dtype=int32)
    """
    if rule not in BACKGROUND_RULES:
        raise ValueError(f"background rule must be one of {BACKGROUND_RULES}, got {rule!r}")
    if rule != "none" and threshold is None:
        raise ValueError(f"background rule {rule!r} needs a threshold")
    labels = M.label_map(probs, background=background or None)
    if rule == "none":
        return labels
    if rule == "threshold":
        fg = np.ones(probs.shape[0], bool)
        fg[list(background or [])] = False
        out = labels.copy()
        out[np.asarray(probs)[fg].max(axis=0) < float(threshold)] = 0
        return out.astype(np.int32)
    norm = M.normalize_maps(np.asarray(maps[:n_prompts], dtype=np.float32), how="minmax")
    if rule == "relative":
        cut = np.full(n_prompts, float(threshold), np.float32)
    else:
        from skimage.filters import threshold_otsu

        cut = np.array([threshold_otsu(m) if np.ptp(m) > 0 else 1.0 for m in norm],
                       np.float32) * float(threshold)
    rows, cols = np.nonzero(labels > 0)
    k = labels[rows, cols] - 1
    drop = norm[k, rows, cols] < cut[k]
    out = labels.copy()
    out[rows[drop], cols[drop]] = 0
    return out.astype(np.int32)


def resolve_settings(profile: Profile | None, method: str, *, mask_threshold=None,
                     background_rule=None, refine=None, templates=None, logit_scale=None,
                     normalize=None, source_options=None) -> dict:
    """Postprocessing for one call: what the caller passed, else the profile's entry
    for ``method``, else None (the caller's own fallbacks apply).

    A caller's ``mask_threshold`` without ``background_rule`` is a probability
    threshold (``rule="threshold"``), as it always was; a caller's ``background_rule``
    without a ``mask_threshold`` takes the profile's threshold when the profile uses
    the same rule.

    Parameters
    ----------
    profile : Profile or None
    method : str
        Map source whose entry applies.
    mask_threshold, background_rule, refine, templates, logit_scale, normalize, source_options
        The caller's options (None: not given); as in :func:`groundroll.segment`.

    Returns
    -------
    dict
        Keyed like a profile entry (:data:`POSTPROCESS_KEYS`): the rule's threshold is
        under ``"threshold"``.

    Examples
    --------
    >>> p = Profile("m", "", "legrad", {"legrad": {"background_rule": "relative",
    ...                                          "threshold": 0.4}})
    >>> s = resolve_settings(p, "legrad")
    >>> s["background_rule"], s["threshold"]
    ('relative', 0.4)
    >>> resolve_settings(p, "legrad", mask_threshold=0.7)["background_rule"]
    'threshold'
    """
    threshold = mask_threshold
    tuned = profile.settings(method) if profile is not None else {}
    if background_rule is not None:
        rule = background_rule
        if threshold is None and tuned.get("background_rule") == rule:
            threshold = tuned.get("threshold")
    elif threshold is not None:
        rule = "threshold"
    else:
        rule = tuned.get("background_rule", "none")
        threshold = tuned.get("threshold")
    if rule not in BACKGROUND_RULES:
        raise ValueError(f"background_rule must be one of {BACKGROUND_RULES}, got {rule!r}")
    if rule != "none" and threshold is None:
        raise ValueError(f"background_rule={rule!r} needs a threshold (pass"
                         " mask_threshold=)")
    if threshold is not None:
        t = float(threshold)
        if rule in ("threshold", "relative") and not 0.0 <= t <= 1.0:
            raise ValueError(f"mask_threshold of rule {rule!r} is in [0, 1], got"
                             f" {threshold}")
        if rule == "otsu" and not 0.0 < t <= 10.0:
            raise ValueError(f"mask_threshold of rule 'otsu' is a factor in (0, 10], got"
                             f" {threshold}")
    pick = lambda mine, key: mine if mine is not None else tuned.get(key)  # noqa: E731
    return {"background_rule": rule, "threshold": threshold,
            "refine": pick(refine, "refine"), "templates": pick(templates, "templates"),
            "logit_scale": pick(logit_scale, "logit_scale"),
            "normalize": pick(normalize, "normalize"),
            "source_options": pick(source_options, "source_options")}

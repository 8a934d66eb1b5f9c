"""Options of a job, as objects, and their checks: one place for each.

Each job has one frozen options class (:class:`~groundroll.grounding.SegmentOptions`,
:class:`~groundroll.alignment.AlignOptions`, :class:`~groundroll.distributed.RunOptions`)
that checks itself when built; the public functions take its fields as keyword
arguments (the convenient surface) or the object whole as ``options=``, build one object
with :func:`merge_keywords` and pass it down whole. :func:`options_object` turns a dict of
fields into one, refusing unknown names with the list of accepted ones.

Every number a user can pass (``mask_threshold``, ``logit_scale``, a source's
``sigma``, ``link_threshold``, ``max_length``, ...) is checked here, with its range, by
the job's one checker (:func:`check_segment_options`, :func:`check_source_options`,
:func:`check_align_options`). The library calls, the bulk runs and the command line
all call the same checker, so a value is refused the same way wherever it comes from,
before a model loads, with a one-line :class:`OptionError` that names the option, the
value and the accepted range.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping

__all__ = ["OptionError", "real", "integer", "check_segment_options",
           "check_source_options", "check_align_options", "option_names",
           "refuse_unknown", "options_object", "call_keywords", "merge_keywords"]


class OptionError(ValueError):
    """An option of the wrong type or outside its range."""

    def as_flag(self) -> str:
        """The message with the option named as a command-line flag
        (``mask_threshold must ...`` -> ``--mask-threshold must ...``)."""
        text = str(self)
        name, _, rest = text.partition(" ")
        if name.isidentifier() and rest:
            return f"--{name.replace('_', '-')} {rest}"
        return text


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _wanted(kind: str, low, high, low_open: bool = False, high_open: bool = False) -> str:
    """What an option must be, in words: ``">= 0 and < 1 (a finite number)"``."""
    def show(limit) -> str:   # integers exactly (no 1.8e+08), reals in short form
        return str(limit) if isinstance(limit, numbers.Integral) else f"{limit:g}"

    limits = []
    if low is not None:
        limits.append(f"{'>' if low_open else '>='} {show(low)}")
    if high is not None:
        limits.append(f"{'<' if high_open else '<='} {show(high)}")
    return " and ".join(limits) + f" ({kind})" if limits else kind


def _refuse(name: str, wanted: str, value: Any, *, typed: bool = False) -> "OptionError":
    kind = f" ({type(value).__name__})" if typed else ""
    return OptionError(f"{name} must be {wanted}, got {_show(value)}{kind}")


def real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within ``[low, high]`` (``low_open``/``high_open``
    exclude the limit).

    Raises
    ------
    OptionError
        Not a real number (strings and booleans are refused, not converted), NaN or
        infinite, or outside the range.

    Examples
    --------
    >>> real("mask_threshold", 0.5, low=0, high=1)
    0.5
    >>> real("logit_scale", float("nan"), low=0, low_open=True)
    Traceback (most recent call last):
    ...
    groundroll._options.OptionError: logit_scale must be > 0 (a finite number), got nan
    """
    wanted = _wanted("a finite number", low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _refuse(name, wanted, value, typed=True)
    number = float(value)
    if (not math.isfinite(number)
            or (low is not None and (number < low or (low_open and number == low)))
            or (high is not None and (number > high or (high_open and number == high)))):
        raise _refuse(name, wanted, value)
    return number


def integer(name: str, value: Any, *, low: int | None = None,
            high: int | None = None) -> int:
    """``value`` as an int within ``[low, high]`` (integral numpy values accepted;
    floats, strings and booleans refused).

    Examples
    --------
    >>> integer("max_length", 64, low=1)
    64
    >>> integer("max_length", -5, low=1)
    Traceback (most recent call last):
    ...
    groundroll._options.OptionError: max_length must be >= 1 (an integer), got -5
    """
    wanted = _wanted("an integer", low, high)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _refuse(name, wanted, value, typed=True)
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        raise _refuse(name, wanted, value)
    return number


#: Label maps are 8-bit palette PNGs: label 0 is the background, 1..255 the prompts.
MAX_PROMPTS = 255


def check_segment_options(*, prompts=None, mask_threshold=None, background_rule=None,
                          logit_scale=None, min_size=None, max_side=None,
                          max_pixels=None) -> dict:
    """The numeric options of a segmentation, checked (None: not given, keeps the
    default). Returns the checked values by name.

    ``mask_threshold`` is a probability in [0, 1] for every background rule but
    ``"otsu"`` (where it scales Otsu's threshold: a finite number > 0);
    ``logit_scale`` > 0; ``min_size`` >= 0 pixels; ``max_side`` and ``max_pixels``
    >= 1; at most :data:`MAX_PROMPTS` prompts (the label map's palette).

    Examples
    --------
    >>> check_segment_options(mask_threshold=0.5, min_size=0)
    {'mask_threshold': 0.5, 'min_size': 0}
    >>> check_segment_options(mask_threshold="0.5")
    Traceback (most recent call last):
    ...
    groundroll._options.OptionError: mask_threshold must be >= 0 and <= 1 (a finite number), got '0.5' (str)
    """
    out: dict = {}
    if prompts is not None and len(prompts) > MAX_PROMPTS:
        raise OptionError(f"{len(prompts)} prompts given; a label map holds at most"
                          f" {MAX_PROMPTS} (8-bit PNG): split them over several runs")
    if mask_threshold is not None:
        if background_rule == "otsu":
            out["mask_threshold"] = real("mask_threshold", mask_threshold, low=0,
                                         low_open=True)
        else:
            out["mask_threshold"] = real("mask_threshold", mask_threshold, low=0, high=1)
    if logit_scale is not None:
        out["logit_scale"] = real("logit_scale", logit_scale, low=0, low_open=True)
    if min_size is not None:
        out["min_size"] = integer("min_size", min_size, low=0)
    if max_side is not None:
        out["max_side"] = integer("max_side", max_side, low=1)
    if max_pixels is not None:
        out["max_pixels"] = integer("max_pixels", max_pixels, low=1)
    return out


#: Ranges of the map sources' numeric options, by option name (the same name means
#: the same thing in every source). Options not listed are checked for their type only.
SOURCE_RANGES: dict[str, dict] = {
    "sigma": dict(low=0, low_open=True),         # naclip's Gaussian width, in patches
    "residual": dict(low=0, high=1),             # weight of the identity
    "smooth": dict(low=0),                       # captum noise tunnel's stdev
    "n_steps": dict(low=1, integer=True),        # integrated gradients' steps
    "start_layer": dict(integer=True),           # negative counts from the end
}


def check_source_options(source: str, options: Mapping, fields: Mapping[str, Any]) -> dict:
    """A source's options, each checked against its declared default's type and its
    range (:data:`SOURCE_RANGES`): a number where the default is a number, an integer
    where it is an integer, a string where it is a string.

    Parameters
    ----------
    source : str
        The source's name (for messages).
    options : mapping
        The options given.
    fields : mapping of str to object
        Each accepted option's default.

    Examples
    --------
    >>> check_source_options("legrad", {"start_layer": "a"}, {"start_layer": 0})
    Traceback (most recent call last):
    ...
    groundroll._options.OptionError: source 'legrad': start_layer must be an integer, got 'a' (str)
    """
    out = dict(options)
    for name, value in options.items():
        default = fields.get(name)
        limits = dict(SOURCE_RANGES.get(name, {}))
        label = f"source {source!r}: {name}"
        want_int = limits.pop("integer", False) or (
            isinstance(default, int) and not isinstance(default, bool))
        if value is None and default is None:
            continue
        if want_int:
            out[name] = integer(label, value, **limits)
        elif isinstance(default, float) or (default is None and name in SOURCE_RANGES):
            out[name] = real(label, value, **limits)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise OptionError(f"{label} must be True or False, got {_show(value)}")
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise OptionError(f"{label} must be a string, got {_show(value)}"
                                  f" ({type(value).__name__})")
    return out


def check_align_options(*, link_threshold=None, max_length=None, batch_size=None) -> dict:
    """The numeric options of an alignment, checked (None: not given).

    ``link_threshold`` is a probability in [0, 1] (rows or columns normalised to sum
    1); ``max_length`` and ``batch_size`` are integers >= 1.

    Examples
    --------
    >>> check_align_options(link_threshold=2)
    Traceback (most recent call last):
    ...
    groundroll._options.OptionError: link_threshold must be >= 0 and <= 1 (a finite number), got 2
    """
    out: dict = {}
    if link_threshold is not None:
        out["link_threshold"] = real("link_threshold", link_threshold, low=0, high=1)
    if max_length is not None:
        out["max_length"] = integer("max_length", max_length, low=1, high=1_000_000)
    if batch_size is not None:
        out["batch_size"] = integer("batch_size", batch_size, low=1)
    return out


# ----------------------------------------------------------------------------- objects


def option_names(cls) -> list[str]:
    """The field names of an options class, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def refuse_unknown(given, accepted, what: str) -> None:
    """TypeError naming the options of ``given`` that are not ``accepted`` and listing
    the accepted ones (``what``: who takes them, for the message).

    Examples
    --------
    >>> refuse_unknown({"sigma": 1}, ["layers"], "method 'raw'")
    Traceback (most recent call last):
    ...
    TypeError: method 'raw' takes no option(s) ['sigma']; it accepts ['layers']
    """
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise TypeError(f"{what} takes no option(s) {unknown}; it accepts"
                        f" {sorted(accepted) or 'none'}")


def options_object(cls, value, *, what: str):
    """``value`` as a ``cls``: None gives the defaults, an instance stays itself, and a
    mapping names some of its fields (unknown names are a TypeError listing the
    accepted ones, :func:`refuse_unknown`).

    Examples
    --------
    >>> from groundroll.grounding import SegmentOptions
    >>> options_object(SegmentOptions, {"min_size": 4}, what="segment()").min_size
    4
    """
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{what}: options must be a {cls.__name__} or a dict of its"
                        f" fields, got {type(value).__name__}")
    refuse_unknown(value, option_names(cls), what)
    return cls(**value)


def call_keywords(cls, values: Mapping[str, Any]) -> dict:
    """The values of ``cls``'s fields among a call's arguments (``locals()`` at the top
    of a public function that takes some or all of those fields as keywords)."""
    return {name: values[name] for name in option_names(cls) if name in values}


def _is_default(value, default) -> bool:
    if value is default:
        return True
    plain = (bool, int, float, str, type(None))
    return type(value) is type(default) and isinstance(value, plain) and value == default


def merge_keywords(cls, options, keywords: Mapping[str, Any], *, what: str):
    """One ``cls`` from a public call: its keyword arguments, or the ``options`` object
    (or dict of fields) with each keyword that differs from the field's default
    replacing that field. The public function's keywords have the fields' defaults.

    Examples
    --------
    >>> from groundroll.grounding import SegmentOptions
    >>> merged = merge_keywords(SegmentOptions, SegmentOptions(fill_holes=True),
    ...                         {"min_size": 4, "max_side": 1024}, what="segment()")
    >>> merged.min_size, merged.fill_holes
    (4, True)
    """
    if options is None:
        return cls(**keywords)
    base = options_object(cls, options, what=what)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    changed = {name: value for name, value in keywords.items()
               if not _is_default(value, defaults[name])}
    return dataclasses.replace(base, **changed) if changed else base

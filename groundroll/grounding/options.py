"""The settings of one segmentation, as one object: :class:`SegmentOptions`.

:func:`~groundroll.grounding.segment` takes each field as a keyword argument or the
object whole (``options=SegmentOptions(...)``); it builds one object, checks it once (on
construction), fills in what the object leaves unset from the profile
(:meth:`SegmentOptions.resolved`) and passes the resolved object down whole.
:func:`~groundroll.distributed.segment_dataset` takes the same object and hands it to
every worker.

Examples
--------
>>> options = SegmentOptions(method="naclip", source_options={"sigma": 3.0})
>>> options.method, options.max_side
('naclip', 1024)
>>> SegmentOptions(min_size=-1)
Traceback (most recent call last):
...
groundroll._options.OptionError: min_size must be >= 0 (an integer), got -1
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Sequence

from .._images import DEFAULT_MAX_PIXELS
from .._options import check_segment_options
from .profiles import BACKGROUND_RULES, REFINE, resolve_settings
from .registry import source
from .registry import METHODS

__all__ = ["SegmentOptions", "check_prompts", "check_templates"]


def check_prompts(prompts, what: str = "prompts") -> list[str]:
    """``prompts`` (one string or a sequence) as a list of non-empty strings; ``what``
    names them in messages (no prompts at all is an error only for ``"prompts"``)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts and what == "prompts":
        raise ValueError("no prompts given: pass at least one text prompt")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"{what} must be non-empty strings, got {p!r}")
    return prompts


def check_templates(templates) -> list[str] | None:
    """``templates`` as a list, each with exactly one ``{}``; None stays None.

    Examples
    --------
    >>> check_templates(["a photo of {}."])
    ['a photo of {}.']
    """
    if templates is None:
        return None
    if isinstance(templates, str):
        templates = [templates]
    out = list(templates)
    for t in out:
        if not isinstance(t, str) or t.count("{}") != 1 or re.sub(r"\{\}", "", t).count(
                "{") or re.sub(r"\{\}", "", t).count("}"):
            raise ValueError(f"a template needs exactly one {{}} (where the prompt goes)"
                             f" and no other braces, got {t!r}")
    return out


@dataclass(frozen=True)
class SegmentOptions:
    """Every setting of :func:`~groundroll.grounding.segment` but its inputs (image,
    prompts) and its resources (model, tokenizer, cache, device).

    Each attribute is the keyword argument of the same name of
    :func:`~groundroll.grounding.segment`, with the same default and meaning; None
    leaves it to the profile (or the map source's own default). Checked when built:
    a value of the wrong type or out of range is an
    :class:`~groundroll._options.OptionError`, an unknown method, refinement or
    background rule a ValueError.

    Attributes
    ----------
    method, background, mask_threshold, background_rule, profile, refine, templates, logit_scale, normalize, window, max_side, max_pixels, min_size, fill_holes, source_options
        As in :func:`~groundroll.grounding.segment`.
    """

    method: str | None = None
    background: Sequence[str] | None = None
    mask_threshold: float | None = None
    background_rule: str | None = None
    profile: Any = None
    refine: str | None = None
    templates: Sequence[str] | None = None
    logit_scale: float | None = None
    normalize: str | None = None
    window: bool | None = None
    max_side: int = 1024
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    min_size: int = 0
    fill_holes: bool = False
    source_options: Any = None

    def __post_init__(self) -> None:
        check_prompts(self.background or [], "background prompts")
        check_segment_options(mask_threshold=self.mask_threshold,
                              background_rule=self.background_rule,
                              logit_scale=self.logit_scale, min_size=self.min_size,
                              max_side=self.max_side, max_pixels=self.max_pixels)
        if self.method is not None and self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.refine is not None and self.refine not in REFINE:
            raise ValueError(f"refine must be one of {REFINE}, got {self.refine!r}")
        if self.background_rule is not None and self.background_rule not in BACKGROUND_RULES:
            raise ValueError(f"background_rule must be one of {BACKGROUND_RULES}, got"
                             f" {self.background_rule!r}")
        check_templates(self.templates)
        if self.source_options is not None and self.method is not None:
            source(self.method).check_options(self.source_options)

    def resolved(self, profile) -> "SegmentOptions":
        """These options with what they leave unset filled in for one call: the
        method, the background rule and its threshold, refinement, templates,
        ``logit_scale``, ``normalize`` and ``source_options`` from ``profile`` (a
        checked :class:`~groundroll.grounding.Profile` or None,
        :func:`~groundroll.grounding.profiles.resolve_settings`). The result holds
        that profile, the background prompts as a list, the templates as a list, the
        refinement as a name (``"none"`` when off) and the source options as a
        checked dict.

        Examples
        --------
        >>> SegmentOptions(mask_threshold=0.6).resolved(None).background_rule
        'threshold'
        """
        method = self.method
        if method is None:
            method = profile.default_method if profile is not None else "relevance"
        tuned = resolve_settings(profile, method, mask_threshold=self.mask_threshold,
                                 background_rule=self.background_rule, refine=self.refine,
                                 templates=self.templates, logit_scale=self.logit_scale,
                                 normalize=self.normalize,
                                 source_options=self.source_options)
        return dataclasses.replace(
            self, method=method, profile=profile,
            background=check_prompts(self.background or [], "background prompts"),
            mask_threshold=tuned["threshold"], background_rule=tuned["background_rule"],
            refine="none" if tuned["refine"] is None else tuned["refine"],
            templates=check_templates(tuned["templates"]),
            logit_scale=tuned["logit_scale"], normalize=tuned["normalize"],
            source_options=source(method).check_options(tuned["source_options"]))

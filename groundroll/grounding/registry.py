"""Map sources as declarations: the function, its typed options and its defaults.

Each source (``"relevance"``, ``"legrad"``, ``"naclip"``, ...) is one :class:`Source`:
the function that computes its maps, an options class built from that function's
keyword arguments (names, types and defaults in one place, the function's signature),
and the postprocessing its maps call for when neither the caller nor a profile says
otherwise:

- attention and attribution sources give non-negative relevance whose scale differs
  per prompt: min-max normalised per prompt, softmax temperature 10;
- dense sources give cosine similarities that are comparable across prompts: not
  normalised, the model's own logit scale, and sliding windows on large images.

:func:`groundroll.segment` reads these defaults from the source, so it holds no
per-method rules of its own; ``source_options`` are checked against the options class
(an unknown name is an error that lists the accepted ones).

The built-in sources are registered by :mod:`groundroll.grounding.builtin_sources`,
which :mod:`groundroll.grounding` imports: the source modules import this one (to look a
source up), not the other way round.

Examples
--------
>>> SOURCES["naclip"].options()
NaclipOptions(sigma=5.0)
>>> SOURCES["naclip"].normalize, SOURCES["legrad"].normalize
('none', 'minmax')
>>> SOURCES["ig"].check_options({"n_steps": 8})
{'n_steps': 8}
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .._names import LiveNames
from .._options import check_source_options
from .._registry import Registry

__all__ = ["Source", "SOURCES", "METHODS", "source", "register_source", "unregister_source",
           "source_names"]

#: Arguments every map function takes first, and the ones a source binds itself.
_COMMON = ("handle", "image", "prompts", "templates", "method")


def _options_class(name: str, function: Callable) -> type:
    """A frozen dataclass of ``function``'s keyword options (annotations and defaults
    as written in its signature)."""
    fields = []
    for p in inspect.signature(function).parameters.values():
        if p.name in _COMMON or p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        annotation = Any if p.annotation is inspect.Parameter.empty else p.annotation
        fields.append((p.name, annotation, field(default=p.default)))
    title = "".join(part.capitalize() for part in name.replace("-", "_").split("_"))
    return dataclasses.make_dataclass(f"{title}Options", fields, frozen=True)


@dataclass(frozen=True)
class Source:
    """One map source.

    Attributes
    ----------
    name : str
    function : callable
        ``function(handle, image, prompts, *, [templates,] [method,] **options)`` ->
        ``[P, rows, cols]`` float32 maps for one image at the model's input size.
    dense : bool
        Cosine similarities comparable across prompts (see the module notes).
    templates : {"use", "ignore", "refuse"}
        What prompt templates do: ``"use"``; ``"ignore"`` (``"rollout"`` does not read
        the prompt); ``"refuse"`` (``"cross"`` grounds the prompt's own tokens, so
        templates are an error).
    bound : mapping
        Arguments the source fixes (``method=`` of the shared dense and captum
        functions).
    options : type
        Frozen dataclass of the source's options, built from ``function``'s keyword
        arguments.
    """

    name: str
    function: Callable
    dense: bool = False
    templates: str = "use"
    bound: Mapping[str, Any] = field(default_factory=dict)
    options: type = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _options_class(self.name, self.function))

    @property
    def normalize(self) -> str:
        """Default per-channel normalisation before the softmax across prompts."""
        return "none" if self.dense else "minmax"

    def logit_scale(self, handle) -> float:
        """Default softmax temperature inverse: the model's logit scale for cosine
        similarities, 10 for maps normalised to [0, 1]."""
        return float(handle.logit_scale()) if self.dense else 10.0

    def window(self, work_hw: Sequence[int], image_size: Sequence[int]) -> bool:
        """Whether to slide model-sized windows over a working image of ``work_hw``:
        dense sources do when its short side exceeds twice the model input."""
        return self.dense and min(work_hw) > 2 * min(image_size)

    def check_options(self, options) -> dict:
        """``options`` (None, a mapping or an instance of :attr:`options`) as a dict of
        the names given; unknown names are a ValueError listing the accepted ones, and
        each value is checked against its default's type and its range
        (:func:`groundroll._options.check_source_options`)."""
        if options is None:
            return {}
        if isinstance(options, self.options):
            # Not dataclasses.asdict: it deep-copies values, and an option may be a
            # module of the model (Grad-CAM's layer) that must stay the model's own.
            return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
        if not isinstance(options, Mapping):
            raise TypeError(f"options of source {self.name!r} must be a dict or"
                            f" {self.options.__name__}, got {type(options).__name__}")
        accepted = [f.name for f in dataclasses.fields(self.options)]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"source {self.name!r} has no option(s) {unknown}; it takes"
                             f" {accepted or 'no options'}")
        defaults = {f.name: f.default for f in dataclasses.fields(self.options)}
        return check_source_options(self.name, options, defaults)

    def maps(self, handle, image: np.ndarray, prompts: Sequence[str], *,
             templates: Sequence[str] | None = None, **options) -> np.ndarray:
        """``[P, rows, cols]`` float32 maps of ``prompts`` for one model-sized image."""
        if templates and self.templates == "refuse":
            raise ValueError(f"method={self.name!r} grounds the prompt's own tokens;"
                             " templates are not supported with it")
        kwargs = dict(self.bound)
        if self.templates == "use":
            kwargs["templates"] = templates
        return self.function(handle, image, prompts, **kwargs,
                             **self.check_options(options))


_SOURCES: Registry[Source] = Registry("map source")


def register_source(entry: Source, *, replace: bool = False) -> Source:
    """Register a map source under ``entry.name``; ``segment(method=name)`` and the
    command line then accept it. A name that is registered already is a ValueError
    unless ``replace=True``.

    Examples
    --------
    >>> import numpy as np
    >>> def flat_maps(handle, image, prompts):
    ...     return np.ones((len(prompts), 4, 4), np.float32)
    >>> _ = register_source(Source("flat", flat_maps, templates="ignore"))
    >>> "flat" in METHODS
    True
    >>> _ = unregister_source("flat")
    """
    if not isinstance(entry, Source):
        raise TypeError(f"expected a Source, got {type(entry).__name__}")
    return _SOURCES.add(entry.name, entry, replace=replace)


def unregister_source(name: str) -> Source:
    """Remove the map source ``name`` and return it (an UnknownNameError, a KeyError
    and a ValueError, listing the sources if there is none)."""
    return _SOURCES.remove(name)


def source_names() -> tuple[str, ...]:
    """Names of the registered map sources, in registration order."""
    return _SOURCES.names()


def source(method: str) -> Source:
    """The :class:`Source` named ``method`` (ValueError naming the choices)."""
    if method not in _SOURCES:
        raise ValueError(f"method must be one of {source_names()}, got {method!r}")
    return _SOURCES.get(method)


#: name -> :class:`Source`, read-only and live (sources registered later included).
SOURCES = _SOURCES.view()
#: Names of the map sources (live: includes sources registered later).
METHODS = LiveNames(source_names)

"""The family registry: which record, and which capture sites, serve a model.

One list of :class:`~groundroll.families.record.Family` records, consulted in order:
:func:`register_family` adds a record (a whole family), :func:`register_adapter` a
capture-only one. A model no record matches gets a record derived from what it declares
or returns (:mod:`groundroll.families.derived`).
"""

from __future__ import annotations

import re

import torch

from .._registry import Registry
from .derive import derive_adapter, refusal, returned_adapter
from .derived import derived_family, derived_loader
from .record import Family, HFLoader
from .sites import Adapter, UnsupportedModelError

__all__ = ["register_family", "register_adapter", "unregister_family", "families", "family_named", "family_for",
           "adapter_for", "supported_models", "hf_loader"]

_FAMILIES: Registry[Family] = Registry("family")

_HOW_TO_REGISTER = '''\
Register an adapter for it, for example:

    from groundroll.adapters import Adapter, Site, register_adapter
    register_adapter(Adapter(
        name="my_model",
        classes=("my_package.model.MyModel",),
        sites=(Site(r"(^|\\.)blocks\\.\\d+\\.attn$", stream="encoder"),),
        switch="hf_eager",  # Hugging Face models only; None otherwise
    ))

Each Site's modules must return (output, weights[batch, head, query, key]) or be
torch.nn.MultiheadAttention modules (Site(..., reader="mha")). A whole family (chains,
grounding hooks, loader) is one groundroll.families.Family given to register_family.'''


def register_family(family: Family, *, first: bool = True, replace: bool = False) -> Family:
    """Add ``family``, consulted before the built-in ones unless ``first=False``. A name
    that is registered already is a ValueError unless ``replace=True``.

    Examples
    --------
    >>> from groundroll.families import Family, register_family  # doctest: +SKIP
    >>> register_family(Family("mine", matches=lambda m: hasattr(m, "mine")))  # doctest: +SKIP
    """
    if not isinstance(family, Family):
        raise TypeError(f"expected a Family, got {type(family).__name__}")
    return _FAMILIES.add(family.name, family, first=first, replace=replace)


def register_adapter(adapter: Adapter, *, first: bool = True,
                     replace: bool = False) -> Adapter:
    """Register capture sites alone: a family record named like ``adapter`` with no
    chains, grounding or loader, consulted before the built-in ones unless
    ``first=False``. A name that is registered already is a ValueError unless
    ``replace=True``.

    Examples
    --------
    >>> from groundroll.adapters import Adapter, Site, register_adapter
    >>> _ = register_adapter(Adapter(name="distilbert", model_types=("distilbert",),
    ...     sites=(Site(r"(^|\\.)layer\\.\\d+\\.attention$", stream="encoder"),),
    ...     switch="hf_eager"))
    """
    if not isinstance(adapter, Adapter):
        raise TypeError(f"expected an Adapter, got {type(adapter).__name__}")
    register_family(Family(adapter.name, adapter=adapter), first=first, replace=replace)
    return adapter


def unregister_family(name: str) -> Family:
    """Remove the registered family called ``name`` and return its record.

    Raises
    ------
    UnknownNameError
        When there is none (a KeyError and a ValueError); the message lists the
        registered families.
    """
    return _FAMILIES.remove(name)


def families() -> list[str]:
    """Names of the registered families, consulted in this order."""
    return list(_FAMILIES.names())


def family_named(name: str) -> Family:
    """The registered family called ``name``.

    Raises
    ------
    UnknownNameError
        When there is none (a KeyError and a ValueError); the message lists the
        registered families.
    """
    return _FAMILIES.get(name)


def family_for(model) -> Family:
    """The record serving ``model``: a registered family, else one derived for a Hugging
    Face model with declared attention (dual encoders get CLIP-style grounding).

    Raises
    ------
    TypeError
        When no family serves the model; the message lists the families.
    """
    for family in _FAMILIES.values():
        if family.matches(model):
            return family
    derived = derived_family(model)
    if derived is not None:
        return derived
    raise TypeError(
        f"groundroll has no family record for {type(model).__module__}."
        f"{type(model).__qualname__}; families: {families()}. Register one with"
        " groundroll.families.register_family(Family(...)).")


def supported_models() -> dict[str, tuple[str, ...]]:
    """Family name -> model classes and Hugging Face model types its capture sites
    serve (families with registered sites)."""
    return {f.name: tuple(f.adapter.classes)
            + tuple(f"model_type={t}" for t in f.adapter.model_types)
            for f in _FAMILIES.values() if f.adapter is not None}


def _decoder_undeclared(model: torch.nn.Module, derived: Adapter) -> bool:
    """Whether an encoder-decoder's derived sites miss its decoder: a wrapper
    (``VisionEncoderDecoderModel``) around a decoder that declares no attention (TrOCR),
    whose attention the whole model still returns."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "is_encoder_decoder", False)) and "decoder" not in derived.streams


def adapter_for(model: torch.nn.Module) -> Adapter:
    """The capture sites serving ``model``: a registered family's, else sites derived
    from the attention a Hugging Face model declares (``_can_record_outputs``), else,
    for a Hugging Face model that declares nothing but takes ``output_attentions``,
    sites that read the attention the model returns
    (:func:`~groundroll.families.derive.returned_adapter`). An encoder-decoder whose
    declarations miss the decoder (``VisionEncoderDecoderModel`` with a TrOCR decoder)
    is read from what it returns too, when it returns attention.

    Raises
    ------
    UnsupportedModelError
        For a model whose attention rollout does not apply (the reason says why).
    TypeError
        If nothing serves the model; the message lists the supported families and shows
        how to register one.
    """
    names = None
    for family in _FAMILIES.values():
        adapter = family.adapter
        if adapter is None or not adapter.matches(model):
            continue
        if adapter.specialise:
            return adapter.specialise(adapter, model)
        if names is None:
            names = [name for name, _ in model.named_modules()]
        # A model_type shared by several heads (BlipModel vs BLIP retrieval): a
        # hand-written adapter serves only the layouts its every site finds.
        if all(any(re.search(site.pattern, n) for n in names) for site in adapter.sites):
            return adapter
    reason = refusal(model)
    if reason is not None:
        raise UnsupportedModelError(reason)
    derived = derive_adapter(model)
    if derived is not None and not _decoder_undeclared(model, derived):
        return derived
    returned = returned_adapter(model)
    if returned is not None:
        return returned
    if derived is not None:
        return derived
    cls = type(model)
    listing = "\n".join(f"  {name}: {', '.join(what)}"
                        for name, what in supported_models().items())
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    detail = f" (config.model_type={model_type!r})" if model_type else ""
    raise TypeError(
        f"groundroll has no adapter for {cls.__module__}.{cls.__qualname__}{detail}.\n"
        f"Supported families:\n{listing}\n{_HOW_TO_REGISTER}"
    )


def hf_loader(config) -> tuple[HFLoader, str | None]:
    """``(loader, family name)`` for a Hugging Face config, from the family records; an
    unknown model type gets the loader its config suggests (sites derived, family
    ``hf_<model_type>``)."""
    for family in _FAMILIES.values():
        if config.model_type in family.model_types and family.loader is not None:
            return family.loader, family.name
    return derived_loader(config), None

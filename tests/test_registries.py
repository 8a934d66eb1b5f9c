"""One registry style: families, map sources and composition methods are registered,
replaced, removed and looked up the same way, and an unknown name lists what exists."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from groundroll._registry import Registry, UnknownNameError
from groundroll.compose import methods as composition
from groundroll.families import (Family, families, family_named, register_family,
                                 unregister_family)
from groundroll.grounding import registry as sources


def test_registry_orders_refuses_duplicates_and_lists_names_when_unknown():
    reg = Registry("widget")
    reg.add("a", 1)
    reg.add("b", 2)
    reg.add("c", 3, first=True)
    assert reg.names() == ("c", "a", "b")
    view = reg.view()
    with pytest.raises(ValueError, match="'a' is already registered; pass replace=True"):
        reg.add("a", 10)
    reg.add("a", 10, replace=True)
    assert view["a"] == 10 and reg.names() == ("c", "b", "a")
    reg.add("d", 4, first=True)
    assert list(view) == ["d", "c", "b", "a"]                  # the view stays live
    with pytest.raises(UnknownNameError) as err:
        reg.get("zz")
    assert str(err.value) == "no widget 'zz'; registered: d, c, b, a"
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    assert reg.remove("c") == 3 and "c" not in reg


def _flat_maps(handle, image, prompts):
    return np.ones((len(prompts), 2, 2), np.float32)


@pytest.mark.parametrize("kind", ["family", "source", "method"])
def test_each_registry_registers_refuses_duplicates_and_removes(kind):
    if kind == "family":
        entry = Family("widget", matches=lambda model: False)
        register, unregister, names = register_family, unregister_family, families
        again = lambda: register_family(entry)                              # noqa: E731
    elif kind == "source":
        entry = sources.Source("widget", _flat_maps, templates="ignore")
        register, unregister, names = (sources.register_source, sources.unregister_source,
                                       sources.source_names)
        again = lambda: sources.register_source(entry)                      # noqa: E731
    else:
        entry = dataclasses.make_dataclass("Widget", [], bases=(composition.Raw,),
                                           frozen=True)
        entry.name = "widget"
        register, unregister, names = (composition.register_method,
                                       composition.unregister_method,
                                       composition.method_names)
        again = lambda: composition.register_method(entry)                  # noqa: E731
    before = tuple(names())
    register(entry)
    try:
        assert "widget" in names()
        with pytest.raises(ValueError, match="already registered; pass replace=True"):
            again()
    finally:
        assert unregister("widget") is entry
    assert tuple(names()) == before
    with pytest.raises(KeyError, match="no .*'widget'; registered: "):
        unregister("widget")


def test_unknown_names_list_what_exists():
    with pytest.raises(KeyError, match="no family 'nope'; registered: open_clip_coca, open_clip"):
        family_named("nope")
    with pytest.raises(ValueError, match=r"method must be one of \('relevance', 'rollout'"):
        sources.source("nope")
    with pytest.raises(ValueError, match=r"method must be one of \('raw', 'rollout'"):
        composition.get_method("nope")


def test_a_registered_source_is_a_segment_method():
    import groundroll as gr

    sources.register_source(sources.Source("widget", _flat_maps, templates="ignore"))
    try:
        assert "widget" in gr.grounding.METHODS
        image = np.zeros((24, 24, 3), np.uint8)
        seg = gr.segment(image, ["red circle", "blue star"], model="bundled:shapes-clip",
                         method="widget",
                         refine="none")
        assert np.asarray(seg.heatmaps).shape == (2, 24, 24)
    finally:
        sources.unregister_source("widget")
    with pytest.raises(ValueError, match="method must be one of"):
        gr.segment(np.zeros((24, 24, 3), np.uint8), ["a"], method="widget")

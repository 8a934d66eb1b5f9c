"""The built-in map sources, registered in :mod:`groundroll.grounding.registry` in the
order :data:`~groundroll.grounding.registry.METHODS` lists them.

:mod:`groundroll.grounding` imports this module, so the built-ins are registered before
any source is looked up; the source modules themselves import only the registry.
"""

from __future__ import annotations

from . import attribution, dense, ensemble, legrad, sources
from .registry import Source, register_source

__all__: list[str] = []

for _entry in (
    Source("relevance", sources.relevance_maps),
    Source("rollout", sources.rollout_maps, templates="ignore"),
    Source("cross", sources.cross_maps, templates="refuse"),
    *(Source(m, dense.dense_maps, dense=True, bound={"method": m})
      for m in dense.DENSE_METHODS),
    Source("legrad", legrad.legrad_maps),
    Source("gradcam", attribution.gradcam_maps),
    *(Source(m, attribution.captum_maps, bound={"method": m}) for m in ("ig", "saliency")),
    Source("ensemble", ensemble.ensemble_maps),
):
    register_source(_entry)
del _entry

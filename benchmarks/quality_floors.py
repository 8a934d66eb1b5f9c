"""The quality figures that the test suite's floors quote, measured the tests' way.

* the example scene (``groundroll/data/examples/shapes_scene.png``, not used by any
  calibration): mean IoU of the masks at threshold 0.5 per bundled CLIP and source
  (tests/test_segment_bundled.py), and rollout's object-to-background contrast;
* a default call (image and prompts only) on held-out generated scenes
  (``EVAL_SEED_OFFSET + 200`` and ``+ 300``; calibration uses other seeds);
* AER of ``align()``'s default on 30 held-out toy-mt test pairs
  (tests/test_align_api.py).

Usage: ``python benchmarks/quality_floors.py``. Floors sit within 25% of these values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "groundroll" / "data" / "examples"


def example_scene() -> dict:
    from groundroll.grounding import load_image, segment
    from groundroll.zoo import load

    info = json.loads((EXAMPLES / "shapes_scene.json").read_text())
    prompts = [f"a {label}" for label in info["labels"]]
    truth = load_image(EXAMPLES / info["label_map"])[..., 0]
    out = {}
    for name in ("shapes-clip", "shapes-clip-short"):
        clip = load(f"bundled:{name}")
        for method in ("relevance", "maskclip", "rollout"):
            seg = segment(EXAMPLES / info["image"], prompts, model=clip, method=method,
                          mask_threshold=0.5, templates=clip.meta.get("prompt_templates"))
            ious = [float((m & (truth == i)).sum() / max((m | (truth == i)).sum(), 1))
                    for m, i in zip(seg.masks, info["label_ids"])]
            out[f"example {name} {method} mean IoU"] = float(np.mean(ious))
            if method == "rollout":
                objects = np.isin(truth, info["label_ids"])
                heat = seg.heatmaps[0]
                out[f"example {name} rollout object/background"] = float(
                    heat[objects].mean() / heat[~objects].mean())
    return out


def default_call() -> dict:
    from groundroll.data import shapes
    from groundroll.grounding import segment
    from groundroll.grounding.calibrate import object_ious

    styles = {"shapes": list(shapes.scenes(6, seed=shapes.EVAL_SEED_OFFSET + 200)),
              "other sizes": [shapes.scene(shapes.EVAL_SEED_OFFSET + 300 + i, size=(200, 150),
                                           n_objects=(2, 5), radius=(0.08, 0.2))
                              for i in range(6)]}
    out = {}
    for style, scenes in styles.items():
        ious = []
        for s in scenes:
            ious += object_ious(segment(s.image, s.labels).labels, s.masks)
        out[f"default call {style} mean object IoU"] = float(np.mean(ious))
    return out


def alignment() -> dict:
    from groundroll.alignment import align
    from groundroll.data import toy_translation as toy
    from groundroll.evaluate import aer

    data = toy.pairs(30, split="test")
    res = align([p.src for p in data], [p.tgt for p in data], model="bundled:toy-mt")
    score = aer([p.alignment for p in data], None, [a.links for a in res])
    return {"toy-mt default AER": float(score.aer)}


def main() -> int:
    for part in (example_scene, default_call, alignment):
        for name, value in part().items():
            print(f"{name}: {value:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Text-prompted segmentation on held-out synthetic shapes scenes: mIoU per map source
and postprocessing, and seconds per image.

    python benchmarks/segmentation.py            # 500 held-out scenes
    python benchmarks/segmentation.py --quick    # 60 scenes, for a smoke run

Protocol
--------
* Scenes: ``groundroll.data.shapes.scenes(n, seed=EVAL_SEED_OFFSET)`` (held out from
  training), 128 x 160 pixels, 1-4 objects.
* Prompts: the labels present in each scene (``"a red circle"``; the classes an image
  holds are given, as in :func:`groundroll.evaluate.miou_dataset` without
  ``class_names``), plus a probability threshold for the background. CLIP sources use the
  model's prompt templates (``meta["prompt_templates"]``); ``cross`` uses the prompt as
  the caption.
* The threshold is chosen per row from {0.2, 0.3, ..., 0.8} on ``--calib`` scenes drawn
  from training seeds, never on the held-out scenes.
* mIoU: dataset-level, background included (:func:`groundroll.evaluate.miou_dataset`).
* Seconds per image: map source plus postprocessing, one thread unless ``--threads``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from groundroll import masks as M  # noqa: E402
from groundroll.data import shapes  # noqa: E402
from groundroll.evaluate import miou_dataset  # noqa: E402
from groundroll.grounding import (DENSE_METHODS, channel_maps,  # noqa: E402
                                  channel_probabilities, resolve_model, segment)

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
REFINES = ("none", "slic", "pamr")
CLIP_METHODS = ("relevance", "rollout", "maskclip", "sclip", "clearclip", "naclip")


def _items(n: int, seed: int) -> list[dict]:
    return [{"image": s.image, "masks": s.masks, "labels": s.labels}
            for s in shapes.scenes(n, seed=seed)]


class Row:
    """One map source on one model: maps are computed once per scene and shared by the
    postprocessing options."""

    def __init__(self, handle, model_name: str, method: str, templates, options=None):
        self.handle, self.model_name, self.method = handle, model_name, method
        self.options = dict(options or {})
        self.templates = None if method == "cross" else templates
        dense = method in DENSE_METHODS
        self.normalize = "none" if dense else "minmax"
        self.logit_scale = handle.logit_scale() if dense else 10.0

    def maps(self, items: list[dict]) -> tuple[list[np.ndarray], float]:
        out, start = [], time.perf_counter()
        for item in items:
            prompts = [f"a {label}" for label in dict.fromkeys(item["labels"])]
            out.append(channel_maps(self.handle, item["image"], prompts, method=self.method,
                                    templates=self.templates, source_options=self.options))
        return out, (time.perf_counter() - start) / max(len(items), 1)

    def predictor(self, items, maps, refine: str, threshold: float, timer: list):
        by_id = {id(item["image"]): m for item, m in zip(items, maps)}

        def predict(image, names):
            start = time.perf_counter()
            probs = channel_probabilities(by_id[id(image)], image, normalize=self.normalize,
                                          logit_scale=self.logit_scale, refine=refine)
            labels = M.label_map(probs, threshold=threshold)
            timer.append(time.perf_counter() - start)
            return labels
        return predict

    def score(self, items, maps, refine: str, threshold: float) -> tuple[float, float]:
        timer: list[float] = []
        scores = miou_dataset(items, self.predictor(items, maps, refine, threshold, timer),
                              progress=False)
        return scores.miou, float(np.mean(timer)) if timer else 0.0


def _check_against_segment(row: Row, items, maps, refine: str, threshold: float) -> None:
    """The shared-maps shortcut must give exactly what segment() gives."""
    item = items[0]
    prompts = [f"a {label}" for label in dict.fromkeys(item["labels"])]
    want = segment(item["image"], prompts, model=row.handle, method=row.method,
                   templates=row.templates, refine=refine, threshold=threshold,
                   source_options=row.options).labels
    got = row.predictor(items, maps, refine, threshold, [])(item["image"], prompts)
    if not np.array_equal(want, got):
        raise AssertionError(f"{row.method}/{refine}: benchmark labels differ from segment()")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="held-out scenes (default 500)")
    p.add_argument("--quick", action="store_true", help="60 held-out scenes, 20 to calibrate")
    p.add_argument("--calib", type=int, default=50, help="training-seed scenes for the threshold")
    p.add_argument("--clip", nargs="+", default=["bundled:shapes-clip", "bundled:shapes-clip-short"],
                   help="CLIP model specs (default: both bundled CLIPs)")
    p.add_argument("--coca", default="bundled:shapes-coca",
                   help="CoCa model spec for 'cross' ('' skips it)")
    p.add_argument("--methods", nargs="*", default=None, help="subset of methods")
    p.add_argument("--cross-read", default="predict", choices=["predict", "input"],
                   help="CoCa decoder row read for each word (default: %(default)s)")
    p.add_argument("--cross-compose", default="rollout",
                   choices=["raw", "rollout", "norm"],
                   help="composition of the cross-attention chain (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.calib = min(args.n, 60), min(args.calib, 20)

    import torch

    torch.set_num_threads(args.threads)
    held_out = _items(args.n, shapes.EVAL_SEED_OFFSET)
    calib = _items(args.calib, shapes.TRAIN_SEED_OFFSET + 123_456)
    rows = []
    for spec in args.clip:
        clip = resolve_model(spec)
        templates = _templates(spec)
        for method in CLIP_METHODS:
            rows.append(Row(clip, spec, method, templates))
    if args.coca:
        rows.append(Row(resolve_model(args.coca), args.coca, "cross", None,
                        {"read": args.cross_read, "compose_method": args.cross_compose}))
    if args.methods:
        rows = [r for r in rows if r.method in args.methods]

    results = []
    for row in rows:
        calib_maps, _ = row.maps(calib)
        test_maps, map_seconds = row.maps(held_out)
        for refine in REFINES:
            best = max(THRESHOLDS, key=lambda t: row.score(calib, calib_maps, refine, t)[0])
            _check_against_segment(row, held_out, test_maps, refine, best)
            miou, post_seconds = row.score(held_out, test_maps, refine, best)
            result = {"model": row.model_name, "method": row.method, "refine": refine,
                      "options": row.options,
                      "threshold": best, "miou": miou,
                      "seconds_per_image": map_seconds + post_seconds, "n": len(held_out)}
            results.append(result)
            print(f"{row.method:10s} {refine:5s} t={best:.1f} mIoU={miou:.3f}"
                  f" {result['seconds_per_image']:.3f}s", file=sys.stderr, flush=True)

    print(f"\nHeld-out shapes scenes: n={len(held_out)}, prompts = labels present + "
          f"background threshold (calibrated on {len(calib)} training-seed scenes), "
          f"{args.threads} thread(s).\n")
    print("| model | method | refine | threshold | mIoU | s / image |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['method']} | {r['refine']} | {r['threshold']:.1f} |"
              f" {r['miou']:.3f} | {r['seconds_per_image']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _templates(spec: str):
    if spec.startswith("bundled:"):
        from groundroll.zoo import BUNDLED_DIR

        meta = BUNDLED_DIR / spec.split(":", 1)[1] / "meta.json"
    else:
        meta = Path(spec.split(":", 1)[-1]) / "meta.json"
    if meta.is_file():
        return json.loads(meta.read_text()).get("prompt_templates")
    return None


if __name__ == "__main__":
    sys.exit(main())

"""Segment the bundled example scene with text prompts on the bundled shapes-clip model.

    python demos/segment_shapes.py [--method relevance] [--out demo_out/segment_shapes]

Writes the label map, one mask per prompt, an overlay and a JSON summary, and prints
each prompt's IoU against the scene's exact masks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from groundroll.grounding import METHODS, REFINE, load_image, segment
from groundroll.zoo import load

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "groundroll" / "data" / "examples"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="bundled:shapes-clip")
    p.add_argument("--method", default="relevance", choices=METHODS)
    p.add_argument("--refine", default="none", choices=REFINE)
    p.add_argument("--mask-threshold", type=float, default=0.5,
                   help="probability below which a pixel is background")
    p.add_argument("--threshold", dest="mask_threshold", type=float,
                   help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=Path("demo_out/segment_shapes"))
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)

    info = json.loads((EXAMPLES / "shapes_scene.json").read_text())
    prompts = [f"a {label}" for label in info["labels"]]
    bundle = load(args.model)
    templates = None if args.method == "cross" else bundle.meta.get("prompt_templates")
    seg = segment(EXAMPLES / info["image"], prompts, model=bundle, method=args.method,
                  mask_threshold=args.mask_threshold, refine=args.refine,
                  templates=templates)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        paths = seg.save(args.out, stem="shapes_scene", force=args.force)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    truth = load_image(EXAMPLES / info["label_map"])[..., 0]  # class ids, 0 = background
    for k, (prompt, label_id) in enumerate(zip(prompts, info["label_ids"])):
        gt = truth == label_id
        iou = (seg.masks[k] & gt).sum() / max((seg.masks[k] | gt).sum(), 1)
        print(f"{prompt:20s} score={seg.scores[k]:+.3f} IoU={iou:.3f}")
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Segment a scikit-image sample photo with a real open_clip model.

    python demos/segment_photo.py [--model open_clip:ViT-B-16/laion2b_s34b_b88k]
    python demos/segment_photo.py --model "open_clip:ViT-B-16@/path/to/open_clip_model.safetensors"

Needs the model's weights locally (in the Hugging Face cache, or a checkpoint passed as
ARCH@PATH). Offline without them it prints the loader's error and exits with 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from groundroll.grounding import METHODS, REFINE, segment
from groundroll.masks import DEFAULT_TEMPLATES
from groundroll.zoo import load


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="open_clip:ViT-B-16/laion2b_s34b_b88k")
    p.add_argument("--image", default="astronaut", choices=["astronaut", "coffee", "chelsea"])
    p.add_argument("-p", "--prompt", dest="prompts", action="append", default=None)
    p.add_argument("--method", default="naclip", choices=METHODS)
    p.add_argument("--refine", default="pamr", choices=REFINE)
    p.add_argument("--out", type=Path, default=Path("demo_out/segment_photo"))
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)

    import skimage.data

    prompts = args.prompts or {"astronaut": ["face", "flag", "spacesuit", "rocket"],
                               "coffee": ["coffee cup", "saucer", "spoon"],
                               "chelsea": ["cat"]}[args.image]
    try:
        bundle = load(args.model)
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        print(f"error: cannot load {args.model!r}: {err}\n"
              "Pass a local checkpoint instead, e.g.\n"
              "  python demos/segment_photo.py --model "
              "'open_clip:ViT-B-16@/path/to/open_clip_model.safetensors'", file=sys.stderr)
        return 1
    image = getattr(skimage.data, args.image)()
    seg = segment(image, prompts, model=bundle, method=args.method, refine=args.refine,
                  background=["background", "wall", "sky"], templates=DEFAULT_TEMPLATES)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        seg.save(args.out, stem=args.image, force=args.force)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for prompt, score, area in zip(seg.prompts, seg.scores, seg.areas):
        print(f"{prompt:12s} score={score:+.3f} area={area}")
    print(f"wrote outputs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

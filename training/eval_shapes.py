"""Held-out zero-shot accuracy of a shapes model directory.

    python training/eval_shapes.py groundroll/zoo/bundled/shapes-clip [--n 500]

Loads the directory through ``groundroll.zoo.openclip.load_open_clip_dir`` (open_clip's
``local-dir:`` path), then reports:

- single_object_top1: on ``n`` held-out single-object scenes (scene seeds 10**6 ..
  10**6 + n - 1, 128 x 160 images through the bundle's preprocess), the argmax over the 30
  prompts "a photo of a {colour} {shape}." equals the true label;
- multi_object_precision_at_k: on ``n`` further held-out scenes with 1-4 objects, the
  fraction of the top-K prompts (K = number of objects) whose label is present.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _shapes_common as common  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--update-meta", action="store_true",
                   help="write the result into the directory's meta.json as held_out")
    args = p.parse_args(argv)

    import torch

    from groundroll.zoo.openclip import load_open_clip_dir

    torch.set_num_threads(args.threads)
    bundle = load_open_clip_dir(args.model_dir)
    result = common.zero_shot(bundle.model, bundle.preprocess, bundle.tokenizer, n=args.n)
    result["command"] = f"python training/eval_shapes.py {args.model_dir} --n {args.n}"
    print(json.dumps(result, indent=2))
    if args.update_meta:
        common.record_held_out(args.model_dir, result)


if __name__ == "__main__":
    main()

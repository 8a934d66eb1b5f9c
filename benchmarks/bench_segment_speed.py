"""Seconds per image of the default ``segment`` call at three image sizes, with and
without refinement, beside Grad-CAM through pytorch-grad-cam on the same images.

Rows, per image size (one held-out ``variant`` scene of ``benchmarks/segmentation.py``,
resized bicubically to 256 x 192, 1024 x 768 and 2048 x 1536; three of its prompts):

- ``default``: ``gr.segment(image, prompts)``, the default model and its profile (for
  ``bundled:shapes-clip``: LeGrad maps, superpixel refinement);
- ``default, cached``: the same call with a ``cache`` dict that already holds this
  image's superpixel partitions (a second call on one image);
- ``refine="none"``: the same call without refinement (the maps, the background rule
  and the outputs at full size);
- ``Grad-CAM``: pytorch-grad-cam's ``GradCAM`` on the same model and prompts (the image
  letterboxed into the model input, one backward pass per prompt, the maps resized to
  the image with ``pytorch_grad_cam.utils.image.scale_cam_image``): a reference cost,
  the maps alone, without masks.

Times are medians of ``--repeats`` runs, interleaved between the rows so that machine
load hits them alike, on ``--threads`` torch threads (run with ``OMP_NUM_THREADS=1``).
Ratios within one run are the figures to compare on a shared machine.

    OMP_NUM_THREADS=1 python benchmarks/bench_segment_speed.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SIZES = ((256, 192), (1024, 768), (2048, 1536))   # (width, height)


def scene(seed: int = 3):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from segmentation import variant_scene

    s = variant_scene(seed)
    prompts = (list(s["labels"]) * 3)[:3]
    return s["image"], prompts


def gradcam_call(handle, image: np.ndarray, prompts) -> np.ndarray:
    """pytorch-grad-cam maps ``[P, H, W]`` at the image's size, as its users run it."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    from groundroll import masks as M
    from groundroll.grounding.attribution import gradcam_maps

    geometry = M.letterbox_geometry(image.shape[:2], handle.image_size)
    cams = gradcam_maps(handle, M.letterbox_image(image, geometry), prompts)
    top, left = geometry.offset
    rh, rw = geometry.resized_hw
    content = cams[:, max(top, 0):max(top, 0) + rh, max(left, 0):max(left, 0) + rw]
    return scale_cam_image(content, (image.shape[1], image.shape[0]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default=None, help="default: groundroll's default model")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)

    import torch
    from PIL import Image

    import groundroll as gr
    from groundroll.grounding import resolve_model
    from groundroll.grounding._model import DEFAULT_MODEL

    torch.set_num_threads(args.threads)
    spec = args.model or DEFAULT_MODEL
    handle = resolve_model(spec)
    base, prompts = scene()
    rows, target = [], ""
    print(f"model {spec}; prompts {prompts}; torch threads {torch.get_num_threads()};"
          f" load average before: {os.getloadavg()[0]:.1f}; medians of {args.repeats}\n")
    print("| image | default s | default, cached s | refine=\"none\" s |"
          " default / none | Grad-CAM (pytorch-grad-cam) s | default / Grad-CAM |"
          " settings |")
    print("|---|---|---|---|---|---|---|---|")
    for width, height in SIZES:
        image = np.asarray(Image.fromarray(base).resize((width, height), Image.BICUBIC))
        warm = {}
        calls = {
            "default": lambda: gr.segment(image, prompts, model=handle),
            "cached": lambda: gr.segment(image, prompts, model=handle, cache=warm),
            "none": lambda: gr.segment(image, prompts, model=handle, refine="none"),
            "gradcam": lambda: gradcam_call(handle, image, prompts),
        }
        settings = calls["default"]().settings
        calls["cached"]()
        times = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        t = {name: statistics.median(v) for name, v in times.items()}
        row = {"image": f"{width}x{height}", **{f"{k}_s": round(v, 4) for k, v in t.items()},
               "default_over_none": round(t["default"] / t["none"], 2),
               "default_over_gradcam": round(t["default"] / t["gradcam"], 2),
               "method": settings["method"], "refine": settings["refine"],
               "working_size": settings["working_size"]}
        rows.append(row)
        print(f"| {width} x {height} | {t['default']:.3f} | {t['cached']:.3f} |"
              f" {t['none']:.3f} | {row['default_over_none']:.2f}x | {t['gradcam']:.3f} |"
              f" {row['default_over_gradcam']:.2f}x | {settings['method']},"
              f" {settings['refine']}, working {settings['working_size']} |", flush=True)
        if (width, height) == (1024, 768):
            target = (f"\nAt 1024 x 768 (target: <= 1.5x and <= 0.6 s): the default call"
                      f" takes {t['default']:.3f} s, {row['default_over_none']:.2f}x the"
                      f" refine=\"none\" call.")
    if target:
        print(target)
    if args.json is not None:
        args.json.write_text(json.dumps({"model": spec, "prompts": prompts,
                                         "threads": args.threads, "rows": rows},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

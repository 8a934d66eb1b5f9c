"""This checkout against an earlier commit, side by side in one run: the default
``segment`` call and the same call with ``refine="none"`` at three image sizes, and
rows-only rollout against one read of its input and a store-everything loop.

The earlier commit is exported with ``git archive`` into a temporary folder. Each round
runs one child process per tree, alternating between the trees, so that machine load
hits both alike; a child loads the default model, warms up, then times each segment call
once and each rollout figure five times (its median).
Figures are medians over ``--rounds``; on a shared machine compare the ratios.

    OMP_NUM_THREADS=1 python benchmarks/before_after.py --base f40bcd5 [--rounds 5]

Not part of ``make bench`` (it needs the git history).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np
import torch
from PIL import Image
torch.set_num_threads(1)
import groundroll as gr
from groundroll.rollout import rollout
sys.path.insert(0, sys.argv[1])
from segmentation import variant_scene
from bench_rollout import random_attention, store_everything
s = variant_scene(3)
prompts = (list(s["labels"]) * 3)[:3]
out = {}
gr.segment(s["image"], prompts)                               # load and warm up
for width, height in ((256, 192), (1024, 768), (2048, 1536)):
    image = np.asarray(Image.fromarray(s["image"]).resize((width, height), Image.BICUBIC))
    for name, options in (("default", {}), ("none", {"refine": "none"})):
        start = time.perf_counter()
        gr.segment(image, prompts, **options)
        out[f"{width}x{height} {name}"] = time.perf_counter() - start
layers = random_attention(1025, seed=1025)
rollout(layers, rows=[0])
runs = {}
for _ in range(5):                      # rollout figures: medians of 5, interleaved
    for name, call in (("rows-only", lambda: rollout(layers, rows=[0])),
                       ("one read", lambda: [a.sum() for a in layers]),
                       ("store-everything", lambda: store_everything(layers))):
        start = time.perf_counter()
        call()
        runs.setdefault(f"rollout {name}", []).append(time.perf_counter() - start)
out.update({name: sorted(t)[2] for name, t in runs.items()})
print(json.dumps(out))
"""


def export(ref: str, folder: Path) -> Path:
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the earlier commit (any git ref)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    times: dict = {"base": {}, "head": {}}
    with tempfile.TemporaryDirectory(prefix="groundroll-base-") as tmp:
        trees = {"base": export(args.base, Path(tmp)), "head": ROOT}
        for round_ in range(args.rounds):
            for name, tree in trees.items():
                proc = subprocess.run(
                    [sys.executable, "-c", CHILD, str(tree / "benchmarks")],
                    cwd=tree, env=dict(env, PYTHONPATH=str(tree)), capture_output=True,
                    text=True)
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    return 1
                for key, value in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                    times[name].setdefault(key, []).append(value)
            print(f"(round {round_ + 1} of {args.rounds} done)", file=sys.stderr, flush=True)
    med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    print(f"base {args.base} against this checkout; medians of {args.rounds} rounds,"
          f" one thread, load average now {os.getloadavg()[0]:.1f}\n")
    print("| figure | base s | this checkout s | base / this |")
    print("|---|---|---|---|")
    for key in med["head"]:
        b, h = med["base"][key], med["head"][key]
        print(f"| {key} | {b:.3f} | {h:.3f} | {b / h:.2f}x |")
    h = med["head"]
    b = med["base"]
    print("\n| ratio | base | this checkout |")
    print("|---|---|---|")
    for size in ("256x192", "1024x768", "2048x1536"):
        print(f"| default / none, {size} | {b[f'{size} default'] / b[f'{size} none']:.2f}x |"
              f" {h[f'{size} default'] / h[f'{size} none']:.2f}x |")
    print(f"| rows-only rollout / one read (input reads) |"
          f" {b['rollout rows-only'] / b['rollout one read']:.2f} |"
          f" {h['rollout rows-only'] / h['rollout one read']:.2f} |")
    print(f"| store-everything / rows-only |"
          f" {b['rollout store-everything'] / b['rollout rows-only']:.2f}x |"
          f" {h['rollout store-everything'] / h['rollout rows-only']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cost of capturing attention on an open_clip vision tower (CPU): the native ViT-B-16
(``nn.MultiheadAttention``, asked for its weights) or the timm trunk of ViT-B-16-SigLIP
(timm ``Attention`` with ``fused_attn`` switched off inside the capture, the attention
pool head included).

Three modes on the same model and batch (random weights, no download):

- ``plain``: ``model.encode_image`` without capture,
- ``streaming``: ``capture(model, streams="vision", reduce={"rows": [0]})`` -- heads fused
  and folded into the CLS-row rollout as each layer finishes, no per-head weights kept,
- ``capture-all``: ``capture(model, streams="vision")`` -- every layer's
  ``[batch, head, query, key]`` weights kept.

Time: median wall time of interleaved repeats in one process (modes alternate so that
machine load hits them alike). Memory: each mode runs one forward in a fresh subprocess;
the peak is the process's ``ru_maxrss`` after the forward (trace still alive) minus its
resident set size just before it. That is the real peak of everything the forward
allocated (torch's CPU allocator returns memory to the OS, so RSS tracks tensors); it
includes activations, which are the same in every mode.

Usage: ``python benchmarks/bench_capture.py [--arch ViT-B-16-SigLIP] [--batch 8]
[--size 224] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

MODES = ("plain", "streaming", "capture-all")


def build(size: int):
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None).eval()
    images = torch.randn(BATCH, 3, size, size)
    return model, images


def run(mode: str, model, images):
    """One forward in ``mode``; returns what a user would keep (features, trace)."""
    from groundroll.adapters import capture

    with torch.no_grad():
        if mode == "plain":
            return model.encode_image(images), None
        options = {"reduce": {"rows": [0]}} if mode == "streaming" else {}
        with capture(model, streams="vision", **options) as trace:
            features = model.encode_image(images)
        return features, trace


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize()


def worker(mode: str, size: int) -> None:  # noqa: D103
    model, images = build(size)
    before = rss_bytes()
    kept = run(mode, model, images)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"mode": mode, "peak_mib": (peak - before) / 2**20,
                      "kept": kept[0].shape[0]}))


def main() -> None:
    global BATCH, ARCH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-16",
                        help="open_clip architecture (random weights), e.g. ViT-B-16-SigLIP")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=MODES)
    args = parser.parse_args()
    BATCH, ARCH = args.batch, args.arch
    if args.worker:
        worker(args.worker, args.size)
        return

    memory = {}
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, "--worker", mode, "--batch",
                              str(args.batch), "--size", str(args.size), "--arch", ARCH],
                             check=True, capture_output=True, text=True).stdout
        memory[mode] = json.loads(out.strip().splitlines()[-1])["peak_mib"]

    model, images = build(args.size)
    for mode in MODES:  # warm-up
        run(mode, model, images)
    times = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            start = time.perf_counter()
            run(mode, model, images)
            times[mode].append(time.perf_counter() - start)
    median = {mode: statistics.median(ts) for mode, ts in times.items()}

    print(f"open_clip {ARCH} vision tower, batch {args.batch}, {args.size} px, CPU,"
          f" {torch.get_num_threads()} thread(s), {args.repeats} interleaved repeats\n")
    print("| mode | median time (s) | time vs plain | peak memory of the forward (MiB) |"
          " memory vs capture-all |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        print(f"| {mode} | {median[mode]:.3f} | {median[mode] / median['plain']:.2f}x |"
              f" {memory[mode]:.0f} | {memory[mode] / memory['capture-all']:.2f}x |")


BATCH = 8
ARCH = "ViT-B-16"

if __name__ == "__main__":
    main()

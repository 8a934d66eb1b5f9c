"""groundroll on a CUDA GPU beside the CPU: images/s of the default segment call,
sentences/s of the default align call, rows-only rollout, and whether the paths stay on
the device.

Made to run in one short call on a machine with a GPU (about a minute); without CUDA it
says so and exits 0, so ``make bench`` can run it anywhere.

Rows (medians of ``--repeats`` timed runs after a warm-up; the GPU timed with
``torch.cuda.synchronize``):

- ``segment``: ``gr.segment(image, prompts, device=...)`` with the default model and
  profile, three prompts, one held-out ``variant`` scene resized to 256 x 192 and
  1024 x 768, plus the same call with ``refine="none"``; images/s on ``cuda`` and on the
  CPU (``--cpu-threads`` torch threads), and the share of pixels whose label agrees;
- ``align``: ``gr.align(src, tgt, model="bundled:toy-mt", device=...)`` over
  ``--sentences`` held-out pairs in batches of 32; sentences/s and the largest
  difference between the two devices' word matrices;
- ``rollout``: rows-only rollout of 12 layers x 12 heads at N = 1025 on each device,
  beside one read of the input there;
- ``host transfers``: device-to-host copies during one default segment call, counted
  by the torch profiler (the maps should come to the host once, as grid maps).

    python benchmarks/gpu.py [--repeats 5] [--json benchmarks/results/gpu.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SIZES = ((256, 192), (1024, 768))


def timed(function, repeats: int, device: str) -> float:
    import torch

    function()                                   # warm-up (kernels, caches)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def host_transfers(call) -> int | None:
    """Device-to-host copies while ``call`` runs (None when the profiler cannot say)."""
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            call()
        return sum(e.count for e in prof.key_averages()
                   if "DtoH" in e.key or "Device -> Host" in e.key)
    except Exception as err:                     # profiler builds differ
        print(f"(host transfers not counted: {err})", file=sys.stderr)
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cpu-threads", type=int, default=1)
    p.add_argument("--sentences", type=int, default=256)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: benchmarks/gpu.py measures on a GPU machine"
              " (python benchmarks/gpu.py there); nothing measured")
        return 0
    torch.set_num_threads(args.cpu_threads)
    from PIL import Image

    import groundroll as gr
    from groundroll.data import toy_translation as toy
    from groundroll.rollout import rollout

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_segment_speed import scene

    card = torch.cuda.get_device_name(0)
    out: dict = {"card": card, "torch": torch.__version__, "cpu_threads": args.cpu_threads,
                 "segment": [], "align": {}, "rollout": {}}
    print(f"GPU: {card}; torch {torch.__version__}; CPU figures on {args.cpu_threads}"
          f" thread(s); medians of {args.repeats}\n")

    base, prompts = scene()
    print("| image | call | cuda images/s | cpu images/s | cuda / cpu | labels agreeing |")
    print("|---|---|---|---|---|---|")
    for width, height in SIZES:
        image = np.asarray(Image.fromarray(base).resize((width, height), Image.BICUBIC))
        for label, options in (("default", {}), ('refine="none"', {"refine": "none"})):
            secs, labels = {}, {}
            for device in ("cuda", "cpu"):
                def call(device=device, options=options):
                    return gr.segment(image, prompts, device=device, **options)
                labels[device] = call().labels
                secs[device] = timed(call, args.repeats, device)
            agree = float((labels["cuda"] == labels["cpu"]).mean())
            row = {"image": f"{width}x{height}", "call": label,
                   "cuda_images_per_s": round(1 / secs["cuda"], 2),
                   "cpu_images_per_s": round(1 / secs["cpu"], 2),
                   "labels_agreeing": round(agree, 4)}
            out["segment"].append(row)
            print(f"| {width} x {height} | {label} | {row['cuda_images_per_s']} |"
                  f" {row['cpu_images_per_s']} | {secs['cpu'] / secs['cuda']:.1f}x |"
                  f" {agree:.4f} |", flush=True)

    image = np.asarray(Image.fromarray(base).resize((1024, 768), Image.BICUBIC))
    out["host_transfers_per_segment_call"] = host_transfers(
        lambda: gr.segment(image, prompts, device="cuda"))
    print(f"\ndevice-to-host copies in one default segment call (1024 x 768):"
          f" {out['host_transfers_per_segment_call']}")

    pairs = toy.pairs(args.sentences, split="test")
    srcs, tgts = [q.src for q in pairs], [q.tgt for q in pairs]
    secs, mats = {}, {}
    for device in ("cuda", "cpu"):
        def call(device=device):
            return gr.align(srcs, tgts, model="bundled:toy-mt", batch_size=32, device=device)
        mats[device] = [a.matrix for a in call()]
        secs[device] = timed(call, max(1, args.repeats // 2), device)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(mats["cuda"], mats["cpu"]))
    out["align"] = {"sentences": len(pairs),
                    "cuda_sentences_per_s": round(len(pairs) / secs["cuda"], 1),
                    "cpu_sentences_per_s": round(len(pairs) / secs["cpu"], 1),
                    "max_abs_matrix_diff": diff}
    print(f"\nalign (bundled:toy-mt, {len(pairs)} pairs, batch 32): cuda"
          f" {out['align']['cuda_sentences_per_s']} sentences/s, cpu"
          f" {out['align']['cpu_sentences_per_s']} sentences/s; largest matrix difference"
          f" {diff:.1e}")

    print("\n| rollout N = 1025, 12 x 12 | rows-only ms | one read ms | input reads |")
    print("|---|---|---|---|")
    for device in ("cuda", "cpu"):
        gen = torch.Generator(device=device).manual_seed(0)
        layers = [torch.softmax(2 * torch.randn(1, 12, 1025, 1025, generator=gen,
                                                device=device), -1) for _ in range(12)]
        rows = timed(lambda layers=layers: rollout(layers, rows=[0]), args.repeats, device)
        read = timed(lambda layers=layers: [a.sum() for a in layers], args.repeats, device)
        out["rollout"][device] = {"rows_only_ms": round(rows * 1e3, 2),
                                  "one_read_ms": round(read * 1e3, 2),
                                  "input_reads": round(rows / read, 2)}
        print(f"| {device} | {rows * 1e3:.2f} | {read * 1e3:.2f} | {rows / read:.2f} |",
              flush=True)
        del layers
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

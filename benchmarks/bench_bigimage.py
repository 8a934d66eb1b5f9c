"""Peak memory of ``segment`` (and ``Segmentation.save``) on a very large image file.

Writes a synthetic 12000 x 9000 scene as PNG and as JPEG, then segments each in a
fresh child process and reports the child's peak resident set size (``ru_maxrss``),
so one format's peak never hides the other's. Target: under 3 GB.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bigimage.py
    .venv/bin/python benchmarks/bench_bigimage.py --size 6000x4000 --formats JPEG

The scene is large shapes on a smooth background (so the files stay small and fast
to write); decoding cost depends on pixels, not content.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import groundroll as gr
from groundroll.zoo import load
path, model, method, out, prompts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
bundle = load(model)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
seg = gr.segment(path, prompts, model=bundle, method=method, mask_threshold=0.5)
seconds = time.perf_counter() - start
after_segment = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if out != "-":
    seg.save(out, stem="big", force=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"model_loaded_kb": base, "segment_kb": after_segment, "peak_kb": peak,
                  "seconds": round(seconds, 2), "labels": list(seg.labels.shape),
                  "working": seg.settings["working_size"]}))
"""


def _scene(height: int, width: int):
    import numpy as np

    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (60 + 80 * yy + 0 * xx).astype(np.uint8)
    image[..., 1] = (90 + 60 * xx + 0 * yy).astype(np.uint8)
    image[..., 2] = 120
    cy, cx, r = height * 0.4, width * 0.3, min(height, width) * 0.2
    rows = slice(int(cy - r), int(cy + r))
    cols = slice(int(cx - r), int(cx + r))
    image[rows, cols] = (220, 30, 30)
    image[int(height * 0.55):int(height * 0.85), int(width * 0.6):int(width * 0.9)] = (
        30, 30, 220)
    return image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="12000x9000", help="WIDTHxHEIGHT")
    parser.add_argument("--formats", nargs="+", default=["PNG", "JPEG"])
    parser.add_argument("--model", default="bundled:shapes-clip")
    parser.add_argument("--method", default="relevance")
    parser.add_argument("--prompts", nargs="+", default=["red square", "blue square"])
    parser.add_argument("--no-save", action="store_true", help="measure segment only")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    from PIL import Image

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-bigimage-") as tmp:
        image = Image.fromarray(_scene(height, width))
        for fmt in args.formats:
            path = Path(tmp) / f"big.{fmt.lower()}"
            started = time.perf_counter()
            image.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
            written = time.perf_counter() - started
            out = "-" if args.no_save else str(Path(tmp) / f"out-{fmt.lower()}")
            env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
            proc = subprocess.run([sys.executable, "-c", CHILD, str(path), args.model,
                                   args.method, out, *args.prompts],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row.update(format=fmt, size=f"{width}x{height}",
                       file_mb=round(path.stat().st_size / 2**20, 1),
                       write_seconds=round(written, 1), method=args.method,
                       prompts=len(args.prompts), saved=not args.no_save)
            results.append(row)
            print(f"{fmt:5s} {width}x{height}: peak RSS {row['peak_kb'] / 2**20:.2f} GB"
                  f" (model loaded {row['model_loaded_kb'] / 2**20:.2f} GB, after segment"
                  f" {row['segment_kb'] / 2**20:.2f} GB), segment {row['seconds']} s,"
                  f" working size {row['working']}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

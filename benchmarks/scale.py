"""Throughput of the bulk engines: images/s and sentences/s, local vs Ray with 1 and 2 workers.

``groundroll.distributed.segment_dataset`` on ``--images`` held-out shape scenes
(``groundroll.data.shapes``, 128 x 160) with ``bundled:shapes-clip-short`` and three
prompts, and ``align_corpus`` on ``--lines`` held-out toy pairs with ``bundled:toy-mt``
(forced decoding, raw cross-attention). Each configuration runs ``--repeats`` times into a
fresh output; the table gives medians.

Two rates per run:

* end to end: items / wall time of the call, including starting the workers and loading
  the model in each (what a small job sees);
* steady: items per second between the first and the last output written (what a long
  job approaches once the workers are up), from the output files' modification times.

Ray runs on a local Ray started here with ``--cpus`` CPUs (its start-up time is printed and
not counted: a cluster is normally up already). Each worker uses one torch thread; the
local engine is timed with one torch thread too.

Usage::

    python benchmarks/scale.py [--images 48] [--lines 600] [--repeats 3] [--cpus 2]
                               [--jobs segment,align]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from groundroll.data import toy_translation  # noqa: E402
from groundroll.data.shapes import EVAL_SEED_OFFSET, scene  # noqa: E402
from groundroll.distributed import align_corpus, segment_dataset  # noqa: E402
from groundroll.distributed.align import state_dir_for  # noqa: E402

PROMPTS = ["red circle", "blue star", "yellow triangle"]
CONFIGS = [("local", 1), ("ray", 1), ("ray", 2)]


def _steady(times: list[float]) -> float:
    times = sorted(times)
    span = times[-1] - times[0]
    return (len(times) - 1) / span if len(times) > 1 and span > 0 else float("nan")


def _segment_once(images: Path, out: Path, engine: str, workers: int, batch_size: int):
    start = time.perf_counter()
    run = segment_dataset(images, PROMPTS, model="bundled:shapes-clip-short",
                          method="relevance", mask_threshold=0.5, out=out, engine=engine,
                          workers=workers, batch_size=batch_size, shard_size=8,
                          progress=False)
    wall = time.perf_counter() - start
    assert run.processed == run.total and run.failed == 0
    # Workers write the label maps: their times are when each image was done.
    return run.total / wall, _steady([p.stat().st_mtime for p in out.glob("*_labels.png")])


def _align_once(corpus: Path, out: Path, engine: str, workers: int, shard_size: int):
    start = time.perf_counter()
    run = align_corpus(corpus / "src.txt", corpus / "tgt.txt", model="bundled:toy-mt",
                       method="raw", out=out, engine=engine, workers=workers,
                       batch_size=16, shard_size=shard_size, progress=False)
    wall = time.perf_counter() - start
    assert run.processed == run.total and run.failed == 0
    # Shard records carry the worker's clock when each shard was done (the driver may
    # receive results in bursts).
    finished = [json.loads(p.read_text())["finished"]
                for p in (state_dir_for(out) / "done").glob("*.json")]
    steady = _steady(finished) * shard_size  # shards/s between first and last -> lines/s
    return run.total / wall, steady


def _median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--lines", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--batch-size", type=int, default=4, help="images per worker call")
    ap.add_argument("--shard-size", type=int, default=50, help="lines per alignment shard")
    ap.add_argument("--jobs", default="segment,align", help="which jobs to time")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        import ray
    except ImportError:
        print("needs Ray: pip install 'groundroll[ray]'", file=sys.stderr)
        return 1

    work = Path(tempfile.mkdtemp(prefix="groundroll-scale-"))
    try:
        images = work / "images"
        images.mkdir()
        for i in range(args.images):
            Image.fromarray(scene(EVAL_SEED_OFFSET + i).image).save(images / f"s{i:04d}.png")
        corpus = toy_translation.write_corpus(work / "corpus", args.lines, split="test")

        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        print(f"local Ray with {args.cpus} CPUs started in"
              f" {time.perf_counter() - start:.1f} s (not counted)", flush=True)

        results = {}
        tasks = [t for t in ("segment", "align") if t in args.jobs.split(",")]
        for task in tasks:
            for engine, workers in CONFIGS:
                runs = []
                for r in range(args.repeats):
                    out = work / f"{task}-{engine}-{workers}-{r}"
                    if task == "segment":
                        runs.append(_segment_once(images, out, engine, workers,
                                                  args.batch_size))
                    else:
                        runs.append(_align_once(corpus, out.with_suffix(".txt"), engine,
                                                workers, args.shard_size))
                    print(f"{task:8s} {engine:5s} x{workers} run {r + 1}: end to end"
                          f" {runs[-1][0]:.2f}/s, steady {runs[-1][1]:.2f}/s", flush=True)
                    shutil.rmtree(out, ignore_errors=True)
                results[task, engine, workers] = (_median([e for e, _ in runs]),
                                                  _median([s for _, s in runs]))
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    sizes = {"segment": f"{args.images} images (128 x 160)",
             "align": f"{args.lines} sentence pairs"}
    print(f"\nmedians of {args.repeats} runs; {', '.join(sizes[t] for t in tasks)};"
          f" {os.cpu_count()} CPUs on this machine, 1-minute"
          f" load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| job | engine | workers | end to end /s | x local | steady /s | x local |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for task, unit in (("segment", "images"), ("align", "sentences")):
        if task not in tasks:
            continue
        base_e, base_s = results[task, "local", 1]
        for engine, workers in CONFIGS:
            e, s = results[task, engine, workers]
            print(f"| {task} ({unit}) | {engine} | {workers} | {e:.2f} | {e / base_e:.2f}x"
                  f" | {s:.2f} | {s / base_s:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

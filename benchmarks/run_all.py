"""Run the benchmark suite (``make bench``): each script in a subprocess, sized to finish
in a few minutes on a 2-core CPU, printing its tables as it goes.

Everything it writes goes under ``benchmarks/results/``: each script's printed output as
``<script>.md`` and, where the script has ``--json``, its figures as ``<script>.json``.
It never touches README.md, the model cards, the bundled profiles or any other file.
The capture-coverage sweep (``benchmarks/coverage.py``, 15-25 minutes, and it rewrites
the README table) is not part of it: ``make coverage``. The full-size runs behind the
model cards are in each script's docstring.

Scripts run with ``OMP_NUM_THREADS=1`` unless it is set, with the same interpreter and
this checkout first on ``PYTHONPATH``. Exits non-zero when any script fails, after
running all of them.

Usage: ``python benchmarks/run_all.py [--only NAME ...] [--list]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

#: (script, arguments, takes --json): the quick configuration of each benchmark.
PLAN = (
    ("bench_segment_speed.py", ["--repeats", "5"], True),
    ("bench_rollout.py", ["--sizes", "197", "577", "1025", "--flow-sizes", "16"], True),
    ("segmentation.py", ["--n", "20", "--calib", "0", "--faith", "0", "--use-profiles",
                         "--methods", "legrad", "relevance", "gradcam",
                         "--clip", "bundled:shapes-clip"], True),
    ("alignment.py", ["--n", "100", "--relevance-n", "20", "--peers", "",
                      "--speed-n", "100"], True),
    ("captions.py", ["--n", "10", "--calib", "6", "--faith", "2", "--methods", "relevance",
                     "legrad", "gradcam"], True),
    ("alignment_extraction.py", ["--n", "100"], False),
    ("bench_capture.py", ["--batch", "2", "--repeats", "3"], False),
    ("bench_bigimage.py", ["--size", "6000x4000", "--formats", "JPEG"], True),
    ("gpu.py", ["--repeats", "5"], True),
    ("fail_fast.py", ["--repeats", "3"], False),
)
#: Scripts in this folder that ``make bench`` leaves out, and why.
LEFT_OUT = {
    "coverage.py": "the capture-coverage sweep: make coverage",
    "scale.py": "starts a local Ray cluster; python benchmarks/scale.py",
    "before_after.py": "compares with an earlier commit: python benchmarks/before_after.py"
                       " --base REF",
    "fixed_outputs.py": "records outputs before a refactor and checks them after:"
                        " python benchmarks/fixed_outputs.py record|check",
    "align_coverage.py": "gr.align on every tiny seq2seq class (minutes, one memory-capped"
                         " process each): python benchmarks/align_coverage.py",
    "caption_coverage.py": "gr.ground_caption on every tiny image-text-to-text class:"
                           " make coverage",
    "quality_floors.py": "measures the figures the tests' quality floors are set from:"
                         " python benchmarks/quality_floors.py",
    "caption_failures.py": "splits the caption benchmark's misses by cause (a diagnosis,"
                           " not a figure): python benchmarks/caption_failures.py --n 30",
}


def _tee(command, env, log: Path) -> int:
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=HERE.parent, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            out.write(line)
        return proc.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="run only these scripts (file names, with or without .py)")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    plan = PLAN
    if args.only:
        wanted = {name if name.endswith(".py") else f"{name}.py" for name in args.only}
        unknown = wanted - {script for script, _, _ in PLAN}
        if unknown:
            parser.error(f"not in the plan: {sorted(unknown)}; the plan runs"
                         f" {[script for script, _, _ in PLAN]}")
        plan = tuple(step for step in PLAN if step[0] in wanted)
    if args.list:
        for script, arguments, _ in plan:
            print(script, " ".join(arguments))
        for script, why in LEFT_OUT.items():
            print(f"(not run: {script}: {why})")
        return 0
    RESULTS.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent),
                                                      env.get("PYTHONPATH")]))
    failed, started = [], time.perf_counter()
    for script, arguments, has_json in plan:
        stem = Path(script).stem
        command = [sys.executable, str(HERE / script), *arguments]
        if has_json:
            command += ["--json", str(RESULTS / f"{stem}.json")]
        print(f"\n## {script} {' '.join(arguments)}\n", flush=True)
        start = time.perf_counter()
        code = _tee(command, env, RESULTS / f"{stem}.md")
        print(f"\n({script}: exit {code}, {time.perf_counter() - start:.1f} s)", flush=True)
        if code != 0:
            failed.append(f"{script} (exit {code})")
    print(f"\n(all: {time.perf_counter() - started:.0f} s; outputs in {RESULTS})")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/run_all.py (make bench): every script is planned or left out with a reason,
and every output goes under benchmarks/results/."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_is_planned_or_left_out_with_a_reason():
    run_all = _run_all()
    planned = {script for script, _, _ in run_all.PLAN}
    scripts = {p.name for p in BENCH.glob("*.py")
               if p.name != "run_all.py" and not p.name.startswith("_")}
    assert planned | set(run_all.LEFT_OUT) == scripts
    assert not planned & set(run_all.LEFT_OUT)
    assert "coverage.py" in run_all.LEFT_OUT          # make coverage runs it
    assert run_all.RESULTS == BENCH / "results"


def test_planned_arguments_name_no_path_outside_results():
    run_all = _run_all()
    for script, arguments, _ in run_all.PLAN:
        for a in arguments:
            assert "/" not in a and not a.endswith((".md", ".json", ".png")), (script, a)


def test_gpu_benchmark_exits_cleanly_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: gpu.py measures instead")
    proc = subprocess.run([sys.executable, str(BENCH / "gpu.py")], cwd=ROOT,
                          capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device here" in proc.stdout

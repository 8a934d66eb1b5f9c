"""How fast loads that cannot succeed offline fail: Hugging Face hub names and open_clip
registry tags with HF_HUB_OFFLINE=1 and with the hub unreachable.

The unit tests check *why* these are fast (no download attempt, the local cache only);
the seconds are measured here, medians of ``--repeats`` runs, against the targets the
unit tests used to assert (10 s for a hub name, 5 s for a registry tag). Exits non-zero
when a median misses its target.

Usage: ``python benchmarks/fail_fast.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from unittest import mock

TARGET_S = {"hf offline": 10.0, "hf unreachable": 10.0, "open_clip offline": 5.0,
            "open_clip unreachable": 5.0}


def _time(load, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            load()
        except (RuntimeError, OSError):
            pass
        else:
            raise SystemExit("expected the load to fail offline")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import groundroll.zoo.hf as hf
    import groundroll.zoo.openclip as oc
    from groundroll.zoo import load

    cases = {}
    with mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1"}):
        cases["hf offline"] = _time(lambda: load("hf:groundroll-nonexistent/some-repo"),
                                    args.repeats)
        with mock.patch.object(oc, "_is_cached", lambda cfg: False):
            cases["open_clip offline"] = _time(lambda: oc.load_open_clip("ViT-B-16/openai"),
                                               args.repeats)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    with mock.patch.dict(os.environ, env, clear=True), \
            mock.patch.object(hf, "_hub_reachable", lambda timeout=1.5: False), \
            mock.patch.object(oc, "hub_offline", lambda: False), \
            mock.patch.object(oc, "_is_cached", lambda cfg: False), \
            mock.patch.object(oc, "_unreachable", lambda cfg: "host unreachable (benchmark)"):
        cases["hf unreachable"] = _time(lambda: load("hf:groundroll-nonexistent/some-repo"),
                                        args.repeats)
        cases["open_clip unreachable"] = _time(
            lambda: oc.load_open_clip("ViT-B-16/openai"), args.repeats)

    print(f"| case | median s ({args.repeats} runs) | target s |")
    print("|---|---|---|")
    missed = []
    for name, seconds in cases.items():
        print(f"| {name} | {seconds:.3f} | {TARGET_S[name]:.0f} |")
        if seconds >= TARGET_S[name]:
            missed.append(name)
    if missed:
        print(f"slower than the target: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

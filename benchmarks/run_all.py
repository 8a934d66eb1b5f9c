"""Run every benchmark script in this folder, one subprocess each, in sorted order.

Skips this file and files whose name starts with ``_``. Each script runs with the same
interpreter and its output streams through as it is produced. Exits non-zero when any
script fails, after running all of them.

Usage: ``python benchmarks/run_all.py``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def scripts(folder: Path) -> list[Path]:
    this = Path(__file__).resolve()
    return sorted(path for path in folder.glob("*.py")
                  if path.resolve() != this and not path.name.startswith("_"))


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    folder = Path(__file__).resolve().parent
    root = folder.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    failed = []
    for script in scripts(folder):
        print(f"\n## {script.name}\n", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)], cwd=root, env=env)
        print(f"\n({script.name}: exit {code}, {time.perf_counter() - start:.1f} s)",
              flush=True)
        if code != 0:
            failed.append(f"{script.name} (exit {code})")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

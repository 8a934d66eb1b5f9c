#!/usr/bin/env bash
# A stranger's check of a release (make wheel-check): build the wheel and the sdist, install
# the wheel with its extras into a fresh venv outside the repository (the pinned versions
# of constraints.txt), then from another folder run every example of the README and the
# documentation pages, the import and command-line checks, and the sdist's own tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/groundroll-wheel-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$root"
"$python" -m build --wheel --sdist --outdir "$work/dist" . >/dev/null
wheel=$(ls "$work"/dist/*.whl)
sdist=$(ls "$work"/dist/*.tar.gz)
echo "built $(basename "$wheel") and $(basename "$sdist")"
# (Read whole before grep: grep -q stopping early would fail the pipe under pipefail.)
listing=$(unzip -Z1 "$wheel")
metadata=$(unzip -p "$wheel" '*/METADATA')
grep -qx "groundroll/py.typed" <<<"$listing" || { echo "the wheel has no py.typed" >&2; exit 1; }
grep -q "^License-Expression: Apache-2.0" <<<"$metadata" \
  || { echo "the wheel's metadata names no license" >&2; exit 1; }
grep -q "licenses/LICENSE" <<<"$listing" || { echo "the wheel carries no LICENSE" >&2; exit 1; }
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" "$wheel[all,test]"
cd "$work"          # nothing of the checkout on the path from here on
"$work/venv/bin/python" - <<'PY'
import subprocess, sys
import groundroll
assert "site-packages" in groundroll.__file__, groundroll.__file__
assert "torch" not in sys.modules, "import groundroll loaded torch"
from groundroll.data import example_path
assert example_path().is_file()
out = subprocess.run([sys.executable.replace("python", "groundroll"), "--version"],
                     capture_output=True, text=True, check=True).stdout
assert out.strip() == f"groundroll {groundroll.__version__}", out
print("installed", groundroll.__version__, "from", groundroll.__file__)
PY
tar -xzf "$sdist" -C "$work"
src=$(ls -d "$work"/groundroll-*/)
# The sdist's tests, among them every example of its README and documentation pages, run
# against the installed wheel (the sdist's own package folder is moved out of the way).
(cd "$src" && mv groundroll groundroll.source-not-used &&
  "$work/venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_docs_examples.py \
    tests/test_rollout.py tests/test_masks.py tests/test_examples_command.py)
echo "wheel check passed"

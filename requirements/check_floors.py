"""Check that the floors venv holds the floors, and that the floors are pyproject's.

Usage: ``python requirements/check_floors.py requirements/floors.txt`` (``make floors``).

Fails (exit 1, one line per problem) when

* a package pinned in floors.txt is installed at another version (a stale venv, or a pip
  that did not apply the constraints), or not installed at all;
* a ``>=`` floor in pyproject.toml (core, and the extras ``make floors`` installs) differs
  from its pin in floors.txt, or has none: the two files must move together.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("open_clip", "hf", "test")


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def read_floors(path: Path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if len(exact) != 1:
            raise SystemExit(f"{path}: {line!r} is not one '==' pin")
        pins[_name(req.name)] = Version(exact[0])
    return pins


def declared_floors() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += project["optional-dependencies"][extra]
    floors = {}
    for text in reqs:
        req = Requirement(text)
        for spec in req.specifier:
            if spec.operator == ">=":
                floors[_name(req.name)] = Version(spec.version)
    return floors


def main(floors_file: str) -> int:
    pins = read_floors(Path(floors_file))
    problems = []
    for name, pin in sorted(pins.items()):
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: pinned {pin} but not installed")
            continue
        if Version(installed.base_version) != pin:
            problems.append(f"{name}: pinned {pin} but {installed} is installed")
    for name, floor in sorted(declared_floors().items()):
        if name not in pins:
            problems.append(f"{name}: pyproject.toml declares >={floor}; floors.txt has no pin")
        elif pins[name] != floor:
            problems.append(f"{name}: pyproject.toml declares >={floor}, floors.txt pins"
                            f" {pins[name]}")
    for line in problems:
        print(f"check_floors: {line}", file=sys.stderr)
    if not problems:
        print(f"check_floors: {len(pins)} pins installed and matching pyproject.toml")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

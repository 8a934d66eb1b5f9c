"""Print the skip count of a pytest run from its JUnit XML and fail on unexpected skips.

Usage: ``python .ci/skip_report.py REPORT.xml [ALLOWLIST]`` (the allow-list defaults to
``.ci/expected_skips`` beside this file; its header says the format). Exit status 0 when
every skip is allowed, 1 when one is not, 2 when the report is missing or unreadable.
"""

from __future__ import annotations

import fnmatch
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def read_allowlist(path: Path) -> list[tuple[str, re.Pattern]]:
    """``(node id pattern, reason regex)`` pairs from ``path``."""
    rules = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if " :: " not in line:
            raise SystemExit(f"{path}:{number}: expected 'NODE_PATTERN :: REASON_REGEX',"
                             f" got {line!r}")
        node, reason = line.split(" :: ", 1)
        rules.append((node.strip(), re.compile(reason.strip())))
    return rules


def _node_id(case: ET.Element) -> str:
    """``tests/test_x.py::Class::test_y[param]`` from a JUnit testcase element; a module
    skipped at collection is ``tests/test_x.py``."""
    if not case.get("classname"):
        return case.get("name", "").replace(".", "/") + ".py"
    parts = case.get("classname", "").split(".")
    # classname is the module path with dots, then any test classes (capitalised).
    n = len(parts)
    while n > 1 and parts[n - 1][:1].isupper():
        n -= 1
    path = "/".join(parts[:n]) + ".py"
    return "::".join([path, *parts[n:], case.get("name", "")])


def skips(report: Path) -> list[tuple[str, str]]:
    """``(node id, reason)`` of every skipped test in a JUnit XML report."""
    root = ET.parse(report).getroot()
    found = []
    for case in root.iter("testcase"):
        skipped = case.find("skipped")
        if skipped is None:
            continue
        reason = skipped.get("message") or ""
        if not reason or reason == "collection skipped":
            reason = skipped.text or reason       # ('path', line, 'Skipped: why')
        found.append((_node_id(case), reason.strip()))
    return found


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    report = Path(argv[0])
    allow = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("expected_skips")
    if not report.is_file():
        print(f"skip report: {report} not found (did pytest run with --junitxml?)",
              file=sys.stderr)
        return 2
    try:
        found = skips(report)
    except ET.ParseError as err:
        print(f"skip report: {report} is not JUnit XML ({err})", file=sys.stderr)
        return 2
    rules = read_allowlist(allow)
    unexpected = [(node, reason) for node, reason in found
                  if not any(fnmatch.fnmatchcase(node, pattern) and rx.search(reason)
                             for pattern, rx in rules)]
    print(f"skipped: {len(found)} test(s), {len(found) - len(unexpected)} expected"
          f" (listed in {allow}), {len(unexpected)} unexpected")
    for node, reason in unexpected:
        print(f"  UNEXPECTED SKIP {node}: {reason}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The CI skip report (.ci/skip_report.py): counts skips in a JUnit report and fails on
any skip that the allow-list does not name with a matching reason."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("skip_report", ROOT / ".ci" / "skip_report.py")
skip_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(skip_report)

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" skipped="4">
<testcase classname="tests.test_a" name="test_ok" time="0.1"/>
<testcase classname="" name="tests.test_gone" time="0.0"><skipped message="collection skipped"
>('tests/test_gone.py', 3, "Skipped: could not import 'ray'")</skipped></testcase>
<testcase classname="tests.test_b.TestK" name="test_y[1]" time="0.0"><skipped
 type="pytest.skip" message="tiny bart does not build or run here: x">...</skipped></testcase>
<testcase classname="tests.test_b.TestK" name="test_y[2]" time="0.0"><skipped
 type="pytest.skip" message="headless Chromium not found">...</skipped></testcase>
<testcase classname="tests.test_c" name="test_z" time="0.0"><skipped
 type="pytest.skip" message="tiny bart does not build or run here: x">...</skipped></testcase>
</testsuite></testsuites>
"""


@pytest.fixture
def report(tmp_path):
    path = tmp_path / "report.xml"
    path.write_text(REPORT)
    return path


def test_skips_are_read_with_node_ids_and_reasons(report):
    assert skip_report.skips(report) == [
        ("tests/test_gone.py", "('tests/test_gone.py', 3, \"Skipped: could not import 'ray'\")"),
        ("tests/test_b.py::TestK::test_y[1]", "tiny bart does not build or run here: x"),
        ("tests/test_b.py::TestK::test_y[2]", "headless Chromium not found"),
        ("tests/test_c.py::test_z", "tiny bart does not build or run here: x")]


def test_only_allowed_skips_pass(report, tmp_path, capsys):
    allow = tmp_path / "allow"
    allow.write_text("# comment\n\ntests/test_b.py::* :: does not build or run here\n")
    assert skip_report.main([str(report), str(allow)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("skipped: 4 test(s), 1 expected")
    assert "3 unexpected" in out and "UNEXPECTED SKIP tests/test_c.py::test_z" in out
    assert "test_y[1]" not in out        # allowed: node pattern and reason both match
    allow.write_text("tests/* :: does not build|Chromium|could not import\n")
    assert skip_report.main([str(report), str(allow)]) == 0
    assert "4 expected" in capsys.readouterr().out


def test_a_missing_report_or_a_bad_allow_list_says_what_to_do(tmp_path, report, capsys):
    assert skip_report.main([str(tmp_path / "none.xml")]) == 2
    assert "--junitxml" in capsys.readouterr().err
    bad = tmp_path / "allow"
    bad.write_text("tests/test_b.py no separator\n")
    with pytest.raises(SystemExit, match="NODE_PATTERN :: REASON_REGEX"):
        skip_report.main([str(report), str(bad)])


def test_the_shipped_allow_list_parses_and_names_no_optional_dependency():
    # The shipped list may be empty (nothing is expected to skip in CI); whatever it lists
    # must not excuse a missing optional dependency or the browser.
    rules = skip_report.read_allowlist(ROOT / ".ci" / "expected_skips")
    for _, reason in rules:
        for missing in ("could not import", "Chromium", "pip install"):
            assert not reason.search(missing), reason.pattern

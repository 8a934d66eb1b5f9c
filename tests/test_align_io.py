import io
import os

import pytest

from groundroll._atomic import atomic_write, check_writable
from groundroll.alignment import io as aio


def test_pharaoh_roundtrip_keeps_empty_lines(tmp_path):
    data = [{(0, 0), (2, 1)}, set(), {(10, 3)}, set()]
    path = tmp_path / "a.txt"
    aio.write_pharaoh(path, data)
    assert path.read_text() == "0-0 2-1\n\n10-3\n\n"
    assert aio.read_pharaoh(path) == data
    assert aio.read_pharaoh(io.StringIO("0-0\r\n1-1\n")) == [{(0, 0)}, {(1, 1)}]


def test_pharaoh_malformed_line_number(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("0-0\n\n1-1 2:3\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 3: malformed Pharaoh link '2:3'"):
        aio.read_pharaoh(path)
    with pytest.raises(ValueError, match="line 1"):
        aio.read_pharaoh(io.StringIO("1p2\n"))


def test_talp_formats():
    sure, possible = aio.parse_talp("1-1 2p3 3?1 4-4-S 5-5-P 6-6-p 7-7-s")
    assert sure == {(0, 0), (3, 3), (6, 6)}
    assert possible == sure | {(1, 2), (2, 0), (4, 4), (5, 5)}
    sure, possible = aio.parse_talp("1-2 3p4", swap=True)
    assert sure == {(1, 0)} and possible == {(1, 0), (3, 2)}


def test_talp_roundtrip_and_ids(tmp_path):
    sure = [{(0, 0), (1, 2)}, set(), {(4, 4)}]
    possible = [{(0, 0), (1, 2), (2, 1)}, {(0, 1)}, {(4, 4)}]
    path = tmp_path / "gold.talp"
    aio.write_talp(path, sure, possible)
    assert path.read_text() == "1-1 2-3 3p2\n1p2\n5-5\n"
    assert aio.read_talp(path) == (sure, possible)
    s, p = aio.read_talp(io.StringIO("1\t1-1 2p2\n2\t\n"), with_ids=True)
    assert s == [{(0, 0)}, set()] and p == [{(0, 0), (1, 1)}, set()]


def test_talp_sure_always_in_possible():
    # A possible set given without the sure links still reads back as a superset.
    buf = io.StringIO()
    aio.write_talp(buf, [{(0, 0)}], [{(1, 1)}])
    s, p = aio.read_talp(io.StringIO(buf.getvalue()))
    assert s[0] <= p[0] == {(0, 0), (1, 1)}


def test_talp_errors():
    with pytest.raises(ValueError, match="line 2: malformed talp link '1-x'"):
        aio.read_talp(io.StringIO("1-1\n1-x\n"))
    with pytest.raises(ValueError, match="line 1: index 0 .* 1-indexed"):
        aio.read_talp(io.StringIO("0-1\n"))
    with pytest.raises(ValueError, match="line 1: expected '<id>"):
        aio.read_talp(io.StringIO("1-1\n"), with_ids=True)
    with pytest.raises(ValueError, match="malformed"):
        aio.parse_talp("1-2-X")


def test_writers_refuse_overwrite(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("keep\n")
    with pytest.raises(FileExistsError, match="--force"):
        aio.write_pharaoh(path, [{(0, 0)}])
    assert path.read_text() == "keep\n"
    aio.write_pharaoh(path, [{(0, 0)}], force=True)
    assert path.read_text() == "0-0\n"


def test_atomic_write_no_file_on_exception(tmp_path):
    path = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(FileExistsError, match=r"pass force=True \(--force on the command line\)"):
        with atomic_write(path, mode="w"):
            pass
    with pytest.raises(ValueError):
        with atomic_write(path, mode="w", force=True) as f:
            f.write("new")
            raise ValueError
    assert path.read_text() == "old"
    with atomic_write(path, mode="w", force=True) as f:
        f.write("new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_permissions(tmp_path):
    path = tmp_path / "p.txt"
    with atomic_write(path, mode="w") as f:
        f.write("x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_check_writable(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.json"
    check_writable([a, b], force=False)
    b.write_text("{}")
    with pytest.raises(FileExistsError, match="b.json.*--force"):
        check_writable([a, b], force=False)
    check_writable([a, b], force=True)
    with pytest.raises(FileNotFoundError):
        check_writable([tmp_path / "missing" / "x.png"], force=False)
    with pytest.raises(ValueError):
        check_writable([a, a], force=False)
    with pytest.raises(IsADirectoryError):
        check_writable([tmp_path], force=True)


def test_read_lines_splits_at_newlines_only(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("a\u2028b\r\n\nc\x85d\x0ce\n", encoding="utf-8", newline="")
    assert aio.read_lines(path) == ["a\u2028b", "", "c\x85d\x0ce"]
    path.write_text("x\ny", encoding="utf-8")
    assert aio.read_lines(path) == ["x", "y"]
    path.write_text("", encoding="utf-8")
    assert aio.read_lines(path) == []

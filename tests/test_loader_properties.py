"""Property-based tests of everything groundroll reads back: any input gives a result or
a one-line error of groundroll's own type, never another exception (hypothesis, fixed
seed: ``derandomize=True``)."""

from __future__ import annotations

import io
import json
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from groundroll._atomic import read_manifest
from groundroll._images import ImageReadError, load_image
from groundroll.alignment import Alignment
from groundroll.alignment.io import AlignmentFormatError, read_pharaoh, read_talp
from groundroll.distributed._state import (RunState, SettingsMismatchError, plan_shards,
                                           read_run_manifest)
from groundroll.grounding.profiles import Profile, ProfileFormatError

settings.register_profile("groundroll-loaders", derandomize=True, deadline=None,
                          max_examples=150, database=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
PROFILE = settings.get_profile("groundroll-loaders")

scalars = (st.none() | st.booleans() | st.integers(-10**20, 10**20)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)


def _one_line(err: BaseException) -> None:
    assert "\n" not in str(err).strip() or isinstance(err, SettingsMismatchError), str(err)


def _keyed(keys: dict) -> st.SearchStrategy:
    """Objects that mostly have the expected keys, with values of any JSON type."""
    return st.fixed_dictionaries({}, optional={k: v | json_values for k, v in keys.items()})


# ----------------------------------------------------------------------------- profiles


_PROFILE_KEYS = {
    "format": st.just("groundroll-profile/1"), "model": st.text(max_size=5),
    "default_method": st.sampled_from(["relevance", "naclip"]),
    "fingerprint": st.text(max_size=5),
    "methods": st.dictionaries(st.sampled_from(["relevance", "naclip"]), _keyed({
        "background_rule": st.sampled_from(["none", "threshold", "relative", "otsu"]),
        "threshold": st.floats(-1, 2), "logit_scale": st.floats(-1, 200),
        "refine": st.sampled_from(["none", "slic"]), "templates": st.lists(st.text()),
        "source_options": st.dictionaries(st.text(max_size=5), scalars)}), max_size=2),
    "calibration": st.dictionaries(st.text(max_size=5), scalars),
}


@PROFILE
@given(data=_keyed(_PROFILE_KEYS) | json_values)
def test_profile_from_any_json(data):
    try:
        profile = Profile.from_dict(data)
    except ProfileFormatError as err:
        _one_line(err)
        return
    assert profile.default_method in profile.methods


@PROFILE
@given(raw=st.binary(max_size=200))
def test_profile_load_from_any_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("p") / "profile.json"
    path.write_bytes(raw)
    with pytest.raises(ProfileFormatError):
        Profile.load(path)


# ----------------------------------------------------------------------------- alignments


_ALIGNMENT_KEYS = {
    "src_words": st.lists(st.text(max_size=4), max_size=3),
    "tgt_words": st.lists(st.text(max_size=4), max_size=3),
    "matrix": st.lists(st.lists(st.floats(), max_size=3), max_size=3),
    "links": st.lists(st.lists(st.integers(-2, 4) | st.floats(), max_size=3), max_size=4),
    "scores": st.lists(st.lists(st.integers(-2, 4) | st.floats(), max_size=4), max_size=3),
    "settings": st.dictionaries(st.text(max_size=8), scalars, max_size=3),
}


@PROFILE
@given(data=_keyed(_ALIGNMENT_KEYS) | json_values)
def test_alignment_from_any_json(data):
    try:
        a = Alignment.from_dict(data)
    except AlignmentFormatError as err:
        _one_line(err)
        return
    s, t = len(a.src_words), len(a.tgt_words)
    assert a.matrix.shape == (t, s) and np.isfinite(a.matrix).all()
    assert all(0 <= i < s and 0 <= j < t for i, j in a.links | set(a.scores))


@PROFILE
@given(raw=st.binary(max_size=200))
def test_alignment_load_from_any_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("a") / "a.json"
    path.write_bytes(raw)
    try:
        Alignment.load(path)
    except AlignmentFormatError as err:
        _one_line(err)


# ----------------------------------------------------------------------------- Pharaoh, talp


pharaoh_text = st.lists(st.text(alphabet=string.digits + "-p ?\t,x", max_size=20)
                        | st.text(max_size=10), max_size=5).map("\n".join)


@PROFILE
@given(text=pharaoh_text)
def test_read_pharaoh_any_text(text):
    try:
        lines = read_pharaoh(io.StringIO(text))
    except AlignmentFormatError as err:
        _one_line(err)
        return
    assert all(isinstance(s, int) and isinstance(t, int) and s >= 0 and t >= 0
               for links in lines for s, t in links)


@PROFILE
@given(text=pharaoh_text, with_ids=st.booleans(), swap=st.booleans())
def test_read_talp_any_text(text, with_ids, swap):
    try:
        result = read_talp(io.StringIO(text), with_ids=with_ids, swap=swap)
    except AlignmentFormatError as err:
        _one_line(err)
        return
    assert isinstance(result, tuple)


# ----------------------------------------------------------------------------- run state


@PROFILE
@given(data=_keyed({"format": st.just("groundroll-run/1"),
                    "settings": st.dictionaries(st.text(max_size=5), scalars)})
       | json_values)
def test_run_manifest_any_json(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("r") / "run.json"
    path.write_text(json.dumps(data))
    try:
        recorded = read_run_manifest(path)
    except SettingsMismatchError:
        return
    assert isinstance(recorded["settings"], dict)


@PROFILE
@given(records=st.lists(json_values, min_size=2, max_size=2))
def test_done_records_of_any_content_are_trusted_only_when_valid(tmp_path_factory, records):
    folder = tmp_path_factory.mktemp("s") / "state"
    shards = plan_shards(["a", "b"], 1)
    RunState.open(folder, settings={}, shards=shards, resume=False, force=False)
    for shard, record in zip(shards, records):
        (folder / "done" / f"{shard.id}.json").write_text(json.dumps(record))

    def valid(shard, record):
        return isinstance(record.get("images"), list)

    state = RunState.open(folder, settings={}, shards=shards, resume=True, force=False,
                          valid=valid)
    for shard, record in zip(shards, records):
        trusted = (isinstance(record, dict) and record.get("shard") == shard.id
                   and isinstance(record.get("images"), list))
        assert (shard.id in state.done) == trusted


# ----------------------------------------------------------------------------- manifests


@PROFILE
@given(data=_keyed({"tool": st.just("groundroll"),
                    "files": st.lists(st.text(max_size=12)),
                    "sha256": st.dictionaries(st.text(max_size=8), st.text(max_size=64))})
       | json_values)
def test_manifest_any_json_lists_only_plain_names(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("m") / ".x.groundroll.json"
    path.write_text(json.dumps(data))
    names = read_manifest(path)
    for name, digest in names.items():
        assert name and "/" not in name and "\0" not in name and not name.startswith(".")
        assert name not in (".", "..")
        assert digest is None or len(digest) == 64


# ----------------------------------------------------------------------------- images


def _png(h=5, w=7) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)).save(buf, "PNG")
    return buf.getvalue()


@PROFILE
@given(raw=st.binary(max_size=300) | st.builds(
    lambda cut, flip, byte: bytes(b ^ byte if i == flip else b
                                  for i, b in enumerate(_png()[:cut])),
    st.integers(0, 200), st.integers(0, 200), st.integers(1, 255)))
def test_image_reader_any_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("i") / "image.png"
    path.write_bytes(raw)
    try:
        rgb = load_image(path)
    except ImageReadError as err:
        _one_line(err)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3

"""ServerProfile: defaults are the standard, JSON round trips, malformed input refused."""

from __future__ import annotations

import json
import pathlib
import sys
import typing

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aqido import ServerProfile


def test_defaults_are_the_standard() -> None:
    standard = ServerProfile.standard()
    assert standard == ServerProfile()
    assert standard.percent_decoding
    assert standard.uid_lists
    assert standard.offset
    assert standard.empty_status == 204
    assert standard.max_results is None
    assert standard.single_value_matching == "exact"


def test_name_and_notes_are_not_compared() -> None:
    assert ServerProfile(name="a", notes=("x",)) == ServerProfile(name="b")
    assert ServerProfile(limit=False) != ServerProfile()


def _values(field: attrs.Attribute[object]) -> st.SearchStrategy[object]:
    default = field.default
    if isinstance(default, bool):
        return st.booleans()
    if field.name == "max_results":
        return st.none() | st.integers(min_value=1, max_value=100_000)
    if field.name in ("name",):
        return st.text(max_size=20)
    if field.name == "notes":
        return st.lists(st.text(max_size=10), max_size=3).map(tuple)
    if field.name in ("matched_keys", "range_keys"):
        keywords = st.sampled_from(["PatientName", "StudyDescription", "ModalitiesInStudy"])
        return st.none() | st.lists(keywords, max_size=3).map(tuple)
    if field.name in ("bad_request_status", "unknown_parent_status"):
        return st.sampled_from([200, 204, 400, 404, 500])
    # The remaining fields are Literal aliases: their arguments are the allowed values.
    return st.sampled_from(typing.get_args(typing.get_type_hints(ServerProfile)[field.name]))


profiles = st.fixed_dictionaries({f.name: _values(f) for f in attrs.fields(ServerProfile)}).map(
    lambda kw: ServerProfile(**kw)
)  # type: ignore[arg-type]


@given(profiles)
def test_json_round_trip(profile: ServerProfile) -> None:
    again = ServerProfile.from_json(profile.to_json())
    assert again == profile
    assert (again.name, again.notes) == (profile.name, profile.notes)


def test_save_and_load(tmp_path: pathlib.Path) -> None:
    profile = ServerProfile(name="capped", max_results=1000, cap_warning=False)
    path = tmp_path / "p.json"
    profile.save(path)
    assert json.loads(path.read_text())["max_results"] == 1000
    assert ServerProfile.load(path) == profile


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bogus": 1}, "bogus"),
        ({"limit": "yes"}, "limit"),
        ({"max_results": "5"}, "max_results"),
        ({"max_results": True}, "max_results"),
        # impossible values: no server caps at -3 or 0 results, or answers with status -1
        ({"max_results": -3}, "max_results must be a positive number"),
        ({"max_results": 0}, "max_results must be a positive number"),
        ({"bad_request_status": -1}, "bad_request_status must be an HTTP status"),
        ({"unknown_parent_status": 99999}, "unknown_parent_status must be an HTTP status"),
        ({"unknown_parent_status": True}, "unknown_parent_status"),
        ({"empty_status": 201}, "empty_status"),
        ({"single_value_matching": "fuzzy"}, "single_value_matching"),
        # nothing coerced: a lone string is no list of its characters, 5 no name
        ({"matched_keys": "PatientID"}, "matched_keys"),
        ({"matched_keys": [1, 2]}, "matched_keys"),
        ({"matched_keys": {"PatientID": 1}}, "matched_keys"),
        ({"notes": "measured by hand"}, "notes"),
        ({"notes": [1]}, "notes"),
        ({"name": 5}, "name"),
        ({"name": None}, "name"),
    ],
)
def test_malformed_dicts_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^invalid server profile: .*{message}"):
        ServerProfile.from_dict(data)


def test_the_constructor_refuses_an_impossible_value_too() -> None:
    with pytest.raises(ValueError, match="max_results must be a positive number"):
        ServerProfile(max_results=-3)
    with pytest.raises(ValueError, match="bad_request_status must be an HTTP status"):
        ServerProfile(bad_request_status=0)
    assert ServerProfile(max_results=1, unknown_parent_status=204).max_results == 1


@pytest.mark.parametrize(
    "text", ["", "[]", "{", '"x"', "[" * 100_000 + "]" * 100_000, '{"notes": ' + "[" * 100_000]
)
def test_malformed_json_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid server profile"):
        ServerProfile.from_json(text)


def test_a_corrupt_profile_file_is_a_value_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"notes": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match="invalid server profile"):
        ServerProfile.load(path)
    path.write_bytes(b'{"name": "\xff\xfe"}')  # not UTF-8: said so, not a bare UnicodeDecodeError
    with pytest.raises(ValueError, match="invalid server profile: not JSON"):
        ServerProfile.load(path)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file size limits")
def test_a_failed_save_keeps_the_profile_already_there(tmp_path: pathlib.Path) -> None:
    """A write that fails midway (a full disk; here a file size limit) loses nothing."""
    import resource
    import signal

    path = tmp_path / "p.json"
    ServerProfile.tiny_pacs().save(path)
    before = path.read_bytes()
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300, limits[1]))
    try:
        with pytest.raises(OSError, match="too large"):
            ServerProfile.orthanc().save(path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temporary file left


def test_a_profile_saved_before_range_keys_existed_still_loads() -> None:
    data = ServerProfile.tiny_pacs().to_dict()
    assert list(data["range_keys"]) == ["StudyDate", "StudyTime"]
    del data["range_keys"]
    assert ServerProfile.from_dict(data).range_keys is None  # every key takes ranges
    back = ServerProfile.from_json(ServerProfile.tiny_pacs().to_json())
    assert back.range_keys == ("StudyDate", "StudyTime")
    with pytest.raises(ValueError, match="range_keys"):
        ServerProfile.from_dict({"range_keys": "StudyDate"})  # a string is not a list of keys

"""Property tests: what a query sends is exactly what it holds, and hostile input never leaks.

A valid query's path and parameters must survive the encoded query string
unchanged (split on ``&``, then on the first ``=``, then
:func:`urllib.parse.unquote`, never ``unquote_plus``).  Input that is rejected
must be rejected with :class:`InvalidQueryError`, and nothing a caller passes
may add, remove or split a parameter.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aqido import (
    BaseQuery,
    HierarchicalQuery,
    InvalidQueryError,
    QueryLevel,
    RelationalQuery,
    encode_query_value,
    is_valid_uid,
)
from aqido.matching import Criterion

SETTINGS = settings(max_examples=200, deadline=None)

uid_components = st.one_of(st.just("0"), st.integers(min_value=1, max_value=10**12).map(str))
uids = st.lists(uid_components, min_size=1, max_size=8).map(".".join).filter(lambda u: len(u) <= 64)
uid_lists = st.lists(uids, min_size=1, max_size=3).map(",".join)

#: Any text without control characters or lone surrogates; URL-structural
#: characters and DICOM matching characters made likely.
match_text = st.text(
    alphabet=st.one_of(
        st.sampled_from("^*?,-./:%&#+= '\"\\;@!$()[]{}|<>~`_"),
        st.characters(blacklist_categories=("Cc", "Cs")),
    ),
    max_size=20,
)
list_items = st.lists(match_text.filter(lambda s: s != "" and "," not in s), max_size=3)
dates = st.one_of(st.none(), st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 1, 1)))
include = st.lists(
    st.sampled_from(
        ["StudyDescription", "PatientBirthDate", "00100040", "InstitutionName", "SeriesNumber"]
    ),
    max_size=3,
)
filters = st.dictionaries(
    st.sampled_from(["PatientSex", "InstitutionName", "0040A027", "BodyPartExamined"]),
    match_text.filter(bool),
    max_size=3,
)
counts = st.integers(min_value=0, max_value=10**9)

#: A character that may appear raw in an encoded value; anything else is %XX.
ENCODED = re.compile(r"(?:[!-~]|%[0-9A-F]{2})*")
FORBIDDEN_RAW = set("&#+= %")


@st.composite
def queries(draw: st.DrawFn) -> BaseQuery:
    """Any valid query, of either kind, at any level."""
    relational = draw(st.booleans())
    if relational:
        level = draw(st.sampled_from([QueryLevel.SERIES, QueryLevel.INSTANCE]))
    else:
        level = draw(st.sampled_from(list(QueryLevel)))
    kwargs: dict[str, Any] = {"query_level": level}
    if relational:
        for field in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            kwargs[field] = draw(st.one_of(st.just(""), uid_lists))
    else:
        needs_study = level is not QueryLevel.STUDY or draw(st.booleans())
        needs_series = level is QueryLevel.INSTANCE or (needs_study and draw(st.booleans()))
        in_path_study = level is not QueryLevel.STUDY
        in_path_series = level is QueryLevel.INSTANCE
        if needs_study:
            kwargs["StudyInstanceUID"] = draw(uids if in_path_study else uid_lists)
        if needs_series:
            kwargs["SeriesInstanceUID"] = draw(uids if in_path_series else uid_lists)
            if draw(st.booleans()):
                kwargs["SOPInstanceUID"] = draw(uid_lists)
    for field in ("PatientName", "PatientID", "AccessionNumber", "StudyDescription"):
        kwargs[field] = draw(match_text)
    kwargs["ModalitiesInStudy"] = draw(list_items)
    kwargs["Modality"] = draw(list_items)
    low, high = sorted([draw(dates) or dt.date(1900, 1, 1), draw(dates) or dt.date(2100, 1, 1)])
    kwargs["min_study_date"] = draw(st.sampled_from([None, low]))
    kwargs["max_study_date"] = draw(st.sampled_from([None, high]))
    kwargs["include_fields"] = draw(st.one_of(include, st.just(["all"])))
    kwargs["filters"] = draw(filters)
    kwargs["fuzzymatching"] = draw(st.booleans())
    kwargs["limit"] = draw(counts)
    kwargs["offset"] = draw(counts)
    cls = RelationalQuery if relational else HierarchicalQuery
    return cls(**kwargs)


def decode(query_string: str) -> list[tuple[str, str]]:
    """Decode a query string the way a strict server does (unquote, not unquote_plus)."""
    if not query_string:
        return []
    pairs = []
    for part in query_string.split("&"):
        key, sep, value = part.partition("=")
        assert sep == "=", part
        pairs.append((unquote(key, errors="strict"), unquote(value, errors="strict")))
    return pairs


def flatten(params: dict[str, str | list[str]]) -> list[tuple[str, str]]:
    return [
        (key, item)
        for key, value in params.items()
        for item in (value if isinstance(value, list) else [value])
    ]


@SETTINGS
@given(queries())
def test_path_and_parameters_round_trip(query: BaseQuery) -> None:
    params = query.uri_search_params()
    assert decode(query.query_string()) == flatten(params)
    assert all(value != "" and value != [] for value in params.values())
    path = query.uri_base()
    assert re.fullmatch(r"(/(studies|series|instances|[0-9.]+))+", path)
    for segment in path.split("/")[1:]:
        assert segment in ("studies", "series", "instances") or is_valid_uid(segment)
    url = query.relative_url()
    assert url == (f"{path}?{query.query_string()}" if params else path)
    assert url.count("?") <= 1 or "?" in query.query_string()


@SETTINGS
@given(queries())
def test_encoded_query_string_has_no_structural_characters_inside_values(query: BaseQuery) -> None:
    qs = query.query_string()
    parts = qs.split("&") if qs else []
    assert len(parts) == len(flatten(query.uri_search_params()))
    for part in parts:
        key, _, value = part.partition("=")
        assert ENCODED.fullmatch(key)
        assert ENCODED.fullmatch(value), value
        assert not FORBIDDEN_RAW & set(re.sub(r"%[0-9A-F]{2}", "", value))


@SETTINGS
@given(queries())
def test_queries_are_hashable_and_rebuild_equal(query: BaseQuery) -> None:
    import attrs

    again = attrs.evolve(query)
    assert again == query
    assert hash(again) == hash(query)


@SETTINGS
@given(st.text(max_size=30))
def test_encode_query_value_round_trips_or_rejects(value: str) -> None:
    try:
        encoded = encode_query_value(value)
    except InvalidQueryError:
        assert re.search(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]", value)
        return
    assert unquote(encoded, errors="strict") == value
    assert ENCODED.fullmatch(encoded)
    assert not FORBIDDEN_RAW & set(re.sub(r"%[0-9A-F]{2}", "", encoded))
    # DICOM matching characters are never escaped.
    for char in "^*?,-./:":
        assert encoded.count(char) == value.count(char)


HOSTILE = st.one_of(
    st.sampled_from(
        ["x&PatientID=1", "a#b", "%41", "a\r\nHost: evil", "\x00", "1.2\n", "a b+c", "?x=1"]
    ),
    st.text(max_size=15),
)


@SETTINGS
@given(
    st.sampled_from(
        ["PatientName", "PatientID", "AccessionNumber", "StudyDescription", "SeriesDescription"]
    ),
    HOSTILE,
)
def test_hostile_text_fields_are_rejected_or_contained(field: str, value: str) -> None:
    try:
        query = HierarchicalQuery(**{field: value})
    except InvalidQueryError:
        assert re.search(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]", value)
        return
    expected = [(field, value)] if value else []
    assert decode(query.query_string()) == expected
    assert query.uri_base() == "/studies"


@SETTINGS
@given(HOSTILE, st.sampled_from(["StudyInstanceUID", "SeriesInstanceUID"]))
def test_hostile_uids_never_reach_the_path(value: str, field: str) -> None:
    kwargs: dict[str, Any] = {
        "query_level": QueryLevel.INSTANCE,
        "StudyInstanceUID": "1.2",
        "SeriesInstanceUID": "1.2.3",
        field: value,
    }
    if not is_valid_uid(value.rstrip("\x00 ")):
        with pytest.raises(InvalidQueryError, match=field):
            HierarchicalQuery(**kwargs)
        return
    # Accepted only when it is a real UID (possibly with DICOM padding stripped).
    query = HierarchicalQuery(**kwargs)
    assert getattr(query, field) == value.rstrip("\x00 ")
    assert re.fullmatch(r"/studies/[0-9.]+/series/[0-9.]+/instances", query.uri_base())


@SETTINGS
@given(st.text(max_size=15), st.sampled_from(["StudyDate", "StudyTime", "SOPClassUID"]))
def test_hostile_filter_values_for_strict_vrs_are_rejected_or_well_formed(
    value: str, key: str
) -> None:
    try:
        query = RelationalQuery(query_level="INSTANCE", filters={key: value})
    except InvalidQueryError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert f"filters[{key!r}]" in message
        return
    sent = dict(decode(query.query_string()))[key]
    assert sent == value.rstrip("\x00 ") if key == "SOPClassUID" else sent == value
    assert re.fullmatch(r"[0-9.:,+-]+", sent)
    assert sent != "-"


@SETTINGS
@given(
    key=st.sampled_from(["StudyDate", "StudyTime", "AcquisitionDateTime"]),
    value=st.text(alphabet="0123456789.:+-", min_size=1, max_size=22),
)
@example(key="StudyTime", value="2500-")
@example(key="StudyDate", value="20241345")
@example(key="StudyDate", value="2024-2025")
@example(key="StudyDate", value="202402")
@example(key="AcquisitionDateTime", value="00010101000000+0100")
def test_a_temporal_filter_accepted_when_built_is_one_the_matcher_reads(
    key: str, value: str
) -> None:
    # A value the query accepts must not fail later, when a search matches it locally.
    try:
        HierarchicalQuery(filters={key: value})
    except InvalidQueryError:
        return
    Criterion.of(key, value).compile()  # a year (or a month) alone included


@SETTINGS
@given(
    key=st.sampled_from(["SeriesNumber", "PatientWeight", "InstanceNumber"]),
    value=st.text(alphabet="0123456789.eE+-, _*naif", min_size=1, max_size=12),
)
@example(key="SeriesNumber", value="abc")
@example(key="PatientWeight", value="1e99999999999999999999999")
def test_a_numeric_filter_accepted_when_built_is_one_the_matcher_reads(
    key: str, value: str
) -> None:
    try:
        HierarchicalQuery(filters={key: value})
    except InvalidQueryError:
        return
    Criterion.of(key, value).compile()

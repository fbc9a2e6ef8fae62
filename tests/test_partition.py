"""aqido.partition: truncation rules and query splitting, without any I/O."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pytest

from aqido.partition import (
    MODALITIES,
    Caps,
    date_bounds,
    split_study_query,
    time_bounds,
)
from aqido.protocol import QidoResponse, parse_warnings
from aqido.query import HierarchicalQuery, QueryLevel

TODAY = dt.date(2026, 11, 25)


def response(n: int, warning: str | None = None) -> QidoResponse:
    items = [{"0020000D": {"vr": "UI", "Value": [f"1.{i}"]}} for i in range(n)]
    warnings = parse_warnings([warning]) if warning else ()
    return QidoResponse(200, "u", {}, items, warnings)


# --- truncation --------------------------------------------------------------------------------


def test_without_a_known_cap_only_warnings_and_full_pages_count() -> None:
    caps = Caps()
    assert not caps.possibly_truncated(response(1000), "STUDY", 0)
    assert caps.possibly_truncated(response(10), "STUDY", 10)
    assert not caps.possibly_truncated(response(9), "STUDY", 10)
    warned = response(5, '299 h "There are 7 additional results that can be requested"')
    assert caps.possibly_truncated(warned, "STUDY", 0)
    none_left = response(5, '299 h "There are 0 additional results that can be requested"')
    assert not caps.possibly_truncated(none_left, "STUDY", 0)
    assert not caps.possibly_truncated(response(0), "STUDY", 0)


def test_a_known_cap_and_orthanc_cap_plus_one_are_learned() -> None:
    caps = Caps(10)
    assert caps.possibly_truncated(response(10), "STUDY", 0)  # exactly the cap: maybe
    assert not caps.possibly_truncated(response(9), "STUDY", 0)
    caps.observe("STUDY", 11)  # Orthanc answers cap + 1 when it truncates ...
    assert caps.possibly_truncated(response(11), "STUDY", 0)
    assert not caps.possibly_truncated(response(10), "STUDY", 0)  # ... so 10 is complete
    assert caps.possibly_truncated(response(10), "SERIES", 0)  # learned per level


def test_a_one_item_answer_at_the_limit_or_cap_may_be_truncated() -> None:
    assert Caps().possibly_truncated(response(1), "STUDY", 1)  # limit=1, one item: page on
    assert Caps(1).possibly_truncated(response(1), "STUDY", 0)  # a cap of 1, reached
    assert not Caps(2).possibly_truncated(response(1), "STUDY", 0)


def test_caps_by_level() -> None:
    caps = Caps({"STUDY": 10, "INSTANCE": 7})
    assert caps.limit_for("INSTANCE") == 7
    assert caps.limit_for("SERIES") is None
    assert caps.possibly_truncated(response(8), "INSTANCE", 0)
    assert not caps.possibly_truncated(response(8), "SERIES", 0)


@pytest.mark.parametrize(
    ("total", "trusted"), [(5, True), (9, True), (10, False), (11, False), (12, True)]
)
def test_paging_is_trusted_only_beyond_what_capping_before_offset_allows(
    total: int, trusted: bool
) -> None:
    assert Caps(10).paging_trusted("STUDY", total, None) is trusted
    assert Caps().paging_trusted("STUDY", total, None)


def test_paging_short_of_an_announced_total_is_not_trusted() -> None:
    assert not Caps().paging_trusted("STUDY", 20, 25)
    assert Caps().paging_trusted("STUDY", 25, 25)


@pytest.mark.parametrize(
    "bad",
    [0, -1, True, 1.5, "10", {"STUDY": 0}, {"STUDY": False}, {"PATIENT": 10}, {5: 10}],
)
def test_a_server_limit_is_a_positive_int_or_one_per_query_level(bad: Any) -> None:
    with pytest.raises(ValueError, match="server_limit"):
        Caps(bad)


def test_a_server_limit_of_one_and_levels_in_any_case_are_accepted() -> None:
    assert Caps(1).limit_for("SERIES") == 1
    caps = Caps({"study": 1, QueryLevel.SERIES: 2})
    assert (caps.limit_for("STUDY"), caps.limit_for(QueryLevel.SERIES)) == (1, 2)
    assert caps.limit_for("INSTANCE") is None


# --- dates and times ---------------------------------------------------------------------------


def test_date_bounds_from_fields_and_filters() -> None:
    d = dt.date
    assert date_bounds(HierarchicalQuery()) == (None, None)
    assert date_bounds(HierarchicalQuery(min_study_date="2024-01-02")) == (d(2024, 1, 2), None)
    assert date_bounds(HierarchicalQuery(filters={"StudyDate": "20240102"})) == (
        d(2024, 1, 2),
        d(2024, 1, 2),
    )
    assert date_bounds(HierarchicalQuery(filters={"00080020": "-20240102"})) == (
        None,
        d(2024, 1, 2),
    )
    assert date_bounds(HierarchicalQuery(filters={"StudyDate": "2024"})) is None


def test_a_date_range_in_the_retired_form_is_split_by_date() -> None:
    # YYYY.MM.DD is the same day as YYYYMMDD (the matcher reads both): without date
    # bounds the split fell through to ModalitiesInStudy over the whole range, and a
    # crawl of a capped month whose studies have another modality was incomplete.
    d = dt.date
    query = HierarchicalQuery(filters={"StudyDate": "2024.01.01-2024.01.31"})
    assert date_bounds(query) == (d(2024, 1, 1), d(2024, 1, 31))
    assert date_bounds(HierarchicalQuery(filters={"StudyDate": "2024.01.02"})) == (
        d(2024, 1, 2),
        d(2024, 1, 2),
    )
    assert params(split_study_query(query)) == [
        {"StudyDate": "20240101-20240116"},
        {"StudyDate": "20240117-20240131"},
    ]


def test_time_bounds() -> None:
    assert time_bounds(HierarchicalQuery()) == (0, 86399)
    assert time_bounds(HierarchicalQuery(filters={"StudyTime": "10-1030"})) == (36000, 37859)
    assert time_bounds(HierarchicalQuery(filters={"StudyTime": "103015-103015.999999"})) == (
        37815,
        37815,
    )
    assert time_bounds(HierarchicalQuery(filters={"StudyTime": "1030"})) is None
    # a bound the query accepts but that reads as no whole second is unusable, not an error
    assert time_bounds(HierarchicalQuery(filters={"StudyTime": "12:00:-13"})) is None


def params(parts: list[Any] | None) -> list[dict[str, Any]]:
    assert parts is not None
    return [p.uri_search_params() for p in parts]


def test_an_undated_query_becomes_three_open_and_closed_ranges() -> None:
    parts = split_study_query(HierarchicalQuery(PatientID="X"), today=TODAY)
    assert params(parts) == [
        {"PatientID": "X", "StudyDate": "-18991231"},
        {"PatientID": "X", "StudyDate": "19000101-20261125"},
        {"PatientID": "X", "StudyDate": "20261126-"},
    ]


def test_dates_are_halved_down_to_a_day_and_open_ends_stay_open() -> None:
    parts = split_study_query(HierarchicalQuery(filters={"StudyDate": "20240101-20240104"}))
    assert params(parts) == [
        {"StudyDate": "20240101-20240102"},
        {"StudyDate": "20240103-20240104"},
    ]
    low = split_study_query(HierarchicalQuery(max_study_date="1899-12-31"))
    assert [p["StudyDate"] for p in params(low)] == ["-14491231", "14500101-18991231"]
    high = split_study_query(HierarchicalQuery(min_study_date="2026-11-26"))
    assert [p["StudyDate"] for p in params(high)][1].endswith("-")


def covered(queries: list[Any]) -> set[int]:
    seconds: set[int] = set()
    for query in queries:
        low, high = time_bounds(query) or (0, -1)
        seconds.update(range(low, high + 1))
    return seconds


def test_a_day_is_split_by_time_on_hour_then_minute_boundaries_down_to_a_second() -> None:
    day = HierarchicalQuery(min_study_date="2024-03-01", max_study_date="2024-03-01")
    parts = split_study_query(day)
    assert params(parts) == [
        {"StudyDate": "20240301-20240301", "StudyTime": "00-115959.999999"},
        {"StudyDate": "20240301-20240301", "StudyTime": "12-235959.999999"},
    ]
    leaves = [day]
    seen: list[Any] = []
    while leaves:  # split everything down to single seconds, for the first two minutes
        query = leaves.pop()
        bounds = time_bounds(query)
        assert bounds is not None
        if bounds[0] >= 120:
            continue
        subparts = split_study_query(query)
        assert subparts is not None
        if not subparts[0].ModalitiesInStudy:
            assert covered(subparts) == set(range(bounds[0], bounds[1] + 1))  # no gap
            leaves.extend(subparts)
        else:
            seen.append(query)
    assert covered(seen) == set(range(120))
    assert len(seen) == 120


@pytest.mark.parametrize(
    ("own", "expected"),
    [
        # found by review: the fraction was dropped, so the first part began at 10:00:00.0
        ("100000.5-100001", ["100000.5-100000.999999", "100001-100001"]),
        ("10-1030", ["10-101459.999999", "1015-1030"]),  # not widened to 103059.999999
        ("-0030", ["-001459.999999", "0015-0030"]),  # open ends stay open
        ("2330.25-", ["2330.25-234459.999999", "2345-"]),
    ],
)
def test_a_split_by_time_keeps_the_querys_own_outer_bounds(own: str, expected: list[str]) -> None:
    query = HierarchicalQuery(
        min_study_date="2024-03-01", max_study_date="2024-03-01", filters={"StudyTime": own}
    )
    parts = split_study_query(query)
    assert [p["StudyTime"] for p in params(parts)] == expected
    assert all(p["StudyDate"] == "20240301-20240301" for p in params(parts))


def test_every_part_of_a_split_by_time_lies_within_the_query() -> None:
    # Split a fractional range down to single seconds: every leaf keeps 100000.5 or 100002.25
    # where the query had them, so no part matches a time the query does not.
    query = HierarchicalQuery(
        min_study_date="2024-03-01",
        max_study_date="2024-03-01",
        filters={"StudyTime": "100000.5-100002.25"},
    )
    leaves, todo = [], [query]
    while todo:
        part = todo.pop()
        subparts = split_study_query(part)
        assert subparts is not None
        if subparts[0].ModalitiesInStudy:
            leaves.append(dict(part.filters)["StudyTime"])
        else:
            todo.extend(subparts)
    assert sorted(leaves) == ["100000.5-100000.999999", "100001-100001.999999", "100002-100002.25"]


def test_one_second_is_split_by_modality_seen_first_then_the_standard_codes() -> None:
    second = HierarchicalQuery(
        min_study_date="2024-03-01",
        max_study_date="2024-03-01",
        filters={"StudyTime": "103015-103015.999999"},
    )
    sample = [
        {"00080061": {"vr": "CS", "Value": ["ZZ", "CT"]}},
        {"00080061": {"vr": "CS"}},
    ]
    parts = split_study_query(second, sample)
    assert parts is not None
    modalities = [p.ModalitiesInStudy for p in parts]
    assert modalities[:2] == ["CT", "ZZ"]
    assert set(MODALITIES) <= set(modalities)
    assert len(modalities) == len(set(modalities))
    assert split_study_query(parts[0]) is None  # nothing left to split by


def test_a_malformed_sample_item_does_not_break_the_modality_split() -> None:
    second = HierarchicalQuery(
        min_study_date="2024-03-01",
        max_study_date="2024-03-01",
        filters={"StudyTime": "103015-103015.999999"},
    )
    sample = [
        {"00080061": {"vr": "CS", "Value": 5}},  # was an untyped TypeError
        {"00080061": {"vr": "CS", "Value": "CT"}},  # was split into "C" and "T"
        {"00080061": {"vr": "CS", "Value": ["MR"]}},
    ]
    parts = split_study_query(second, sample)
    assert parts is not None
    modalities = [p.ModalitiesInStudy for p in parts]
    assert modalities[0] == "MR"
    assert "C" not in modalities
    assert "T" not in modalities
    assert set(MODALITIES) <= set(modalities)


def test_a_modality_list_is_split_into_its_values() -> None:
    query = HierarchicalQuery(
        ModalitiesInStudy=["CT", "MR"],
        min_study_date="2024-03-01",
        max_study_date="2024-03-01",
        filters={"StudyTime": "103015-103015.999999"},
    )
    assert [p.ModalitiesInStudy for p in split_study_query(query) or []] == ["CT", "MR"]


def test_no_split_by_a_key_the_server_does_not_match() -> None:
    # the parts would only repeat the same answer: no split at all
    query = HierarchicalQuery(filters={"StudyDate": "20240101"})
    assert split_study_query(query, keys=frozenset()) is None
    assert split_study_query(query, keys={"StudyDate", "StudyTime"}) is not None
    assert split_study_query(HierarchicalQuery(ModalitiesInStudy="CT"), keys={"StudyTime"}) is None


def test_a_series_listing_is_split_by_modality_only_once_and_where_matched() -> None:
    from aqido.partition import split_series_query

    listing = HierarchicalQuery(query_level="SERIES", StudyInstanceUID="1.2")
    parts = split_series_query(listing)
    assert parts is not None
    assert [p.Modality for p in parts] == list(MODALITIES)  # the standard codes, in turn
    assert split_series_query(attrs.evolve(listing, Modality="CT")) is None  # already one
    assert split_series_query(listing, keys={"StudyDate"}) is None  # the server ignores it


def test_split_parts_have_no_limit_or_offset() -> None:
    parts = split_study_query(HierarchicalQuery(limit=10, offset=20), today=TODAY)
    assert parts is not None
    assert all(p.limit == 0 and p.offset == 0 for p in parts)

"""Parity with dicomtrolley 4.x: same field names give the same path and parameters.

Known, intended differences (tested here too): UIDs that are part of the path
are not repeated as parameters, ``limit``/``offset`` are strings, and aqido
supports open date ranges (dicomtrolley requires both dates).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from dicomtrolley import qido_rs as trolley
from dicomtrolley.core import Query as TrolleyQuery
from dicomtrolley.core import QueryLevels
from hypothesis import given, settings
from hypothesis import strategies as st

from aqido import (
    BaseQuery,
    HierarchicalQuery,
    InvalidQueryError,
    RelationalQuery,
    ensure_query_type,
)

STUDY = "1.2.840.113619.2.1"
SERIES = "1.2.840.113619.2.1.2"


def _trolley_params(query: Any, ours: BaseQuery) -> dict[str, str | list[str]]:
    """dicomtrolley's parameters, minus path UIDs, with numbers as strings (aqido's form)."""
    params = query.uri_search_params()
    if ours.uri_base().startswith("/studies/") and ours.uri_base().endswith("/instances"):
        # dicomtrolley repeats the study UID of /studies/{study}/instances; aqido does not.
        params.pop("StudyInstanceUID", None)
    return {
        key: (value if isinstance(value, list) else str(value)) for key, value in params.items()
    }


CASES: list[tuple[str, dict[str, Any]]] = [
    ("H", {}),
    ("H", {"PatientName": "Doe^J*", "PatientID": "P1", "AccessionNumber": "A*"}),
    (
        "H",
        {"ModalitiesInStudy": "CT,MR", "include_fields": ["PatientBirthDate", "StudyDescription"]},
    ),
    (
        "H",
        {
            "min_study_date": dt.datetime(2024, 1, 1),
            "max_study_date": dt.datetime(2024, 1, 1),
            "limit": 10,
            "offset": 20,
        },
    ),
    ("H", {"StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES}),
    ("H", {"query_level": "SERIES", "StudyInstanceUID": STUDY, "PatientID": "P1"}),
    (
        "H",
        {
            "query_level": "INSTANCE",
            "StudyInstanceUID": STUDY,
            "SeriesInstanceUID": SERIES,
            "include_fields": ["Rows"],
        },
    ),
    ("R", {"query_level": "SERIES"}),
    ("R", {"query_level": "SERIES", "StudyInstanceUID": STUDY, "PatientName": "O'Brien^Mary & Co"}),
    ("R", {"query_level": "INSTANCE", "SeriesInstanceUID": SERIES}),
    ("R", {"query_level": "INSTANCE", "StudyInstanceUID": STUDY, "PatientID": "P1"}),
]


def _pair(kind: str, kwargs: dict[str, Any]) -> tuple[Any, BaseQuery]:
    trolley_kwargs = dict(kwargs)
    if "query_level" in kwargs:
        trolley_kwargs["query_level"] = QueryLevels(kwargs["query_level"])
    if kind == "H":
        return trolley.HierarchicalQuery(**trolley_kwargs), HierarchicalQuery(**kwargs)
    return trolley.RelationalQuery(**trolley_kwargs), RelationalQuery(**kwargs)


@pytest.mark.parametrize(("kind", "kwargs"), CASES)
def test_same_path_and_parameters_as_dicomtrolley(kind: str, kwargs: dict[str, Any]) -> None:
    theirs, ours = _pair(kind, kwargs)
    assert ours.uri_base() == theirs.uri_base()
    assert ours.uri_search_params() == _trolley_params(theirs, ours)


def test_relational_study_uid_is_not_repeated_unlike_dicomtrolley() -> None:
    theirs, ours = _pair("R", {"query_level": "INSTANCE", "StudyInstanceUID": STUDY})
    assert theirs.uri_search_params() == {"StudyInstanceUID": STUDY}
    assert ours.uri_base() == theirs.uri_base() == f"/studies/{STUDY}/instances"
    assert ours.uri_search_params() == {}


def test_open_date_ranges_which_dicomtrolley_refuses() -> None:
    with pytest.raises(ValueError, match="Both need to be given"):
        trolley.HierarchicalQuery(min_study_date=dt.datetime(2024, 1, 1))
    query = HierarchicalQuery(min_study_date=dt.datetime(2024, 1, 1))
    assert query.uri_search_params() == {"StudyDate": "20240101-"}


def test_numbers_are_strings() -> None:
    theirs, ours = _pair("H", {"limit": 5})
    assert theirs.uri_search_params() == {"limit": 5}
    assert ours.uri_search_params() == {"limit": "5"}


@pytest.mark.parametrize(
    ("query", "kind", "path"),
    [
        (TrolleyQuery(PatientID="P1"), HierarchicalQuery, "/studies"),
        (
            TrolleyQuery(query_level=QueryLevels.SERIES, StudyInstanceUID=STUDY),
            HierarchicalQuery,
            f"/studies/{STUDY}/series",
        ),
        (TrolleyQuery(query_level=QueryLevels.SERIES, PatientID="P1"), RelationalQuery, "/series"),
        (
            TrolleyQuery(query_level=QueryLevels.INSTANCE, StudyInstanceUID=STUDY),
            RelationalQuery,
            f"/studies/{STUDY}/instances",
        ),
        (
            trolley.RelationalQuery(query_level=QueryLevels.SERIES, StudyInstanceUID=STUDY),
            RelationalQuery,
            "/series",
        ),
        (trolley.HierarchicalQuery(PatientID="P1", limit=3), HierarchicalQuery, "/studies"),
    ],
)
def test_ensure_query_type_converts_dicomtrolley_queries(
    query: Any, kind: type[BaseQuery], path: str
) -> None:
    ours = ensure_query_type(query)
    assert type(ours) is kind
    assert ours.uri_base() == path
    # Same kind as dicomtrolley's own cast, and the same parameters.
    theirs = trolley.QidoRS.ensure_query_type(query)
    assert type(theirs).__name__ == kind.__name__
    assert ours.uri_search_params() == _trolley_params(theirs, ours)


def test_ensure_query_type_converts_extended_queries_into_filters() -> None:
    from dicomtrolley.core import ExtendedQuery

    query = ExtendedQuery(PatientID="P1", PatientSex="F", PatientBirthDate=dt.date(1970, 1, 2))
    ours = ensure_query_type(query)
    assert ours.uri_search_params() == {
        "PatientID": "P1",
        "PatientBirthDate": "19700102",
        "PatientSex": "F",
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"NumberOfStudyRelatedInstances": 0},
        {"PatientID": 0},
        {"query_level": "SERIES", "StudyInstanceUID": 0},
        {"PatientWeight": 0.0},
    ],
)
def test_a_zero_match_value_is_refused_not_dropped(fields: dict[str, Any]) -> None:
    # dropped as if empty, it widened the search (while 5 was refused as not a str)
    with pytest.raises(InvalidQueryError, match="is not a str"):
        ensure_query_type(fields)


def test_zero_and_false_defaults_are_still_not_set() -> None:
    fields = {"limit": 0, "offset": 0, "fuzzymatching": False, "permissive_uid": False}
    assert ensure_query_type({"PatientID": "P1", **fields}) == HierarchicalQuery(PatientID="P1")


# Hypothesis: random queries over the fields both libraries have.

uids = (
    st.lists(st.integers(min_value=0, max_value=10**9).map(str), min_size=2, max_size=6)
    .map(".".join)
    .filter(lambda u: len(u) <= 64)
)
text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)
keywords = st.lists(
    st.sampled_from(["StudyDescription", "PatientBirthDate", "PatientSex", "Rows"]),
    unique=True,
    max_size=3,
)


@st.composite
def common_kwargs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(["H", "R"]))
    levels = ["STUDY", "SERIES", "INSTANCE"] if kind == "H" else ["SERIES", "INSTANCE"]
    level = draw(st.sampled_from(levels))
    kwargs: dict[str, Any] = {"query_level": level}
    study = draw(st.one_of(st.just(""), uids))
    series = draw(st.one_of(st.just(""), uids))
    if kind == "H":
        if level != "STUDY" or series:
            study = study or draw(uids)
        if level == "INSTANCE":
            series = series or draw(uids)
    kwargs["StudyInstanceUID"] = study
    kwargs["SeriesInstanceUID"] = series
    for field in ("PatientName", "PatientID", "AccessionNumber", "ModalitiesInStudy"):
        kwargs[field] = draw(text)
    if draw(st.booleans()):
        low = draw(st.dates(min_value=dt.date(1950, 1, 1), max_value=dt.date(2050, 1, 1)))
        days = draw(st.integers(min_value=0, max_value=400))
        kwargs["min_study_date"] = dt.datetime.combine(low, dt.time())
        kwargs["max_study_date"] = kwargs["min_study_date"] + dt.timedelta(days=days)
    kwargs["include_fields"] = draw(keywords)
    kwargs["limit"] = draw(st.integers(min_value=0, max_value=1000))
    kwargs["offset"] = draw(st.integers(min_value=0, max_value=1000))
    return kind, kwargs


@settings(max_examples=150, deadline=None)
@given(common_kwargs())
def test_parity_property(case: tuple[str, dict[str, Any]]) -> None:
    kind, kwargs = case
    theirs, ours = _pair(kind, kwargs)
    assert ours.uri_base() == theirs.uri_base()
    assert ours.uri_search_params() == _trolley_params(theirs, ours)

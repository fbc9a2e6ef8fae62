"""dicomtrolley's own QIDO-RS tests, run against aqido.

Ported from ``tests/test_qido_rs.py`` of dicomtrolley 4.1.0 (the sdist on PyPI,
https://pypi.org/project/dicomtrolley/4.1.0/), by Sjoerd Kerkstra, under the Apache License,
Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0). Changes to that file, as the
license asks: the imports and names below are aqido's, and the canned server answers are
this project's own (dicomtrolley's ``tests/mock_responses.py`` is not in its sdist).

Inputs and expectations are unchanged apart from these renames (docs/parity.md lists them):

- ``dicomtrolley.qido_rs.HierarchicalQuery``/``RelationalQuery`` → aqido's (same fields);
  ``dicomtrolley.core.QueryLevels`` → ``aqido.QueryLevel`` (same members);
  ``dicomtrolley.core.Query`` stays dicomtrolley's: aqido converts it.
- ``pydantic.ValidationError`` → ``aqido.InvalidQueryError`` (both are ``ValueError``s).
- ``QidoRS(session=requests.Session(), url=...)`` → ``aqido.QidoRS(url=...)`` (the blocking
  client; it has its own connection pool), and ``qido.ensure_query_type(q)`` →
  ``aqido.ensure_query_type(q)`` (a function, not a method).
- ``requests_mock`` (it intercepts only ``requests``; aqido uses aiohttp) → a real HTTP server
  on 127.0.0.1 with the same ``request_history``/``.path``/``.query`` (``conftest.py``);
  ``set_mock_response`` serves a canned answer from it; ``MockUrls.QIDO_RS_URL`` is that
  server's URL + ``/qido``.
- ``QIDO_RS_STUDY_LEVEL``: three studies, and ``QIDO_RS_204_NO_RESULTS``: 204 (written here).

What still differs is a strict xfail with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import attrs
import pytest
from dicomtrolley.core import Query

from aqido import HierarchicalQuery, QidoRS, RelationalQuery, ensure_query_type
from aqido import InvalidQueryError as ValidationError
from aqido import QueryLevel as QueryLevels

OPEN_DATE_RANGE = pytest.mark.xfail(
    strict=True,
    raises=pytest.fail.Exception,
    reason="aqido accepts a single date as an open range (StudyDate=20230529-); "
    "dicomtrolley requires both min_study_date and max_study_date",
)


@attrs.frozen
class MockResponse:
    """A canned answer (status, body, headers), as dicomtrolley's test helpers describe one."""

    status_code: int
    text: str = ""
    headers: dict[str, str] = attrs.field(factory=dict)


def _study(n: int) -> dict[str, Any]:
    """A study-level DICOM JSON item with the odd values real servers send (a bad DA)."""
    return {
        "00080020": {"vr": "DA", "Value": ["13495156" if n == 1 else f"2023052{n}"]},
        "00080050": {"vr": "SH", "Value": [f"ACC{n}"]},
        "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": f"Patient^{n}"}]},
        "00100020": {"vr": "LO", "Value": [f"PID{n}"]},
        "0020000D": {"vr": "UI", "Value": [f"1.2.826.0.1.3680043.2.{n}"]},
        "00201206": {"vr": "IS", "Value": [2]},
        "00201208": {"vr": "IS", "Value": [5]},
    }


# Three studies at study level
QIDO_RS_STUDY_LEVEL = MockResponse(
    status_code=200,
    text=json.dumps([_study(n) for n in (1, 2, 3)]),
    headers={"Content-Type": "application/dicom+json"},
)
# No results: 204 and no body
QIDO_RS_204_NO_RESULTS = MockResponse(status_code=204)


def set_mock_response(requests_mock: Any, response: MockResponse) -> None:
    """Serve ``response`` for every request (dicomtrolley's ``tests.conftest`` helper)."""
    requests_mock.serve_content(response.text, response.status_code, response.headers)


@pytest.mark.parametrize(
    "query_params",
    [
        {"StudyInstanceUID": "123"},
        {"StudyInstanceUID": "123", "SeriesInstanceUID": "456"},
        {
            "min_study_date": datetime(year=2023, month=5, day=29),
            "max_study_date": datetime(year=2023, month=5, day=29),
        },
    ],
)
def test_valid_hierarchical_query(query_params):
    """These queries should not raise any exceptions"""
    assert HierarchicalQuery(**query_params)  # check for no init exceptions


@pytest.mark.parametrize(
    "query_params",
    [
        {"SeriesInstanceUID": "123"},
        {"SOPClassInstanceUID": "789"},
        {"SOPClassInstanceUID": "789", "query_level": QueryLevels.INSTANCE},
        pytest.param(
            {"min_study_date": datetime(year=2023, month=5, day=29)},
            marks=OPEN_DATE_RANGE,
        ),
    ],
)
def test_invalid_hierarchical_query(query_params):
    """These queries are invalid, should not pass init validation"""
    with pytest.raises((ValueError, ValidationError)):
        HierarchicalQuery(**query_params)


def test_hierarchical_query_uris():
    """Test splitting into uri"""
    query = HierarchicalQuery(
        limit=25,
        min_study_date=datetime(year=2023, month=5, day=29),
        max_study_date=datetime(year=2023, month=5, day=29),
        StudyInstanceUID="123",
        include_fields=["PatientName", "Modality"],
        query_level=QueryLevels.SERIES,
    )

    parameters = query.uri_search_params()
    url = query.uri_base()

    assert len(parameters) == 3
    assert url == "/studies/123/series"


@pytest.mark.parametrize(
    "query,expected_url",
    [
        # For this basic study-level query suid should be a parameter
        (
            HierarchicalQuery(StudyInstanceUID="123", query_level=QueryLevels.STUDY),
            "/qido/studies?StudyInstanceUID=123",
        ),
        # But for series-level query suid becomes part of the path, not parameter
        (
            HierarchicalQuery(StudyInstanceUID="123", query_level=QueryLevels.SERIES),
            "/qido/studies/123/series",
        ),
    ],
)
def test_hierarchical_query_uri_suid_only(requests_mock, a_qido, query, expected_url):
    """Exposes issue #49 - Query containing SeriesInstanceUID only is not
    translated properly. This test check more broadly how hierarchical queries
    generate they urls to make sure this is sane.
    """
    # Return a valid response to avoid errors. We're only interested in the called url
    set_mock_response(requests_mock, QIDO_RS_STUDY_LEVEL)

    # Simple query for a single StudyInstanceUID
    a_qido.find_studies(query)

    # This should translate to a qido url call including the StudyInstanceUID
    hist = requests_mock.request_history
    assert len(hist) == 1  # sanity check
    called = hist[0].path
    if hist[0].query:
        called = called + "?" + hist[0].query
    assert called.lower() == expected_url.lower()


@pytest.mark.parametrize(
    "query_params",
    [
        {"query_level": QueryLevels.INSTANCE},
        {"query_level": QueryLevels.INSTANCE, "PatientName": "a name"},
        {"query_level": QueryLevels.SERIES, "PatientName": "a name"},
        {"StudyInstanceUID": "123", "query_level": QueryLevels.INSTANCE},
        {
            "StudyInstanceUID": "123",
            "SeriesInstanceUID": "456",
            "query_level": QueryLevels.SERIES,
        },
        {
            "min_study_date": datetime(year=2023, month=5, day=29),
            "max_study_date": datetime(year=2023, month=5, day=29),
            "query_level": QueryLevels.SERIES,
        },
    ],
)
def test_valid_relational_query(query_params):
    """These queries should not raise any exceptions"""
    assert RelationalQuery(**query_params)  # check for no init exceptions


@pytest.mark.parametrize(
    "query_params",
    [
        {"SeriesInstanceUID": "123"},
        {"SOPClassInstanceUID": "789"},
        pytest.param(
            {"min_study_date": datetime(year=2023, month=5, day=29)},
            marks=OPEN_DATE_RANGE,
        ),
    ],
)
def test_invalid_relational_query(query_params):
    """These queries are invalid, should not pass init validation"""
    with pytest.raises(ValueError):
        HierarchicalQuery(**query_params)


@pytest.fixture
def a_qido(requests_mock) -> Iterator[QidoRS]:
    """QIDO-RS search with faked urls"""
    with QidoRS(url=requests_mock.url + "/qido") as qido:
        yield qido


def test_qido_searcher(requests_mock, a_qido):
    set_mock_response(requests_mock, QIDO_RS_STUDY_LEVEL)
    result = a_qido.find_studies(HierarchicalQuery())
    assert len(result) == 3


def test_qido_searcher_204(requests_mock, a_qido):
    """QIDO-RS servers should return http 204 for queries with 0 results.
    This should be handled without raising exceptions. Recreates issue 47
    """
    set_mock_response(requests_mock, QIDO_RS_204_NO_RESULTS)
    result = a_qido.find_studies(HierarchicalQuery())
    assert len(result) == 0


def test_ensure_query_type(a_qido):
    """Exposes bug where Series level Relational query calles a study url"""
    ensured = ensure_query_type(Query(AccessionNumber="123", query_level=QueryLevels.SERIES))
    assert ensured.uri_base() == "/series"


def test_mop_up(a_qido):
    """Checks previously uncovered parts"""
    assert RelationalQuery(query_level=QueryLevels.INSTANCE).uri_base()

    with pytest.raises(ValidationError):  # relational at study level makes no sense
        assert RelationalQuery(query_level=QueryLevels.STUDY)

    assert RelationalQuery(query_level=QueryLevels.INSTANCE, StudyInstanceUID="123").uri_base()

    with pytest.raises(ValidationError):
        assert RelationalQuery(query_level="unknown")

    query = HierarchicalQuery(
        StudyInstanceUID="234",
        SeriesInstanceUID="123",
        query_level=QueryLevels.INSTANCE,
    )
    assert query.uri_base()
    assert query.uri_search_params() == {}

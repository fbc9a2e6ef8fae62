"""Client features for users of dicomtrolley and dicomweb-client (issue 16), over the wire.

Against :class:`aqido.testing.FakeArchive` on 127.0.0.1: ``additional_params`` on the
``search_for_*`` methods (async and blocking), ``extra_params`` through paging and a
crawl, ``permissive_uid`` on the clients and ``--permissive-uids`` on the command line
(an archive whose UIDs are not PS3.5-conformant, crawled end to end), and explicit
``Retry`` statuses.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aqido import (
    AsyncQidoRS,
    CrawlIncompleteError,
    HierarchicalQuery,
    HTTPStatusError,
    InvalidQueryError,
    QidoRS,
    QueryLevel,
    QueryTypeError,
    Retry,
)
from aqido._dicomweb import dicomweb_query
from aqido.cli import EXIT_OK, EXIT_USAGE, main
from aqido.retry import DEFAULT_RETRY_STATUSES
from aqido.testing import FakeArchive, SyntheticArchive

pytestmark = pytest.mark.anyio

PARAMS = {"key1": ["value1", "value2"], "key2": "value3"}
SENT = "key1=value1&key1=value2&key2=value3"

#: An archive as they exist in the field: leading zeros, letters, dashes in UIDs.
ODD_STUDIES = ("01.2.ABC", "2.25.x-1")


def _instance(study: str, series: int, number: int, patient: str) -> dict[str, Any]:
    return {
        "0020000D": {"vr": "UI", "Value": [study]},
        "0020000E": {"vr": "UI", "Value": [f"{study}.S{series}"]},
        "00080018": {"vr": "UI", "Value": [f"{study}.S{series}.0{number}"]},
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "00100020": {"vr": "LO", "Value": [patient]},
        "00080020": {"vr": "DA", "Value": ["20240102"]},
    }


ODD_CONTENT = [
    _instance(study, series, number, f"P{i}")
    for i, study in enumerate(ODD_STUDIES)
    for series in (1, 2)
    for number in (1, 2, 3)
]


@pytest.fixture
async def odd() -> AsyncIterator[FakeArchive]:
    async with FakeArchive(ODD_CONTENT, unknown_attributes="ignore") as archive:
        yield archive


def _tree(studies: list[Any]) -> dict[str, dict[str, int]]:
    return {
        study.StudyInstanceUID: {s.SeriesInstanceUID: len(s.instances) for s in study.series}
        for study in studies
    }


EXPECTED_TREE = {study: {f"{study}.S1": 3, f"{study}.S2": 3} for study in ODD_STUDIES}


# --- additional_params / extra_params --------------------------------------------------------


async def test_additional_params_on_every_search_for_method(odd: FakeArchive) -> None:
    async with AsyncQidoRS(odd.url) as qido:
        studies = await qido.search_for_studies(additional_params=PARAMS)
        series = await qido.search_for_series(additional_params=PARAMS)
        instances = await qido.search_for_instances(additional_params=PARAMS)
    assert (len(studies), len(series), len(instances)) == (2, 4, 12)
    sent = [(r.path, r.query_string) for r in odd.requests]
    assert sent == [
        ("/dicom-web/studies", SENT),
        ("/dicom-web/series", SENT),
        ("/dicom-web/instances", SENT),
    ]


async def test_additional_params_come_after_aqidos_own_and_follow_every_page(
    odd: FakeArchive,
) -> None:
    async with AsyncQidoRS(odd.url) as qido:
        found = await qido.search_for_instances(
            limit=5, fields=["PatientID"], additional_params={"tenant": "A"}, get_remaining=True
        )
    assert len(found) == 12
    assert [r.query_string for r in odd.requests] == [
        "includefield=PatientID&limit=5&tenant=A",
        "includefield=PatientID&limit=5&offset=5&tenant=A",
        "includefield=PatientID&limit=5&offset=10&tenant=A",
    ]


async def test_get_remaining_results_carry_every_pages_warnings() -> None:
    # they carried none: a 'fuzzymatching is not supported' warning was only logged
    synthetic = SyntheticArchive(seed=2, studies=5)
    async with (
        FakeArchive(synthetic, fuzzy_warning=True, max_results=2) as archive,
        AsyncQidoRS(archive.url) as qido,
    ):
        found = await qido.search_for_studies(fuzzymatching=True, get_remaining=True)
    assert len(found) == 5
    assert len(archive.requests) == 3
    texts = [w.text for w in found.warnings]
    assert texts[0].startswith("The fuzzymatching parameter is not supported")
    assert texts[1:] == [
        "There are 3 additional results that can be requested",
        "There are 1 additional results that can be requested",
    ]
    assert (found.truncated, found.possibly_truncated, found.additional_results) == (
        False,
        False,
        None,
    )


def test_additional_params_with_the_blocking_client() -> None:
    with (
        FakeArchive(ODD_CONTENT, unknown_attributes="ignore").run_in_thread() as archive,
        QidoRS(archive.url) as qido,
    ):
        assert len(qido.search_for_studies(additional_params=PARAMS)) == 2
        assert len(qido.search_for_series(additional_params=PARAMS)) == 4
        assert len(qido.search_for_instances(additional_params=PARAMS)) == 12
        assert [r.query_string for r in archive.requests] == [SENT] * 3


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"limit": "5"}, "a parameter aqido sets itself"),
        ({"includefield": "all"}, "a parameter aqido sets itself"),
        ({"PatientID": "P1"}, "is a DICOM attribute"),
        ({"k": "a\r\nX-Injected: 1"}, "control character"),
        ({"k": 5}, "is not a str"),
    ],
)
async def test_bad_additional_params_are_refused_before_any_request(
    odd: FakeArchive, params: dict[str, Any], error: str
) -> None:
    async with AsyncQidoRS(odd.url) as qido:
        with pytest.raises(InvalidQueryError, match=error):
            await qido.search_for_studies(additional_params=params)
    assert odd.requests == []


async def test_extra_params_of_a_crawl_reach_every_request(odd: FakeArchive) -> None:
    query = HierarchicalQuery(extra_params={"tenant": "A"}, permissive_uid=True)
    async with AsyncQidoRS(odd.url) as qido:
        studies = [study async for study in qido.crawl(query)]
    assert _tree(studies) == EXPECTED_TREE
    assert len(odd.requests) == 1 + 2 + 4  # studies, series of each study, instances of each
    assert all(r.query_string.endswith("tenant=A") for r in odd.requests)


# --- permissive_uid ----------------------------------------------------------------------------


async def test_a_strict_client_refuses_non_conformant_uids_before_any_request(
    odd: FakeArchive,
) -> None:
    async with AsyncQidoRS(odd.url) as qido:
        with pytest.raises(InvalidQueryError, match="permissive_uid=True"):
            await qido.search_for_series("01.2.ABC")
        with pytest.raises(InvalidQueryError, match="permissive_uid=True"):
            await qido.search({"query_level": "SERIES", "StudyInstanceUID": "01.2.ABC"})
    assert odd.requests == []


async def test_a_permissive_client_searches_by_non_conformant_uids(odd: FakeArchive) -> None:
    async with AsyncQidoRS(odd.url, permissive_uid=True) as qido:
        series = await qido.search_for_series("01.2.ABC")
        instances = await qido.search_for_instances("01.2.ABC", "01.2.ABC.S2")
        relational = await qido.search_for_instances(
            search_filters={"SeriesInstanceUID": "2.25.x-1.S1"}
        )
        from_dict = await qido.search({"query_level": "INSTANCE", "StudyInstanceUID": "2.25.x-1"})
        with pytest.raises(InvalidQueryError, match="even with permissive_uid=True"):
            await qido.search_for_series("01.2/ABC")
    assert sorted(s.SeriesInstanceUID for s in series) == ["01.2.ABC.S1", "01.2.ABC.S2"]
    assert [i.SOPInstanceUID for i in instances] == [f"01.2.ABC.S2.0{n}" for n in (1, 2, 3)]
    assert len(relational) == 3
    assert len(from_dict) == 6
    assert [r.relative_url for r in odd.requests] == [
        "/dicom-web/studies/01.2.ABC/series",
        "/dicom-web/studies/01.2.ABC/series/01.2.ABC.S2/instances",
        "/dicom-web/instances?SeriesInstanceUID=2.25.x-1.S1",
        "/dicom-web/studies/2.25.x-1/instances",
    ]


async def test_a_strict_query_stays_strict_on_a_permissive_client(odd: FakeArchive) -> None:
    async with AsyncQidoRS(odd.url, permissive_uid=True) as qido:
        assert qido.permissive_uid
        # The user's own query keeps its own (strict) rules; it is built before the client sees it.
        with pytest.raises(InvalidQueryError, match="not a valid DICOM UID"):
            await qido.search(HierarchicalQuery(query_level="SERIES", StudyInstanceUID="01.2"))


async def test_a_permissive_crawl_follows_the_uids_the_server_returns(odd: FakeArchive) -> None:
    async with AsyncQidoRS(odd.url, permissive_uid=True) as qido:
        # A strict base query: the UIDs the server returns still go into the child queries.
        studies = [study async for study in qido.crawl(HierarchicalQuery())]
    assert _tree(studies) == EXPECTED_TREE


async def test_a_strict_crawl_reports_the_studies_it_cannot_follow(odd: FakeArchive) -> None:
    async with AsyncQidoRS(odd.url) as qido:
        studies: list[Any] = []

        async def collect() -> None:
            async for study in qido.crawl(depth=QueryLevel.SERIES):
                studies.append(study)

        with pytest.raises(CrawlIncompleteError) as info:
            await collect()
    assert studies == []
    messages = sorted(str(failure.error) for failure in info.value.failures)
    assert len(messages) == 2
    assert "'01.2.ABC' is not a valid DICOM UID" in messages[0]
    assert "'2.25.x-1' is not a valid DICOM UID" in messages[1]
    assert [r.path for r in odd.requests] == ["/dicom-web/studies"]


def test_the_blocking_client_and_its_crawl_are_permissive_too() -> None:
    with FakeArchive(ODD_CONTENT).run_in_thread() as archive:
        with QidoRS(archive.url, permissive_uid=True) as qido:
            assert qido.async_client.permissive_uid
            assert len(qido.search_for_series("2.25.x-1")) == 2
            assert _tree(list(qido.crawl())) == EXPECTED_TREE
        with QidoRS(archive.url) as strict, pytest.raises(InvalidQueryError):
            strict.search_for_series("2.25.x-1")


def test_permissive_uid_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="permissive_uid must be True or False"):
        AsyncQidoRS("http://127.0.0.1:9/dicom-web", permissive_uid="yes")  # type: ignore[arg-type]


async def test_uid_arguments_must_be_strings(odd: FakeArchive) -> None:
    async with AsyncQidoRS(odd.url) as qido:
        with pytest.raises(QueryTypeError, match=r"study_instance_uid: \['1.2.3'\] is not a str"):
            await qido.search_for_series(study_instance_uid=["1.2.3"])  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await qido.search_for_instances("1.2.3", 4)  # type: ignore[arg-type]
    assert odd.requests == []


async def test_an_empty_uid_argument_is_refused_not_dropped(odd: FakeArchive) -> None:
    # dropped, it searched every series / instance of the archive
    async with AsyncQidoRS(odd.url, permissive_uid=True) as qido:
        with pytest.raises(InvalidQueryError, match="study_instance_uid: the UID is empty"):
            await qido.search_for_series("")
        with pytest.raises(InvalidQueryError, match="series_instance_uid: the UID is empty"):
            await qido.search_for_instances("01.2.ABC", "")
    assert odd.requests == []


async def test_a_uid_argument_and_a_contradicting_search_filter_are_refused(
    odd: FakeArchive,
) -> None:
    # the filter was overwritten by the argument: one study's series, silently
    async with AsyncQidoRS(odd.url, permissive_uid=True) as qido:
        with pytest.raises(InvalidQueryError, match="contradicts the StudyInstanceUID argument"):
            await qido.search_for_series("01.2.ABC", search_filters={"0020000D": "2.25.x-1"})
        with pytest.raises(InvalidQueryError, match="contradicts the SeriesInstanceUID"):
            await qido.search_for_instances(
                "01.2.ABC", "01.2.ABC.S1", search_filters={"SeriesInstanceUID": "01.2.ABC.S2"}
            )
        assert odd.requests == []
        same = await qido.search_for_series(
            "01.2.ABC", search_filters={"StudyInstanceUID": "01.2.ABC"}
        )
        within = await qido.search_for_series(  # a list holding the UID narrows nothing
            "01.2.ABC", search_filters={"StudyInstanceUID": "2.25.x-1,01.2.ABC"}
        )
    assert len(same) == len(within) == 2
    assert [r.path for r in odd.requests] == ["/dicom-web/studies/01.2.ABC/series"] * 2


async def test_a_search_filter_given_as_tag_and_keyword_is_refused(odd: FakeArchive) -> None:
    # the last one won: a search for P1 answered for P0
    async with AsyncQidoRS(odd.url) as qido:
        with pytest.raises(InvalidQueryError, match="'00100020' and 'PatientID' are the same"):
            await qido.search_for_studies(search_filters={"00100020": "P0", "PatientID": "P1"})
        assert odd.requests == []
        same = await qido.search_for_studies(search_filters={"00100020": "P1", "PatientID": "P1"})
        private = {"00091001": "a", "00091003": "b"}  # two private tags: two attributes
        assert dicomweb_query(QueryLevel.STUDY, "", "", *[None] * 4, private).filters == (
            ("00091001", "a"),
            ("00091003", "b"),
        )
    assert len(same) == 1
    assert odd.requests[0].query_string == "PatientID=P1"


async def test_an_empty_search_filter_is_universal_matching() -> None:
    # PS3.18 8.3.4.1: 'StudyDescription=' returns the attribute, as includefield does
    # (dicomweb-client sends it so); a named field's '' was dropped and its attribute not
    # returned, another attribute's '' was refused
    synthetic = SyntheticArchive(seed=2, studies=3)
    patient = synthetic.studies[0].patient_id
    async with FakeArchive(synthetic) as archive, AsyncQidoRS(archive.url) as qido:
        studies = await qido.search_for_studies(
            search_filters={"StudyDescription": "", "00100030": "", "PatientID": patient}
        )
        everything = await qido.search_for_studies(
            fields=["all"], search_filters={"StudyDescription": ""}
        )
    assert [s.StudyDescription for s in studies] == [
        s.study_description for s in synthetic.studies if s.patient_id == patient
    ]
    assert all(s.PatientBirthDate is not None for s in studies)
    assert archive.requests[0].params == [
        ("PatientID", patient),
        ("includefield", "StudyDescription"),
        ("includefield", "PatientBirthDate"),
    ]
    assert len(everything) == 3
    assert archive.requests[1].query_string == "includefield=all"


@pytest.mark.parametrize(
    ("options", "refused"),
    [
        ({"fields": 5}, "fields: int"),  # a raw TypeError ('int' object is not iterable)
        ({"fields": "PatientID"}, "fields: str"),  # was "'P' is not a DICOM keyword"
        ({"search_filters": ["PatientID"]}, "search_filters: list"),  # an AttributeError
        ({"search_filters": 5}, "search_filters: int"),
    ],
)
async def test_fields_and_search_filters_of_another_type_are_type_errors(
    odd: FakeArchive, options: dict[str, Any], refused: str
) -> None:
    async with AsyncQidoRS(odd.url) as qido:
        with pytest.raises(QueryTypeError, match=refused):
            await qido.search_for_studies(**options)
    assert odd.requests == []


@pytest.mark.parametrize("key", ["PatientID", "ModalitiesInStudy", "00100020", "StudyDate"])
async def test_a_search_filter_of_none_is_refused_not_dropped(odd: FakeArchive, key: str) -> None:
    # {"PatientID": None} was the named field's default: dropped, the search returned every
    # study of the archive (dicomweb-client sends 'PatientID=None', matching nothing)
    async with AsyncQidoRS(odd.url) as qido:
        with pytest.raises(InvalidQueryError, match=rf"search_filters: '{key}' is None"):
            await qido.search_for_studies(search_filters={key: None})
        with pytest.raises(InvalidQueryError, match="is None"):
            await qido.search_for_series(search_filters={"Modality": "CT", key: None})
    assert odd.requests == []


@pytest.mark.parametrize("value", ["false", "true", 0, 1])
async def test_fuzzymatching_must_be_a_bool(odd: FakeArchive, value: object) -> None:
    # "false" is truthy: it turned fuzzy matching on
    async with AsyncQidoRS(odd.url) as qido:
        with pytest.raises(QueryTypeError, match=r"fuzzymatching: .* is not a bool"):
            await qido.search_for_studies(fuzzymatching=value)  # type: ignore[arg-type]
        await qido.search_for_studies(fuzzymatching=False)
        await qido.search_for_studies(fuzzymatching=True)
    assert [r.query_string for r in odd.requests] == ["", "fuzzymatching=true"]


@pytest.mark.parametrize(("name", "value"), [("limit", "5"), ("limit", 2.0), ("offset", "1")])
async def test_a_limit_or_offset_of_another_type_is_a_type_error(
    odd: FakeArchive, name: str, value: object
) -> None:
    # dicomweb-client raises TypeError('Argument "limit" must be an integer.')
    async with AsyncQidoRS(odd.url) as qido:
        with pytest.raises(QueryTypeError, match=f"{name}: .* is not a non-negative int"):
            await qido.search_for_studies(**{name: value})
        with pytest.raises(InvalidQueryError) as negative:
            await qido.search_for_studies(**{name: -1})
        assert not isinstance(negative.value, TypeError)  # a bad value, not a bad type
    with pytest.raises(TypeError):
        HierarchicalQuery(fuzzymatching="yes")  # type: ignore[arg-type]
    assert odd.requests == []


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err, environ={})
    return status, out.getvalue(), err.getvalue()


def test_cli_permissive_uids(tmp_path: Any) -> None:
    with FakeArchive(ODD_CONTENT).run_in_thread() as archive:
        args = ("search", archive.url, "--level", "series", "--study", "01.2.ABC")
        status, _, err = _cli(*args, "--retries", "0")
        assert status == EXIT_USAGE
        assert "'01.2.ABC' is not a valid DICOM UID" in err
        assert archive.requests == []

        status, out, err = _cli(*args, "--permissive-uids", "--format", "jsonl")
        assert (status, err) == (EXIT_OK, "")
        lines = [json.loads(line) for line in out.splitlines()]
        assert sorted(line["0020000E"]["Value"][0] for line in lines) == [
            "01.2.ABC.S1",
            "01.2.ABC.S2",
        ]

        path = tmp_path / "odd.jsonl"
        status, _, err = _cli(
            "crawl", archive.url, "--out", str(path), "--permissive-uids", "--no-progress"
        )
        assert status == EXIT_OK, err
        records = [json.loads(line) for line in path.read_text().splitlines()]
        crawled = {r["StudyInstanceUID"] for r in records if "StudyInstanceUID" in r}
        assert crawled == set(ODD_STUDIES)


# --- Retry(statuses=...) -----------------------------------------------------------------------


async def test_a_listed_408_is_retried_and_an_unlisted_one_is_not(odd: FakeArchive) -> None:
    def busy_408(url: str) -> bool:
        return url.endswith("/studies")

    from aqido.testing.archive import Fault

    odd.fail(busy_408, Fault(kind="html", status=408), times=2)
    quick = {"backoff_base": 0.001, "backoff_max": 0.002}
    async with AsyncQidoRS(odd.url, retries=Retry(**quick)) as qido:
        with pytest.raises(HTTPStatusError) as info:
            await qido.search_for_studies()
    assert info.value.status == 408
    assert len(odd.requests) == 1
    retry = Retry(statuses=DEFAULT_RETRY_STATUSES | {408}, **quick)
    async with AsyncQidoRS(odd.url, retries=retry) as qido:
        assert len(await qido.search_for_studies()) == 2
    assert [r.status for r in odd.requests] == [408, 408, 200]

"""AsyncQidoRS.crawl over a whole live server, and typed parsing of everything it returns.

The crawls run on Orthanc and on tiny_pacs (``crawled`` is parametrized by
server; Orthanc-only facts pin ``crawled`` to Orthanc).

A full crawl (studies → series → instances) must find exactly the seeded
archive, with children attached, at every depth and concurrency; and every
value of every result must parse for its VR (``.invalid`` empty), including
Orthanc's JSON numbers for IS/DS, attributes without ``Value``, person names
with Ideographic/Phonetic groups and times with fractions or only ``HHMM``.
Expected answers come from the synthetic seed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import anyio
import attrs
import pytest

from aqido.query import HierarchicalQuery, QueryLevel
from aqido.results import Dataset, Study
from aqido.values import PersonName
from tests.integration.expected import (
    check_instance_results,
    check_series_results,
    check_study,
    time_of,
    uids,
)
from tests.integration.support import SEEDED, SERVERS, Served, served

pytestmark = pytest.mark.integration

SERIES, INSTANCE = QueryLevel.SERIES, QueryLevel.INSTANCE


async def _crawl(server: Served) -> list[Study]:
    async with server.client(max_concurrency=4) as qido:
        return [study async for study in qido.crawl()]


@attrs.frozen
class Crawl:
    """One full crawl of ``server``."""

    server: Served
    studies: list[Study]


@pytest.fixture(scope="module", params=SERVERS)
def crawled(request: pytest.FixtureRequest) -> Crawl:
    """One full crawl at INSTANCE depth (the default) per server, shared by this module's tests.

    Run in its own event loop (the async tests' loops are per test).
    """
    server = served(request, request.param)
    return Crawl(server, anyio.run(_crawl, server, backend="asyncio"))


ORTHANC_ONLY = pytest.mark.parametrize("crawled", ["orthanc"], indirect=True)


def check_crawl(
    studies: list[Study], base: str, depth: QueryLevel, omits: frozenset[str] = frozenset()
) -> None:
    """``studies`` is the whole seed, once each, with every series (and instance) attached."""
    assert len(studies) == len(SEEDED.studies)
    assert sorted(uids(studies, "StudyInstanceUID")) == sorted(
        s.study_instance_uid for s in SEEDED.studies
    )
    series = [se for st in studies for se in st.series]
    assert len(series) == len(SEEDED.series)
    for study in studies:
        record = SEEDED.study(study.StudyInstanceUID)
        check_study(study, record, base, omits)
        # Hierarchical children: both servers send the parents' attributes too.
        check_series_results(study.series, record.series, SEEDED, base, omits=omits)
        for one in study.series:
            if depth is INSTANCE:
                seeded = SEEDED.series_by_uid(one.SeriesInstanceUID)
                check_instance_results(one.instances, seeded.instances, SEEDED, base, omits=omits)
            else:
                assert one.instances == ()
    instances = sum(len(se.instances) for se in series)
    assert instances == (len(SEEDED.instances) if depth is INSTANCE else 0)


def test_full_crawl_finds_exactly_the_seed(crawled: Crawl) -> None:
    check_crawl(crawled.studies, crawled.server.dicomweb_url, INSTANCE, crawled.server.omits)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("depth", "max_concurrency", "page_size"),
    [(INSTANCE, 12, 64), (SERIES, 1, None), (SERIES, 16, 100)],
)
async def test_full_crawl_at_other_depths_and_concurrency(
    server: Served, depth: QueryLevel, max_concurrency: int, page_size: int | None
) -> None:
    async with server.client() as qido:
        studies = [
            study
            async for study in qido.crawl(
                HierarchicalQuery(),
                depth=depth,
                max_concurrency=max_concurrency,
                page_size=page_size,
            )
        ]
    check_crawl(studies, server.dicomweb_url, depth, server.omits)


def _datasets(studies: list[Study]) -> Iterator[Dataset]:
    for study in studies:
        yield study
        for series in study.series:
            yield series
            yield from series.instances


def test_every_value_of_a_full_crawl_parses(crawled: Crawl) -> None:
    datasets = list(_datasets(crawled.studies))
    assert len(datasets) == len(SEEDED.studies) + len(SEEDED.series) + len(SEEDED.instances)
    for ds in datasets:
        assert ds.invalid == (), ds
        for key in ds:
            element = ds.element(key)
            value = ds[key]
            if element.values:  # every value sent reads as a typed, non-empty value
                assert value is not None, (key, element.json)
            else:  # both servers send empty attributes without "Value"
                assert element.json == {"vr": element.vr}
                assert value is None


def _by_uid(crawled: list[Study]) -> dict[str, Study]:
    return {str(s.StudyInstanceUID): s for s in crawled}


def test_times_with_fractions_and_hhmm(crawled: Crawl) -> None:
    studies = _by_uid(crawled.studies)
    fractions = [s for s in SEEDED.studies if "." in s.study_time]
    short = [s for s in SEEDED.studies if len(s.study_time) == 4]
    assert fractions
    assert short
    for record in fractions:
        study = studies[record.study_instance_uid]
        assert study.StudyTime == time_of(record.study_time)
        assert study.StudyTime.microsecond == int(record.study_time[7:].ljust(6, "0"))
        assert study.element("StudyTime").values == (record.study_time,)  # kept as stored
        for series in study.series:
            assert series["StudyTime"] == study.StudyTime
    assert any(studies[r.study_instance_uid].StudyTime.microsecond for r in fractions)
    for record in short:
        time = studies[record.study_instance_uid].StudyTime
        assert time == dt.time(int(record.study_time[:2]), int(record.study_time[2:]))


def test_person_names_with_ideographic_and_phonetic_groups(crawled: Crawl) -> None:
    studies = _by_uid(crawled.studies)
    three = [s for s in SEEDED.studies if s.patient_name.count("=") == 2]
    two = [s for s in SEEDED.studies if s.patient_name.count("=") == 1]
    assert three
    assert two
    for record in three:
        name = studies[record.study_instance_uid].PatientName
        assert isinstance(name, PersonName)
        assert name == PersonName("Yamada^Tarou", "山田^太郎", "やまだ^たろう")
        assert name.components("ideographic")[:2] == ("山田", "太郎")
        assert name.components("phonetic")[:2] == ("やまだ", "たろう")
        assert (name.family, name.given) == ("Yamada", "Tarou")
    for record in two:
        name = studies[record.study_instance_uid].PatientName
        assert isinstance(name, PersonName)
        alphabetic, ideographic = record.patient_name.split("=")
        assert (name.alphabetic, name.ideographic, name.phonetic) == (alphabetic, ideographic, "")
        instance = studies[record.study_instance_uid].series[0].instances[0]
        assert instance["PatientName"] == name
    doctor = next(s for s in SEEDED.studies if s.referring_physician_name.count("^") == 3)
    referring = studies[doctor.study_instance_uid].ReferringPhysicianName
    assert referring is not None
    assert referring.components() == (*doctor.referring_physician_name.split("^"), "")


@ORTHANC_ONLY  # tiny_pacs leaves out the attributes it has no value for (docs/tinypacs.md)
def test_empty_attributes_read_as_none(crawled: Crawl) -> None:
    studies = _by_uid(crawled.studies)
    cases = [
        ("PatientBirthDate", "DA", [s for s in SEEDED.studies if not s.patient_birth_date]),
        (
            "ReferringPhysicianName",
            "PN",
            [s for s in SEEDED.studies if not s.referring_physician_name],
        ),
        ("AccessionNumber", "SH", [s for s in SEEDED.studies if not s.accession_number]),
        ("PatientSex", "CS", [s for s in SEEDED.studies if not s.patient_sex]),
    ]
    for keyword, vr, records in cases:
        assert records, keyword
        for record in records:
            study = studies[record.study_instance_uid]
            assert getattr(study, keyword) is None
            assert study[keyword] is None
            assert study.element(keyword).json == {"vr": vr}
            assert study.to_json()[study.element(keyword).key] == {"vr": vr}  # round trip
            for series in study.series:
                assert series[keyword] is None


@ORTHANC_ONLY  # tiny_pacs returns no NumberOfStudyRelatedSeries and no Rows
def test_numbers_arrive_as_json_numbers_and_read_as_ints(crawled: Crawl) -> None:
    study = crawled.studies[0]
    assert study.element("NumberOfStudyRelatedSeries").values == (3,)  # a JSON number
    assert type(study.element("NumberOfStudyRelatedSeries").values[0]) is int
    series = study.series[0]
    assert series.element("SeriesNumber").values == (series.SeriesNumber,)
    assert type(series.element("SeriesNumber").values[0]) is int
    instance = series.instances[0]
    assert instance.element("InstanceNumber").json["vr"] == "IS"
    assert instance.element("Rows").json == {"vr": "US", "Value": [8]}
    assert type(instance.Rows) is int

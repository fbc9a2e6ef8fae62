"""aqido's query model against the live Orthanc: the URLs it renders find exactly the seed.

Every query kind (three hierarchical, three relational) and the matching
features (PN with ``^`` and wildcards, open and closed date ranges,
ModalitiesInStudy, UID lists, includefield, limit/offset) are sent as
``query.relative_url()``, byte for byte (``yarl.URL(..., encoded=True)``, as the
client does), so these tests prove the encoding policy on a server that does
not percent-decode.  Expected UIDs come from the synthetic records.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import aiohttp
import attrs
import pytest

from aqido.query import HierarchicalQuery, QueryLevel, RelationalQuery
from aqido.testing.orthanc import OrthancServer
from tests.integration.support import SEEDED, get_json

pytestmark = pytest.mark.integration

Query = HierarchicalQuery | RelationalQuery
STUDY, SERIES, INSTANCE = QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.INSTANCE
UID_TAG = {STUDY: "0020000D", SERIES: "0020000E", INSTANCE: "00080018"}

_study = SEEDED.studies[123]
_series = _study.series[2]
_odd_pid = next(s for s in SEEDED.studies if "/" in s.patient_id)
_accession = next(s.accession_number for s in SEEDED.studies[200:] if s.accession_number)
_three = [s.study_instance_uid for s in SEEDED.studies[5:8]]


def _studies(predicate: Any) -> set[str]:
    return {s.study_instance_uid for s in SEEDED.studies if predicate(s)}


def _date(text: str) -> dt.date:
    return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))


CASES = [
    pytest.param(
        HierarchicalQuery(PatientName="Doe^John"),
        _studies(lambda s: s.patient_name.lower() == "doe^john"),
        id="study-pn-exact-with-caret",
    ),
    pytest.param(
        HierarchicalQuery(PatientName="doe^j*"),
        _studies(lambda s: s.patient_name.lower().startswith("doe^j")),
        id="study-pn-caret-and-star",
    ),
    pytest.param(
        HierarchicalQuery(PatientName="?mith*"),
        _studies(lambda s: s.patient_name.lower()[1:].startswith("mith")),
        id="study-pn-question-mark",
    ),
    pytest.param(
        HierarchicalQuery(PatientName="Yamada^Tarou=*"),
        _studies(lambda s: s.patient_name.startswith("Yamada^Tarou=")),
        id="study-pn-component-groups",
        marks=pytest.mark.xfail(
            strict=True,
            reason="aqido percent-encodes '=' (the PN group separator) and Orthanc 1.10 does "
            "not decode it; the same value with a raw '=' matches (test_orthanc_server.py)",
        ),
    ),
    pytest.param(
        HierarchicalQuery(PatientID=_odd_pid.patient_id),
        _studies(lambda s: s.patient_id == _odd_pid.patient_id),
        id="study-patient-id-with-slash",
    ),
    pytest.param(
        HierarchicalQuery(AccessionNumber=_accession),
        _studies(lambda s: s.accession_number == _accession),
        id="study-accession",
    ),
    pytest.param(
        HierarchicalQuery(min_study_date=dt.date(2010, 1, 1), max_study_date=dt.date(2012, 12, 31)),
        _studies(lambda s: "20100101" <= s.study_date <= "20121231"),
        id="study-date-closed-range",
    ),
    pytest.param(
        HierarchicalQuery(min_study_date=dt.date(2021, 3, 1)),
        _studies(lambda s: s.study_date >= "20210301"),
        id="study-date-open-end",
    ),
    pytest.param(
        HierarchicalQuery(max_study_date=dt.date(2006, 6, 30)),
        _studies(lambda s: s.study_date <= "20060630"),
        id="study-date-open-start",
    ),
    pytest.param(
        HierarchicalQuery(
            min_study_date=_date(_study.study_date), max_study_date=_date(_study.study_date)
        ),
        _studies(lambda s: s.study_date == _study.study_date),
        id="study-date-single-day",
    ),
    pytest.param(
        HierarchicalQuery(ModalitiesInStudy=["MR", "PT"]),
        _studies(lambda s: {"MR", "PT"} & set(s.modalities_in_study)),
        id="study-modalities-in-study-list",
    ),
    pytest.param(
        HierarchicalQuery(ModalitiesInStudy="US", PatientName="*e*"),
        _studies(lambda s: "US" in s.modalities_in_study and "e" in s.patient_name.lower()),
        id="study-modalities-and-name",
    ),
    pytest.param(
        HierarchicalQuery(StudyInstanceUID=_three),
        set(_three),
        id="study-uid-list",
    ),
    pytest.param(
        HierarchicalQuery(query_level=SERIES, StudyInstanceUID=_study.study_instance_uid),
        {s.series_instance_uid for s in _study.series},
        id="hierarchical-series",
    ),
    pytest.param(
        HierarchicalQuery(
            query_level=SERIES,
            StudyInstanceUID=_study.study_instance_uid,
            Modality=_series.modality,
        ),
        {s.series_instance_uid for s in _study.series if s.modality == _series.modality},
        id="hierarchical-series-by-modality",
    ),
    pytest.param(
        HierarchicalQuery(
            query_level=INSTANCE,
            StudyInstanceUID=_study.study_instance_uid,
            SeriesInstanceUID=_series.series_instance_uid,
        ),
        {i.sop_instance_uid for i in _series.instances},
        id="hierarchical-instances",
    ),
    pytest.param(
        RelationalQuery(query_level=SERIES, Modality="XA"),
        {s.series_instance_uid for s in SEEDED.series if s.modality == "XA"},
        id="relational-series",
    ),
    pytest.param(
        RelationalQuery(
            query_level=SERIES, filters={"BodyPartExamined": "KNEE"}, PatientName="*n*"
        ),
        {
            s.series_instance_uid
            for s in SEEDED.series
            if s.body_part_examined == "KNEE"
            and "n" in SEEDED.studies[s.study_index].patient_name.lower()
        },
        id="relational-series-with-filters",
    ),
    pytest.param(
        RelationalQuery(query_level=INSTANCE, StudyInstanceUID=_study.study_instance_uid),
        {i.sop_instance_uid for i in _study.instances},
        id="relational-study-instances",
    ),
    pytest.param(
        RelationalQuery(query_level=INSTANCE, SeriesInstanceUID=_series.series_instance_uid),
        {i.sop_instance_uid for i in _series.instances},
        id="relational-instances",
    ),
    pytest.param(
        RelationalQuery(query_level=INSTANCE, StudyInstanceUID=_three),
        {i.sop_instance_uid for uid in _three for i in SEEDED.study(uid).instances},
        id="relational-instances-study-uid-list",
    ),
]


async def fetch(http: aiohttp.ClientSession, orthanc: OrthancServer, query: Query) -> Any:
    status, items, _ = await get_json(http, orthanc.dicomweb_url + query.relative_url())
    assert status == 200, query
    return items


@pytest.mark.anyio
@pytest.mark.parametrize(("query", "expected"), CASES)
async def test_query_finds_exactly_the_seeded_matches(
    orthanc: OrthancServer, http: aiohttp.ClientSession, query: Query, expected: set[str]
) -> None:
    assert expected, "a case must match something to prove anything"
    items = await fetch(http, orthanc, query)
    found = [item[UID_TAG[query.query_level]]["Value"][0] for item in items]
    assert len(found) == len(set(found))
    assert set(found) == expected


@pytest.mark.anyio
async def test_include_fields(orthanc: OrthancServer, http: aiohttp.ClientSession) -> None:
    study = next(s for s in SEEDED.studies if s.study_description and s.patient_age)
    plain = HierarchicalQuery(StudyInstanceUID=study.study_instance_uid)
    (item,) = await fetch(http, orthanc, plain)
    assert {"00101030", "00101010", "00081030"}.isdisjoint(item)
    query = attrs.evolve(plain, include_fields=["PatientWeight", "00101010", "StudyDescription"])
    (item,) = await fetch(http, orthanc, query)
    assert item["00101030"] == {"vr": "DS", "Value": [float(study.patient_weight)]}
    assert item["00101010"] == {"vr": "AS", "Value": [study.patient_age]}
    assert item["00081030"] == {"vr": "LO", "Value": [study.study_description]}


@pytest.mark.anyio
async def test_limit_offset_pages_through_the_whole_archive(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    query = HierarchicalQuery(limit=64)
    seen: list[str] = []
    for page in range(10):  # bounded: 300 studies in pages of 64 need 5 full + 1 empty
        items = await fetch(http, orthanc, attrs.evolve(query, offset=page * 64))
        if not items:
            break
        seen += [item["0020000D"]["Value"][0] for item in items]
    assert len(seen) == len(set(seen)) == len(SEEDED.studies)
    assert set(seen) == {s.study_instance_uid for s in SEEDED.studies}

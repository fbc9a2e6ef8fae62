"""aqido.query queries sent verbatim to the FakeArchive, standard and Orthanc-like.

``query.query_string()`` leaves the DICOM matching characters unescaped, so the
same query must find the same studies on a server that percent-decodes and on
one that does not (Orthanc 1.10).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
import yarl

from aqido.query import HierarchicalQuery, QueryLevel, RelationalQuery
from aqido.testing import FakeArchive, SyntheticArchive

pytestmark = pytest.mark.anyio

SYNTH = SyntheticArchive(seed=8, studies=40, series_per_study=3, instances_per_series=2)


@pytest.fixture(params=["standard", "orthanc"])
async def archive(request: pytest.FixtureRequest) -> AsyncIterator[FakeArchive]:
    fake = FakeArchive(SYNTH) if request.param == "standard" else FakeArchive.orthanc_like(SYNTH)
    async with fake:
        yield fake


async def search(archive: FakeArchive, query: HierarchicalQuery | RelationalQuery) -> list[str]:
    url = yarl.URL(archive.url + query.relative_url(), encoded=True)
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.read()
    key = {"STUDY": "0020000D", "SERIES": "0020000E", "INSTANCE": "00080018"}
    return [item[key[query.query_level.name]]["Value"][0] for item in json.loads(body or b"[]")]


async def test_patient_name_wildcard_and_date_range(archive: FakeArchive) -> None:
    query = HierarchicalQuery(
        PatientName="Doe^J*", min_study_date=dt.date(2008, 1, 1), max_study_date="2020-12-31"
    )

    def name_matches(name: str) -> bool:
        if archive.case_sensitive:
            return name.startswith("Doe^J")
        return name.lower().startswith("doe^j")  # Orthanc-like: case-insensitive

    expected = [
        s.study_instance_uid
        for s in SYNTH.studies
        if name_matches(s.patient_name) and "20080101" <= s.study_date <= "20201231"
    ]
    assert expected
    assert await search(archive, query) == expected


async def test_patient_id_with_slash(archive: FakeArchive) -> None:
    odd = next(s for s in SYNTH.studies if "/" in s.patient_id)
    found = await search(archive, HierarchicalQuery(PatientID=odd.patient_id))
    assert found == [s.study_instance_uid for s in SYNTH.studies if s.patient_id == odd.patient_id]


async def test_hierarchical_and_relational_levels(archive: FakeArchive) -> None:
    study = SYNTH.studies[4]
    series = await search(
        archive,
        HierarchicalQuery(query_level=QueryLevel.SERIES, StudyInstanceUID=study.study_instance_uid),
    )
    assert series == [s.series_instance_uid for s in study.series]
    mr = await search(archive, RelationalQuery(query_level=QueryLevel.SERIES, Modality="MR"))
    assert mr == [s.series_instance_uid for s in SYNTH.series if s.modality == "MR"]
    uids = [SYNTH.studies[1].study_instance_uid, SYNTH.studies[3].study_instance_uid]
    instances = await search(
        archive, RelationalQuery(query_level=QueryLevel.INSTANCE, StudyInstanceUID=uids, limit=5)
    )
    both = SYNTH.studies[1].instances + SYNTH.studies[3].instances
    assert instances == [i.sop_instance_uid for i in both[:5]]


async def test_modalities_list(archive: FakeArchive) -> None:
    found = await search(archive, HierarchicalQuery(ModalitiesInStudy=["CT", "MR"]))
    assert found == [
        s.study_instance_uid for s in SYNTH.studies if {"CT", "MR"} & set(s.modalities_in_study)
    ]

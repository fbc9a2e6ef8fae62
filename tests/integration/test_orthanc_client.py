"""AsyncQidoRS against the live Orthanc: search, paging, crawl, auth, stale keep-alive.

Expected answers come from the synthetic records the server was seeded with.
"""

from __future__ import annotations

import asyncio

import pytest

from aqido.client import AsyncQidoRS
from aqido.errors import UnauthorizedError
from aqido.query import HierarchicalQuery, QueryLevel, RelationalQuery
from aqido.testing.orthanc import OrthancServer
from tests.integration.support import AUTH_PASSWORD, AUTH_USER, AUTHED, SEEDED

pytestmark = pytest.mark.integration

ALL_STUDIES = {s.study_instance_uid for s in SEEDED.studies}


@pytest.mark.anyio
async def test_search_all_studies_and_a_study_subtree(orthanc: OrthancServer) -> None:
    async with AsyncQidoRS(orthanc.dicomweb_url + "/") as qido:
        studies = await qido.search(HierarchicalQuery())
        assert {s.StudyInstanceUID for s in studies} == ALL_STUDIES
        assert studies.warnings == ()

        record = SEEDED.studies[42]
        series = await qido.search(
            HierarchicalQuery(
                query_level=QueryLevel.SERIES, StudyInstanceUID=record.study_instance_uid
            )
        )
        assert {s.SeriesInstanceUID for s in series} == {
            s.series_instance_uid for s in record.series
        }
        instances = await qido.search(
            RelationalQuery(query_level="INSTANCE", StudyInstanceUID=record.study_instance_uid)
        )
        assert len(instances) == len(record.series) * 2


@pytest.mark.anyio
async def test_person_name_match_reaches_orthanc_unescaped(orthanc: OrthancServer) -> None:
    record = next(s for s in SEEDED.studies if "^" in s.patient_name)
    family = record.patient_name.split("^")[0]
    expected = {
        s.study_instance_uid
        for s in SEEDED.studies
        if s.patient_name.lower().startswith((family + "^").lower())
    }
    async with AsyncQidoRS(orthanc.dicomweb_url) as qido:
        found = await qido.search(HierarchicalQuery(PatientName=f"{family}^*"))
    assert {s.StudyInstanceUID for s in found} == expected
    assert record.study_instance_uid in expected


@pytest.mark.anyio
async def test_iter_search_pages_the_whole_archive(orthanc: OrthancServer) -> None:
    async with AsyncQidoRS(orthanc.dicomweb_url) as qido:
        uids = [
            s.StudyInstanceUID async for s in qido.iter_search(HierarchicalQuery(), page_size=70)
        ]
    assert len(uids) == len(ALL_STUDIES)
    assert set(uids) == ALL_STUDIES


@pytest.mark.anyio
async def test_crawl_part_of_the_archive(orthanc: OrthancServer) -> None:
    dates = sorted(s.study_date for s in SEEDED.studies)
    low, high = dates[0], dates[24]
    query = HierarchicalQuery(min_study_date=low, max_study_date=high)
    expected = {s.study_instance_uid: s for s in SEEDED.studies if low <= s.study_date <= high}
    async with AsyncQidoRS(orthanc.dicomweb_url, max_concurrency=4) as qido:
        crawled = [study async for study in qido.crawl(query)]
    assert {s.StudyInstanceUID for s in crawled} == set(expected)
    for study in crawled:
        record = expected[study.StudyInstanceUID]
        assert {
            series.SeriesInstanceUID: {i.SOPInstanceUID for i in series.instances}
            for series in study.series
        } == {
            series.series_instance_uid: {i.sop_instance_uid for i in series.instances}
            for series in record.series
        }


@pytest.mark.anyio
async def test_basic_auth(orthanc_auth: OrthancServer) -> None:
    url = orthanc_auth.dicomweb_url
    async with AsyncQidoRS(url, auth=(AUTH_USER, AUTH_PASSWORD)) as qido:
        assert len(await qido.search(HierarchicalQuery())) == len(AUTHED.studies)
    with_password = url.replace("http://", f"http://{AUTH_USER}:{AUTH_PASSWORD}@")
    async with AsyncQidoRS(with_password) as qido:
        assert len(await qido.search(HierarchicalQuery())) == len(AUTHED.studies)
    async with AsyncQidoRS(url, auth=(AUTH_USER, "wrong")) as qido:
        with pytest.raises(UnauthorizedError) as info:
            await qido.search(HierarchicalQuery())
    assert info.value.status == 401
    assert AUTH_PASSWORD not in str(info.value)


@pytest.mark.anyio
async def test_connection_kept_alive_past_orthancs_timeout_still_works(
    orthanc: OrthancServer,
) -> None:
    # Orthanc closes idle keep-alive connections after about 1 s; the next request on the
    # pooled connection must be re-sent transparently, even with retries disabled.
    async with AsyncQidoRS(orthanc.dicomweb_url, retries=0, max_concurrency=1) as qido:
        query = HierarchicalQuery(PatientID=SEEDED.studies[0].patient_id)
        assert await qido.search(query)
        await asyncio.sleep(1.5)
        assert await qido.search(query)

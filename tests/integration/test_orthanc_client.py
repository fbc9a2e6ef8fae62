"""AsyncQidoRS against live servers: search, paging, crawl (Orthanc and tiny_pacs), auth and
stale keep-alive (Orthanc).

Expected answers come from the synthetic records the servers were seeded with.
"""

from __future__ import annotations

import asyncio
import base64
import logging

import pytest

from aqido.client import AsyncQidoRS
from aqido.errors import UnauthorizedError
from aqido.query import HierarchicalQuery
from aqido.testing.orthanc import OrthancServer
from tests.integration.support import (
    AUTH_PASSWORD,
    AUTH_USER,
    AUTHED,
    SEEDED,
    Served,
    on_servers,
)

pytestmark = pytest.mark.integration

ALL_STUDIES = {s.study_instance_uid for s in SEEDED.studies}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "server", on_servers(tinypacs="tiny_pacs reads * as a literal character"), indirect=True
)
async def test_person_name_match_reaches_the_server_unescaped(server: Served) -> None:
    record = next(s for s in SEEDED.studies if "^" in s.patient_name)
    family = record.patient_name.split("^")[0]
    expected = {
        s.study_instance_uid
        for s in SEEDED.studies
        if s.patient_name.lower().startswith((family + "^").lower())
    }
    async with server.client() as qido:
        found = await qido.search(HierarchicalQuery(PatientName=f"{family}^*"))
    assert {s.StudyInstanceUID for s in found} == expected
    assert record.study_instance_uid in expected


@pytest.mark.anyio
@pytest.mark.parametrize("page_size", [3, 70, 299, 300])
async def test_iter_search_pages_the_whole_archive(server: Served, page_size: int) -> None:
    async with server.client() as qido:
        unpaged = await qido.search(HierarchicalQuery())
        paged = [
            s.StudyInstanceUID
            async for s in qido.iter_search(HierarchicalQuery(), page_size=page_size)
        ]
    assert len(paged) == len(set(paged)) == len(ALL_STUDIES)
    assert set(paged) == {s.StudyInstanceUID for s in unpaged} == ALL_STUDIES


@pytest.mark.anyio
async def test_crawl_part_of_the_archive(server: Served) -> None:
    dates = sorted(s.study_date for s in SEEDED.studies)
    low, high = dates[0], dates[24]
    query = HierarchicalQuery(min_study_date=low, max_study_date=high)
    expected = {s.study_instance_uid: s for s in SEEDED.studies if low <= s.study_date <= high}
    async with server.client(max_concurrency=4) as qido:
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


SECRETS = (
    AUTH_PASSWORD,
    "wrong-Pa55",
    base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode(),
    base64.b64encode(f"{AUTH_USER}:wrong-Pa55".encode()).decode(),
)


def _with_userinfo(url: str, user: str, password: str) -> str:
    return url.replace("http://", f"http://{user}:{password}@")


@pytest.mark.anyio
async def test_basic_auth(orthanc_auth: OrthancServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aqido")
    url = orthanc_auth.dicomweb_url
    expected = sorted(s.study_instance_uid for s in AUTHED.studies)
    errors: list[UnauthorizedError] = []
    clients = [
        AsyncQidoRS(url),  # no credentials
        AsyncQidoRS(url, auth=(AUTH_USER, "wrong-Pa55")),
        AsyncQidoRS(_with_userinfo(url, AUTH_USER, "wrong-Pa55")),
    ]
    for client in clients:
        async with client:
            with pytest.raises(UnauthorizedError) as info:
                await client.search(HierarchicalQuery())
        errors.append(info.value)
    good = [
        AsyncQidoRS(url, auth=(AUTH_USER, AUTH_PASSWORD)),
        AsyncQidoRS(_with_userinfo(url, AUTH_USER, AUTH_PASSWORD)),
    ]
    for client in good:
        async with client:
            studies = await client.search(HierarchicalQuery())
            assert sorted(s.StudyInstanceUID for s in studies) == expected
            series = await client.search_for_series(expected[0])
            assert len(series) == len(AUTHED.study(expected[0]).series)

    for error in errors:
        assert error.status == 401
        assert error.url == f"{url}/studies"
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [e.url for e in errors]
    texts += [repr(c) for c in clients + good] + [c.url for c in clients + good]
    texts += [record.getMessage() for record in caplog.records]
    assert any(f"{url}/studies -> 401" in text for text in texts)  # the log was captured
    assert any(f"{url}/studies -> 200" in text for text in texts)
    for text in texts:
        assert not any(secret in text for secret in SECRETS), text
        assert f"{AUTH_USER}:" not in text, text
    assert "auth=<basic>" in repr(good[1])  # userinfo in the URL became basic auth


@pytest.mark.anyio
@pytest.mark.parametrize("retries", [None, "default"])
async def test_connection_kept_alive_past_orthancs_timeout_still_works(
    orthanc: OrthancServer, caplog: pytest.LogCaptureFixture, retries: str | None
) -> None:
    # Orthanc closes idle keep-alive connections after about 1 s; the next request on the
    # pooled connection must be re-sent transparently, with or without retries.
    caplog.set_level(logging.INFO, logger="aqido")
    options = {} if retries == "default" else {"retries": retries}
    record = SEEDED.studies[0]
    async with AsyncQidoRS(orthanc.dicomweb_url, max_concurrency=1, **options) as qido:
        query = HierarchicalQuery(PatientID=record.patient_id)
        first = await qido.search(query)
        await asyncio.sleep(1.5)
        second = await qido.search(query)
    assert record.study_instance_uid in {s.StudyInstanceUID for s in first}
    assert first == second
    assert [r.getMessage() for r in caplog.records] == []  # no retry, no warning

"""AsyncQidoRS against aqido.testing.FakeArchive: realistic data, caps, quirks and faults.

Expected answers come from the SyntheticArchive records, never from the server.
"""

from __future__ import annotations

from typing import Any

import pytest

from aqido.client import AsyncQidoRS
from aqido.errors import InvalidResponseError
from aqido.query import HierarchicalQuery, QueryLevel
from aqido.results import Study
from aqido.retry import Retry
from aqido.testing import FakeArchive, Faults, SyntheticArchive

SYNTH = SyntheticArchive(seed=11, studies=40, series_per_study=3, instances_per_series=2)
ALL = {s.study_instance_uid for s in SYNTH.studies}
QUICK = Retry(max_attempts=8, backoff_base=0.001, backoff_max=0.002)
TRANSIENT = ("429", "503", "500", "disconnect", "truncated")


def expected_tree() -> dict[str, dict[str, set[str]]]:
    return {
        study.study_instance_uid: {
            series.series_instance_uid: {i.sop_instance_uid for i in series.instances}
            for series in study.series
        }
        for study in SYNTH.studies
    }


def tree_of(studies: list[Study]) -> dict[str, dict[str, set[str]]]:
    out: dict[str, dict[str, set[str]]] = {}
    for study in studies:
        assert study.StudyInstanceUID is not None
        assert study.StudyInstanceUID not in out, "study yielded twice"
        out[study.StudyInstanceUID] = {
            str(series.SeriesInstanceUID): {str(i.SOPInstanceUID) for i in series.instances}
            for series in study.series
        }
    return out


async def crawl_all(url: str, **options: Any) -> list[Study]:
    async with AsyncQidoRS(url, **options) as qido:
        return [study async for study in qido.crawl(HierarchicalQuery())]


@pytest.mark.anyio
async def test_crawl_matches_the_synthetic_archive() -> None:
    async with FakeArchive(SYNTH) as archive:
        studies = await crawl_all(archive.url, retries=0)
    assert tree_of(studies) == expected_tree()


@pytest.mark.anyio
async def test_crawl_through_transient_faults_gives_the_same_result() -> None:
    faults = Faults(rate=0.2, kinds=TRANSIENT, seed=5, retry_after="0")
    async with FakeArchive(SYNTH, faults=faults) as archive:
        studies = await crawl_all(archive.url, retries=QUICK, max_concurrency=4)
        injected = [r for r in archive.requests if r.fault is not None]
    assert tree_of(studies) == expected_tree()
    assert len(injected) > 10
    assert {r.fault for r in injected} >= {"429", "503", "500"}


@pytest.mark.anyio
async def test_crawl_respects_the_concurrency_limit() -> None:
    async with FakeArchive(SYNTH, latency=0.005) as archive:
        await crawl_all(archive.url, retries=0, max_concurrency=3)
        assert archive.peak_concurrency == 3


@pytest.mark.anyio
async def test_iter_search_follows_a_capped_server_with_warnings() -> None:
    async with (
        FakeArchive(SYNTH, max_results=7) as archive,
        AsyncQidoRS(archive.url, retries=0) as qido,
    ):
        first = await qido.search(HierarchicalQuery())
        uids = [s.StudyInstanceUID async for s in qido.iter_search(HierarchicalQuery())]
    assert len(first) == 7
    assert first.truncated
    assert first.additional_results == 33
    assert len(uids) == 40
    assert set(uids) == ALL


@pytest.mark.anyio
@pytest.mark.parametrize("empty_status", [200, 204])
async def test_iter_search_pages_below_a_silent_cap(empty_status: Any) -> None:
    async with (
        FakeArchive(
            SYNTH, max_results=10, truncation_warning=False, empty_status=empty_status
        ) as archive,
        AsyncQidoRS(archive.url, retries=0) as qido,
    ):
        uids = [
            s.StudyInstanceUID async for s in qido.iter_search(HierarchicalQuery(), page_size=6)
        ]
    assert sorted(uids) == sorted(ALL)


@pytest.mark.anyio
async def test_server_ignoring_offset_is_detected() -> None:
    async with (
        FakeArchive(SYNTH, ignore_offset=True) as archive,
        AsyncQidoRS(archive.url, retries=0) as qido,
    ):
        with pytest.raises(InvalidResponseError, match="offset"):
            await qido.search_for_studies(limit=10, get_remaining=True)


@pytest.mark.anyio
async def test_orthanc_like_server_gets_dicom_matching_characters_raw() -> None:
    record = next(s for s in SYNTH.studies if "^" in s.patient_name)
    family = record.patient_name.split("^")[0]
    expected = {
        s.study_instance_uid
        for s in SYNTH.studies
        if s.patient_name.lower().startswith(family.lower() + "^")
    }
    async with (
        FakeArchive.orthanc_like(SYNTH) as archive,
        AsyncQidoRS(archive.url, retries=0) as qido,
    ):
        found = await qido.search(HierarchicalQuery(PatientName=f"{family.upper()}^*"))
        series = await qido.search(
            HierarchicalQuery(
                query_level=QueryLevel.SERIES, StudyInstanceUID=record.study_instance_uid
            )
        )
    assert {s.StudyInstanceUID for s in found} == expected
    assert len(series) == 3


@pytest.mark.anyio
async def test_fake_archive_auth() -> None:
    async with (
        FakeArchive(SYNTH, basic_auth=("ann", "pw-123")) as archive,
        AsyncQidoRS(archive.url, auth=("ann", "pw-123")) as qido,
    ):
        assert len(await qido.search(HierarchicalQuery())) == 40
    async with (
        FakeArchive(SYNTH, bearer_token="tok-9") as archive,
        AsyncQidoRS(archive.url, auth="tok-9") as qido,
    ):
        assert len(await qido.search(HierarchicalQuery())) == 40

"""AsyncQidoRS against a real in-process server on 127.0.0.1: searching, paging, crawling."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from qido_server import (
    MiniArchive,
    repeat_at_end,
    repeat_in_place,
    series_uid,
    sop_uid,
    study_uid,
)

from aqido.client import AsyncQidoRS, SearchResults
from aqido.errors import CrawlIncompleteError, InvalidQueryError, InvalidResponseError
from aqido.query import HierarchicalQuery, QueryLevel, RelationalQuery
from aqido.results import Instance, Series, Study

FAST = {"retries": 0}


@pytest.fixture
async def archive() -> AsyncIterator[MiniArchive]:
    async with MiniArchive(studies=5, series=3, instances=2) as server:
        yield server


@pytest.fixture
async def client(archive: MiniArchive) -> AsyncIterator[AsyncQidoRS]:
    async with AsyncQidoRS(archive.url, retries=0) as qido:
        yield qido


# --- one search per query kind ----------------------------------------------------------------


@pytest.mark.anyio
async def test_search_studies(client: AsyncQidoRS, archive: MiniArchive) -> None:
    studies = await client.search(HierarchicalQuery())
    assert isinstance(studies, SearchResults)
    assert [type(s) for s in studies] == [Study] * 5
    assert [s.StudyInstanceUID for s in studies] == [study_uid(i) for i in range(5)]
    assert archive.raw_urls == ["/dicom-web/studies"]
    request = archive.requests[0]
    assert request.headers["Accept"] == "application/dicom+json, application/json"
    assert request.headers["User-Agent"].startswith("aqido/")


@pytest.mark.anyio
async def test_search_with_match_keys_sends_the_exact_query_string(
    client: AsyncQidoRS, archive: MiniArchive
) -> None:
    query = HierarchicalQuery(PatientID="PID000003", PatientName="Doe^P*", include_fields=["all"])
    studies = await client.search(query)
    # Orthanc does not percent-decode: ^ and * must reach the server raw
    assert archive.raw_urls == ["/dicom-web/studies?" + query.query_string()]
    assert "Doe^P*" in archive.raw_urls[0]
    assert [s.PatientID for s in studies] == ["PID000003"]


@pytest.mark.anyio
async def test_search_series_of_a_study(client: AsyncQidoRS, archive: MiniArchive) -> None:
    query = HierarchicalQuery(query_level=QueryLevel.SERIES, StudyInstanceUID=study_uid(1))
    series = await client.search(query)
    assert [type(s) for s in series] == [Series] * 3
    assert [s.SeriesInstanceUID for s in series] == [series_uid(1, j) for j in range(3)]
    assert archive.raw_urls == [f"/dicom-web/studies/{study_uid(1)}/series"]


@pytest.mark.anyio
async def test_search_instances_of_a_series(client: AsyncQidoRS, archive: MiniArchive) -> None:
    query = HierarchicalQuery(
        query_level="INSTANCE", StudyInstanceUID=study_uid(2), SeriesInstanceUID=series_uid(2, 1)
    )
    instances = await client.search(query)
    assert [type(i) for i in instances] == [Instance] * 2
    assert [i.SOPInstanceUID for i in instances] == [sop_uid(2, 1, 0), sop_uid(2, 1, 1)]


@pytest.mark.anyio
async def test_relational_queries(client: AsyncQidoRS, archive: MiniArchive) -> None:
    all_series = await client.search(RelationalQuery(query_level="SERIES"))
    assert len(all_series) == 15
    of_study = await client.search(
        RelationalQuery(query_level="INSTANCE", StudyInstanceUID=study_uid(0))
    )
    assert len(of_study) == 6
    everything = await client.search(RelationalQuery(query_level="INSTANCE"))
    assert len(everything) == 30
    assert archive.raw_urls == [
        "/dicom-web/series",
        f"/dicom-web/studies/{study_uid(0)}/instances",
        "/dicom-web/instances",
    ]


@pytest.mark.anyio
async def test_dicomtrolley_queries_and_dicts_are_accepted(client: AsyncQidoRS) -> None:
    from dicomtrolley.qido_rs import HierarchicalQuery as TrolleyQuery

    studies = await client.search(TrolleyQuery(PatientID="PID000004"))
    assert [s.PatientID for s in studies] == ["PID000004"]
    assert len(await client.search({"PatientID": "PID000001"})) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("empty_status", [200, 204])
async def test_no_results_204_or_empty_array(
    client: AsyncQidoRS, archive: MiniArchive, empty_status: int
) -> None:
    archive.empty_status = empty_status
    result = await client.search(HierarchicalQuery(PatientID="NOBODY"))
    assert result == []
    assert isinstance(result, SearchResults)
    assert result.warnings == ()


@pytest.mark.anyio
async def test_search_raw_gives_json_and_headers(client: AsyncQidoRS) -> None:
    raw = await client.search_raw(HierarchicalQuery(PatientID="PID000000"))
    assert raw.status == 200
    assert raw.headers["Content-Type"] == "application/dicom+json"
    assert raw.items[0]["00100020"] == {"vr": "LO", "Value": ["PID000000"]}


@pytest.mark.anyio
async def test_base_url_with_trailing_slash(archive: MiniArchive) -> None:
    async with AsyncQidoRS(archive.url + "/", retries=0) as qido:
        await qido.search(HierarchicalQuery())
    assert archive.raw_urls == ["/dicom-web/studies"]


@pytest.mark.anyio
async def test_truncation_warning_is_surfaced_on_search(
    client: AsyncQidoRS, archive: MiniArchive, caplog: pytest.LogCaptureFixture
) -> None:
    archive.cap = 2
    with caplog.at_level("WARNING", logger="aqido"):
        result = await client.search(HierarchicalQuery())
    assert len(result) == 2
    assert result.truncated
    assert result.additional_results == 3
    assert result.warnings[0].code == 299
    assert "truncated" in caplog.text
    assert "use iter_search" in caplog.text


@pytest.mark.anyio
async def test_other_warnings_are_logged_and_kept(
    client: AsyncQidoRS, archive: MiniArchive, caplog: pytest.LogCaptureFixture
) -> None:
    fuzzy = (
        "The fuzzymatching parameter is not supported. Only literal matching has been performed."
    )
    body = json.dumps(archive.studies[:1]).encode()
    archive.fail_next(
        (200, {"Content-Type": "application/dicom+json", "Warning": f'299 h "{fuzzy}"'}, body)
    )
    with caplog.at_level("WARNING", logger="aqido"):
        result = await client.search(HierarchicalQuery(fuzzymatching=True))
    assert [w.text for w in result.warnings] == [fuzzy]
    assert not result.truncated
    assert fuzzy in caplog.text


# --- paging -----------------------------------------------------------------------------------


@pytest.fixture
async def big_archive() -> AsyncIterator[MiniArchive]:
    async with MiniArchive(studies=53, series=1, instances=1) as server:
        yield server


@pytest.mark.anyio
@pytest.mark.parametrize("empty_status", [200, 204])
async def test_iter_search_pages_across_many_pages(
    big_archive: MiniArchive, empty_status: int
) -> None:
    big_archive.empty_status = empty_status
    async with AsyncQidoRS(big_archive.url, retries=0) as qido:
        uids = [
            s.StudyInstanceUID async for s in qido.iter_search(HierarchicalQuery(), page_size=5)
        ]
    assert uids == [study_uid(i) for i in range(53)]
    assert len(big_archive.raw_urls) == 11
    assert big_archive.raw_urls[0] == "/dicom-web/studies?limit=5"
    assert big_archive.raw_urls[-1] == "/dicom-web/studies?limit=5&offset=50"


@pytest.mark.anyio
async def test_iter_search_follows_truncation_warnings(big_archive: MiniArchive) -> None:
    big_archive.cap = 20
    async with AsyncQidoRS(big_archive.url, retries=0) as qido:
        uids = [s.StudyInstanceUID async for s in qido.iter_search(HierarchicalQuery())]
    assert uids == [study_uid(i) for i in range(53)]
    assert big_archive.raw_urls == [
        "/dicom-web/studies",
        "/dicom-web/studies?offset=20",
        "/dicom-web/studies?offset=40",
    ]


@pytest.mark.anyio
async def test_iter_search_stops_on_a_server_that_ignores_offset(big_archive: MiniArchive) -> None:
    big_archive.ignore_offset = True
    got: list[Study] = []

    async def consume(qido: AsyncQidoRS) -> None:
        async for study in qido.iter_search(HierarchicalQuery(), page_size=10):
            got.append(study)

    async with AsyncQidoRS(big_archive.url, retries=0) as qido:
        with pytest.raises(InvalidResponseError, match="ignores 'offset'"):
            await consume(qido)
    assert len(got) == 10
    assert len(big_archive.raw_urls) == 2


@pytest.mark.anyio
async def test_iter_search_early_break_leaves_nothing_running(big_archive: MiniArchive) -> None:
    qido = AsyncQidoRS(big_archive.url, retries=0)
    async with qido, aclosing(qido.iter_search(HierarchicalQuery(), page_size=5)) as studies:
        async for _ in studies:
            break
    assert len(big_archive.raw_urls) == 1


# --- pages that repeat a result ----------------------------------------------------------------


@pytest.mark.anyio
async def test_iter_search_loses_no_study_to_pages_repeating_one() -> None:
    # the audit's probe: 250 studies, a repeat on every page; 244 came back
    async with MiniArchive(studies=250, series=1, instances=1) as archive:
        archive.rewrite_page = repeat_at_end
        async with AsyncQidoRS(archive.url, retries=0) as qido:
            query = HierarchicalQuery()
            uids = [s.StudyInstanceUID async for s in qido.iter_search(query, page_size=40)]
    assert uids == [study_uid(i) for i in range(250)]
    assert archive.raw_urls[1] == "/dicom-web/studies?limit=40&offset=39"


@pytest.mark.anyio
async def test_iter_search_raises_on_a_repeat_shown_in_place_of_a_study() -> None:
    async with MiniArchive(studies=250, series=1, instances=1) as archive:
        archive.rewrite_page = repeat_in_place
        got: list[str] = []

        async def consume(qido: AsyncQidoRS) -> None:
            async for study in qido.iter_search(HierarchicalQuery(), page_size=40):
                got.append(study.StudyInstanceUID)

        async with AsyncQidoRS(archive.url, retries=0) as qido:
            with pytest.raises(InvalidResponseError, match="in place of another match") as info:
                await consume(qido)
    assert str(info.value.url).endswith("/studies?limit=40&offset=39")
    assert info.value.status == 200
    assert f"({study_uid(39)!r})" in str(info.value)  # the study returned again
    assert "Doe^Patient39" in info.value.body_excerpt
    assert len(got) == len(set(got)) == 39


@pytest.mark.anyio
async def test_crawl_loses_no_study_to_listing_pages_repeating_one() -> None:
    async with MiniArchive(studies=30, series=1, instances=1) as archive:
        archive.rewrite_page = repeat_at_end
        async with AsyncQidoRS(archive.url, retries=0) as qido:
            uids = [s.StudyInstanceUID async for s in qido.crawl(page_size=7)]
    assert sorted(uids) == sorted(study_uid(i) for i in range(30))


@pytest.mark.anyio
async def test_crawl_fails_the_study_whose_series_pages_show_a_repeat_in_place() -> None:
    async with MiniArchive(studies=3, series=5, instances=1) as archive:
        archive.cap = 3  # the series listings are paged (truncation warnings)

        def in_study_1(page: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
            series_of_1 = "00200011" in page[0] and page[0]["0020000D"]["Value"][0] == study_uid(1)
            return repeat_in_place(page, limit) if series_of_1 else page

        archive.rewrite_page = in_study_1
        yielded: list[str] = []

        async def consume(qido: AsyncQidoRS) -> None:
            async for study in qido.crawl():
                yielded.append(study.StudyInstanceUID)

        async with AsyncQidoRS(archive.url, retries=0) as qido:
            with pytest.raises(CrawlIncompleteError) as info:
                await consume(qido)
    assert sorted(yielded) == [study_uid(0), study_uid(2)]
    [failure] = info.value.failures
    assert isinstance(failure.error, InvalidResponseError)
    assert "in place of another match" in str(failure.error)
    assert study_uid(1) in str(failure.query)


# --- many searches ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_search_many_in_order(client: AsyncQidoRS, archive: MiniArchive) -> None:
    queries = [HierarchicalQuery(PatientID=f"PID{i:06d}") for i in (4, 0, 3, 1, 2, 9)]
    results = await client.search_many(queries)
    assert [[s.PatientID for s in r] for r in results] == [
        ["PID000004"],
        ["PID000000"],
        ["PID000003"],
        ["PID000001"],
        ["PID000002"],
        [],
    ]
    assert all(isinstance(r, SearchResults) for r in results)


@pytest.mark.anyio
async def test_iter_search_many_yields_each_query_with_its_results(client: AsyncQidoRS) -> None:
    queries = [HierarchicalQuery(PatientID=f"PID{i:06d}") for i in range(5)]
    got = {q.PatientID: [s.PatientID for s in r] async for q, r in client.iter_search_many(queries)}
    assert got == {f"PID{i:06d}": [f"PID{i:06d}"] for i in range(5)}


@pytest.mark.anyio
async def test_concurrency_limit_is_respected_server_side() -> None:
    async with MiniArchive(studies=40, series=1, instances=1) as archive:
        archive.hold = asyncio.Event()
        archive.release_at = 4  # requests wait until 4 are in flight at once
        queries = [HierarchicalQuery(PatientID=f"PID{i:06d}") for i in range(40)]
        async with AsyncQidoRS(archive.url, retries=0, max_concurrency=4) as qido:
            results = await qido.search_many(queries)
    assert archive.peak == 4
    assert [len(r) for r in results] == [1] * 40


@pytest.mark.anyio
async def test_per_call_concurrency_is_within_the_client_limit() -> None:
    async with MiniArchive(studies=30, series=1, instances=1) as archive:
        archive.hold = asyncio.Event()
        archive.release_at = 2
        queries = [HierarchicalQuery(PatientID=f"PID{i:06d}") for i in range(30)]
        async with AsyncQidoRS(archive.url, retries=0, max_concurrency=8) as qido:
            await qido.search_many(queries, max_concurrency=2)
    assert archive.peak == 2


@pytest.mark.anyio
async def test_client_limit_is_shared_by_concurrent_operations() -> None:
    async with MiniArchive(studies=30, series=1, instances=1) as archive:
        archive.hold = asyncio.Event()
        archive.release_at = 3
        queries = [HierarchicalQuery(PatientID=f"PID{i:06d}") for i in range(15)]
        async with AsyncQidoRS(archive.url, retries=0, max_concurrency=3) as qido:
            await asyncio.gather(qido.search_many(queries), qido.search_many(queries))
    assert archive.peak == 3


# --- crawl ------------------------------------------------------------------------------------


def tree(study: Study) -> dict[str, Any]:
    return {
        s.SeriesInstanceUID: sorted(i.SOPInstanceUID for i in s.instances) for s in study.series
    }


@pytest.mark.anyio
async def test_crawl_yields_complete_subtrees(client: AsyncQidoRS, archive: MiniArchive) -> None:
    studies = [s async for s in client.crawl(HierarchicalQuery())]
    assert sorted(s.StudyInstanceUID for s in studies) == [study_uid(i) for i in range(5)]
    for study in studies:
        i = [study_uid(n) for n in range(5)].index(study.StudyInstanceUID)
        assert isinstance(study.series, tuple)
        assert tree(study) == {
            series_uid(i, j): sorted(sop_uid(i, j, k) for k in range(2)) for j in range(3)
        }
        assert all(isinstance(s.instances, tuple) for s in study.series)
    assert len(archive.raw_urls) == 1 + 5 + 15


@pytest.mark.anyio
async def test_crawl_to_series_depth(client: AsyncQidoRS, archive: MiniArchive) -> None:
    studies = [s async for s in client.crawl(depth=QueryLevel.SERIES)]
    assert len(studies) == 5
    assert all(len(s.series) == 3 for s in studies)
    assert all(series.instances == () for s in studies for series in s.series)
    assert len(archive.raw_urls) == 1 + 5


@pytest.mark.anyio
async def test_crawl_study_depth_only_lists(client: AsyncQidoRS, archive: MiniArchive) -> None:
    studies = [s async for s in client.crawl(HierarchicalQuery(), depth="study")]
    assert len(studies) == 5
    assert len(archive.raw_urls) == 1


@pytest.mark.anyio
async def test_crawl_rejects_non_study_queries(client: AsyncQidoRS) -> None:
    async def consume() -> None:
        async for _ in client.crawl(RelationalQuery(query_level="SERIES")):
            pass

    with pytest.raises(InvalidQueryError, match="study-level"):
        await consume()


@pytest.mark.anyio
async def test_crawl_pages_the_study_listing_and_bounds_in_flight_studies() -> None:
    async with MiniArchive(studies=40, series=2, instances=1) as archive:
        async with AsyncQidoRS(archive.url, retries=0, max_concurrency=2) as qido:
            seen = 0
            async for study in qido.crawl(page_size=7):
                seen += 1
                assert len(study.series) == 2
                # the walk is bounded: the study listing is never far ahead of the consumer
                listed = sum(1 for url in archive.raw_urls if url.startswith("/dicom-web/studies?"))
                assert (listed - 1) * 7 <= seen + 2 * 2 + 7
        assert seen == 40
        assert archive.peak <= 2


@pytest.mark.anyio
async def test_a_stalled_consumer_stalls_the_crawl() -> None:
    async with MiniArchive(studies=60, series=2, instances=1) as archive:
        async with AsyncQidoRS(archive.url, retries=0, max_concurrency=2) as qido:
            crawl = qido.crawl(page_size=5)
            async with aclosing(crawl):
                first = await crawl.__anext__()
                await asyncio.sleep(0.1)  # let the producer run ahead as far as it can
                walked = {url.split("/")[3] for url in archive.raw_urls if url.endswith("/series")}
                listing_pages = [u for u in archive.raw_urls if u.startswith("/dicom-web/studies?")]
        # the consumed study plus a window of 2 * max_concurrency studies in progress
        assert first.StudyInstanceUID in walked
        assert len(walked) <= 1 + 2 * 2
        # the listing is read lazily: about one page ahead of the studies in progress
        assert len(listing_pages) <= 3


@pytest.mark.anyio
async def test_find_studies_groups_like_dicomtrolley(client: AsyncQidoRS) -> None:
    query = RelationalQuery(query_level="INSTANCE", StudyInstanceUID=study_uid(1))
    studies = await client.find_studies(query)
    assert [s.StudyInstanceUID for s in studies] == [study_uid(1)]
    assert len(studies[0].series) == 3
    assert all(len(s.instances) == 2 for s in studies[0].series)


# --- dicomweb-client names -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_search_for_studies_with_dicomweb_client_arguments(
    client: AsyncQidoRS, archive: MiniArchive
) -> None:
    studies = await client.search_for_studies(
        search_filters={"PatientID": "PID000002", "00100030": "19700101"},
        fields=["StudyDescription"],
        fuzzymatching=True,
        limit=10,
        offset=0,
    )
    url = archive.raw_urls[0]
    assert url.startswith("/dicom-web/studies?PatientID=PID000002")
    for part in ("00100030=19700101", "includefield=StudyDescription", "fuzzymatching=true"):
        assert part in url
    assert "limit=10" in url
    assert [s.PatientID for s in studies] == ["PID000002"]


@pytest.mark.anyio
async def test_search_for_series_and_instances(client: AsyncQidoRS, archive: MiniArchive) -> None:
    assert len(await client.search_for_series()) == 15
    assert len(await client.search_for_series(study_instance_uid=study_uid(0))) == 3
    assert len(await client.search_for_instances()) == 30
    assert len(await client.search_for_instances(study_uid(0))) == 6
    assert len(await client.search_for_instances(study_uid(0), series_uid(0, 1))) == 2
    # a series UID without a study UID is not dropped (dicomweb-client drops it)
    only_series = await client.search_for_instances(series_instance_uid=series_uid(3, 2))
    assert [i.SOPInstanceUID for i in only_series] == [sop_uid(3, 2, 0), sop_uid(3, 2, 1)]
    assert archive.raw_urls[-1] == f"/dicom-web/instances?SeriesInstanceUID={series_uid(3, 2)}"


@pytest.mark.anyio
async def test_search_for_studies_get_remaining_pages(big_archive: MiniArchive) -> None:
    async with AsyncQidoRS(big_archive.url, retries=0) as qido:
        studies = await qido.search_for_studies(limit=10, get_remaining=True)
        first = await qido.search_for_studies(limit=10)
    assert len(studies) == 53
    assert len(first) == 10
    assert len(big_archive.raw_urls) == 6 + 1


@pytest.mark.anyio
async def test_search_filters_with_unknown_keyword_are_refused(client: AsyncQidoRS) -> None:
    with pytest.raises(InvalidQueryError, match="PatientNmae"):
        await client.search_for_studies(search_filters={"PatientNmae": "X"})

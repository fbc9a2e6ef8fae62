"""Complete crawls against capped, offset-ignoring, flaky archives (FakeArchive, in-process).

Expected answers come from the records the archive was built from
(``tests/crawl_data.py``), never from the server.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import pytest

from aqido import (
    AsyncQidoRS,
    ClientClosedError,
    CrawlFailure,
    CrawlIncompleteError,
    CrawlProgress,
    CrawlStats,
    HierarchicalQuery,
    InvalidResponseError,
    QidoError,
    QidoRS,
    QueryLevel,
    ResultsTruncatedError,
    Retry,
    ServerError,
)
from aqido.partition import time_bounds
from aqido.testing import FakeArchive, Faults
from tests.crawl_data import BUSY_DAY, CROWDED_SECOND, busy_archive, tree_of

QUICK = Retry(max_attempts=10, backoff_base=0.001, backoff_max=0.004, total=None)
CAP = 50

BIG, BIG_TREE = busy_archive()
SMALL, SMALL_TREE = busy_archive(seed=2, series=2, instances=2, scale=0.08)
TINY, TINY_TREE = busy_archive(seed=3, series=2, instances=1, scale=0.03, crowded=False)

#: Server shapes: (FakeArchive factory options, server_limit the client is told).
SHAPES: dict[str, tuple[dict[str, Any], int | None]] = {
    # a silent cap and no offset support at all: only splitting works
    "silent-cap-no-offset": (
        {"max_results": CAP, "truncation_warning": False, "ignore_offset": True},
        CAP,
    ),
    # Orthanc: cap + 1 rows, no warning, the cap applied before the offset
    "orthanc": ({"orthanc_like": True, "max_results": CAP}, CAP),
    # a 299 warning with a count and a working offset (dcm4chee): paging, no splits
    "warning-with-offset": ({"max_results": CAP}, None),
    # a 299 warning but offset ignored: the repeat is noticed, then splitting
    "warning-no-offset": ({"max_results": CAP, "ignore_offset": True}, None),
}


def make_archive(content: Any, shape: str, **more: Any) -> FakeArchive:
    options = dict(SHAPES[shape][0], **more)
    if options.pop("orthanc_like", False):
        return FakeArchive.orthanc_like(content, **options)
    return FakeArchive(content, **options)


async def crawl_list(url: str, *, retries: Any = 0, **options: Any) -> list[Any]:
    async with AsyncQidoRS(url, retries=retries) as qido:
        return [study async for study in qido.crawl(**options)]


# --- completeness ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("shape", list(SHAPES))
async def test_every_study_exactly_once_whatever_the_cap(shape: str) -> None:
    # the two shapes of the issue (a cap, no offset) get the big archive; the others a small one
    big = shape in ("silent-cap-no-offset", "orthanc", "warning-with-offset")
    content, tree = (BIG, BIG_TREE) if big else (SMALL, SMALL_TREE)
    stats = CrawlStats()
    async with make_archive(content, shape) as archive:
        studies = await crawl_list(
            archive.url, depth=QueryLevel.STUDY, server_limit=SHAPES[shape][1], stats=stats
        )
        sent = [dict(request.params) for request in archive.requests]
    assert set(tree_of(studies)) == set(tree)  # tree_of fails on a duplicate
    assert stats.complete
    assert stats.items["STUDY"] == len(tree)
    assert stats.requests == len(sent)
    if shape == "warning-with-offset":
        assert stats.splits == 0  # the server pages correctly: no need to split
        return
    assert stats.splits > 0
    # the crowded second of the busy day overflows: only a split by modality gets below the cap
    by_modality = [p for p in sent if "ModalitiesInStudy" in p]
    assert by_modality
    assert all(p["StudyDate"] == f"{BUSY_DAY}-{BUSY_DAY}" for p in by_modality)
    assert all(p["StudyTime"].startswith(CROWDED_SECOND) for p in by_modality)
    if big:
        assert len(tree) > 2000


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["silent-cap-no-offset", "orthanc"])
async def test_full_tree_through_a_capped_archive(shape: str) -> None:
    async with make_archive(SMALL, shape) as archive:
        studies = await crawl_list(archive.url, server_limit=CAP)
    assert tree_of(studies) == SMALL_TREE


@pytest.mark.anyio
async def test_a_query_with_a_date_range_is_split_inside_it() -> None:
    query = HierarchicalQuery(min_study_date="2024-02-01", max_study_date="2024-03-31")
    expected = {
        item["0020000D"]["Value"][0]
        for item in SMALL
        if "20240201" <= item["00080020"]["Value"][0] <= "20240331"
    }
    async with make_archive(SMALL, "orthanc") as archive:
        studies = await crawl_list(archive.url, query=query, depth="STUDY", server_limit=CAP)
        dates = [dict(r.params).get("StudyDate", "") for r in archive.requests]
    assert {s.StudyInstanceUID for s in studies} == expected
    assert all(d and d.split("-")[0] >= "20240201" for d in dates)


@pytest.mark.anyio
async def test_a_page_size_at_the_cap_is_paged_then_split() -> None:
    async with make_archive(SMALL, "orthanc") as archive:
        studies = await crawl_list(archive.url, depth="STUDY", server_limit=CAP, page_size=20)
    assert {s.StudyInstanceUID for s in studies} == set(SMALL_TREE)


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_transient_faults_give_the_same_result_as_a_clean_run() -> None:
    faults = Faults(rate=0.05, kinds=("503", "429", "disconnect", "truncated"), seed=5)
    async with make_archive(SMALL, "orthanc") as archive:
        clean = tree_of(await crawl_list(archive.url, server_limit=CAP))
    stats = CrawlStats()
    async with make_archive(SMALL, "orthanc", faults=faults) as archive:
        flaky = tree_of(await crawl_list(archive.url, retries=QUICK, server_limit=CAP, stats=stats))
        injected = [r.fault for r in archive.requests if r.fault]
    assert flaky == clean == SMALL_TREE
    assert {"503", "429", "truncated"} <= set(injected)
    # one retry per fault (aiohttp itself re-sends some requests after a disconnect)
    assert len([f for f in injected if f != "disconnect"]) <= stats.retries <= len(injected)
    assert stats.complete


def first_study(tree: dict[str, dict[str, set[str]]]) -> tuple[str, str]:
    study = sorted(tree)[0]
    return study, sorted(tree[study])[0]


@pytest.mark.anyio
async def test_a_failing_subtree_is_reported_exactly() -> None:
    study, _ = first_study(SMALL_TREE)
    async with make_archive(SMALL, "orthanc") as archive:
        archive.fail(lambda url: url.endswith(f"/studies/{study}/series"), "503")
        got: list[Any] = []
        stats = CrawlStats()

        async def run() -> None:
            async with AsyncQidoRS(archive.url, retries=QUICK) as qido:
                async for one in qido.crawl(server_limit=CAP, fail_fast=False, stats=stats):
                    got.append(one)

        with pytest.raises(CrawlIncompleteError) as info:
            await run()
    error = info.value
    assert tree_of(got) == {k: v for k, v in SMALL_TREE.items() if k != study}
    assert len(error.failures) == 1
    query, cause = error.failures[0]
    assert query == HierarchicalQuery(query_level="SERIES", StudyInstanceUID=study)
    assert isinstance(cause, ServerError)
    assert cause.status == 503
    assert error.stats is stats
    assert stats.failures == list(error.failures)
    assert error.counts["STUDY"] == len(SMALL_TREE)
    assert stats.retries >= QUICK.max_attempts - 1
    assert study in str(error)


@pytest.mark.anyio
async def test_a_failing_series_is_reported_and_its_study_held_back() -> None:
    study, series = first_study(SMALL_TREE)
    async with make_archive(SMALL, "silent-cap-no-offset") as archive:
        archive.fail(f"/series/{series}/instances", "500")
        stats = CrawlStats()
        studies = await crawl_list(archive.url, server_limit=CAP, partial=True, stats=stats)
    assert tree_of(studies) == {k: v for k, v in SMALL_TREE.items() if k != study}
    assert stats.failures == [
        CrawlFailure(
            HierarchicalQuery(
                query_level="INSTANCE", StudyInstanceUID=study, SeriesInstanceUID=series
            ),
            stats.failures[0].error,
        )
    ]
    assert not stats.complete


@pytest.mark.anyio
async def test_fail_fast_raises_the_error_itself() -> None:
    study, _ = first_study(SMALL_TREE)
    async with make_archive(SMALL, "orthanc") as archive:
        archive.fail(lambda url: url.endswith(f"/studies/{study}/series"), "500")
        with pytest.raises(ServerError):
            await crawl_list(archive.url, server_limit=CAP, fail_fast=True)


@pytest.mark.anyio
async def test_requests_still_waiting_for_a_slot_are_not_counted_as_sent() -> None:
    # fail_fast cancels the requests queued behind the client's 2 slots: they were never sent
    async with FakeArchive(TINY, latency=0.01) as archive:
        archive.fail(lambda url: "/instances" in url, "500", times=1)
        stats = CrawlStats()
        async with AsyncQidoRS(archive.url, retries=0, max_concurrency=2) as qido:
            with pytest.raises(QidoError):
                async for _ in qido.crawl(stats=stats, fail_fast=True):
                    pass
        served = len(archive.requests)
    # at most the 2 requests that took the freed slots as the crawl stopped are not served
    assert served <= stats.requests <= served + 2


@pytest.mark.anyio
async def test_by_default_a_failure_is_reported_after_the_rest_is_fetched() -> None:
    study, _ = first_study(SMALL_TREE)
    async with make_archive(SMALL, "orthanc") as archive:
        archive.fail(lambda url: url.endswith(f"/studies/{study}/series"), "500")
        with pytest.raises(CrawlIncompleteError) as info:
            await crawl_list(archive.url, server_limit=CAP)
    assert [str(f.query) for f in info.value.failures] == [f"/studies/{study}/series"]
    assert info.value.counts["STUDY"] == len(SMALL_TREE)  # every study was listed


@pytest.mark.anyio
async def test_failing_listing_parts_are_reported_and_the_rest_is_complete() -> None:
    async with make_archive(SMALL, "silent-cap-no-offset") as archive:
        archive.fail(lambda url: "StudyTime=" in url, "503")
        stats = CrawlStats()
        studies = await crawl_list(
            archive.url, depth="STUDY", server_limit=CAP, partial=True, stats=stats
        )
    busy = {i["0020000D"]["Value"][0] for i in SMALL if i["00080020"]["Value"][0] == BUSY_DAY}
    got = {s.StudyInstanceUID for s in studies}
    assert set(SMALL_TREE) - busy <= got  # every other day is complete
    assert stats.failures
    assert all(time_bounds(f.query) != (0, 86399) for f in stats.failures)
    assert all(isinstance(f.query, HierarchicalQuery) for f in stats.failures)
    # the failed parts are the first StudyTime halves of the busy day, nothing else
    assert {f.query.study_date_range() for f in stats.failures} == {f"{BUSY_DAY}-{BUSY_DAY}"}


@pytest.mark.anyio
async def test_an_overflow_that_cannot_be_split_is_reported() -> None:
    crowd = [
        item
        for item in busy_archive(scale=0.01)[0]
        if item["00080030"]["Value"][0] == CROWDED_SECOND
        and item["00080060"]["Value"][0] in ("CT", "MR")
    ]
    for item in crowd:  # 50 studies in one second, all CT: nothing left to split by
        item["00080060"] = {"vr": "CS", "Value": ["CT"]}
    assert len({i["0020000D"]["Value"][0] for i in crowd}) == 50
    async with FakeArchive(crowd, max_results=40, ignore_offset=True) as archive:
        stats = CrawlStats()
        with pytest.raises(CrawlIncompleteError) as info:
            await crawl_list(archive.url, depth="STUDY", fail_fast=False, stats=stats)
    failure, shortfall = info.value.failures
    assert isinstance(failure.error, ResultsTruncatedError)
    assert failure.query.ModalitiesInStudy == "CT"
    assert time_bounds(failure.query) is not None
    assert stats.items["STUDY"] == 40
    # the server announced 50 matches in its 299 warning: the 10 missing are reported too
    assert shortfall.query == HierarchicalQuery()
    assert "announced 50 matches" in str(shortfall.error)


# --- stats -----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "refused"),
    [
        ({"page_size": -1}, "page_size"),
        ({"depth": "PATIENT"}, "depth"),
        ({"query": HierarchicalQuery(query_level="SERIES", StudyInstanceUID="1.2.3")}, "study"),
        # refused by the client itself, before the crawl machinery starts
        ({"query": {"QueryLevel": "SERIES"}}, "QueryLevel"),
        ({"server_limit": 0}, "server_limit"),  # a plain ValueError
        ({"max_concurrency": 0}, "max_concurrency"),  # the crawl's own limit, a ValueError
    ],
)
async def test_the_progress_hook_is_closed_when_the_arguments_are_refused(
    options: dict[str, Any], refused: str
) -> None:
    closed: list[bool] = []

    class Watch(CrawlProgress):
        def close(self) -> None:
            closed.append(True)

    async with FakeArchive(TINY) as archive, AsyncQidoRS(archive.url) as qido:
        with pytest.raises(ValueError, match=refused):  # InvalidQueryError is one
            async for _ in qido.crawl(progress=Watch(), **options):
                pass
    assert closed == [True]  # a progress=True bar would be left open on the terminal


@pytest.mark.anyio
async def test_stats_are_live_during_the_crawl() -> None:
    seen: list[tuple[int, bool]] = []

    class Watch(CrawlProgress):
        def update(self, stats: CrawlStats) -> None:
            seen.append((stats.studies_done, stats.running))

    stats = CrawlStats()
    async with make_archive(SMALL, "orthanc") as archive:
        async with AsyncQidoRS(archive.url, retries=0) as qido:
            async for _ in qido.crawl(server_limit=CAP, stats=stats, progress=Watch()):
                assert stats.running
                assert stats.elapsed >= 0
        served = len(archive.requests)
    assert seen[-1] == (len(SMALL_TREE), False)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert stats.requests == served
    assert stats.pages == served
    assert stats.retries == 0
    assert stats.items == {
        "STUDY": len(SMALL_TREE),
        "SERIES": sum(len(s) for s in SMALL_TREE.values()),
        "INSTANCE": sum(len(i) for s in SMALL_TREE.values() for i in s.values()),
    }
    assert stats.complete
    assert not stats.running
    assert stats.finished is not None
    assert f"{len(SMALL_TREE)} studies done" in stats.summary()


# --- checkpoints -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_checkpoint_resume_after_a_break(tmp_path: Any) -> None:
    from aqido import CrawlCheckpoint

    path = tmp_path / "crawl.jsonl"
    async with make_archive(TINY, "orthanc") as archive, AsyncQidoRS(archive.url) as qido:
        async with aclosing(qido.crawl(server_limit=CAP, checkpoint=path)) as first:
            async for n, _ in aenumerate(first):
                if n == 9:
                    break
        assert len(list(CrawlCheckpoint.read_studies(path))) == 10
        with path.open("a") as file:  # as if killed in the middle of a line
            file.write('{"study": {"0020000D": {"vr"')
        stats = CrawlStats()
        rest = [s async for s in qido.crawl(server_limit=CAP, checkpoint=path, stats=stats)]
        assert stats.studies_skipped == 10
        assert len(rest) == len(TINY_TREE) - 10
        again = CrawlStats()
        done = [s async for s in qido.crawl(server_limit=CAP, checkpoint=path, stats=again)]
        assert done == []
        assert again.requests == 0
        with pytest.raises(ValueError, match="not '/studies\\?PatientID=X'"):
            async for _ in qido.crawl(HierarchicalQuery(PatientID="X"), checkpoint=path):
                pass
        server = archive.url
    assert tree_of(list(CrawlCheckpoint.read_studies(path))) == TINY_TREE
    records = CrawlCheckpoint.read_records(path)
    assert records[0] == {
        "aqido_crawl": 1,
        "query": "/studies",
        "depth": "INSTANCE",
        "server": server,
    }
    assert records[-1] == {"end": {"complete": True, "studies": len(TINY_TREE), "failures": []}}


@pytest.mark.anyio
async def test_checkpoint_writes_and_reads_back_an_item_nested_as_deep_as_decoding_allows(
    tmp_path: Any,
) -> None:
    # An instance nesting 340 levels of SQ (orjson accepts 341): json.dumps raised a raw
    # RecursionError writing its study, and the line (a few levels deeper still) was
    # "nested too deeply" for the checkpoint's own reader on resume.
    from aqido import CrawlCheckpoint
    from aqido._json import decode_json
    from aqido.protocol import QidoResponse

    text = '{"00100020": {"vr": "LO", "Value": ["x"]}}'
    for _ in range(340):
        text = '{"00400275": {"vr": "SQ", "Value": [' + text + "]}}"

    def ui(value: str) -> dict[str, Any]:
        return {"vr": "UI", "Value": [value]}

    async def fetch(query: Any, limiter: Any = None, **_: Any) -> QidoResponse:
        items = [{"0020000D": ui("1.2")}]
        if query.query_level is not QueryLevel.STUDY:
            items[0]["0020000E"] = ui("1.2.1")
        if query.query_level is QueryLevel.INSTANCE:
            [deep] = decode_json(f"[{text}]".encode())
            items = [{**deep, **items[0], "00080018": ui("1.2.1.1")}]
        return QidoResponse(200, "http://h/x", {}, items)

    path = tmp_path / "crawl.jsonl"
    async with AsyncQidoRS("http://h", retries=0) as qido:
        qido._fetch = fetch  # type: ignore[method-assign]
        [study] = [s async for s in qido.crawl(checkpoint=path)]
        stats = CrawlStats()
        assert [s async for s in qido.crawl(checkpoint=path, stats=stats)] == []
        assert stats.studies_skipped == 1
    [read] = CrawlCheckpoint.read_studies(path)
    assert read == study
    node = read.series[0].instances[0]
    for _ in range(340):
        [node] = node["00400275"]
    assert node["PatientID"] == "x"


@pytest.mark.anyio
async def test_a_crawl_left_unclosed_is_named_as_the_holder_of_its_checkpoint(
    tmp_path: Any,
) -> None:
    """Not "another aqido process": the earlier crawl here, broken off and not closed yet."""
    from aqido import CheckpointError

    path = tmp_path / "crawl.jsonl"
    async with make_archive(TINY, "orthanc") as archive, AsyncQidoRS(archive.url) as qido:
        first = qido.crawl(server_limit=CAP, checkpoint=path)
        async for _ in first:
            break  # no aclosing: the generator, and its checkpoint's lock, stay open
        with pytest.raises(CheckpointError, match="in use by another crawl in this process"):
            async for _ in qido.crawl(server_limit=CAP, checkpoint=path):
                pass
        with pytest.raises(CheckpointError) as info:
            async for _ in qido.crawl(server_limit=CAP, checkpoint=path):
                pass
        message = str(info.value)
        assert "another aqido process" not in message
        assert "aclosing" in message
        assert "aclose()" in message
        await first.aclose()  # the lock was not weakened: released only now
        stats = CrawlStats()
        rest = [s async for s in qido.crawl(server_limit=CAP, checkpoint=path, stats=stats)]
        assert stats.studies_skipped == 1
        assert len(rest) == len(TINY_TREE) - 1


def test_a_blocking_crawl_left_unclosed_is_named_too(tmp_path: Any) -> None:
    from aqido import CheckpointError

    path = tmp_path / "crawl.jsonl"
    with make_archive(TINY, "orthanc").run_in_thread() as archive, QidoRS(archive.url) as qido:
        first = qido.crawl(server_limit=CAP, checkpoint=path)
        next(first)
        with pytest.raises(CheckpointError, match="in use by another crawl in this process"):
            next(qido.crawl(server_limit=CAP, checkpoint=path))
        first.close()
        assert len(list(qido.crawl(server_limit=CAP, checkpoint=path))) == len(TINY_TREE) - 1


def test_a_checkpoint_another_process_holds_is_still_said_to_be_anothers(tmp_path: Any) -> None:
    import subprocess
    import sys

    from aqido import CheckpointError, CrawlCheckpoint

    path = tmp_path / "crawl.jsonl"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from aqido import CrawlCheckpoint; c = CrawlCheckpoint(sys.argv[1]); "
            "c.lock(); print('held', flush=True); sys.stdin.read(); c.close()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(CheckpointError, match="another aqido process holds its lock"):
            CrawlCheckpoint(path).lock()
    finally:
        holder.communicate("", timeout=30)
    here = CrawlCheckpoint(path)
    here.lock()
    here.close()


async def aenumerate(iterator: Any) -> Any:
    n = 0
    async for item in iterator:
        yield n, item
        n += 1


@pytest.mark.anyio
async def test_checkpoint_records_failures_and_resume_retries_them(tmp_path: Any) -> None:
    from aqido import CrawlCheckpoint

    study, _ = first_study(TINY_TREE)
    path = tmp_path / "crawl.jsonl"
    async with make_archive(TINY, "orthanc") as archive:
        archive.fail(lambda url: url.endswith(f"/studies/{study}/series"), "503")
        async with AsyncQidoRS(archive.url, retries=0) as qido:
            with pytest.raises(CrawlIncompleteError):
                async for _ in qido.crawl(server_limit=CAP, fail_fast=False, checkpoint=path):
                    pass
            end = CrawlCheckpoint.read_records(path)[-1]["end"]
            assert end["complete"] is False
            assert end["failures"][0]["query"] == f"/studies/{study}/series"
            archive.clear_faults()
            resumed = [s async for s in qido.crawl(server_limit=CAP, checkpoint=path)]
    assert [s.StudyInstanceUID for s in resumed] == [study]
    assert tree_of(list(CrawlCheckpoint.read_studies(path))) == TINY_TREE


# --- series and instances over the cap -------------------------------------------------------


def one_study(series: list[str], instances: int) -> list[dict[str, Any]]:
    from tests.crawl_data import _study

    out: list[dict[str, Any]] = []
    for n, modality in enumerate(series):
        for item in _study(0, "20240301", "101010", [modality], 1, instances, seed=n):
            item["0020000D"] = {"vr": "UI", "Value": ["1.2.3.4"]}
            out.append(item)
    return out


@pytest.mark.anyio
async def test_a_study_with_more_series_than_the_cap_is_split_by_modality() -> None:
    content = one_study(["CT"] * 19 + ["MR"] * 15 + ["SR"] * 10, 1)
    async with (
        FakeArchive(
            content, max_results=20, truncation_warning=False, ignore_offset=True
        ) as archive,
        AsyncQidoRS(archive.url, retries=0) as qido,
    ):
        stats = CrawlStats()
        (study,) = [s async for s in qido.crawl(server_limit=20, stats=stats)]
        modalities = [dict(r.params).get("Modality") for r in archive.requests]
    assert len(study.series) == 44
    assert all(len(series.instances) == 1 for series in study.series)
    assert {"CT", "MR", "SR"} <= set(modalities)
    assert stats.splits == 1


@pytest.mark.anyio
async def test_instances_over_an_offset_ignoring_cap_are_reported() -> None:
    content = one_study(["CT", "MR"], 30)
    async with FakeArchive(content, max_results=20, ignore_offset=True) as archive:
        stats = CrawlStats()
        studies = await crawl_list(archive.url, partial=True, stats=stats)
    assert studies == []
    assert len(stats.failures) == 2
    for failure in stats.failures:
        assert failure.query.query_level is QueryLevel.INSTANCE
        assert isinstance(failure.error, ResultsTruncatedError)


@pytest.mark.anyio
async def test_one_stats_object_reused_describes_the_latest_crawl() -> None:
    study, _ = first_study(TINY_TREE)
    stats = CrawlStats()
    async with make_archive(TINY, "orthanc") as archive:
        archive.fail(lambda url: url.endswith(f"/studies/{study}/series"), "503", times=1)
        first = await crawl_list(archive.url, server_limit=CAP, partial=True, stats=stats)
        assert len(stats.failures) == 1
        second = await crawl_list(archive.url, server_limit=CAP, stats=stats)  # no error now
    assert len(first) == len(TINY_TREE) - 1
    assert tree_of(second) == TINY_TREE
    assert stats.complete
    assert stats.studies_done == len(TINY_TREE)


@pytest.mark.anyio
async def test_the_servers_warnings_are_in_the_stats_once_each() -> None:
    stats = CrawlStats()
    async with FakeArchive(TINY, fuzzy_warning=True) as archive:
        query = HierarchicalQuery(fuzzymatching=True)  # on the study listing's pages
        studies = await crawl_list(archive.url, query=query, page_size=10, stats=stats)
        warned = [r for r in archive.requests if "fuzzymatching=true" in r.query_string]
        assert tree_of(studies) == TINY_TREE  # the warning changes nothing in the answer
        (warning,) = stats.warnings  # every page had it: kept once
        assert warning.code == 299
        assert "fuzzy" in warning.text.lower()
        assert not warning.is_truncation
        assert stats.warning_count == len(warned) == -(-len(TINY_TREE) // 10)
        assert f"{stats.warning_count} server warnings" in stats.summary()
        await crawl_list(archive.url, stats=stats)  # without fuzzymatching: none
    assert stats.warnings == []
    assert stats.warning_count == 0
    assert "server warnings" not in stats.summary()


@pytest.mark.anyio
async def test_truncation_warnings_are_not_in_the_stats() -> None:
    # The crawl acts on them itself: it pages past the cap (the answer is complete).
    stats = CrawlStats()
    async with make_archive(TINY, "warning-with-offset") as archive:
        studies = await crawl_list(archive.url, stats=stats)
        capped = [r for r in archive.requests if r.path.endswith("/studies")]
    assert tree_of(studies) == TINY_TREE
    assert len(capped) > 1  # the listing took pages: the cap's 299s came
    assert stats.warnings == []
    assert stats.warning_count == 0


def test_the_stats_keep_the_first_hundred_distinct_warnings() -> None:
    from aqido._recorder import Recorder
    from aqido.protocol import parse_warnings
    from aqido.stats import MAX_WARNINGS

    stats = CrawlStats()
    recorder = Recorder(stats)
    recorder.start()
    warnings = parse_warnings([f'299 pacs "note {i}"' for i in range(MAX_WARNINGS + 50)])
    (truncation,) = parse_warnings(['299 pacs "There are 3 additional results"'])
    recorder.warned(warnings[:2])
    recorder.warned((*warnings[:2], truncation))  # again: counted, not kept twice
    recorder.warned(warnings)
    assert stats.warning_count == 4 + MAX_WARNINGS + 50  # not the truncation warning
    assert stats.warnings == list(warnings[:MAX_WARNINGS])
    recorder.start()  # the next crawl starts afresh
    recorder.warned(warnings[:1])
    assert stats.warnings == list(warnings[:1])
    assert stats.warning_count == 1


@pytest.mark.anyio
async def test_the_client_server_limit_is_the_crawl_default() -> None:
    archive = make_archive(TINY, "orthanc")
    async with archive, AsyncQidoRS(archive.url, server_limit={"study": CAP}) as qido:
        studies = [s async for s in qido.crawl(depth="STUDY")]
        truncated = [s async for s in qido.crawl(depth="STUDY", server_limit=1000)]
    assert {s.StudyInstanceUID for s in studies} == set(TINY_TREE)
    assert len(truncated) == CAP + 1  # a wrong (too high) cap cannot be noticed


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, {"STUDY": 0}, {"PATIENT": 10}, "10"])
def test_bad_server_limits_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="server_limit"):
        AsyncQidoRS("http://127.0.0.1:1/dicom-web", server_limit=bad)


@pytest.mark.anyio
async def test_a_result_without_a_uid_is_a_failure_not_a_crash() -> None:
    from aqido.crawl import crawl
    from aqido.protocol import QidoResponse
    from aqido.results import structure

    good = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}
    no_uid = {"00100020": {"vr": "LO", "Value": ["X"]}}
    series_no_uid = {"00080060": {"vr": "CS", "Value": ["CT"]}}

    async def fetch(query: Any, limiter: Any) -> QidoResponse:
        items = {"STUDY": [good, no_uid], "SERIES": [series_no_uid]}[query.query_level.name]
        return QidoResponse(200, "u", {}, items)

    def typed(response: QidoResponse, level: QueryLevel, items: list[Any]) -> list[Any]:
        return structure(items, level)

    stats = CrawlStats()
    root = HierarchicalQuery()
    studies = [s async for s in crawl(fetch, typed, root, window=2, partial=True, stats=stats)]
    assert studies == []
    assert [f.query for f in stats.failures] == [
        root,
        HierarchicalQuery(query_level="SERIES", StudyInstanceUID="1.2.3"),
    ]


@pytest.mark.anyio
async def test_a_result_without_a_uid_fails_with_its_listing_json_and_what_came() -> None:
    # The error said only "a Study in the response has no StudyInstanceUID": no URL, no
    # excerpt, and not that the server sent one that is no UID (a JSON object here).
    from aqido.crawl import crawl
    from aqido.protocol import QidoResponse
    from aqido.results import structure

    good = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}
    not_a_uid = {"0020000D": {"vr": "UI", "Value": [{"x": 1}]}}
    series_no_uid = {"00080060": {"vr": "CS", "Value": ["CT"]}}

    async def fetch(query: Any, limiter: Any) -> QidoResponse:
        items = {"STUDY": [good, not_a_uid], "SERIES": [series_no_uid]}[query.query_level.name]
        return QidoResponse(200, "u", {}, items)

    def typed(response: QidoResponse, level: QueryLevel, items: list[Any]) -> list[Any]:
        return structure(items, level)

    stats = CrawlStats()
    root = HierarchicalQuery(PatientID="P1")
    assert [s async for s in crawl(fetch, typed, root, window=2, partial=True, stats=stats)] == []
    study_error, series_error = (failure.error for failure in stats.failures)
    assert isinstance(study_error, InvalidResponseError)
    assert study_error.url == "/studies?PatientID=P1"
    assert "has no StudyInstanceUID ({'x': 1} is not one: a UI value must be" in str(study_error)
    assert study_error.body_excerpt == '{"0020000D": {"vr": "UI", "Value": [{"x": 1}]}}'
    assert isinstance(series_error, InvalidResponseError)
    assert series_error.url == "/studies/1.2.3/series"
    assert "has no SeriesInstanceUID, so its children cannot be listed" in str(series_error)
    assert series_error.body_excerpt == '{"00080060": {"vr": "CS", "Value": ["CT"]}}'


@pytest.mark.anyio
async def test_breaking_out_of_a_splitting_crawl_leaves_nothing_behind() -> None:
    import asyncio

    before = asyncio.all_tasks()
    archive = make_archive(SMALL, "orthanc", latency=0.001)
    async with archive, AsyncQidoRS(archive.url, retries=0, max_concurrency=3) as qido:
        stats = CrawlStats()
        async with aclosing(qido.crawl(server_limit=CAP, stats=stats)) as studies:
            async for _ in studies:
                if stats.studies_done == CAP + 10:  # past the first answer: splitting
                    break
        assert stats.splits > 0
        assert stats.running  # left early: not finished, not complete
        session = qido._session
        assert session is not None
        assert session.connector is not None
        assert len(session.connector._acquired) == 0  # type: ignore[attr-defined]
        sent = stats.requests
        await asyncio.sleep(0.05)
        assert stats.requests == sent  # nothing goes on in the background
        assert len(archive.requests) <= sent
    for _ in range(20):
        if not asyncio.all_tasks() - before:
            break
        await asyncio.sleep(0)
    assert not asyncio.all_tasks() - before


@pytest.mark.anyio
async def test_a_failing_part_of_a_split_series_listing_holds_the_study_back() -> None:
    content = one_study(["CT"] * 19 + ["MR"] * 15 + ["SR"] * 10, 1)
    archive = FakeArchive(content, max_results=20, truncation_warning=False, ignore_offset=True)
    async with archive:
        archive.fail("Modality=MR", "503")
        stats = CrawlStats()
        studies = await crawl_list(archive.url, server_limit=20, partial=True, stats=stats)
    assert studies == []  # never a study with some of its series missing
    (failure,) = stats.failures
    assert failure.query == HierarchicalQuery(query_level="SERIES", StudyInstanceUID="1.2.3.4")
    assert isinstance(failure.error, ServerError)


def with_undated(first: bool) -> tuple[list[dict[str, Any]], set[str]]:
    from tests.crawl_data import _study

    content, tree = busy_archive(seed=8, scale=0.03, crowded=False)
    undated = [item for n in range(5) for item in _study(10_000 + n, "", "", ["CT"], 1, 1, 8)]
    for item in undated:
        del item["00080020"], item["00080030"]
    content = undated + content if first else content + undated
    return content, set(tree) | {item["0020000D"]["Value"][0] for item in undated}


@pytest.mark.anyio
async def test_undated_studies_in_the_first_answer_are_kept() -> None:
    content, expected = with_undated(first=True)
    async with FakeArchive(content, max_results=20, ignore_offset=True) as archive:
        studies = await crawl_list(archive.url, depth="STUDY")
    assert {s.StudyInstanceUID for s in studies} == expected


@pytest.mark.anyio
async def test_unreachable_undated_studies_are_reported_when_the_server_gives_a_count() -> None:
    content, expected = with_undated(first=False)
    async with FakeArchive(content, max_results=20, ignore_offset=True) as archive:
        stats = CrawlStats()
        studies = await crawl_list(archive.url, depth="STUDY", partial=True, stats=stats)
    assert len({s.StudyInstanceUID for s in studies}) == len(expected) - 5
    (failure,) = stats.failures
    assert failure.query == HierarchicalQuery()
    assert isinstance(failure.error, ResultsTruncatedError)
    assert f"announced {len(expected)} matches" in str(failure.error)


@pytest.mark.anyio
async def test_a_fanned_out_listings_shortfall_is_not_hidden_by_another_listing() -> None:
    # Found by review: the 'announced N, reached fewer' check counted the studies of every
    # listing of the plan, so the CT listing's 15 studies hid 10 unreachable MR ones.
    from aqido.profile import ServerProfile
    from tests.crawl_data import _study

    ct = [item for n in range(15) for item in _study(n, "20240101", "1000", ["CT"], 1, 1, 9)]
    mr = [item for n in range(30) for item in _study(100 + n, "", "", ["MR"], 1, 1, 9)]
    for item in mr:  # undated: no split reaches those beyond the cap
        del item["00080020"], item["00080030"]
    reachable = {item["0020000D"]["Value"][0] for item in ct + mr[:20]}
    profile = ServerProfile(value_lists=False)  # ModalitiesInStudy=CT,MR: one listing each
    async with (
        FakeArchive(ct + mr, max_results=20, ignore_offset=True) as archive,
        AsyncQidoRS(archive.url, retries=0, profile=profile) as qido,
    ):
        stats = CrawlStats()
        query = HierarchicalQuery(ModalitiesInStudy="CT,MR")
        studies = [s async for s in qido.crawl(query, depth="STUDY", partial=True, stats=stats)]
    assert {s.StudyInstanceUID for s in studies} == reachable
    assert not stats.complete
    (failure,) = stats.failures
    assert failure.query.ModalitiesInStudy == "MR"
    assert isinstance(failure.error, ResultsTruncatedError)
    assert "announced 30 matches" in str(failure.error)
    assert "only 20 could be reached" in str(failure.error)


@pytest.mark.anyio
async def test_overlapping_listings_each_count_what_they_received() -> None:
    # Studies an earlier listing already yielded still count for a later one that received
    # them: parts may overlap, and the later part reached every match it announced.
    from aqido.profile import ServerProfile
    from tests.crawl_data import _study

    both = [
        item for n in range(30) for item in _study(n, "20240101", "1000", ["CT", "MR"], 2, 1, 9)
    ]
    profile = ServerProfile(value_lists=False)
    async with (
        FakeArchive(both, max_results=20) as archive,
        AsyncQidoRS(archive.url, retries=0, profile=profile) as qido,
    ):
        stats = CrawlStats()
        query = HierarchicalQuery(ModalitiesInStudy="CT,MR")
        studies = [s async for s in qido.crawl(query, depth="STUDY", partial=True, stats=stats)]
    assert len(studies) == 30
    assert stats.complete, stats.failures


@pytest.mark.anyio
async def test_a_split_by_time_never_returns_a_study_the_query_does_not_match() -> None:
    # Found by review: splitting StudyTime=100000.5-100001 dropped the fraction, so the first
    # part matched 10:00:00.2 too, and the crawl returned that study with complete=True.
    from tests.crawl_data import _study

    inside = [
        item for n in range(4) for item in _study(n, "20240101", "100000.7", ["CT"], 1, 1, 11)
    ]
    inside += [
        item for n in range(4, 8) for item in _study(n, "20240101", "100001", ["CT"], 1, 1, 11)
    ]
    outside = _study(99, "20240101", "100000.2", ["CT"], 1, 1, 11)
    query = HierarchicalQuery(filters={"StudyDate": "20240101", "StudyTime": "100000.5-100001"})
    expected = {item["0020000D"]["Value"][0] for item in inside}
    async with (
        FakeArchive(outside + inside) as archive,
        AsyncQidoRS(archive.url, retries=0) as qido,
    ):
        assert {s.StudyInstanceUID for s in await qido.search(query)} == expected
    capped = FakeArchive(
        outside + inside, max_results=6, truncation_warning=False, ignore_offset=True
    )
    async with capped as archive:
        stats = CrawlStats()
        studies = await crawl_list(
            archive.url, query=query, depth="STUDY", server_limit=6, stats=stats
        )
    assert {s.StudyInstanceUID for s in studies} == expected
    assert stats.complete
    assert stats.splits


def _uids(**uids: str) -> dict[str, Any]:
    keys = {"study": "0020000D", "series": "0020000E", "sop": "00080018"}
    return {keys[name]: {"vr": "UI", "Value": [uid]} for name, uid in uids.items()}


async def _crawl_fetching(fetch: Any) -> tuple[list[Any], CrawlStats]:
    """Every study a partial crawl yields from ``fetch`` (a server as a function), and its stats."""
    from aqido.crawl import crawl
    from aqido.results import structure

    def typed(response: Any, level: QueryLevel, items: list[Any]) -> list[Any]:
        return structure(items, level)

    stats = CrawlStats()
    query = HierarchicalQuery()
    studies = [s async for s in crawl(fetch, typed, query, window=2, partial=True, stats=stats)]
    return studies, stats


@pytest.mark.anyio
@pytest.mark.parametrize("wrong", ["series", "instances"])
async def test_children_of_another_parent_are_a_failure_not_attached(wrong: str) -> None:
    """A server ignoring the UIDs in the path: its answer is not filed under the wrong parent."""
    from aqido.protocol import QidoResponse

    async def fetch(query: Any, limiter: Any) -> QidoResponse:
        level = query.query_level.name
        if level == "STUDY":
            items = [_uids(study="1.1"), _uids(study="1.2")]
        elif level == "SERIES":  # the series of study 1.1, whatever the study asked for
            study = "1.1" if wrong == "series" else query.StudyInstanceUID
            items = [_uids(study=study, series=f"{study}.1")]
        else:  # the instances of the first series of study 1.1, whatever was asked for
            series = "1.1.1" if wrong == "instances" else query.SeriesInstanceUID
            items = [_uids(study=series[:3], series=series, sop=f"{series}.1")]
        return QidoResponse(200, "u", {}, items)

    studies, stats = await _crawl_fetching(fetch)
    assert [s.StudyInstanceUID for s in studies] == ["1.1"]
    assert [s.SeriesInstanceUID for s in studies[0].series] == ["1.1.1"]
    assert [i.SOPInstanceUID for i in studies[0].series[0].instances] == ["1.1.1.1"]
    [failure] = stats.failures
    assert failure.query.StudyInstanceUID == "1.2"
    assert isinstance(failure.error, InvalidResponseError)
    assert "another" in str(failure.error)


def _count(tag: str, value: int) -> dict[str, Any]:
    return {tag: {"vr": "IS", "Value": [value]}}


@pytest.mark.anyio
@pytest.mark.parametrize("empty", ["series", "instances"])
async def test_a_listing_emptied_after_its_parent_announced_children_is_a_failure(
    empty: str,
) -> None:
    """Study 1.2 is listed with 1 series (its series with 2 instances), then lists nothing.

    Deleted during the crawl, or a listing the server does not answer: handed out
    empty it would be a wrong answer, so it is a failure; a parent that announces
    no children (or no count) may have none.
    """
    from aqido.protocol import QidoResponse

    async def fetch(query: Any, limiter: Any) -> QidoResponse:
        level = query.query_level.name
        if level == "STUDY":
            items = [
                {**_uids(study=s), **_count("00201206", n)}
                for s, n in (("1.1", 1), ("1.2", 1), ("1.3", 0))
            ]
        elif level == "SERIES":
            study = query.StudyInstanceUID
            gone = empty == "series" and study == "1.2"
            items = (
                []
                if gone
                else [{**_uids(study=study, series=f"{study}.1"), **_count("00201209", 2)}]
            )
            if study == "1.3":
                items = []  # announced none: a study with no series is taken as it is
        else:
            series = query.SeriesInstanceUID
            gone = empty == "instances" and series == "1.2.1"
            items = [] if gone else [_uids(series=series, sop=f"{series}.{i}") for i in (1, 2)]
        return QidoResponse(200, "u", {}, items)

    studies, stats = await _crawl_fetching(fetch)
    assert sorted(s.StudyInstanceUID for s in studies) == ["1.1", "1.3"]
    [failure] = stats.failures
    assert isinstance(failure.error, InvalidResponseError)
    if empty == "series":
        assert failure.query.StudyInstanceUID == "1.2"
        assert "NumberOfStudyRelatedSeries 1" in str(failure.error)
    else:
        assert failure.query.SeriesInstanceUID == "1.2.1"
        assert "NumberOfSeriesRelatedInstances 2" in str(failure.error)


@pytest.mark.anyio
async def test_included_series_and_instance_attributes_come_with_the_series_and_instances() -> None:
    # BodyPartExamined and Manufacturer are not returned by default: a crawl that asked for
    # them only on /studies (where a series attribute is never returned) lost them silently.
    from aqido.testing import SyntheticArchive

    content = SyntheticArchive(seed=4, studies=3, series_per_study=2, instances_per_series=1)
    query = HierarchicalQuery(include_fields=["BodyPartExamined", "Manufacturer"])
    async with FakeArchive(content) as archive, AsyncQidoRS(archive.url, retries=QUICK) as client:
        studies = [s async for s in client.crawl(query, depth=QueryLevel.INSTANCE)]
    assert len(studies) == 3
    for one in studies:
        for series in one.series:
            assert {"00180015", "00080070"} <= series.to_json().keys()
            for instance in series.instances:
                assert {"00180015", "00080070"} <= instance.to_json().keys()


def test_the_blocking_crawl_of_a_closed_client_closes_its_progress_hook() -> None:
    # the async crawl closes it ("however the crawl ends"); the blocking one raised
    # ClientClosedError with the bar left open
    closed: list[bool] = []

    class Watch(CrawlProgress):
        def close(self) -> None:
            closed.append(True)

    with FakeArchive(TINY).run_in_thread() as archive:
        client = QidoRS(archive.url)
        client.close()
        with pytest.raises(ClientClosedError):
            for _ in client.crawl(progress=Watch()):
                pass
    assert closed == [True]

"""Silent caps: a server that stops at N results and says nothing is found out by default.

Against FakeArchive in-process archives (a cap with no Warning header, like
tiny_pacs at 1,000 studies).  Expected answers come from the synthetic
records the archive was built from, never from the server.
"""

from __future__ import annotations

import io
import json
import logging
import pathlib
from typing import Any

import pytest

from aqido import AsyncQidoRS, HierarchicalQuery, QidoRS, QueryLevel
from aqido._paging import iter_pages
from aqido.cli import EXIT_OK, main
from aqido.errors import ResultsTruncatedError
from aqido.partition import (
    SUSPECT_ALWAYS,
    SUSPECT_MIN,
    Caps,
    looks_capped,
    looks_like_cap_plus_one,
)
from aqido.protocol import QidoResponse, parse_warnings
from aqido.testing import FakeArchive, SyntheticArchive

pytestmark = pytest.mark.anyio

#: More studies than the caps below; one series with one instance each (cheap to crawl).
MANY = SyntheticArchive(seed=5, studies=260, series_per_study=1, instances_per_series=1)
MANY_UIDS = {s.study_instance_uid for s in MANY.studies}
#: Exactly as many studies as a typical cap, and no cap at all.
ROUND = SyntheticArchive(seed=6, studies=200, series_per_study=1, instances_per_series=1)
SMALL = SyntheticArchive(seed=7, studies=30, series_per_study=2, instances_per_series=2)


def offsets(archive: FakeArchive, suffix: str = "/studies") -> list[str]:
    """The offsets of the study listings the archive served, in order ('' = none sent)."""
    out = []
    for request in archive.requests:
        if request.path.endswith(suffix):
            out.append(dict(request.params).get("offset", ""))
    return out


# --- the pure rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "count", [100, 101, 128, 129, 150, 200, 201, 256, 500, 1000, 1001, 4096, 5000, 10_000, 12_345]
)
def test_sizes_typical_of_caps_look_capped(count: int) -> None:
    assert looks_capped(count)


@pytest.mark.parametrize("count", [0, 1, 3, 49, 50, 51, 99, 102, 137, 999, 1002, 9_999])
def test_other_sizes_do_not(count: int) -> None:
    assert not looks_capped(count)


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (101, True),
        (129, True),
        (1001, True),
        (100, False),
        (151, True),
        (150, False),
        (99, False),
        (1002, False),
        (102, False),
    ],
)
def test_cap_plus_one_sizes(count: int, expected: bool) -> None:
    assert looks_like_cap_plus_one(count) is expected


def test_thresholds_are_consistent() -> None:
    assert not looks_capped(SUSPECT_MIN - 1)
    assert looks_capped(SUSPECT_MIN)
    assert all(looks_capped(n) for n in range(SUSPECT_ALWAYS, SUSPECT_ALWAYS + 100))


def _response(count: int) -> QidoResponse:
    items = [{"0020000D": {"vr": "UI", "Value": [f"1.2.{i}"]}} for i in range(count)]
    return QidoResponse(status=200, headers={}, items=items, url="http://x/studies")


def test_suspect_only_without_a_limit_and_without_a_known_cap() -> None:
    caps = Caps()
    assert caps.suspect(_response(1000), QueryLevel.STUDY, 0)
    assert not caps.suspect(_response(1000), QueryLevel.STUDY, 1000)  # our own limit
    assert not caps.suspect(_response(999), QueryLevel.STUDY, 0)
    assert not Caps(server_limit=5000).suspect(_response(1000), QueryLevel.STUDY, 0)


def test_a_learned_cap_is_per_level_and_makes_answers_that_large_truncated() -> None:
    caps = Caps()
    caps.learn(QueryLevel.STUDY, 1000)
    assert caps.limit_for("STUDY") == 1000
    assert caps.limit_for(QueryLevel.SERIES) is None
    assert caps.possibly_truncated(_response(1000), QueryLevel.STUDY, 0)
    assert not caps.possibly_truncated(_response(999), QueryLevel.STUDY, 0)
    assert not caps.suspect(_response(1000), QueryLevel.STUDY, 0)  # known: no more guessing
    caps.learn(QueryLevel.STUDY, 1200)  # a larger answer does not raise the cap
    assert caps.limit_for(QueryLevel.STUDY) == 1000


def test_a_configured_cap_wins_over_a_learned_one() -> None:
    caps = Caps(server_limit={"INSTANCE": 7})
    caps.learn(QueryLevel.INSTANCE, 100)
    caps.learn(QueryLevel.STUDY, 100)
    assert caps.limit_for(QueryLevel.INSTANCE) == 7
    assert caps.limit_for(QueryLevel.STUDY) == 100


# --- through the client ------------------------------------------------------------------------


async def test_crawl_finds_a_silent_cap_and_returns_every_study() -> None:
    async with (
        FakeArchive(MANY, max_results=200, truncation_warning=False) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        studies = [study async for study in client.crawl(depth=QueryLevel.SERIES)]
        assert {s.StudyInstanceUID for s in studies} == MANY_UIDS
        assert len(studies) == len(MANY_UIDS)
        assert offsets(archive) == ["", "200", "400"][: len(offsets(archive))]
        assert offsets(archive)[:2] == ["", "200"]


async def test_the_learned_cap_is_kept_for_the_clients_lifetime() -> None:
    async with (
        FakeArchive(MANY, max_results=200, truncation_warning=False) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        first = [s async for s in client.iter_search(HierarchicalQuery())]
        assert {s.StudyInstanceUID for s in first} == MANY_UIDS
        # Now a single search of exactly 200 is known to be possibly truncated ...
        one = await client.search(HierarchicalQuery())
        assert len(one) == 200
        assert one.possibly_truncated
        assert not one.truncated  # the server said nothing
        # ... and a listing that reaches the cap pages on without a suspicion check.
        archive.reset_stats()
        again = [s async for s in client.iter_search(HierarchicalQuery())]
        assert len(again) == len(MANY_UIDS)
        assert offsets(archive)[:2] == ["", "200"]


async def test_an_answer_that_only_looks_capped_costs_one_request() -> None:
    async with (
        FakeArchive(ROUND) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        studies = [s async for s in client.crawl(depth=QueryLevel.SERIES)]
        assert len(studies) == 200
        assert offsets(archive) == ["", "200"]  # one follow-up, found nothing: complete
        archive.reset_stats()
        listed = await client.search_for_studies(get_remaining=True)
        assert len(listed) == 200
        assert offsets(archive) == ["", "200"]


async def test_small_answers_cost_nothing_extra() -> None:
    async with (
        FakeArchive(SMALL) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        studies = [s async for s in client.crawl()]
        assert len(studies) == 30
        sent = [dict(r.params) for r in archive.requests]
        assert not any("offset" in params for params in sent)
        # one listing, one series listing per study, one instance listing per series
        assert len(archive.requests) == 1 + 30 + 30 * 2


async def test_search_never_sends_a_hidden_request_but_marks_a_suspect_answer() -> None:
    async with (
        FakeArchive(MANY, max_results=200, truncation_warning=False) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        results = await client.search(HierarchicalQuery())
        assert len(results) == 200
        assert results.possibly_truncated
        assert not results.truncated
        assert len(archive.requests) == 1
        few = await client.search(HierarchicalQuery(PatientID=MANY.studies[0].patient_id))
        assert not few.possibly_truncated
        paged = await client.search(HierarchicalQuery(limit=10))
        assert paged.possibly_truncated  # a full page of our own limit
        assert len(archive.requests) == 3


@pytest.mark.parametrize("planned", [False, True], ids=["sent-as-is", "planned"])
async def test_a_truncation_with_0_more_is_not_possibly_truncated(planned: bool) -> None:
    # "0 additional results" says nothing was left out: a plain search said so, and a
    # search the profile plans (a wildcard matched locally) said possibly_truncated.
    from aqido.profile import ServerProfile

    rows = [
        {"0020000D": {"vr": "UI", "Value": [f"1.2.{i}"]}, "00100010": {"vr": "PN"}}
        for i in range(3)
    ]
    rows[0]["00100010"] = {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    sent: list[Any] = []

    async def fetch(query: Any, limiter: Any = None, **_: Any) -> QidoResponse:
        sent.append(query)
        warning = parse_warnings(['299 h "There are 0 additional results that can be requested"'])
        return QidoResponse(200, "http://127.0.0.1:9/dicom-web/studies", {}, list(rows), warning)

    profile = ServerProfile(wildcard_star=False) if planned else None
    async with AsyncQidoRS("http://127.0.0.1:9/dicom-web", profile=profile) as client:
        client._fetch = fetch  # type: ignore[method-assign]
        results = await client.search(HierarchicalQuery(PatientName="Doe*"))
    assert ("PatientName=" in sent[0].query_string()) is not planned  # planned: matched here
    assert [r.StudyInstanceUID for r in results] == (
        ["1.2.0"] if planned else ["1.2.0", "1.2.1", "1.2.2"]
    )
    assert results.truncated
    assert results.additional_results == 0
    assert not results.possibly_truncated


async def test_search_for_studies_get_remaining_finds_everything() -> None:
    async with (
        FakeArchive(MANY, max_results=250, truncation_warning=False) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        studies = await client.search_for_studies(get_remaining=True)
        assert {s.StudyInstanceUID for s in studies} == MANY_UIDS
        assert len(studies) == len(MANY_UIDS)
        capped = await client.search_for_studies()
        assert len(capped) == 250
        assert capped.possibly_truncated


async def test_a_suspect_answer_from_a_server_ignoring_offset_is_split_by_the_crawl() -> None:
    async with (
        FakeArchive(ROUND, ignore_offset=True) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        studies = [s async for s in client.crawl(depth=QueryLevel.SERIES)]
        assert {s.StudyInstanceUID for s in studies} == {
            s.study_instance_uid for s in ROUND.studies
        }


async def test_iter_search_warns_when_a_suspect_answer_cannot_be_checked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        FakeArchive(ROUND, ignore_offset=True) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        with caplog.at_level(logging.WARNING, logger="aqido"):
            found = [s async for s in client.iter_search(HierarchicalQuery())]
        assert len(found) == 200
        assert "completeness cannot be checked" in caplog.text


def test_the_blocking_client_finds_the_cap_too() -> None:
    with (
        FakeArchive(MANY, max_results=200, truncation_warning=False).run_in_thread() as archive,
        QidoRS(archive.url, retries=0) as client,
    ):
        studies = client.search_for_studies(get_remaining=True)
        assert len(studies) == len(MANY_UIDS)


# --- the command line --------------------------------------------------------------------------


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err, environ={})
    return status, out.getvalue(), err.getvalue()


def written_uids(path: pathlib.Path) -> set[str]:
    """The StudyInstanceUIDs of the studies in a crawl's output file (one per line, once)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    uids = [line["StudyInstanceUID"] for line in lines if "StudyInstanceUID" in line]
    assert len(uids) == len(set(uids))
    assert lines[-1]["end"]["complete"] is True, lines[-1]
    return set(uids)


def test_cli_crawl_writes_every_study_of_a_silently_capped_archive(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "f.jsonl"
    with FakeArchive(MANY, max_results=200, truncation_warning=False).run_in_thread() as archive:
        status, _, err = run("crawl", archive.url, "--out", str(out), "--no-progress")
    assert status == EXIT_OK, err
    assert written_uids(out) == MANY_UIDS


def test_cli_search_pages_past_a_silent_cap() -> None:
    with FakeArchive(MANY, max_results=200, truncation_warning=False).run_in_thread() as archive:
        status, out, err = run("search", archive.url, "--format", "jsonl")
    assert status == EXIT_OK, err
    found: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
    assert {item["0020000D"]["Value"][0] for item in found} == MANY_UIDS


def test_cli_server_limit_covers_a_cap_applied_before_offset(tmp_path: pathlib.Path) -> None:
    # Orthanc's LimitFindResults: cap + 1 rows, no warning, offset applied after the cap, so
    # the follow-up request cannot see past it; a declared --server-limit makes the crawl split.
    out = tmp_path / "f.jsonl"
    orthanc = FakeArchive.orthanc_like(MANY, max_results=100)
    with orthanc.run_in_thread() as archive:
        status, _, err = run(
            "crawl", archive.url, "--out", str(out), "--no-progress", "--server-limit", "100"
        )
    assert status == EXIT_OK, err
    assert written_uids(out) == MANY_UIDS


def test_cli_crawl_checks_a_cap_plus_one_answer_by_splitting(tmp_path: pathlib.Path) -> None:
    # The same Orthanc-like archive without --server-limit: 101 rows and an empty follow-up
    # prove nothing there, so the crawl splits the query and still finds every study.
    out = tmp_path / "f.jsonl"
    with FakeArchive.orthanc_like(MANY, max_results=100).run_in_thread() as archive:
        status, _, err = run("crawl", archive.url, "--out", str(out), "--no-progress")
    assert status == EXIT_OK, err
    assert written_uids(out) == MANY_UIDS


async def test_iter_search_warns_about_a_cap_plus_one_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        FakeArchive.orthanc_like(MANY, max_results=100) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        with caplog.at_level(logging.WARNING, logger="aqido"):
            found = [s async for s in client.iter_search(HierarchicalQuery())]
        assert len(found) == 101
        assert "server_limit" in caplog.text


# --- iter_search against a known cap (found by review) -------------------------------------------

#: 25 studies: more than a cap of 10, fewer than a page of 20 + 10.
FEW = SyntheticArchive(seed=8, studies=25, series_per_study=1, instances_per_series=1)
FEW_UIDS = {s.study_instance_uid for s in FEW.studies}


@pytest.mark.parametrize(
    ("query", "page_size"), [(HierarchicalQuery(), 20), (HierarchicalQuery(limit=20), None)]
)
async def test_iter_search_pages_past_a_known_cap_smaller_than_the_page_size(
    query: HierarchicalQuery, page_size: int | None
) -> None:
    # A silent cap of 10 under pages of 20: a 10-item page is as large as the cap, not short.
    async with (
        FakeArchive(FEW, max_results=10, truncation_warning=False) as archive,
        AsyncQidoRS(archive.url, retries=0, server_limit=10) as client,
    ):
        found = [s async for s in client.iter_search(query, page_size=page_size)]
        assert {s.StudyInstanceUID for s in found} == FEW_UIDS
        assert len(found) == len(FEW_UIDS)
        assert offsets(archive) == ["", "10", "20"]


async def test_iter_search_refuses_paging_that_a_cap_before_offset_cut_short() -> None:
    # Orthanc's LimitFindResults=50: 51 rows, no warning, offset applied after the cap, so
    # paging ends at 51 of 120 whatever happens; with the cap known that is an error, not 51.
    content = SyntheticArchive(seed=9, studies=120, series_per_study=1, instances_per_series=1)
    async with (
        FakeArchive.orthanc_like(content, max_results=50) as archive,
        AsyncQidoRS(archive.url, retries=0, server_limit=50) as client,
    ):
        with pytest.raises(ResultsTruncatedError, match="use crawl"):
            _ = [s async for s in client.iter_search(HierarchicalQuery())]
        with pytest.raises(ResultsTruncatedError):
            await client.search_for_studies(get_remaining=True)
        crawled = [s async for s in client.crawl(depth=QueryLevel.STUDY)]
        assert len({s.StudyInstanceUID for s in crawled}) == 120
        # a query under the cap is answered as before
        one = content.studies[0].patient_id
        few = [s async for s in client.iter_search(HierarchicalQuery(PatientID=one))]
        assert few
        assert all(s.PatientID == one for s in few)


async def test_iter_pages_checks_paging_against_a_known_cap() -> None:
    """The seam itself: a cap before offset ends paging at cap + 1, which is refused."""
    rows = [{"0020000D": {"vr": "UI", "Value": [f"1.2.{i}"]}} for i in range(300)]

    async def fetch(query: Any, limiter: Any) -> QidoResponse:
        page = rows[:101][query.offset :]  # cap 100 (+1) applied before the offset
        if query.limit:
            page = page[: query.limit]
        return QidoResponse(200, "http://h/studies", {}, page)

    with pytest.raises(ResultsTruncatedError, match="101 results"):
        async for _page in iter_pages(fetch, HierarchicalQuery(), caps=Caps(server_limit=100)):
            pass
    with pytest.raises(ResultsTruncatedError, match="101 results"):  # and with a page size
        async for _page in iter_pages(
            fetch, HierarchicalQuery(), page_size=30, caps=Caps(server_limit=100)
        ):
            pass
    got = [p async for p in iter_pages(fetch, HierarchicalQuery(), caps=Caps(server_limit=200))]
    assert sum(len(p.items) for p in got) == 101  # under a cap of 200: complete


async def test_iter_pages_refuses_to_end_short_of_an_announced_total() -> None:
    rows = [{"0020000D": {"vr": "UI", "Value": [f"1.2.{i}"]}} for i in range(30)]

    async def fetch(query: Any, limiter: Any) -> QidoResponse:
        if query.offset:
            return QidoResponse(200, "http://h/studies", {}, rows[10:15])  # 15 of 30 reached
        warning = parse_warnings(['299 h "There are 20 additional results that can be requested"'])
        return QidoResponse(200, "http://h/studies", {}, rows[:10], warning)

    with pytest.raises(ResultsTruncatedError, match="announced 30"):
        async for _page in iter_pages(fetch, HierarchicalQuery(), caps=Caps()):
            pass


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_cli_server_limit_must_be_a_positive_int(value: str) -> None:
    status, _, err = run("search", "http://127.0.0.1:9/dicom-web", "--server-limit", value)
    assert status == 2
    assert "--server-limit" in err


# --- a page size, or pages, that hide a silent cap (found by review) -----------------------------


def test_an_answer_short_of_the_limit_sent_is_suspect_when_it_looks_capped() -> None:
    caps = Caps()
    assert caps.suspect(_response(200), QueryLevel.STUDY, 500)  # limit=500, a silent cap of 200
    assert not caps.suspect(_response(199), QueryLevel.STUDY, 500)
    assert not caps.suspect(_response(500), QueryLevel.STUDY, 500)  # a full page: paged anyway


async def test_a_page_size_above_a_silent_cap_finds_every_study() -> None:
    # A silent cap of 200 answers limit=500 with 200 items: not a short last page.
    async with FakeArchive(MANY, max_results=200, truncation_warning=False) as archive:
        async with AsyncQidoRS(archive.url, retries=0) as client:
            crawled = [s async for s in client.crawl(depth=QueryLevel.STUDY, page_size=500)]
            assert {s.StudyInstanceUID for s in crawled} == MANY_UIDS
        async with AsyncQidoRS(archive.url, retries=0) as client:
            query = HierarchicalQuery()
            found = [s async for s in client.iter_search(query, page_size=500)]
            assert {s.StudyInstanceUID for s in found} == MANY_UIDS
        async with AsyncQidoRS(archive.url, retries=0) as client:
            studies = await client.search_for_studies(limit=500, get_remaining=True)
            assert {s.StudyInstanceUID for s in studies} == MANY_UIDS
            assert len(studies) == len(MANY_UIDS)
        async with AsyncQidoRS(archive.url, retries=0) as client:
            one = await client.search_for_studies(limit=500)
            assert len(one) == 200
            assert one.possibly_truncated


@pytest.mark.parametrize("page_size", [100, 50])
async def test_a_crawl_splits_pages_that_add_up_to_a_cap_plus_one(page_size: int) -> None:
    # Orthanc's LimitFindResults=100 pages 100 + 1 (or 50 + 50 + 1) rows, then nothing.
    async with (
        FakeArchive.orthanc_like(MANY, max_results=100) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        studies = [s async for s in client.crawl(depth=QueryLevel.STUDY, page_size=page_size)]
        assert {s.StudyInstanceUID for s in studies} == MANY_UIDS
        assert len(studies) == len(MANY_UIDS)


async def test_get_remaining_says_possibly_truncated_where_paging_cannot_rule_out_a_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        FakeArchive(ROUND, ignore_offset=True) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        studies = await client.search_for_studies(get_remaining=True)
        assert len(studies) == 200
        assert studies.possibly_truncated  # as a plain search of the same answer says
    async with (
        FakeArchive.orthanc_like(MANY, max_results=100) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        for limit in (None, 50):  # one answer of 101, or pages of 50 + 50 + 1
            with caplog.at_level(logging.WARNING, logger="aqido"):
                studies = await client.search_for_studies(limit=limit, get_remaining=True)
            assert len(studies) == 101
            assert studies.possibly_truncated
            assert "server_limit" in caplog.text
            caplog.clear()
    async with (
        FakeArchive(MANY, max_results=250, truncation_warning=False) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        studies = await client.search_for_studies(get_remaining=True)
        assert len(studies) == len(MANY_UIDS)
        assert not studies.possibly_truncated  # paged past the cap: complete


async def test_a_crawl_warns_about_an_instance_listing_of_a_cap_plus_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Orthanc's LimitFindInstances=100: 101 of a series' 130 instances; instances cannot be
    # split to check, so the crawl keeps them, but says so instead of nothing.
    content = SyntheticArchive(seed=10, studies=1, series_per_study=1, instances_per_series=130)
    async with (
        FakeArchive.orthanc_like(content, max_results=100) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        with caplog.at_level(logging.WARNING, logger="aqido"):
            studies = [s async for s in client.crawl(depth=QueryLevel.INSTANCE)]
        assert len(studies[0].series[0].instances) == 101
        assert "/instances returned 101 results" in caplog.text
        assert "server_limit" in caplog.text


async def test_possibly_truncated_is_documented_as_search_sets_it() -> None:
    # Found by review: SearchResults.possibly_truncated was documented to flag a size
    # that looks like a silent cap only when no limit was sent, but an answer short of
    # the limit sent (a page size above the cap) is flagged too.
    from aqido._search_results import SearchResults

    async with (
        FakeArchive(MANY, max_results=200, truncation_warning=False) as archive,
        AsyncQidoRS(archive.url, retries=0) as client,
    ):
        results = await client.search(HierarchicalQuery(limit=500))
        assert len(results) == 200
        assert results.possibly_truncated
    doc = " ".join((SearchResults.__doc__ or "").split())
    assert "no ``limit`` sent or short of the one sent" in doc


def test_round_totals_from_10000_up_look_like_a_cap_before_the_offset() -> None:
    from aqido._caps import looks_like_cap_before_offset

    assert looks_like_cap_before_offset(10_000)  # AWS HealthImaging: 10,000, before offset
    assert looks_like_cap_before_offset(20_000)
    assert looks_like_cap_before_offset(101)  # Orthanc's cap + 1
    assert looks_like_cap_before_offset(10_001)  # and its + 1 (Orthanc)
    assert not looks_like_cap_before_offset(10_049)
    assert not looks_like_cap_before_offset(9_999)
    assert not looks_like_cap_before_offset(5_000)  # a follow-up page settles those


HEALTHIMAGING_LIKE = SyntheticArchive(
    seed=9, studies=10_300, series_per_study=1, instances_per_series=1
)


async def test_a_crawl_finds_every_study_past_a_cap_of_10000_before_the_offset() -> None:
    # A server that caps the matches at 10,000 before applying the offset, without the + 1
    # (AWS HealthImaging): 10,000 studies, however they are paged, and an empty page past
    # them.  The crawl believed it and returned 10,000 of 10,300 as complete.
    archive = FakeArchive(
        HEALTHIMAGING_LIKE, max_results=10_000, cap_before_offset=True, truncation_warning=False
    )
    async with archive, AsyncQidoRS(archive.url, retries=0) as client:
        found = {s.StudyInstanceUID async for s in client.crawl(depth=QueryLevel.STUDY)}
    assert found == {s.study_instance_uid for s in HEALTHIMAGING_LIKE.studies}


async def test_splitting_stops_at_a_key_the_server_ignores(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A cap + 1 answer is checked by splitting, by StudyDate first; a server that ignores
    # StudyDate answers every part with the whole capped listing, dates outside the part
    # and all, and each part used to be split again, down to single seconds and modalities.
    from aqido.profile import ServerProfile

    keys = ("StudyInstanceUID", "PatientID", "ModalitiesInStudy", "StudyTime")
    profile = ServerProfile(
        max_results=100,
        cap_warning=False,
        cap_plus_one=True,
        cap_before_offset=True,
        matched_keys=keys,
        unsupported_keys="ignore",
    )
    caplog.set_level(logging.WARNING, logger="aqido")
    async with FakeArchive(MANY, profile=profile) as archive:
        async with AsyncQidoRS(archive.url, retries=0) as client:
            found = [s async for s in client.crawl(depth=QueryLevel.STUDY)]
        sent = [r.query_string for r in archive.requests]
    assert len(found) == 101  # all the server gives (cap + 1); it cannot be checked further
    assert any("ignores StudyDate" in r.getMessage() for r in caplog.records)
    assert len(sent) < 20, sent  # each date part answered once, not split again

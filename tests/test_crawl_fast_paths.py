"""The crawl's fast paths (from profiling the benchmarks) keep their exact behaviour.

- children are attached to a study/series by a shallow copy, not ``attrs.evolve``:
  the result must be the object ``evolve`` would build;
- an unpaged query is sent as it is (no rebuilt copy);
- concurrency tokens are taken without an extra event-loop turn when free, and
  are always given back (success, HTTP error, cancellation);
- the lone-surrogate check of query text is a regex now.
"""

from __future__ import annotations

from typing import Any

import anyio
import attrs
import pytest

from aqido.client import AsyncQidoRS
from aqido.crawl import iter_pages
from aqido.errors import InvalidQueryError, ServerError
from aqido.protocol import QidoResponse
from aqido.query import HierarchicalQuery, QueryLevel
from aqido.results import Series, Study, parse_results
from aqido.testing import FakeArchive, SyntheticArchive

SYNTH = SyntheticArchive(seed=3, studies=6, series_per_study=2, instances_per_series=3)


def _study_json(n: int) -> dict[str, Any]:
    return {
        "0020000D": {"vr": "UI", "Value": [f"1.2.3.{n}"]},
        "00080020": {"vr": "DA", "Value": ["20240131"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00201206": {"vr": "IS", "Value": [2]},
    }


def test_with_series_builds_what_evolve_builds() -> None:
    (study,) = parse_results([_study_json(1)], QueryLevel.STUDY)
    assert study.PatientName is not None  # one field already converted (cached) ...
    series = parse_results(
        [{"0020000E": {"vr": "UI", "Value": [f"1.2.3.1.{k}"]}} for k in range(2)],
        QueryLevel.SERIES,
    )
    fast = study.with_series(iter(series))
    slow = attrs.evolve(study, series=tuple(series))
    assert type(fast) is Study
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert fast.series == tuple(series)
    assert isinstance(fast.series, tuple)
    assert fast.to_json() == slow.to_json() == study.to_json()
    for field in attrs.fields(Study):  # ... and the others still convert on first use
        assert getattr(fast, field.name) == getattr(slow, field.name)
    assert study.series == ()  # the original is untouched
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.StudyDate = None  # type: ignore[misc]


@pytest.mark.anyio
async def test_crawl_results_equal_trees_built_with_evolve() -> None:
    async with FakeArchive(SYNTH) as archive, AsyncQidoRS(archive.url, retries=0) as qido:
        crawled = {s.StudyInstanceUID: s async for s in qido.crawl()}
        expected = {}
        for study in await qido.search(HierarchicalQuery()):
            uid = study.StudyInstanceUID
            series_list = await qido.search(
                HierarchicalQuery(query_level=QueryLevel.SERIES, StudyInstanceUID=uid)
            )
            children = []
            for series in series_list:
                instances = await qido.search(
                    HierarchicalQuery(
                        query_level=QueryLevel.INSTANCE,
                        StudyInstanceUID=uid,
                        SeriesInstanceUID=series.SeriesInstanceUID,
                    )
                )
                children.append(attrs.evolve(series, instances=tuple(instances)))
            expected[uid] = attrs.evolve(study, series=tuple(children))
    assert crawled.keys() == expected.keys()
    for uid, study in crawled.items():
        other = expected[uid]
        assert {s.SeriesInstanceUID: s for s in study.series} == {
            s.SeriesInstanceUID: s for s in other.series
        }
        assert attrs.evolve(study, series=()) == attrs.evolve(other, series=())
        assert all(isinstance(s, Series) and len(s.instances) == 3 for s in study.series)


@pytest.mark.anyio
async def test_an_unpaged_query_is_sent_as_it_is() -> None:
    sent: list[Any] = []

    async def fetch(query: Any, limiter: anyio.CapacityLimiter | None) -> QidoResponse:
        sent.append(query)
        return QidoResponse(200, "http://h/studies", {}, [_study_json(1)], ())

    query = HierarchicalQuery(PatientID="X", offset=4)
    pages = [page async for page in iter_pages(fetch, query)]
    assert len(pages) == 1
    assert sent == [query]
    assert sent[0] is query


@pytest.mark.anyio
async def test_concurrency_tokens_come_back_after_success_errors_and_cancellation() -> None:
    async with (
        FakeArchive(SYNTH, latency=0.05) as archive,
        AsyncQidoRS(archive.url, retries=0, max_concurrency=2) as qido,
    ):
        await qido.search(HierarchicalQuery())
        limiter = qido._limiter
        assert limiter is not None
        assert limiter.borrowed_tokens == 0

        archive.fail("studies", "500", times=1)
        with pytest.raises(ServerError):
            await qido.search(HierarchicalQuery())
        assert limiter.borrowed_tokens == 0

        # Three searches for two tokens: one waits in line; cancel all mid-flight.
        with anyio.move_on_after(0.02):
            async with anyio.create_task_group() as group:
                for _ in range(3):
                    group.start_soon(qido.search, HierarchicalQuery())
        assert limiter.borrowed_tokens == 0
        assert limiter.statistics().tasks_waiting == 0

        # And a crawl (per-crawl limiter + client limiter) still finishes and cleans up.
        # The server finishes the abandoned requests (its handlers are not cancelled by the
        # client going away); wait for that, or they would count towards the crawl's peak.
        for _ in range(1000):  # at most ~10 s
            if not archive._in_flight:
                break
            await anyio.sleep(0.01)
        assert archive._in_flight == 0
        archive.reset_stats()
        crawled = [s async for s in qido.crawl(max_concurrency=1)]
        assert len(crawled) == len(SYNTH.studies)
        assert limiter.borrowed_tokens == 0
        assert archive.peak_concurrency == 1


def test_lone_surrogates_are_still_refused_in_non_ascii_text() -> None:
    assert HierarchicalQuery(PatientName="Müller^Jürgen").PatientName == "Müller^Jürgen"
    assert HierarchicalQuery(PatientName="山田^太郎*").PatientName == "山田^太郎*"
    for bad in ("M\udcfcller", "山田\ud800"):
        with pytest.raises(InvalidQueryError, match="surrogate"):
            HierarchicalQuery(PatientName=bad)

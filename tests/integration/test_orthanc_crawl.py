"""Complete crawls against a real Orthanc that caps its answers (LimitFindResults).

Orthanc answers a capped query with cap + 1 rows, no Warning, and applies the
cap before ``offset``, so paging cannot get past it: only splitting the query
works.  Expected answers come from the synthetic records the servers were
seeded with.
"""

from __future__ import annotations

import datetime as dt

import pytest

from aqido import AsyncQidoRS, CrawlStats, HierarchicalQuery
from aqido.partition import MODALITIES, _tm_high, _tm_low, _with_time, split_study_query
from aqido.testing.orthanc import OrthancServer
from tests.crawl_data import tree_of
from tests.integration.support import CAP_INSTANCES, CAP_RESULTS, CAPPED, SEEDED

pytestmark = pytest.mark.integration

LIMITS = {"STUDY": CAP_RESULTS, "SERIES": CAP_RESULTS, "INSTANCE": CAP_INSTANCES}


def expected_tree() -> dict[str, dict[str, set[str]]]:
    return {
        study.study_instance_uid: {
            series.series_instance_uid: {i.sop_instance_uid for i in series.instances}
            for series in study.series
        }
        for study in CAPPED.studies
    }


@pytest.mark.anyio
async def test_a_capped_orthanc_is_crawled_completely(orthanc_capped: OrthancServer) -> None:
    assert len(CAPPED.studies) > 3 * CAP_RESULTS
    stats = CrawlStats()
    async with AsyncQidoRS(orthanc_capped.dicomweb_url, max_concurrency=4) as qido:
        studies = [s async for s in qido.crawl(server_limit=LIMITS, stats=stats)]
        # without being told the cap, nothing shows that Orthanc truncated the listing
        silent = [s async for s in qido.crawl(depth="STUDY")]
    assert tree_of(studies) == expected_tree()
    assert stats.complete
    assert stats.splits > 0
    assert len(silent) == CAP_RESULTS + 1


@pytest.mark.anyio
async def test_a_capped_orthanc_is_crawled_completely_with_a_page_size(
    orthanc_capped: OrthancServer,
) -> None:
    async with AsyncQidoRS(orthanc_capped.dicomweb_url) as qido:
        studies = [s async for s in qido.crawl(depth="SERIES", server_limit=LIMITS, page_size=4)]
    assert {s.StudyInstanceUID: len(s.series) for s in studies} == {
        s.study_instance_uid: len(s.series) for s in CAPPED.studies
    }


async def uids(qido: AsyncQidoRS, queries: list[HierarchicalQuery]) -> set[str]:
    found: set[str] = set()
    for query in queries:
        found.update(str(s.StudyInstanceUID) for s in await qido.search(query))
    return found


def _time_part(low: int, high: int) -> HierarchicalQuery:
    """A part of a split by StudyTime, its bounds written as the splitter writes these seconds."""
    return _with_time(HierarchicalQuery(), _tm_low(low), _tm_high(high))


@pytest.mark.anyio
async def test_split_parts_cover_everything_on_orthanc(orthanc: OrthancServer) -> None:
    """The encodings of the parts (open date ranges, TM bounds, modalities) as Orthanc reads them.

    Stored times include HHMM and fractional seconds; Orthanc must still put
    every study in exactly the parts that cover it.
    """
    every = {s.study_instance_uid for s in SEEDED.studies}
    today = dt.date(2015, 6, 30)  # the archive spans 2005-2024: studies after "today" too
    async with AsyncQidoRS(orthanc.dicomweb_url) as qido:
        dates = split_study_query(HierarchicalQuery(), today=today)
        assert dates is not None
        halves = split_study_query(dates[1], today=today)
        assert halves is not None
        assert await uids(qido, [dates[0], *halves, dates[2]]) == every

        hours = [_time_part(h * 3600, h * 3600 + 3599) for h in range(24)]
        assert await uids(qido, hours) == every
        minutes = [_time_part(m * 60, m * 60 + 59) for m in range(600, 720)]
        expected = {
            s.study_instance_uid for s in SEEDED.studies if "10" <= s.study_time[:2] <= "11"
        }
        assert await uids(qido, minutes) == expected

        by_modality = [HierarchicalQuery(ModalitiesInStudy=m) for m in MODALITIES]
        assert await uids(qido, by_modality) == every

"""Moving from dicomtrolley's QidoRS to aqido: the same search, side by side.

    python examples/from_dicomtrolley.py [URL]

dicomtrolley (synchronous, requests) and aqido (asynchronous, aiohttp) run the
same query against the same archive (URL or $AQIDO_URL; without it, aqido's
in-process demo archive) and must find the same studies, series and instances.
The dicomtrolley half needs ``pip install dicomtrolley``; without it, only aqido runs.

What changes:

    dicomtrolley                                   aqido
    ---------------------------------------------  ---------------------------------------------
    from dicomtrolley.qido_rs import QidoRS        from aqido import AsyncQidoRS
    qido = QidoRS(session=requests.Session(),      async with AsyncQidoRS(url) as qido:
                  url=url)
    qido.find_studies(query)                       await qido.find_studies(query)  (same query)
    Query(PatientName=..., min_study_date=...,     HierarchicalQuery(...) (same field names;
          max_study_date=..., query_level=...)       dicomtrolley queries are accepted as is)
    study.uid, study.series, series.instances      study.StudyInstanceUID, .series, .instances
    study.data.PatientName (pydicom)               study.PatientName (typed), study.to_pydicom()
    one request at a time                          await qido.search_many(queries), qido.crawl()
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
from typing import Any

from aqido import AsyncQidoRS, HierarchicalQuery, QueryLevel, RelationalQuery, Study
from aqido.testing import archive_url

NAME = "D*"
START, END = dt.datetime(2005, 1, 1), dt.datetime(2024, 12, 31)
Tree = dict[str, dict[str, int]]  # {study UID: {series UID: number of instances}}


def dicomtrolley_query() -> Any:
    """The query, as a dicomtrolley user writes it (None if dicomtrolley is not installed)."""
    try:
        from dicomtrolley.core import Query, QueryLevels
    except ImportError:
        return None
    return Query(
        PatientName=NAME, min_study_date=START, max_study_date=END, query_level=QueryLevels.INSTANCE
    )


def with_dicomtrolley(url: str, query: Any) -> Tree:
    """dicomtrolley: a blocking requests session, one request at a time."""
    import requests
    from dicomtrolley.qido_rs import QidoRS

    with requests.Session() as session:
        studies = QidoRS(session=session, url=url).find_studies(query)
    return {st.uid: {se.uid: len(se.instances) for se in st.series} for st in studies}


async def with_aqido(url: str, query: Any) -> tuple[Tree, Tree]:
    """aqido: the same call awaited, and the aqido way (a concurrent crawl) for comparison."""
    if query is None:  # no dicomtrolley: the same query in aqido's own terms
        query = RelationalQuery(
            query_level=QueryLevel.INSTANCE,
            PatientName=NAME,
            min_study_date=START,
            max_study_date=END,
        )
    async with AsyncQidoRS(url) as qido:
        # A dicomtrolley query is accepted as is, and find_studies returns the same tree shape.
        found = await qido.find_studies(query)
        # For big archives: walk studies -> series -> instances, many requests in flight.
        crawled = [
            study
            async for study in qido.crawl(
                HierarchicalQuery(PatientName=NAME, min_study_date=START, max_study_date=END)
            )
        ]
    return _tree(found), _tree(crawled)


def _tree(studies: list[Study]) -> Tree:
    return {
        str(st.StudyInstanceUID): {str(se.SeriesInstanceUID): len(se.instances) for se in st.series}
        for st in studies
    }


async def main(url: str | None) -> None:
    query = dicomtrolley_query()
    async with archive_url(url) as base:
        found, crawled = await with_aqido(base, query)
        theirs = None
        if query is not None:
            # dicomtrolley blocks: run it in a thread so the demo archive (this loop) can answer.
            theirs = await asyncio.to_thread(with_dicomtrolley, base, query)
    instances = sum(sum(series.values()) for series in found.values())
    print(f"aqido find_studies: {len(found)} studies, {instances} instances")
    assert crawled == found, "find_studies and crawl disagree"
    print("aqido crawl:        the same studies, series and instances")
    if theirs is None:
        print("dicomtrolley is not installed (pip install dicomtrolley): showing aqido only")
        return
    found_theirs = sum(sum(series.values()) for series in theirs.values())
    print(f"dicomtrolley:       {len(theirs)} studies, {found_theirs} instances")
    assert theirs == found, "dicomtrolley and aqido disagree"
    print("same studies, series and instances")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AQIDO_URL")))

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
    qido.find_studies(query)                       await qido.find_studies(query)
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

from aqido import AsyncQidoRS, HierarchicalQuery, QueryLevel
from aqido.testing import archive_url

FIELDS = {
    "PatientName": "D*",
    "query_level": "INSTANCE",  # dicomtrolley: Query(query_level=QueryLevel.INSTANCE)
}
START, END = dt.datetime(2005, 1, 1), dt.datetime(2024, 12, 31)


def with_dicomtrolley(url: str) -> dict[str, dict[str, int]] | None:
    """dicomtrolley: a blocking requests session; returns {study: {series: n_instances}}."""
    try:
        import requests
        from dicomtrolley.core import Query
        from dicomtrolley.core import QueryLevels as DTLevels
        from dicomtrolley.qido_rs import QidoRS
    except ImportError:
        print("dicomtrolley is not installed: showing aqido only")
        return None
    query = Query(
        PatientName=FIELDS["PatientName"],
        min_study_date=START,
        max_study_date=END,
        query_level=DTLevels.INSTANCE,
    )
    with requests.Session() as session:
        studies = QidoRS(session=session, url=url).find_studies(query)
    return {st.uid: {se.uid: len(se.instances) for se in st.series} for st in studies}


async def with_aqido(url: str) -> dict[str, dict[str, int]]:
    """aqido: the same query and tree, asynchronously."""
    query = HierarchicalQuery(
        PatientName=FIELDS["PatientName"],
        min_study_date=START,
        max_study_date=END,
        query_level=QueryLevel.STUDY,
    )
    async with AsyncQidoRS(url) as qido:
        # find_studies at INSTANCE level needs a study UID in a hierarchical query, so
        # aqido crawls the matching studies instead: concurrent, complete, paged.
        studies = [study async for study in qido.crawl(query)]
    return {
        st.StudyInstanceUID: {se.SeriesInstanceUID: len(se.instances) for se in st.series}
        for st in studies
    }


async def main(url: str | None) -> None:
    async with archive_url(url) as base:
        mine = await with_aqido(base)
        # dicomtrolley blocks: run it in a thread so the demo archive (this loop) can answer.
        theirs = await asyncio.to_thread(with_dicomtrolley, base)
    instances = sum(sum(series.values()) for series in mine.values())
    print(f"aqido:        {len(mine)} studies, {instances} instances")
    if theirs is not None:
        found = sum(sum(series.values()) for series in theirs.values())
        print(f"dicomtrolley: {len(theirs)} studies, {found} instances")
        assert theirs == mine, "dicomtrolley and aqido disagree"
        print("same studies, series and instances")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AQIDO_URL")))

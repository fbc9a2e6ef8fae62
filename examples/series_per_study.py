"""List the series of many studies concurrently (one request per study, several in flight).

    python examples/series_per_study.py [URL]

URL (or $AQIDO_URL) is your archive's QIDO-RS root; without it, the script starts
aqido's in-process demo archive.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from aqido import AsyncQidoRS, HierarchicalQuery, QueryLevel
from aqido.testing import archive_url


async def main(url: str | None) -> None:
    async with archive_url(url) as base, AsyncQidoRS(base, max_concurrency=8) as client:
        studies = await client.search(HierarchicalQuery(ModalitiesInStudy="CT", limit=20))
        queries = [
            HierarchicalQuery(query_level=QueryLevel.SERIES, StudyInstanceUID=s.StudyInstanceUID)
            for s in studies
        ]
        started = time.perf_counter()
        # Results come back in the order of the queries; at most 8 requests in flight.
        all_series = await client.search_many(queries)
        elapsed = time.perf_counter() - started
    for study, series in zip(studies, all_series, strict=True):
        modalities = ", ".join(f"{s.Modality} #{s.SeriesNumber}" for s in series)
        print(f"{study.StudyInstanceUID}: {len(series)} series ({modalities})")
    print(f"{len(queries)} series searches in {elapsed:.2f} s")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AQIDO_URL")))

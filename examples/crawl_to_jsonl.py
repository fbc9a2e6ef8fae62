"""Crawl every study with its series and instances into a JSON Lines file, resumably.

    python examples/crawl_to_jsonl.py [URL] [OUT.jsonl]

One complete study per line (the format of ``aqido crawl``: a
:class:`~aqido.CrawlCheckpoint`). Run the script again after an interruption
and it resumes: the studies already in the file are skipped. URL (or
$AQIDO_URL) is your archive's QIDO-RS root; without it, the script starts
aqido's in-process demo archive.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from aqido import AsyncQidoRS, CrawlCheckpoint, CrawlStats, HierarchicalQuery
from aqido.testing import archive_url


async def main(url: str | None, out: Path) -> None:
    stats = CrawlStats()  # live counters: read them from a progress display if you like
    async with archive_url(url) as base, AsyncQidoRS(base, max_concurrency=8) as client:
        # Each study is written (and yielded) as soon as its whole subtree has been fetched.
        async for _study in client.crawl(HierarchicalQuery(), checkpoint=out, stats=stats):
            pass
    print(stats.summary())
    studies = list(CrawlCheckpoint.read_studies(out))
    series = sum(len(study.series) for study in studies)
    instances = sum(len(s.instances) for study in studies for s in study.series)
    print(f"{out}: {len(studies)} studies, {series} series, {instances} instances")


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AQIDO_URL")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "studies.jsonl")
    asyncio.run(main(url, out))

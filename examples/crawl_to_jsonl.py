"""Crawl every study with its series and instances into a JSON Lines file.

    python examples/crawl_to_jsonl.py [URL] [OUT.jsonl]

One complete study per line (the format of ``aqido crawl``, read back with
``aqido.crawlfile.read_studies``). URL (or $AQIDO_URL) is your archive's QIDO-RS
root; without it, the script starts aqido's in-process demo archive. For a
resumable crawl with a progress bar, use the command line: ``aqido crawl URL --out FILE``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from aqido import AsyncQidoRS, HierarchicalQuery
from aqido.crawlfile import dumps_line, read_studies, study_record
from aqido.testing import archive_url


async def main(url: str | None, out: Path) -> None:
    async with archive_url(url) as base, AsyncQidoRS(base, max_concurrency=8) as client:
        with out.open("wb") as lines:
            # Each study arrives as soon as its whole subtree has been fetched.
            async for study in client.crawl(HierarchicalQuery(), page_size=100):
                lines.write(dumps_line(study_record(study)))
    studies = list(read_studies(out))
    series = sum(len(study.series) for study in studies)
    instances = sum(len(s.instances) for study in studies for s in study.series)
    print(f"{out}: {len(studies)} studies, {series} series, {instances} instances")


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AQIDO_URL")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "studies.jsonl")
    asyncio.run(main(url, out))

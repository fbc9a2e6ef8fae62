"""A plain search's cold start loads only what a plain search needs (issue 18).

The target: a fresh process that imports aqido and runs one search costs at
most 50 ms more than the same script with bare aiohttp (``benchmarks/cpu.py``,
``cold_start``).  Most of that budget went to importing modules a plain
search never uses; they are imported where their feature starts now:

- the planner (:mod:`aqido.plan`, :mod:`aqido.matching`) and
  :mod:`aqido.profile`: with a ``profile=`` only;
- the crawl machinery (:mod:`aqido.crawl`, checkpoints, progress, stats):
  by the first ``crawl()``;
- paging (:mod:`aqido._paging`, and the trusted child queries it derives,
  :mod:`aqido._trusted`): by the first ``iter_search`` or crawl;
- query splitting (:mod:`aqido.partition`): by the first crawl or planned
  search; a search checks its answer with :mod:`aqido._caps` alone;
- :mod:`aqido.adaptive`: with ``max_concurrency="auto"`` only; and
  :mod:`statistics` not at all;
- anyio and the task groups of :mod:`aqido._tasks`: by the first crawl,
  ``search_many`` or planned search, or the blocking client (a plain search
  times out with :func:`asyncio.timeout`, sleeps and locks with asyncio);
- the data dictionary (pydicom's table, ~9 ms): by the first query with
  ``filters`` or the first look-up of a keyword.

Pinned by what a fresh interpreter has loaded after one search, not by timing.
"""

from __future__ import annotations

import subprocess
import sys

#: Modules a plain search must not import.
NOT_LOADED = (
    "anyio",
    "aqido._paging",
    "aqido._tasks",
    "aqido._trusted",
    "aqido.adaptive",
    "aqido.checkpoint",
    "aqido.crawl",
    "aqido.matching",
    "aqido.partition",
    "aqido.plan",
    "aqido.profile",
    "aqido.progress",
    "aqido.stats",
    "pydicom",
    "statistics",
)

SCRIPT = r"""
import asyncio, json, sys

STUDY = {
    "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
    "00080020": {"vr": "DA", "Value": ["20240131"]},
}


async def serve(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    body = json.dumps([STUDY]).encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )
    await writer.drain()
    writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    from aqido import AsyncQidoRS, HierarchicalQuery

    async with AsyncQidoRS(f"http://127.0.0.1:{port}") as client:
        studies = await client.search(HierarchicalQuery(limit=10))
    assert studies[0].StudyInstanceUID == "1.2.3", studies
    assert str(studies[0].StudyDate) == "2024-01-31", studies
    server.close()


asyncio.run(main())
import aqido.dictionary

print(json.dumps({
    "loaded": sorted(m for m in sys.argv[1:] if m in sys.modules),
    "dictionary_loaded": aqido.dictionary._tables.cache_info().currsize > 0,
}))
"""


def _after_one_search() -> dict[str, object]:
    import json

    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, *NOT_LOADED],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_plain_search_loads_no_planner_crawl_adaptive_or_dictionary() -> None:
    assert _after_one_search() == {"loaded": [], "dictionary_loaded": False}

"""The client and the CLI against tiny_pacs holding more than its silent 1,000-result cap.

tiny_pacs answers a listing without ``limit`` with at most 1,000 results and
no Warning header (docs/tinypacs.md); ``offset`` works.  Every path that
promises a complete answer must still return all of ``BIG``'s 1,050 studies
(issue 13: silent caps detected by default), and ``search()``, one request,
must say its answer may be capped.
"""

from __future__ import annotations

import io
import json
import pathlib

import pytest

from aqido.checkpoint import CrawlCheckpoint
from aqido.cli import EXIT_OK, main
from aqido.client import AsyncQidoRS
from aqido.query import HierarchicalQuery
from aqido.testing.tinypacs import TinyPacsServer
from tests.integration.support import BIG, TINYPACS_CAP

pytestmark = pytest.mark.integration

EVERY = sorted(s.study_instance_uid for s in BIG.studies)


def test_the_archive_is_bigger_than_the_cap() -> None:
    assert len(EVERY) == len(set(EVERY)) > TINYPACS_CAP


@pytest.mark.anyio
@pytest.mark.parametrize("page_size", [400, 1000, 1049])
async def test_iter_search_with_a_page_size_finds_everything(
    tinypacs_big: TinyPacsServer, page_size: int
) -> None:
    async with AsyncQidoRS(tinypacs_big.dicomweb_url) as qido:
        found = [
            s.StudyInstanceUID
            async for s in qido.iter_search(HierarchicalQuery(), page_size=page_size)
        ]
    assert sorted(found) == EVERY


@pytest.mark.anyio
async def test_one_search_gets_the_servers_first_1000(tinypacs_big: TinyPacsServer) -> None:
    # One request, no hidden follow-ups: what the server sent, in its order.
    async with AsyncQidoRS(tinypacs_big.dicomweb_url) as qido:
        found = await qido.search(HierarchicalQuery())
    assert [s.StudyInstanceUID for s in found] == [
        s.study_instance_uid for s in BIG.studies[:TINYPACS_CAP]
    ]
    assert found.possibly_truncated
    assert not found.truncated  # nothing said so: the server sent no Warning


@pytest.mark.anyio
async def test_crawl_finds_everything(tinypacs_big: TinyPacsServer) -> None:
    async with AsyncQidoRS(tinypacs_big.dicomweb_url, max_concurrency=4) as qido:
        found = [s.StudyInstanceUID async for s in qido.crawl()]
    assert sorted(found) == EVERY


@pytest.mark.anyio
async def test_iter_search_without_a_page_size_finds_everything(
    tinypacs_big: TinyPacsServer,
) -> None:
    async with AsyncQidoRS(tinypacs_big.dicomweb_url) as qido:
        found = [s.StudyInstanceUID async for s in qido.iter_search(HierarchicalQuery())]
    assert sorted(found) == EVERY


@pytest.mark.anyio
async def test_search_for_studies_get_remaining_finds_everything(
    tinypacs_big: TinyPacsServer,
) -> None:
    async with AsyncQidoRS(tinypacs_big.dicomweb_url) as qido:
        found = await qido.search_for_studies(get_remaining=True)
    assert sorted(s.StudyInstanceUID for s in found) == EVERY


def test_cli_crawl_with_no_options_writes_every_study(
    tinypacs_big: TinyPacsServer, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "big.jsonl"
    out, err = io.StringIO(), io.StringIO()
    status = main(
        ["crawl", tinypacs_big.dicomweb_url, "--out", str(path)],
        stdout=out,
        stderr=err,
        environ={},
    )
    assert status == EXIT_OK
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[-1])["end"]["complete"]
    studies = list(CrawlCheckpoint.read_studies(path))
    assert sorted(s.StudyInstanceUID or "" for s in studies) == EVERY

"""A crawl's memory follows its window of studies, not the pages of the study listing (issue 18).

A page of the study listing (and the typed studies of it) used to stay alive while
the next page was fetched, and the first page for the whole listing (kept in case a
split needed its modalities): at every page a crawl held one to three pages of
studies more than its window, which the allocator did not give back (a crawl of
5,000 studies in pages of 1,000 peaked 1.5x above one of 500).
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest

from aqido._slots import Slots
from aqido.crawl import crawl
from aqido.protocol import QidoResponse
from aqido.query import BaseQuery, HierarchicalQuery, QueryLevel


class _Row(dict[str, Any]):
    """A DICOM JSON item of the listing, watched (weakly) for as long as anything holds it."""


class _Result:
    """A typed study that holds its item, as aqido's results hold their stored datasets."""

    __slots__ = ("__weakref__", "item")

    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item

    @property
    def StudyInstanceUID(self) -> str:
        return str(self.item["0020000D"]["Value"][0])

    def with_series(self, series: list[Any]) -> _Result:
        return self


def _structure(response: QidoResponse, level: QueryLevel, items: list[Any]) -> list[Any]:
    return [_Result(item) for item in items]


@pytest.mark.anyio
@pytest.mark.parametrize("depth", [QueryLevel.STUDY, QueryLevel.SERIES])
async def test_no_earlier_page_is_held_while_the_next_is_fetched(depth: QueryLevel) -> None:
    studies, page_size, window = 60, 20, 2
    rows: list[weakref.ref[_Row]] = []
    held: list[int] = []  # the listing's items alive as each later page is asked for

    async def fetch(query: BaseQuery, limiter: Slots | None) -> QidoResponse:
        if query.query_level is not QueryLevel.STUDY:
            return QidoResponse(204, "u", {}, [])
        if query.offset:
            gc.collect()
            held.append(sum(row() is not None for row in rows))
        page = [
            _Row(
                {
                    "0020000D": {"vr": "UI", "Value": [f"1.2.3.{n}"]},
                    "00080061": {"vr": "CS", "Value": ["CT"]},
                }
            )
            for n in range(query.offset, min(query.offset + query.limit, studies))
        ]
        rows.extend(weakref.ref(row) for row in page)
        return QidoResponse(200 if page else 204, "u", {}, page)

    done = 0
    async for _study in crawl(
        fetch, _structure, HierarchicalQuery(), depth=depth, window=window, page_size=page_size
    ):
        done += 1
    assert done == studies
    assert len(held) == studies // page_size  # every page after the first (and the empty one)
    # the studies in the window (and those being started or handed out), not a page
    assert max(held) <= window + 3, held

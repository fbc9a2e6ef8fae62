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


def _study(n: int, date: str, modality: str) -> dict[str, Any]:
    return {
        "0020000D": {"vr": "UI", "Value": [f"1.2.3.{n}"]},
        "00080020": {"vr": "DA", "Value": [date]},
        "00080061": {"vr": "CS", "Value": [modality]},
    }


@pytest.mark.parametrize(
    ("answer", "ignored"),
    [
        ([_study(1, "20200105", "CT"), _study(2, "20200130", "CT")], set()),
        ([_study(1, "20200105", "CT"), _study(2, "20190101", "CT")], {"StudyDate"}),
        ([_study(1, "20200105", "MR")], {"ModalitiesInStudy"}),
        ([_study(1, "20190101", "MR"), {"0020000D": {"vr": "UI", "Value": ["1.9"]}}], None),
    ],
)
def test_ignored_keys_reads_stored_datasets_as_it_reads_json(
    answer: list[dict[str, Any]], ignored: set[str] | None
) -> None:
    """A split part's answer is checked in the stored form the crawl reads (not its JSON,
    which would hold a whole listing twice from a server that ignores the split key)."""
    import datetime

    from aqido._dataset import _stored
    from aqido._walker import ignored_keys

    parent = HierarchicalQuery()
    part = HierarchicalQuery(
        min_study_date=datetime.date(2020, 1, 1),
        max_study_date=datetime.date(2020, 1, 31),
        ModalitiesInStudy="CT",
    )
    expected = {"StudyDate", "ModalitiesInStudy"} if ignored is None else ignored
    assert ignored_keys(part, parent, answer) == expected
    assert ignored_keys(part, parent, [_stored(dict(item)) for item in answer]) == expected


@pytest.mark.anyio
async def test_a_paged_listing_never_builds_its_pages_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """The crawl reads the stored datasets of every page (the one-pass decoding's); building
    a page's JSON (``QidoResponse.items``) would cost a copy of every page, alive with it."""
    from aqido._dataset import _stored

    built: list[int] = []
    items_property = QidoResponse.items

    def counting(self: QidoResponse) -> list[dict[str, Any]]:
        if self._items is None and self._stored:
            built.append(len(self._stored))
        return items_property.fget(self)  # type: ignore[no-any-return,union-attr]

    monkeypatch.setattr(QidoResponse, "items", property(counting))
    studies, page_size = 50, 20

    async def fetch(query: BaseQuery, limiter: Slots | None) -> QidoResponse:
        if query.query_level is not QueryLevel.STUDY:
            return QidoResponse(204, "u", {}, [])
        page = [
            _stored(_study(n, "20200105", "CT"))
            for n in range(query.offset, min(query.offset + query.limit, studies))
        ]
        return QidoResponse(200 if page else 204, "u", {}, None, (), _stored=page)

    found = [
        study.StudyInstanceUID
        async for study in crawl(
            fetch,
            _structure_stored,
            HierarchicalQuery(),
            depth=QueryLevel.STUDY,
            window=4,
            page_size=page_size,
        )
    ]
    assert len(found) == len(set(found)) == studies
    assert built == []


def _structure_stored(response: QidoResponse, level: QueryLevel, items: list[Any]) -> list[Any]:
    from aqido._elements import json_item

    return [_Result(json_item(item)) for item in items]

"""A small, scriptable QIDO-RS server for client tests (real aiohttp server on 127.0.0.1).

Unlike :class:`aqido.testing.FakeArchive` (a realistic archive for users'
tests), this one exists to misbehave on demand: scripted failures, servers that
ignore ``offset``, 204 vs ``[]``, truncation warnings, dropped connections,
requests held open until the test releases them, and a server-side count of
simultaneous requests.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

ROOT = "1.2.826.0.1.3680043.10.1"


def element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def study_uid(i: int) -> str:
    return f"{ROOT}.{i + 1}"


def series_uid(i: int, j: int) -> str:
    return f"{ROOT}.{i + 1}.{j + 1}"


def sop_uid(i: int, j: int, k: int) -> str:
    return f"{ROOT}.{i + 1}.{j + 1}.{k + 1}"


def make_study(i: int, n_series: int, n_instances: int) -> dict[str, Any]:
    return {
        "00080020": element("DA", f"2024{(i % 12) + 1:02d}{(i % 28) + 1:02d}"),
        "00080061": element("CS", "CT"),
        "00100010": element("PN", {"Alphabetic": f"Doe^Patient{i}"}),
        "00100020": element("LO", f"PID{i:06d}"),
        "0020000D": element("UI", study_uid(i)),
        "00201206": element("IS", n_series),
        "00201208": element("IS", n_series * n_instances),
    }


def make_series(i: int, j: int, n_instances: int) -> dict[str, Any]:
    return {
        "00080060": element("CS", "CT"),
        "0020000D": element("UI", study_uid(i)),
        "0020000E": element("UI", series_uid(i, j)),
        "00200011": element("IS", j + 1),
        "00201209": element("IS", n_instances),
    }


def make_instance(i: int, j: int, k: int) -> dict[str, Any]:
    return {
        "00080016": element("UI", "1.2.840.10008.5.1.4.1.1.2"),
        "00080018": element("UI", sop_uid(i, j, k)),
        "0020000D": element("UI", study_uid(i)),
        "0020000E": element("UI", series_uid(i, j)),
        "00200013": element("IS", k + 1),
    }


def repeat_at_end(page: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The page's first result again at its end: on a full page, the last one pushed out."""
    return [*page[: (limit or len(page) + 1) - 1], page[0]]


def repeat_in_place(page: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The page's first result again in place of the second: the second never sent."""
    return [page[0], page[0], *page[2:]] if len(page) > 2 else page


Scripted = tuple[int, dict[str, str], bytes] | str  # (status, headers, body) or "drop"


class MiniArchive:
    """An in-process QIDO-RS server under ``/dicom-web`` with scriptable misbehaviour.

    Attributes a test may set: ``empty_status`` (204, or 200 for ``[]``),
    ``cap`` (most results per response; beyond it a truncation Warning is
    added if ``warn_truncation``), ``ignore_offset``, ``ignore_limit``,
    ``hold`` (an :class:`asyncio.Event` every request waits for),
    ``release_at`` (open ``hold`` once that many requests are in flight),
    ``check_auth`` (a predicate on the Authorization header),
    ``rewrite_page`` (``rewrite_page(page, limit)`` is sent instead of each non-empty
    page, ``limit`` the one asked for or 0: e.g. a page that repeats a result).
    """

    def __init__(self, studies: int = 3, series: int = 2, instances: int = 2) -> None:
        self.studies = [make_study(i, series, instances) for i in range(studies)]
        self.series = {
            study_uid(i): [make_series(i, j, instances) for j in range(series)]
            for i in range(studies)
        }
        self.instances = {
            (study_uid(i), series_uid(i, j)): [make_instance(i, j, k) for k in range(instances)]
            for i in range(studies)
            for j in range(series)
        }
        self.empty_status = 204
        self.cap: int | None = None
        self.warn_truncation = True
        self.ignore_offset = False
        self.ignore_limit = False
        self.hold: asyncio.Event | None = None
        self.release_at: int | None = None
        self.hold_paths: Callable[[str], bool] = lambda path: True
        self.check_auth: Callable[[str | None], bool] | None = None
        self.rewrite_page: Callable[[list[dict[str, Any]], int], list[dict[str, Any]]] | None = None
        self.script: deque[Scripted] = deque()
        self.requests: list[web.Request] = []
        self.raw_urls: list[str] = []
        self.active = 0
        self.peak = 0
        self._watchers: list[tuple[int, asyncio.Event]] = []
        self.finished = 0
        self._server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("/dicom-web"))

    def when_active(self, count: int) -> asyncio.Event:
        """An event set once ``count`` requests are in flight at the same time."""
        event = asyncio.Event()
        self._watchers.append((count, event))
        return event

    def fail_next(self, *responses: Scripted) -> None:
        """Answer the next requests with these (status, headers, body) triples, or "drop"."""
        self.script.extend(responses)

    async def __aenter__(self) -> MiniArchive:
        app = web.Application()
        app.router.add_get("/dicom-web/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.hold is not None:
            self.hold.set()
        assert self._server is not None
        await self._server.close()

    # --- request handling ----------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        self.raw_urls.append(request.raw_path)
        self.active += 1
        self.peak = max(self.peak, self.active)
        for count, event in self._watchers:
            if self.active >= count:
                event.set()
        try:
            if (
                self.hold is not None
                and self.release_at is not None
                and self.active >= self.release_at
            ):
                self.hold.set()
            if self.hold is not None and self.hold_paths(request.path):
                await asyncio.wait_for(self.hold.wait(), timeout=10)
            if self.script:
                scripted = self.script.popleft()
                if scripted == "drop":
                    assert request.transport is not None
                    request.transport.close()
                    return web.Response(status=500)
                status, headers, body = scripted
                return web.Response(status=status, headers=headers, body=body)
            if self.check_auth is not None and not self.check_auth(
                request.headers.get("Authorization")
            ):
                return web.Response(
                    status=401,
                    headers={"WWW-Authenticate": 'Basic realm="test"'},
                    text="Unauthorized",
                )
            return self._answer(request)
        finally:
            self.active -= 1
            self.finished += 1

    def _select(self, request: web.Request) -> list[dict[str, Any]] | None:
        parts = request.path.removeprefix("/dicom-web").strip("/").split("/")
        q = request.query
        if parts == ["studies"]:
            items = self.studies
            if "PatientID" in q:
                items = [s for s in items if s["00100020"]["Value"][0] == q["PatientID"]]
            if "StudyInstanceUID" in q:
                wanted = set(q["StudyInstanceUID"].split(","))
                items = [s for s in items if s["0020000D"]["Value"][0] in wanted]
            return items
        if len(parts) == 3 and parts[0] == "studies" and parts[2] == "series":
            return self.series.get(parts[1], [])
        if len(parts) == 5 and parts[2] == "series" and parts[4] == "instances":
            return self.instances.get((parts[1], parts[3]), [])
        if parts == ["series"]:
            return [s for group in self.series.values() for s in group]
        if parts == ["instances"]:
            items = [x for group in self.instances.values() for x in group]
            if "SeriesInstanceUID" in q:
                items = [x for x in items if x["0020000E"]["Value"][0] == q["SeriesInstanceUID"]]
            return items
        if len(parts) == 3 and parts[0] == "studies" and parts[2] == "instances":
            return [x for (s, _), group in self.instances.items() if s == parts[1] for x in group]
        return None

    def _answer(self, request: web.Request) -> web.Response:
        items = self._select(request)
        if items is None:
            return web.Response(status=404, text="no such resource")
        offset = 0 if self.ignore_offset else int(request.query.get("offset", 0))
        limit = 0 if self.ignore_limit else int(request.query.get("limit", 0))
        page = items[offset:]
        if limit:
            page = page[:limit]
        headers = {"Content-Type": "application/dicom+json"}
        if self.cap is not None and len(page) > self.cap:
            remaining = len(items) - offset - self.cap
            page = page[: self.cap]
            if self.warn_truncation:
                headers["Warning"] = (
                    f'299 {{+service}}: "There are {remaining} additional results that can '
                    'be requested"'
                )
        if page and self.rewrite_page is not None:
            page = self.rewrite_page(page, limit)
        if not page:
            if self.empty_status == 204:
                return web.Response(status=204)
            return web.Response(status=200, body=b"[]", headers=headers)
        return web.Response(status=200, body=json.dumps(page).encode(), headers=headers)

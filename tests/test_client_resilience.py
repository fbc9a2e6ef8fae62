"""AsyncQidoRS under real conditions: retries, timeouts, bad bodies, drops, cancellation."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import attrs
import pytest
from qido_server import MiniArchive

from aqido._slots import Slots
from aqido.client import AsyncQidoRS
from aqido.errors import (
    BadRequestError,
    CrawlIncompleteError,
    InvalidResponseError,
    NotFoundError,
    QidoError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    TransportError,
)
from aqido.query import HierarchicalQuery
from aqido.retry import Retry, Timeout

#: Retries with tiny backoff so tests stay fast.
QUICK = Retry(max_attempts=4, backoff_base=0.001, backoff_max=0.002)
JSON = {"Content-Type": "application/dicom+json"}


@pytest.fixture
async def archive() -> AsyncIterator[MiniArchive]:
    async with MiniArchive(studies=4, series=2, instances=2) as server:
        yield server


def busy(status: int, retry_after: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return status, headers, b"busy"


# --- retries --------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_transient_statuses_are_retried(archive: MiniArchive, status: int) -> None:
    archive.fail_next(busy(status), busy(status))
    async with AsyncQidoRS(archive.url, retries=QUICK) as qido:
        studies = await qido.search(HierarchicalQuery())
    assert len(studies) == 4
    assert len(archive.requests) == 3


@pytest.mark.anyio
async def test_retry_after_seconds_and_http_date_are_honoured(
    archive: MiniArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    real_sleep = anyio.sleep

    async def recording_sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("aqido.retry.sleep", recording_sleep)
    archive.fail_next(busy(429, "3"), busy(503, "Wed, 21 Oct 2015 07:28:00 GMT"))
    async with AsyncQidoRS(archive.url, retries=QUICK) as qido:
        assert len(await qido.search(HierarchicalQuery())) == 4
    assert slept[0] == 3.0  # Retry-After: 3 (seconds)
    assert slept[1] <= 0.002  # an HTTP date in the past: no extra wait beyond the backoff


@pytest.mark.anyio
async def test_gives_up_after_max_attempts_with_the_last_error(archive: MiniArchive) -> None:
    archive.fail_next(*(busy(503) for _ in range(10)))
    async with AsyncQidoRS(archive.url, retries=QUICK) as qido:
        with pytest.raises(ServerError) as info:
            await qido.search(HierarchicalQuery())
    assert info.value.status == 503
    assert info.value.body_excerpt == "busy"
    assert len(archive.requests) == 4


@pytest.mark.anyio
async def test_rate_limit_beyond_max_retry_after_gives_up_at_once(archive: MiniArchive) -> None:
    archive.fail_next(busy(429, "3600"))
    async with AsyncQidoRS(archive.url, retries=QUICK) as qido:
        with pytest.raises(RateLimitedError) as info:
            await qido.search(HierarchicalQuery())
    assert info.value.headers["Retry-After"] == "3600"
    assert len(archive.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "error"), [(400, BadRequestError), (404, NotFoundError)])
async def test_client_errors_are_not_retried(
    archive: MiniArchive, status: int, error: type[QidoError]
) -> None:
    archive.fail_next((status, {"Content-Type": "text/plain"}, b"limit must be <= 200"))
    async with AsyncQidoRS(archive.url, retries=QUICK) as qido:
        with pytest.raises(error, match="limit must be <= 200"):
            await qido.search(HierarchicalQuery())
    assert len(archive.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("retries", [0, None, Retry.disabled()])
async def test_retries_can_be_disabled(archive: MiniArchive, retries: Any) -> None:
    archive.fail_next(busy(503))
    async with AsyncQidoRS(archive.url, retries=retries) as qido:
        with pytest.raises(ServerError):
            await qido.search(HierarchicalQuery())
    assert len(archive.requests) == 1


@pytest.mark.anyio
async def test_retry_total_does_not_count_the_wait_for_a_slot(archive: MiniArchive) -> None:
    # A request queued behind others (a crawl, a Retry-After pause) used to have spent its
    # Retry.total budget waiting for a slot, so its first transient failure was final.
    archive.fail_next(busy(503))
    policy = Retry(total=0.3, backoff_base=0.001, backoff_max=0.002)
    async with AsyncQidoRS(archive.url, retries=policy, max_concurrency=1) as qido:
        slots = qido._limiter
        assert isinstance(slots, Slots)
        await slots.acquire()  # another request holds the client's only slot
        search = asyncio.ensure_future(qido.search(HierarchicalQuery()))
        await asyncio.sleep(0.5)  # longer than Retry.total
        slots.release()
        studies = await asyncio.wait_for(search, 10)
    assert len(studies) == 4
    assert len(archive.requests) == 2


@pytest.mark.anyio
async def test_dropped_connections_are_retried_then_reported(archive: MiniArchive) -> None:
    archive.fail_next("drop")
    async with AsyncQidoRS(archive.url, retries=QUICK) as qido:
        assert len(await qido.search(HierarchicalQuery())) == 4
    archive.fail_next(*(["drop"] * 12))
    async with AsyncQidoRS(archive.url, retries=QUICK) as qido:
        with pytest.raises(TransportError) as info:
            await qido.search(HierarchicalQuery())
    assert isinstance(info.value.__cause__, aiohttp.ClientError)


@pytest.mark.anyio
async def test_stale_keep_alive_connection_is_resent_once_even_without_retries(
    archive: MiniArchive,
) -> None:
    archive.fail_next("drop")
    async with AsyncQidoRS(archive.url, retries=0) as qido:
        assert len(await qido.search(HierarchicalQuery())) == 4
    archive.fail_next("drop", "drop")
    async with AsyncQidoRS(archive.url, retries=0) as qido:
        with pytest.raises(TransportError):
            await qido.search(HierarchicalQuery())


@pytest.mark.anyio
async def test_stale_connection_resend_on_aiohttp_without_its_own(
    archive: MiniArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aqido._requests._AIOHTTP_RESENDS_STALE", False)
    async with aiohttp.ClientSession() as session:
        session._retry_connection = False  # behave like aiohttp 3.9
        archive.fail_next("drop")
        async with AsyncQidoRS(archive.url, session=session, retries=0) as qido:
            assert len(await qido.search(HierarchicalQuery())) == 4
        assert len(archive.requests) == 2
        archive.fail_next("drop", "drop")
        async with AsyncQidoRS(archive.url, session=session, retries=0) as qido:
            with pytest.raises(TransportError):
                await qido.search(HierarchicalQuery())
        assert len(archive.requests) == 4


@pytest.mark.anyio
async def test_connection_refused_is_a_transport_error() -> None:
    async with MiniArchive() as archive:
        url = archive.url
    async with AsyncQidoRS(url, retries=QUICK) as qido:
        with pytest.raises(TransportError) as info:
            await qido.search(HierarchicalQuery())
    assert not isinstance(info.value, RequestTimeoutError)
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectionError)
    assert info.value.url is not None
    assert info.value.url.endswith("/dicom-web/studies")


# --- timeouts -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_request_timeout(archive: MiniArchive) -> None:
    archive.hold = asyncio.Event()  # never set by the test: every request hangs
    async with AsyncQidoRS(archive.url, retries=0, timeout=0.05) as qido:
        with pytest.raises(RequestTimeoutError) as info:
            await qido.search(HierarchicalQuery())
    assert isinstance(info.value, TransportError)
    assert info.value.__cause__ is not None


@pytest.mark.anyio
async def test_timeouts_are_retried(archive: MiniArchive) -> None:
    archive.hold = asyncio.Event()
    # 0.25 s, not less: the archive shares the event loop, and on a loaded machine a
    # shorter timeout could fire before it had read the request (3 recorded, not 4).
    async with AsyncQidoRS(archive.url, retries=QUICK, timeout=0.25) as qido:
        with pytest.raises(RequestTimeoutError):
            await qido.search(HierarchicalQuery())
    assert len(archive.requests) == 4


def _busy_client(archive: MiniArchive, total: float) -> AsyncQidoRS:
    """A client of an archive scripted to answer 503 (Retry-After 0.01) 1000 times.

    Its retry policy would retry them all; only ``Timeout.total`` (``total``) or the
    caller's own deadline ends a search.
    """
    archive.fail_next(*(busy(503, "0.01") for _ in range(1000)))
    forever = Retry(max_attempts=10_000, total=None, backoff_base=0.001, backoff_max=0.001)
    return AsyncQidoRS(archive.url, retries=forever, timeout=Timeout(request=5, total=total))


@pytest.mark.anyio
async def test_total_timeout_bounds_retries(archive: MiniArchive) -> None:
    # 1000 answers with Retry-After 0.01 take over 10 s: a 0.5 s total must cut them short,
    # and leaves a loaded machine ample time for the first attempt and a retry.
    async with _busy_client(archive, total=0.5) as qido:
        with pytest.raises(RequestTimeoutError, match=r"Timeout\.total"):
            await qido.search(HierarchicalQuery())
    assert 1 < len(archive.requests) < 1000


@pytest.mark.anyio
async def test_the_callers_own_deadline_is_not_a_request_timeout(archive: MiniArchive) -> None:
    """The caller's deadline, shorter than ``Timeout.total``, raises the caller's TimeoutError."""
    async with _busy_client(archive, total=30) as qido:
        with pytest.raises(TimeoutError), anyio.fail_after(0.3):
            await qido.search(HierarchicalQuery())
        archive.script.clear()
        assert len(await qido.search(HierarchicalQuery())) == 4  # the client is still usable


# --- bodies that are not DICOM JSON ------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "body", "match"),
    [
        (JSON, b'[{"0020000D": {"vr": "UI", "Value": ["1.2"]}', "not JSON"),
        (JSON, b'{"error": "nope"}', "not an array"),
        ({"Content-Type": "text/html"}, b"<html><h1>Please log in</h1></html>", "HTML"),
        (
            {"Content-Type": 'multipart/related; type="application/dicom+xml"; boundary=b'},
            b"--b\r\n\r\n<NativeDicomModel/>\r\n--b--",
            "multipart",
        ),
        (JSON, b'[{"0020000D": {"Value": ["1.2"]}}]', "item 0"),
    ],
)
async def test_invalid_bodies_raise_invalid_response(
    archive: MiniArchive, headers: dict[str, str], body: bytes, match: str
) -> None:
    archive.fail_next((200, headers, body))
    no_retry = attrs.evolve(QUICK, retry_invalid_responses=False)  # on by default: issue 15
    async with AsyncQidoRS(archive.url, retries=no_retry) as qido:
        with pytest.raises(InvalidResponseError, match=match) as info:
            await qido.search(HierarchicalQuery())
    assert len(archive.requests) == 1  # not retried
    assert info.value.url is not None
    assert info.value.url.endswith("/dicom-web/studies")
    assert info.value.status == 200
    assert info.value.__cause__ is None or not isinstance(info.value.__cause__, aiohttp.ClientError)


@pytest.mark.anyio
async def test_html_error_page_with_error_status(archive: MiniArchive) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"
    archive.fail_next((502, {"Content-Type": "text/html"}, page))
    async with AsyncQidoRS(archive.url, retries=0) as qido:
        with pytest.raises(ServerError, match="502 Bad Gateway") as info:
            await qido.search(HierarchicalQuery())
    assert "nginx" in info.value.body_excerpt


@pytest.mark.anyio
async def test_huge_response(archive: MiniArchive) -> None:
    item = {
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00081030": {"vr": "LO", "Value": ["x" * 60]},
    }
    items = [dict(item, **{"0020000D": {"vr": "UI", "Value": [f"1.2.{n}"]}}) for n in range(40_000)]
    body = json.dumps(items).encode()
    assert len(body) > 4_000_000
    archive.fail_next((200, JSON, body))
    async with AsyncQidoRS(archive.url, retries=0) as qido:
        studies = await qido.search(HierarchicalQuery())
    assert len(studies) == 40_000
    assert studies[-1].StudyInstanceUID == "1.2.39999"


# --- cancellation -------------------------------------------------------------------------------


def open_connections(qido: AsyncQidoRS) -> int:
    session = qido._session
    if session is None or session.connector is None:
        return 0
    return len(session.connector._acquired)  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_cancelling_a_crawl_midway_leaves_nothing_behind() -> None:
    before = asyncio.all_tasks()
    async with MiniArchive(studies=30, series=3, instances=2) as archive:
        archive.hold = asyncio.Event()
        archive.hold_paths = lambda path: path.endswith("/instances")  # subtrees hang
        got: list[Any] = []
        async with AsyncQidoRS(archive.url, retries=0, max_concurrency=4) as qido:
            with anyio.move_on_after(0.2) as scope:
                async for study in qido.crawl():
                    got.append(study)
            assert scope.cancelled_caught
            assert got == []
            assert open_connections(qido) == 0
            # the client still works after a cancelled crawl
            archive.hold.set()
            assert len(await qido.search(HierarchicalQuery())) == 30
        for _ in range(1000):  # the server sees the cancelled requests' connections close
            if archive.active == 0:  # (~10 s at most: a safety net for a loaded machine)
                break
            await asyncio.sleep(0.01)
        assert archive.active == 0
    gc.collect()
    for _ in range(20):
        if not asyncio.all_tasks() - before:
            break
        await asyncio.sleep(0)
    assert not asyncio.all_tasks() - before


@pytest.mark.anyio
async def test_task_cancel_during_search_many() -> None:
    async with MiniArchive(studies=10, series=1, instances=1) as archive:
        archive.hold = asyncio.Event()
        async with AsyncQidoRS(archive.url, retries=0, max_concurrency=3) as qido:
            queries = [HierarchicalQuery(PatientID=f"PID{i:06d}") for i in range(10)]
            task = asyncio.ensure_future(qido.search_many(queries))
            await asyncio.wait_for(archive.when_active(3).wait(), timeout=5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert open_connections(qido) == 0


@pytest.mark.anyio
async def test_breaking_out_of_a_crawl_cancels_in_flight_requests() -> None:
    from contextlib import aclosing

    async with MiniArchive(studies=20, series=3, instances=2) as archive:
        async with AsyncQidoRS(archive.url, retries=0, max_concurrency=2) as qido:
            async with aclosing(qido.crawl()) as studies:
                async for _ in studies:
                    break
            assert open_connections(qido) == 0
            requests_at_break = len(archive.requests)
            await asyncio.sleep(0.05)
            assert len(archive.requests) == requests_at_break  # nothing continues in background
        assert requests_at_break < 1 + 20 + 60


@pytest.mark.anyio
async def test_crawl_error_in_a_subtree_is_raised_alone_with_fail_fast(
    archive: MiniArchive,
) -> None:
    archive.check_auth = None
    async with AsyncQidoRS(archive.url, retries=0, max_concurrency=2) as qido:
        archive.fail_next((200, JSON, json.dumps(archive.studies).encode()), busy(500))
        with pytest.raises(ServerError):
            async for _ in qido.crawl(fail_fast=True):
                pass


@pytest.mark.anyio
async def test_crawl_by_default_finishes_then_names_the_failed_subtree(
    archive: MiniArchive,
) -> None:
    archive.check_auth = None
    async with AsyncQidoRS(archive.url, retries=0, max_concurrency=2) as qido:
        archive.fail_next((200, JSON, json.dumps(archive.studies).encode()), busy(500))
        yielded: list[str] = []

        async def consume() -> None:
            async for study in qido.crawl():
                yielded.append(study.StudyInstanceUID)

        with pytest.raises(CrawlIncompleteError) as info:
            await consume()
    assert len(info.value.failures) == 1
    failure = info.value.failures[0]
    assert isinstance(failure.error, ServerError)
    failed_study = str(failure.query).split("/")[2]
    assert failed_study not in yielded
    assert sorted([*yielded, failed_study]) == sorted(
        s["0020000D"]["Value"][0] for s in archive.studies
    )


CTRL_C_SCRIPT = """
import asyncio, signal, sys
sys.path.insert(0, "tests")
from qido_server import MiniArchive
from aqido import AsyncQidoRS, HierarchicalQuery

async def main():
    async with MiniArchive(studies=10, series=3, instances=2) as archive:
        archive.hold = asyncio.Event()
        archive.hold_paths = lambda path: path.endswith("/instances")
        busy = archive.when_active(2)
        async with AsyncQidoRS(archive.url, retries=0, max_concurrency=2) as qido:
            async def press_ctrl_c():
                await busy.wait()
                signal.raise_signal(signal.SIGINT)
            presser = asyncio.ensure_future(press_ctrl_c())
            try:
                async for _ in qido.crawl(HierarchicalQuery()):
                    pass
            finally:
                await asyncio.wait_for(presser, 5)
                assert len(qido._session.connector._acquired) == 0, "connections left open"

try:
    asyncio.run(main())
except KeyboardInterrupt:
    print("interrupted cleanly")
"""


def test_ctrl_c_during_a_crawl_leaves_nothing_behind() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", CTRL_C_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == "interrupted cleanly", result.stderr
    for leak in ("Unclosed", "ResourceWarning", "connections left open", "AssertionError"):
        assert leak not in result.stderr, result.stderr
    stderr = result.stderr
    if sys.version_info < (3, 11):
        # Python 3.10's asyncio.run does not turn Ctrl-C into cancellation (bpo-39622, fixed
        # in 3.11): the KeyboardInterrupt escapes the main task and asyncio logs that task's
        # exception when it is collected.  That log, and nothing else, is allowed there.
        lines = stderr.strip().splitlines()
        if lines and lines[0] == "Task exception was never retrieved":
            assert lines[-1] == "KeyboardInterrupt", stderr
            stderr = ""
    assert stderr == ""

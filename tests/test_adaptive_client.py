"""``max_concurrency="auto"``: the async slots (:mod:`aqido.concurrency`) and the clients using
them against the in-process :class:`~aqido.testing.FakeArchive` (latency, 503 + Retry-After).

No timed assertions: times are only compared with each other (a request that started after
the client learned of a ``Retry-After`` started after the pause it asked for).
"""

from __future__ import annotations

import io
import json
import pathlib
import time
from collections.abc import Mapping

import anyio
import anyio.lowlevel
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from aqido import AsyncQidoRS, QidoRS, RequestTimeoutError, Timeout
from aqido._cli.commands import status_line
from aqido.adaptive import AdaptiveLimit
from aqido.cli import EXIT_OK, EXIT_USAGE, main
from aqido.client import _feedback
from aqido.concurrency import AdaptiveLimiter
from aqido.crawl import Recorder
from aqido.retry import Retry
from aqido.stats import CrawlStats
from aqido.testing import FakeArchive, Fault, SyntheticArchive

pytestmark = pytest.mark.anyio

SYNTHETIC = SyntheticArchive(seed=5, studies=40, series_per_study=2, instances_per_series=1)


# --- the async slots -------------------------------------------------------------------------


async def test_every_holder_has_one_slot_and_waiters_go_in_order() -> None:
    limiter = AdaptiveLimiter(AdaptiveLimit(initial=3, ceiling=3))
    holding = 0
    peak = 0
    order: list[int] = []

    async def worker(i: int) -> None:
        nonlocal holding, peak
        ticket = await limiter.acquire()
        order.append(i)
        holding += 1
        peak = max(peak, holding)
        await anyio.sleep(0.01)
        holding -= 1
        limiter.release(ticket, "ignore")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for i in range(20):
                group.start_soon(worker, i)
                await anyio.lowlevel.checkpoint()  # start them in order
    assert peak == 3
    assert order == list(range(20))
    assert limiter.in_flight == 0


async def test_a_growing_limit_hands_out_every_new_slot_at_once() -> None:
    limiter = AdaptiveLimiter(AdaptiveLimit(initial=1, ceiling=8, min_samples=1))
    first = await limiter.acquire()
    got: list[int] = []

    async def waiter(i: int) -> None:
        ticket = await limiter.acquire()
        got.append(i)
        await anyio.sleep(0.01)
        limiter.release(ticket)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for i in range(6):
                group.start_soon(waiter, i)
            await anyio.sleep(0.01)
            assert got == []
            limiter.release(first, "success")  # one round, latency = the best: 1 -> 4 slots
            assert limiter.limit == 4
            assert limiter.in_flight == 4  # handed over in the release itself
    assert sorted(got) == list(range(6))


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    limiter = AdaptiveLimiter(AdaptiveLimit(initial=1, ceiling=1))
    held = await limiter.acquire()
    got: list[str] = []

    async def take(name: str) -> None:
        ticket = await limiter.acquire()
        got.append(name)
        limiter.release(ticket)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as scope:
                group.start_soon(take, "cancelled")
                await anyio.sleep(0.01)
                scope.cancel()
            group.cancel_scope.cancel()
        async with anyio.create_task_group() as group:
            group.start_soon(take, "next")
            await anyio.sleep(0.01)
            limiter.release(held)
    assert got == ["next"]
    assert limiter.in_flight == 0


async def test_a_pause_holds_every_waiter_even_with_nothing_in_flight() -> None:
    """The answers that asked for the pause were the last ones in flight: no release will
    come to wake the line, yet it moves on when the pause ends."""
    limiter = AdaptiveLimiter(AdaptiveLimit(initial=2, ceiling=2))
    a, b = await limiter.acquire(), await limiter.acquire()
    started: list[float] = []

    async def take() -> None:
        ticket = await limiter.acquire()
        started.append(time.monotonic())
        limiter.release(ticket, "success")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(take)
            await anyio.sleep(0.01)
            limiter.release(a, "dropped", retry_after=0.2)
            paused_until = limiter.state.paused_until
            limiter.release(b, "dropped", retry_after=0.1)
    assert len(started) == 3
    assert min(started) >= paused_until - 0.005


def test_the_limiter_reads_the_cpu_clock_with_every_answer() -> None:
    """The client's CPU clock goes with each sample: with the event loop's thread busy
    all the time, three times the best latency leaves the limit alone; without the
    clock, it is queueing and the limit comes down."""

    def run(cpu_clock: bool) -> int:
        now = [0.0]
        limiter = AdaptiveLimiter(
            AdaptiveLimit(initial=16, ceiling=64, probe_every=10**6),
            clock=lambda: now[0],
            cpu_clock=(lambda: now[0]) if cpu_clock else None,
        )
        for latency in [0.01] + [0.03] * 10:
            tickets = []
            while (ticket := limiter.acquire_nowait()) is not None:
                tickets.append(ticket)
            now[0] += latency
            for ticket in tickets:
                limiter.release(ticket, "success")
        return limiter.limit

    assert run(cpu_clock=True) == 64
    assert run(cpu_clock=False) < 48


# --- what an answer tells the limiter -------------------------------------------------------


def _headers(values: Mapping[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(values))


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (200, {}, ("success", None)),
        (204, {"Retry-After": "5"}, ("success", None)),
        (429, {"Retry-After": "2"}, ("dropped", 2.0)),
        (503, {}, ("dropped", None)),
        (504, {}, ("dropped", None)),
        (500, {"Retry-After": "1"}, ("ignore", 1.0)),
        (404, {}, ("ignore", None)),
        (429, {"Retry-After": "9999"}, ("dropped", 120.0)),  # capped by Retry.max_retry_after
    ],
)
async def test_feedback_of_an_answer(
    status: int, headers: dict[str, str], expected: tuple[str, float | None]
) -> None:
    assert _feedback(status, _headers(headers), Retry()) == expected


async def test_feedback_without_respecting_retry_after() -> None:
    ignoring = Retry(respect_retry_after=False)
    assert _feedback(429, _headers({"Retry-After": "2"}), ignoring) == ("dropped", None)


# --- the clients ----------------------------------------------------------------------------


async def test_auto_is_validated_and_shown() -> None:
    client = AsyncQidoRS("http://127.0.0.1:1/dicom-web", max_concurrency="auto")
    assert "max_concurrency='auto'" in repr(client)
    assert client.concurrency_limit == 16
    assert client.adaptive_limiter is None  # not opened yet
    with pytest.raises(ValueError, match="max_concurrency"):
        AsyncQidoRS("http://127.0.0.1:1", max_concurrency="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrency_limit"):
        AsyncQidoRS("http://127.0.0.1:1", max_concurrency="auto", max_concurrency_limit=0)
    fixed = AsyncQidoRS("http://127.0.0.1:1", max_concurrency=5)
    assert fixed.concurrency_limit == 5


async def test_a_window_that_follows_the_limit_grows_as_soon_as_an_answer_raises_it() -> None:
    """The crawl's window (``window`` a callable, as with ``"auto"``) is asked again after
    every answer: studies start as soon as the limit grows, not when a study ends (here no
    study can end until the instance answers are let through)."""
    from typing import Any

    from aqido.client import _structure
    from aqido.crawl import crawl
    from aqido.protocol import QidoResponse, parse_response
    from aqido.query import HierarchicalQuery, QueryLevel

    size = 2
    series_asked: list[str] = []
    gate = anyio.Event()
    six_asked = anyio.Event()

    def answer(query: Any, items: list[dict[str, Any]]) -> QidoResponse:
        return parse_response(
            200,
            {"Content-Type": "application/dicom+json"},
            json.dumps(items).encode(),
            url="http://h" + query.relative_url(),
        )

    def uid(tag: str, value: str) -> dict[str, Any]:
        return {tag: {"vr": "UI", "Value": [value]}}

    async def fetch(query: Any, _limiter: Any) -> QidoResponse:
        nonlocal size
        if query.query_level is QueryLevel.STUDY:
            return answer(query, [uid("0020000D", f"1.2.{n}") for n in range(10)])
        if query.query_level is QueryLevel.SERIES:
            study = query.StudyInstanceUID
            series_asked.append(study)
            if len(series_asked) == 6:
                six_asked.set()
            size = 6  # what the limiter does on an answer: the limit (and window) grow
            return answer(query, [{**uid("0020000D", study), **uid("0020000E", study + ".1")}])
        await gate.wait()
        series = query.SeriesInstanceUID
        return answer(query, [{**uid("0020000E", series), **uid("00080018", series + ".1")}])

    got: list[Any] = []

    async def consume() -> None:
        async for study in crawl(fetch, _structure, HierarchicalQuery(), window=lambda: size):
            got.append(study)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await six_asked.wait()  # before the fix: stuck at 2 until the timeout
            assert got == []  # no study ended: the window grew on the answers alone
            gate.set()
    assert len(got) == 10


async def test_the_limit_moves_and_every_request_holds_a_slot() -> None:
    archive = FakeArchive(SYNTHETIC, latency=0.03)
    async with archive, AsyncQidoRS(archive.url, max_concurrency="auto") as client:
        stats = CrawlStats()
        studies = [s async for s in client.crawl(stats=stats)]
        limiter = client.adaptive_limiter
        assert limiter is not None
        history = [change.limit for change in limiter.history]
    assert len(studies) == 40
    assert history[0] == 16
    assert archive.peak_concurrency > 4
    assert archive.peak_concurrency <= max(history)
    assert stats.concurrency_history[0][1] == 16
    assert len(stats.concurrency_history) > 1
    assert stats.concurrency_limit == stats.concurrency_history[-1][1]
    assert [t for t, _ in stats.concurrency_history] == sorted(
        t for t, _ in stats.concurrency_history
    )


class RecordingClient(AsyncQidoRS):
    """Records when each request left and when the client learned of each 503 (monotonic)."""

    sent: list[float]
    pushed_back: list[float]

    async def _request(
        self, url: str, headers: Mapping[str, str]
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        self.sent.append(time.monotonic())
        answer = await super()._request(url, headers)
        if answer[0] == 503:
            self.pushed_back.append(time.monotonic())
        return answer


async def test_push_back_cuts_the_limit_and_retry_after_pauses_every_request() -> None:
    archive = FakeArchive(SYNTHETIC, latency=0.01)
    pause = 0.3
    archive.fail("/series", Fault(kind="503", retry_after=str(pause)), times=1)
    async with archive:
        client = RecordingClient(archive.url, max_concurrency="auto")
        client.sent, client.pushed_back = [], []
        async with client:
            studies = [s async for s in client.crawl()]
            limiter = client.adaptive_limiter
            assert limiter is not None
            reasons = [change.reason for change in limiter.history]
    assert len(studies) == 40
    assert "push-back" in reasons
    cut = reasons.index("push-back")
    assert limiter.history[cut].limit <= max(1, limiter.history[cut - 1].limit // 2 + 1)
    [learned] = client.pushed_back
    after = [t for t in client.sent if t > learned]
    assert after  # the crawl went on (and retried the failed request)
    assert min(after) >= learned + pause - 0.01  # nothing left during the pause


@pytest.mark.parametrize(
    ("limits", "cut"), [(Timeout(request=0.1), True), (Timeout(request=None, total=0.1), False)]
)
async def test_an_attempt_timeout_is_push_back_and_the_total_deadline_is_not(
    limits: Timeout, cut: bool
) -> None:
    # docs/concurrency.md: Timeout.total is the caller's deadline (queue and retries included)
    async with (
        FakeArchive(SYNTHETIC, latency=0.5) as archive,
        AsyncQidoRS(archive.url, max_concurrency="auto", timeout=limits, retries=0) as client,
    ):
        with anyio.move_on_after(5):
            async with anyio.create_task_group() as group:
                for _ in range(4):
                    group.start_soon(_search_expecting_timeout, client)
        limiter = client.adaptive_limiter
        assert limiter is not None
        reasons = [change.reason for change in limiter.history]
    assert ("push-back" in reasons) is cut


async def _search_expecting_timeout(client: AsyncQidoRS) -> None:
    with pytest.raises(RequestTimeoutError):
        await client.search({})


def test_blocking_client_auto() -> None:
    with (
        FakeArchive(SYNTHETIC, latency=0.01).run_in_thread() as archive,
        QidoRS(archive.url, max_concurrency="auto", max_concurrency_limit=8) as client,
    ):
        assert client.concurrency_limit == 8  # the initial 16, under the ceiling
        studies = list(client.crawl())
        assert 1 <= client.concurrency_limit <= 8
    assert len(studies) == 40


def test_cli_concurrency_auto(tmp_path: pathlib.Path) -> None:
    with FakeArchive(SYNTHETIC, latency=0.005).run_in_thread() as archive:
        out, err = io.StringIO(), io.StringIO()
        path = tmp_path / "crawl.jsonl"
        status = main(
            ["crawl", archive.url, "--out", str(path), "--concurrency", "auto", "--no-progress"],
            stdout=out,
            stderr=err,
            environ={},
        )
        assert (status, err.getvalue()) == (EXIT_OK, "")
        lines = path.read_text().splitlines()
        assert sum(1 for line in lines if "StudyInstanceUID" in json.loads(line)) == 40
        bad = main(["crawl", archive.url, "--concurrency", "fast"], stdout=out, stderr=err)
        assert bad == EXIT_USAGE


def test_progress_line_shows_the_limit() -> None:
    stats = CrawlStats()
    assert "limit" not in status_line(stats)
    record = Recorder(stats)
    record.start()
    record.limit(12)
    assert "· limit 12 ·" in status_line(stats)
    record.limit(12)
    record.limit(6)
    assert stats.concurrency_limit == 6
    assert [limit for _, limit in stats.concurrency_history] == [12, 6]

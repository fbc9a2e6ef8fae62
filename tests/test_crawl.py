"""aqido.crawl against a fake ``fetch`` (no network): paging rules, fan-out, cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from qido_server import repeat_at_end, repeat_in_place

from aqido._paging import PageSpan
from aqido._slots import Slots
from aqido._tasks import Handoff
from aqido.crawl import FirstErrorGroup, iter_pages, iter_search_many, search_many, stream_from
from aqido.errors import InvalidResponseError, NotFoundError, ServerError
from aqido.protocol import QidoResponse, QidoWarning, parse_warnings
from aqido.query import HierarchicalQuery, QueryLevel


def study(n: int) -> dict[str, Any]:
    return {"0020000D": {"vr": "UI", "Value": [f"1.2.{n}"]}}


def uids(items: list[dict[str, Any]]) -> list[str]:
    return [item["0020000D"]["Value"][0] for item in items]


#: ``rewrite(page, limit)``: what a quirky server sends instead of ``page`` (``limit``: 0 if none).
Rewrite = Callable[[list[dict[str, Any]], int], list[dict[str, Any]]]


class FakeServer:
    """A fake ``fetch``: serves ``total`` studies with limit/offset, with switchable quirks."""

    def __init__(
        self,
        total: int,
        *,
        cap: int | None = None,
        warn: bool = True,
        ignore_offset: bool = False,
        ignore_limit: bool = False,
        empty_status: int = 204,
        rewrite: Rewrite | None = None,
    ) -> None:
        self.data = [study(n) for n in range(total)]
        self.rewrite = rewrite
        self.cap = cap
        self.warn = warn
        self.ignore_offset = ignore_offset
        self.ignore_limit = ignore_limit
        self.empty_status = empty_status
        self.queries: list[HierarchicalQuery] = []

    async def __call__(self, query: Any, limiter: Slots | None) -> QidoResponse:
        self.queries.append(query)
        offset = 0 if self.ignore_offset else query.offset
        page = self.data[offset:]
        if query.limit and not self.ignore_limit:
            page = page[: query.limit]
        warnings: tuple[QidoWarning, ...] = ()
        if self.cap is not None and len(page) > self.cap:
            more = len(self.data) - offset - self.cap
            page = page[: self.cap]
            if self.warn:
                warnings = parse_warnings(
                    [f'299 h "There are {more} additional results that can be requested"']
                )
        if page and self.rewrite is not None:
            page = self.rewrite(page, query.limit or self.cap or 0)
        status = 200 if page else self.empty_status
        return QidoResponse(status, "http://h/studies", {}, page, warnings)


async def collect(server: FakeServer, query: HierarchicalQuery, **kw: Any) -> list[str]:
    out: list[str] = []
    async for page in iter_pages(server, query, **kw):
        out += uids(page.items)
    return out


ALL = [f"1.2.{n}" for n in range(25)]
ALL_250 = [f"1.2.{n}" for n in range(250)]


@pytest.mark.anyio
@pytest.mark.parametrize("empty_status", [200, 204])
@pytest.mark.parametrize("page_size", [1, 4, 5, 7, 25, 100])
async def test_paging_returns_everything_exactly_once(page_size: int, empty_status: int) -> None:
    server = FakeServer(25, empty_status=empty_status)
    assert await collect(server, HierarchicalQuery(), page_size=page_size) == ALL
    offsets = [q.offset for q in server.queries]
    assert offsets == list(range(0, len(offsets) * page_size, page_size))
    assert all(q.limit == page_size for q in server.queries)
    # a short page ends paging; an exact multiple needs one more (empty) request
    assert len(server.queries) == 25 // page_size + 1


@pytest.mark.anyio
async def test_query_limit_is_the_default_page_size_and_offset_the_start() -> None:
    server = FakeServer(25)
    assert await collect(server, HierarchicalQuery(limit=10, offset=3)) == ALL[3:]
    assert [(q.limit, q.offset) for q in server.queries] == [(10, 3), (10, 13), (10, 23)]
    assert server.queries[0] == HierarchicalQuery(limit=10, offset=3)  # sent unchanged


@pytest.mark.anyio
async def test_without_page_size_one_request_unless_truncated() -> None:
    server = FakeServer(25)
    assert await collect(server, HierarchicalQuery()) == ALL
    assert len(server.queries) == 1
    assert server.queries[0].limit == 0


@pytest.mark.anyio
async def test_follows_truncation_warning_without_limit() -> None:
    server = FakeServer(25, cap=10)
    assert await collect(server, HierarchicalQuery()) == ALL
    assert [q.offset for q in server.queries] == [0, 10, 20]


@pytest.mark.anyio
async def test_follows_truncation_when_server_cap_is_below_page_size() -> None:
    server = FakeServer(25, cap=4)
    assert await collect(server, HierarchicalQuery(), page_size=10) == ALL
    assert [q.offset for q in server.queries] == [0, 4, 8, 12, 16, 20, 24]


@pytest.mark.anyio
async def test_full_page_without_warning_asks_for_more() -> None:
    server = FakeServer(20, cap=5, warn=False)
    assert await collect(server, HierarchicalQuery(), page_size=5) == ALL[:20]
    assert [q.offset for q in server.queries] == [0, 5, 10, 15, 20]


@pytest.mark.anyio
async def test_server_ignoring_offset_raises_instead_of_looping() -> None:
    server = FakeServer(25, ignore_offset=True)
    seen: list[str] = []

    async def consume() -> None:
        async for page in iter_pages(server, HierarchicalQuery(), page_size=10):
            seen.extend(uids(page.items))

    with pytest.raises(InvalidResponseError, match="ignores 'offset'"):
        await consume()
    assert seen == ALL[:10]
    assert len(server.queries) == 2


@pytest.mark.anyio
async def test_server_ignoring_offset_under_a_truncation_warning_raises() -> None:
    server = FakeServer(25, cap=10, ignore_offset=True)
    with pytest.raises(InvalidResponseError, match="ignores 'offset'"):
        await collect(server, HierarchicalQuery())
    assert len(server.queries) == 2


@pytest.mark.anyio
async def test_server_ignoring_limit_is_not_double_counted() -> None:
    server = FakeServer(25, ignore_limit=True)
    assert await collect(server, HierarchicalQuery(), page_size=10) == ALL
    assert [q.offset for q in server.queries] == [0, 25]


@pytest.mark.anyio
async def test_duplicates_across_shifting_pages_are_dropped() -> None:
    server = FakeServer(12)

    async def shifting(query: Any, limiter: Any) -> QidoResponse:
        response = await server(query, limiter)
        if query.offset == 5:  # a new study arrived at the front: everything shifts by one
            items = [study(4), *response.items[:-1]]
            return QidoResponse(200, "u", {}, items)
        return response

    out: list[str] = []
    async for page in iter_pages(shifting, HierarchicalQuery(), page_size=5):
        out += uids(page.items)
    assert sorted(set(out)) == sorted(out)
    assert out[:5] == ALL[:5]


@pytest.mark.anyio
async def test_truncation_warning_saying_zero_more_stops() -> None:
    warnings = parse_warnings(['299 h "There are 0 additional results that can be requested"'])
    calls = 0

    async def fetch(query: Any, limiter: Any) -> QidoResponse:
        nonlocal calls
        calls += 1
        return QidoResponse(200, "u", {}, [study(calls)], warnings)

    async for _ in iter_pages(fetch, HierarchicalQuery()):
        pass
    assert calls == 1


@pytest.mark.anyio
async def test_items_without_uid_are_kept_and_identical_items_deduplicated() -> None:
    async def fetch(query: Any, limiter: Any) -> QidoResponse:
        odd = {"00100020": {"vr": "LO", "Value": ["X"]}}
        return QidoResponse(200, "u", {}, [odd, odd, {"00100020": {"vr": "LO"}}])

    pages = [page async for page in iter_pages(fetch, HierarchicalQuery())]
    assert len(pages[0].items) == 2


# --- results repeated within a page ------------------------------------------------------------


def repeat_at_start(page: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The page's first result twice at its start, the page cut to the limit."""
    return [page[0], *page][: limit or None]


def doubled(page: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The whole page sent twice (beyond the limit)."""
    return page + page


@pytest.mark.anyio
@pytest.mark.parametrize("rewrite", [repeat_at_end, repeat_at_start, doubled])
@pytest.mark.parametrize("page_size", [2, 7, 10, 40])
async def test_a_page_repeating_a_result_skips_no_match(rewrite: Rewrite, page_size: int) -> None:
    # the audit's case: 250 results, every page repeating one; counting the
    # repeat as a match skipped one match per page
    server = FakeServer(250, rewrite=rewrite)
    assert await collect(server, HierarchicalQuery(), page_size=page_size) == ALL_250


@pytest.mark.anyio
@pytest.mark.parametrize("rewrite", [repeat_at_end, repeat_at_start, doubled])
async def test_repeats_under_the_query_limit_or_truncation_warnings_skip_no_match(
    rewrite: Rewrite,
) -> None:
    server = FakeServer(250, rewrite=rewrite)
    assert await collect(server, HierarchicalQuery(limit=40)) == ALL_250
    assert await collect(FakeServer(250, cap=40, rewrite=rewrite), HierarchicalQuery()) == ALL_250


@pytest.mark.anyio
async def test_offsets_count_the_distinct_results_of_a_page() -> None:
    server = FakeServer(25, rewrite=repeat_at_end)
    assert await collect(server, HierarchicalQuery(), page_size=10) == ALL
    # 9 distinct results on each full page; the last page (7 + the repeat) is short
    assert [q.offset for q in server.queries] == [0, 9, 18]


@pytest.mark.anyio
@pytest.mark.parametrize("query_limit", [0, 10])
async def test_a_repeat_in_place_of_a_match_raises_instead_of_losing_it(query_limit: int) -> None:
    server = FakeServer(25, rewrite=repeat_in_place)
    got: list[str] = []

    async def consume() -> None:
        page_size = None if query_limit else 10
        async for page in iter_pages(
            server, HierarchicalQuery(limit=query_limit), page_size=page_size
        ):
            got.extend(uids(page.items))

    with pytest.raises(InvalidResponseError, match="in place of another match") as info:
        await consume()
    assert info.value.url == "http://h/studies"
    assert info.value.status == 200
    assert "1.2.9" in info.value.body_excerpt  # the result returned again
    assert got == [uid for uid in ALL[:10] if uid != "1.2.1"]  # each once, then the error
    assert [q.offset for q in server.queries] == [0, 9]


@pytest.mark.anyio
async def test_a_last_page_repeating_a_result_is_only_deduplicated() -> None:
    def repeat_on_the_last_page(page: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
        return [*page, page[0]] if len(page) < limit else page

    server = FakeServer(25, rewrite=repeat_on_the_last_page)
    assert await collect(server, HierarchicalQuery(), page_size=10) == ALL
    assert [q.offset for q in server.queries] == [0, 10, 20]  # 6 items < 10: the last page


@pytest.mark.anyio
async def test_a_short_page_by_distinct_results_is_not_the_last() -> None:
    # 10 items, 9 distinct: the page is full, so paging goes on (a server that
    # counts the repeat as a match returns the rest at the next offset)
    server = FakeServer(19, rewrite=repeat_at_end)
    assert await collect(server, HierarchicalQuery(), page_size=10) == ALL[:19]
    assert [q.offset for q in server.queries] == [0, 9, 18]


@pytest.mark.anyio
@pytest.mark.parametrize("rewrite", [repeat_at_end, repeat_in_place])
async def test_repeated_items_without_uid_are_counted_by_their_json(rewrite: Rewrite) -> None:
    data = [{"00100020": {"vr": "LO", "Value": [f"P{n}"]}} for n in range(25)]

    async def fetch(query: Any, limiter: Any) -> QidoResponse:
        page = data[query.offset :][: query.limit]
        page = rewrite(page, query.limit) if page else page
        return QidoResponse(200 if page else 204, "u", {}, page)

    got: list[str] = []

    async def consume() -> None:
        async for page in iter_pages(fetch, HierarchicalQuery(), page_size=10):
            got.extend(item["00100020"]["Value"][0] for item in page.items)

    if rewrite is repeat_in_place:
        with pytest.raises(InvalidResponseError, match="in place of another match"):
            await consume()
    else:
        await consume()
        assert got == [f"P{n}" for n in range(25)]


def test_page_span_counts_distinct_results_and_refuses_an_overlap_after_a_repeat() -> None:
    response = QidoResponse(200, "u", {}, [study(n) for n in range(4)])
    span = PageSpan()
    assert span.covered(response, ["a", "b", "c"], 3, 0) == 3  # all new: nothing computed
    assert span.covered(response, ["d", "e", "d"], 2, 3) == 2
    assert span.covered(response, ["f", "g"], 2, 5) == 2  # after a repeat, all new: fine
    assert span.covered(response, ["h", "h", "i"], 2, 7) == 2
    assert span.covered(response, ["c", "j"], 1, 9) == 2  # seen earlier, not on that page
    assert span.covered(response, ["k", "k"], 1, 11) == 1
    with pytest.raises(InvalidResponseError, match="offset=12"):
        span.covered(response, ["l", "k"], 1, 12)


def test_page_span_take_gives_a_pages_new_items_and_the_matches_it_covers() -> None:
    def page(*numbers: int) -> QidoResponse:
        return QidoResponse(200, "u", {}, [study(n) for n in numbers])

    span = PageSpan()
    seen: set[str] = set()
    fresh, covered = span.take(page(0, 1, 2), "0020000D", seen, 0)
    assert (uids(fresh), covered, seen) == (["1.2.0", "1.2.1", "1.2.2"], 3, set(uids(fresh)))
    fresh, covered = span.take(page(2, 3, 3), "0020000D", seen, 3)  # a repeat within the page
    assert (uids(fresh), covered) == (["1.2.3"], 2)  # covers its 2 distinct results
    assert "1.2.3" in seen
    no_uid = {"00100020": {"vr": "LO", "Value": ["P1"]}}  # identified by its whole JSON
    fresh, covered = span.take(QidoResponse(200, "u", {}, [no_uid, no_uid]), "0020000D", seen, 5)
    assert (fresh, covered) == ([no_uid], 1)
    with pytest.raises(InvalidResponseError, match="offset=6") as raised:  # as covered() says
        span.take(QidoResponse(200, "u", {}, [no_uid, study(9)]), "0020000D", seen, 6)
    assert "in place of another match" in str(raised.value)
    assert "1.2.9" in seen  # unseen() ran first, as before


@pytest.mark.anyio
async def test_bad_page_size() -> None:
    from aqido.errors import InvalidQueryError

    for bad in (-1, 0, 2.5, True):
        with pytest.raises(InvalidQueryError, match="page_size"):
            await collect(FakeServer(1), HierarchicalQuery(), page_size=bad)  # type: ignore[arg-type]


# --- search_many / iter_search_many ----------------------------------------------------------


class Recorder:
    """A fake search that counts concurrency and can fail or block."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.active = 0
        self.peak = 0
        self.fail = fail or set()
        self.started: list[int] = []
        self.cancelled = 0

    async def __call__(self, n: int) -> list[int]:
        self.started.append(n)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            # finish in reverse order of submission, to show results come back in order
            for _ in range(30 - n):
                await anyio.lowlevel.checkpoint()
            if n in self.fail:
                raise ServerError(503, f"http://h/{n}")
            return [n, n]
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


@pytest.mark.anyio
async def test_search_many_keeps_order_and_bounds_workers() -> None:
    recorder = Recorder()
    results = await search_many(recorder, range(20), workers=3)
    assert results == [[n, n] for n in range(20)]
    assert recorder.peak == 3


@pytest.mark.anyio
async def test_search_many_empty() -> None:
    assert await search_many(Recorder(), [], workers=3) == []


@pytest.mark.anyio
async def test_search_many_raises_first_error_alone_and_cancels_the_rest() -> None:
    recorder = Recorder(fail={5})
    with pytest.raises(ServerError) as info:
        await search_many(recorder, range(20), workers=4)
    assert info.value.url == "http://h/5"
    assert recorder.active == 0
    assert len(recorder.started) < 20


@pytest.mark.anyio
async def test_iter_search_many_yields_as_completed() -> None:
    recorder = Recorder()
    pairs = [pair async for pair in iter_search_many(recorder, range(6), workers=6)]
    assert sorted(pairs) == [(n, [n, n]) for n in range(6)]
    assert [n for n, _ in pairs] == [5, 4, 3, 2, 1, 0]  # fastest first


@pytest.mark.anyio
async def test_iter_search_many_error_reaches_the_consumer() -> None:
    with pytest.raises(ServerError):
        async for _ in iter_search_many(Recorder(fail={2}), range(6), workers=2):
            pass


async def no_new_tasks(before: set[asyncio.Task[Any]]) -> bool:
    """Whether every task started since ``before`` has finished (a few loop turns allowed)."""
    for _ in range(20):
        if not asyncio.all_tasks() - before:
            return True
        await asyncio.sleep(0)
    return False


@pytest.mark.anyio
async def test_breaking_out_cancels_the_background_workers() -> None:
    recorder = Recorder()
    before = asyncio.all_tasks()
    from contextlib import aclosing

    async with aclosing(iter_search_many(recorder, range(10), workers=5)) as pairs:
        async for _ in pairs:
            break
    assert recorder.active == 0
    assert recorder.cancelled >= 1
    assert await no_new_tasks(before)


@pytest.mark.anyio
async def test_breaking_out_without_aclosing_still_cleans_up() -> None:
    recorder = Recorder()
    before = asyncio.all_tasks()
    async for _ in iter_search_many(recorder, range(10), workers=5):
        break
    assert await no_new_tasks(before)
    assert recorder.active == 0


@pytest.mark.anyio
async def test_cancelling_the_consumer_cancels_the_workers() -> None:
    recorder = Recorder()
    before = asyncio.all_tasks()
    with anyio.move_on_after(0.05):
        async for _ in iter_search_many(recorder, [0] * 1000, workers=5):
            pass
    assert recorder.active == 0
    assert await no_new_tasks(before)


# --- building blocks ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_first_error_group_raises_plain_error() -> None:
    async def fail() -> None:
        raise NotFoundError(404, "http://h/x")

    async def wait() -> None:
        await anyio.sleep_forever()

    async def run() -> None:
        async with FirstErrorGroup() as group:
            group.start_soon(wait)
            group.start_soon(fail)

    with pytest.raises(NotFoundError):
        await run()


@pytest.mark.anyio
async def test_first_error_group_waits_for_tasks_its_tasks_start() -> None:
    # __aexit__ waits until no task is left, including ones started while it waits.
    done: list[str] = []

    async def leaf(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        done.append(name)

    async def parent(group: FirstErrorGroup) -> None:
        await asyncio.sleep(0.01)
        group.start_soon(leaf, "late child", 0.03)
        done.append("parent")

    with anyio.fail_after(5):
        async with FirstErrorGroup() as group:
            group.start_soon(parent, group)
            group.start_soon(leaf, "quick", 0)
    assert done == ["quick", "parent", "late child"]
    async with FirstErrorGroup():
        pass  # no task: nothing to wait for


@pytest.mark.anyio
async def test_first_error_group_cancelled_twice_still_waits_for_every_task() -> None:
    # A task's cleanup that awaits must end before the owner's cancellation propagates,
    # however many times the owner is cancelled meanwhile.
    cleaned: list[int] = []
    started = asyncio.Event()

    async def slow_cleanup(n: int) -> None:
        try:
            started.set()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await asyncio.sleep(0.02 * (n + 1))
            cleaned.append(n)

    async def owner() -> None:
        async with FirstErrorGroup() as group:
            for n in range(3):
                group.start_soon(slow_cleanup, n)

    task = asyncio.get_running_loop().create_task(owner())
    await started.wait()
    task.cancel()
    await asyncio.sleep(0.01)
    task.cancel()  # again, while the tasks clean up
    with anyio.fail_after(5), pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(cleaned) == [0, 1, 2]


@pytest.mark.anyio
async def test_stream_from_propagates_non_qido_errors_too() -> None:
    async def produce(send: Any) -> None:
        await send.send(1)
        raise KeyError("bug")

    got: list[int] = []

    async def consume() -> None:
        async for item in stream_from(produce):
            got.append(item)

    with pytest.raises(KeyError):
        await consume()
    assert got == [1]


@pytest.mark.anyio
async def test_handoff_consumer_takes_every_waiting_item_without_a_loop_turn() -> None:
    # A busy loop must not make finished producers (a crawl's studies, holding their
    # results and window slots) wait one loop turn each to be taken.
    handoff: Handoff[int] = Handoff()
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async with FirstErrorGroup() as group:
        for n in range(5):
            group.start_soon(handoff.send, n)
        await asyncio.sleep(0)  # every producer is now waiting for its item to be taken
        tick = asyncio.get_running_loop().create_task(ticker())
        await asyncio.sleep(0)
        seen: list[tuple[int, int]] = []
        items = handoff.items()
        for _ in range(5):
            seen.append((await items.__anext__(), turns))
        tick.cancel()
        handoff.close()
        assert [item async for item in items] == []
    assert [item for item, _ in seen] == [0, 1, 2, 3, 4]
    assert len({at for _, at in seen}) == 1, seen


@pytest.mark.anyio
async def test_handoff_send_returns_only_once_its_item_is_taken() -> None:
    handoff: Handoff[str] = Handoff()
    events: list[str] = []

    async def produce() -> None:
        await handoff.send("a")
        events.append("a returned")

    async with FirstErrorGroup() as group:
        group.start_soon(produce)
        for _ in range(5):
            await asyncio.sleep(0)
        assert events == []  # nobody took it: the producer still holds it
        items = handoff.items()
        assert await items.__anext__() == "a"
        events.append("a taken")
        await asyncio.sleep(0)
        handoff.close()
        assert [item async for item in items] == []
    assert events == ["a taken", "a returned"]


@pytest.mark.anyio
async def test_handoff_a_cancelled_send_is_withdrawn_and_close_ends_after_the_rest() -> None:
    handoff: Handoff[int] = Handoff()
    loop = asyncio.get_running_loop()
    first = loop.create_task(handoff.send(1))
    second = loop.create_task(handoff.send(2))
    third = loop.create_task(handoff.send(3))
    await asyncio.sleep(0)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    handoff.close()
    assert [item async for item in handoff.items()] == [1, 3]
    await asyncio.wait({first, third})
    assert first.exception() is None
    assert third.exception() is None
    with pytest.raises(RuntimeError, match="after close"):
        await handoff.send(4)


@pytest.mark.anyio
async def test_handoff_skips_a_send_cancelled_just_before_the_consumer_runs() -> None:
    # The sender's task learns of its cancellation a loop turn later; the consumer,
    # running first, must skip the item rather than hand it out (or fail on it).
    handoff: Handoff[int] = Handoff()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(handoff.send(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    handoff.close()
    assert [item async for item in handoff.items()] == [1, 3]
    await asyncio.wait(tasks)
    assert [task.cancelled() for task in tasks] == [False, True, False]


@pytest.mark.anyio
async def test_handoff_a_consumer_cancelled_while_waiting_breaks_neither_send_nor_close() -> None:
    # Task.cancel() cancels the future the consumer waits on at once; the consumer's task
    # only runs (and forgets that future) on the next turn.  A send or a close in between
    # must not try to wake the cancelled future.
    handoff: Handoff[int] = Handoff()
    items = handoff.items()
    consumer = asyncio.get_running_loop().create_task(items.__anext__())
    await asyncio.sleep(0)  # the consumer waits
    consumer.cancel()
    sending = handoff.send(1)
    pending = sending.send(None)  # runs send() to where it waits for its item to be taken
    assert isinstance(pending, asyncio.Future)
    sending.close()  # withdraws the item
    handoff.close()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert [item async for item in handoff.items()] == []


@pytest.mark.anyio
async def test_handoff_a_waiting_consumer_gets_an_item_sent_later() -> None:
    handoff: Handoff[int] = Handoff()
    items = handoff.items()
    waiting = asyncio.get_running_loop().create_task(items.__anext__())
    await asyncio.sleep(0)  # the consumer waits for the first item
    await handoff.send(7)  # taken by the waiting consumer: returns at once
    assert await waiting == 7
    handoff.close()
    assert [item async for item in items] == []


def test_levels_have_uid_keys() -> None:
    from aqido.crawl import UID_KEYS

    assert set(UID_KEYS) == set(QueryLevel)


def test_a_consumer_cancelled_twice_leaves_no_search_running() -> None:
    """The second cancellation arrives while the stream waits for its producer to unwind."""
    in_flight: set[int] = set()
    started = asyncio.Event()

    async def search(q: int) -> int:
        in_flight.add(q)
        if len(in_flight) == 4:
            started.set()
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.2)  # a request's cleanup that takes a moment
            in_flight.discard(q)
        return q

    async def consume() -> None:
        async for _ in iter_search_many(search, range(20), workers=4):
            pass

    async def main() -> tuple[set[int], int]:
        consumer = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 10)
        consumer.cancel()
        await asyncio.sleep(0.05)  # the consumer now waits for the producer's cleanup
        consumer.cancel()  # an outer timeout or task group, a notebook...
        with pytest.raises(asyncio.CancelledError):
            await consumer
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return set(in_flight), len(others)

    assert asyncio.run(main()) == (set(), 0)

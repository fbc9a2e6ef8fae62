"""Structured concurrency for the client: a task group that raises its first error alone,
a producer streamed to a consumer, and many searches through a bounded pool.

Used by :mod:`aqido.crawl` and the client; no aiohttp here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from aqido.errors import (
    QidoError,
)

if TYPE_CHECKING:  # pragma: no cover - annotations only
    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

logger = logging.getLogger("aqido")

T = TypeVar("T")
Q = TypeVar("Q")
R = TypeVar("R")


# --- structured task groups ----------------------------------------------------------------


class FirstErrorGroup:
    """A task group where the first :class:`QidoError` cancels the rest and is raised alone.

    Users get the error they can handle (``except ServerError``) rather than an
    ``ExceptionGroup``.  Another exception in a task (a bug) cancels the rest
    too and is raised as it is (the first one).  The body of ``async with``
    only starts tasks (tasks may start more); on leaving it, every task is
    awaited.  Cancelling the task that owns the group (an anyio cancel scope,
    ``asyncio.Task.cancel``) cancels every task and waits for them before
    the cancellation propagates, so no task outlives its group.

    Plain asyncio tasks, not an anyio task group: an anyio task costs a
    cancel scope, an event and a wrapper coroutine on top of the task (about
    four times ``loop.create_task``), and a crawl starts one per request.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._cancelled: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: What ``__aexit__`` awaits: set once no task is left.
        self._waiter: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if exc is not None:
            self._cancel()
        cancellation: asyncio.CancelledError | None = None
        assert self._loop is not None
        while self._tasks:
            # One future, set by _done when the last task ends: asyncio.wait() would add a
            # callback of its own to every task (an event-loop turn each: a crawl waits
            # for every study's series this way).
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            except asyncio.CancelledError as error:
                # Cancel the tasks, wait for them, then propagate this very exception
                # (anyio's cancel scopes recognise their own by its message).
                cancellation = cancellation or error
                self._cancel()
            finally:
                self._waiter = None
        if exc is not None:
            return None
        if cancellation is not None:
            raise cancellation
        if self._error is not None:
            raise self._error
        return None

    def _cancel(self) -> None:
        """Cancel every task not cancelled yet (once: a task's cleanup may await)."""
        for task in self._tasks - self._cancelled:
            self._cancelled.add(task)
            task.cancel()

    def start_soon(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start ``func(*args)`` in the group."""
        assert self._loop is not None
        task = self._loop.create_task(self._guarded(func, *args))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        tasks = self._tasks
        tasks.discard(task)
        self._cancelled.discard(task)
        if not tasks:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def _guarded(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await func(*args)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - kept and raised by __aexit__
            if self._error is None or (
                isinstance(self._error, QidoError) and not isinstance(error, QidoError)
            ):
                self._error = error  # the first error; a bug is never hidden by a QidoError
            self._cancel()


class Handoff(Generic[T]):
    """Items from producer tasks to one consumer: ``await send(item)`` returns once it is taken.

    What :func:`stream_from` hands its producer.  A producer holds what it
    sends (a crawl: the study's window slot) until the consumer takes it, so
    memory stays bounded by the producers, never by a buffer.  Why not an
    anyio memory object stream: its ``send`` and ``receive`` each begin with a
    checkpoint, an event-loop turn, so a consumer takes one item per turn of a
    busy loop while finished producers wait in line, holding their results.
    Here the consumer takes every item waiting at once, without a turn
    between them; a producer whose item is taken resumes on the next turn.
    """

    __slots__ = ("_closed", "_consumer", "_items")

    def __init__(self) -> None:
        self._items: deque[tuple[T, asyncio.Future[None] | None]] = deque()
        self._consumer: asyncio.Future[None] | None = None
        self._closed = False

    async def send(self, item: T) -> None:
        """Hand ``item`` to the consumer; return once it has it (cancellable until then)."""
        if self._closed:
            raise RuntimeError("Handoff.send() after close()")
        consumer = self._consumer
        if consumer is not None and not consumer.done() and not self._items:
            # the consumer is waiting for this very item: it has it on its next turn
            # (a cancelled consumer's future is done before its task has run again)
            self._items.append((item, None))
            self._consumer = None
            consumer.set_result(None)
            return
        taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (item, taken)
        self._items.append(entry)
        try:
            await taken
        except BaseException:
            if taken.cancelled() or not taken.done():  # withdrawn: the consumer never sees it
                with contextlib.suppress(ValueError):  # already skipped by the consumer
                    self._items.remove(entry)
            raise

    def close(self) -> None:
        """No more items: the consumer ends after the ones already sent."""
        self._closed = True
        consumer = self._consumer
        if consumer is not None:
            self._consumer = None
            if not consumer.done():
                consumer.set_result(None)

    async def items(self) -> AsyncGenerator[T, None]:
        """Every item sent, in order, until :meth:`close`; items waiting are taken at once."""
        queue = self._items
        while True:
            while queue:
                item, taken = queue.popleft()
                if taken is not None:
                    if taken.cancelled():
                        continue  # its sender was cancelled before it was taken
                    taken.set_result(None)
                yield item
            if self._closed:
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._consumer = waiter
            try:
                await waiter
            finally:
                if self._consumer is waiter:
                    self._consumer = None


async def stream_from(
    produce: Callable[[Handoff[T]], Awaitable[None]],
) -> AsyncGenerator[T, None]:
    """Yield what ``produce(send)`` sends, running it in a background task.

    Why a task, and not an anyio task group around the ``yield``: an async
    generator must never yield from inside a task group or cancel scope (the
    scope would be entered and exited in different tasks once the consumer
    is cancelled, or left open if it stops iterating; anyio and trio forbid
    it).  So the producer's task group lives in its own task, owned by this
    generator and never outliving it: a consumer that stops early is safe: on exhaustion,
    ``break`` (once the generator is closed), an exception, a cancellation or a
    timeout, the producer is cancelled and awaited before this generator
    finishes.  A producer error is raised here, at the consumer.  ``produce``
    gets a :class:`Handoff`; its ``send`` returns once this generator has
    taken the item.
    """
    handoff: Handoff[T] = Handoff()

    async def run() -> None:
        try:
            await produce(handoff)
        finally:
            handoff.close()

    task = asyncio.get_running_loop().create_task(run())
    error: BaseException | None = None
    try:
        async with aclosing(handoff.items()) as items:
            async for item in items:
                yield item
    finally:
        if not task.done():
            task.cancel()
        # Wait until the producer is really done, whatever cancellation comes meanwhile:
        # anyio's shield keeps out anyio's scopes, not a second asyncio task.cancel()
        # (a timeout or a notebook cancelling twice), which would leave the producer,
        # its workers and their requests running (as FirstErrorGroup.__aexit__ does).
        cancellation: asyncio.CancelledError | None = None
        while not task.done():
            try:
                with anyio.CancelScope(shield=True):
                    await asyncio.wait({task})
            except asyncio.CancelledError as again:
                cancellation = cancellation or again
        if cancellation is not None:
            raise cancellation
        if not task.cancelled():
            error = task.exception()
    if error is not None:
        raise error


# --- many queries --------------------------------------------------------------------------


async def search_many(
    search: Callable[[Q], Awaitable[R]], queries: Iterable[Q], *, workers: int
) -> list[R]:
    """Run ``search`` on every query with at most ``workers`` in flight; results in order.

    The first :class:`~aqido.errors.QidoError` cancels the remaining searches
    and is raised.
    """
    todo = list(enumerate(queries))
    results: list[Any] = [None] * len(todo)
    pending = iter(todo)

    async def worker() -> None:
        for index, query in pending:
            results[index] = await search(query)

    async with FirstErrorGroup() as group:
        for _ in range(min(max(1, workers), len(todo))):
            group.start_soon(worker)
    return results


async def iter_search_many(
    search: Callable[[Q], Awaitable[R]], queries: Iterable[Q], *, workers: int
) -> AsyncGenerator[tuple[Q, R], None]:
    """Like :func:`search_many`, but yield ``(query, results)`` as each search completes."""
    pending = iter(list(queries))

    async def produce(send: Handoff[tuple[Q, R]]) -> None:
        async def worker() -> None:
            for query in pending:
                result = await search(query)
                await send.send((query, result))

        async with FirstErrorGroup() as group:
            for _ in range(max(1, workers)):
                group.start_soon(worker)

    async with aclosing(stream_from(produce)) as pairs:
        async for pair in pairs:
            yield pair

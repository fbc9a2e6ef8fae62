"""Concurrency for aqido: paging, many searches at once, and study → series → instance crawls.

Everything here is written against one small seam, a :data:`Fetch` callable
``(query, limiter) -> QidoResponse`` that performs one logical request
(retries included); :class:`aqido.client.AsyncQidoRS` provides it.  There is no
aiohttp here, only anyio:

- :func:`iter_pages`: ``limit``/``offset`` paging with every stop condition a
  real server needs (204 or empty page, short page, truncation warnings, a
  server that ignores ``offset``), de-duplicating by UID;
- :func:`search_many` / :func:`iter_search_many`: many queries through a
  bounded pool of workers, in order or as they complete;
- :func:`crawl`: a bounded producer/consumer walk that yields each study as
  soon as its subtree is complete, with a fixed window of studies in flight.

Rules that keep cancellation clean: requests are always awaited inside the
task that owns them; the first :class:`~aqido.errors.QidoError` in a group
cancels its siblings and is raised on its own (never an ``ExceptionGroup``);
the streaming iterators run their workers in a background task that is
cancelled and awaited whenever the consumer stops, however it stops (end,
``break``, exception, cancellation, timeout).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import aclosing
from types import TracebackType
from typing import Any, TypeVar

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from aqido.errors import InvalidQueryError, InvalidResponseError, QidoError
from aqido.protocol import QidoResponse
from aqido.query import BaseQuery, HierarchicalQuery, QueryLevel

__all__ = [
    "UID_KEYS",
    "Fetch",
    "FirstErrorGroup",
    "Page",
    "crawl",
    "iter_pages",
    "iter_search_many",
    "search_many",
    "stream_from",
]

logger = logging.getLogger("aqido")

T = TypeVar("T")
Q = TypeVar("Q")
R = TypeVar("R")

#: One logical request: ``await fetch(query, limiter)``; ``limiter`` (or ``None``) is an
#: extra per-operation :class:`anyio.CapacityLimiter` to hold while the request is in flight.
Fetch = Callable[[BaseQuery, "anyio.CapacityLimiter | None"], Awaitable[QidoResponse]]

#: The JSON key of the UID that identifies a result at each level.
UID_KEYS = {
    QueryLevel.STUDY: "0020000D",
    QueryLevel.SERIES: "0020000E",
    QueryLevel.INSTANCE: "00080018",
}


# --- structured task groups ----------------------------------------------------------------


class FirstErrorGroup:
    """An anyio task group where the first :class:`QidoError` cancels the rest and is raised alone.

    Users get the error they can handle (``except ServerError``) rather than an
    ``ExceptionGroup``.  Other exceptions (bugs) propagate as anyio raises them.
    """

    def __init__(self) -> None:
        self._group: TaskGroup | None = None
        self._error: QidoError | None = None

    async def __aenter__(self) -> FirstErrorGroup:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._group is not None
        suppress = await self._group.__aexit__(exc_type, exc, tb)
        if self._error is not None:
            raise self._error
        return suppress

    def start_soon(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start ``func(*args)`` in the group."""
        assert self._group is not None
        self._group.start_soon(self._guarded, func, *args)

    async def _guarded(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        assert self._group is not None
        try:
            await func(*args)
        except QidoError as error:
            if self._error is None:
                self._error = error
            self._group.cancel_scope.cancel()


async def stream_from(
    produce: Callable[[MemoryObjectSendStream[T]], Awaitable[None]], *, buffer: int = 0
) -> AsyncGenerator[T, None]:
    """Yield what ``produce(send)`` sends, running it in a background task.

    The producer's task group lives in its own task, never across a ``yield``
    of this generator, so a consumer that stops early is safe: on exhaustion,
    ``break`` (once the generator is closed), an exception, a cancellation or a
    timeout, the producer is cancelled and awaited before this generator
    finishes.  A producer error is raised here, at the consumer.
    """
    send, receive = anyio.create_memory_object_stream[T](buffer)

    async def run() -> None:
        with send:
            await produce(send)

    task = asyncio.get_running_loop().create_task(run())
    error: BaseException | None = None
    try:
        async for item in receive:
            yield item
    finally:
        if not task.done():
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait({task})
        receive.close()
        if not task.cancelled():
            error = task.exception()
    if error is not None:
        raise error


# --- paging --------------------------------------------------------------------------------


@attrs.frozen
class Page:
    """One page of a paged search: the response and its items not seen on earlier pages."""

    response: QidoResponse
    items: list[dict[str, Any]]
    offset: int


def _identity(item: dict[str, Any], key: str) -> str:
    element = item.get(key)
    if isinstance(element, dict):
        values = element.get("Value")
        if isinstance(values, list) and values and isinstance(values[0], str):
            return values[0].rstrip("\x00 ")
    return json.dumps(item, sort_keys=True, default=str)


async def iter_pages(
    fetch: Fetch,
    query: BaseQuery,
    *,
    page_size: int | None = None,
    limiter: anyio.CapacityLimiter | None = None,
) -> AsyncGenerator[Page, None]:
    """Page through every match of ``query`` with ``limit``/``offset``.

    The page size is ``page_size``, else the query's own ``limit``; with
    neither, the first request has no ``limit`` and paging continues only if
    the server says it truncated the answer (a 299 truncation warning or 206).
    Paging starts at the query's ``offset`` and stops on:

    1. 204 or an empty page;
    2. a page shorter than the page size with no truncation warning
       (or a warning that says 0 additional results);
    3. a page whose results were *all* returned before: the server ignores
       ``offset``, so :class:`~aqido.errors.InvalidResponseError` is raised
       (continuing would loop forever; stopping silently would lose data).

    Results already seen (by UID: a store changing during paging shifts
    pages) are dropped; a server that ignores ``limit`` and returns more is
    fine (the next offset counts what was received).
    """
    if page_size is not None and (
        isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1
    ):
        raise InvalidQueryError(f"page_size must be a positive int or None, not {page_size!r}")
    size = page_size or query.limit or None
    key = UID_KEYS[query.query_level]
    seen: set[str] = set()
    offset = query.offset
    first = True
    while True:
        page_query = query
        if not first or size != query.limit:
            page_query = attrs.evolve(query, limit=size or 0, offset=offset)
        first = False
        response = await fetch(page_query, limiter)
        items = response.items
        if not items:
            return
        fresh: list[dict[str, Any]] = []
        for item in items:
            identity = _identity(item, key)
            if identity not in seen:
                seen.add(identity)
                fresh.append(item)
        if not fresh:
            raise InvalidResponseError(
                f"the server returned the same results again for offset={offset}: it ignores "
                "'offset', so paging cannot go further; narrow the query (e.g. by date) "
                "so that one page holds every match",
                url=response.url,
                status=response.status,
            )
        yield Page(response, fresh, offset)
        offset += len(items)
        remaining = response.additional_results
        if response.truncated:
            if remaining == 0:
                return
            logger.debug(
                "following truncation of %s (%s more)", response.url, remaining or "unknown"
            )
            continue
        if size is None or len(items) < size:
            return


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

    async def produce(send: MemoryObjectSendStream[tuple[Q, R]]) -> None:
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


# --- crawl ---------------------------------------------------------------------------------


def _level(depth: QueryLevel | str) -> QueryLevel:
    try:
        return QueryLevel(str(depth).upper())
    except ValueError:
        raise InvalidQueryError(
            f"depth must be QueryLevel.STUDY, SERIES or INSTANCE, not {depth!r}"
        ) from None


async def crawl(
    fetch_results: Callable[[BaseQuery, int | None], AsyncGenerator[Any, None]],
    query: BaseQuery,
    *,
    depth: QueryLevel | str = QueryLevel.INSTANCE,
    window: int,
    page_size: int | None = None,
) -> AsyncGenerator[Any, None]:
    """Walk studies → series → instances; yield each study once its subtree is complete.

    Arguments:
        fetch_results: ``fetch_results(query, page_size)`` yields the typed results
            of every page of ``query`` (see :func:`iter_pages`).
        query: a study-level query selecting the studies to walk.
        depth: SERIES stops at series, INSTANCE (default) fetches instances too,
            STUDY only lists the studies.
        window: how many studies may be in progress at once (fetched but not yet
            handed to the consumer): memory is bounded by this window, not by
            the archive.
        page_size: page size for the study listing (``None``: the server's).

    Studies are yielded in completion order, each as ``attrs.evolve(study,
    series=(...))`` with ``series.instances`` filled at INSTANCE depth.
    """
    level = _level(depth)
    if query.query_level is not QueryLevel.STUDY:
        raise InvalidQueryError(
            f"crawl starts from a study-level query, not {query.query_level.name} "
            f"({query}); use search or iter_search for that"
        )

    async def children(study_uid: str, series_uid: str = "") -> list[Any]:
        child = HierarchicalQuery(
            query_level=QueryLevel.INSTANCE if series_uid else QueryLevel.SERIES,
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=series_uid,
        )
        async with aclosing(fetch_results(child, None)) as results:
            return [item async for item in results]

    async def with_instances(series: Any, study_uid: str, out: list[Any], index: int) -> None:
        instances = await children(study_uid, _uid(series, "SeriesInstanceUID"))
        out[index] = attrs.evolve(series, instances=tuple(instances))

    async def subtree(study: Any) -> Any:
        study_uid = _uid(study, "StudyInstanceUID")
        series = await children(study_uid)
        if level is QueryLevel.INSTANCE:
            filled: list[Any] = [None] * len(series)
            async with FirstErrorGroup() as group:
                for index, one in enumerate(series):
                    group.start_soon(with_instances, one, study_uid, filled, index)
            series = filled
        return attrs.evolve(study, series=tuple(series))

    async def produce(send: MemoryObjectSendStream[Any]) -> None:
        slots = anyio.Semaphore(max(1, window))

        async def finish(study: Any) -> None:
            try:
                await send.send(await subtree(study))
            finally:
                slots.release()

        async def walk() -> None:
            async with aclosing(fetch_results(query, page_size)) as studies:
                async for study in studies:
                    if level is QueryLevel.STUDY:
                        await send.send(study)
                        continue
                    await slots.acquire()
                    group.start_soon(finish, study)

        async with FirstErrorGroup() as group:
            group.start_soon(walk)

    async with aclosing(stream_from(produce)) as studies:
        async for study in studies:
            yield study


def _uid(result: Any, keyword: str) -> str:
    value = getattr(result, keyword, None)
    if not value:
        raise InvalidResponseError(
            f"a {type(result).__name__} in the response has no {keyword}, so its children "
            "cannot be listed"
        )
    return str(value)

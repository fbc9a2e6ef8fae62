"""``QidoRS``: a blocking client for scripts and notebooks, over :class:`~aqido.client.AsyncQidoRS`.

Same methods, same options, same results and errors, without ``await``.
The async client runs on its own event loop in a background thread (anyio's
blocking portal, started on first use), so ``QidoRS`` works where
``asyncio.run`` cannot: inside a running event loop (a Jupyter cell, an
async test) and from several threads at once, all sharing one connection
pool and one ``max_concurrency`` limit.

Lifecycle: use it as a context manager, or call :meth:`QidoRS.close`
(idempotent, from any thread): it cancels whatever is still running, closes
the HTTP session, stops the loop and joins its thread.  A client that is
garbage collected without being closed is closed then.

Cancellation: a ``KeyboardInterrupt`` (Ctrl-C) in a thread waiting for a
call cancels that call's work on the loop (requests in flight included)
before it propagates.  The iterators (:meth:`QidoRS.iter_search`,
:meth:`QidoRS.crawl`, :meth:`QidoRS.iter_search_many`) run their async
generator in one task on the loop, which runs at most a few dozen items
ahead of the consumer (items are handed over in batches); leaving
the loop early (``break``, an exception, garbage collection of the iterator)
cancels that task and waits for it to finish.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import weakref
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractContextManager, aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from aqido.checkpoint import CrawlCheckpoint
from aqido.client import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    AsyncQidoRS,
    ProfileSource,
)
from aqido.errors import ClientClosedError
from aqido.profile import ServerProfile
from aqido.progress import CrawlProgress, make_progress, report
from aqido.query import QueryLevel
from aqido.stats import CrawlStats

if TYPE_CHECKING:  # pragma: no cover
    from aqido.client import Auth, SearchResults, SSLOption
    from aqido.protocol import QidoResponse
    from aqido.query import BaseQuery
    from aqido.results import Instance, Series, Study
    from aqido.retry import Retry, Timeout


T = TypeVar("T")

#: Items an iterator may fetch ahead of its consumer, and hands over per round trip.
_BUFFER = 64
_BATCH = 1000
#: How often a waiting thread wakes up to notice Ctrl-C (where lock waits are not interruptible).
_POLL = 0.25


class _Runner:
    """The event loop thread of one ``QidoRS``: the portal, the async client, the tasks."""

    def __init__(self, client: AsyncQidoRS) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.cm: AbstractContextManager[BlockingPortal] | None = None
        self.portal: BlockingPortal | None = None
        self.thread_id: int | None = None
        self.closed = False
        self.tasks: set[tuple[concurrent.futures.Future[Any], threading.Event]] = set()

    def start(self) -> BlockingPortal:
        with self.lock:
            if self.closed:
                raise ClientClosedError("This QidoRS has been closed; create a new one.")
            if self.portal is None:
                cm = start_blocking_portal("asyncio")
                self.portal = cm.__enter__()
                self.cm = cm
                self.thread_id = self.portal.call(threading.get_ident)
            return self.portal

    def submit(
        self, func: Callable[..., Awaitable[T]], *args: Any
    ) -> tuple[concurrent.futures.Future[T], threading.Event]:
        """Start ``func(*args)`` as a task on the loop; the event is set when it has finished."""
        if threading.get_ident() == self.thread_id:
            raise RuntimeError("QidoRS cannot be called from its own event loop thread")
        portal = self.start()
        done = threading.Event()

        async def run() -> T:
            try:
                return await func(*args)
            finally:
                done.set()

        # Never hold the lock while talking to the loop: the loop thread takes it in _forget.
        future = portal.start_task_soon(run)
        entry = (future, done)
        with self.lock:  # close() either sees this task in its snapshot, or it is refused here
            refused = self.closed
            if not refused:
                self.tasks.add(entry)
        if refused:
            future.cancel()
            done.wait()
            raise ClientClosedError("This QidoRS has been closed; create a new one.")
        future.add_done_callback(lambda _: self._forget(entry))
        return future, done

    def _forget(self, entry: tuple[concurrent.futures.Future[Any], threading.Event]) -> None:
        with self.lock:
            self.tasks.discard(entry)

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``func(*args)`` on the loop and wait for it; cancel it if the wait is interrupted."""
        future, done = self.submit(func, *args)
        try:
            while not future.done():
                concurrent.futures.wait([future], timeout=_POLL)
            return future.result()
        except concurrent.futures.CancelledError:
            if self.closed:
                raise ClientClosedError(
                    "This QidoRS was closed while the call was running."
                ) from None
            raise  # pragma: no cover - only close() cancels a call that is being waited for
        finally:
            if not future.done() or not done.is_set():
                future.cancel()
                done.wait()

    def close(self) -> None:
        """Cancel the running tasks, close the client, stop the loop, join the thread."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            portal, cm = self.portal, self.cm
            tasks = list(self.tasks)
        if portal is None or cm is None:
            return
        if threading.get_ident() == self.thread_id:  # pragma: no cover - GC on the loop thread
            return
        for future, _ in tasks:
            future.cancel()
        for _, done in tasks:
            done.wait()
        try:
            portal.call(self.client.close)
        finally:
            portal.call(portal.stop, True)  # cancel anything left, then end the loop
            cm.__exit__(None, None, None)  # joins the thread


class QidoRS:
    """A blocking QIDO-RS client: :class:`~aqido.client.AsyncQidoRS` for code that is not async.

    The arguments are those of ``AsyncQidoRS`` (``url``, ``auth``,
    ``headers``, ``timeout``, ``retries``, ``max_concurrency``, ``server_limit``,
    ``profile``, ``pn_case_sensitive``, ``strict_matching``, ``permissive_uid``,
    ``max_response_bytes``, ``ssl``, ``trust_env``) except
    ``session``: an aiohttp session belongs to one event loop, and this
    client's loop is its own.  Methods return what the async ones return
    (``iter_*`` and ``crawl`` give plain iterators) and raise the same errors.
    Thread-safe.  See the module docstring for lifecycle and cancellation.
    """

    def __init__(
        self,
        url: str,
        *,
        auth: Auth | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout | float | None = DEFAULT_TIMEOUT,
        retries: Retry | int | None = DEFAULT_RETRY,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        server_limit: int | Mapping[Any, int] | None = None,
        profile: ProfileSource | None = None,
        pn_case_sensitive: bool | None = True,
        strict_matching: bool = False,
        permissive_uid: bool = False,
        max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
        ssl: SSLOption = None,
        trust_env: bool = True,
    ) -> None:
        self._async = AsyncQidoRS(
            url,
            auth=auth,
            headers=headers,
            timeout=timeout,
            retries=retries,
            max_concurrency=max_concurrency,
            server_limit=server_limit,
            profile=profile,
            pn_case_sensitive=pn_case_sensitive,
            strict_matching=strict_matching,
            permissive_uid=permissive_uid,
            max_response_bytes=max_response_bytes,
            ssl=ssl,
            trust_env=trust_env,
        )
        self._runner = _Runner(self._async)
        self._finalizer = weakref.finalize(self, self._runner.close)

    @property
    def url(self) -> str:
        """The service base URL (without credentials)."""
        return self._async.url

    @property
    def profile(self) -> ServerProfile | None:
        """The server profile searches are planned with (see :attr:`AsyncQidoRS.profile`)."""
        return self._async.profile

    @property
    def async_client(self) -> AsyncQidoRS:
        """The :class:`AsyncQidoRS` doing the work (it lives on this client's loop thread)."""
        return self._async

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._runner.closed

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncQidoRS(", "QidoRS(", 1)

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> QidoRS:
        self._runner.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Cancel running work, close the session, stop the loop thread; safe to call again."""
        self._finalizer()

    # --- plumbing -------------------------------------------------------------------------

    def _iterate(self, make: Callable[[], AsyncGenerator[T, None]]) -> Iterator[T]:
        """Iterate ``make()`` in one task on the loop, handing items over in batches."""
        send, receive = anyio.create_memory_object_stream[T](_BUFFER)

        async def pump() -> None:
            async with send:
                items = make()
                async with aclosing(items):
                    async for item in items:
                        await send.send(item)

        async def take() -> list[T]:
            try:
                batch = [await receive.receive()]
            except anyio.EndOfStream:
                return []
            while len(batch) < _BATCH:
                try:
                    batch.append(receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            return batch

        future: concurrent.futures.Future[None] | None = None
        done: threading.Event | None = None
        try:
            future, done = self._runner.submit(pump)
            while batch := self._runner.call(take):
                yield from batch
            while not future.done():
                concurrent.futures.wait([future], timeout=_POLL)
            future.result()  # the producer's error, if any
        finally:
            if future is not None and done is not None and not done.is_set():
                future.cancel()
                done.wait()
            send.close()
            receive.close()

    # --- the API of AsyncQidoRS -----------------------------------------------------------

    def probe(self) -> ServerProfile:
        """Measure how this archive behaves (see :meth:`AsyncQidoRS.probe`)."""
        return self._runner.call(self._async.probe)

    def search_raw(self, query: Any) -> QidoResponse:
        """Run one search; return the decoded DICOM JSON and headers (see ``AsyncQidoRS``)."""
        return self._runner.call(self._async.search_raw, query)

    def search(self, query: Any) -> SearchResults[Any]:
        """Run one search (one request) and return typed results (:class:`SearchResults`)."""
        return self._runner.call(self._async.search, query)

    def iter_search(self, query: Any, *, page_size: int | None = None) -> Iterator[Any]:
        """Iterate over every result of ``query``, paging with ``limit``/``offset`` as needed."""
        return self._iterate(lambda: self._async.iter_search(query, page_size=page_size))

    def search_many(
        self, queries: Iterable[Any], *, max_concurrency: int | None = None
    ) -> list[SearchResults[Any]]:
        """Run many searches concurrently; return their results in the order given."""
        queries = list(queries)
        return self._runner.call(
            lambda: self._async.search_many(queries, max_concurrency=max_concurrency)
        )

    def iter_search_many(
        self, queries: Iterable[Any], *, max_concurrency: int | None = None
    ) -> Iterator[tuple[BaseQuery, SearchResults[Any]]]:
        """Like :meth:`search_many`, but yield ``(query, results)`` as each search completes."""
        queries = list(queries)
        return self._iterate(
            lambda: self._async.iter_search_many(queries, max_concurrency=max_concurrency)
        )

    def crawl(
        self,
        query: Any = None,
        *,
        depth: QueryLevel | str = QueryLevel.INSTANCE,
        max_concurrency: int | None = None,
        page_size: int | None = None,
        server_limit: int | Mapping[Any, int] | None = None,
        fail_fast: bool = False,
        partial: bool = False,
        stats: CrawlStats | None = None,
        checkpoint: str | os.PathLike[str] | CrawlCheckpoint | None = None,
        progress: bool | CrawlProgress | None = None,
    ) -> Iterator[Study]:
        """Walk studies → series → instances; yield each ``Study`` once its subtree is done.

        As :meth:`AsyncQidoRS.crawl`.  ``progress=True`` shows a progress bar
        (:class:`~aqido.progress.TqdmProgress`); a
        :class:`~aqido.progress.CrawlProgress` gets the callbacks.
        """
        studies = self._iterate(
            lambda: self._async.crawl(
                query,
                depth=depth,
                max_concurrency=max_concurrency,
                page_size=page_size,
                server_limit=server_limit,
                fail_fast=fail_fast,
                partial=partial,
                stats=stats,
                checkpoint=checkpoint,
            )
        )
        if progress is None or progress is False:
            return studies
        return _tracked(studies, progress)

    def find_studies(self, query: Any) -> SearchResults[Study]:
        """Search, and return the results grouped into studies (dicomtrolley's ``find_studies``)."""
        return self._runner.call(self._async.find_studies, query)

    def search_for_studies(
        self,
        *,
        fuzzymatching: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        fields: Iterable[str] | None = None,
        search_filters: Mapping[str, Any] | None = None,
        get_remaining: bool = False,
        additional_params: Mapping[str, str | Sequence[str]] | None = None,
    ) -> SearchResults[Study]:
        """Search for studies, with dicomweb-client's arguments."""
        return self._runner.call(
            lambda: self._async.search_for_studies(
                fuzzymatching=fuzzymatching,
                limit=limit,
                offset=offset,
                fields=fields,
                search_filters=search_filters,
                get_remaining=get_remaining,
                additional_params=additional_params,
            )
        )

    def search_for_series(
        self,
        study_instance_uid: str | None = None,
        *,
        fuzzymatching: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        fields: Iterable[str] | None = None,
        search_filters: Mapping[str, Any] | None = None,
        get_remaining: bool = False,
        additional_params: Mapping[str, str | Sequence[str]] | None = None,
    ) -> SearchResults[Series]:
        """Search for series (of one study, or all series), as dicomweb-client does."""
        return self._runner.call(
            lambda: self._async.search_for_series(
                study_instance_uid,
                fuzzymatching=fuzzymatching,
                limit=limit,
                offset=offset,
                fields=fields,
                search_filters=search_filters,
                get_remaining=get_remaining,
                additional_params=additional_params,
            )
        )

    def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        *,
        fuzzymatching: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        fields: Iterable[str] | None = None,
        search_filters: Mapping[str, Any] | None = None,
        get_remaining: bool = False,
        additional_params: Mapping[str, str | Sequence[str]] | None = None,
    ) -> SearchResults[Instance]:
        """Search for instances, as dicomweb-client does."""
        return self._runner.call(
            lambda: self._async.search_for_instances(
                study_instance_uid,
                series_instance_uid,
                fuzzymatching=fuzzymatching,
                limit=limit,
                offset=offset,
                fields=fields,
                search_filters=search_filters,
                get_remaining=get_remaining,
                additional_params=additional_params,
            )
        )


def _tracked(studies: Iterator[Study], progress: bool | CrawlProgress) -> Iterator[Study]:
    hook = make_progress(progress)
    assert hook is not None
    try:
        for study in studies:
            report(hook, study)
            yield study
    finally:
        close = getattr(studies, "close", None)
        if close is not None:
            close()
        hook.close()

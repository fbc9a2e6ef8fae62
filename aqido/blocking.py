"""``QidoRS``: a blocking client for scripts and notebooks, over :class:`~aqido.client.AsyncQidoRS`.

Same methods, same options, same results and errors, without ``await``.
The async client runs on its own event loop in a background thread (anyio's
blocking portal, started on first use), so ``QidoRS`` works where
``asyncio.run`` cannot: inside a running event loop (a Jupyter cell, an
async test) and from several threads at once, all sharing one connection
pool and one ``max_concurrency`` limit.

Lifecycle: use it as a context manager, or call :meth:`QidoRS.close`
(idempotent, from any thread): it cancels whatever is still running, closes
the HTTP session, stops the loop and joins its thread, and returns once all
that is done, also when another thread's call is doing it.  Called on the loop
thread itself (from a progress hook, say), it returns at once and another
thread does that.  A client that is garbage collected without being closed is
closed then.  Ctrl-C while ``close`` waits leaves the rest of it to another thread.
In the child of ``os.fork()``, a client whose loop had started is closed: its loop
thread and connections stayed in the parent, so every call (and a resumed iterator)
raises :class:`~aqido.errors.ClientClosedError`; create a new client in the child.

Cancellation: a ``KeyboardInterrupt`` (Ctrl-C) in a thread waiting for a
call cancels that call's work on the loop (requests in flight included)
before it propagates.  The iterators (:meth:`QidoRS.iter_search`,
:meth:`QidoRS.crawl`, :meth:`QidoRS.iter_search_many`) run their async
generator in one task on the loop, which runs at most a few dozen items
ahead of the consumer (items are handed over in batches) except a crawl's,
which yields a study only when the consumer asks for it (the crawl fetches
ahead, but writes a study to its checkpoint and counts it in its stats and
progress as it hands it over: exactly those the consumer got); leaving
the loop early (``break``, an exception, garbage collection of the iterator)
cancels that task and waits for it to finish (when the garbage collector
finalizes the iterator on the loop thread itself, it only cancels it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import os
import queue
import re
import sys
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, aclosing, nullcontext
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, NoReturn, ParamSpec, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from aqido.client import (
    AsyncQidoRS,
)
from aqido.errors import ClientClosedError
from aqido.profile import ServerProfile

if TYPE_CHECKING:  # pragma: no cover - annotations only
    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

T = TypeVar("T")
P = ParamSpec("P")

#: Items an iterator may fetch ahead of its consumer, and hands over per round trip.
_BUFFER = 64
_BATCH = 1000
#: How often a waiting thread wakes up to notice Ctrl-C (where lock waits are not interruptible).
_POLL = 0.25
#: ``AsyncGenerator[X, None]`` or ``AsyncIterator[X]``, an async method's return annotation.
_ASYNC_ITERATOR = re.compile(r"^Async(?:Generator|Iterator)\[(.*?)(?:, None)?\]$")
_CLOSED = "This QidoRS has been closed; create a new one."
_FORKED = (
    "This QidoRS was started before os.fork(): its event loop thread and connections stayed "
    "in the parent process; create a new QidoRS in this one."
)


class _Runner:
    """The event loop thread of one ``QidoRS``: the portal, the async client, the tasks."""

    def __init__(self, client: AsyncQidoRS) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.cm: AbstractContextManager[BlockingPortal] | None = None
        self.portal: BlockingPortal | None = None
        self.thread_id: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        #: Set once :meth:`close` has finished: client closed, loop stopped, its thread joined.
        self.shut = threading.Event()
        self.tasks: set[tuple[concurrent.futures.Future[Any], threading.Event]] = set()
        #: Set in the child of an ``os.fork()`` after the loop started: the loop is not there.
        self.forked = False

    def start(self) -> BlockingPortal:
        with self.lock:
            if self.closed:
                raise ClientClosedError(_FORKED if self.forked else _CLOSED)
            if self.portal is None:
                cm = start_blocking_portal("asyncio")
                self.portal = cm.__enter__()
                self.cm = cm
                self.thread_id, self.loop = self.portal.call(_loop_identity)
                _STARTED.add(self)
            return self.portal

    def after_fork(self) -> None:
        """In the child of ``os.fork()``: the loop thread, its tasks and the connections stayed
        in the parent, so every use raises ClientClosedError and nothing waits for them
        (a call, close() or the exit used to hang there for ever)."""
        self.lock = threading.Lock()  # a thread of the parent may have held it
        self.forked = self.closed = True
        if self.portal is not None:
            # Collecting the portal's context manager calls the portal, which waited for the
            # loop for ever: marked as stopped (as anyio does when its loop ends), it raises.
            self.portal._event_loop_thread_id = None
        self.loop = self.thread_id = None
        for _, done in self.tasks:
            done.set()  # their iterators end without waiting for a task that is not here
        self.tasks = set()
        self.shut = threading.Event()
        self.shut.set()

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
        try:
            future = portal.start_task_soon(run)
        except RuntimeError:  # the portal stopped since start(): close() ran meanwhile
            if self.closed:
                raise ClientClosedError(_FORKED if self.forked else _CLOSED) from None
            raise
        entry = (future, done)
        with self.lock:  # close() either sees this task in its snapshot, or it is refused here
            refused = self.closed
            if not refused:
                self.tasks.add(entry)
        if refused:
            future.cancel()
            done.wait()
            raise ClientClosedError(_CLOSED)
        future.add_done_callback(lambda _: self._forget(entry))
        return future, done

    def _forget(self, entry: tuple[concurrent.futures.Future[Any], threading.Event]) -> None:
        with self.lock:
            self.tasks.discard(entry)

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``func(*args)`` on the loop and wait for it; cancel it if the wait is interrupted."""
        future, done = self.submit(func, *args)
        try:
            return self.result(future)
        finally:
            if not future.done() or not done.is_set():
                future.cancel()
                done.wait()

    def result(self, future: concurrent.futures.Future[T]) -> T:
        """Wait for ``future`` (waking up to notice Ctrl-C) and return its result.

        A task that :meth:`close` cancelled raises
        :class:`~aqido.errors.ClientClosedError`, not ``CancelledError``.
        """
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

    def close(self) -> None:
        """Cancel the running tasks, close the client, stop the loop, join the thread.

        A call while another is closing waits until it is done (unless on the loop thread).
        """
        with self.lock:
            closing = self.closed
            self.closed = True
            portal, cm = self.portal, self.cm
            tasks = list(self.tasks)
        if closing:
            if threading.get_ident() != self.thread_id:
                while not self.shut.wait(_POLL):  # waking up to notice Ctrl-C
                    pass
            return
        if portal is None or cm is None:
            self.shut.set()
            return
        if threading.get_ident() == self.thread_id:
            # On the loop thread (a progress hook, a header factory, the garbage collector):
            # waiting for the loop here would stop it, and returning without stopping it
            # left the thread, the session and an exit that hangs; another thread does it.
            threading.Thread(
                target=self._shut_down, args=(portal, cm, tasks), name="aqido-close"
            ).start()
            return
        self._shut_down(portal, cm, tasks)

    def _shut_down(
        self,
        portal: BlockingPortal,
        cm: AbstractContextManager[BlockingPortal],
        tasks: list[tuple[concurrent.futures.Future[Any], threading.Event]],
    ) -> None:
        """The end of :meth:`close`, off the loop thread: cancel and await ``tasks``, close
        the client, stop the loop and join its thread.

        Interrupted (Ctrl-C) while waiting for the tasks, it lets another thread finish:
        otherwise the loop thread and the session stayed, and every later close() waited
        for an end that never came.
        """
        try:
            self._stop(portal, cm, tasks)
        except BaseException:
            if not self.shut.is_set():
                threading.Thread(
                    target=self._stop, args=(portal, cm, tasks), name="aqido-close"
                ).start()
            raise

    def _stop(
        self,
        portal: BlockingPortal,
        cm: AbstractContextManager[BlockingPortal],
        tasks: list[tuple[concurrent.futures.Future[Any], threading.Event]],
    ) -> None:
        """:meth:`_shut_down`'s work, which may run twice (the second time, to its end)."""
        for future, _ in tasks:
            future.cancel()
        for _, done in tasks:
            done.wait()
        try:
            portal.call(self.client.close)
        finally:
            try:
                portal.call(portal.stop, True)  # cancel anything left, then end the loop
                cm.__exit__(None, None, None)  # joins the thread
            finally:
                self.shut.set()


#: The runners whose loop thread has started, for :func:`_after_fork`.
_STARTED: weakref.WeakSet[_Runner] = weakref.WeakSet()


def _after_fork() -> None:
    """In the child of ``os.fork()``: tell every started runner that its loop is not here."""
    for runner in list(_STARTED):
        runner.after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork)


def _loop_identity() -> tuple[int, asyncio.AbstractEventLoop]:
    """The loop thread's id and its event loop (called on that thread)."""
    return threading.get_ident(), asyncio.get_running_loop()


def _blocking(
    method: Callable[Concatenate[AsyncQidoRS, P], Awaitable[T]],
) -> Callable[Concatenate[QidoRS, P], T]:
    """``QidoRS.<name>``: run ``AsyncQidoRS.<name>`` on the client's loop and wait for it."""
    name = method.__name__

    @functools.wraps(method)
    def call(self: QidoRS, /, *args: P.args, **kwargs: P.kwargs) -> T:
        bound: Callable[P, Awaitable[T]] = getattr(self._async, name)
        return self._runner.call(lambda: bound(*args, **kwargs))

    return call


def _blocking_iter(
    method: Callable[Concatenate[AsyncQidoRS, P], AsyncIterator[T]], *, ahead: bool = True
) -> Callable[Concatenate[QidoRS, P], Iterator[T]]:
    """``QidoRS.<name>``: iterate ``AsyncQidoRS.<name>`` on the loop, as a plain iterator.

    ``ahead=False``: no item is taken before the consumer asks for it (see
    ``QidoRS._iterate_on_demand``).
    """
    name = method.__name__

    @functools.wraps(method)
    def iterate(self: QidoRS, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        bound: Callable[P, AsyncIterator[T]] = getattr(self._async, name)
        if ahead:
            return self._iterate(lambda: bound(*args, **kwargs))
        return self._iterate_on_demand(lambda: bound(*args, **kwargs))

    # What help() and inspect show: the async method's arguments, but this one's return
    # type (an Iterator, not the AsyncGenerator ``wraps`` copied; a new dict: that one is
    # the async method's own).
    returns = _ASYNC_ITERATOR.sub(r"Iterator[\1]", str(method.__annotations__["return"]))
    iterate.__annotations__ = {**method.__annotations__, "return": returns}
    iterate.__signature__ = inspect.signature(method).replace(  # type: ignore[attr-defined]
        return_annotation=returns
    )
    return iterate


def _closing_progress(
    iterate: Callable[Concatenate[QidoRS, P], Iterator[T]],
) -> Callable[Concatenate[QidoRS, P], Iterator[T]]:
    """``QidoRS.crawl``: on a closed client, its ``progress`` hook is closed as the async
    crawl closes it ("however the crawl ends"); the loop that would run it is gone."""

    @functools.wraps(iterate)
    def crawl(self: QidoRS, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        if self._runner.closed:
            from aqido.progress import CrawlProgress  # a closed client: rare

            progress = kwargs.get("progress")
            if isinstance(progress, CrawlProgress):
                progress.close()
        return iterate(self, *args, **kwargs)

    return crawl


def _same_arguments(
    init: Callable[Concatenate[AsyncQidoRS, P], None],
) -> Callable[[Callable[..., None]], Callable[Concatenate[QidoRS, P], None]]:
    """Give ``QidoRS.__init__`` the arguments (and their types and docs) of ``AsyncQidoRS``'s."""

    def decorate(own: Callable[..., None]) -> Callable[Concatenate[QidoRS, P], None]:
        return functools.wraps(init)(own)

    return decorate


def _closing(items: AsyncIterator[Any]) -> AbstractAsyncContextManager[Any]:
    """``aclosing`` for an async generator (closed in its task), nothing for another iterator."""
    return aclosing(items) if isinstance(items, AsyncGenerator) else nullcontext()


class QidoRS:
    """A blocking QIDO-RS client: :class:`~aqido.client.AsyncQidoRS` for code that is not async.

    The arguments are those of ``AsyncQidoRS`` (one definition: this class
    takes them as they are) except ``session``: an aiohttp session belongs to
    one event loop, and this client's loop is its own.  Every method is the
    async client's, run on that loop (same arguments, results and errors;
    ``iter_*`` and ``crawl`` give plain iterators).  Thread-safe.  See the
    module docstring for lifecycle and cancellation.
    """

    @_same_arguments(AsyncQidoRS.__init__)
    def __init__(self, *args: Any, **options: Any) -> None:
        if options.get("session") is not None:
            raise TypeError(
                "QidoRS runs its own event loop, and an aiohttp session belongs to one loop: "
                "leave session= out (use AsyncQidoRS to share a session)"
            )
        self._async = AsyncQidoRS(*args, **options)
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
    def concurrency_limit(self) -> int:
        """Requests allowed in flight now: ``max_concurrency``, or the adaptive limit."""
        return self._async.concurrency_limit

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._runner.closed

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncQidoRS(", "QidoRS(", 1)

    def __reduce__(self) -> NoReturn:
        """Refused: a pickle would hold the credentials, and a client its own loop thread."""
        raise TypeError(
            "a QidoRS cannot be pickled (it holds credentials and its own event loop); "
            "send its URL and options and make a client where it is used"
        )

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
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
        """Cancel running work, close the session, stop the loop thread; safe to call again.

        Returns once all that is done, also when another thread's call is doing it
        (except on the loop thread itself: see the module docstring).
        """
        self._finalizer()  # the first call closes; a later one finds it dead and returns
        self._runner.close()  # so wait here until the closing is complete

    # --- plumbing -------------------------------------------------------------------------

    def _iterate(self, make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        """Iterate ``make()`` in one task on the loop, handing items over in batches."""
        send, receive = anyio.create_memory_object_stream[T](_BUFFER)

        async def pump() -> None:
            async with send:
                items = make()
                async with _closing(items):
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
            # The producer's error, if any; a close() that cancelled it after its last
            # item was taken is a ClientClosedError, as it is during the iteration.
            self._runner.result(future)
        finally:
            if future is not None and done is not None and not done.is_set():
                future.cancel()
                # An abandoned iterator in a reference cycle may be finalized by the
                # garbage collector on the loop thread itself: waiting there for the
                # producer would stop the loop for good (it ends on its own once cancelled).
                if threading.get_ident() != self._runner.thread_id:
                    done.wait()
            send.close()
            receive.close()

    def _iterate_on_demand(self, make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        """Iterate ``make()`` in one task on the loop, taking each item only when asked.

        For a crawl: it writes a study to its checkpoint and counts it (stats,
        progress) as it yields it, so a study taken ahead and never handed over
        would be counted, and skipped on resume (lost).  One round trip per item,
        kept light: a wake-up of the loop, and a thread-safe queue back.
        """
        handed: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        ask, asked = anyio.create_memory_object_stream[None](1)

        async def pump() -> None:
            try:
                async with asked:
                    items = make()
                    async with _closing(items):
                        async for _ in asked:
                            try:
                                item = await items.__anext__()
                            except StopAsyncIteration:
                                return
                            handed.put((True, item))
            finally:
                handed.put((False, None))  # exhausted, failed or cancelled: the end

        def want() -> None:  # on the loop
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                ask.send_nowait(None)  # the pump has ended: its end is in the queue

        future: concurrent.futures.Future[None] | None = None
        done: threading.Event | None = None
        try:
            future, done = self._runner.submit(pump)
            loop = self._runner.loop
            assert loop is not None, "submit() started the loop"
            while True:
                if self._runner.forked:  # resumed in the child of os.fork(): no loop here
                    raise ClientClosedError(_FORKED)
                try:
                    loop.call_soon_threadsafe(want)
                except RuntimeError:  # the loop has stopped: close() cancelled the pump
                    break
                while True:
                    try:
                        more, item = handed.get(timeout=_POLL)  # waking up to notice Ctrl-C
                        break
                    except queue.Empty:
                        continue
                if not more:
                    break
                yield item
            # The producer's error, if any (a close() that cancelled it: ClientClosedError).
            self._runner.result(future)
        finally:
            if future is not None and done is not None and not done.is_set():
                future.cancel()
                if threading.get_ident() != self._runner.thread_id:  # as in _iterate
                    done.wait()
            ask.close()
            if future is None:  # refused (a closed client): the pump never took its end
                asked.close()

    # --- the API of AsyncQidoRS, one definition each (in aqido.client) --------------------

    probe = _blocking(AsyncQidoRS.probe)
    search_raw = _blocking(AsyncQidoRS.search_raw)
    search = _blocking(AsyncQidoRS.search)
    iter_search = _blocking_iter(AsyncQidoRS.iter_search)
    search_many = _blocking(AsyncQidoRS.search_many)
    iter_search_many = _blocking_iter(AsyncQidoRS.iter_search_many)
    crawl = _closing_progress(_blocking_iter(AsyncQidoRS.crawl, ahead=False))
    find_studies = _blocking(AsyncQidoRS.find_studies)
    search_for_studies = _blocking(AsyncQidoRS.search_for_studies)
    search_for_series = _blocking(AsyncQidoRS.search_for_series)
    search_for_instances = _blocking(AsyncQidoRS.search_for_instances)

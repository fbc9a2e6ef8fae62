"""The client's concurrency slots: fixed ones (:class:`aqido._slots.Slots`), or adaptive ones.

:class:`AdaptiveLimiter` is the async adapter around the pure
:class:`aqido.adaptive.AdaptiveLimit`: every request of the client holds one
slot from :meth:`~AdaptiveLimiter.acquire` to :meth:`~AdaptiveLimiter.release`
(with the outcome), exactly as with a fixed limiter, but the number of slots
follows the limit, and a ``Retry-After`` keeps every new request waiting.
Waiters are served first come, first served.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - imported by the first adaptive limiter (cold start)
    from aqido.adaptive import AdaptiveLimit, LimitChange, Ticket

__all__ = ["AdaptiveLimiter"]


class AdaptiveLimiter:
    """Concurrency slots whose number an :class:`~aqido.adaptive.AdaptiveLimit` decides.

    ``ticket = await limiter.acquire()`` waits for a free slot (and for the end
    of a ``Retry-After`` pause); ``limiter.release(ticket, outcome)`` gives it
    back with what happened: ``"success"`` (its latency is a sample),
    ``"dropped"`` (push-back: cut the limit) or ``"ignore"``.

    Like :class:`aqido._slots.Slots`, a waiter is a bare asyncio future (every
    request of an ``"auto"`` client comes here, so this is its hot path); a
    pause that holds waiters is ended by one timer on the event loop.

    ``clock`` is the limiter's monotonic clock; ``cpu_clock`` (the CPU time of
    the event loop's thread, or ``None``) tells the limit when the client's own
    CPU, not the server, was what the answers waited for.
    """

    def __init__(
        self,
        limit: AdaptiveLimit | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] | None = time.thread_time,
    ) -> None:
        self._clock = clock
        self._cpu_clock = cpu_clock
        if limit is None:
            from aqido.adaptive import AdaptiveLimit

            limit = AdaptiveLimit(created=clock())
        self.state = limit
        self._queue: deque[asyncio.Future[Ticket]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def limit(self) -> int:
        """Requests allowed in flight now."""
        return self.state.limit

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now."""
        return self.state.in_flight

    @property
    def history(self) -> list[LimitChange]:
        """Every change of the limit, on this limiter's clock."""
        return self.state.history

    def acquire_nowait(self) -> Ticket | None:
        """Take a slot at once if one is free and nobody waits, else return ``None``."""
        now = self._clock()
        if self._queue or not self.state.may_start(now):
            return None
        return self.state.start(now)

    async def acquire(self) -> Ticket:
        """Take a slot, waiting in line for one (and for a ``Retry-After`` to pass).

        Slots are handed to waiters in order as they free up (several at once
        when the limit grows), so a freed slot never waits for a task switch.
        """
        ticket = self.acquire_nowait()
        if ticket is not None:
            return ticket
        waiter: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        self._grant()  # a pause with nothing in flight: make sure its timer runs
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # handed a slot, but cancelled before taking it: pass it on
                self.state.ignore(waiter.result(), self._clock())
                self._grant()
            elif waiter in self._queue:
                self._queue.remove(waiter)
            raise

    def release(
        self, ticket: Ticket, outcome: str = "ignore", *, retry_after: float | None = None
    ) -> None:
        """Give the slot back, with the request's ``outcome`` (see the class)."""
        now = self._clock()
        if outcome == "success":
            cpu_clock = self._cpu_clock
            self.state.success(ticket, now, cpu=None if cpu_clock is None else cpu_clock())
            if retry_after is not None:
                self.state.pause(now, retry_after)
        elif outcome == "dropped":
            self.state.dropped(ticket, now, retry_after=retry_after)
        else:
            self.state.ignore(ticket, now, retry_after=retry_after)
        self._grant()

    def _grant(self) -> None:
        """Hand free slots to the waiters in order; during a pause, set a timer for its end."""
        queue = self._queue
        if not queue:
            return
        now = self._clock()
        state = self.state
        while queue and state.may_start(now):
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(state.start(now))
        if queue and self._timer is None:
            pause = state.pause_remaining(now)  # only with waiters left: a rare case
            if pause > 0:
                self._timer = asyncio.get_running_loop().call_later(pause, self._pause_over)

    def _pause_over(self) -> None:
        """The pause's timer: hand out the slots it held back (or wait for a longer pause)."""
        self._timer = None
        self._grant()

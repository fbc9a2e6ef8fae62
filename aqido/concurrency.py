"""The client's concurrency slots: fixed ones (:class:`aqido._slots.Slots`), or adaptive ones.

:class:`AdaptiveLimiter` is the async adapter around the pure
:class:`aqido.adaptive.AdaptiveLimit`: every request of the client holds one
slot from :meth:`~AdaptiveLimiter.acquire` to :meth:`~AdaptiveLimiter.release`
(with the outcome), exactly as with a fixed limiter, but the number of slots
follows the limit, and a ``Retry-After`` keeps every new request waiting.
Waiters are served first come, first served.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:  # pragma: no cover - imported by the first adaptive limiter (cold start)
    from aqido.adaptive import AdaptiveLimit, LimitChange, Ticket

__all__ = ["AdaptiveLimiter"]


class _Waiter:
    __slots__ = ("event", "ticket")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.ticket: Ticket | None = None


class AdaptiveLimiter:
    """Concurrency slots whose number an :class:`~aqido.adaptive.AdaptiveLimit` decides.

    ``ticket = await limiter.acquire()`` waits for a free slot (and for the end
    of a ``Retry-After`` pause); ``limiter.release(ticket, outcome)`` gives it
    back with what happened: ``"success"`` (its latency is a sample),
    ``"dropped"`` (push-back: cut the limit) or ``"ignore"``.
    """

    def __init__(
        self, limit: AdaptiveLimit | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        if limit is None:
            from aqido.adaptive import AdaptiveLimit

            limit = AdaptiveLimit(created=clock())
        self.state = limit
        self._queue: deque[_Waiter] = deque()

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

    def acquire_nowait(self) -> Ticket:
        """Take a slot at once, or raise :class:`anyio.WouldBlock` (others wait, none free)."""
        now = self._clock()
        if self._queue or not self.state.may_start(now):
            raise anyio.WouldBlock
        return self.state.start(now)

    async def acquire(self) -> Ticket:
        """Take a slot, waiting in line for one (and for a ``Retry-After`` to pass).

        Slots are handed to waiters in order as they free up (several at once
        when the limit grows), so a freed slot never waits for a task switch.
        """
        try:
            return self.acquire_nowait()
        except anyio.WouldBlock:
            pass
        waiter = _Waiter()
        self._queue.append(waiter)
        try:
            while waiter.ticket is None:
                event = waiter.event
                pause = self.state.pause_remaining(self._clock())
                if pause > 0:
                    with anyio.move_on_after(pause):
                        await event.wait()
                else:
                    await event.wait()
                if waiter.ticket is None:
                    if event.is_set():
                        waiter.event = anyio.Event()
                    self._grant(poke=False)
        except BaseException:
            if waiter.ticket is not None:
                self.state.ignore(waiter.ticket, self._clock())
            else:
                self._queue.remove(waiter)
            self._grant()
            raise
        return waiter.ticket

    def release(
        self, ticket: Ticket, outcome: str = "ignore", *, retry_after: float | None = None
    ) -> None:
        """Give the slot back, with the request's ``outcome`` (see the class)."""
        now = self._clock()
        if outcome == "success":
            self.state.success(ticket, now)
            if retry_after is not None:
                self.state.pause(now, retry_after)
        elif outcome == "dropped":
            self.state.dropped(ticket, now, retry_after=retry_after)
        else:
            self.state.ignore(ticket, now, retry_after=retry_after)
        self._grant()

    def _grant(self, *, poke: bool = True) -> None:
        """Hand free slots to the waiters in order; wake the first one if a pause holds it.

        The first waiter, woken (``poke``), sleeps until the pause ends and then
        hands out the slots itself, so a pause never leaves the line stuck.
        """
        now = self._clock()
        queue = self._queue
        while queue and self.state.may_start(now):
            waiter = queue.popleft()
            waiter.ticket = self.state.start(now)
            waiter.event.set()
        if poke and queue and self.state.pause_remaining(now) > 0:
            queue[0].event.set()

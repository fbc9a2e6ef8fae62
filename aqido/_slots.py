"""A fixed number of concurrency slots, first come, first served: the client's plain limiter.

Every request holds one slot of the client (``max_concurrency``) and, inside
an operation with its own limit (``crawl(max_concurrency=...)``, a
``search_many``), one of that operation's; a crawl also holds one of its study
window per study in progress.  That is two or three acquisitions per request,
so this is written for that path: a free slot is taken without an event-loop
turn and without allocating, and a waiter is a bare asyncio future.

Why not :class:`anyio.CapacityLimiter`, which it replaces: the same rules
(first come, first served; a cancelled waiter gives a slot it was handed on to
the next; release may come from any task) cost several times more per call
there (a backend lookup, borrower bookkeeping per task), and its first use
imports anyio's asyncio backend, a fifth of a cold start's import time.  The
client runs on asyncio only (aiohttp), so nothing is lost.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Slots"]


class Slots:
    """``total`` slots: ``await slots.acquire()`` … ``slots.release()``; waiters in order.

    ``acquire_nowait()`` takes a free slot and returns ``True``, or returns
    ``False`` when none is free or others are already waiting (it never jumps
    the line).  A slot freed while tasks wait goes straight to the first of
    them, so it can never be taken by a newcomer in between.
    """

    __slots__ = ("_free", "_waiters", "total")

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"total must be at least 1, not {total!r}")
        self.total = total
        self._free = total
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return f"Slots(total={self.total}, free={self._free}, waiting={len(self._waiters)})"

    @property
    def available(self) -> int:
        """Slots free now (0 while more are taken than a shrink left)."""
        return max(0, self._free)

    @property
    def waiting(self) -> int:
        """Tasks waiting for a slot now."""
        return len(self._waiters)

    def resize(self, total: int) -> None:
        """Change the number of slots: more wake waiters now; fewer apply as slots come back."""
        if total < 1:
            raise ValueError(f"total must be at least 1, not {total!r}")
        self._free += total - self.total
        self.total = total
        self._wake()

    def acquire_nowait(self) -> bool:
        """Take a slot if one is free and nobody waits; ``False`` otherwise."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot: at once if one is free and nobody waits, else wait in line.

        A free slot is taken without an event-loop turn (the coroutine returns at once).
        """
        if self.acquire_nowait():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, but cancelled before taking it: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the first waiter still waiting, else to the pool."""
        if self._free >= self.total:
            raise RuntimeError("Slots.release() called more times than acquire()")
        self._free += 1
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to the waiters still waiting, first come first (none after a
        shrink until enough slots came back)."""
        waiters = self._waiters
        while self._free > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self._free -= 1
                waiter.set_result(None)

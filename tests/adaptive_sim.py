"""A discrete-event simulation of a client driving an :class:`AdaptiveLimit` against a server.

No sleeping and no event loop: simulated time jumps from event to event.  The
server is a FIFO queue in front of ``workers`` parallel workers, each taking
``service`` seconds (times a seeded jitter) per request, so its knee (the
bandwidth-delay product) is exactly ``workers`` requests in flight.  Optional
behaviours: ``collapse_above`` (past that many requests at the server, every
service time is multiplied by ``collapse_factor``: a server that gets slower
when overloaded, as Orthanc past its HTTP threads) and ``reject_above`` (more
than that many waiting: answer 429 at once, with ``retry_after``).
"""

from __future__ import annotations

import heapq
import itertools
import random

import attrs

from aqido.adaptive import AdaptiveLimit, Ticket


@attrs.frozen(kw_only=True)
class SimServer:
    """A simulated server whose capacity, latency curve and push-back are known."""

    workers: int
    service: float
    jitter: float = 0.1
    collapse_above: int | None = None
    collapse_factor: float = 4.0
    reject_above: int | None = None
    retry_after: float | None = None
    timeout: float | None = None
    #: Every ``slow_every``-th request takes ``slow`` seconds of service at any load (a
    #: study far larger than the others).
    slow_every: int | None = None
    slow: float = 1.0
    #: A request that arrives with more than ``stall_above`` at the server waits ``stall``
    #: seconds more (Orthanc past its HTTP threads: most answers as fast as ever).
    stall_above: int | None = None
    stall: float = 1.0

    @property
    def knee(self) -> int:
        """Requests in flight the server serves without queueing any (its BDP)."""
        return self.workers


@attrs.define
class SimResult:
    """What happened: the limit after each event, completions, push-backs, starts."""

    limits: list[tuple[float, int]] = attrs.field(factory=list)
    completed: int = 0
    rejected: int = 0
    timed_out: int = 0
    starts: list[float] = attrs.field(factory=list)
    end: float = 0.0
    max_in_flight: int = 0

    def limits_after(self, t: float) -> list[int]:
        """The limits in force after time ``t``."""
        before = [limit for at, limit in self.limits if at <= t]
        out = [before[-1]] if before else []
        return out + [limit for at, limit in self.limits if at > t]


def simulate(
    limit: AdaptiveLimit,
    server: SimServer,
    *,
    requests: int,
    seed: int = 0,
    start: float = 0.0,
    max_events: int = 2_000_000,
) -> SimResult:
    """Send ``requests`` requests (an unbounded backlog) through ``limit`` to ``server``."""
    rng = random.Random(seed)
    result = SimResult()
    counter = itertools.count()
    events: list[tuple[float, int, str, object]] = []
    queue: list[tuple[Ticket, float]] = []  # waiting at the server: (ticket, arrival)
    busy = 0
    at_server = 0
    sent = 0
    now = start
    result.limits.append((now, limit.limit))

    def push(when: float, kind: str, data: object = None) -> None:
        heapq.heappush(events, (when, next(counter), kind, data))

    def service_time() -> float:
        if server.slow_every is not None and sent % server.slow_every == 0:
            return server.slow
        base = server.service * (1 + server.jitter * (2 * rng.random() - 1))
        if server.stall_above is not None and at_server > server.stall_above:
            base += server.stall
        if server.collapse_above is not None and at_server > server.collapse_above:
            base *= server.collapse_factor
        return base

    def begin_service(ticket: Ticket, arrival: float) -> None:
        nonlocal busy
        busy += 1
        push(now + service_time(), "done", (ticket, arrival))

    def fill() -> None:
        nonlocal sent, at_server
        while sent < requests and limit.may_start(now):
            ticket = limit.start(now)
            tickets.append(ticket)
            sent += 1
            result.starts.append(now)
            result.max_in_flight = max(result.max_in_flight, limit.in_flight)
            if server.reject_above is not None and len(queue) >= server.reject_above:
                push(now, "reject", ticket)
                continue
            at_server += 1
            if server.timeout is not None:
                push(now + server.timeout, "timeout", ticket)
            if busy < server.workers:
                begin_service(ticket, now)
            else:
                queue.append((ticket, now))
        pause = limit.pause_remaining(now)
        if sent < requests and pause > 0:
            push(now + pause, "wake")

    finished: set[int] = set()  # ids of tickets answered (all tickets stay referenced)
    tickets: list[Ticket] = []
    fill()
    for _ in range(max_events):
        if not events:
            break
        now, _, kind, data = heapq.heappop(events)
        if kind == "done":
            ticket, _arrival = data  # type: ignore[misc]
            busy -= 1
            at_server -= 1
            if queue:
                begin_service(*queue.pop(0))
            if id(ticket) not in finished:
                finished.add(id(ticket))
                result.completed += 1
                limit.success(ticket, now)
        elif kind == "timeout":
            ticket = data  # type: ignore[assignment]
            if id(ticket) not in finished:
                finished.add(id(ticket))
                result.timed_out += 1
                limit.dropped(ticket, now)  # type: ignore[arg-type]
        elif kind == "reject":
            result.rejected += 1
            limit.dropped(data, now, retry_after=server.retry_after)  # type: ignore[arg-type]
        if not result.limits or result.limits[-1][1] != limit.limit:
            result.limits.append((now, limit.limit))
        fill()
    result.end = now
    return result

"""Adaptive concurrency: how many requests to keep in flight, from what the server shows.

Pure (sans-I/O): :class:`AdaptiveLimit` does no I/O and reads no clock; it is
fed the start and the end of every request with the time (``now``, any
monotonic clock in seconds) and answers "may a new request start now?" and
"what is the limit?".  :class:`aqido.concurrency.AdaptiveLimiter` is the async
adapter the client holds; the tests drive this class with simulated servers.

Which algorithm, and why
------------------------
The candidates were TCP Vegas (Netflix ``VegasLimit``: compare the latency
with the best seen, add a slot while the estimated queue ``limit * (1 -
rtt_min / rtt)`` is below alpha, remove one above beta), AIMD (add one per
window, halve on loss), and the gradient limiters (Netflix ``Gradient2Limit``,
Envoy's adaptive concurrency filter: ``limit * min_rtt / rtt`` plus headroom,
with Envoy pinning the concurrency low from time to time to re-measure the
minimum latency).  Each fails one of aqido's cases on its own:

- AIMD only reacts to push-back, and Orthanc never pushes back: past its knee
  (about 4 requests) it just gets slower, and collapses past its 50 HTTP
  threads.  AIMD would climb straight into the collapse.
- Vegas keeps a queue of 3 to 6 requests, whatever the limit: at 64 in flight
  that is a 10 % latency rise, less than the noise of a shared machine, and on
  a client-bound crawl (2 ms server, most of the time spent parsing in the
  client) it settles at 4-6 where 16 is twice as fast.
- A plain gradient with a clamp at 1.0 grows by a few slots per window: far too
  slow to reach 64 within a 0.5 s crawl against a 50 ms server.

aqido's limiter is a gradient limiter written as a model, as BBR does it: from
each round (about one window of requests sent at the current limit) it takes
the median latency ``R``, keeps ``R0``, the best (lowest) round median seen
during the startup (or the first round's, when push-back ended the startup
before a round did) and then re-measured by probes (below), and by Little's
law the throughput ``X = in_flight / R`` (``in_flight``: the most requests in
flight during the round, at most the limit).  The target is

    ``limit = tolerance * X * R0 = tolerance * in_flight * R0 / R``

``X * R0`` is the server's knee (the bandwidth-delay product: as many requests
as it serves at once without queueing them), so the limit settles where the
latency is ``tolerance`` (default 2) times the best: a queue of at most
``tolerance - 1`` knees (one knee of queue keeps a server busy between two
answers; more only adds latency, and on a client-bound crawl, work for the
client's garbage collector).  Past the knee the throughput no longer grows, so the
target is the same whatever the current limit: one round brings the limit to
it and it stays (no oscillation by construction, only noise).  Below the knee
the latency stays near ``R0`` and the target is ``tolerance`` times the
current limit: the limit grows geometrically, and while no queueing has been
seen yet (the start, like TCP's slow start) it grows by ``startup_growth``
(4x) per round, so a server that scales (a 50 ms archive) gets its 64 in
flight after one round trip at the initial limit.

The initial limit is 16, as the gradient limiters of Netflix's concurrency-limits
start at 20: a startup from 4 spends a round trip at 4 and one at 16 before 64,
and against a 50 ms archive that alone made a 600-request crawl 1.13x slower
than a fixed 64 (1.7 round trips of a 0.67 s crawl).  The first round has
nothing to compare its latency with (the best seen is its own median), so it
waits for all its answers and is judged by their spread: when the median answer
of requests sent together took more than ``tolerance`` times as long as the
fastest, they waited behind each other, and the startup ends there, the fastest
answer becoming the best latency.  A spread between ``exit_ratio`` and
``tolerance`` is not taken for a queue (the client's reading spreads answers
that much), but the best latency is then ``exit_ratio`` times the fastest, not
the median: a FIFO server serving 5 to 8 of the 16 at once answers the median
at 1.5-2x the fastest, and that median as the best would settle the limit at up
to twice where it belongs.  A FIFO server serving 4 at a time (the old
initial limit) answers 16 in four waves, a median 2.5 times the fastest; Orthanc
1.10 on 127.0.0.1 showed 3.8 to 6.6 times in 8 crawls.  Without this test its
first round at 16 looks like a server that scales, the startup jumps to 64 and
Orthanc collapses (6.8 s against 3.1 s at a fixed 16, in three crawls).  What
it cannot see: a server that serves 5 or more at a time goes to 64 for a round
before the gradient brings the limit down, and one that slows every request
alike when overloaded (processor sharing, no queue in front) shows no spread,
so its first round passes for unqueued; the round at 64 ends the startup, and
the limit comes back to about ``tolerance`` times 16.  A stall (below) still
cuts a limit that walked into a server's thread limit.

The first round after a startup step
pays for new connections and a burst of new work at the server and in the
client: its queueing alone does not end the startup (the limit stays; the
next round decides), so one transient does not cost the climb back.  Its
delivered throughput (below) is counted from one latency after its start:
before that, nothing sent at the new limit could have come back.  After the
startup, changes are smoothed (half-way to the target per round, never below
half the limit), so one slow round on a noisy machine is no cliff; a round
with no queueing at all (within 1.2x of the best) goes all the way up, so one
noisy round that ended the startup early costs little.

A client-bound round changes nothing: when the client spent ``client_bound``
(90 %) of the round or more on its CPU (the ``cpu`` readings given with the
samples: the event loop thread's CPU time), its answers waited for the client to
parse them, not for the server, so the round's latency says nothing of the
server, and fewer requests in flight would not be served sooner.  (Measured
against the benchmark's fake archive at 10 ms on a 2-core machine: every round
at 64 in flight is client-bound, at twice the best latency, and the limit used
to drift down to 40-55 where 64 is the fastest; against Orthanc on the same
machine the client is busy 20-40 % of a round.)

Probes, as Envoy's: every ``probe_every`` (30) rounds after the startup, one
round runs at an eighth of the limit (at least the floor) and its median
latency becomes ``R0`` (the round after it is not measured: the server's queue
is still empty).  A round with one request in flight all along is such a
measurement too, probe or not: at the floor no probe can go lower, and a
crawl's queries may all have become slower than the ones ``R0`` was seen on
(a crawl asks for series first, then for instances); without it
the limit sinks to the floor, and stays there.  ``R0`` is not lowered by
ordinary rounds after the startup: on a busy machine the lowest of many noisy
medians is luck, and a limit steered by luck drifts down round after round.

The throughput is also measured directly: the answers delivered during a
round (whenever they were sent) per second of the round.  When the round kept
the limit busy, ``X`` is the lower of the two, and the startup grows only
while the server delivers what Little's law promises (``delivered * R0 *
tolerance >= in_flight``): Orthanc on a 2-core machine answers the median
request at 16 in flight barely slower than at 4, but delivers no more per
second, and its collapse past its HTTP threads shows in the answers that come
late, never in the median.  (Measured against Orthanc 1.10 on 127.0.0.1,
150 studies: without this rule the limit climbed to 64 in 3 of 6 crawls,
2.5x slower; with it in none of 8.)

A stall (one request 20 times slower than the best, and slower than 0.25 s)
halves the limit too, and the limit stays at or below that half from then
on: Orthanc past its 50 HTTP threads answers most requests
as fast as ever and leaves the others waiting about a second for a thread, a
collapse the median latency never shows.  That half is then known to be safe:
a stall of a request sent with no more than it in flight is slow at any limit
(a study far larger than the others, a cold disk), and cuts nothing; nor does
a later stall cut below it (each used to halve the limit again, down to 1 on
an archive with one such request in 500).  Such stalls also cast doubt on the
one that set the ceiling, which then lifts (to twice itself, then away) after
``probe_every`` rounds without a stall that cuts, and twice as late each time
stalls come back above it.

Push-back (429, 503 and 504 answers, and an attempt's own timeouts, ``Timeout.request`` and
``Timeout.connect``; not ``Timeout.total``, the caller's deadline) halves the limit at once,
once per window (answers to requests sent before the last cut do not cut
again), and ends the startup.  A ``Retry-After`` on an error answer pauses new
requests of the whole client until it has passed: the server asked *the
client* to slow down, not only that one request.  The limit stays between the
floor (1) and the ceiling (``max_concurrency_limit``, default 64).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import attrs

__all__ = ["AdaptiveLimit", "LimitChange", "Ticket"]


def _median(values: list[float]) -> float:
    """``statistics.median`` of a non-empty list, without importing ``statistics`` (~4 ms)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _positive(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{attribute.name} must be a positive number, not {value!r}")


class Ticket(NamedTuple):
    """One request in flight: when it started, and the limiter's state then.

    A named tuple, not an attrs class: one is made per request.
    """

    started: float
    in_flight: int
    round: int


#: Most entries :attr:`AdaptiveLimit.history` holds (a client may live for months).
HISTORY_KEPT = 10_000


@attrs.frozen
class LimitChange:
    """The limit became ``limit`` at time ``at``, because of ``reason``."""

    at: float
    limit: int
    reason: str


# on_setattr=NO_OP: the state changes with every request; its settings are checked at init
@attrs.define(kw_only=True, eq=False, on_setattr=attrs.setters.NO_OP)
class AdaptiveLimit:
    """The adaptive concurrency limit's state machine (pure: no I/O, no clock of its own).

    Use: ``if limit.may_start(now): ticket = limit.start(now)``, then one of
    ``limit.success(ticket, now)`` (a usable answer: its latency is a sample),
    ``limit.dropped(ticket, now, retry_after=...)`` (push-back: 429, 503, 504,
    an attempt's timeout) or ``limit.ignore(ticket, now)`` (any other failure, or
    ``Timeout.total`` cutting the attempt short: no sample).

    Attributes:
        ceiling: the largest limit (``max_concurrency_limit``).
        floor: the smallest limit (at least 1).
        initial: the limit before anything is measured.
        tolerance: how much slower than the best latency seen a request may be
            (the limit settles where the latency is ``tolerance`` times the best).
        startup_growth: growth per round while no queueing has been seen.
        backoff: the factor a push-back multiplies the limit by.
        min_samples: the fewest samples a round needs during the startup (quick
            decisions while the limit is small).
        settled_samples: the fewest samples a round needs after the startup (the
            median of a few answers is too noisy to steer by).
        exit_ratio: latency over the best that ends the startup.
        clear_ratio: latency over the best under which a round shows no queueing:
            the limit then goes straight to its target (up to ``tolerance`` times
            the limit) instead of half-way.
        stall_factor, min_stall: a request slower than both ``stall_factor`` times
            the best latency and ``min_stall`` seconds is a stall: it cuts the
            limit as push-back does, and caps it there (see the module docstring).
        probe_every: rounds between two re-measurements of the best latency (one
            round at ``limit / probe_divisor``), counted from the end of the startup.
        client_bound: the share of a round's time the client spent on its CPU (from
            the ``cpu`` readings given to :meth:`success`) from which the round is
            client-bound: it changes nothing.  Above 1 turns the rule off.
        created: the clock reading at creation (the time of the initial limit in
            :attr:`history`).
    """

    ceiling: int = attrs.field(default=64, validator=_positive)
    floor: int = attrs.field(default=1, validator=_positive)
    initial: int = attrs.field(default=16, validator=_positive)
    tolerance: float = attrs.field(default=2.0, validator=_positive)
    startup_growth: float = attrs.field(default=4.0, validator=_positive)
    backoff: float = attrs.field(default=0.5, validator=_positive)
    min_samples: int = attrs.field(default=3, validator=_positive)
    settled_samples: int = attrs.field(default=8, validator=_positive)
    exit_ratio: float = attrs.field(default=1.5, validator=_positive)
    clear_ratio: float = attrs.field(default=1.2, validator=_positive)
    stall_factor: float = attrs.field(default=20.0, validator=_positive)
    min_stall: float = attrs.field(default=0.25, validator=_positive)
    probe_every: int = attrs.field(default=30, validator=_positive)
    probe_divisor: float = attrs.field(default=8.0, validator=_positive)
    client_bound: float = attrs.field(default=0.9, validator=_positive)
    created: float = 0.0

    #: The limit as a float (the enforced limit is its rounded value); the model sets it.
    estimate: float = attrs.field(init=False)
    #: Requests started and not finished.
    in_flight: int = attrs.field(init=False, default=0)
    #: The best (lowest) round median latency seen, in seconds (``None`` before one).
    best_latency: float | None = attrs.field(init=False, default=None)
    #: Until when new requests wait (a ``Retry-After``), on the caller's clock.
    paused_until: float = attrs.field(init=False, default=-math.inf)
    #: True until queueing or push-back is first seen.
    in_startup: bool = attrs.field(init=False, default=True)
    #: Every change of the (integer) limit, the first entry being the initial one; in a
    #: long-lived client the initial entry and at least the latest
    #: :data:`HISTORY_KEPT` // 2 changes (older ones are dropped: memory stays bounded).
    history: list[LimitChange] = attrs.field(init=False, factory=list)

    _round: int = attrs.field(init=False, default=0)
    _round_samples: list[float] = attrs.field(init=False, factory=list)
    _round_peak: int = attrs.field(init=False, default=0)
    _round_started: float = attrs.field(init=False, default=math.nan)
    _round_answers: int = attrs.field(init=False, default=0)
    _last_cut_round: int = attrs.field(init=False, default=-1)
    _pushed_back: bool = attrs.field(init=False, default=False)
    _probe_restore: float | None = attrs.field(init=False, default=None)
    _rounds_since_probe: int = attrs.field(init=False, default=0)
    _warming_up: bool = attrs.field(init=False, default=False)
    _stall_ceiling: float = attrs.field(init=False, default=math.inf)
    _stall_safe: float = attrs.field(init=False, default=0.0)
    _rounds_since_stall: int = attrs.field(init=False, default=0)
    _stall_wait: int = attrs.field(init=False, default=0)
    _stall_lifted: bool = attrs.field(init=False, default=False)
    _stall_doubt: bool = attrs.field(init=False, default=False)
    _limit: int = attrs.field(init=False, default=0)
    _filling: bool = attrs.field(init=False, default=False)
    _round_cpu: float | None = attrs.field(init=False, default=None)
    _round_needs: int = attrs.field(init=False, default=1)
    _stall_after: float = attrs.field(init=False, default=math.inf)

    def __attrs_post_init__(self) -> None:
        for name in (
            "ceiling",
            "floor",
            "initial",
            "min_samples",
            "settled_samples",
            "probe_every",
        ):
            value = getattr(self, name)
            if not isinstance(value, int):
                raise ValueError(f"{name} must be an int, not {value!r}")
        if self.floor > self.ceiling:
            raise ValueError(f"floor ({self.floor}) must not exceed ceiling ({self.ceiling})")
        if not 0 < self.backoff < 1:
            raise ValueError(f"backoff must be between 0 and 1, not {self.backoff!r}")
        if min(self.tolerance, self.startup_growth, self.exit_ratio, self.probe_divisor) < 1:
            raise ValueError(
                "tolerance, startup_growth, exit_ratio and probe_divisor must be at least 1"
            )
        self._stall_wait = self.probe_every
        self._set(float(self.initial), self.created, "initial")  # clamped, and recorded
        self._round_needs = self._samples_needed()

    # --- reading ----------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """Requests allowed in flight now (``estimate`` rounded, kept by every change)."""
        return self._limit

    def pause_remaining(self, now: float) -> float:
        """Seconds until new requests may start again (0 when not paused)."""
        return max(0.0, self.paused_until - now)

    def may_start(self, now: float) -> bool:
        """Whether a new request may start at ``now`` (a free slot and no pause)."""
        return self.in_flight < self._limit and now >= self.paused_until

    # --- feeding ----------------------------------------------------------------------------

    def start(self, now: float) -> Ticket:
        """Count a request as started (the caller checked :meth:`may_start`)."""
        in_flight = self.in_flight = self.in_flight + 1
        if in_flight > self._round_peak:
            self._round_peak = in_flight
        return Ticket(now, in_flight, self._round)

    def success(self, ticket: Ticket, now: float, *, cpu: float | None = None) -> None:
        """A request ended with a usable answer: its latency is a sample.

        ``cpu`` is the client's CPU clock now (seconds of CPU used by the thread
        that runs the requests, ``time.thread_time()``), when the caller reads it:
        a round that kept the client busy (see :attr:`client_bound`) leaves the
        limit alone.
        """
        self.in_flight -= 1
        latency = now - ticket.started
        if latency > self._stall_after and ticket.round > self._last_cut_round:
            # a stall (requests stuck behind a server's full thread pool, say): the median
            # of a round never sees those, and they are what makes a crawl slow.  The limit
            # is halved (during a probe, the limit it dipped from: the stall was sent at
            # that one, as _cut reads it), and stays there until the ceiling lifts
            # (_end_round).  That half is then known to be safe: a stall of a request sent
            # with no more in flight is slow at any limit (a study far larger than the
            # others, a cold disk), and cuts nothing; nor does a later cut go below it.
            if ticket.in_flight <= self._stall_safe:
                self._stall_doubt = True  # and the stall that set the ceiling may have been one
                return
            base = self.estimate if self._probe_restore is None else self._probe_restore
            self._stall_safe = self._stall_ceiling = max(base * self.backoff, self._stall_safe)
            if self._stall_lifted:  # lifted, and the stalls came back: lift later next time
                self._stall_lifted = False
                self._stall_wait = min(self._stall_wait * 2, 64 * self.probe_every)
            self._rounds_since_stall = 0
            self._pushed_back = True
            self._cut(now, "stall", floor=self._stall_safe)
            return
        self._round_answers += 1  # delivered during this round, whenever it was sent
        if ticket.round != self._round:
            return  # sent under an older limit: its latency says nothing about this one
        samples = self._round_samples
        samples.append(latency if latency > 0 else 0.0)
        if len(samples) >= self._round_needs:
            self._end_round(now, cpu)

    def dropped(self, ticket: Ticket, now: float, *, retry_after: float | None = None) -> None:
        """Push-back (429, 503, 504, an attempt's timeout): cut the limit, once per round.

        ``retry_after``: the server's pause, applied to every new request (see :meth:`pause`).
        """
        self.in_flight -= 1
        if retry_after is not None:
            self.pause(now, retry_after)
        if ticket.round <= self._last_cut_round:
            return  # this window was already cut for
        self._pushed_back = True
        self._cut(now, "push-back")

    def _cut(self, now: float, reason: str, floor: float = 0.0) -> None:
        self.in_startup = False
        self._filling = False
        self._last_cut_round = self._round
        base = self.estimate if self._probe_restore is None else self._probe_restore
        self._probe_restore = None  # a cut during a probe ends it: cut what it would restore
        self._set(max(base * self.backoff, floor), now, reason)
        self._new_round(now)

    def ignore(self, ticket: Ticket, now: float, *, retry_after: float | None = None) -> None:
        """A request ended without a latency sample or push-back (another error)."""
        self.in_flight -= 1
        if retry_after is not None:
            self.pause(now, retry_after)

    def pause(self, now: float, seconds: float) -> None:
        """No new request before ``now + seconds`` (a ``Retry-After``)."""
        if seconds > 0:
            self.paused_until = max(self.paused_until, now + seconds)

    # --- the model --------------------------------------------------------------------------

    def _end_round(self, now: float, cpu: float | None = None) -> None:
        if self._stall_ceiling < math.inf and self._stall_doubt:
            # Stalls seen below the stall ceiling show requests slow at any limit, so the
            # stall that set it may have been one too: the ceiling lifts (to twice itself,
            # then away) after _stall_wait rounds without a stall that cuts (doubled each
            # time the stalls come back above it).  Without such doubt it stays: a server
            # past its thread pool (Orthanc) stalls only above it.
            self._rounds_since_stall += 1
            if self._rounds_since_stall >= self._stall_wait:
                self._rounds_since_stall = 0
                self._stall_doubt = False
                self._stall_lifted = True
                lifted = self._stall_ceiling / self.backoff
                self._stall_ceiling = math.inf if lifted >= self.ceiling else lifted
        latency = _median(self._round_samples)
        in_flight = min(self.estimate, float(self._round_peak))  # what the latency was for
        app_limited = self._round_peak * 2 < self.limit
        if self._probe_restore is not None:
            # a probe round, at a small fraction of the limit: the latency without our
            # own queue, which replaces the best seen (it may have been seen queued)
            if latency > 0:
                if self.best_latency is not None and latency < self.best_latency / 2:
                    self._rounds_since_probe = self.probe_every  # far off: measure again soon
                self._set_best(latency)
            restore, self._probe_restore = self._probe_restore, None
            self._set(restore, now, "probe end")
            self._warming_up = True
            self._new_round(now, cpu)
            return
        if self._warming_up:
            # the first round after a probe sees the server's queue still empty: too rosy
            self._warming_up = False
            self._new_round(now, cpu)
            return
        if latency > 0 and (
            self.best_latency is None or (self.in_startup and latency < self.best_latency)
        ):
            # later, only probes measure it: the lowest of many noisy rounds is luck, and a
            # limit steered by luck drifts down on a busy machine.  The first round measured
            # sets it even after the startup: push-back before any round ended (a 429 among
            # the first answers) ends the startup with no best, and without one the limit
            # could only ever be cut (probes are started by the gradient, which needs it)
            self._set_best(latency)
        queued_at_start = self.in_startup and latency > 0 and self._queued_at_start(latency)
        best = self.best_latency
        limit = self.estimate
        # What the server delivered during the round (answers per second, whenever they
        # were sent), when the round kept the limit busy: less than Little's law says
        # from the median when a few requests wait far longer than it (Orthanc past its
        # threads answers most at once and leaves some waiting a second for a thread).
        elapsed = now - self._round_started
        filling, self._filling = self._filling, False
        if filling:
            # the round began with the limit raised: for about one latency the new
            # requests were on their way, and what came back was the old limit's
            elapsed -= min(self._round_samples)
        delivered = (
            self._round_answers / elapsed
            if not app_limited and elapsed > 0 and self._round_answers
            else None
        )
        busy = (
            (cpu - self._round_cpu) / (now - self._round_started)
            if cpu is not None and self._round_cpu is not None and now > self._round_started
            else 0.0
        )
        if best is None or latency <= 0:
            pass  # instant answers: nothing to learn from
        elif busy >= self.client_bound:
            # the client spent the round on its CPU: its answers waited for it, not for the
            # server, so the latency says nothing of the server (and more requests in flight
            # would not be served sooner); the limit and the startup stay as they are
            pass
        elif (
            self.in_startup
            and latency <= best * self.exit_ratio
            and (delivered is None or delivered * best * self.tolerance >= in_flight)
            and not queued_at_start
        ):
            if not app_limited:
                self._set(limit * self.startup_growth, now, "startup")
                self._filling = True
        elif filling and self.in_startup:
            # the first round after a startup step: new connections, a burst of new work
            # at the server and in the client, and little delivered yet (the new
            # requests were still on their way); a transient, so the startup ends only
            # if the next round shows the same
            pass
        else:
            probe = self._rounds_since_probe >= self.probe_every
            self._rounds_since_probe += 1
            self.in_startup = False
            if self._round_peak <= 1:
                # one request in flight all round: nothing of ours was queued, so this is
                # the server's latency with an empty queue, which is what the best stands for
                # (a probe cannot go below the floor; the queries may have got slower)
                self._set_best(latency)
                best = latency
            throughput = in_flight / latency  # Little's law, with the round's median
            if delivered is not None:
                throughput = min(throughput, delivered)
            target = self.tolerance * throughput * best
            if app_limited:
                target = min(target, limit)
            if target >= limit:
                # after push-back the server's limit is known to be near: creep up;
                # with no queueing at all (a noisy round ended the startup), go all the way
                cap = limit + math.sqrt(limit) if self._pushed_back else limit * self.tolerance
                clear = latency <= best * self.clear_ratio and not self._pushed_back
                target = min(target if clear else limit + (target - limit) / 2, cap)
            else:
                target = max(limit + (target - limit) / 2, limit / 2)
            self._set(target, now, "gradient")
            low = max(float(self.floor), self.estimate / self.probe_divisor)
            if probe and round(low) < self._limit:
                self._rounds_since_probe = 0
                self._probe_restore = self.estimate
                self._set(low, now, "probe")
        self._new_round(now, cpu)

    def _queued_at_start(self, latency: float) -> bool:
        """Whether the first round, at the initial limit, shows a queue within itself.

        The first round has nothing to compare with (the best latency is its own
        median), so the spread of its answers is the only sign of a queue: when the
        median answer of requests sent together took more than ``tolerance`` times
        as long as the fastest (the latency the limit aims for), they waited behind
        each other at the server.  The startup then ends here, and the fastest answer
        is the best latency seen.  Not ``exit_ratio``, as later rounds: answers that
        arrive together also wait for the client to read them one after another,
        which spreads them by up to 2x on its own (measured at 10 ms and 16 in flight
        on this project's 2-core machine: 1.5-2.1x; Orthanc, whose knee is about 4:
        3.8-6.6x).
        """
        if self._round:
            return False
        fastest = min(self._round_samples)
        if fastest > 0 and latency > fastest * self.tolerance:
            self._set_best(fastest)
            return True
        if fastest > 0 and latency > fastest * self.exit_ratio:
            # Spread, but not enough to tell a queue from the client's reading: the
            # median may hold a queue all the same (a FIFO server serving 5 to 8 of 16
            # at once answers the median at 1.5-2x the fastest), and a best latency with
            # a queue in it would settle the limit as far above the knee.  The best is
            # then what a round without a queue may reach, ``exit_ratio`` times the fastest.
            self._set_best(fastest * self.exit_ratio)
        return False

    def _new_round(self, now: float, cpu: float | None = None) -> None:
        self._round += 1
        self._round_started = now
        self._round_cpu = cpu
        self._round_answers = 0
        self._round_samples = []
        self._round_peak = self.in_flight
        self._round_needs = self._samples_needed()

    def _samples_needed(self) -> int:
        """The samples that end a round (about half the limit; the median of a few is noisy).

        The first round waits for all its requests: its spread is what it is judged by
        (:meth:`_queued_at_start`), and a queue shows in its later answers.
        """
        if self._round == 0:
            return max(self.min_samples, self._limit)
        quick = self.in_startup or self._probe_restore is not None
        fewest = self.min_samples if quick else self.settled_samples
        return max(fewest, math.ceil(self._limit / 2))

    def _set_best(self, latency: float) -> None:
        self.best_latency = latency
        self._stall_after = max(self.stall_factor * latency, self.min_stall)

    def _set(self, estimate: float, now: float, reason: str) -> None:
        before = self._limit
        ceiling = max(float(self.floor), min(float(self.ceiling), self._stall_ceiling))
        self.estimate = min(ceiling, max(float(self.floor), estimate))
        self._limit = min(self.ceiling, max(self.floor, round(self.estimate)))
        if self._limit != before:
            history = self.history
            history.append(LimitChange(now, self._limit, reason))
            if len(history) > HISTORY_KEPT:  # the initial entry stays; half the rest goes
                del history[1 : 1 + HISTORY_KEPT // 2]

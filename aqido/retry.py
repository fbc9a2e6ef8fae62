"""Retry and timeout policies for QIDO-RS requests.

:class:`Retry` decides *whether* and *how long to wait* before trying a failed
request again; :func:`call_with_retry` runs the loop.  Both know nothing about
aiohttp: a failed attempt is an :mod:`aqido.errors` exception
(:class:`~aqido.errors.TransportError` for connection problems and timeouts,
:class:`~aqido.errors.HTTPStatusError` for a status), so the policy is pure and
testable with a fake clock.

QIDO-RS searches are idempotent GETs, so retrying them is always safe.  By
default aqido retries connection errors, timeouts and the statuses 429, 500,
502, 503 and 504 (500 because autoscaling proxies answer it transiently), with
exponential backoff and full jitter, honouring ``Retry-After``; no other
4xx is retried unless listed in ``Retry(statuses=...)``: a status listed there
is retried whatever its class (``408 Request Timeout``, say).  A 2xx reply
that is not valid DICOM JSON (cut short, syntactically broken) is retried too,
within the same attempt budget.  What cannot heal is never retried: TLS
failures (an untrusted certificate), a proxy URL aqido cannot use or a proxy
refusing its credentials (407), redirect loops and redirects to other schemes,
and responses over ``max_response_bytes``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from asyncio import sleep
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs

from aqido._attrs_methods import ValueMethods
from aqido.errors import (
    HTTPStatusError,
    InvalidResponseError,
    ProxyConfigError,
    QidoError,
    RedirectError,
    ResponseTooLargeError,
    TLSError,
    TransportError,
)
from aqido.protocol import header_values, parse_retry_after

logger = logging.getLogger("aqido")

T = TypeVar("T")

#: Statuses retried by default.
DEFAULT_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: The most doublings of the backoff ceiling computed (``2.0 ** 1024`` overflows a float).
_MAX_DOUBLINGS = 1000


def _non_negative(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validate a :class:`Retry` field: a finite number ``>= 0``, or ``None`` where allowed."""
    if value is not None and (
        not isinstance(value, int | float) or not value >= 0 or not math.isfinite(value)
    ):
        raise ValueError(
            f"{attribute.name} must be a non-negative, finite number or None, not {value!r}"
        )


def _positive(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validate a :class:`Timeout` limit: a finite number ``> 0`` of seconds, or ``None`` (none).

    aiohttp reads ``0`` (and asyncio a NaN) as no limit at all: refused, not taken so.
    """
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not value > 0
        or not math.isfinite(value)
    ):
        raise ValueError(
            f"{attribute.name} must be a positive, finite number of seconds or None "
            f"(no limit), not {value!r}"
        )


def _attempts(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validate :attr:`Retry.max_attempts`: an int ``>= 1`` (not a bool, not ``2.5``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an int >= 1, not {value!r}")


def _flag(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validate a switch of :class:`Retry`: ``True`` or ``False`` (``"no"`` would read as true)."""
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be True or False, not {value!r}")


def _statuses(value: object) -> frozenset[int]:
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise ValueError(f"statuses must be a collection of HTTP status codes, not {value!r}")
    given = list(value)
    odd = [v for v in given if isinstance(v, bool) or not isinstance(v, int)]
    if odd:  # int(500.5) would be 500, int("503") 503: a status is an int
        raise ValueError(f"statuses must be HTTP status codes (ints), not {odd[:5]!r}")
    statuses = frozenset(given)
    wrong = sorted(s for s in statuses if not 100 <= s <= 599)
    if wrong:
        raise ValueError(f"statuses must be HTTP status codes (100-599), not {wrong}")
    return statuses


@attrs.frozen(kw_only=True, repr=False, eq=False)
class Retry(ValueMethods):
    """When and how a failed request is retried.

    Attributes:
        max_attempts: attempts in total, the first one included (``1`` = never retry).
        total: seconds after the first attempt was sent past which no new attempt
            starts (``None``: no limit); the client's time waiting for a concurrency
            slot before that is not counted.  A ``Retry-After`` that would end past it
            gives up.
        backoff_base: the first backoff ceiling, in seconds; it doubles with each
            retry (full jitter: the wait is uniform in ``[0, ceiling]``).
        backoff_max: the largest backoff ceiling, in seconds.
        statuses: the HTTP statuses that are retried; a status listed here is
            retried whatever its class (e.g. ``DEFAULT_RETRY_STATUSES | {408}``).
            Statuses not listed are never retried.
        retry_transport_errors: whether connection errors and timeouts are retried
            (TLS failures, unusable proxy URLs and a proxy's 407 never are; a proxy
            that refuses the connection is a connection error).
        retry_invalid_responses: whether a success status with a body that is not
            valid DICOM JSON (truncated, malformed, HTML) is retried.  Redirect
            errors and responses over the size limit never are.
        respect_retry_after: wait at least what a ``Retry-After`` header asks for.
        max_retry_after: give up instead of waiting when ``Retry-After`` asks for
            more than this many seconds.
    """

    max_attempts: int = attrs.field(default=4, validator=_attempts)
    total: float | None = attrs.field(default=60.0, validator=_non_negative)
    backoff_base: float = attrs.field(default=0.5, validator=_non_negative)
    backoff_max: float = attrs.field(default=30.0, validator=_non_negative)
    statuses: frozenset[int] = attrs.field(default=DEFAULT_RETRY_STATUSES, converter=_statuses)
    retry_transport_errors: bool = attrs.field(default=True, validator=_flag)
    retry_invalid_responses: bool = attrs.field(default=True, validator=_flag)
    respect_retry_after: bool = attrs.field(default=True, validator=_flag)
    max_retry_after: float = attrs.field(default=120.0, validator=_non_negative)

    @classmethod
    def disabled(cls) -> Retry:
        """A policy that never retries."""
        return cls(max_attempts=1)

    @classmethod
    def coerce(cls, value: Retry | int | None) -> Retry:
        """Build a policy from the client's ``retries=`` argument.

        ``None`` or ``0`` disables retries; an int ``n`` allows ``n`` retries
        (``n + 1`` attempts) with the default backoff; a :class:`Retry` is used as is.
        """
        if isinstance(value, Retry):
            return value
        if value is None:
            return cls.disabled()
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"retries must be a Retry, a non-negative int or None, not {value!r}")
        return cls(max_attempts=value + 1)

    def is_retryable(self, error: QidoError) -> bool:
        """Whether ``error`` is worth another attempt (ignoring attempt and time budgets)."""
        if isinstance(error, HTTPStatusError):
            return error.status in self.statuses
        if isinstance(error, TLSError | ProxyConfigError):
            return False
        if isinstance(error, TransportError):
            return self.retry_transport_errors
        if isinstance(error, RedirectError | ResponseTooLargeError):
            return False
        if isinstance(error, InvalidResponseError):
            return self.retry_invalid_responses
        return False

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The jittered wait after failed attempt number ``attempt`` (1-based)."""
        # The exponent is bounded: 2.0 ** 1024 overflows (OverflowError), and a policy
        # allowing that many attempts (retries=5000, total=None) reaches it; the ceiling
        # is backoff_max long before, whatever backoff_base is.
        doubling = 2.0 ** min(max(0, attempt - 1), _MAX_DOUBLINGS)
        ceiling = min(self.backoff_max, self.backoff_base * doubling)
        return (rng or random).uniform(0.0, ceiling)

    def next_delay(
        self,
        error: QidoError,
        *,
        attempt: int,
        elapsed: float,
        rng: random.Random | None = None,
    ) -> float | None:
        """How long to wait before retrying after ``error``, or ``None`` to give up.

        Arguments:
            error: why attempt number ``attempt`` (1-based) failed.
            elapsed: seconds since the first attempt started.
        """
        if attempt >= self.max_attempts or not self.is_retryable(error):
            return None
        delay = self.backoff(attempt, rng)
        if self.respect_retry_after and isinstance(error, HTTPStatusError):
            values = header_values(error.headers, "Retry-After")
            asked = parse_retry_after(values[0]) if values else None
            if asked is not None:
                if asked > self.max_retry_after:
                    return None
                delay = max(delay, asked)
        if self.total is not None and elapsed + delay > self.total:
            return None
        return delay


@attrs.frozen(kw_only=True, repr=False, eq=False)
class Timeout(ValueMethods):
    """Time limits for requests, in seconds (``None`` = no limit; ``0``, NaN and infinity are
    refused with ``ValueError``: aiohttp would read them as no limit).

    Attributes:
        request: one HTTP attempt, from sending it to reading the whole body.
        connect: opening a TCP/TLS connection.
        total: one logical request, all its retries and backoff waits included.
            (To bound a whole crawl, wrap it in ``anyio.fail_after``.)
    """

    request: float | None = attrs.field(default=60.0, validator=_positive)
    connect: float | None = attrs.field(default=10.0, validator=_positive)
    total: float | None = attrs.field(default=None, validator=_positive)

    @classmethod
    def coerce(cls, value: Timeout | float | None) -> Timeout:
        """Build limits from the client's ``timeout=`` argument.

        A number sets the per-request limit (connect and total keep their
        defaults); ``None`` disables every limit; a :class:`Timeout` is used as is.
        """
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(request=None, connect=None, total=None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"timeout must be a Timeout, a number or None, not {value!r}")
        if not value > 0 or not math.isfinite(value):
            raise ValueError(
                f"timeout must be a positive, finite number of seconds or None (no limit), "
                f"not {value!r}"
            )
        return cls(request=float(value))


async def call_with_retry(
    attempt: Callable[[], Awaitable[T]],
    policy: Retry,
    *,
    what: str = "request",
    on_retry: Callable[[QidoError, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    failed: tuple[QidoError, float] | None = None,
) -> T:
    """Await ``attempt()`` until it succeeds or ``policy`` gives up; then raise its last error.

    Only :class:`~aqido.errors.QidoError` failures are considered; anything else
    (and cancellation) propagates at once.  ``on_retry(error, delay)`` is called
    after each wait, as the next attempt starts (for statistics: a wait cut short,
    by a total timeout or a cancellation, is no retry); ``what`` names the request
    in log lines.
    ``failed=(error, start)``: the first attempt was already made (at ``clock()``
    time ``start``) and raised ``error``; the loop goes on from there (a client
    makes its first attempt itself, so a request that succeeds costs no loop).
    """
    start = clock() if failed is None else failed[1]
    pending = None if failed is None else failed[0]
    number = 0
    while True:
        number += 1
        if pending is not None:
            error, pending = pending, None
        else:
            try:
                return await attempt()
            except QidoError as exc:
                error = exc
        delay = policy.next_delay(error, attempt=number, elapsed=clock() - start, rng=rng)
        if delay is None:
            raise error
        logger.info(
            "retrying %s in %.3f s (attempt %d of %d failed: %s)",
            what,
            delay,
            number,
            policy.max_attempts,
            error,
        )
        await sleep(delay)
        if on_retry is not None:
            on_retry(error, delay)

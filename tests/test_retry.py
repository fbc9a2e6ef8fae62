"""Retry and timeout policies: pure decisions, and the retry loop with a fake attempt."""

from __future__ import annotations

import random
import time

import pytest

from aqido.errors import (
    BadRequestError,
    HTTPStatusError,
    InvalidResponseError,
    NotFoundError,
    QidoError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    TransportError,
    UnauthorizedError,
)
from aqido.retry import DEFAULT_RETRY_STATUSES, Retry, Timeout, call_with_retry


def status_error(status: int, **headers: str) -> HTTPStatusError:
    from aqido.errors import error_for_status

    return error_for_status(status)(status, "http://h/studies", b"", headers=headers)


def test_defaults() -> None:
    policy = Retry()
    assert policy.max_attempts == 4
    assert policy.statuses == DEFAULT_RETRY_STATUSES == {429, 500, 502, 503, 504}


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    assert Retry().is_retryable(status_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 414, 501, 505])
def test_not_retryable_statuses(status: int) -> None:
    assert not Retry().is_retryable(status_error(status))


def test_a_listed_status_is_retried_whatever_its_class() -> None:
    policy = Retry(statuses={400, 404, 408, 429, 501})
    for status in (400, 404, 408, 429, 501):
        assert policy.is_retryable(status_error(status)), status
    # What is not listed is not retried, defaults included.
    for status in (403, 409, 500, 503):
        assert not policy.is_retryable(status_error(status)), status


def test_408_is_retried_only_when_listed() -> None:
    assert not Retry().is_retryable(status_error(408))
    assert Retry(statuses=DEFAULT_RETRY_STATUSES | {408}).is_retryable(status_error(408))


@pytest.mark.parametrize("statuses", [{99}, {600}, {200, 1000}, "503", 503])
def test_statuses_must_be_http_status_codes(statuses: object) -> None:
    with pytest.raises(ValueError, match="statuses must be"):
        Retry(statuses=statuses)  # type: ignore[arg-type]


def test_transport_errors_and_timeouts_are_retryable_unless_disabled() -> None:
    assert Retry().is_retryable(TransportError("reset"))
    assert Retry().is_retryable(RequestTimeoutError("slow"))
    assert not Retry(retry_transport_errors=False).is_retryable(TransportError("reset"))
    assert Retry().is_retryable(InvalidResponseError("bad json"))  # issue 15: retried
    assert not Retry(retry_invalid_responses=False).is_retryable(InvalidResponseError("bad"))


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    policy = Retry(backoff_base=1.0, backoff_max=5.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (10, 5.0)]:
        samples = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # jitter spans the range
        assert min(samples) < ceiling * 0.2


def test_next_delay_gives_up_after_max_attempts() -> None:
    policy = Retry(max_attempts=3, backoff_base=0.001)
    error = status_error(503)
    assert policy.next_delay(error, attempt=1, elapsed=0) is not None
    assert policy.next_delay(error, attempt=2, elapsed=0) is not None
    assert policy.next_delay(error, attempt=3, elapsed=0) is None


def test_next_delay_honours_retry_after_seconds_and_date() -> None:
    policy = Retry(backoff_base=0.0)
    assert policy.next_delay(status_error(429, **{"Retry-After": "7"}), attempt=1, elapsed=0) == 7
    assert policy.next_delay(status_error(503, **{"Retry-After": "0"}), attempt=1, elapsed=0) == 0
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert policy.next_delay(status_error(503, **{"Retry-After": past}), attempt=1, elapsed=0) == 0


def test_an_unreadable_retry_after_date_falls_back_to_backoff() -> None:
    policy = Retry(backoff_base=0.0)
    bad = "Wed, 31 Feb 2015 07:28:00 GMT"
    assert policy.next_delay(status_error(503, **{"Retry-After": bad}), attempt=1, elapsed=0) == 0


@pytest.mark.parametrize("year", ["10000", "99999", "99999999999999999999"])
def test_a_retry_after_date_past_year_9999_gives_up(year: str) -> None:
    """datetime holds no such year (nor int the last: OverflowError, found by review): the date
    was unreadable, and the request retried at once, where 31 Dec 9999 gave up; it is a wait
    past any ``max_retry_after``."""
    policy = Retry(backoff_base=0.0, total=None, max_retry_after=1e300)
    error = status_error(503, **{"Retry-After": f"Fri, 31 Dec {year} 23:59:59 GMT"})
    assert policy.next_delay(error, attempt=1, elapsed=0) is None


def test_a_retry_after_too_large_for_a_float_gives_up() -> None:
    """``Retry-After: 999...`` (400 digits) was unreadable: retried at once, where 1e308 gave up."""
    policy = Retry(backoff_base=0.0, total=None)
    for value in ("9" * 400, "1" + "0" * 308):
        error = status_error(429, **{"Retry-After": value})
        assert policy.next_delay(error, attempt=1, elapsed=0) is None


@pytest.mark.parametrize("bad", [0, 0.0, -1, float("nan"), float("inf"), True, "1"])
def test_timeouts_must_be_positive_and_finite(bad: object) -> None:
    """``timeout=0`` or NaN meant no limit at all in aiohttp (found by review)."""
    for field in ("request", "connect", "total"):
        with pytest.raises(ValueError, match=field):
            Timeout(**{field: bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be"):
        Timeout.coerce(bad)  # type: ignore[arg-type]
    assert Timeout(request=0.5, connect=1, total=None).request == 0.5
    assert Timeout.coerce(None) == Timeout(request=None, connect=None, total=None)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_retry_durations_must_be_finite_and_non_negative(bad: float) -> None:
    for field in ("total", "backoff_base", "backoff_max", "max_retry_after"):
        with pytest.raises(ValueError, match=f"{field} must be a non-negative, finite number"):
            Retry(**{field: bad})  # type: ignore[arg-type]
    assert Retry(total=None, backoff_base=0).total is None


def test_retry_after_can_be_ignored() -> None:
    policy = Retry(backoff_base=0.0, respect_retry_after=False)
    assert policy.next_delay(status_error(429, **{"Retry-After": "7"}), attempt=1, elapsed=0) == 0


def test_retry_after_beyond_the_budget_gives_up() -> None:
    policy = Retry(total=10.0, max_retry_after=100.0, backoff_base=0.0)
    error = status_error(429, **{"Retry-After": "8"})
    assert policy.next_delay(error, attempt=1, elapsed=1.0) == 8
    assert policy.next_delay(error, attempt=1, elapsed=3.0) is None
    assert Retry(max_retry_after=5).next_delay(error, attempt=1, elapsed=0) is None


def test_total_time_cap() -> None:
    policy = Retry(total=1.0, backoff_base=0.001)
    assert policy.next_delay(status_error(503), attempt=1, elapsed=0.5) is not None
    assert policy.next_delay(status_error(503), attempt=1, elapsed=1.5) is None
    assert Retry(total=None).next_delay(status_error(503), attempt=1, elapsed=1e9) is not None


def test_coerce() -> None:
    assert Retry.coerce(None).max_attempts == 1
    assert Retry.coerce(0).max_attempts == 1
    assert Retry.coerce(3).max_attempts == 4
    policy = Retry(max_attempts=9)
    assert Retry.coerce(policy) is policy
    for bad in (-1, True, 1.5, "3"):
        with pytest.raises(ValueError, match="retries"):
            Retry.coerce(bad)  # type: ignore[arg-type]


def test_validation() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        Retry(max_attempts=0)
    # 2.5 attempts, True or "3" are no count of attempts: refused, not taken as 3, 1 or a
    # TypeError from a comparison
    for odd in (2.5, True, "3"):
        with pytest.raises(ValueError, match="max_attempts must be an int"):
            Retry(max_attempts=odd)  # type: ignore[arg-type]
    # a switch given "no" would have read as true: retries on, silently
    for name in ("retry_transport_errors", "retry_invalid_responses", "respect_retry_after"):
        with pytest.raises(ValueError, match=f"{name} must be True or False"):
            Retry(**{name: "no"})  # type: ignore[arg-type]
        assert getattr(Retry(**{name: False}), name) is False  # type: ignore[arg-type]
    # int(503.5) would have retried 503, int("429") 429: a status is an int
    for odd_status in (503.5, "429", True):
        with pytest.raises(ValueError, match="statuses must be HTTP status codes"):
            Retry(statuses=[500, odd_status])  # type: ignore[list-item]
    assert Retry(statuses=(500, 503)).statuses == {500, 503}
    with pytest.raises(ValueError, match="total"):
        Retry(total=-1)
    with pytest.raises(ValueError, match="request"):
        Timeout(request=-1)


def test_timeout_coerce() -> None:
    assert Timeout.coerce(None) == Timeout(request=None, connect=None, total=None)
    assert Timeout.coerce(5) == Timeout(request=5.0)
    limits = Timeout(total=3)
    assert Timeout.coerce(limits) is limits
    with pytest.raises(ValueError, match="timeout"):
        Timeout.coerce("5")  # type: ignore[arg-type]


class FlakyAttempt:
    """A fake request: fails with the given errors in turn, then succeeds."""

    def __init__(self, *errors: QidoError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


FAST = Retry(max_attempts=4, backoff_base=0.001, backoff_max=0.002)


@pytest.mark.anyio
async def test_call_with_retry_succeeds_after_transient_failures() -> None:
    attempt = FlakyAttempt(status_error(503), TransportError("reset"), status_error(429))
    seen: list[tuple[str, float]] = []
    result = await call_with_retry(
        attempt, FAST, on_retry=lambda e, d: seen.append((type(e).__name__, d))
    )
    assert result == "ok"
    assert attempt.calls == 4
    assert [name for name, _ in seen] == ["ServerError", "TransportError", "RateLimitedError"]


@pytest.mark.anyio
async def test_a_wait_cut_short_is_no_retry() -> None:
    # on_retry feeds CrawlStats.retries: a retry whose wait a total timeout (or a
    # cancellation) ended never happened, and used to be counted all the same.
    import anyio

    attempt = FlakyAttempt(status_error(503, **{"Retry-After": "5"}))
    seen: list[str] = []
    with anyio.move_on_after(0.05):
        await call_with_retry(attempt, FAST, on_retry=lambda e, d: seen.append(type(e).__name__))
    assert attempt.calls == 1
    assert seen == []


@pytest.mark.anyio
async def test_call_with_retry_gives_up_after_max_attempts_with_last_error() -> None:
    attempt = FlakyAttempt(*(status_error(503) for _ in range(10)))
    with pytest.raises(ServerError):
        await call_with_retry(attempt, FAST)
    assert attempt.calls == 4


@pytest.mark.anyio
async def test_call_with_retry_goes_on_from_a_first_attempt_made_by_the_caller() -> None:
    # The client makes its first attempt itself; `failed` hands the loop that failure.
    attempt = FlakyAttempt(*(status_error(503) for _ in range(10)))
    seen: list[str] = []
    with pytest.raises(ServerError):
        await call_with_retry(
            attempt,
            FAST,
            on_retry=lambda e, d: seen.append(type(e).__name__),
            failed=(status_error(502), time.monotonic()),
        )
    assert attempt.calls == 3  # the caller's failure was attempt 1 of 4
    assert seen == ["ServerError"] * 3


@pytest.mark.anyio
async def test_call_with_retry_counts_the_first_attempt_s_time_against_the_total() -> None:
    policy = Retry(max_attempts=9, backoff_base=0.001, backoff_max=0.002, total=5.0)
    attempt = FlakyAttempt()
    with pytest.raises(ServerError):  # started 10 s ago: no time left for a retry
        await call_with_retry(attempt, policy, failed=(status_error(503), time.monotonic() - 10))
    assert attempt.calls == 0
    assert await call_with_retry(attempt, policy, failed=(status_error(503), time.monotonic()))
    assert attempt.calls == 1


@pytest.mark.anyio
async def test_call_with_retry_raises_a_first_failure_that_is_not_retryable() -> None:
    attempt = FlakyAttempt()
    with pytest.raises(NotFoundError):
        await call_with_retry(attempt, FAST, failed=(status_error(404), time.monotonic()))
    assert attempt.calls == 0


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 401, 404])
async def test_call_with_retry_never_retries_client_errors(status: int) -> None:
    attempt = FlakyAttempt(status_error(status))
    with pytest.raises((BadRequestError, UnauthorizedError, NotFoundError)):
        await call_with_retry(attempt, FAST)
    assert attempt.calls == 1


@pytest.mark.anyio
async def test_disabled_policy_makes_one_attempt() -> None:
    attempt = FlakyAttempt(status_error(503))
    with pytest.raises(ServerError):
        await call_with_retry(attempt, Retry.disabled())
    assert attempt.calls == 1


@pytest.mark.anyio
async def test_non_qido_errors_propagate_immediately() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await call_with_retry(broken, FAST)
    assert calls == 1


@pytest.mark.anyio
async def test_retry_after_is_waited_for_with_a_fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr("aqido.retry.sleep", fake_sleep)
    attempt = FlakyAttempt(status_error(429, **{"Retry-After": "2"}))
    assert await call_with_retry(attempt, Retry(backoff_base=0.0)) == "ok"
    assert slept == [2.0]
    assert isinstance(status_error(429), RateLimitedError)


def test_backoff_of_a_policy_with_very_many_attempts_does_not_overflow() -> None:
    # retries=5000 with total=None: attempt 1025 used to compute 2.0 ** 1024 (OverflowError)
    policy = Retry(max_attempts=5000, total=None, backoff_base=0.5, backoff_max=30.0)
    error = TransportError("reset")
    for attempt in (1024, 1025, 4999):
        delay = policy.next_delay(error, attempt=attempt, elapsed=0)
        assert delay is not None
        assert 0.0 <= delay <= 30.0
    assert Retry(max_attempts=5000, total=None, backoff_base=0.0).backoff(2000) == 0.0

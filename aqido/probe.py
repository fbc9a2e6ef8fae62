"""``probe``: measure a QIDO-RS archive's :class:`~aqido.profile.ServerProfile` from its own data.

The probe sends a bounded number of small read-only GET requests (at most
:data:`MAX_REQUESTS`, at most :data:`MAX_IN_FLIGHT` at once) and decides, field by
field, how the archive behaves.  It first lists a few studies (``/studies?limit=50``)
and takes its test values from what came back: a study *A* with a PatientName,
its case-flipped form, a prefix with ``*``, the name with one ``?``, a second
study *B* for UID lists, value lists and repeated keys, date and time ranges around
A's StudyDate and StudyTime, and so on.

The logic is pure and separate from the I/O:

- :func:`discovery_request` is the first request; :func:`make_context` picks the
  test values from its answer (a :class:`ProbeContext`).
- :func:`plan_checks` turns the context into :class:`Check` objects: each check is a
  few :class:`ProbeRequest` values plus a pure ``interpret`` function from their
  :class:`Answer` values (status, headers, items) to :class:`Finding` values.
- The caps are measured in three dependent steps (:func:`cap_guard_request`,
  :func:`cap_listing_request`, :func:`cap_followups`, :func:`interpret_caps`).
- :func:`build_profile` folds the findings into a profile; a capability that could
  not be decided keeps the standard default and gets a line in the profile's ``notes``.

Those pure parts live in private modules (:mod:`aqido._probe_model`, the values and
both ends; :mod:`aqido._probe_checks`, the checks; :mod:`aqido._probe_caps`, the caps);
this module is their public namespace and the I/O.

:func:`probe_report` is the thin async driver (used by :meth:`AsyncQidoRS.probe`
and ``aqido probe``); it returns a :class:`ProbeReport`, the profile plus every
finding with the request that showed it.

Matching checks are narrowed to study A with ``StudyInstanceUID=A`` (so a server
cap or a popular name cannot hide A), and each comes with a negative control (a
value A must *not* match), so a server that ignores a key is not mistaken for one
that matches it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aqido._probe_caps import (
    TYPICAL_CAPS,
    cap_followups,
    cap_guard_request,
    cap_listing_request,
    interpret_caps,
)
from aqido._probe_checks import plan_checks
from aqido._probe_model import (
    Answer,
    Check,
    Finding,
    ProbeContext,
    ProbeReport,
    ProbeRequest,
    build_profile,
    discovery_request,
    make_context,
    series_request,
    undecided,
    with_series,
)

if TYPE_CHECKING:  # pragma: no cover
    from aqido.client import AsyncQidoRS

__all__ = [
    "MAX_IN_FLIGHT",
    "MAX_REQUESTS",
    "TYPICAL_CAPS",
    "Answer",
    "Check",
    "Finding",
    "ProbeContext",
    "ProbeReport",
    "ProbeRequest",
    "build_profile",
    "cap_followups",
    "cap_guard_request",
    "cap_listing_request",
    "discovery_request",
    "interpret_caps",
    "make_context",
    "plan_checks",
    "probe_report",
]

#: The most requests one probe sends.
MAX_REQUESTS = 66
#: The most requests a probe has in flight at once.
MAX_IN_FLIGHT = 4


# --- I/O ------------------------------------------------------------------------------------


async def probe_report(client: AsyncQidoRS, *, max_in_flight: int = MAX_IN_FLIGHT) -> ProbeReport:
    """Probe the archive behind ``client`` and return the profile with its findings.

    Sends at most :data:`MAX_REQUESTS` GET requests, ``max_in_flight`` at a time
    (and never more than the client's ``max_concurrency``).  Transport errors
    (unreachable server, timeouts) are raised as :class:`~aqido.errors.QidoError`;
    HTTP error statuses are answers the probe interprets.  Raises
    :class:`~aqido.errors.HTTPStatusError` when the first listing itself fails.
    """
    sender = Sender(client, max_in_flight=max_in_flight, budget=MAX_REQUESTS)
    first = discovery_request()
    listing = await sender.get(first, raise_for_status=True)
    ctx = make_context(listing)
    if ctx.a is not None:  # one of A's series: the control of the series keys' check
        ctx = with_series(ctx, await sender.get(series_request(ctx.a)))
    findings: list[Finding] = []
    notes: list[str] = []
    if ctx.a is None and ctx.listed:
        notes.append(
            "no listed study has a UID the probe can send as it is (digits, letters, . - _ ^): "
            "only data-free checks were run"
        )
    elif ctx.a is None:
        notes.append("the archive listed no studies: only data-free checks were run")
    findings.append(
        Finding("discovery", f"{len(ctx.listed)} studies listed; A={ctx.a}, B={ctx.b}", str(first))
    )
    checks = plan_checks(ctx)
    guard = cap_guard_request()
    wanted = [r for c in checks for r in c.requests] + [guard]
    answers = await sender.get_all(wanted)
    for check in checks:
        findings += check.interpret([answers[r] for r in check.requests])
    decided = {f.capability: f.value for f in findings if f.decided}
    paging_ok = decided.get("limit") is True and decided.get("offset") is True
    listing_request = cap_listing_request(paging_ok, answers[guard])
    if listing_request is None:
        why = "limit and offset must both work" if not paging_ok else "the offset check failed"
        findings.append(undecided("max_results", why, guard))
    else:
        big = await sender.get(listing_request)
        follow = cap_followups(big)
        more = await sender.get_all(follow)
        findings += interpret_caps(listing_request, big, [more[r] for r in follow])
    profile = build_profile(findings, name=client.url, notes=notes)
    return ProbeReport(profile=profile, findings=tuple(findings), requests=sender.sent, context=ctx)


class Sender:
    """Sends probe requests through a client: bounded in count and in flight, answers cached."""

    def __init__(self, client: AsyncQidoRS, *, max_in_flight: int, budget: int) -> None:
        import anyio

        self._client = client
        self._limiter = anyio.CapacityLimiter(max(1, min(max_in_flight, client.concurrency_limit)))
        self._budget = budget
        self._answers: dict[ProbeRequest, Answer] = {}
        self.sent = 0

    async def get(self, request: ProbeRequest, *, raise_for_status: bool = False) -> Answer:
        """The answer to ``request`` (sent once; later calls reuse it)."""
        from aqido.errors import HTTPStatusError, InvalidResponseError, error_for_status
        from aqido.protocol import join_url, parse_response
        from aqido.retry import call_with_retry

        cached = self._answers.get(request)
        if cached is not None:
            return cached
        if self.sent >= self._budget:
            raise RuntimeError(f"the probe would exceed its budget of {self._budget} requests")
        self.sent += 1
        client = self._client
        url = join_url(client.url, request.path, request.query)
        # Transient answers (429, 502-504) and transport errors are retried as the client
        # retries; a 500 is an answer the probe reads (a server failing on a query form).
        transient = client.retry.statuses - {500}

        async def attempt() -> tuple[int, Mapping[str, str], bytes]:
            async with self._limiter:
                headers = await client._request_headers()
                if request.accept is not None:
                    headers["Accept"] = request.accept
                status, raw, body = await client._request(url, headers)
            if status in transient:
                error = error_for_status(status)
                raise error(status, url, body, reason="", headers=_joined(raw))
            return status, raw, body

        raw_headers: Mapping[str, str]
        try:
            status, raw_headers, body = await call_with_retry(
                attempt, client.retry, what=f"GET {url}"
            )
        except HTTPStatusError as exc:
            if raise_for_status:
                raise
            status, raw_headers, body = exc.status, {}, b""
        flat = {k.lower(): v for k, v in _joined(raw_headers).items()}
        items: tuple[dict[str, Any], ...] | None = None
        if 200 <= status < 300 or raise_for_status:
            try:
                items = tuple(parse_response(status, raw_headers, body, url=url).items)
            except InvalidResponseError:
                if raise_for_status:
                    raise
                items = None
        answer = Answer(status=status, headers=flat, items=items)
        self._answers[request] = answer
        return answer

    async def get_all(self, requests: Sequence[ProbeRequest]) -> dict[ProbeRequest, Answer]:
        """The answers to ``requests`` (duplicates sent once), a few in flight at a time."""
        from aqido._tasks import FirstErrorGroup  # the first QidoError alone, no ExceptionGroup

        unique = list(dict.fromkeys(requests))
        if self.sent + sum(r not in self._answers for r in unique) > self._budget:
            raise RuntimeError(f"the probe would exceed its budget of {self._budget} requests")
        async with FirstErrorGroup() as group:
            for request in unique:
                group.start_soon(self.get, request)
        return {r: self._answers[r] for r in unique}


def _joined(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers.items():
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out

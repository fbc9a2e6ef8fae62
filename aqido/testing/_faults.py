"""The faults a :class:`~aqido.testing.FakeArchive` injects, and its records of served requests.

:class:`Fault` is one failure; :class:`Faults` draws random ones reproducibly
(by seed, URL and attempt, never by arrival order); :func:`fault_response` is
what each kind looks like on the wire.  :class:`ServedRequest` records what
came in and the status that went out (``FakeArchive.requests``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Literal

import attrs
from aiohttp import web
from multidict import CIMultiDictProxy

from aqido.testing._emulation import parse_qs, percent_decoded
from aqido.testing._store import DICOM_JSON, dumps

FaultKind = Literal["429", "503", "500", "disconnect", "truncated", "malformed", "html"]
_ALL_KINDS: tuple[FaultKind, ...] = (
    "429",
    "503",
    "500",
    "disconnect",
    "truncated",
    "malformed",
    "html",
)


def _check_kinds(kinds: Sequence[object], *, empty: bool = True) -> None:
    """Refuse fault kinds that do not exist (one would have been served as "truncated")."""
    unknown = [k for k in kinds if k not in _ALL_KINDS]
    if unknown or (not kinds and not empty):
        raise ValueError(
            f"fault kinds must be some of {', '.join(_ALL_KINDS)}; got {list(kinds)!r} (for "
            "another status, Fault(kind='html', status=...))"
        )


def _decoded_or_raw(text: str) -> str:
    """``text`` percent-decoded, or as it is if the bytes that gives are not UTF-8."""
    try:
        return percent_decoded(text)
    except UnicodeDecodeError:
        return text


@attrs.frozen(kw_only=True)
class ServedRequest:
    """A request the archive served: what came in and the status that went out.

    ``status`` is ``None`` when the connection was dropped on purpose;
    ``fault`` names the injected fault, if any.
    """

    method: str
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    status: int | None
    fault: str | None = None

    @property
    def params(self) -> list[tuple[str, str]]:
        """The query parameters, percent-decoded, in order.

        A name or value whose bytes are not UTF-8 once decoded (``%FF``: the
        archive answered 400) is given as it was sent.
        """
        return [
            (_decoded_or_raw(key), _decoded_or_raw(value))
            for key, value in parse_qs(self.query_string, decode=False)
        ]

    @property
    def relative_url(self) -> str:
        """Path and raw query string as sent (``/dicom-web/studies?limit=10``)."""
        return f"{self.path}?{self.query_string}" if self.query_string else self.path


@attrs.frozen(kw_only=True)
class Fault:
    """One injected failure.

    kinds: ``"429"``/``"503"`` (with ``Retry-After: retry_after``), ``"500"``
    (JSON error body), ``"disconnect"`` (connection closed, no response),
    ``"truncated"`` (200 with a body cut short of its Content-Length),
    ``"malformed"`` (200 ``application/dicom+json`` that is not JSON),
    ``"html"`` (an HTML error page, status ``status`` or 502).  Any other kind
    raises ``ValueError`` (``"502"`` is ``Fault(kind="html", status=502)``).
    """

    kind: FaultKind = attrs.field(validator=lambda _, __, kind: _check_kinds([kind]))
    retry_after: str | None = "0"
    status: int | None = None


@attrs.frozen(kw_only=True)
class Faults:
    """Random faults, reproducible by seed: each request fails with probability ``rate``.

    The draw depends only on ``seed``, the request's path and query and how
    many times that exact URL was requested before (so a retry gets a fresh
    draw), not on the arrival order of concurrent requests.  ``kinds`` picks
    the kinds (uniformly); ``retry_after`` goes into 429/503 responses.
    """

    rate: float = 0.05
    kinds: Sequence[FaultKind] = attrs.field(
        default=_ALL_KINDS, validator=lambda _, __, kinds: _check_kinds(kinds, empty=False)
    )
    seed: int = 0
    retry_after: str | None = "0"

    def draw(self, url: str, attempt: int) -> Fault | None:
        """The fault for the ``attempt``-th request (0-based) of ``url``, or ``None``."""
        digest = hashlib.sha256(f"{self.seed}\0{url}\0{attempt}".encode()).digest()
        rng = random.Random(digest)
        if rng.random() >= self.rate:
            return None
        return Fault(kind=rng.choice(list(self.kinds)), retry_after=self.retry_after)


@attrs.define
class FaultRule:
    """A targeted fault (``FakeArchive.fail``): for which URLs, and how many more times."""

    match: Callable[[str], bool]
    fault: Fault
    remaining: int | None


async def fault_response(request: web.BaseRequest, fault: Fault) -> web.StreamResponse | None:
    """Answer ``request`` with ``fault``; ``None`` when the connection was dropped instead."""
    kind = fault.kind
    if kind in ("429", "503"):
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        return web.Response(status=int(kind), text=f"fault injected: {kind}", headers=headers)
    if kind == "500":
        error = {"HttpError": "Internal Server Error", "HttpStatus": 500, "Message": "fault"}
        return web.Response(status=500, body=dumps(error), content_type="application/json")
    if kind == "html":
        status = fault.status or 502
        page = (
            f"<html><head><title>{status} Bad Gateway</title></head>"
            f"<body><h1>{status} Bad Gateway</h1><hr>nginx</body></html>"
        )
        return web.Response(status=status, text=page, content_type="text/html")
    if kind == "malformed":
        return web.Response(
            status=200,
            body=b'[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}, {"0020',
            content_type=DICOM_JSON,
        )
    transport = request.transport
    if kind == "disconnect":
        if transport is not None:
            transport.close()
        return None
    # truncated: promise a body, send half of it, hang up
    body = dumps([{"0020000D": {"vr": "UI", "Value": ["1.2.3.4"]}}] * 50)
    response = web.StreamResponse(status=200, headers={"Content-Type": DICOM_JSON})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if transport is not None:
        transport.close()
    return None

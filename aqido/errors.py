"""The exceptions aqido raises: one tree, rooted in :class:`QidoError`.

This is a leaf module: it imports nothing from the rest of aqido, so every
layer (pure or not) can raise these without import cycles.

The hierarchy::

    QidoError                       anything aqido raises on purpose
    ├── InvalidQueryError           (also ValueError) a query rejected before any I/O
    │   ├── UnanswerableQueryError  ... this server cannot give the standard's answer to it
    │   └── QueryTypeError          (also TypeError) an argument of the wrong type
    │       └── UnknownFieldError   ... a keyword no query has (a misspelt field)
    ├── ClientClosedError           (also RuntimeError) the client was closed (or is closing)
    ├── TransportError              the request never got an HTTP answer
    │   ├── RequestTimeoutError     ... because a timeout expired
    │   ├── TLSError                ... because TLS failed (certificate not trusted...)
    │   └── ProxyConfigError        (also ValueError) ... the proxy cannot be used (bad URL, 407...)
    ├── HTTPStatusError             the server answered with a non-success status
    │   ├── BadRequestError         400
    │   ├── UnauthorizedError       401 and 403
    │   ├── NotFoundError           404
    │   ├── PayloadTooLargeError    413
    │   ├── RateLimitedError        429
    │   └── ServerError             5xx
    ├── InvalidResponseError        a reply that is not what QIDO-RS promises
    │   ├── ResponseTooLargeError   ... larger than ``max_response_bytes`` (decompressed)
    │   ├── RedirectError           ... a redirect loop, too many, to a non-HTTP(S) or malformed URL
    │   └── ResultsTruncatedError   ... more matches exist than the server lets aqido reach
    ├── CrawlIncompleteError        a bulk crawl could not fetch everything
    └── CheckpointError             (also ValueError) a crawl checkpoint file aqido cannot use

Local errors (``InvalidQueryError``: *you* asked for something illegal) are
raised at construction time and never reach the wire.  Remote errors
(``HTTPStatusError``, ``InvalidResponseError``: *the server* did something
unexpected) carry the URL (with credentials removed), the status and a short
excerpt of the body, so that a log line is enough to understand them.

aqido never catches :class:`BaseException` or :class:`asyncio.CancelledError`:
cancellation always propagates untouched.
"""

from __future__ import annotations

import copyreg
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:  # pragma: no cover - annotations only: at run time this module imports no aqido
    from aqido.stats import CrawlStats

__all__ = [
    "BadRequestError",
    "CheckpointError",
    "ClientClosedError",
    "CrawlFailure",
    "CrawlIncompleteError",
    "HTTPStatusError",
    "InvalidQueryError",
    "InvalidResponseError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProxyConfigError",
    "QidoError",
    "QueryTypeError",
    "RateLimitedError",
    "RedirectError",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "ResultsTruncatedError",
    "ServerError",
    "TLSError",
    "TransportError",
    "UnanswerableQueryError",
    "UnauthorizedError",
    "UnknownFieldError",
    "error_for_status",
    "excerpt",
    "redact_url",
]

#: Longest body excerpt kept on an exception, in characters.
EXCERPT_LENGTH = 200

#: Response headers an :class:`HTTPStatusError` leaves out of its ``headers`` (lower case):
#: a server's session cookies (the client's cookie jar already took them) and the
#: authentication data of RFC 7615 (a digest's next nonce, its ``rspauth``).
SECRET_RESPONSE_HEADERS = frozenset(
    {"set-cookie", "set-cookie2", "authentication-info", "proxy-authentication-info"}
)


def _without_secret_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The response headers ``headers`` (``(name, value)`` pairs) without the secret ones.

    The one filter of :data:`SECRET_RESPONSE_HEADERS`, for :class:`HTTPStatusError`
    and the aiohttp error :mod:`aqido._http` chains.  Names match in any case; the
    pairs kept keep their order, their spelling and every value of a repeated name.
    Pairs, not a mapping: each caller builds the type it keeps (a ``dict`` for
    :class:`HTTPStatusError`, a ``CIMultiDictProxy`` for the aiohttp error).
    """
    return [(name, value) for name, value in headers if name.lower() not in SECRET_RESPONSE_HEADERS]


def redact_url(url: object) -> str:
    """Return ``url`` as a string with any ``user:password@`` part removed.

    Accepts anything with a sensible ``str()`` (``str``, ``yarl.URL``).  Only
    the userinfo is dropped; the rest of the URL is kept byte for byte.  A URL
    ``urlsplit`` cannot parse (``http://user:pw@[::1/x``) loses, as text,
    everything between its ``//`` and the last ``@`` before the next ``/``: it
    never comes back with its credentials.  Nor does a password holding a
    ``#``, ``?`` or ``/`` (``user:se#cret@host``), which ends the authority
    where RFC 3986 reads the URL: see :func:`_userinfo_end`.
    """
    text = str(url)
    if "@" not in text:  # no userinfo possible (the common case: skip the parse)
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return _cut_userinfo(text)
    if "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        url_without = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    else:
        url_without = text
    if "@" in url_without and "//" in text:  # a '#', '?' or '/' in the userinfo cut it short
        start = text.index("//") + 2
        end = _userinfo_end(text, start)
        if end >= 0:
            return text[:start] + text[end + 1 :]
    return url_without


def _userinfo_end(text: str, start: int) -> int:
    """Where the userinfo of ``text``'s authority (from ``start``) ends if it holds ``#?/``.

    The index of its last ``@``, or -1 when an ``@`` past the authority (as
    RFC 3986 reads it: up to the first ``/``, ``?`` or ``#``) is not taken
    for the end of a userinfo.  It is when the authority ends at a ``?`` or
    ``#`` (``user:se#cret@host``: a service URL has a path), or at a ``/``
    with a port that is not a number (``user:se/cret@host``) or after a
    userinfo with an ``@`` in the first path segment (``user:p@ss/word@host``).
    The userinfo then runs to the last ``@`` before the ``/`` after the first
    ``@`` past the authority (which may be in the password too).  A password
    of digits before its ``/`` (``user:12/34@host``) is a port and a path, as
    RFC 3986 reads it (and the request uses it).
    """
    end = len(text)
    for delimiter in "/?#":
        found = text.find(delimiter, start)
        if 0 <= found < end:
            end = found
    first = text.find("@", end)
    if first < 0:
        return -1
    at = text.rfind("@", start, end)
    if text[end] == "/":
        host = text[max(at + 1, start) : end]
        segment = re.split(r"[/?#]", text[end + 1 :], maxsplit=1)[0]
        port = host.rpartition(":")[2] if ":" in host else ""
        wrong_port = not host.startswith("[") and not (port.isdigit() and port.isascii())
        if not (wrong_port and ":" in host) and not (at >= 0 and "@" in segment):
            return -1
    slash = text.find("/", first)
    return text.rfind("@", start, len(text) if slash < 0 else slash)


def _cut_userinfo(text: str) -> str:
    """``text`` without what lies between its first ``//`` and the last ``@`` before the next ``/``.

    The userinfo of a URL too broken to parse, cut without parsing it (for
    :func:`redact_url`); a text without ``//`` is cut from its start.
    """
    start = text.find("//")
    start = 0 if start < 0 else start + 2
    end = text.find("/", start)
    at = text.rfind("@", start, len(text) if end < 0 else end)
    return text if at < 0 else text[:start] + text[at + 1 :]


def excerpt(body: bytes | str | None, limit: int = EXCERPT_LENGTH) -> str:
    """Return a short, printable excerpt of a response body for error messages.

    Bytes are decoded as UTF-8 with replacement; whitespace runs collapse to a
    single space; text longer than ``limit`` is cut and ends with ``…``.
    """
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else str(body)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


class QidoError(Exception):
    """Base class of every exception aqido raises on purpose.

    Every one pickles (and copies): it crosses process boundaries, from a Dask
    worker or a ``multiprocessing`` / ``ProcessPoolExecutor`` child to the
    caller, as the same class with the same message and attributes.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # Python's default rebuilds an exception as ``type(self)(*self.args)``, which calls
        # __init__ with the finished message: the subclasses' own signatures (status, url,
        # path=, failures...) reject it or garble it.  Rebuilt instead the way pickle rebuilds
        # a plain object, without __init__: the same args, then the same attributes.  That is
        # exactly the state the default pickles (args and __dict__): what the exception
        # already exposes (its URL redacted, the body's excerpt), never a constructor input
        # it did not keep (a URL with credentials, a whole body).  copyreg.__newobj__ is
        # pickle's own cls.__new__(cls, *args) (the NEWOBJ opcode): a pickle names the class only.
        newobj = copyreg.__newobj__  # type: ignore[attr-defined]  # not in typeshed's copyreg
        return (newobj, (type(self), *self.args), dict(vars(self)) or None)


class InvalidQueryError(QidoError, ValueError):
    """A query (or one of its values) is invalid; raised before any I/O.

    The message names the offending field and says how to fix it.
    """


class UnanswerableQueryError(InvalidQueryError):
    """The server's profile says it cannot give the standard's answer to this query.

    Raised by a client with ``strict_matching=True`` (else the results carry
    warnings), e.g. for a key the server neither matches as the standard says
    nor returns for aqido to match locally.

    Attributes:
        reasons: one sentence per key that cannot be answered exactly.
    """

    def __init__(self, reasons: Iterable[str], *, query: object = None) -> None:
        self.reasons = tuple(reasons)
        self.query = query
        where = f" for {query}" if query is not None else ""
        super().__init__(
            f"the server cannot give the standard's answer{where}: " + "; ".join(self.reasons)
        )


class QueryTypeError(InvalidQueryError, TypeError):
    """A query argument of the wrong type (a list where one UID goes); also a ``TypeError``.

    Still an :class:`InvalidQueryError` (and so a ``ValueError``): code that
    catches either keeps working.
    """


class UnknownFieldError(QueryTypeError):
    """A keyword argument that no query has, e.g. a misspelt field name.

    The message names the field and suggests the closest field name, or
    ``filters=`` for any other DICOM attribute.

    Attributes:
        field: the unknown name, as given.
        suggestion: the closest field name, or ``None``.
    """

    def __init__(self, message: str, *, field: str, suggestion: str | None = None) -> None:
        self.field = field
        self.suggestion = suggestion
        super().__init__(message)


class TransportError(QidoError):
    """The request did not get a whole HTTP response (connection refused, reset, DNS, TLS...).

    Also a body cut short (the message says after how many of its
    ``Content-Length`` bytes) and bytes that are not an HTTP response, such as
    the rest of an earlier body longer than its ``Content-Length``.

    Always chained (``raise ... from exc``) to the underlying aiohttp or OS error.

    Attributes:
        url: the request URL, credentials removed (``None`` if unknown).
    """

    def __init__(self, message: str, *, url: object = None) -> None:
        self.url: str | None = None if url is None else redact_url(url)
        super().__init__(f"{message} ({self.url})" if self.url else message)


class RequestTimeoutError(TransportError):
    """A request (or the whole operation) took longer than its configured timeout."""


class TLSError(TransportError):
    """The TLS handshake failed on aqido's side: a server certificate that does not verify, a
    server that does not speak TLS, or no TLS version in common.

    Never retried (it cannot heal).  Give the CA bundle with ``ssl=`` (CLI
    ``--cacert``), or, for a test server only, ``ssl=False`` (CLI ``--insecure``).

    A server that refuses the client certificate (or wants one and gets none) is
    not reported as this: with TLS 1.3 it refuses after the handshake, and most
    servers then just close the connection (a plain :class:`TransportError`, which
    is retried) or answer an HTTP error (nginx: 400).  Give the certificate in an
    ``ssl.SSLContext`` (CLI ``--cert``/``--key``).
    """


class ProxyConfigError(TransportError, ValueError):
    """The proxy the environment names (``HTTPS_PROXY``...) cannot be used as configured.

    A URL that does not parse, or not ``http://``/``https://`` (``socks5://``): raised
    when the client is made, for its service URL (also a ``ValueError``, as any bad
    argument), else by a request to another origin (a redirect's).  A proxy answering
    ``407 Proxy Authentication Required`` (wrong or missing credentials): raised by the
    request.  A borrowed ``session=`` whose default headers an ``https://`` proxy would
    read in its ``CONNECT`` request: raised when the client is made (the session's own
    ``proxy=``) or by each request (a proxy from the environment), nothing sent.
    Never retried.  The message names the variable, never the URL (it may hold a
    password).
    """


class ClientClosedError(QidoError, RuntimeError):
    """The client was closed: calls pending or in flight at :meth:`close`, and any call after.

    Also a :class:`RuntimeError` (what using a closed client raised before).
    """


class HTTPStatusError(QidoError):
    """The server answered with an HTTP status that is not a QIDO-RS success.

    Attributes:
        status: the HTTP status code.
        url: the request URL with credentials removed.
        body_excerpt: the first characters of the response body, whitespace collapsed
            (the message shows its ``repr``: control characters escaped).
        headers: the response headers (a plain, case-preserving mapping), without
            ``Set-Cookie``, ``Set-Cookie2``, ``Authentication-Info`` and
            ``Proxy-Authentication-Info`` (any case): a session cookie, a digest's
            next nonce or response auth are secrets, and an exception travels (pickles,
            reprs, error reports) where they must not.  The client's cookie jar already
            took the cookie; the others (``Retry-After``, ``Content-Type``,
            ``WWW-Authenticate``, ``Warning``...) are kept.
    """

    def __init__(
        self,
        status: int,
        url: object,
        body: bytes | str | None = None,
        *,
        reason: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.url = redact_url(url)
        self.body_excerpt = excerpt(body)
        self.reason = reason
        # Left out rather than replaced by a marker: every value kept is one the server sent
        # (a placeholder would read as a cookie to code that parses the header), and no
        # path (pickle, repr, a debugger, an error tracker) can see the cookie or nonce.
        # dict() first: a repeated name keeps one value (a multidict's first), as a mapping can.
        self.headers: Mapping[str, str] = dict(_without_secret_headers(dict(headers or {}).items()))
        message = f"HTTP {status}{' ' + reason if reason else ''} for {self.url}"
        if self.body_excerpt:  # the server's text, as a repr: a traceback prints no ESC of it
            message += f": {self.body_excerpt!r}"
        super().__init__(message)


class BadRequestError(HTTPStatusError):
    """400: the server rejected the query (syntax, unsupported key, limit out of range)."""


class UnauthorizedError(HTTPStatusError):
    """401 or 403: missing, wrong or insufficient credentials."""


class NotFoundError(HTTPStatusError):
    """404: unknown service path (or, on some servers, an unknown parent UID)."""


class PayloadTooLargeError(HTTPStatusError):
    """413: the result set is too large for one response; page or narrow the query."""


class RateLimitedError(HTTPStatusError):
    """429: the server asks the client to slow down (see ``Retry-After``)."""


class ServerError(HTTPStatusError):
    """5xx: the server or a gateway failed."""


def error_for_status(status: int) -> type[HTTPStatusError]:
    """Return the most specific :class:`HTTPStatusError` subclass for ``status``."""
    if status == 400:
        return BadRequestError
    if status in (401, 403):
        return UnauthorizedError
    if status == 404:
        return NotFoundError
    if status == 413:
        return PayloadTooLargeError
    if status == 429:
        return RateLimitedError
    if 500 <= status <= 599:
        return ServerError
    return HTTPStatusError


class InvalidResponseError(QidoError):
    """The server's reply is not what QIDO-RS promises (not JSON, not an array, bad item...).

    Attributes:
        url: the request URL with credentials removed (``None`` for pure parsing).
        status: the HTTP status (``None`` for pure parsing).
        body_excerpt: the first characters of the offending body.
    """

    def __init__(
        self,
        message: str,
        *,
        url: object = None,
        status: int | None = None,
        body: bytes | str | None = None,
    ) -> None:
        self.url: str | None = None if url is None else redact_url(url)
        self.status = status
        self.body_excerpt = excerpt(body)
        full = message
        if self.url:
            full += f" (HTTP {status} from {self.url})" if status else f" ({self.url})"
        if self.body_excerpt:
            full += f"; body starts: {self.body_excerpt!r}"
        super().__init__(full)


class ResponseTooLargeError(InvalidResponseError):
    """A response body is larger than the client's ``max_response_bytes`` (after decompression).

    Raised as soon as the limit is passed (or at once when ``Content-Length``
    says so), so memory stays bounded; never retried.  Narrow or page the
    query (``limit``), or raise ``max_response_bytes``.
    """


class RedirectError(InvalidResponseError):
    """A redirect that cannot be followed: a loop, too many in a row, a non-HTTP(S) target, or a
    ``Location`` that does not parse (a bad port, a host name no resolver takes: ``a..b``).

    Never retried (it cannot heal).
    """


class ResultsTruncatedError(InvalidResponseError):
    """A part of a crawl has more matches than the server returns, and aqido cannot reach them.

    Raised (or recorded as a crawl failure) when a response looks truncated
    (a 299 warning, the server's cap, a full page), paging with ``offset``
    does not get past it, and the query cannot be split any further.
    """


#: Failures a :class:`CrawlIncompleteError`'s message lists, one line each (the rest are counted).
LISTED_FAILURES = 20

#: Longest line of a failure in a :class:`CrawlIncompleteError`'s message, in characters.
FAILURE_LINE_LENGTH = 300

#: Longest part of a query in such a line, in characters (then how many more there were):
#: the error keeps the rest of the line.  The CLI's ``could not fetch`` lines cut it the same.
_FAILURE_QUERY_LENGTH = 150


class CrawlFailure(NamedTuple):
    """One part of a crawl that could not be fetched: the query and the error (after retries).

    A plain named tuple, so ``for query, error in exc.failures`` works.
    """

    query: object
    error: BaseException

    def __str__(self) -> str:
        return f"{self.query}: {type(self.error).__name__}: {self.error}"


def _failure_query(query: object) -> str:
    """A failure's query for a one-line report: its start, and how much of it was left out.

    Whitespace runs collapse to one space (the text is one line), and a query
    longer than :data:`_FAILURE_QUERY_LENGTH` characters (a list of 50 UIDs is
    1,500) keeps that many and ends with ``… (N more characters)``, so a reader
    sees it was cut; unless that is no shorter: a study's series' instances
    (two UIDs, up to 155 characters) stay whole.  Not escaped: a terminal shows
    it through :func:`aqido.terminal.printable`.
    """
    text = " ".join(str(query).split())
    left_out = len(text) - _FAILURE_QUERY_LENGTH
    if left_out > 0:
        cut = f"{text[:_FAILURE_QUERY_LENGTH]}… ({left_out:,} more characters)"
        if len(cut) < len(text):
            return cut
    return text


def _failure_line(failure: CrawlFailure) -> str:
    """``failure`` as one line of at most :data:`FAILURE_LINE_LENGTH` characters.

    The query is cut by :func:`_failure_query`, and the error keeps only its
    message's first line (a shard's ``CrawlIncompleteError`` has one line per
    failure): that line, its type's name and the query's start are what a
    reader needs; ``failures`` has the rest.
    """
    query = _failure_query(failure.query)
    first = next((line for line in str(failure.error).splitlines() if line.strip()), "")
    error = f"{type(failure.error).__name__}: {first}"
    indent = "  - "
    room = FAILURE_LINE_LENGTH - len(indent) - len(query) - len(": ")
    return f"{indent}{query}: {excerpt(error, room)}"


class CrawlIncompleteError(QidoError):
    """A bulk crawl finished without fetching everything it was asked for.

    Raised at the end of the crawl, after every complete study was handed
    out, unless the caller opted into partial results.  Nothing is silently
    lost: ``failures`` lists every part that could not be fetched, and
    ``counts`` says how many items per level were fetched.

    The message lists the first :data:`LISTED_FAILURES` failures, one line of
    at most :data:`FAILURE_LINE_LENGTH` characters each (the query's start, the
    error's type and the first line of its message), and counts the others: it
    stays a few kilobytes however many failures, however long their queries,
    and however nested their errors (a shard's own ``CrawlIncompleteError``).
    Its line breaks are all aqido's: in a failure's line the query and the
    error's message (the server's text in it too) have their whitespace
    collapsed, so a display can split the message into lines and no server can
    add one.  ``failures`` holds them all, whole.

    Attributes:
        failures: a :class:`CrawlFailure` ``(query, error)`` for each part that failed
            for good: a study listing part (its studies are unknown), or a study's
            series or a series' instances (that study was not yielded).
        counts: items fetched per level, e.g. ``{"STUDY": 120, "SERIES": 340}``.
        results: whatever was fetched, when the crawl kept it (else empty).
        stats: the crawl's statistics object (a ``CrawlStats``), when there is one.
    """

    def __init__(
        self,
        failures: Iterable[tuple[object, BaseException]],
        counts: Mapping[str, int] | None = None,
        results: Sequence[object] = (),
        *,
        stats: CrawlStats | None = None,
    ) -> None:
        self.failures = tuple(CrawlFailure(query, error) for query, error in failures)
        self.counts: Mapping[str, int] = dict(counts or {})
        self.results = tuple(results)
        self.stats = stats
        got = ", ".join(f"{n} {level.lower()}" for level, n in self.counts.items())
        lines = [
            f"crawl incomplete: {len(self.failures)} part(s) could not be fetched"
            + (f" (fetched {got})" if got else "")
        ]
        # Bounded: a long message is unreadable, and distributed replaces an exception whose
        # message passes 10,000 characters by a plain Exception (it cannot rebuild this class).
        lines += [_failure_line(failure) for failure in self.failures[:LISTED_FAILURES]]
        if len(self.failures) > LISTED_FAILURES:
            lines.append(f"  ... and {len(self.failures) - LISTED_FAILURES} more")
        super().__init__("\n".join(lines))


class CheckpointError(QidoError, ValueError):
    """A crawl checkpoint file cannot be used: damaged, another crawl's, or in use.

    Raised when a line other than a cut-short last line is not a valid record
    (the message and :attr:`line` name it), when the file belongs to a crawl
    of another query, depth or server, and when another writer holds its lock;
    also for a sharded crawl's plan that is not one aqido wrote, and its Parquet
    part that is not Parquet or has another crawl's columns (:attr:`path` is
    that file); and when writing a checkpoint, plan or part fails (a full disk,
    a read-only filesystem: the message names the OS error, the ``OSError`` is
    the ``__cause__``).

    Attributes:
        path: the checkpoint file, as a string.
        line: the 1-based number of the offending line, or ``None``.
    """

    def __init__(self, message: str, *, path: object, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")

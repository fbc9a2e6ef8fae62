"""The client's request path: one logical request, from its URL to a parsed answer.

:class:`RequestPath` is a part of :class:`~aqido.client.AsyncQidoRS` (a mixin):
:meth:`~RequestPath._fetch` is one logical request (the total timeout,
retries, and :meth:`~aqido.client.AsyncQidoRS.close` cancelling it),
:meth:`~RequestPath._attempt` one attempt (a concurrency slot, credentials,
refreshed once on a 401, the parsed answer), and :meth:`~RequestPath._request`,
in the style of gidgethub's ``aiohttp.py``, the one aiohttp call in aqido
(:mod:`aqido.probe` sends its requests through it too).  Every request runs
this code, and its CPU per request is measured (``benchmarks/cpu.py``).

Hostile or broken servers (docs/security.md): a body is read in chunks and
refused past ``max_response_bytes`` (after decompression); redirects are
followed by aqido itself (at most :data:`MAX_REDIRECTS`), and a hop to
another origin (scheme, host, port) drops every credential (a client
certificate too) and every header the caller gave, and with a borrowed session
is sent through :meth:`~RequestPath._plain_session_for` (that session's
connections, none of its own credentials or defaults); a connection left holding
bytes that are not an HTTP response (the rest of a body longer than its
``Content-Length``) is dropped and its request re-sent once.  TLS and proxies:
``ssl=`` and ``trust_env=`` (:mod:`aqido._proxies`, read once per origin; loopback
is never proxied; a borrowed session's default headers never go to a proxy).
"""

from __future__ import annotations

import asyncio
import base64
import enum
import inspect
import logging
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from aqido._http import (
    check_borrowed_session,
    check_headers,
    check_session_auth,
    is_stale_connection,
    is_unparsable_head,
    map_aiohttp_errors,
    without_client_certificate,
)
from aqido._proxies import (
    Proxy,
    env_proxy,
    origin_key,
    refuse_default_headers_to_proxy,
    refuse_proxy_407,
)
from aqido._slots import Slots
from aqido.errors import (
    ClientClosedError,
    QidoError,
    RedirectError,
    RequestTimeoutError,
    ResponseTooLargeError,
    TransportError,
    excerpt,
    redact_url,
)
from aqido.protocol import (
    QidoResponse,
    header_values,
    join_url,
    parse_response,
    parse_retry_after,
)
from aqido.query import BaseQuery
from aqido.retry import Retry, Timeout, call_with_retry

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from ssl import SSLContext

    from aqido.client import Auth
    from aqido.concurrency import AdaptiveLimiter

if sys.version_info >= (3, 11):
    from asyncio import timeout as _total_timeout
else:  # pragma: no cover - Python 3.10 (async-timeout, a dependency of aiohttp there too)
    from async_timeout import timeout as _total_timeout

#: What an expired ``_total_timeout`` raises: ``asyncio.TimeoutError`` is the builtin
#: ``TimeoutError`` from Python 3.11 on, its own class on 3.10.
_TIMED_OUT = (TimeoutError, asyncio.TimeoutError)

logger = logging.getLogger("aqido")
server_logger = logging.getLogger("aqido.server")  # a server's Warning headers (CLI: stderr)

#: Statuses that tell an adaptive limiter to back off at once (as does an attempt's own
#: timeout, ``Timeout.request`` or ``Timeout.connect``; ``Timeout.total`` does not).
_PUSH_BACK = frozenset({429, 503, 504})

#: Called when a logical request is sent: its first attempt holds its concurrency slots.
#: A crawl sets it around each request (``CrawlStats.requests`` counts requests sent,
#: not those still waiting for a slot when the crawl stopped).
ON_SENT: ContextVar[Callable[[], None] | None] = ContextVar("aqido_on_sent", default=None)

#: Most redirects followed for one request (then :class:`~aqido.errors.RedirectError`).
MAX_REDIRECTS = 10

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Statuses whose response has no body, whatever its ``Content-Length`` says (aiohttp reads none).
_NO_BODY = frozenset({204, 304})
_CHUNK_BYTES = 256 * 1024

#: Recent aiohttp re-sends an idempotent request once by itself when the server closed a
#: pooled connection; with older versions (3.9) aqido does it.
_AIOHTTP_RESENDS_STALE = "_retry_connection" in getattr(aiohttp.ClientSession, "ATTRS", ())


def _resend_once(error: TransportError) -> bool:
    """Whether :meth:`AsyncQidoRS._request` re-sends a request that failed with ``error``; logs why.

    Bytes that are not an HTTP response are logged as a warning: they name a
    server that breaks HTTP's framing (see :func:`aqido._http.is_unparsable_head`),
    and the earlier response they were left by may have been accepted.  A stale
    connection (re-sent here only when aiohttp does not do it) is routine: debug.
    """
    if is_unparsable_head(error):
        logger.warning("%s; re-sending once on another connection", error)
        return True
    if not _AIOHTTP_RESENDS_STALE and is_stale_connection(error):
        logger.debug("GET %s: connection closed by the server; re-sending once", error.url)
        return True
    return False


def _not_encoded(headers: CIMultiDictProxy[str]) -> bool:
    """Whether a response's body comes as sent: no ``Content-Encoding``, or only ``identity``.

    Every value is read, not the first: aiohttp decompresses by one of them (its
    C parser by the last), so ``identity`` then ``gzip`` is a gzip body whose
    ``Content-Length`` says nothing of the size it inflates to.
    """
    if "Content-Encoding" not in headers:
        return True  # nearly every response: one lookup
    return all(
        value.strip().lower() in ("", "identity") for value in headers.getall("Content-Encoding")
    )


#: How many origins' proxy settings a client remembers (the service's, and redirect targets').
_PROXY_ORIGINS = 64


class _State(enum.Enum):
    """A client's lifecycle state (here because ``_fetch`` reads it: a close is no failure)."""

    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


def _feedback(
    status: int, headers: CIMultiDictProxy[str], retry: Retry
) -> tuple[str, float | None]:
    """What an answer tells an adaptive limiter: its outcome, and a pause (``Retry-After``)."""
    retry_after = None
    if not 200 <= status < 300 and retry.respect_retry_after:
        values = header_values(headers, "Retry-After")
        asked = parse_retry_after(values[0]) if values else None
        if asked is not None:
            retry_after = min(asked, retry.max_retry_after)
    if status in _PUSH_BACK:
        return "dropped", retry_after
    return ("success" if 200 <= status < 300 else "ignore"), retry_after


class RequestPath:
    """One logical request of the client: limits, credentials, retries, redirects, the body.

    What it uses of the client, set by ``AsyncQidoRS.__init__`` or defined there:
    """

    url: str
    trust_env: bool
    max_response_bytes: int | None
    timeout: Timeout
    retry: Retry
    _auth: Auth | None
    _ssl: SSLContext | bool
    _proxies: dict[URL, Proxy]
    _in_flight: set[asyncio.Task[Any]]
    _closing: set[asyncio.Task[Any]]
    _headers: dict[str, str]
    _plain_headers: dict[str, str]
    _fixed_headers: dict[str, str] | None
    _state: _State
    _owns_session: bool
    _session: aiohttp.ClientSession | None
    _origin: URL
    _limiter: Slots | AdaptiveLimiter | None
    _client_timeout: aiohttp.ClientTimeout
    #: ``ssl=`` for redirects to another origin (no client certificate), made at the first.
    _foreign_ssl: SSLContext | bool | None = None
    #: The session for hops to another origin with a borrowed one, made at the first.
    _plain_session: aiohttp.ClientSession | None = None

    if TYPE_CHECKING:  # pragma: no cover - defined by AsyncQidoRS

        def _open(self) -> aiohttp.ClientSession: ...

    async def _request(
        self, url: str, headers: Mapping[str, str]
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        """GET ``url`` (sent exactly as given) and return ``(status, headers, body)``.

        The only aiohttp call in aqido.  aiohttp errors are mapped to
        :class:`~aqido.errors.TransportError` / ``RequestTimeoutError`` /
        ``TLSError``.  Redirects are followed here (see the module docstring).

        A request whose connection the server spoiled is re-sent once, at once, on
        another connection (a GET is idempotent; whatever the retry policy): a pooled
        keep-alive connection the server had closed (recent aiohttp re-sends those
        itself: :data:`_AIOHTTP_RESENDS_STALE`), and one whose next bytes were
        not an HTTP response, most often the rest of an earlier body longer than its
        ``Content-Length`` (aiohttp closed it: it is not reused).  The second failure
        is raised; the retry policy decides about it as about any other.
        """
        session = self._open()
        target = URL(url, encoded=True)
        visited: set[URL] | None = None  # made at the first redirect: nearly never
        redirects = 0
        resent = False
        tls = self._ssl
        while True:
            route = proxy, proxy_headers = self._proxy_for(target)
            sent = headers
            if proxy_headers is not None:  # aiohttp sends proxy_headers only with CONNECT
                if target.scheme == "http":
                    sent, proxy_headers = {**headers, **proxy_headers}, None
                else:
                    proxy_headers = dict(proxy_headers)  # aiohttp adds Host to it
            try:
                with map_aiohttp_errors(target, route):
                    async with session.get(
                        target,
                        headers=sent,
                        timeout=self._client_timeout,
                        allow_redirects=False,
                        ssl=tls,
                        proxy=proxy,
                        proxy_headers=proxy_headers,
                    ) as response:
                        location = response.headers.get("Location")
                        if response.status == 407:  # the proxy's answer, not the service's
                            refuse_proxy_407(target, route, session)
                        if response.status not in _REDIRECT_STATUSES or not location:
                            body = await self._read(response, url)
                            return response.status, response.headers, body
                        status = response.status
            except TransportError as error:
                if resent or not _resend_once(error):
                    raise
                resent = True
                continue
            try:
                following = target.join(URL(location))
                # yarl decodes the host (UnicodeError, a ValueError, for `xn--`); the resolver
                # encodes it to IDNA (UnicodeError for an empty or overlong label: `a..b`).
                host = following.host
                raw_host = following.raw_host
                if raw_host:
                    raw_host.encode("idna")
                    # Both let an ASCII control character or a space through (`exa\x1bmple`),
                    # which no host name holds: it would reach the resolver, and the error's
                    # message raw (an ESC sequence of the server's in a traceback).
                    if any(char <= " " or char == "\x7f" for char in raw_host):
                        raise ValueError("a control character or space in the host")
            except ValueError:
                raise RedirectError(
                    "redirect to a malformed Location refused", url=url, status=status
                ) from None
            if following.scheme not in ("http", "https") or not host:
                raise RedirectError(
                    f"redirect to {excerpt(redact_url(following.with_query(None)), 120)!r} refused "
                    "(only http and https are followed)",
                    url=url,
                    status=status,
                )
            # A Location's user:password@ is the server's, never sent: aiohttp would send it
            # as basic auth (or refuse it next to our Authorization with a ValueError).
            following = following.with_user(None)
            if visited is None:
                visited = {target}
            if following in visited:
                raise RedirectError("redirect loop", url=url, status=status)
            visited.add(following)
            if origin_key(following) != origin_key(target):
                # Another origin: no credential and no caller header goes there (nor on),
                # nor a client certificate.
                headers = self._plain_headers
                if not self._owns_session:
                    session = self._plain_session_for(session, url)
                foreign = self._foreign_ssl
                if foreign is None:
                    foreign = self._foreign_ssl = without_client_certificate(self._ssl)
                tls = foreign
            logger.debug("GET %s -> %d, following to %s", url, status, redact_url(following))
            target = following
            redirects += 1
            if redirects > MAX_REDIRECTS:
                raise RedirectError(f"more than {MAX_REDIRECTS} redirects", url=url, status=status)

    def _borrow(
        self,
        session: aiohttp.ClientSession | None,
        service: URL,
        auth: Auth | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        """Take ``session=`` (``None``: the client makes its own); ``ValueError`` if unusable."""
        check_borrowed_session(session, service, auth, headers)
        self._session = session
        self._owns_session = session is None

    def _plain_session_for(
        self, borrowed: aiohttp.ClientSession, url: str
    ) -> aiohttp.ClientSession:
        """The session for a hop to another origin with a borrowed ``session=``: no defaults.

        aiohttp adds a session's own credentials to each request it sends, whatever
        the request says: its ``auth=``, its default ``headers=`` (an
        ``Authorization``, a ``Cookie``, an API key), its cookie jar's cookies (those
        given to it go to every host; a host's go to its every port) and what its
        middlewares add.  This session shares the borrowed one's connector (its
        connection pool, resolver, local address; aiohttp's ``connector_owner=False``
        is for that) and its default proxy, and nothing else: no auth, no default
        headers, no cookie (it neither sends nor stores one), no middleware, no
        ``.netrc`` (``trust_env`` is off; aqido passes the environment's proxy itself).
        Closed by :meth:`~aqido.client.AsyncQidoRS.close`, not its connector.
        """
        plain = self._plain_session
        if plain is not None and not plain.closed:
            return plain
        connector = borrowed.connector
        if connector is None or connector.closed:
            raise TransportError(
                "the borrowed session was closed while a redirect was followed", url=url
            )
        # The caller's route: its proxy, and that proxy's credentials (they go to the proxy,
        # as on the first hop; aiohttp 3.14 deprecates proxy_auth=, already warned about).
        proxy_auth = getattr(borrowed, "_default_proxy_auth", None)
        with warnings.catch_warnings():
            if proxy_auth is not None:
                warnings.simplefilter("ignore", DeprecationWarning)
            plain = self._plain_session = aiohttp.ClientSession(
                connector=connector,
                connector_owner=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                proxy=getattr(borrowed, "_default_proxy", None),
                proxy_auth=proxy_auth,
            )
        return plain

    def _proxy_for(self, url: URL) -> Proxy:
        """The proxy for ``url``'s origin (from the environment, read once per origin)."""
        if not self.trust_env:
            return None, None
        origin = url.origin()
        found = self._proxies.get(origin)
        if found is None:
            if len(self._proxies) >= _PROXY_ORIGINS:  # redirects chose them: bounded memory
                self._proxies.clear()
            found = env_proxy(url)
            if found[0] is not None and not self._owns_session:  # before it is remembered
                refuse_default_headers_to_proxy(self._session, url, self._origin)
            self._proxies[origin] = found
        return found

    async def _read(self, response: aiohttp.ClientResponse, url: str) -> bytes:
        """Read the body, refusing more than ``max_response_bytes`` (after decompression).

        Only a success's body is refused: the body of any other status serves
        only for its error's excerpt, and is read up to the limit and cut there;
        nor does a ``Content-Length`` over the limit refuse it before it is
        read, nor a 204's or 304's, which have no body whatever they declare
        (RFC 9110): the status's own error, or "no results", is what it is.
        """
        limit = self.max_response_bytes
        status = response.status
        if limit is None or status in _NO_BODY:
            return await response.read()
        success = 200 <= status < 300
        declared = response.content_length
        if declared is not None and declared > limit and success:
            response.close()
            raise ResponseTooLargeError(
                f"the response declares {declared} bytes, more than max_response_bytes "
                f"({limit}); narrow or page the query",
                url=url,
                status=response.status,
            )
        if declared is not None and declared <= limit and _not_encoded(response.headers):
            return await response.read()  # at most `declared` bytes: the fast path
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                response.close()
                if not success:  # an error's body: its start is all its error shows
                    chunks.append(chunk[: len(chunk) - (size - limit)])
                    break
                raise ResponseTooLargeError(
                    f"the response body passed max_response_bytes ({limit} bytes, after "
                    "decompression); narrow or page the query",
                    url=url,
                    status=response.status,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _request_headers(self) -> dict[str, str]:
        """The headers of one request (a new dict): the client's, with fresh credentials."""
        headers = self._header_values()
        auth = self._auth
        if callable(auth) and not isinstance(auth, tuple | str):
            extra = auth()
            if inspect.isawaitable(extra):
                extra = await extra
            if not isinstance(extra, Mapping):
                raise TypeError(
                    f"auth() must return a mapping of headers (name -> value), not {type(extra)}"
                )
            check_headers(extra)  # a CR/LF, a bad name: refused before it is sent, value unshown
            if not self._owns_session:  # aiohttp's own ValueError next to the session's auth=
                check_session_auth(self._session, None, extra)
            headers.update(extra)
        return headers

    def _header_values(self) -> dict[str, str]:
        """The client's headers with fixed credentials (basic or bearer) as a new dict."""
        headers = dict(self._headers)
        auth = self._auth
        if isinstance(auth, aiohttp.BasicAuth):
            headers["Authorization"] = auth.encode()
        elif isinstance(auth, tuple):
            user, password = auth
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        elif isinstance(auth, str):
            headers["Authorization"] = f"Bearer {auth}"
        return headers

    async def _attempt(
        self, url: str, limiter: Slots | None, sent_at: list[float] | None = None
    ) -> QidoResponse:
        """One attempt: take a concurrency slot, send, refresh auth once on 401, parse.

        ``sent_at`` receives the ``time.perf_counter()`` reading at which the attempt had
        its slots and was sent (the time it waited for them is the client's own queue);
        it is passed for a request's first attempt, which :data:`ON_SENT` hears about.

        Push-back for an adaptive limiter: a 429, 503 or 504, or this attempt's own
        timeout (``Timeout.request``, ``Timeout.connect``: a ``RequestTimeoutError``).
        ``Timeout.total`` expiring (a cancellation here) is not: it is the caller's
        deadline for the whole request, its time in the client's queue and between
        retries included, so the attempt it cuts short is released with no sample.
        """
        client_limiter = self._limiter
        assert client_limiter is not None
        if limiter is not None:
            await limiter.acquire()
        try:
            adaptive = not isinstance(client_limiter, Slots)
            if isinstance(client_limiter, Slots):
                await client_limiter.acquire()
            else:
                ticket = await client_limiter.acquire()
            outcome: tuple[str, float | None] = ("ignore", None)
            try:
                start = time.perf_counter()
                if sent_at is not None:
                    sent_at.append(start)
                    on_sent = ON_SENT.get()
                    if on_sent is not None:
                        on_sent()
                try:
                    sent = self._fixed_headers
                    if sent is None:  # a callable auth: fresh headers for every request
                        sent = await self._request_headers()
                    status, headers, body = await self._request(url, sent)
                    if status == 401 and callable(self._auth):
                        logger.debug("GET %s -> 401; refreshing credentials and retrying once", url)
                        fresh = await self._request_headers()
                        status, headers, body = await self._request(url, fresh)
                except QidoError as error:
                    elapsed = (time.perf_counter() - start) * 1000
                    logger.debug("GET %s -> %s (%.1f ms)", url, type(error).__name__, elapsed)
                    if isinstance(error, RequestTimeoutError):
                        outcome = ("dropped", None)
                    raise
                elapsed = (time.perf_counter() - start) * 1000
                if adaptive:
                    outcome = _feedback(status, headers, self.retry)
            finally:
                if isinstance(client_limiter, Slots):
                    client_limiter.release()
                else:
                    client_limiter.release(ticket, outcome[0], retry_after=outcome[1])
        finally:
            if limiter is not None:
                limiter.release()
        logger.debug("GET %s -> %d (%.1f ms, %d bytes)", url, status, elapsed, len(body))
        response = parse_response(status, headers, body, url=url)
        for warning in response.warnings:
            if not warning.is_truncation:
                from aqido.terminal import printable  # only for such a warning: rare

                # The server's text, escaped as the CLI shows it: an application's own log
                # handler would print its ESC sequences raw (they came in a header).
                server_logger.warning("server warning for %s: %s", url, printable(warning.raw))
        return response

    async def _attempts(
        self,
        url: str,
        limiter: Slots | None,
        on_retry: Callable[[QidoError, float], None] | None,
    ) -> QidoResponse:
        """:meth:`_attempt`, then as many more as the retry policy allows if it fails.

        The first attempt is made here and the retry loop entered only after a
        failure: most requests succeed at once, and this is their whole cost.
        ``Retry.total`` counts from when the first attempt was sent, not from when it
        began to wait for a concurrency slot: a request queued behind many others (a
        crawl, a ``Retry-After`` pause) keeps its retries.
        """
        sent_at: list[float] = []
        try:
            return await self._attempt(url, limiter, sent_at)
        except QidoError as error:
            failed = (error, sent_at[0] if sent_at else time.perf_counter())

        async def attempt() -> QidoResponse:
            return await self._attempt(url, limiter)

        return await call_with_retry(
            attempt,
            self.retry,
            what=f"GET {url}",
            on_retry=on_retry,
            clock=time.perf_counter,
            failed=failed,
        )

    async def _fetch(
        self,
        query: BaseQuery,
        limiter: Slots | None = None,
        *,
        on_retry: Callable[[QidoError, float], None] | None = None,
    ) -> QidoResponse:
        """One logical request for ``query``: retries, total timeout, concurrency limits.

        ``on_retry(error, delay)`` is called before each retry (crawl statistics).
        """
        self._open()
        url = join_url(self.url, query.uri_base(), query.query_string())
        # close() cancels the tasks in _in_flight (see _cancel_in_flight).
        task = asyncio.current_task()
        assert task is not None  # a coroutine run by asyncio always has one
        self._in_flight.add(task)
        try:
            total = self.timeout.total
            if total is None:
                return await self._attempts(url, limiter, on_retry)
            try:
                async with _total_timeout(total):
                    return await self._attempts(url, limiter, on_retry)
            except _TIMED_OUT as exc:
                raise RequestTimeoutError(
                    f"gave up after {self.timeout.total} s (Timeout.total)", url=url
                ) from exc
        except QidoError as error:
            if self._state is _State.CLOSED and not isinstance(error, ClientClosedError):
                raise ClientClosedError(f"the client was closed ({error})") from error
            raise
        except asyncio.CancelledError:
            if task not in self._closing:
                raise  # the caller's own cancellation
            self._closing.discard(task)
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+: the request is done
            if uncancel is not None:
                uncancel()
            raise ClientClosedError(
                f"the client was closed while this request was pending: {url}"
            ) from None
        finally:
            self._in_flight.discard(task)

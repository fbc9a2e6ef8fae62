"""``AsyncQidoRS``: the asynchronous QIDO-RS client, the only class that touches the network.

The client is a thin aiohttp adapter around the pure layers:

- :mod:`aqido.query` builds the path and the exact encoded query string;
- :mod:`aqido.protocol` turns ``(status, headers, body)`` into items or an error;
- :mod:`aqido.retry` decides about retries and timeouts;
- :mod:`aqido.crawl` pages, fans out and crawls with anyio;
- :mod:`aqido.results` structures DICOM JSON into ``Study``/``Series``/``Instance``.

Sessions: without ``session=`` the client creates (lazily, or in
``__aenter__``) and owns an :class:`aiohttp.ClientSession` whose connection
pool matches ``max_concurrency``, and closes it exactly once
(:meth:`AsyncQidoRS.close` is idempotent).  A borrowed session is never closed.
The owned session's cookies stay with the service's origin, and
:meth:`AsyncQidoRS.close` cancels whatever is in flight.  A client belongs to
the event loop it was first used in: a call from another one (a second
``asyncio.run``) raises :class:`~aqido.errors.ClientClosedError`.

Every request of a client, whatever method issued it, holds one slot of a
single :class:`~aqido._slots.Slots` of ``max_concurrency`` slots, or, with
``max_concurrency="auto"``, of one :class:`~aqido.concurrency.AdaptiveLimiter`
whose number of slots follows what the server shows (:mod:`aqido.adaptive`).

One request, the code every search, page and crawl runs (credentials, TLS and
proxies, retries, timeouts, redirects and their credential rules, the response
size bound, re-sends), is :class:`~aqido._requests.RequestPath` in
:mod:`aqido._requests`, whose docstring gives its rules against hostile or
broken servers (docs/security.md); the one aiohttp call is its ``_request``.

It is one module because the client's state (the session and its lifecycle,
the client-wide limit on requests in flight, the server's caps it learns), the
constructor that validates it and the methods built on it (search, paging, many
searches, crawl) are one object's.  Its parts with a concern of their own sit
beside it: the request path in :mod:`aqido._requests`, searches planned with a
server profile in :mod:`aqido._planned`, the dicomweb-client names in
:mod:`aqido._dicomweb` (three mixins of ``AsyncQidoRS``), and the stateless
HTTP details in :mod:`aqido._http`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeAlias

import aiohttp
import attrs
from yarl import URL

from aqido import __version__
from aqido._caps import Caps, check_server_limit
from aqido._dicomweb import DicomwebMethods
from aqido._http import OriginCookieJar, SSLOption, check_headers, ssl_option
from aqido._planned import PlannedSearch
from aqido._proxies import Proxy, checked_trust_env
from aqido._requests import MAX_REDIRECTS as MAX_REDIRECTS
from aqido._requests import RequestPath, _State
from aqido._requests import _feedback as _feedback
from aqido._search_results import SearchResults as SearchResults
from aqido._slots import Slots
from aqido.errors import (
    ClientClosedError,
    UnanswerableQueryError,
    redact_url,
)
from aqido.protocol import ACCEPT, QidoResponse, rows
from aqido.query import (
    BaseQuery,
    HierarchicalQuery,
    QueryLevel,
    ensure_query_type,
)
from aqido.results import Study, structure
from aqido.retry import Retry, Timeout

if TYPE_CHECKING:  # pragma: no cover - imported where used: a plain search needs none of them
    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

    from aqido.checkpoint import CrawlCheckpoint
    from aqido.concurrency import AdaptiveLimiter
    from aqido.profile import ServerProfile
    from aqido.progress import CrawlProgress
    from aqido.stats import CrawlStats

logger = logging.getLogger("aqido")
#: Where a profile's "not the standard's answer" warnings go (the CLI prints them).
plan_logger = logging.getLogger("aqido.plan")


#: A callable returning fresh request headers (e.g. ``{"Authorization": "Bearer ..."}``),
#: sync or async; it is called for every request.
HeaderFactory = Callable[[], Mapping[str, str] | Awaitable[Mapping[str, str]]]

#: What ``auth=`` accepts: basic auth as ``(user, password)`` or :class:`aiohttp.BasicAuth`,
#: a bearer token, or a header factory.
Auth = tuple[str, str] | aiohttp.BasicAuth | str | HeaderFactory

#: Default number of requests in flight per client.
DEFAULT_MAX_CONCURRENCY = 8
#: Default ceiling of ``max_concurrency="auto"``.
DEFAULT_MAX_CONCURRENCY_LIMIT = 64
#: Default time limits: 60 s per request, 10 s to connect, no overall limit.
DEFAULT_TIMEOUT = Timeout()
#: Default retry policy: up to 4 attempts within 60 s, backoff from 0.5 s, Retry-After honoured.
DEFAULT_RETRY = Retry()
#: Default largest response body, in bytes after decompression (256 MiB).
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024

#: What ``profile=`` accepts: a :class:`~aqido.profile.ServerProfile`, ``"auto"`` (probe
#: the server once, before the first search) or the path of a profile's JSON file.
ProfileSource: TypeAlias = "ServerProfile | str | os.PathLike[str]"


def _check_max_concurrency(value: object, name: str = "max_concurrency") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, not {value!r}")


def _check_max_response_bytes(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_response_bytes must be a positive int or None, not {value!r}")
    return value


def _parse_service_url(url: str) -> URL:
    """The client's ``url`` parsed, or a ``ValueError`` that quotes it without its credentials.

    yarl (and urllib under it) quote the URL's netloc, password included, when
    they refuse it (``http://user:pw@℀.example/``); that error is not chained.
    """
    try:
        parsed = URL(url)
        parsed.host  # noqa: B018 - decoded here, where its error is caught (`xn--`)
    except ValueError as exc:  # UnicodeError too
        text = str(url)
        userinfo = text.partition("//")[2].partition("/")[0].rpartition("@")[0]
        password = userinfo.partition(":")[2]
        reason = str(exc)
        if (userinfo and userinfo in reason) or (password and password in reason):
            reason = "the reason is not shown: it quotes the URL's credentials"
        shown = redact_url(text)
        if "@" in shown:  # `http://u:pa/ss@host/`: a '/' in a password, not cut: no URL shown
            raise ValueError(f"url is not a valid URL ({reason})") from None
        raise ValueError(f"url is not a valid URL ({reason}): {shown!r}") from None
    return parsed


class AsyncQidoRS(PlannedSearch, DicomwebMethods, RequestPath):
    """An asynchronous QIDO-RS (DICOMweb search) client.

    Arguments:
        url: the QIDO-RS service base, e.g. ``"http://127.0.0.1:8042/dicom-web"``
            (a trailing slash is fine).  ``user:password@`` in it becomes basic auth
            and is removed from every URL the client logs or reports.
        session: an :class:`aiohttp.ClientSession` to use; the caller keeps owning
            it (the client never closes it).  Default: the client creates one,
            with a connection pool of ``max_concurrency``, and closes it in
            :meth:`close` / ``async with``.  A redirect to another origin is sent
            through its connector without its ``auth=``, default headers, cookies or
            middlewares.  ``ValueError`` if its ``auth=`` meets the client's
            credentials; :class:`~aqido.errors.ProxyConfigError` (also a ``ValueError``)
            if its default headers would go to an https proxy (its own ``proxy=``: when
            the client is made; one from the environment: by each request).
        auth: basic auth as ``(user, password)`` (or an :class:`aiohttp.BasicAuth`),
            a bearer token (``str``), or a callable
            (sync or async) returning headers for each request, e.g. a fresh
            ``{"Authorization": "Bearer ..."}``; with a callable, a 401 answer
            calls it again and retries once.  Credentials never appear in
            ``repr``, logs or exception messages.
        headers: extra headers for every request.
        timeout: a :class:`~aqido.retry.Timeout`, a number (seconds per request),
            or ``None`` for no limits.
        retries: a :class:`~aqido.retry.Retry`, an int (retries after the first
            attempt), or ``None``/``0`` to disable retries.
        max_concurrency: requests in flight at once, for the whole client (all
            searches, pages and crawls share this limit); ``"auto"`` adapts it to
            the server (latency against the best seen, throughput, push-back;
            see ``docs/concurrency.md``), between 1 and ``max_concurrency_limit``.
        max_concurrency_limit: the ceiling of ``max_concurrency="auto"`` (default 64).
        server_limit: the server's cap on results per response, if known (an
            int, or by level: ``{"STUDY": 10, "SERIES": 10, "INSTANCE": 7}``).
            Without it, a silent cap is found by one follow-up request when an
            answer is as large as a cap would leave it (see
            :meth:`iter_search`) and then kept for the client's lifetime; a
            known cap saves that request and also covers servers that apply the
            cap before ``offset`` (Orthanc's ``LimitFindResults``).
        permissive_uid: ``True`` for an archive whose UIDs do not conform to
            PS3.5 (leading zeros, letters): the queries the client builds (from
            ``search_for_*`` arguments, dicts, dicomtrolley queries, and the
            series and instance queries of a crawl or a walk from the UIDs the
            server returns) accept any UID :func:`~aqido.query.is_permissive_uid`
            accepts: 1 to 128 letters, digits, ``.``, ``-``, ``_`` or ``~``.
            An aqido query you build yourself stays as strict as you built it
            (pass it ``permissive_uid=True`` too).  Default ``False``: UIDs
            must be valid DICOM UIDs.
        max_response_bytes: the largest response body accepted, counted after
            decompression (default 256 MiB; ``None``: no limit).  A larger one
            raises :class:`~aqido.errors.ResponseTooLargeError` as soon as the
            limit is passed, so at most about ``max_concurrency`` times this
            many body bytes are held at once.
        ssl: TLS verification: ``None``/``True`` (the system's CAs), a CA bundle
            (a PEM file or directory path), an :class:`ssl.SSLContext` (e.g. with
            a client certificate loaded), or ``False`` (no verification: test
            servers only).
        trust_env: take proxies from the environment (``HTTPS_PROXY``,
            ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), as requests and httpx
            do.  Loopback addresses are never proxied.
        profile: how the server behaves (a :class:`~aqido.profile.ServerProfile`,
            the path of one saved as JSON, or ``"auto"``: :meth:`probe` the server
            once, before the first search).  With a profile, searches return the
            answer PS3.4/PS3.18 define even where the server does not give it:
            keys the server cannot match are matched locally, lists it cannot
            OR are fanned out, relational paths it lacks are walked (see
            :mod:`aqido.plan` and the "Servers and profiles" docs page).
            ``None`` (default): queries are sent as they are.  A profile file
            that cannot be read raises ``OSError``, a malformed one ``ValueError``.
        pn_case_sensitive: whether person names match case-sensitively in the
            answers aqido corrects: ``True`` (default) as PS3.4's single value
            and wildcard matching are, ``False`` without regard to case, ``None``
            as the server does it (its profile; PS3.4 lets a server ignore case
            for PN).  Other strings always match case-sensitively.
        strict_matching: when the server cannot give the standard's answer to
            a query (e.g. a key it neither matches nor returns), raise
            :class:`~aqido.errors.UnanswerableQueryError` instead of returning
            results that carry an ``aqido`` warning in ``.warnings``.
    """

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        auth: Auth | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout | float | None = DEFAULT_TIMEOUT,
        retries: Retry | int | None = DEFAULT_RETRY,
        max_concurrency: int | Literal["auto"] = DEFAULT_MAX_CONCURRENCY,
        server_limit: int | Mapping[Any, int] | None = None,
        permissive_uid: bool = False,
        profile: ProfileSource | None = None,
        pn_case_sensitive: bool | None = True,
        strict_matching: bool = False,
        max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
        ssl: SSLOption = None,
        trust_env: bool = True,
        max_concurrency_limit: int = DEFAULT_MAX_CONCURRENCY_LIMIT,
    ) -> None:
        parsed = _parse_service_url(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            shown = str(parsed.with_user(None) if parsed.is_absolute() else parsed)
            if "@" in shown:  # `http:/user:password@host`: userinfo yarl did not see as one
                raise ValueError(
                    "url must be an http(s) URL with a host (not shown: it may hold credentials)"
                )
            raise ValueError(f"url must be an http(s) URL with a host, not {shown!r}")
        if parsed.query_string or parsed.fragment:
            raise ValueError("url must be the service base, without a query string or fragment")
        if parsed.user is not None and auth is None:
            auth = (parsed.user, parsed.password or "")
        if (
            isinstance(auth, tuple)
            and not isinstance(auth, aiohttp.BasicAuth)
            and not (len(auth) == 2 and all(isinstance(part, str) for part in auth))
        ):
            raise ValueError("basic auth must be a (user, password) tuple of strings")
        if max_concurrency != "auto":
            _check_max_concurrency(max_concurrency)
        _check_max_concurrency(max_concurrency_limit, "max_concurrency_limit")
        if not isinstance(permissive_uid, bool):
            raise ValueError(f"permissive_uid must be True or False, not {permissive_uid!r}")
        self.permissive_uid = permissive_uid
        self.max_response_bytes = _check_max_response_bytes(max_response_bytes)
        self._ssl = ssl_option(ssl)
        self.trust_env = checked_trust_env(parsed, trust_env)
        self._proxies: dict[URL, Proxy] = {}
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._closing: set[asyncio.Task[Any]] = set()  # cancelled by close()
        self.url = str(parsed.with_user(None))
        self._origin = parsed.origin()
        self.max_concurrency: int | Literal["auto"] = max_concurrency
        self.max_concurrency_limit = max_concurrency_limit
        self.server_limit = check_server_limit(server_limit)
        # What is known of the server's caps: configured, and learned by the first follow-up
        # request that finds a silent cap (kept for the client's lifetime).
        self._caps = Caps(self.server_limit)
        self.timeout = Timeout.coerce(timeout)
        self.retry = Retry.coerce(retries)
        self._auth = auth
        self._plain_headers = {"Accept": ACCEPT, "User-Agent": f"aqido/{__version__}"}
        self._headers = {**self._plain_headers, **(headers or {})}
        self._borrow(session, parsed, auth, headers)
        # Headers are the same for every request unless auth is a callable: built once.
        self._fixed_headers: dict[str, str] | None = None
        if auth is None or isinstance(auth, tuple | str):  # aiohttp.BasicAuth is a tuple
            try:
                self._fixed_headers = self._header_values()
            except UnicodeError:  # its message would quote the password
                raise ValueError(
                    "auth: the user or password cannot be encoded (a lone surrogate? an "
                    "aiohttp.BasicAuth takes latin-1 only); it is not shown here"
                ) from None
        check_headers(self._headers if self._fixed_headers is None else self._fixed_headers)
        self._state = _State.UNOPENED
        #: The event loop the client was opened in: its session and connections belong to it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limiter: Slots | AdaptiveLimiter | None = None
        self._client_timeout = aiohttp.ClientTimeout(
            total=self.timeout.request, sock_connect=self.timeout.connect
        )
        if pn_case_sensitive is not None and not isinstance(pn_case_sensitive, bool):
            raise ValueError(
                f"pn_case_sensitive must be None, True or False, not {pn_case_sensitive!r}"
            )
        self.pn_case_sensitive = pn_case_sensitive
        self.strict_matching = bool(strict_matching)
        self._auto_profile = isinstance(profile, str) and profile == "auto"
        self._profile: ServerProfile | None = None
        if profile is not None and not self._auto_profile:
            from aqido.profile import ServerProfile  # only with a profile: keeps the start fast

            if isinstance(profile, ServerProfile):
                self._profile = profile
            elif not isinstance(profile, str | os.PathLike):
                raise ValueError(
                    f"profile must be a ServerProfile, 'auto' or a path, not {profile!r}"
                )
            else:
                self._profile = ServerProfile.load(profile)
        self._profile_lock: asyncio.Lock | None = None

    def __reduce__(self) -> NoReturn:
        """Refused: a pickle would hold the credentials (a file, another process) and a session."""
        raise TypeError(
            "an AsyncQidoRS cannot be pickled (it holds credentials and a session); "
            "send its URL and options and make a client where it is used"
        )

    def __repr__(self) -> str:
        auth = ""
        if isinstance(self._auth, tuple | aiohttp.BasicAuth):
            auth = ", auth=<basic>"
        elif isinstance(self._auth, str):
            auth = ", auth=<bearer>"
        elif self._auth is not None:
            auth = ", auth=<callable>"
        session = "" if self._owns_session else ", session=<borrowed>"
        return (
            f"AsyncQidoRS({self.url!r}{auth}{session}, max_concurrency={self.max_concurrency!r}, "
            f"state={self._state.name.lower()})"
        )

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is _State.OPENED:
            raise RuntimeError("Cannot open a client instance more than once.")
        if self._state is _State.CLOSED:
            raise ClientClosedError("Cannot reopen a client instance once it has been closed.")
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client (and its own session, never a borrowed one); safe to call again.

        Requests in flight or waiting for a slot are cancelled at once: their
        calls raise :class:`~aqido.errors.ClientClosedError`, as does any later call.
        """
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        self._cancel_in_flight()
        session, self._session = self._session, None
        if self._owns_session and session is not None and not session.closed:
            await session.close()
        plain, self._plain_session = self._plain_session, None
        if plain is not None:  # redirects to another origin with a borrowed session
            await plain.close()  # not its connector: the borrowed session's

    def _cancel_in_flight(self) -> None:
        """Cancel every request in flight or waiting for a slot (they raise ClientClosedError).

        Each request registers its task in ``_in_flight`` for as long as it runs
        (:meth:`_fetch`); its cancellation, when this asked for it, becomes a
        :class:`~aqido.errors.ClientClosedError` there.  (A plain set and
        ``Task.cancel``, not a cancel scope per request: cheaper on every request,
        and a plain search never loads anyio's asyncio backend.)
        """
        current = asyncio.current_task()
        for task in list(self._in_flight):
            if task is not current and not task.done():
                self._closing.add(task)
                task.cancel()

    @property
    def concurrency_limit(self) -> int:
        """Requests allowed in flight now: ``max_concurrency``, or the adaptive limit."""
        limiter = self._limiter
        if limiter is not None and not isinstance(limiter, Slots):  # adaptive
            return limiter.limit
        if self.max_concurrency == "auto":
            from aqido.adaptive import AdaptiveLimit  # only with "auto": keeps the start fast

            return AdaptiveLimit(ceiling=self.max_concurrency_limit).limit
        return self.max_concurrency

    @property
    def adaptive_limiter(self) -> AdaptiveLimiter | None:
        """The adaptive limiter (``max_concurrency="auto"``, once opened), else ``None``."""
        limiter = self._limiter
        return None if limiter is None or isinstance(limiter, Slots) else limiter

    @property
    def _slots(self) -> int:
        """The most requests that can ever be in flight (pool size, crawl window)."""
        if self.max_concurrency == "auto":
            return self.max_concurrency_limit
        return self.max_concurrency

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._state is _State.CLOSED

    def _open(self) -> aiohttp.ClientSession:
        if self._state is _State.CLOSED:
            raise ClientClosedError("This client has been closed; create a new AsyncQidoRS.")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:  # aiohttp raised a bare RuntimeError (or used a dead loop)
            raise ClientClosedError(
                "This client was opened in another event loop (an earlier asyncio.run()?), "
                "and its connections belong to that one; create an AsyncQidoRS in each event "
                "loop (async with), or use the blocking QidoRS."
            )
        self._state = _State.OPENED
        if self._limiter is None:
            if self.max_concurrency == "auto":
                from aqido.adaptive import AdaptiveLimit  # only with "auto": keeps the start fast
                from aqido.concurrency import AdaptiveLimiter

                self._limiter = AdaptiveLimiter(
                    AdaptiveLimit(ceiling=self.max_concurrency_limit, created=time.monotonic())
                )
            else:
                self._limiter = Slots(self.max_concurrency)
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._slots, limit_per_host=self._slots)
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=OriginCookieJar(self._origin)
            )
        return self._session

    # --- searching --------------------------------------------------------------------------

    def _query(self, query: Any) -> BaseQuery:
        """``ensure_query_type(query)``, permissive about UIDs if the client is."""
        return ensure_query_type(query, permissive_uid=self.permissive_uid)

    async def probe(self) -> ServerProfile:
        """Measure how this archive behaves: a :class:`~aqido.profile.ServerProfile`.

        At most 66 small read-only requests, at most 4 in flight, using the
        archive's own studies (see :mod:`aqido.probe`; ``aqido probe URL`` prints
        every finding with the request that showed it).  Capabilities the
        archive's data cannot decide keep the standard default and are named in
        the profile's ``notes``.
        """
        from aqido.probe import probe_report

        return (await probe_report(self)).profile

    async def search_raw(self, query: Any) -> QidoResponse:
        """Run one search and return the decoded DICOM JSON and headers, unstructured.

        For power users: :class:`~aqido.protocol.QidoResponse` has ``.items``
        (the DICOM JSON datasets as the server sent them), ``.headers``,
        ``.warnings``, ``.status`` and ``.url``.
        """
        return await self._fetch(self._query(query))

    async def search(self, query: Any) -> SearchResults[Any]:
        """Run one search (one request) and return typed results.

        ``query`` is an aqido query, a dicomtrolley query, or a dict of query
        fields.  Returns :class:`SearchResults`, a list of ``Study``, ``Series``
        or ``Instance`` by the query level; empty for 204 or ``[]``.  If the
        server truncated the answer, ``.truncated`` is true (and a warning is
        logged): use :meth:`iter_search` to get everything.
        """
        return await self._search(self._query(query), None)

    async def _search(self, query: BaseQuery, limiter: Slots | None) -> SearchResults[Any]:
        plan = await self._plan(query)
        if plan is not None:
            return await self._search_planned(plan, limiter, exhaustive=False)
        response = await self._fetch(query, limiter)
        if response.truncated:
            more = response.additional_results
            logger.warning(
                "the server truncated the results of %s (%s more): use iter_search to page",
                response.url,
                more if more is not None else "an unknown number of",
            )
        results = SearchResults(_structure(response, query.query_level), response=response)
        level, caps = query.query_level, self._caps
        caps.observe(level, len(rows(response)))
        results.possibly_truncated = caps.possibly_truncated(
            response, level, query.limit
        ) or caps.suspect(response, level, query.limit)
        return results

    async def iter_search(
        self, query: Any, *, page_size: int | None = None
    ) -> AsyncGenerator[Any, None]:
        """Yield every result of ``query``, paging with ``limit``/``offset`` as needed.

        The page size is ``page_size``, else the query's ``limit``; with neither,
        one request is made and paging continues only if the server signals
        truncation (a 299 ``Warning``), the answer is as large as the server's
        known cap (``server_limit``, or one learned earlier), or it looks like a
        silent cap (100, 200, 500, 1000 ... items, also short of a ``limit``
        sent): then one follow-up request at ``offset=len`` tells whether more
        exist, and a cap it finds is learned for the client's lifetime.  Stops
        on an empty page, 204 or a short page; a result seen before (same UID)
        is not yielded twice; a server that ignores ``offset`` raises
        :class:`~aqido.errors.InvalidResponseError` rather than looping, as does
        one whose page repeats a result that the next page brings back (a match
        may be out of reach; see :func:`~aqido.crawl.iter_pages`).  A guessed
        cap still in doubt after that is only logged as a warning (items are
        already yielded): ``search_for_*(get_remaining=True)`` sets
        ``possibly_truncated`` instead, and a crawl splits the query to check.
        """
        async with aclosing(self._iter_results(self._query(query), page_size, None)) as it:
            async for item in it:
                yield item

    async def _iter_results(
        self, query: BaseQuery, page_size: int | None, limiter: Slots | None
    ) -> AsyncGenerator[Any, None]:
        plan = await self._plan(query)
        if plan is not None:  # every match is needed before local filtering can cut the window
            results = await self._every_planned(plan, limiter, page_size)
            for result in results:
                yield result
            return
        from aqido._paging import iter_pages  # paging: not needed by a plain search's start

        pages = iter_pages(
            self._fetch, query, page_size=page_size, limiter=limiter, caps=self._caps
        )
        async with aclosing(pages):
            async for page in pages:
                for result in _structure(page.response, query.query_level, page.items):
                    yield result

    async def search_many(
        self, queries: Iterable[Any], *, max_concurrency: int | None = None
    ) -> list[SearchResults[Any]]:
        """Run many searches concurrently; return their results in the order given.

        At most ``max_concurrency`` (default: the client's) run at once, within
        the client-wide limit.  The first error cancels the other searches and
        is raised.
        """
        from aqido._tasks import search_many  # task groups: not needed by a plain search

        search, workers = self._bounded_search(max_concurrency)
        return await search_many(search, [self._query(q) for q in queries], workers=workers)

    async def iter_search_many(
        self, queries: Iterable[Any], *, max_concurrency: int | None = None
    ) -> AsyncGenerator[tuple[BaseQuery, SearchResults[Any]], None]:
        """Like :meth:`search_many`, but yield ``(query, results)`` as each search completes.

        The queries yielded are aqido queries (dicomtrolley ones are converted).
        Leaving the loop early cancels the remaining searches.
        """
        from aqido._tasks import iter_search_many  # not needed by a plain search

        search, workers = self._bounded_search(max_concurrency)
        pairs = iter_search_many(search, [self._query(q) for q in queries], workers=workers)
        async with aclosing(pairs):
            async for pair in pairs:
                yield pair

    def _bounded_search(
        self, max_concurrency: int | None
    ) -> tuple[Callable[[BaseQuery], Awaitable[SearchResults[Any]]], int]:
        limiter = self._operation_limiter(max_concurrency)

        async def search(query: BaseQuery) -> SearchResults[Any]:
            return await self._search(query, limiter)

        return search, max_concurrency or self._slots

    def _operation_limiter(self, max_concurrency: int | None) -> Slots | None:
        """An operation's own limit, or ``None`` when the client's already holds it to as few."""
        if max_concurrency is None:
            return None
        _check_max_concurrency(max_concurrency)
        if max_concurrency >= self._slots:
            return None  # never more in flight than the client allows anyway
        return Slots(max_concurrency)

    async def crawl(
        self,
        query: Any = None,
        *,
        depth: QueryLevel | str = QueryLevel.INSTANCE,
        max_concurrency: int | None = None,
        page_size: int | None = None,
        server_limit: int | Mapping[Any, int] | None = None,
        fail_fast: bool = False,
        partial: bool = False,
        stats: CrawlStats | None = None,
        checkpoint: str | os.PathLike[str] | CrawlCheckpoint | None = None,
        progress: bool | CrawlProgress | None = None,
    ) -> AsyncGenerator[Study, None]:
        """Walk studies → series → instances; yield each ``Study`` as soon as its subtree is done.

        ``query`` selects the studies (a study-level query; default: all
        studies).  Each study comes with ``.series`` attached and, at
        ``depth=QueryLevel.INSTANCE``, each series with ``.instances`` (tuples,
        as dicomtrolley's tree); ``depth=QueryLevel.SERIES`` stops at series.
        Studies are yielded in completion order, each once (by UID).

        Complete or an error: an answer that may be truncated (a 299 warning,
        a full page, or as many items as ``server_limit``, the server's cap
        per response: an int or ``{"STUDY": 10, "INSTANCE": 7}``; default: the
        client's ``server_limit``) is paged with
        ``offset``, and if the server does not honour it, the study query is
        split by StudyDate, StudyTime, then ModalitiesInStudy until every part
        fits (see docs/crawling.md for what cannot be reached);
        with a ``profile``, only by the keys the server matches
        (:func:`aqido.plan.split_keys`).

        Failures (nothing is lost silently): by default a part that still
        fails after the client's retries is recorded and the crawl goes on;
        after the last study, :class:`~aqido.errors.CrawlIncompleteError`
        lists every failed part (a study whose subtree failed is not yielded).
        ``partial=True`` ends normally instead, with the failures in
        ``stats.failures``.  ``fail_fast=True`` cancels the crawl at the first
        error and raises it as is.

        ``progress``: ``True`` shows a progress bar
        (:class:`~aqido.progress.TqdmProgress`, needs tqdm); a
        :class:`~aqido.progress.CrawlProgress` gets a call per completed study,
        series and instance, and ``close()`` at the end, however the crawl ends.
        ``stats``: a :class:`~aqido.stats.CrawlStats` updated live (requests,
        retries, pages, splits, items per level, failures, elapsed).
        ``checkpoint``: a JSONL file (path or
        :class:`~aqido.checkpoint.CrawlCheckpoint`) that receives every
        completed study; running the same crawl again with the same file
        resumes it, skipping the studies already written (they are not
        yielded again).  The file records this client's URL (without
        credentials): resuming it against another server raises
        :class:`~aqido.errors.CheckpointError` unless
        ``checkpoint=CrawlCheckpoint(path, force=True)``, and a second crawl
        writing the same file at the same time fails at once with it.

        Many requests are in flight (at most ``max_concurrency``, default the
        client's, within the client-wide limit) but only about twice that many
        studies are in progress at once, so memory is bounded by the in-flight
        work, not by the archive size.  ``page_size`` pages the study listing.
        Leaving the loop early (``break``, cancellation, timeout) cancels every
        request in flight.  For a clean early ``break``, wrap the iterator in
        :func:`contextlib.aclosing`.
        """
        # The crawl machinery is imported by the first crawl: a plain search needs none of it.
        from aqido.checkpoint import CrawlCheckpoint
        from aqido.crawl import Recorder, crawl
        from aqido.plan import split_keys
        from aqido.progress import CrawlProgress, make_progress
        from aqido.stats import CrawlStats

        try:
            limiter = self._operation_limiter(max_concurrency)
            base = HierarchicalQuery() if query is None else self._query(query)
            if self.permissive_uid and not base.permissive_uid:
                # The series and instance queries are built from the UIDs the server returns.
                base = attrs.evolve(base, permissive_uid=True)
            caps = self._caps if server_limit is None else Caps(server_limit)
            if checkpoint is not None and not isinstance(checkpoint, CrawlCheckpoint):
                checkpoint = CrawlCheckpoint(checkpoint)
            parts, keep = await self._crawl_plan(base)
        except BaseException:  # an argument refused, or planning failed: the crawl ended
            if isinstance(progress, CrawlProgress):
                progress.close()
            raise
        concurrency = max_concurrency or self._slots
        stats = stats if stats is not None else CrawlStats()

        record = Recorder(stats, make_progress(progress))

        fixed = None if self.max_concurrency == "auto" else self.max_concurrency
        on_retry = record.retry

        async def follow(q: BaseQuery, lim: Slots | None) -> QidoResponse:
            record.limit(self.concurrency_limit)
            try:
                return await self._fetch(q, lim, on_retry=on_retry)
            finally:
                record.limit(self.concurrency_limit)

        def fetch(q: BaseQuery, lim: Slots | None) -> Awaitable[QidoResponse]:
            if fixed is None:
                return follow(q, lim)
            # A fixed limit: nothing to follow, and no coroutine of our own per request.
            record.limit(fixed)
            return self._fetch(q, lim, on_retry=on_retry)

        def structure_items(
            response: QidoResponse, level: QueryLevel, items: list[dict[str, Any]]
        ) -> list[Any]:
            return _structure(response, level, items)

        studies = crawl(
            fetch,
            structure_items,
            base,
            depth=depth,
            # With "auto", twice the limit in force (not its ceiling): a study waiting
            # for a slot is memory held and work for the garbage collector, for nothing.
            window=(
                (lambda: 2 * self.concurrency_limit)
                if max_concurrency is None and self.max_concurrency == "auto"
                else 2 * concurrency
            ),
            page_size=page_size,
            limiter=limiter,
            caps=caps,
            stats=record,
            fail_fast=fail_fast,
            partial=partial,
            checkpoint=checkpoint,
            split_keys=split_keys(self._profile),
            server=self.url,
            parts=parts,
            keep=keep,
        )
        async with aclosing(studies):
            async for study in studies:
                yield study

    async def _crawl_plan(
        self, base: BaseQuery
    ) -> tuple[tuple[BaseQuery, ...] | None, Callable[[list[dict[str, Any]]], list[Any]] | None]:
        """What a crawl sends instead of ``base``, and keeps of it, for the server's profile.

        ``(None, None)``: ``base`` goes out as it is.  Otherwise the plan's study
        queries (one, or a fanned-out list) and a filter matching the rest locally,
        as :meth:`search` does; its warnings are logged (``strict_matching`` raises).
        """
        plan = await self._plan(attrs.evolve(base, limit=0, offset=0))
        if plan is None:
            return None, None
        if plan.walk is not None or any(
            q.query_level is not QueryLevel.STUDY for q in plan.requests
        ):  # pragma: no cover - the planner walks only relational queries
            reason = f"crawl sends {base} as it is: its plan is not a study listing"
            if self.strict_matching:
                raise UnanswerableQueryError([reason], query=base)
            plan_logger.warning("%s", reason)
            return None, None
        for warning in plan.warnings:
            plan_logger.warning("%s", warning)
        noted: set[str] = set()

        def keep(items: list[dict[str, Any]]) -> list[Any]:
            kept, notes = plan.finish(items)
            for note in notes:
                if note not in noted:
                    noted.add(note)
                    plan_logger.warning("%s", note)
            return list(kept)

        return plan.requests, keep

    async def find_studies(self, query: Any) -> SearchResults[Study]:
        """Search, and return the results grouped into studies (dicomtrolley's ``find_studies``).

        Whatever the query level, each returned ``Study`` has the matching
        series attached as ``.series`` and instances as ``series.instances``,
        as dicomtrolley's ``QidoRS.find_studies`` returns them.  The list is a
        :class:`SearchResults` carrying the search's warnings and headers.
        """
        from aqido._tree import build_tree

        found = await self.search(query)
        studies: SearchResults[Study] = SearchResults(build_tree(found))
        studies.warnings, studies.headers = found.warnings, found.headers
        studies.truncated, studies.additional_results = found.truncated, found.additional_results
        studies.possibly_truncated = found.possibly_truncated
        return studies


def _structure(
    response: QidoResponse, level: QueryLevel, items: list[dict[str, Any]] | None = None
) -> list[Any]:
    """Structure ``items`` (default: the response's) into typed results, naming the URL on error."""
    chosen = rows(response) if items is None else items
    return structure(chosen, level, url=response.url, status=response.status)

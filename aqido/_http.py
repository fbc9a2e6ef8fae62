"""HTTP details of the client that hold no state: error mapping, TLS options, proxies, cookies.

Used only by the client: :mod:`aqido.client` and its request path, :mod:`aqido._requests`
(which sends the requests).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import os
import ssl as _ssl
import urllib.request
from collections.abc import Mapping, Sequence
from http.cookies import BaseCookie, SimpleCookie
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.http_exceptions import (
    BadStatusLine,
    ContentEncodingError,
    ContentLengthError,
    HttpProcessingError,
    TransferEncodingError,
)
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from aqido._lazy import lazy_pattern
from aqido._search_results import SearchResults as SearchResults
from aqido.errors import (
    ProxyConfigError,
    RequestTimeoutError,
    TLSError,
    TransportError,
    _without_secret_headers,
    excerpt,
)

if TYPE_CHECKING:  # pragma: no cover
    pass


#: What the client's ``ssl=`` accepts: an SSLContext, a CA bundle (file or directory),
#: ``True``/``None`` (verify with the system's CAs) or ``False`` (no verification).
SSLOption = _ssl.SSLContext | str | os.PathLike[str] | bool | None

STALE: tuple[type[Exception], ...] = (
    aiohttp.ServerDisconnectedError,
    getattr(aiohttp, "ClientConnectionResetError", aiohttp.ServerDisconnectedError),
)


class map_aiohttp_errors:  # lower case: used like a function, `with map_aiohttp_errors(url):`
    """Translate aiohttp and timeout exceptions into aqido's, chained (``raise ... from``).

    A class, not a ``@contextmanager`` generator: it wraps every request, and this
    costs a fraction of a generator-based context manager on the path where nothing fails.
    """

    __slots__ = ("route", "url")

    def __init__(self, url: object, route: Proxy | None = None) -> None:
        self.url = url
        self.route = route  # the proxy aqido chose (None: the session's, or not known)

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        url = self.url
        if isinstance(exc, aiohttp.ClientResponseError):
            _forget_secret_headers(exc)
        if isinstance(exc, asyncio.TimeoutError | TimeoutError):  # aiohttp.ServerTimeoutError too
            raise RequestTimeoutError(f"request timed out ({type(exc).__name__})", url=url) from exc
        if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ServerFingerprintMismatch):
            reason = (
                getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None) or exc
            )
            raise TLSError(f"TLS failed: {reason} ({_tls_hint(exc, reason)})", url=url) from exc
        if isinstance(exc, aiohttp.ClientHttpProxyError) and exc.status == 407:  # CONNECT
            raise proxy_refused(url, self.route) from exc
        if isinstance(exc, aiohttp.ClientPayloadError):
            raise TransportError(_unfinished_body(exc), url=url) from exc
        if isinstance(exc, aiohttp.ClientResponseError):
            parser_error = _head_parser_error(exc)
            if parser_error is not None:
                raise TransportError(_unparsable_head(parser_error), url=url) from exc
        if isinstance(exc, aiohttp.ClientError):  # cut: it may name a redirect's 6 KB host
            text = excerpt(f"{type(exc).__name__}: {exc}", _AIOHTTP_TEXT)
            raise TransportError(text, url=url) from exc
        if isinstance(exc, UnicodeError):  # the resolver's IDNA encoding: `pacs..example.org`
            host = getattr(url, "raw_host", None)
            raise TransportError(
                f"invalid host name {host!r} ({exc})" if host else f"invalid host name ({exc})",
                url=url,
            ) from exc


def _tls_hint(exc: BaseException, reason: object) -> str:
    """What to check after a TLS failure: the CA for a certificate, else the port or the pin.

    The private-CA hint is for a certificate that did not verify; plain HTTP on the
    port (``WRONG_VERSION_NUMBER``) or a handshake the server broke off (it wants a
    client certificate?) is another story.
    """
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return "the certificate is not the one pinned with ssl=aiohttp.Fingerprint(...)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError) or isinstance(
        reason, _ssl.SSLCertVerificationError
    ):
        return "a private CA? give its bundle with ssl= or --cacert"
    return (
        "is it an HTTPS port? does the server want a client certificate (--cert, or an "
        "ssl= context with one)?"
    )


def _forget_secret_headers(exc: aiohttp.ClientResponseError) -> None:
    """Drop the request's headers and the response's secret ones from an aiohttp error aqido chains.

    aiohttp keeps the request's in ``request_info`` (its ``repr`` shows them): the
    ``Authorization`` of the client, a ``Cookie``, a proxy's credentials, a
    caller's API-key header; and, when it had them, the response's in ``headers``:
    a ``Set-Cookie``, an ``Authentication-Info`` (those
    :class:`~aqido.errors.HTTPStatusError` leaves out).  The error stays chained
    for debugging, minus them.
    """
    info = exc.request_info
    if info is not None and info.headers:
        exc.request_info = info._replace(headers=CIMultiDictProxy(CIMultiDict()))
    received = exc.headers
    if received is not None:
        kept = _without_secret_headers(received.items())
        if len(kept) < len(received):  # left as it came when it held no secret
            exc.headers = CIMultiDictProxy(CIMultiDict(kept))


#: Longest text of aiohttp's own kept in a TransportError's message, in characters.
_AIOHTTP_TEXT = 300

#: How aiohttp's parsers (C and Python) count a body cut short, in their ContentLengthError.
_RECEIVED = lazy_pattern(globals(), "_RECEIVED", r"received (\d+) of (\d+) bytes")


#: The characters of an HTTP header name (RFC 9110 ``token``).
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _unsafe_value(value: str) -> bool:
    """Whether a header value holds a control character but HTAB (C0, DEL, C1), a lone surrogate."""
    if value.isprintable():  # nearly every value: one call
        return False
    return any(
        c != "\t" and (c < " " or "\x7f" <= c <= "\x9f" or "\ud800" <= c <= "\udfff") for c in value
    )


def check_headers(headers: Mapping[str, str]) -> None:
    """Refuse a header no request can carry, with a ``ValueError`` that never shows its value.

    For the client's fixed headers (``headers=`` and the ``Authorization`` of a
    fixed ``auth=``), checked once when it is made: aiohttp would refuse a CR or
    LF only when a request is sent (a plain ``ValueError``), send a name holding
    a colon as another header (``X-Key: a`` as ``X-Key``), and drop a lone
    surrogate from a value.
    """
    for name, value in headers.items():
        if not isinstance(name, str):
            raise ValueError(f"headers: a header name must be a str, not {type(name)}")
        if not name or not all(c in _TOKEN_CHARS for c in name):
            start = name[: next(i for i, c in enumerate(name + " ") if c not in _TOKEN_CHARS)]
            shown = f" starting {excerpt(start, 80)!r}" if start else ""
            raise ValueError(
                f"headers: the header name{shown} is not an HTTP token (a colon, a space?); "
                "the rest of it is not shown here"
            )
        if not isinstance(value, str):
            raise ValueError(f"headers: the value of {name!r} must be a str, not {type(value)}")
        if _unsafe_value(value):
            raise ValueError(
                f"the {name!r} header (headers= or auth=) holds a control character (a line "
                "break?) or a lone surrogate; its value is not shown here"
            )


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its ``__cause__``s, nearest first (aiohttp chains its parser's error)."""
    chain = [exc]
    while (cause := chain[-1].__cause__) is not None and len(chain) < 8:
        chain.append(cause)
    return chain


def _unfinished_body(exc: aiohttp.ClientPayloadError) -> str:
    """What went wrong reading a body, in the user's terms: cut short after N of M bytes...

    The numbers are aiohttp's parser's (its ``ContentLengthError`` says them); a
    message without them still says the body was cut short.  Another payload
    error (a decompression failure) keeps aiohttp's words, as an escaped excerpt.
    """
    chain = _chain(exc)
    if any(isinstance(e, ContentLengthError) for e in chain):
        for error in chain:
            found = _RECEIVED.search(str(error))
            if found is not None:
                received, declared = found.groups()
                return (
                    f"the response was cut short: it ended after {received} of the {declared} "
                    "bytes its Content-Length announced (the connection closed)"
                )
        return (
            "the response was cut short: it ended before the bytes its Content-Length "
            "announced (the connection closed)"
        )
    if any(isinstance(e, TransferEncodingError) for e in chain):
        return (
            "the response was cut short: its chunked body ended before its last chunk "
            "(the connection closed)"
        )
    return f"incomplete response body ({excerpt(str(exc))!r})"


def _head_parser_error(exc: aiohttp.ClientResponseError) -> HttpProcessingError | None:
    """aiohttp's parser's error if ``exc`` says the response's status line or headers did not parse.

    aiohttp raises a plain ``ClientResponseError`` (status 400: its parser's code,
    not the server's) from an ``HttpProcessingError``, itself chained to the
    parser's own (``BadStatusLine``, ``LineTooLong``, ``InvalidHeader``...).
    """
    cause = exc.__cause__
    if not isinstance(cause, HttpProcessingError):
        return None
    inner = cause.__cause__
    return inner if isinstance(inner, HttpProcessingError) else cause


def _unparsable_head(parser_error: HttpProcessingError) -> str:
    """A response head aiohttp could not parse, in the user's terms, with its words as an excerpt.

    Bytes where a status line should be are, on a keep-alive connection, nearly always the
    rest of a body longer than its ``Content-Length`` (this response's, when it came in the
    same read, or an earlier one's): aiohttp takes the first ``Content-Length`` bytes as the
    body and the rest as the start of the next response.  aiohttp's message quotes the
    bytes; it is shown as the ``repr`` of its excerpt, as :class:`~aqido.errors.HTTPStatusError`
    shows a body: no control character of the server's reaches a terminal.  So are a
    Content-Encoding it cannot decode and chunk framing it cannot read (the same parser's).
    """
    detail = excerpt(parser_error.message).removesuffix(" ^")  # llhttp's pointer to the byte
    if isinstance(parser_error, ContentEncodingError):  # a well-formed head, an unknown coding
        return f"the server sent a body in a Content-Encoding aqido cannot decode ({detail!r})"
    if isinstance(parser_error, TransferEncodingError) or "chunk" in detail.lower():  # llhttp
        return f"the server sent a malformed chunked body ({detail!r})"
    if isinstance(parser_error, BadStatusLine):
        return (
            f"the server sent bytes that are not an HTTP response ({detail!r}): most likely "
            "the rest of a body longer than its Content-Length, this response's or an earlier "
            "one's on the same keep-alive connection"
        )
    return f"the server sent a malformed HTTP response head ({detail!r})"


def is_unparsable_head(error: TransportError) -> bool:
    """Whether ``error`` is aiohttp's failure to parse a response's status line or headers.

    The connection is closed by aiohttp then (never reused), and the request may
    be re-sent on another: on a keep-alive connection the bytes are most often
    left over from an earlier response longer than its ``Content-Length``.
    """
    cause = error.__cause__
    if not isinstance(cause, aiohttp.ClientResponseError):
        return False
    parser_error = _head_parser_error(cause)
    # A Content-Encoding aiohttp cannot decode (`br` without Brotli) is no spoilt
    # connection: another one brings the same body.
    return parser_error is not None and not isinstance(parser_error, ContentEncodingError)


def is_stale_connection(error: TransportError) -> bool:
    cause = error.__cause__
    if isinstance(cause, STALE):
        return True
    return isinstance(cause, aiohttp.ClientOSError) and cause.errno in (
        errno.ECONNRESET,
        errno.EPIPE,
    )


def ssl_option(value: SSLOption) -> _ssl.SSLContext | bool:
    """What aiohttp's ``ssl=`` wants for the client's ``ssl=``: a context, True or False."""
    if value is None or value is True:
        return True
    if value is False or isinstance(value, _ssl.SSLContext):
        return value
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        try:
            if os.path.isdir(path):
                return _ssl.create_default_context(capath=path)
            return _ssl.create_default_context(cafile=path)
        except (OSError, _ssl.SSLError) as exc:
            raise ValueError(f"ssl: cannot load the CA bundle {path!r} ({exc})") from None
    raise ValueError(
        f"ssl must be an ssl.SSLContext, a CA bundle path, True or False, not {value!r}"
    )


def without_client_certificate(value: _ssl.SSLContext | bool) -> _ssl.SSLContext | bool:
    """The ``ssl=`` for a redirect to another origin: the same trust, no client certificate.

    A client certificate (mutual TLS) is a credential: like the ``Authorization``
    header it goes only to the service's origin.  An ``ssl.SSLContext`` can neither
    say whether it holds one nor give it up, so another origin gets a new context
    that verifies as ``value`` does: its ``verify_mode``, ``check_hostname``,
    ``verify_flags``, TLS versions and the CA certificates it has loaded (the
    system's when it lists none: they come from a directory, read as used).
    """
    if not isinstance(value, _ssl.SSLContext):
        return value  # True (aiohttp's default context) or False: no client certificate
    plain = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    plain.check_hostname = False  # first: verify_mode cannot be CERT_NONE while it is set
    plain.verify_mode = value.verify_mode
    plain.check_hostname = value.check_hostname
    plain.verify_flags = value.verify_flags
    plain.minimum_version = value.minimum_version
    plain.maximum_version = value.maximum_version
    authorities = value.get_ca_certs(binary_form=True)
    if authorities:
        plain.load_verify_locations(cadata=b"".join(authorities))
    elif value.verify_mode != _ssl.CERT_NONE:
        plain.load_default_certs()
    return plain


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (never sent through a proxy)."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


#: A proxy and the headers for it (``Proxy-Authorization``), or ``(None, None)``: direct.
Proxy = tuple[URL | None, Mapping[str, str] | None]


def env_proxy(url: URL) -> Proxy:
    """The proxy the environment gives for ``url`` (``HTTP(S)_PROXY``, ``NO_PROXY``), as requests.

    Loopback hosts are never proxied, whatever the environment says.  A proxy URL
    aqido cannot use (one that does not parse, a ``socks5://`` one) raises
    :class:`~aqido.errors.ProxyConfigError`, naming the variable, never the URL.
    """
    host = url.raw_host or ""
    if not host or is_loopback(host):
        return None, None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(f"{host}:{url.port}" if url.port else host):
        return None, None
    if _in_no_proxy_network(host, proxies.get("no", "")):
        return None, None
    parsed = _proxy_url(proxy, _proxy_variable(url.scheme, proxies), url)
    if parsed.user is None:
        return parsed, None
    token = base64.b64encode(f"{parsed.user}:{parsed.password or ''}".encode()).decode("ascii")
    return parsed.with_user(None), {"Proxy-Authorization": f"Basic {token}"}


def _proxy_variable(scheme: str, proxies: Mapping[str, str]) -> str:
    """The variable the environment's proxy for ``scheme`` comes from (``HTTPS_PROXY``...)."""
    return f"{scheme.upper()}_PROXY" if proxies.get(scheme) else "ALL_PROXY"


def proxy_refused(url: object, route: Proxy | None) -> ProxyConfigError:
    """What a proxy's ``407 Proxy Authentication Required`` raises: a configuration error.

    The proxy refused the credentials aqido sent it (or wants some): no attempt
    could heal that, and the 407 is the proxy's, not the service's status.
    ``route`` is the proxy aqido took from the environment (:func:`env_proxy`) and
    its headers; ``None`` or no proxy in it: the borrowed session's own.  The
    message names the variable, never the proxy URL (it holds the password).
    """
    refused = "407 Proxy Authentication Required"
    if route is None or route[0] is None:
        return ProxyConfigError(
            f"the session's proxy refused the request ({refused}): check the proxy "
            "credentials given to the session (proxy_auth=, or user:password@ in its proxy=)",
            url=url,
        )
    variable = _proxy_variable(URL(str(url)).scheme, urllib.request.getproxies())
    if route[1] is None:
        problem = f"asks for credentials ({refused}): give them in {variable} as "
        problem += "http://user:password@host:port"
    else:
        problem = f"refused the credentials given there ({refused}): fix the user and "
        problem += f"password in {variable} (not shown)"
    return ProxyConfigError(
        f"the proxy in {variable} {problem}, or list the host in NO_PROXY if it needs no proxy",
        url=url,
    )


def refuse_proxy_407(url: URL, route: Proxy, session: aiohttp.ClientSession) -> None:
    """Raise :func:`proxy_refused` for a 407 a proxy answered an ``http://`` request with.

    Such a request goes to the proxy whole (no ``CONNECT``): its 407 comes back as
    the response, which is the proxy's, not the service's (an
    :class:`~aqido.errors.HTTPStatusError` would blame the service).  A 407 with no
    proxy on the way is the service's own odd status: left to the caller.
    """
    if route[0] is not None or getattr(session, "_default_proxy", None) is not None:
        raise proxy_refused(url, route)


def checked_trust_env(service: URL, trust_env: object) -> bool:
    """``trust_env`` as a bool, once the proxy it gives for ``service`` proves usable.

    A proxy URL aqido cannot use is a configuration error: it raises
    :class:`~aqido.errors.ProxyConfigError` (a ``ValueError``) when the client is made,
    not a :class:`~aqido.errors.TransportError` at every request (and its retries).
    The environment is still read at each origin's first request (:func:`env_proxy`).
    """
    if trust_env:
        env_proxy(service.with_user(None))
    return bool(trust_env)


#: A borrowed session's default headers that may reach a proxy: nothing secret in them.
_TUNNEL_SAFE_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "user-agent"})


def refuse_default_headers_to_proxy(
    session: aiohttp.ClientSession | None, url: URL, service: URL
) -> None:
    """Refuse a borrowed session whose default headers would go to a proxy (names, no value).

    A :class:`~aqido.errors.ProxyConfigError` (a ``ValueError``, never retried).  aiohttp
    adds a session's default ``headers=`` to every request's proxy headers, which it sends
    in the ``CONNECT`` request of an ``https://`` tunnel (an ``Authorization`` among them as
    ``Proxy-Authorization``), whatever the request says.  Called when a request to ``url``
    with the borrowed ``session`` goes through a proxy: only the ``service``'s origin is
    sent through it (another origin through a session without its defaults), and an
    ``http://`` URL has no ``CONNECT``.
    """
    if session is None or url.scheme != "https" or origin_key(url) != origin_key(service):
        return
    names = sorted({name for name in session.headers if name.lower() not in _TUNNEL_SAFE_HEADERS})
    if names:
        raise ProxyConfigError(
            f"the session's default headers ({', '.join(names)}) would be sent to the proxy: "
            "aiohttp puts a session's default headers in the CONNECT request of an https "
            "proxy; give them to aqido instead (headers=, auth=: sent inside the tunnel only)",
            url=url,
        )


def check_borrowed_session(
    session: aiohttp.ClientSession | None,
    service: URL,
    auth: object,
    headers: Mapping[str, str] | None,
) -> None:
    """Refuse a borrowed ``session=`` a client cannot send through as asked (``ValueError``).

    Its own ``auth=`` next to the client's credentials: :func:`check_session_auth`.
    Its default headers with its own ``proxy=``: :func:`refuse_default_headers_to_proxy`.
    Nothing to check without one.
    """
    check_session_auth(session, auth, headers)
    if getattr(session, "_default_proxy", None) is not None:
        refuse_default_headers_to_proxy(session, service, service)


def check_session_auth(
    session: aiohttp.ClientSession | None, auth: object, headers: Mapping[str, str] | None
) -> None:
    """Refuse a borrowed session's ``auth=`` next to other credentials (``ValueError``).

    The client's ``auth=`` (a ``user:password@`` in its URL too) or an ``Authorization``
    header (of the client's or the session's own ``headers=``, or of what a callable
    ``auth`` returns, checked each time): aiohttp would refuse every request with a
    ``ValueError`` of its own.  A callable may return other headers: both are sent.
    """
    if session is None or session.auth is None:
        return
    if (auth is not None and not callable(auth)) or any(
        name.lower() == "authorization" for name in (*(headers or ()), *session.headers)
    ):
        raise ValueError(
            "the session has its own auth= and credentials elsewhere too (the client's auth=, "
            "an Authorization header of the client's or the session's, or a user:password@ in "
            "the url); aiohttp cannot send both: give the credentials in one place"
        )


def _in_no_proxy_network(host: str, no_proxy: str) -> bool:
    """Whether the IP address ``host`` is in a network ``NO_PROXY`` lists (``10.0.0.0/8``).

    As requests and curl read them (urllib compares only names and suffixes):
    an archive on the local network stays off a proxy meant for the outside.
    """
    if "/" not in no_proxy:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    for entry in no_proxy.split(","):
        entry = entry.strip().replace("[", "").replace("]", "")
        if "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:  # not a network: urllib read it as a name
                continue
    return False


def _proxy_url(proxy: str, variable: str, url: URL) -> URL:
    """The proxy URL in ``variable``, or a ProxyConfigError saying why aqido cannot use it.

    aiohttp would speak HTTP to any proxy URL (a ``socks5://`` one too), and
    yarl raises a plain ``ValueError`` for one that does not parse, whose
    message may quote its password: the URL is never shown, only its scheme.
    """
    advice = "fix it, list the host in NO_PROXY, or pass trust_env=False"
    try:
        parsed = URL(proxy if "://" in proxy else f"http://{proxy}")
        usable = bool(parsed.host) and parsed.port is not None
    except ValueError:  # UnicodeError too: a host yarl cannot decode
        usable = False
    else:
        if parsed.scheme not in ("http", "https"):
            raise ProxyConfigError(
                f"the proxy in {variable} is a {excerpt(parsed.scheme, 20)!r} URL: aqido "
                f"speaks only to http:// and https:// proxies (not SOCKS); {advice}",
                url=url,
            )
    if not usable:
        raise ProxyConfigError(
            f"the proxy in {variable} is not a valid URL (not shown: it may hold "
            f"credentials); {advice}",
            url=url,
        )
    return parsed


def origin_key(url: URL) -> tuple[str, str | None, int | None]:
    """``url``'s origin as ``(scheme, host, port)``, the port its default when not written.

    Not ``url.origin()``, whose equality tells ``http://host:80`` from ``http://host``
    (the same origin; yarl writes both as ``http://host``).
    """
    return url.scheme, url.raw_host, url.port


class OriginCookieJar(aiohttp.CookieJar):
    """A cookie jar that takes cookies only from, and sends them only to, one origin.

    Both ways cookies come in are checked: ``update_cookies`` (aiohttp before
    3.12 stored a response's ``Set-Cookie`` through it) and
    ``update_cookies_from_headers`` (aiohttp 3.12 on, which does not call
    ``update_cookies``): a redirect's target, or another port of the service's
    host, plants no cookie that would then be sent to the service.
    """

    def __init__(self, origin: URL) -> None:
        super().__init__(unsafe=True)  # IP hosts too: the cookies never leave their origin
        self._origin = origin_key(origin)

    def update_cookies(self, cookies: Any, response_url: URL = URL()) -> None:  # noqa: B008
        if origin_key(response_url) == self._origin:
            super().update_cookies(cookies, response_url)

    def update_cookies_from_headers(self, headers: Sequence[str], response_url: URL) -> None:
        """Store a response's ``Set-Cookie`` values if it came from the jar's origin (else none)."""
        if origin_key(response_url) == self._origin:
            super().update_cookies_from_headers(headers, response_url)

    def filter_cookies(self, request_url: URL = URL()) -> BaseCookie[str]:  # noqa: B008
        found = super().filter_cookies(request_url)  # an empty jar's at once: every request
        if found and origin_key(request_url) != self._origin:
            return SimpleCookie()
        return found

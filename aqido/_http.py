"""HTTP details of the client that hold no state: error mapping, TLS options, headers, cookies.

Used only by the client: :mod:`aqido.client` and its request path, :mod:`aqido._requests`
(which sends the requests).  Proxies are :mod:`aqido._proxies`'.
"""

from __future__ import annotations

import asyncio
import errno
import os
import ssl as _ssl
from collections.abc import Mapping, Sequence
from http.cookies import BaseCookie, SimpleCookie
from types import TracebackType
from typing import Any

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
from aqido._proxies import Proxy, origin_key, proxy_refused, refuse_default_headers_to_proxy
from aqido.errors import (
    RequestTimeoutError,
    TLSError,
    TransportError,
    _without_secret_headers,
    excerpt,
)

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

"""HTTP details of the client that hold no state: error mapping, TLS options, proxies, cookies.

Used only by :mod:`aqido.client` (the one module that sends requests).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import os
import ssl as _ssl
import urllib.request
from collections.abc import Mapping
from http.cookies import BaseCookie, SimpleCookie
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from aqido._search_results import SearchResults as SearchResults
from aqido.errors import (
    RequestTimeoutError,
    TLSError,
    TransportError,
    _without_secret_headers,
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

    __slots__ = ("url",)

    def __init__(self, url: object) -> None:
        self.url = url

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
            raise TLSError(
                f"TLS failed: {reason} (a private CA? give its bundle with ssl= or --cacert)",
                url=url,
            ) from exc
        if isinstance(exc, aiohttp.ClientPayloadError):
            raise TransportError(f"incomplete response body ({exc})", url=url) from exc
        if isinstance(exc, aiohttp.ClientError):
            raise TransportError(f"{type(exc).__name__}: {exc}", url=url) from exc


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

    Loopback hosts are never proxied, whatever the environment says.
    """
    host = url.raw_host or ""
    if not host or is_loopback(host):
        return None, None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(f"{host}:{url.port}" if url.port else host):
        return None, None
    parsed = URL(proxy if "://" in proxy else f"http://{proxy}")
    if parsed.user is None:
        return parsed, None
    token = base64.b64encode(f"{parsed.user}:{parsed.password or ''}".encode()).decode("ascii")
    return parsed.with_user(None), {"Proxy-Authorization": f"Basic {token}"}


class OriginCookieJar(aiohttp.CookieJar):
    """A cookie jar that takes cookies only from, and sends them only to, one origin."""

    def __init__(self, origin: URL) -> None:
        super().__init__(unsafe=True)  # IP hosts too: the cookies never leave their origin
        self._origin = origin

    def update_cookies(self, cookies: Any, response_url: URL = URL()) -> None:  # noqa: B008
        if response_url.origin() == self._origin:
            super().update_cookies(cookies, response_url)

    def filter_cookies(self, request_url: URL = URL()) -> BaseCookie[str]:  # noqa: B008
        if request_url.origin() != self._origin:
            return SimpleCookie()
        return super().filter_cookies(request_url)

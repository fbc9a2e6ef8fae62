"""Proxies from the environment, and what aqido refuses to send through one (pure, no I/O).

Used by the client's request path (:mod:`aqido._requests`) and :mod:`aqido._http`:
which proxy ``HTTP(S)_PROXY``/``NO_PROXY`` give an origin (never one for loopback),
a proxy URL aqido cannot use (a :class:`~aqido.errors.ProxyConfigError` naming the
variable, never the URL), a proxy's ``407``, and a borrowed session's default headers
that an ``https://`` proxy would read in its ``CONNECT`` request.
"""

from __future__ import annotations

import base64
import ipaddress
import urllib.request
from collections.abc import Mapping

import aiohttp
from yarl import URL

from aqido.errors import ProxyConfigError, excerpt


def origin_key(url: URL) -> tuple[str, str | None, int | None]:
    """``url``'s origin as ``(scheme, host, port)``, the port its default when not written.

    Not ``url.origin()``, whose equality tells ``http://host:80`` from ``http://host``
    (the same origin; yarl writes both as ``http://host``).
    """
    return url.scheme, url.raw_host, url.port


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

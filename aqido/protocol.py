"""Sans-I/O QIDO-RS protocol: turn ``(status, headers, body)`` into items or an error.

Nothing here performs I/O, sleeps or imports aiohttp (in the spirit of
gidgethub's ``sansio`` module).  The client's request path
(:mod:`aqido._requests`) feeds the bytes it read into :func:`parse_response`;
every server quirk the spec digest lists is handled here, where it can be
tested without a network:

- "no results" comes as 204, as 200 with ``[]``, or as 200 with an explicit
  ``Content-Length: 0`` (any content type; older editions' "nothing matched"):
  all become ``[]``.  A 200 whose body is empty *without* saying so (no
  ``Content-Length: 0``: a stripped or cut-off reply) raises
  :class:`~aqido.errors.InvalidResponseError` rather than passing for "no results";
- ``application/dicom+json`` and ``application/json`` (parameters ignored) are
  JSON; HTML error pages, ``multipart/related`` XML and other non-JSON bodies
  raise :class:`~aqido.errors.InvalidResponseError`;
- non-success statuses raise the matching :class:`~aqido.errors.HTTPStatusError`
  subclass with the URL (credentials removed) and a body excerpt;
- ``Warning`` headers are parsed leniently (quoted or not, ``{+service}``
  agents, a doubled ``Warning:`` prefix, comma-joined or repeated headers) and
  a truncation warning's "N additional results" count is extracted;
- ``Retry-After`` is read as seconds or as an HTTP date.
"""

from __future__ import annotations

import email.utils
import http
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import attrs
from multidict import CIMultiDict, CIMultiDictProxy

from aqido._elements import fast_stored, json_item
from aqido._lazy import lazy_exports
from aqido.errors import InvalidResponseError, error_for_status, excerpt, redact_url
from aqido.results import decode_json

if TYPE_CHECKING:  # pragma: no cover - imported on first use (below)
    from aqido._warning_headers import QidoWarning as QidoWarning
    from aqido._warning_headers import parse_warnings as parse_warnings

#: The ``Accept`` header aqido sends: DICOM JSON first, plain JSON for older servers.
ACCEPT = "application/dicom+json, application/json"

#: Response media types read as DICOM JSON (parameters such as ``charset`` are ignored).
JSON_MEDIA_TYPES = frozenset({"application/dicom+json", "application/json"})


#: Response headers: any mapping (a ``multidict`` keeps repeated headers), or
#: ``(name, value)`` pairs.
Headers = Mapping[str, str] | Iterable[tuple[str, str]]


#: Header types looked up directly (case-insensitive, as aiohttp gives them).
_MULTIDICTS: frozenset[type] = frozenset({CIMultiDict, CIMultiDictProxy})


def header_values(headers: Headers, name: str) -> list[str]:
    """Return every value of header ``name`` (case-insensitive), in order.

    Works with a ``multidict`` (repeated headers kept), a plain mapping and a
    list of ``(name, value)`` pairs.
    """
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return [str(v) for v in getall(name, [])]
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    wanted = name.lower()
    return [str(v) for k, v in pairs if k.lower() == wanted]


def _header(headers: Headers, name: str) -> str | None:
    if type(headers) in _MULTIDICTS:  # aiohttp's headers: a case-insensitive look-up
        value = headers.get(name)  # type: ignore[union-attr]
        return None if value is None else str(value)
    values = header_values(headers, name)
    return values[0] if values else None


def _flat_headers(headers: Headers) -> dict[str, str]:
    """Headers as a plain dict; repeated headers are joined with ``", "``."""
    # aiohttp's own type first: isinstance() against the Mapping ABC costs a Python call
    pairs = (
        headers.items()  # type: ignore[union-attr]
        if type(headers) in _MULTIDICTS or isinstance(headers, Mapping)
        else headers
    )
    out: dict[str, str] = {}
    for key, value in pairs:
        out[key] = f"{out[key]}, {value}" if key in out else str(value)
    return out


def join_url(base: str, path: str, query_string: str = "") -> str:
    """Join the service base URL, a resource path and an encoded query string.

    ``base`` may end with any number of slashes (Orthanc's root is
    ``/dicom-web/``) and ``path`` may start with one: the result never holds
    ``//studies``.  ``query_string`` is appended verbatim after ``?`` (it is
    already encoded: aqido never re-encodes it, because Orthanc does not decode
    percent-escapes).
    """
    url = base.rstrip("/")
    if path:
        url += "/" + path.lstrip("/")
    if query_string:
        url += "?" + query_string.lstrip("?")
    return url


# --- Retry-After -------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Return the delay a ``Retry-After`` header asks for, in seconds (never negative).

    Accepts delay-seconds (``"120"``, also ``"1.5"``) and an HTTP date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``, compared with ``now``, default the
    current UTC time).  Returns ``None`` for a missing or unreadable value
    (``"soon"``, ``"inf"``, ``"Fri, 31 Feb 2030 ..."``), and infinity for a
    number too large for a float or a date past year 9999 (a wait longer than
    any ``Retry.max_retry_after``).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds == float("inf") and text[-1].isdigit():
            return seconds  # a number past a double (400 digits): longer than any wait allowed
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: a huge year
        # A date past year 9999 (which datetime cannot hold) is later than any wait allowed,
        # not an unreadable value (that would let the client retry at once).
        return float("inf") if _past_max_year(text) else None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now if now is not None else datetime.now(timezone.utc)
    if current.tzinfo is None:
        current = current.replace(tzinfo=timezone.utc)
    return max(0.0, (when - current).total_seconds())


def _past_max_year(text: str) -> bool:
    """Whether ``text`` reads as an HTTP date but for its year, past ``datetime``'s 9999."""
    try:
        parts = email.utils.parsedate_tz(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return parts is not None and parts[0] > datetime.max.year


# --- Responses ---------------------------------------------------------------------------------


@attrs.frozen(eq=False, repr=False)
class QidoResponse:
    """A successful QIDO-RS response, decoded but not structured.

    This is what "raw access" returns: the DICOM JSON items exactly as the
    server sent them, plus what the headers said.

    Attributes:
        status: the HTTP status (200, 204 or 206).
        url: the request URL, credentials removed.
        headers: the response headers (repeated headers joined with ``", "``).
        items: the decoded DICOM JSON datasets (``[]`` for "no results").
        warnings: every ``Warning`` the server sent.

    A body decoded straight into stored datasets (:func:`aqido._elements.fast_stored`)
    builds ``items`` on first access; the crawl reads the stored datasets (:func:`rows`).
    """

    status: int
    url: str
    headers: Mapping[str, str]
    _items: list[dict[str, Any]] | None = attrs.field(alias="items")
    warnings: tuple[QidoWarning, ...] = ()
    _stored: list[Any] | None = attrs.field(default=None, alias="_stored", kw_only=True)

    @property
    def items(self) -> list[dict[str, Any]]:
        """The decoded DICOM JSON datasets (``[]`` for "no results")."""
        items = self._items
        if items is None:
            items = [json_item(stored) for stored in self._stored or ()]
            object.__setattr__(self, "_items", items)
        return items

    def _fields(self) -> tuple[Any, ...]:
        return (self.status, self.url, self.headers, self.items, self.warnings)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, QidoResponse)
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        return (
            f"QidoResponse(status={self.status!r}, url={self.url!r}, headers={self.headers!r}, "
            f"items={self.items!r}, warnings={self.warnings!r})"
        )

    @property
    def truncated(self) -> bool:
        """Whether the server says more results exist (a 299 truncation warning, or 206)."""
        return self.status == 206 or any(w.is_truncation for w in self.warnings)

    @property
    def additional_results(self) -> int | None:
        """How many more results the server says exist, when it gave a count."""
        counts = [w.additional_results for w in self.warnings if w.is_truncation]
        known = [c for c in counts if c is not None]
        return max(known) if known else None


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    found = _MEDIA_TYPES.get(content_type)
    if found is None:
        found = content_type.split(";", 1)[0].strip().lower()
        if len(_MEDIA_TYPES) < 64:  # a server sends one or two: remember them
            _MEDIA_TYPES[content_type] = found
    return found


_MEDIA_TYPES: dict[str, str] = {}


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def parse_response(status: int, headers: Headers, body: bytes, *, url: object = "") -> QidoResponse:
    """Interpret a QIDO-RS response: return the items or raise the right error.

    Arguments:
        status: the HTTP status code.
        headers: the response headers (a multidict keeps repeated ``Warning`` lines).
        body: the raw response body.
        url: the request URL, used in errors and kept on the result (credentials
            are removed).

    Raises:
        HTTPStatusError: (the subclass for ``status``) for any non-2xx status.
        InvalidResponseError: for a 2xx body that is not DICOM JSON (HTML, XML
            multipart, malformed JSON, not an array).
    """
    safe_url = redact_url(url)
    flat = _flat_headers(headers)
    if not 200 <= status <= 299:
        raise error_for_status(status)(status, safe_url, body, reason=_reason(status), headers=flat)
    warnings = (
        _parse_warnings(header_values(headers, "Warning"))
        if type(headers) not in _MULTIDICTS or "Warning" in headers
        else ()
    )

    length = _header(headers, "Content-Length")
    if status == 204 or (length is not None and length.strip() == "0" and not body):
        return QidoResponse(status, safe_url, flat, [], warnings)
    if not body.strip():
        raise InvalidResponseError(
            f"the server answered {status} with an empty body (QIDO-RS says 204, or an empty "
            "JSON array, when nothing matches); the reply may have been cut off",
            url=safe_url,
            status=status,
            body=body,
        )
    media_type = _media_type(_header(headers, "Content-Type"))
    if media_type and media_type not in JSON_MEDIA_TYPES and not media_type.endswith("+json"):
        if media_type.startswith("multipart/"):
            what = "a multipart response (XML?) instead of DICOM JSON"
        elif media_type in ("text/html", "application/xhtml+xml"):
            what = "an HTML page instead of DICOM JSON (a proxy or login page?)"
        else:
            # cut: a header may be 8 KB (the server's text, a repr: no control character)
            what = f"content type {excerpt(media_type, 80)!r} instead of DICOM JSON"
        raise InvalidResponseError(
            f"the server sent {what}", url=safe_url, status=status, body=body
        )
    if not media_type and body.lstrip()[:1] == b"<":
        raise InvalidResponseError(
            "the server sent markup (HTML or XML) instead of DICOM JSON",
            url=safe_url,
            status=status,
            body=body,
        )
    stored = fast_stored(body)
    if stored is not None:
        return QidoResponse(status, safe_url, flat, None, warnings, _stored=stored)
    items = decode_json(body, url=safe_url, status=status)
    return QidoResponse(status, safe_url, flat, items, warnings)


def rows(response: QidoResponse) -> list[Any]:
    """The response's datasets as the crawl reads them: stored (validated) ones, else ``items``.

    Stored datasets (:class:`aqido._elements._Elements`) come from the one-pass
    decoding and stand for ``items`` until ``items`` is first read: then ``items``
    (which its reader may change) is the answer.
    """
    stored = response._stored
    return stored if stored is not None and response._items is None else response.items


def _parse_warnings(values: list[str]) -> tuple[QidoWarning, ...]:
    """:func:`parse_warnings`, imported on the first response that has a ``Warning``."""
    from aqido._warning_headers import parse_warnings

    return parse_warnings(values)


if not TYPE_CHECKING:
    # ``QidoWarning`` and ``parse_warnings`` live in :mod:`aqido._warning_headers`, imported on
    # first use; type checkers see the imports above.
    _WARNINGS = {
        "QidoWarning": "aqido._warning_headers",
        "parse_warnings": "aqido._warning_headers",
    }
    __getattr__, __dir__ = lazy_exports("aqido.protocol", globals(), _WARNINGS, list(_WARNINGS))

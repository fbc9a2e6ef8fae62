"""Decoding a QIDO-RS response body into DICOM JSON objects (pure: no I/O).

:func:`decode_json` is the one place a body becomes Python objects: orjson when
installed (the ``fast`` extra), the standard library otherwise.
"""

from __future__ import annotations

import gc
import json
import math
import re
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from aqido import dictionary
from aqido.errors import InvalidResponseError

#: A surrogate escape (lone or paired), or a raw surrogate (``str`` input): text in
#: which a string may hold a lone surrogate.  Only then are the strings checked.
#: Compiled on first use (re caches them): with orjson installed responses never need them.
_SURROGATE_ESCAPE = r"\\u[dD][89a-fA-F]"
_RAW_SURROGATE = r"[\ud800-\udfff]"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _checked_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _checked_int(text: str) -> int | float:
    """A JSON integer: an ``int`` within 64 bits, else (as orjson) a float, unless that overflows.

    Beyond 40 characters the text is far past 64 bits: it goes to ``float`` at
    once (correctly rounded, as ``float(int(text))``), so ``int()``'s own limit
    (4,300 digits, worded differently by each Python version) is never met.
    """
    if len(text) > 40:
        value: float = float(text)
        if math.isinf(value):
            raise ValueError(f"number out of range: {text[:40]}")
        return value
    number = int(text)
    if -(2**63) <= number < 2**64:
        return number
    return float(number)  # 21-40 characters: never beyond a double


class LoneSurrogateError(ValueError):
    """A JSON string or key holds a lone surrogate (``"\\ud800"``): text no UTF-8 writer takes."""


def _check_strings(data: Any) -> None:
    """Raise LoneSurrogateError if a string (or key) in ``data`` holds a lone surrogate."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            strings: Iterable[Any] = (value,)
        elif isinstance(value, dict):
            strings = value.keys()
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
            continue
        else:
            continue
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise LoneSurrogateError("lone surrogate in a JSON string") from None


def strict_loads(body: bytes | str) -> Any:
    """Strict JSON with no lone surrogate: ``json.loads`` refusing what orjson refuses, but nesting.

    The one strict reading of JSON text: response bodies without orjson
    (:func:`_stdlib_loads`) and a checkpoint's lines, each wording the errors
    its own way.  Raises ``ValueError``: ``UnicodeDecodeError`` (bytes that are
    not UTF-8), :class:`json.JSONDecodeError` (bad syntax),
    :class:`LoneSurrogateError`, and a plain one for NaN or Infinity
    (``"NaN is not valid JSON"``) or a number out of range (an integer beyond
    64 bits becomes a float, as in orjson, unless that overflows too).  Nesting
    deeper than the recursion limit raises ``RecursionError``, for the caller to word.
    Every number is checked as it is parsed: cheaper than searching the text for
    long ones (the regex scan cost more than the parse itself).
    """
    text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body
    data = json.loads(
        text,
        parse_constant=_reject_constant,
        parse_float=_checked_float,
        parse_int=_checked_int,
    )
    if re.search(_SURROGATE_ESCAPE, text) is not None or (
        isinstance(body, str) and not text.isascii() and re.search(_RAW_SURROGATE, text)
    ):  # only then may a string hold a lone one (UTF-8 bytes decode to none)
        _check_strings(data)
    return data


#: How many levels past Python's recursion limit :func:`strict_loads_nested` reads.
_EXTRA_DEPTH = 1_100
_DEPTH_LOCK = threading.Lock()


def strict_loads_nested(body: bytes | str) -> Any:
    """:func:`strict_loads` of a record holding a server's item, nested as deep as decoding allows.

    A checkpoint line holds an item a few levels down, and an item may nest
    1,024 levels of JSON (what orjson accepts in a response): past what
    ``json.loads`` reaches under Python's recursion limit.  Such a line is read
    again with the limit raised by :data:`_EXTRA_DEPTH` levels for that one call
    (the C decoder's frames are small); anything deeper still raises ``RecursionError``.
    """
    try:
        return strict_loads(body)
    except RecursionError:
        pass
    with _DEPTH_LOCK:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(limit + _EXTRA_DEPTH)
        try:
            return strict_loads(body)
        finally:
            sys.setrecursionlimit(limit)


class _Text(str):
    """Text :func:`_dumps_iteratively` has already encoded (a marker on its stack)."""

    __slots__ = ()


def dumps(
    value: Any,
    *,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
    default: Callable[[Any], Any] | None = None,
    separators: tuple[str, str] | None = None,
    allow_nan: bool = True,
) -> str:
    """``json.dumps(value, ...)`` (no indent) of a value nested as deep as decoding allows.

    The decoders accept 1,024 levels of JSON (341 of SQ), past what ``json.dumps``
    reaches before Python's recursion limit (``RecursionError``, raw): such a value
    is then encoded without recursion, into the same text.  Used to compare and
    hash datasets, to identify an item without a UID, for error excerpts, and to
    write a checkpoint's records (wherever a server's item is serialised).
    """
    try:
        return json.dumps(
            value,
            sort_keys=sort_keys,
            ensure_ascii=ensure_ascii,
            default=default,
            separators=separators,
            allow_nan=allow_nan,
        )
    except RecursionError:
        options = _Options(ensure_ascii, default, separators or (", ", ": "), allow_nan)
        return _dumps_iteratively(value, sort_keys, options)


class _Options:
    """The options of one :func:`dumps` call, as :func:`_dumps_iteratively` applies them."""

    __slots__ = ("allow_nan", "default", "ensure_ascii", "separators")

    def __init__(
        self,
        ensure_ascii: bool,
        default: Callable[[Any], Any] | None,
        separators: tuple[str, str],
        allow_nan: bool,
    ) -> None:
        self.ensure_ascii = ensure_ascii
        self.default = default
        self.separators = separators
        self.allow_nan = allow_nan

    def leaf(self, value: Any) -> str:
        """``json.dumps`` of a value that is not a container (or one ``default`` converts)."""
        return json.dumps(
            value, ensure_ascii=self.ensure_ascii, default=self.default, allow_nan=self.allow_nan
        )

    def key(self, key: Any) -> str:
        """A key as ``json.dumps`` writes it (an int, float, bool or None key converted)."""
        if isinstance(key, str):
            return json.dumps(key, ensure_ascii=self.ensure_ascii)
        text = json.dumps(
            {key: None},
            ensure_ascii=self.ensure_ascii,
            separators=(",", ":"),
            allow_nan=self.allow_nan,
        )
        return text[1:-6]  # '{"1":null}' -> '"1"'


def _dumps_iteratively(value: Any, sort_keys: bool, options: _Options) -> str:
    """:func:`dumps`'s text, built with a stack instead of recursion (JSON holds no cycle)."""
    item_separator, key_separator = options.separators
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if type(node) is _Text:
            out.append(node)
        elif isinstance(node, dict):
            pairs = sorted(node.items()) if sort_keys else list(node.items())
            out.append("{")
            stack.append(_Text("}"))
            for index in range(len(pairs) - 1, -1, -1):
                key, item = pairs[index]
                stack.append(item)
                separator = item_separator if index else ""
                stack.append(_Text(f"{separator}{options.key(key)}{key_separator}"))
        elif isinstance(node, list | tuple):
            out.append("[")
            stack.append(_Text("]"))
            for index in range(len(node) - 1, -1, -1):
                stack.append(node[index])
                if index:
                    stack.append(_Text(item_separator))
        else:
            out.append(options.leaf(node))
    return "".join(out)


def _stdlib_loads(body: bytes | str) -> Any:
    """``json.loads`` refusing what orjson refuses: deep nesting, out-of-range numbers,
    NaN/Infinity, lone surrogates and invalid UTF-8 (all as ``ValueError``)."""
    try:
        return strict_loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


#: The decoder of :func:`decode_json`: orjson's when installed, chosen at the first body
#: that needs it (most never do: :func:`aqido._elements.fast_stored` decodes the common
#: ones, and a plain search does not pay for importing orjson, about 2 ms).
_loads: Callable[[bytes | str], Any] | None = None


def _choose_loads() -> Callable[[bytes | str], Any]:
    """Set and return :data:`_loads`: ``orjson.loads``, or :func:`_stdlib_loads` without it."""
    global _loads
    try:
        import orjson

        _loads = orjson.loads
    except ImportError:  # pragma: no cover - exercised only without the "fast" extra
        _loads = _stdlib_loads
    return _loads


#: Bodies larger than this are decoded with the cyclic GC paused (see decode_json).
_GC_PAUSE_BYTES = 64 * 1024


def _describe(body: bytes | str) -> str:
    head = body[:64].lstrip()
    head_text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    if head_text.startswith("--"):
        return " (it looks like a multipart body: was application/dicom+json accepted?)"
    if head_text.startswith("<"):
        return " (it looks like HTML or XML)"
    return ""


def decode_json(
    body: bytes | str, *, url: object = None, status: int | None = None
) -> list[dict[str, Any]]:
    """Decode a QIDO-RS response body into its list of DICOM JSON objects.

    Uses orjson when installed (the ``fast`` extra), the standard library
    otherwise.  An empty or whitespace-only body (a 204) gives ``[]``.  Raises
    :class:`~aqido.errors.InvalidResponseError` (with an excerpt) when the body
    is not JSON or not an array of objects; ``url`` and ``status`` (optional)
    are put on that error.
    """
    if not body or body.isspace():
        return []
    if body[:3] == b"\xef\xbb\xbf" or body[:1] == "\ufeff":  # a UTF-8 byte order mark
        body = body[3:] if isinstance(body, bytes) else body[1:]
    # Decoding builds a large tree of live containers, never garbage nor cycles, yet
    # every few hundred allocations make the cyclic GC rescan it (doubling the time
    # of a 10 MB body).  The GC is paused for this one C call, which holds the GIL.
    paused = len(body) > _GC_PAUSE_BYTES and gc.isenabled()
    if paused:
        gc.disable()
    loads = _loads if _loads is not None else _choose_loads()
    try:
        data = loads(body)
    except ValueError as exc:  # json/orjson decode errors and bad UTF-8 are ValueErrors
        raise InvalidResponseError(
            f"response body is not JSON{_describe(body)}: {exc}", body=body, url=url, status=status
        ) from exc
    finally:
        if paused:
            gc.enable()
    if type(data) is dict and data and all(dictionary.is_tag_key(key) for key in data):
        # One dataset instead of an array of one (some servers; dicomweb-client accepts it).
        return [data]
    if type(data) is not list:
        raise InvalidResponseError(
            f"response body is a JSON {_json_type(data)}, not an array of DICOM JSON objects",
            body=body,
            url=url,
            status=status,
        )
    for index, item in enumerate(data):
        if type(item) is not dict:
            raise InvalidResponseError(
                f"item {index} of the response is a JSON {_json_type(item)}, "
                "not a DICOM JSON object",
                body=body,
                url=url,
                status=status,
            )
    return data


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"

"""``Warning`` response headers (RFC 7234 §5.5): :class:`QidoWarning` and :func:`parse_warnings`.

Sans-I/O.  Imported on first use (:mod:`aqido.protocol` re-exports both names):
most responses carry no ``Warning``, and a plain search does not pay for building
the class and its parser (about 1 ms at import).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs

from aqido._lazy import lazy_pattern

_PREFIX = lazy_pattern(globals(), "_PREFIX", r"^\s*(?:warning\s*:\s*)+", re.IGNORECASE)
_NEXT_WARNING = lazy_pattern(
    globals(), "_NEXT_WARNING", r"\s*(?:warning\s*:\s*)*\d{3}(?:\s|$)", re.IGNORECASE
)
_CODED = lazy_pattern(globals(), "_CODED", r"^(\d{3})(?:\s+(.*))?$", re.DOTALL)
#: A count starts after a non-digit: without the look-behind each digit of a long run
#: began a search that ran to its end (8,000 digits: a second per warning, event loop blocked).
#: "N additional results", N with thousands separators too (``1,234``, ``1.234``, ``1'234``):
#: read as its last group alone, ``1,234`` was 234 more, and paging stopped 1,000 short.
_COUNT = lazy_pattern(
    globals(),
    "_COUNT",
    r"(?<![\d,.'\u00a0\u202f])(\d{1,3}(?:[,.'\u00a0\u202f]\d{3})+|\d+)\s+additional\s+results?",
    re.IGNORECASE,
)
_TRUNCATION = lazy_pattern(
    globals(),
    "_TRUNCATION",
    r"additional\s+results|exceeded\s+the\s+maximum|more\s+results",
    re.IGNORECASE,
)


@attrs.frozen
class QidoWarning:
    """One warning from a ``Warning`` response header (RFC 7234 §5.5).

    Attributes:
        code: the 3-digit warn-code (299 for the QIDO-RS ones), ``None`` if the
            server sent free text without one.
        agent: the warn-agent (``host:port``, a URL, or the literal ``{+service}``).
        text: the warning text, unquoted.
        raw: the warning exactly as it appeared in the header (after splitting).
    """

    code: int | None
    agent: str
    text: str
    raw: str

    @property
    def additional_results(self) -> int | None:
        """The "N additional results" count of a truncation warning, else ``None``."""
        match = _COUNT.search(self.text) or _COUNT.search(self.raw)
        if match is None:
            return None
        try:
            return int("".join(c for c in match.group(1) if c.isdigit()))
        except ValueError:  # more digits than int() takes (4300): no usable count
            return None

    @property
    def is_truncation(self) -> bool:
        """Whether this warning says that more results exist than were returned."""
        if self.code not in (299, None):
            return False
        return bool(_TRUNCATION.search(self.text) or _TRUNCATION.search(self.raw))

    def __str__(self) -> str:
        return self.raw


def _split_warning_value(value: str) -> list[str]:
    """Split one header value at the commas that start a new warning (not inside quotes)."""
    parts: list[str] = []
    start = 0
    in_quote = False
    i = 0
    while i < len(value):
        char = value[i]
        if in_quote:
            if char == "\\":
                i += 1
            elif char == '"':
                in_quote = False
        elif char == '"':
            in_quote = True
        elif char == "," and _NEXT_WARNING.match(value, i + 1):
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return [p.strip() for p in parts if p.strip()]


def _read_quoted(text: str) -> tuple[str, str]:
    """Read a quoted-string at the start of ``text``: (unescaped content, rest)."""
    out: list[str] = []
    i = 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            return "".join(out), text[i + 1 :]
        out.append(char)
        i += 1
    return "".join(out), ""  # unterminated: keep what there is


def _parse_one_warning(raw: str) -> QidoWarning:
    body = _PREFIX.sub("", raw).strip()
    match = _CODED.match(body)
    if match is None:
        text = body[1:-1] if len(body) >= 2 and body[0] == body[-1] == '"' else body
        return QidoWarning(code=None, agent="", text=text, raw=raw)
    code = int(match.group(1))
    rest = (match.group(2) or "").strip()
    agent = ""
    if rest and not rest.startswith('"'):
        head, _, tail = rest.partition(" ")
        if tail.strip():
            agent, rest = head, tail.strip()
    if rest.startswith('"'):
        text, _date = _read_quoted(rest)
    else:
        text = rest
    return QidoWarning(code=code, agent=agent, text=text.strip(), raw=raw)


def parse_warnings(values: Iterable[str]) -> tuple[QidoWarning, ...]:
    """Parse every ``Warning`` header value into :class:`QidoWarning` objects.

    ``values`` are the raw header values (one per header line; see
    :func:`~aqido.protocol.header_values`).  Tolerates everything seen in the wild: quoted or
    unquoted text, the literal ``{+service}`` agent, a ``Warning:`` prefix
    repeated inside the value, several warnings joined by commas (commas inside
    quoted text are kept), and free text without a warn-code.
    """
    return tuple(
        _parse_one_warning(part) for value in values for part in _split_warning_value(value)
    )

"""DICOM value types and the parsers that turn DICOM JSON values into them.

Pure and dependency-free (no pydicom, no cattrs): :mod:`aqido.results` wires
these parsers into a cattrs converter.

One Python type per value representation (VR):

============================  ==========================================
VR                            Python value
============================  ==========================================
PN                            :class:`PersonName`
DA                            :class:`datetime.date`
TM                            :class:`datetime.time` (``"10"``, ``"1030"``, fractions)
DT                            :class:`datetime.datetime` (aware when an offset is given)
IS, SL, SS, SV, UL, US, UV    :class:`int`, within the VR's range (:data:`INT_RANGES`)
DS                            :class:`DSFloat` (a ``float`` keeping its exact ``.text``)
FL, FD                        :class:`float`
AT                            :class:`Tag` (an ``int``)
ST, LT, UT, UC, UR            :class:`str`, trailing NUL and spaces stripped (leading
                              spaces are significant)
UI and every other string VR  :class:`str`, NUL and spaces stripped at both ends
BulkDataURI / InlineBinary    :class:`BulkDataURI` / :class:`InlineBinary` (``str``)
============================  ==========================================

The parsers (:func:`parse_value`) raise :class:`ValueError` for values they
cannot read (a DA of ``"2023-01-01"``, an IS of ``"abc"``); the results layer
turns that into an :class:`InvalidValue` instead of failing the search.  IS
and DS text must have the PS3.5 syntax (ASCII digits: no ``"1_000"``,
``"NaN"``, ``"inf"``; an IS is not ``"1e3"`` nor ``"12.0"``); a DS must be
finite; an integer must fit its VR (``US`` 0 to 65535, ``IS`` 32 bits...), and
a JSON number read as an integer must be exact (a float beyond 2**53, which is
what a JSON integer beyond 64 bits is decoded as, is refused).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from aqido import dictionary
from aqido._attrs_methods import ValueMethods
from aqido._lazy import lazy_exports, lazy_pattern
from aqido.errors import EXCERPT_LENGTH

if TYPE_CHECKING:  # pragma: no cover - imported on first use (see the end of the module)
    from aqido._invalid import InvalidValue as InvalidValue

#: Every value representation a DICOM JSON element may carry (PS3.5 Table 6.2-1).
VRS = frozenset(
    {
        *("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD"),
        *("OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI"),
        *("UL", "UN", "UR", "US", "UT", "UV"),
    }
)

#: VRs whose JSON values are numbers (or, for IS/DS/SV/UV, strings).
INT_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
FLOAT_VRS = frozenset({"FL", "FD"})

#: What DICOM pads values with (NUL, space): stripped before values are read.
STRIP = "\x00 "

#: Longest ``InvalidValue.reason`` kept, in characters: more than any aqido writes (they
#: quote a value by its first 40 characters, see _quote).
_REASON_LENGTH = 2 * EXCERPT_LENGTH


def _quote(text: str) -> str:
    """``text`` quoted for an error message: its first 40 characters, ``…`` if cut."""
    return f"{text[:40]!r}…" if len(text) > 40 else repr(text)


def _cut(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters (ending with ``…``) if longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reason(text: str) -> str:
    """An ``InvalidValue.reason`` as kept: cut to :data:`_REASON_LENGTH` characters."""
    return _cut(text, _REASON_LENGTH)


class Tag(int):
    """A DICOM tag read from an AT value: an ``int`` that prints as ``(gggg,eeee)``.

    ``Tag("0020000D") == 0x0020000D``; ``.key`` is the DICOM JSON form and
    ``.keyword`` the PS3.6 keyword (``""`` for private or unknown tags).
    """

    __slots__ = ()

    def __new__(cls, value: int | str) -> Tag:
        if isinstance(value, str):
            return super().__new__(cls, dictionary.parse_tag_key(value.strip(STRIP)))
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"{value!r} is not a DICOM tag (must fit in 32 bits)")
        return super().__new__(cls, value)

    @property
    def key(self) -> str:
        """The DICOM JSON key, 8 uppercase hex digits (``"0020000D"``)."""
        return dictionary.tag_key(self)

    @property
    def keyword(self) -> str:
        """The PS3.6 keyword, or ``""`` for private and unknown tags."""
        return dictionary.keyword_for(self)

    def __str__(self) -> str:
        return f"({self >> 16:04X},{self & 0xFFFF:04X})"

    def __repr__(self) -> str:
        return f"Tag({self.key!r})"


class DSFloat(float):
    """A Decimal String value: a ``float`` that keeps the exact text it came from (``.text``).

    When the server sent a JSON number (as Orthanc does), ``.text`` is Python's
    shortest representation of that number.
    """

    __slots__ = ("text",)
    text: str

    def __new__(cls, value: float, text: str) -> DSFloat:
        self = super().__new__(cls, value)
        self.text = text
        return self

    def __repr__(self) -> str:
        return f"DSFloat({float(self)!r}, text={self.text!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (DSFloat, (float(self), self.text))


class BulkDataURI(str):
    """An element given by reference (``"BulkDataURI"``); possibly relative to the request URL."""

    __slots__ = ()


class InlineBinary(str):
    """An element given inline as base64 (``"InlineBinary"``); :meth:`to_bytes` decodes it."""

    __slots__ = ()

    def to_bytes(self) -> bytes:
        """Decode the base64 text; raise ``ValueError`` if it is not valid base64."""
        try:
            return base64.b64decode(self, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"InlineBinary is not valid base64: {exc}") from exc


@attrs.frozen(repr=False, eq=False)
class PersonName(ValueMethods):
    """A Person Name (PN): up to three component groups of ``Family^Given^Middle^Prefix^Suffix``.

    ``str(name)`` is the DICOM form, groups joined by ``=`` with trailing empty
    groups left out: ``"Yamada^Tarou=山田^太郎=やまだ^たろう"``, ``"=山田^太郎"``.
    The ``family``/``given``/``middle``/``prefix``/``suffix`` properties read the
    alphabetic group, or the first non-empty group when there is no alphabetic one.
    """

    alphabetic: str = ""
    ideographic: str = ""
    phonetic: str = ""

    @classmethod
    def from_dicom(cls, text: str) -> PersonName:
        """Build from the DICOM string form, ``"Alphabetic=Ideographic=Phonetic"``."""
        groups = text.split("=")
        if len(groups) > 3:
            raise ValueError(f"{_quote(text)} has more than three PN component groups")
        groups += [""] * (3 - len(groups))
        return cls(*(g.rstrip(STRIP) for g in groups))

    @classmethod
    def from_json(cls, value: object) -> PersonName:
        """Build from a DICOM JSON PN value: an object with group keys, or a bare string."""
        if type(value) is dict and len(value) == 1 and type(value.get("Alphabetic")) is str:
            return cls(value["Alphabetic"].rstrip(STRIP))  # the common case, made quick
        if isinstance(value, str):
            return cls.from_dicom(value)
        if isinstance(value, dict):
            unknown = set(value) - {"Alphabetic", "Ideographic", "Phonetic"}
            if unknown:
                names = ", ".join(_quote(name) for name in sorted(unknown)[:3])
                more = ", …" if len(unknown) > 3 else ""
                raise ValueError(f"PN object has unknown member(s) [{names}{more}]")
            groups = [value.get(k) or "" for k in ("Alphabetic", "Ideographic", "Phonetic")]
            if not all(isinstance(g, str) for g in groups):
                raise ValueError("PN component groups must be strings")
            return cls(*(g.rstrip(STRIP) for g in groups))
        raise ValueError(f"a PN value must be an object or a string, not {type(value).__name__}")

    def to_json(self) -> dict[str, str]:
        """Return the DICOM JSON form: an object with the non-empty groups."""
        out = {}
        for key, group in (
            ("Alphabetic", self.alphabetic),
            ("Ideographic", self.ideographic),
            ("Phonetic", self.phonetic),
        ):
            if group:
                out[key] = group
        return out

    def components(self, group: str | None = None) -> tuple[str, str, str, str, str]:
        """The five components of a group: ``"alphabetic"``, ``"ideographic"`` or ``"phonetic"``.

        Without ``group``: the first non-empty group.
        """
        if group is None:
            text = self.alphabetic or self.ideographic or self.phonetic
        elif group in ("alphabetic", "ideographic", "phonetic"):
            text = getattr(self, group)
        else:
            raise ValueError(f"{group!r} is not a PN group (alphabetic, ideographic, phonetic)")
        parts = text.split("^")[:5]
        parts += [""] * (5 - len(parts))
        return parts[0], parts[1], parts[2], parts[3], parts[4]

    @property
    def family(self) -> str:
        """Family name (first component)."""
        return self.components()[0]

    @property
    def given(self) -> str:
        """Given name (second component)."""
        return self.components()[1]

    @property
    def middle(self) -> str:
        """Middle name (third component)."""
        return self.components()[2]

    @property
    def prefix(self) -> str:
        """Name prefix, e.g. ``Dr`` (fourth component)."""
        return self.components()[3]

    @property
    def suffix(self) -> str:
        """Name suffix, e.g. ``Jr`` (fifth component)."""
        return self.components()[4]

    def __str__(self) -> str:
        return "=".join((self.alphabetic, self.ideographic, self.phonetic)).rstrip("=")

    def __bool__(self) -> bool:
        return bool(self.alphabetic or self.ideographic or self.phonetic)


def _text(value: object, vr: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a {vr} value must be a JSON string, not {type(value).__name__}")
    return value.strip(STRIP)


_DA = lazy_pattern(globals(), "_DA", r"([0-9]{4})\.?([0-9]{2})\.?([0-9]{2})")
_TM = lazy_pattern(
    globals(), "_TM", r"([0-9]{2})(?::?([0-9]{2})(?::?([0-9]{2})(?:\.([0-9]{1,6}))?)?)?"
)
_DT = lazy_pattern(
    globals(),
    "_DT",
    r"([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})"
    r"(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,6}))?)?)?)?)?)?"
    r"(?:([+-])([0-9]{2})([0-9]{2}))?",
)


@functools.lru_cache(maxsize=8192)
def parse_da(text: str) -> datetime.date:
    """Parse a DA value ``YYYYMMDD`` (or the retired ``YYYY.MM.DD``); raise ``ValueError``."""
    try:
        return _parse_da_text(text)
    except ValueError as exc:
        raise ValueError(f"{_quote(text)} is not a DICOM date (YYYYMMDD): {exc}") from None


def _parse_da_text(text: str) -> datetime.date:
    if len(text) == 8 and text.isdigit() and text.isascii():
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    m = _DA.fullmatch(text.strip(STRIP))
    if m is None:
        raise ValueError("expected 8 digits")
    return datetime.date(int(m[1]), int(m[2]), int(m[3]))


def _fraction(text: str | None) -> int:
    return int(text.ljust(6, "0")) if text else 0


def parse_tm(text: str) -> datetime.time:
    """Parse a TM value ``HH[MM[SS[.F{1,6}]]]`` (also ``HH:MM:SS``); raise ``ValueError``.

    A leap second (``60``) reads as ``59``.
    """
    try:
        return _parse_tm_text(text)
    except ValueError as exc:
        raise ValueError(f"{_quote(text)} is not a DICOM time (HHMMSS.FFFFFF): {exc}") from None


def _parse_tm_text(text: str) -> datetime.time:
    if len(text) >= 6 and text[:6].isdigit() and text.isascii():  # quick path: HHMMSS[.F]
        fraction = text[7:]
        if len(text) == 6 or (text[6] == "." and 0 < len(fraction) <= 6 and fraction.isdigit()):
            return datetime.time(
                int(text[:2]), int(text[2:4]), min(int(text[4:6]), 59), _fraction(fraction)
            )
    m = _TM.fullmatch(text.strip(STRIP))
    if m is None:
        raise ValueError("expected HH[MM[SS[.F{1,6}]]]")
    second = min(int(m[3] or 0), 59)
    return datetime.time(int(m[1]), int(m[2] or 0), second, _fraction(m[4]))


def parse_dt(text: str) -> datetime.datetime:
    """Parse a DT value ``YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]``; raise ``ValueError``.

    Missing components take their lowest value; with a UTC offset the result is aware.
    """
    try:
        return _parse_dt_text(text)
    except ValueError as exc:
        raise ValueError(f"{_quote(text)} is not a DICOM date-time: {exc}") from None


def _parse_dt_text(text: str) -> datetime.datetime:
    m = _DT.fullmatch(text.strip(STRIP))
    if m is None:
        raise ValueError("expected YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]")
    tz = None
    if m[8]:
        delta = datetime.timedelta(hours=int(m[9]), minutes=int(m[10]))
        tz = datetime.timezone(-delta if m[8] == "-" else delta)
    return datetime.datetime(
        int(m[1]),
        int(m[2] or 1),
        int(m[3] or 1),
        int(m[4] or 0),
        int(m[5] or 0),
        min(int(m[6] or 0), 59),
        _fraction(m[7]),
        tzinfo=tz,
    )


def format_da(day: datetime.date) -> str:
    """A date as a DA value, ``YYYYMMDD``: 8 digits (``strftime`` writes the year 900 as 900)."""
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def format_tm(t: datetime.time) -> str:
    """A time as a TM value, ``HHMMSS`` or ``HHMMSS.FFFFFF``.

    Raises ``ValueError`` for a time with a UTC offset: TM has none, and dropping
    it would write another time than the one meant.
    """
    if t.utcoffset() is not None:
        raise ValueError(f"{t} has a UTC offset, which a TM value cannot hold; pass a naive time")
    text = f"{t.hour:02d}{t.minute:02d}{t.second:02d}"
    return f"{text}.{t.microsecond:06d}" if t.microsecond else text


def format_dt(dt: datetime.datetime) -> str:
    """A date-time as a DT value, ``YYYYMMDDHHMMSS[.FFFFFF]``, with ``&ZZXX`` when it is aware.

    Raises ``ValueError`` for a UTC offset that is not a whole number of minutes
    (DT has no place for seconds in it).
    """
    text = format_da(dt) + format_tm(dt.time())
    offset = dt.utcoffset()
    if offset is None:
        return text
    minutes, rest = divmod(offset, datetime.timedelta(minutes=1))
    if rest:
        raise ValueError(f"UTC offset {offset} is not a whole number of minutes (DT has &ZZXX)")
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}{minutes:02d}"


#: The range of each integer VR (PS3.5 Table 6.2-1): a value outside it is invalid.
INT_RANGES: dict[str, tuple[int, int]] = {
    "IS": (-(2**31), 2**31 - 1),
    "SS": (-(2**15), 2**15 - 1),
    "US": (0, 2**16 - 1),
    "SL": (-(2**31), 2**31 - 1),
    "UL": (0, 2**32 - 1),
    "SV": (-(2**63), 2**63 - 1),
    "UV": (0, 2**64 - 1),
}

#: The greatest magnitude below which every integer is exactly a float: a JSON
#: integer beyond 64 bits is decoded as a (rounded) float, which above this may
#: not be the number that was sent.
_EXACT_FLOAT_INT = 2**53

#: IS text (PS3.5 Table 6.2-1), after the padding is stripped: ASCII digits only.
_IS = lazy_pattern(globals(), "_IS", r"[+-]?[0-9]+", re.ASCII)
#: DS text (PS3.5 Table 6.2-1), after the padding is stripped: ASCII digits only.
_DS = lazy_pattern(
    globals(), "_DS", r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII
)


def parse_is(value: object, vr: str = "IS") -> int:
    """Parse an integer value (IS, US, UL, SS, SL, SV, UV): a JSON number or string.

    Raises ``ValueError`` for text that is not ``[+-]?[0-9]+`` (padding aside:
    ``"1_000"``, ``"1e3"``, ``"12.0"`` are not IS), for a float that is not an
    integer or is beyond 2**53 (a JSON integer too large for 64 bits arrives as a
    rounded float), and for a value outside the VR's range (:data:`INT_RANGES`).
    """
    if isinstance(value, bool):
        raise ValueError(f"a {vr} value must be a number, not a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not an integer")
        if abs(value) > _EXACT_FLOAT_INT:
            raise ValueError(f"{value!r} is not an exact integer (beyond 2**53 in a float)")
        number = int(value)
    else:
        text = _text(value, vr).strip()
        if not (text.isdigit() and text.isascii()) and _IS.fullmatch(text) is None:
            raise ValueError(f"{text[:40]!r} is not an integer")
        if len(text) > 64:  # far beyond every integer VR (and int()'s own digit limit)
            raise ValueError(f"{text[:40]!r}... is out of range for {vr}")
        number = int(text)
    bounds = INT_RANGES.get(vr)
    if bounds is not None and not bounds[0] <= number <= bounds[1]:
        raise ValueError(f"{number} is out of range for {vr} ({bounds[0]} to {bounds[1]})")
    return number


def parse_ds(value: object, vr: str = "DS") -> DSFloat:
    """Parse a Decimal String: a JSON number or string (``"1e3"``, ``" 72.50 "``).

    Raises ``ValueError`` for text that is not a DS
    (``[+-]?([0-9]+.?[0-9]*|.[0-9]+)([eE][+-]?[0-9]+)?``, padding aside: not
    ``"NaN"``, ``"inf"``, ``"1_000"``) and for a value that is not finite
    (``"1e400"`` would be infinity).
    """
    if isinstance(value, bool):
        raise ValueError(f"a {vr} value must be a number, not a boolean")
    if isinstance(value, int | float):
        text = repr(value)
        try:
            number = value if type(value) is float else float(value)
        except OverflowError:  # an int beyond a double
            raise ValueError(f"{text[:40]!r} is not a finite decimal number") from None
    else:
        text = _text(value, vr).strip()
        # Quick check for the common "72.50": ASCII digits around at most one point.
        if not (text.replace(".", "", 1).isdigit() and text.isascii()) and (
            _DS.fullmatch(text) is None
        ):
            raise ValueError(f"{text[:40]!r} is not a decimal number")
        number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:40]!r} is not a finite decimal number")
    return DSFloat(number, text)


def _parse_float(value: object, vr: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"a {vr} value must be a number, not a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip(STRIP).strip() in {"NaN", "Infinity", "-Infinity"}:
        return float(value.strip(STRIP).strip())
    raise ValueError(f"a {vr} value must be a JSON number, not {type(value).__name__}")


def _parse_str(value: object, vr: str) -> str:
    if type(value) is str:
        return value.strip(STRIP)
    return _text(value, vr)


#: String VRs whose leading spaces are significant (PS3.5 Table 6.2-1): only trailing
#: padding is stripped from them.  For UR leading spaces are not allowed, so one that
#: came is kept to be seen.  Every other string VR is stripped at both ends.
TEXT_VRS = frozenset({"ST", "LT", "UT", "UC", "UR"})


def _parse_text(value: object, vr: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a {vr} value must be a JSON string, not {type(value).__name__}")
    return value.rstrip(STRIP)


def _parse_at(value: object, vr: str) -> Tag:
    return Tag(_text(value, vr))


def _parse_pn(value: object, vr: str) -> PersonName:
    return PersonName.from_json(value)


def _parse_da(value: object, vr: str) -> datetime.date:
    return parse_da(_text(value, vr))


def _parse_tm(value: object, vr: str) -> datetime.time:
    return parse_tm(_text(value, vr))


def _parse_dt(value: object, vr: str) -> datetime.datetime:
    return parse_dt(_text(value, vr))


#: One-value parsers by VR: ``parser(json_value, vr) -> python value`` (``ValueError`` if bad).
PARSERS: dict[str, Callable[[object, str], Any]] = {
    "PN": _parse_pn,
    "DA": _parse_da,
    "TM": _parse_tm,
    "DT": _parse_dt,
    "DS": parse_ds,
    "AT": _parse_at,
    **dict.fromkeys(INT_VRS, parse_is),
    **dict.fromkeys(FLOAT_VRS, _parse_float),
    # Not for speed: the typed hooks' fast paths for strings take only VRs not in
    # PARSERS, which strip both ends; text VRs go through the generic path.
    **dict.fromkeys(TEXT_VRS, _parse_text),
}


def is_empty(value: object) -> bool:
    """Whether one JSON value means "no value": ``null``, ``""``, padding only, or a PN ``{}``.

    A PN object whose groups are all padding (``{"Alphabetic": "  "}``) is empty too,
    as its typed value (``None``) says.
    """
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip(STRIP)
    if isinstance(value, dict):
        for group in value.values():
            if group and (type(group) is not str or group.strip(STRIP)):
                return False
        return True
    return False


def parse_value(value: object, vr: str) -> Any:
    """Parse one non-empty JSON value of an element of the given VR; raise ``ValueError``."""
    return PARSERS.get(vr, _parse_str)(value, vr)


if not TYPE_CHECKING:
    # ``InvalidValue`` lives in :mod:`aqido._invalid`, imported on first use; type
    # checkers see the import above.
    __getattr__, __dir__ = lazy_exports(
        "aqido.values", globals(), {"InvalidValue": "aqido._invalid"}, ["InvalidValue"]
    )

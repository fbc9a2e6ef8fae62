"""The planner's date and time helpers: spans sent as ranges, ranges a server refuses, splits.

:func:`span_range`: aqido's answer to a single DA or TM value of less than full precision is
the span that precision covers (:mod:`aqido.matching`: ``StudyDate=2010``
is the year, ``StudyTime=10`` 10:00 to 10:59:59.999999, ``StudyTime=1015``
every second of that minute).  Servers such as Orthanc compare a single
value as text instead (``StudyTime=072700`` misses a stored ``0727``), and
no :class:`~aqido.profile.ServerProfile` field says so.  The planner sends
such a value as the range :func:`span_range` gives (what a server that
supports ranges matches as a superset of the span, even comparing text) and
filters the answer locally.

:func:`needs_range` says when a value would go out as a range on a key the server takes
none on (``ServerProfile.range_keys``); :func:`split_keys` which keys a crawl may split by.
"""

from __future__ import annotations

import calendar
import datetime
import re
from collections.abc import Container
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from aqido.partition import SPLIT_KEYS

if TYPE_CHECKING:  # pragma: no cover
    from aqido.profile import ServerProfile

_DA = re.compile(r"([0-9]{4})([0-9]{2})?")  # a year or a month: a full date is exact
_TM = re.compile(r"[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:\.[0-9]{1,6})?)?)?")
ZERO = datetime.timedelta(0)


def span_range(value: str, vr: str) -> str | None:
    """The range covering the span of one DA, TM or DT value (``None``: exact, or another VR).

    ``2010`` gives ``20100101-20101231``, ``201002`` gives ``20100201-20100228``;
    a TM value keeps its own text as the low bound (a shorter stored value such
    as ``10`` or ``1000`` sorts at or after it) and gets the last instant of its
    span as the high one: ``10`` gives ``10-105959.999999``.  A full date, a
    time with six fraction digits and anything malformed give ``None``.  A DT value:
    :func:`_dt_span`.
    """
    text = value.strip()
    if vr == "DA":
        m = _DA.fullmatch(text)
        if m is None:
            return None
        year, month = int(m.group(1)), m.group(2)
        if month is not None and not 1 <= int(month) <= 12:
            return None
        first, last = (int(month), int(month)) if month else (1, 12)
        end = calendar.monthrange(year, last)[1]
        return f"{year:04d}{first:02d}01-{year:04d}{last:02d}{end:02d}"
    if vr == "DT":
        return _dt_span(text)
    if vr == "TM" and _TM.fullmatch(text):
        whole, _, fraction = text.partition(".")
        if len(fraction) == 6:
            return None
        high = whole + "5959"[len(whole) - 2 :] + "." + fraction.ljust(6, "9")
        return f"{text}-{high}"
    return None


def _dt_span(text: str) -> str | None:
    """:func:`span_range` of a DT: from itself to the last instant of its span, offset kept.

    ``2010031510`` gives ``2010031510-20100315105959.999999``; ``None`` for a value with
    six fraction digits (exact), a ``-`` offset (it would read as a range) or a malformed one.
    """
    from aqido._temporal import dt_keys

    bare = text.partition("+")[0]  # without its offset
    keys = dt_keys(text, upper=True)
    if keys is None or "-" in text or len(bare.partition(".")[2]) == 6:
        return None
    return f"{text}-{keys[0][:14]}.{keys[0][14:]}{text[len(bare) :]}"


def text_form(value: str, vr: str, profile: ServerProfile) -> str | None:
    """:func:`text_range` of ``value``, for a server comparing text that takes such a range.

    ``None``: the server compares instants (not
    :attr:`~aqido.profile.ServerProfile.temporal_text`), takes no range of this form
    (``time_ranges``, ``date_ranges``, ``open_date_ranges``), or the value needs no change.
    """
    if not profile.temporal_text:
        return None
    from aqido.matching import match_form  # the planner has it loaded: no import cost

    closed = match_form(value, vr) == "range"
    ranges = profile.date_ranges if closed else profile.open_date_ranges
    return text_range(value, vr) if (profile.time_ranges if vr == "TM" else ranges) else None


def text_range(value: str, vr: str) -> str | None:
    """A TM or DT range in the form a server comparing text reads as aqido does (``None``: as is).

    For :attr:`~aqido.profile.ServerProfile.temporal_text` (Orthanc): the low bound loses
    its trailing zeros (``030500`` → ``0305``: a stored ``0305`` sorts at or after it), the
    high bound gets the last instant of its precision (``0400`` → ``040059.999999``, as
    :func:`span_range` gives it), so the text comparison finds every stored form of the
    times in the range.  A DT range: :func:`_dt_text_range`.  Not DA: a date has one form.
    """
    if vr == "DT" and "," not in value and value.count("-") == 1:
        return _dt_text_range(value)
    if vr != "TM" or "," in value:
        return None
    low, dash, high = (part.strip() for part in value.partition("-"))
    if not dash or not all(_TM.fullmatch(part) for part in (low, high) if part):
        return None
    if low:
        whole, _, fraction = low.partition(".")
        fraction = fraction.rstrip("0")
        while not fraction and len(whole) > 2 and whole.endswith("00"):
            whole = whole[:-2]
        low = f"{whole}.{fraction}" if fraction else whole
    high_span = span_range(high, vr) if high else None
    high = high_span.partition("-")[2] if high_span else high
    text = f"{low}-{high}"
    return None if text == value else text


def _dt_text_range(value: str) -> str | None:
    """A DT range as text comparison reads it: every stored form of its instants within.

    aqido reads a DT bound as an instant (a bound of less precision: the first instant of
    its span for a low bound, the last for a high one; a stored value of less precision:
    its first instant), and compares a stored value and a bound in UTC when both carry an
    offset.  Compared as text (Orthanc), ``20100315-20100315`` finds ``20100315`` alone,
    not ``20100315103000``.  The low bound goes out as the shortest text of its instant
    (``20100315103000`` → ``201003151030``: a stored ``201003151030`` sorts at or after
    it, and so does ``20100315103000.5+0100``), the high one as the shortest text of the
    instant after its span (``2010031510`` → ``2010031511``: every stored form of 10:59
    sorts before it, ``20100315105959.999999+0100`` too).  A bound with a UTC offset is
    widened by a day on its side, offset dropped (a stored value's offset is at most 14
    hours, and one without is compared as written).  The planner filters the answer.
    ``None``: a malformed bound (the value goes out as it is, and aqido's check says so).
    """
    low, _, high = value.partition("-")
    sent = [_dt_bound(text, upper) if text else "" for text, upper in ((low, False), (high, True))]
    text = None if None in sent else "-".join(b or "" for b in sent)
    return None if text == value else text


def _dt_bound(text: str, upper: bool) -> str | None:
    """One DT bound as :func:`_dt_text_range` sends it (``None``: malformed)."""
    from aqido._temporal import dt_keys

    keys = dt_keys(text, upper=upper)
    if keys is None:
        return None
    key = keys[1] or keys[0]  # in UTC when it has an offset (five-digit year)
    year, r = int(key[:-16]), [int(key[i : i + 2]) for i in range(-16, -6, 2)]
    try:
        stamp = datetime.datetime(year, r[0], r[1], r[2], r[3], r[4], int(key[-6:]))
        stamp += datetime.timedelta(days=1 if upper else -1) if keys[1] else ZERO
        stamp += datetime.timedelta(microseconds=1) if upper else ZERO
    except (ValueError, OverflowError):  # past year 1 or 9999: the first or last instant
        stamp = datetime.datetime.max if upper else datetime.datetime.min
    whole = f"{stamp.year:04d}{stamp.month:02d}{stamp.day:02d}{stamp:%H%M%S}"
    fraction = f"{stamp.microsecond:06d}".rstrip("0")
    if fraction:
        return f"{whole}.{fraction}"
    for first in ("00", "00", "00", "01", "01"):  # second, minute, hour, day, month
        if not whole.endswith(first):
            break
        whole = whole[:-2]
    return whole


def full_dates(value: str, vr: str) -> str | None:
    """A DA range with every bound at full precision (``None``: nothing to widen).

    aqido reads a bound of less precision as the span it covers (:mod:`aqido.matching`:
    ``2008-2013`` is 20080101 to 20131231, ``-201303`` until 20130331).  Sent as written,
    a server comparing text (Orthanc) misses every date of 2013 (``20130315`` sorts after
    ``2013``) and one that wants ``YYYYMMDD`` refuses it (tiny_pacs: 400); the full dates
    (``20080101-20131231``) mean the same to aqido and to every server.  Malformed bounds
    stay as they are.
    """
    if vr != "DA" or "," in value:
        return None
    low, dash, high = (part.strip() for part in value.partition("-"))
    if not dash:
        return None
    low_span, high_span = (span_range(part, vr) if part else None for part in (low, high))
    low = low_span.partition("-")[0] if low_span else low
    high = high_span.partition("-")[2] if high_span else high
    text = f"{low}-{high}"
    return None if text == value else text


def number_forms(value: str, vr: str) -> str | None:
    """An IS or DS value together with its plain form, as a list (``None``: it is plain).

    aqido compares numbers by value (``SeriesNumber=01`` finds a stored ``1``); a server
    comparing the text (Orthanc, whose dates and times show it:
    :attr:`~aqido.profile.ServerProfile.temporal_text`) finds nothing.  ``01,1`` finds
    both texts there and is the same number to a server that compares values; the
    planner filters the answer.
    (A stored text in a third form, ``002`` for ``2.0``, stays out of reach there.)
    """
    if vr not in ("IS", "DS") or "," in value:
        return None
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    plain = format(number.normalize(), "f")
    return None if plain == value else f"{value},{plain}"


def needs_range(value: str, vr: str, keyword: str, range_keys: Container[str] | None) -> bool:
    """Whether ``value`` would go out as a range on a key the server takes no range on.

    A range (``d1-d2``, ``-d``, ``d-``, in a list too) or a value sent as the range of
    its span (:func:`span_range`), of a date, time or datetime attribute outside
    ``range_keys`` (:attr:`~aqido.profile.ServerProfile.range_keys`; ``None``: every
    key takes ranges).  The planner matches such a key locally.
    """
    if range_keys is None or keyword in range_keys or vr not in ("DA", "TM", "DT"):
        return False
    from aqido.matching import match_form  # the planner has it loaded: no import cost

    return any(
        match_form(item, vr) in ("range", "open_range") or span_range(item, vr) is not None
        for item in value.split(",")
    )


def fuzzy_note(fuzzy: bool, profile: ServerProfile | None) -> str | None:
    """Why a search with ``fuzzymatching=true`` got literal matching (``None``: it did not).

    Fuzzy matching is optional (PS3.18 8.3.4.2): a server without it matches literally and
    says so in a ``299`` Warning.  A server whose profile says it ignores the parameter
    silently (:attr:`~aqido.profile.ServerProfile.fuzzy_matching` ``"ignored"``: tiny_pacs,
    Orthanc) gets the name planned as without it (the standard's literal answer, not
    tiny_pacs' substrings), and aqido says what the server did not.  One that refuses it
    (``"error"``: a 4xx) is not sent it at all (:func:`aqido.plan.plan_query`): the name is
    planned as without it there too, and aqido says so.
    """
    if not fuzzy or profile is None:
        return None
    if profile.fuzzy_matching == "error":
        return (
            "fuzzymatching: the server refuses fuzzy matching (its profile: "
            "fuzzy_matching='error'), so fuzzymatching=true was not sent; only literal "
            "matching has been performed"
        )
    if profile.fuzzy_matching != "ignored":
        return None
    return (
        "fuzzymatching: the server does not support fuzzy matching (its profile: "
        "fuzzy_matching='ignored'); only literal matching has been performed"
    )


def split_keys(profile: ServerProfile | None) -> frozenset[str]:
    """The keys a crawl may split an overflowing listing by, on a server with ``profile``.

    Splitting by StudyDate needs closed and open date ranges, by StudyTime
    time ranges, by ModalitiesInStudy or Modality single values; and each key
    must be one the server matches (:attr:`ServerProfile.matched_keys`).  A
    split by a key the server ignores would only repeat the same answer.
    """
    if profile is None:
        return SPLIT_KEYS
    usable = set(SPLIT_KEYS)
    if not (profile.date_ranges and profile.open_date_ranges):
        usable.discard("StudyDate")
    if not profile.time_ranges:
        usable.discard("StudyTime")
    if profile.range_keys is not None:  # a split sends ranges
        usable -= {"StudyDate", "StudyTime"} - set(profile.range_keys)
    if profile.matched_keys is not None:
        usable &= set(profile.matched_keys)
    return frozenset(usable)

"""Sortable keys of DA, TM and DT values, for range matching (:mod:`aqido.matching`).

Pure text-and-arithmetic helpers, no I/O.  A key is a string of digits that
sorts as the instants it stands for: left-out components are filled in with
the earliest value (for a low bound or a stored value) or the latest (for a
high bound), so ``"1300"`` as a high TM bound covers 13:00:59.999999, and a
DT with a UTC offset also has a key in UTC.  ``None`` stands for a malformed value.
A match value (``partial=True``) may also be a DA of reduced precision, as the
query accepts it: ``"2024"`` is the whole year, ``"202403"`` the whole month.
"""

from __future__ import annotations

import calendar
import datetime as _datetime
import re

__all__ = ["dt_in_range", "dt_keys", "temporal_key"]

_DA = re.compile(r"[0-9]{8}")
#: A DA match value: a year, a month or a day (``YYYY[MM[DD]]``).
_DA_PARTIAL = re.compile(r"[0-9]{4}(?:[0-9]{2}){0,2}")
_TM = re.compile(r"([0-9]{2})([0-9]{2})?([0-9]{2})?(?:\.([0-9]{1,6}))?")
_DT = re.compile(
    r"([0-9]{4})([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?"
    r"(?:\.([0-9]{1,6}))?(?:([+-])([0-9]{2})([0-9]{2}))?"
)


def _tm_key(value: str, *, upper: bool) -> str | None:
    """A TM as a sortable HHMMSSffffff; missing parts are zeros, or the maximum for ``upper``."""
    m = _TM.fullmatch(value.strip().replace(":", ""))
    if m is None:
        return None
    hh, mm, ss, frac = m.groups()
    if int(hh) > 23 or (mm is not None and int(mm) > 59) or (ss is not None and int(ss) > 60):
        return None
    if ss == "60":  # a leap second is in its minute: read as 59, as parse_tm and dt_keys do
        ss = "59"
    fill = "59" if upper else "00"
    if frac is None and ss is None:
        frac = ""
    return f"{hh}{mm or fill}{ss or fill}{(frac or '').ljust(6, '9' if upper else '0')}"


def temporal_key(value: str, vr: str, *, upper: bool, partial: bool = False) -> str | None:
    """A sortable text for a DA, TM or DT value (``None`` if malformed).

    ``partial``: ``value`` is a match value, so a DA may also be a year or a
    month (``YYYY[MM]``), which stands for its whole span (a stored DA is a day).
    """
    if vr == "DA":
        v = value.strip().replace(".", "")
        if (_DA_PARTIAL if partial else _DA).fullmatch(v) is None:
            return None
        month, day = v[4:6] or "01", v[6:8] or "01"
        if not ("01" <= month <= "12" and "01" <= day <= "31"):
            return None
        return v.ljust(8, "9" if upper else "0")
    if vr == "TM":
        return _tm_key(value, upper=upper)
    keys = dt_keys(value, upper=upper)
    return None if keys is None else keys[0]


def dt_keys(value: str, *, upper: bool) -> tuple[str, str | None] | None:
    """A DT as sortable ``YYYYMMDDHHMMSSffffff`` texts: as written, and in UTC if it has an offset.

    The UTC text has a five-digit year (``0000``-``10000`` fit, :func:`_utc_text`).

    Left-out components are the earliest (or, for ``upper``, the latest) the
    value allows: ``"2024"`` spans 20240101000000000000 to 20241231235959999999.
    ``None`` for a malformed value.
    """
    m = _DT.fullmatch(value.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = m.groups()
    try:
        y = int(year)
        mo = int(month) if month else (12 if upper else 1)
        last = calendar.monthrange(y, mo)[1] if 1 <= mo <= 12 else 0
        stamp = _datetime.datetime(
            y,
            mo,
            int(day) if day else (last if upper else 1),
            int(hour) if hour else (23 if upper else 0),
            int(minute) if minute else (59 if upper else 0),
            min(int(second), 59) if second else (59 if upper else 0),
            int(fraction.ljust(6, "9" if upper else "0")) if fraction else (999999 if upper else 0),
        )
        utc = None
        if sign:
            offset = _datetime.timedelta(hours=int(off_h), minutes=int(off_m))
            utc = _utc_text(stamp, offset if sign == "+" else -offset)
    except (ValueError, OverflowError):  # month 13, day 32, hour 24, a year out of range...
        return None
    return _stamp_text(stamp), utc


def _utc_text(stamp: _datetime.datetime, offset: _datetime.timedelta) -> str:
    """``stamp`` at UTC ``offset`` as a sortable text in UTC, with a five-digit year.

    In UTC a DT of the year 1 or 9999 may fall in the year 0 or 10000, which
    :class:`datetime.datetime` cannot hold: the arithmetic is done 400 years
    away (the Gregorian calendar repeats every 400 years) and the year put back.
    UTC keys are only compared with one another, so their width differs from
    the written key's.
    """
    shift = 400 if stamp.year <= 400 else -400
    utc = stamp.replace(year=stamp.year + shift) - offset
    return f"{utc.year - shift:05d}{_stamp_text(utc)[4:]}"


def _stamp_text(stamp: _datetime.datetime) -> str:
    return (
        f"{stamp.year:04d}{stamp.month:02d}{stamp.day:02d}{stamp.hour:02d}"
        f"{stamp.minute:02d}{stamp.second:02d}{stamp.microsecond:06d}"
    )


def dt_in_range(
    value: str, low: tuple[str, str | None] | None, high: tuple[str, str | None] | None
) -> bool:
    """Whether a stored DT lies within the bounds (``None``: open), offsets taken into account.

    When the value and a bound both carry a UTC offset they are compared in UTC
    (PS3.4 C.2.2.2.5); otherwise as written, since nothing says which offset the
    one without would have.
    """
    keys = dt_keys(value, upper=False)
    if keys is None:
        return False
    written, utc = keys
    for bound, below in ((low, False), (high, True)):
        if bound is None:
            continue
        mine, theirs = (
            (utc, bound[1])
            if utc is not None and bound[1] is not None
            else (
                written,
                bound[0],
            )
        )
        if (mine > theirs) if below else (mine < theirs):
            return False
    return True

"""The DA, TM and DT values and ranges a query's ``filters`` may hold (pure).

:func:`check_range_value` is what :mod:`aqido._query_values` runs on a filter
of one of those VRs: a value the local matcher cannot read, or a range that
ends before it starts, raises :class:`~aqido.errors.InvalidQueryError`.
"""

from __future__ import annotations

import itertools

from aqido.errors import InvalidQueryError

_RANGE_CHARS = {"DA": "0123456789.", "TM": "0123456789.:", "DT": "0123456789.+"}


def check_range_value(key: str, vr: str, value: str) -> None:
    """Raise unless ``value`` of ``filters[key]`` (VR DA, TM or DT) is one value or a range."""
    fix = (
        f"use a single {vr} value or a range 'low-high', 'low-' or '-high' "
        "(inclusive; no wildcards)"
    )
    # For DT, '-' is both the range separator and a negative UTC offset: only the
    # range dash is accepted, so send DT bounds in UTC or with '+' offsets.
    dt_hint = "; give DT values in UTC or with '+' offsets, as '-' is the range separator"
    bounds = value.split("-")
    if len(bounds) > 2 or value == "-":
        if vr == "DT":
            for low, high in itertools.pairwise(bounds):
                if low and "+" not in low and _is_offset(high):  # 'd-0500-...'
                    raise InvalidQueryError(_negative_offset(key, value, low, high))
            fix += dt_hint
        raise InvalidQueryError(f"filters[{key!r}]: {value!r} is not a {vr} range; {fix}")
    if vr == "DT" and len(bounds) == 2 and _reads_as_offset(*bounds):
        # '20100315103000-0500': a DT at UTC-05:00 to a reader, an empty range to a server
        raise InvalidQueryError(_negative_offset(key, value, *bounds))
    for bound, upper in zip(bounds, (False, True), strict=False):
        # Digits first: '.', ':' or '+' alone ('.-.', '+') is no value at all.  Then
        # the value itself (:func:`_is_temporal`): a month 13, a TM of 25 hours or of
        # three digits are refused here, before any request.
        if (
            any(c not in _RANGE_CHARS[vr] for c in bound)
            or (bound and not bound[0].isdigit())
            or (bound and not _is_temporal(vr, bound, upper=upper))
        ):
            raise InvalidQueryError(
                f"filters[{key!r}]: {bound!r} in {value!r} is not a {vr} value; {fix}"
            )
    if len(bounds) == 2 and all(bounds):
        empty = (
            _dt_empty(*bounds)
            if vr == "DT"
            else _range_key(vr, bounds[0], high=False) > _range_key(vr, bounds[1], high=True)
        )
        if empty:
            if vr == "TM":
                hint = "a TM range cannot cross midnight: split it into two queries"
            elif vr == "DT":
                hint = "swap the bounds" + dt_hint
            else:
                hint = "swap the bounds"
            raise InvalidQueryError(
                f"filters[{key!r}]: range {value!r} starts after it ends; {hint}"
            )


def _is_temporal(vr: str, bound: str, *, upper: bool) -> bool:
    """Whether a range bound (or single value) reads as a DA, TM or DT value.

    Exactly as the local matcher reads a match value (:mod:`aqido._temporal`,
    reduced precision included): a DA as ``YYYY[MM[DD]]`` (``.`` of the retired
    form dropped), a year or a month standing for its whole span, and whose
    month and day, when given, exist; a DT's UTC offset must be one PS3.5
    allows (``+0000`` to ``+1400``: a server may read ``+2400`` as UTC).
    """
    from aqido._temporal import temporal_key  # the matcher's reading (not at import)

    if vr == "DT" and "+" in bound:  # PS3.5 6.2: an offset is -1200 to +1400, minutes 00-59
        offset = bound.partition("+")[2]
        if not (offset.isdigit() and offset[2:] < "60" and offset <= "1400"):
            return False
    return temporal_key(bound, vr, upper=upper, partial=True) is not None


def _range_key(vr: str, bound: str, *, high: bool) -> str:
    """A DA or TM range bound as comparable digits, missing digits filled in.

    The digits left out of a shorter value (``"12"`` for a TM) are filled with
    ``0`` for a low bound and ``9`` for a high one, so that ``"220000"`` and
    ``"02"`` compare as the times they stand for; separators (``.`` of the
    retired DA form, ``:`` of the old TM form) are dropped.  DT: :func:`_dt_empty`.
    """
    fill = "9" if high else "0"
    if vr == "DA":
        return bound.replace(".", "").ljust(8, fill)
    main, _, fraction = bound.replace(":", "").partition(".")
    return main.ljust(6, fill) + fraction.ljust(6, fill)


def _is_offset(text: str) -> bool:
    """Whether ``text`` has the form of a UTC offset's digits (``HHMM``, HH to 14, MM to 59)."""
    return len(text) == 4 and text.isascii() and text.isdigit() and text < "1460" and text[2] < "6"


def _reads_as_offset(low: str, high: str) -> bool:
    """Whether DT ``low-high`` is a value with a negative offset, as a range nothing or no range.

    ``20100315103000-0500`` (to the year 500), ``2010-0000`` (to the year 0); not
    ``0400-0500``, which is the range of years it reads as, nor a ``low`` with its own offset.
    """
    return (
        bool(low)
        and "+" not in low
        and _is_offset(high)
        and _is_temporal("DT", low, upper=False)
        and (not _is_temporal("DT", high, upper=True) or _dt_empty(low, high))
    )


def _dt_empty(low: str, high: str) -> bool:
    """Whether the DT range ``low-high`` (valid bounds) holds no instant, as aqido matches it.

    :func:`aqido._temporal.dt_in_range`: in UTC when the stored value and a bound both
    carry an offset, as written otherwise.  With both bounds' offsets (or neither) that is
    one comparison; with one bound's offset only, a stored value with an offset is
    compared in UTC with that bound and as written with the other, which differ by its
    offset (at most 14 hours): the range is empty when a day does not bridge its bounds.
    """
    import datetime

    from aqido._temporal import dt_keys

    lows, highs = dt_keys(low, upper=False), dt_keys(high, upper=True)
    if lows is None or highs is None:
        return False
    if (lows[1] is None) is (highs[1] is None):
        return (lows[1] or lows[0]) > (highs[1] or highs[0])  # UTC keys: five-digit years

    def instant(key: str) -> datetime.datetime:
        return datetime.datetime.strptime(key[:14], "%Y%m%d%H%M%S")

    try:
        return instant(lows[0]) - datetime.timedelta(days=1) > instant(highs[0])
    except (ValueError, OverflowError):  # a year before 1000 (no %Y), or before the year 1
        return lows[0] > highs[0]


def _negative_offset(key: str, value: str, low: str, offset: str) -> str:
    """The message for a DT ``low-offset`` (in ``value``) that reads as a negative offset."""
    utc = utc_form(f"{low}-{offset}")
    if value == f"{low}-{offset}":  # one value: a server reads an empty range
        reading = f"a range from {low!r} to the year {offset}, which holds nothing"
    else:
        reading = "a range separator, and a DT range has no room for a negative offset"
    return (
        f"filters[{key!r}]: {value!r} is ambiguous: '-' is also the DT range separator, so "
        f"'{low}-{offset}' ({low!r} at the UTC offset -{offset}) reads as {reading}; write "
        f"it in UTC{f' ({utc!r})' if utc else ''} or with a '+' offset, and a range with "
        "its bounds so ('low-high')"
    )


def utc_form(value: str) -> str | None:
    """A DT with a negative UTC offset as the same span in UTC (``+0000``), if one DT holds it.

    ``20100315103000-0500`` gives ``20100315153000+0000``, ``2010031510-0500``
    ``2010031515+0000``.  ``None`` when no single DT covers the same span: a value
    without its hour (a day at UTC-05:00 runs over two UTC days), an offset with minutes
    on a value without them, an offset beyond PS3.5's -1200, a malformed value.
    """
    import datetime

    main, _, offset = value.rpartition("-")
    digits, dot, fraction = main.partition(".")
    if not (_is_offset(offset) and offset <= "1200" and digits.isascii() and digits.isdigit()):
        return None
    size = len(digits)
    if size not in (10, 12, 14) or (size == 10 and offset[2:] != "00") or (dot and size < 14):
        return None
    try:
        stamp = datetime.datetime.strptime(digits.ljust(14, "0"), "%Y%m%d%H%M%S")
        stamp += datetime.timedelta(hours=int(offset[:2]), minutes=int(offset[2:]))
    except (ValueError, OverflowError):  # a year before 1000 (no %Y), past 9999
        return None
    text = f"{stamp.year:04d}{stamp:%m%d%H%M%S}"[:size]
    return f"{text}{dot}{fraction}+0000"

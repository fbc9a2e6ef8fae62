"""The DA, TM and DT values and ranges a query's ``filters`` may hold (pure).

:func:`check_range_value` is what :mod:`aqido._query_values` runs on a filter
of one of those VRs: a value the local matcher cannot read, or a range that
ends before it starts, raises :class:`~aqido.errors.InvalidQueryError`.
"""

from __future__ import annotations

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
            fix += dt_hint
        raise InvalidQueryError(f"filters[{key!r}]: {value!r} is not a {vr} range; {fix}")
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
        (low, low_offset), (high, high_offset) = (
            _range_key(vr, bounds[0], high=False),
            _range_key(vr, bounds[1], high=True),
        )
        if low > high and low_offset == high_offset:
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


def _range_key(vr: str, bound: str, *, high: bool) -> tuple[str, str]:
    """A range bound as comparable digits (and its ``+`` offset), missing digits filled in.

    The digits left out of a shorter value (``"12"`` for a TM, ``"2024"`` for a
    DT) are filled with ``0`` for a low bound and ``9`` for a high one, so that
    ``"220000"`` and ``"02"`` compare as the times they stand for; separators
    (``.`` of the retired DA form, ``:`` of the old TM form) are dropped.
    """
    fill = "9" if high else "0"
    if vr == "DA":
        return bound.replace(".", "").ljust(8, fill), ""
    offset = ""
    if vr == "DT":
        bound, _, offset = bound.partition("+")
    main, _, fraction = bound.replace(":", "").partition(".")
    return main.ljust(6 if vr == "TM" else 14, fill) + fraction.ljust(6, fill), offset

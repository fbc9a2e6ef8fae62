"""Sans-I/O rules for complete crawls: when is a response possibly truncated, how to split a query.

Nothing here does I/O; :func:`aqido.crawl.crawl` drives it.

When an answer may be truncated (:class:`Caps`, :func:`looks_capped`,
:func:`looks_like_cap_plus_one`) is decided in :mod:`aqido._caps`, which a
plain search imports without the splitting here; those names are re-exported.

A possibly truncated part is paged with ``offset``; paging is trusted only
if it got past what a server that caps *before* the offset (Orthanc) could
return (more than cap + 1 items, or as many as a 299 warning announced);
otherwise, or if a page repeats earlier items (``offset`` ignored), the query
is split (:func:`split_study_query`):

1. ``StudyDate`` ranges, halved down to single days (a query without dates
   first becomes ``-18991231``, ``19000101-<today>`` and ``<tomorrow>-``);
2. on one day, ``StudyTime`` ranges, halved (on hour, then minute boundaries)
   down to one second; the first and last parts keep the query's own bounds as
   written (a fraction of a second included), so no part is wider than the query;
3. in one second, one query per ``ModalitiesInStudy`` value (those seen in the
   truncated answer plus the standard modality codes).

A study's overflowing series listing is split by ``Modality``
(:func:`split_series_query`); a series' instances cannot be split (no range
matching on InstanceNumber, no wildcards on UIDs), so they rely on paging.

Parts may overlap (a study with two modalities); the crawl de-duplicates by
UID.  What splitting cannot reach is documented in docs/crawling.md: studies with
no ``StudyDate`` (or no ``StudyTime`` on an overflowing day, or no known
modality in an overflowing second) that are not in the truncated answer.  The
crawl notices them only when the server announced a total (299 warning count).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Container, Iterable, Mapping
from typing import Any

import attrs

from aqido import dictionary
from aqido._caps import SUSPECT_ALWAYS as SUSPECT_ALWAYS
from aqido._caps import SUSPECT_MIN as SUSPECT_MIN
from aqido._caps import Caps as Caps
from aqido._caps import ServerLimit as ServerLimit
from aqido._caps import check_server_limit as check_server_limit
from aqido._caps import looks_capped as looks_capped
from aqido._caps import looks_like_cap_plus_one as looks_like_cap_plus_one
from aqido._lazy import lazy_pattern
from aqido.query import BaseQuery

#: Modality codes tried when one second of one day still overflows (DICOM CID 33 and
#: common older codes).
MODALITIES = (
    "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CR", "CT", "CTPROTOCOL", "DG", "DOC", "DX",
    "ECG", "EPS", "ES", "FID", "GM", "HC", "HD", "IO", "IOL", "IVOCT", "IVUS", "KER", "KO",
    "LEN", "LS", "MG", "MR", "M3D", "NM", "OAM", "OCT", "OP", "OPM", "OPT", "OPTBSV",
    "OPTENF", "OPV", "OSS", "OT", "PLAN", "PR", "PT", "PX", "REG", "RESP", "RF", "RG",
    "RTDOSE", "RTIMAGE", "RTINTENT", "RTPLAN", "RTRAD", "RTRECORD", "RTSEGANN", "RTSTRUCT",
    "RWV", "SEG", "SM", "SMR", "SR", "SRF", "STAIN", "TEXTUREMAP", "TG", "US", "VA", "XA",
    "XAPROTOCOL", "XC",
)  # fmt: skip

#: Lowest and highest dates used to compute midpoints of open ranges (the outermost
#: parts stay open, so dates outside these are still matched).
FLOOR = _dt.date(1000, 1, 1)
CEILING = _dt.date(9999, 12, 31)
#: Where an undated crawl starts splitting: ``-18991231``, ``19000101-today``, ``tomorrow-``.
EPOCH = _dt.date(1900, 1, 1)

_DAY_SECONDS = 86400
_STUDY_DATE = "00080020"
_STUDY_TIME = "00080030"
_MODALITIES_IN_STUDY = "00080061"
_MODALITY = "00080060"
#: A StudyDate value or range; each date YYYYMMDD or the retired YYYY.MM.DD.
_DA = lazy_pattern(
    globals(),
    "_DA",
    r"^\s*(\d{4}\.?\d{2}\.?\d{2})?\s*(-)?\s*(\d{4}\.?\d{2}\.?\d{2})?\s*$",
)
_TM = lazy_pattern(globals(), "_TM", r"^(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?(?:\.\d*)?$")


# --- dates and times --------------------------------------------------------------------------


def _parse_da(text: str) -> _dt.date | None:
    digits = text.replace(".", "")  # the retired form YYYY.MM.DD is the same day
    if len(digits) != 8:
        return None
    try:
        return _dt.datetime.strptime(digits, "%Y%m%d").date()
    except ValueError:
        return None


def _filter(query: BaseQuery, key: str) -> tuple[str, str] | None:
    tag = dictionary.parse_tag_key(key)
    for name, value in query.filters:
        if "." not in name and dictionary.resolve(name)[0] == tag:
            return name, value
    return None


def _without(query: BaseQuery, key: str) -> tuple[tuple[str, str], ...]:
    found = _filter(query, key)
    return tuple(pair for pair in query.filters if pair != found)


def date_bounds(query: BaseQuery) -> tuple[_dt.date | None, _dt.date | None] | None:
    """The query's ``StudyDate`` range as ``(low, high)`` (``None`` = open), or ``None``.

    Returns ``(None, None)`` for a query without any date, and ``None`` for a
    ``StudyDate`` filter that is not a plain date or date range (``YYYYMMDD``,
    or the retired ``YYYY.MM.DD``).
    """
    if query.min_study_date is not None or query.max_study_date is not None:
        return query.min_study_date, query.max_study_date
    found = _filter(query, _STUDY_DATE)
    if found is None:
        return None, None
    match = _DA.match(found[1])
    if match is None:
        return None
    low_text, dash, high_text = match.groups()
    low = _parse_da(low_text) if low_text else None
    high = _parse_da(high_text) if high_text else None
    if (low_text and low is None) or (high_text and high is None):
        return None
    if not dash:
        if low is None:
            return None
        return low, low
    return low, high


def _tm_seconds(text: str, *, upper: bool) -> int | None:
    match = _TM.match(text.strip())
    if match is None:
        return None
    hh, mm, ss = match.groups()
    fill = 59 if upper else 0
    seconds = int(hh) * 3600 + (int(mm) if mm else fill) * 60 + (int(ss) if ss else fill)
    return seconds if 0 <= seconds < _DAY_SECONDS else None


def time_bounds(query: BaseQuery) -> tuple[int, int] | None:
    """The query's ``StudyTime`` range in seconds of the day, inclusive; ``None`` if unusable.

    No ``StudyTime`` filter is the whole day ``(0, 86399)``.  Fractions of a
    second are dropped (``100000.5`` is second 36000): the seconds say where
    to cut, never what a part's outer bounds are (:func:`_time_texts`).
    """
    found = _filter(query, _STUDY_TIME)
    if found is None:
        return 0, _DAY_SECONDS - 1
    low_text, dash, high_text = found[1].partition("-")
    if not dash:
        return None
    low = _tm_seconds(low_text, upper=False) if low_text else 0
    high = _tm_seconds(high_text, upper=True) if high_text else _DAY_SECONDS - 1
    if low is None or high is None or low > high:
        return None
    return low, high


def _time_texts(query: BaseQuery) -> tuple[str | None, str | None]:
    """The query's own ``StudyTime`` bounds as written (``""``: open), ``(None, None)`` if none.

    The outermost parts of a split by time keep these exactly: rebuilt from
    :func:`time_bounds`' whole seconds, ``100000.5-100001`` would become
    ``10-100001.999999``, wider than the query on both sides, and the parts
    would return studies the query does not match.
    """
    found = _filter(query, _STUDY_TIME)
    if found is None:
        return None, None
    low, _, high = found[1].partition("-")
    return low.strip(), high.strip()


def _tm_low(seconds: int) -> str:
    """A lower TM bound, with trailing zero components left out (``"12"`` for 12:00:00).

    Short bounds keep reduced-precision stored times (``"1230"``) inside the
    range on servers that compare TM values as text.
    """
    hh, rest = divmod(seconds, 3600)
    mm, ss = divmod(rest, 60)
    if ss:
        return f"{hh:02d}{mm:02d}{ss:02d}"
    if mm:
        return f"{hh:02d}{mm:02d}"
    return f"{hh:02d}"


def _tm_high(seconds: int) -> str:
    """An upper TM bound covering the whole second (fractions included)."""
    hh, rest = divmod(seconds, 3600)
    mm, ss = divmod(rest, 60)
    return f"{hh:02d}{mm:02d}{ss:02d}.999999"


def _midpoint(low: int, high: int) -> int:
    """Where to cut ``[low, high]`` seconds: the middle, on an hour or minute if possible."""
    mid = (low + high + 1) // 2
    for step in (3600, 60):
        if high - low >= 2 * step:
            aligned = mid - mid % step
            if low < aligned <= high:
                return aligned
    return mid


# --- splitting --------------------------------------------------------------------------------


def _with_dates(query: BaseQuery, low: _dt.date | None, high: _dt.date | None) -> BaseQuery:
    return attrs.evolve(
        query,
        filters=_without(query, _STUDY_DATE),
        min_study_date=low,
        max_study_date=high,
        limit=0,
        offset=0,
    )


def _split_dates(
    query: BaseQuery, low: _dt.date | None, high: _dt.date | None, today: _dt.date
) -> list[BaseQuery] | None:
    if low is None and high is None:
        start = min(EPOCH, today)
        return [
            _with_dates(query, None, start - _dt.timedelta(days=1)),
            _with_dates(query, start, today),
            _with_dates(query, today + _dt.timedelta(days=1), None),
        ]
    first = low if low is not None else FLOOR
    last = high if high is not None else CEILING
    if first >= last:
        return None
    middle = first + (last - first) // 2
    return [
        _with_dates(query, low, middle),
        _with_dates(query, middle + _dt.timedelta(days=1), high),
    ]


def _with_time(query: BaseQuery, low: str, high: str) -> BaseQuery:
    """``query`` with the StudyTime range ``low-high`` (TM texts) in place of its own."""
    value = f"{low}-{high}"
    return attrs.evolve(
        query, filters=(*_without(query, _STUDY_TIME), ("StudyTime", value)), limit=0, offset=0
    )


def _sample_modalities(sample: Iterable[Mapping[str, Any]], key: str) -> set[str]:
    found: set[str] = set()
    for item in sample:
        element = item.get(key)
        values = element.get("Value") if isinstance(element, Mapping) else None
        if not isinstance(values, list):  # a malformed sample item: nothing to learn from it
            continue
        for value in values:
            if isinstance(value, str) and value.strip():
                found.add(value.strip())
    return found


#: The keys a query can be split by (all of them, on a server that matches them all).
SPLIT_KEYS = frozenset({"StudyDate", "StudyTime", "ModalitiesInStudy", "Modality"})


def split_study_query(
    query: BaseQuery,
    sample: Iterable[Mapping[str, Any]] = (),
    today: _dt.date | None = None,
    *,
    keys: Container[str] = SPLIT_KEYS,
) -> list[BaseQuery] | None:
    """Split a study-level query whose answer overflows into smaller ones; ``None`` if it can't.

    ``sample``: the items of the truncated answer (their ModalitiesInStudy
    values are tried first when splitting by modality).  Every study the
    query matches and that has a StudyDate, a StudyTime and a modality is
    matched by at least one of the parts (see the module docstring).
    ``keys``: the keys the server matches as splitting needs them (StudyDate
    and StudyTime ranges, ModalitiesInStudy values; see
    :func:`aqido.plan.split_keys`); a split by a key the server ignores would
    only repeat the same answer.
    """
    today = today or _dt.date.today()
    dates = date_bounds(query) if "StudyDate" in keys else None
    if dates is not None:
        low, high = dates
        parts = _split_dates(query, low, high, today)
        if parts is not None:
            return parts
        single_day = low is not None and low == high
    else:
        single_day = False
    if single_day:
        times = time_bounds(query) if "StudyTime" in keys else None
        if times is not None and times[0] < times[1]:
            cut = _midpoint(*times)
            # the outer bounds as the query wrote them: never wider (a fraction kept)
            low_text, high_text = _time_texts(query)
            start = _tm_low(times[0]) if low_text is None else low_text
            end = _tm_high(times[1]) if high_text is None else high_text
            return [
                _with_time(query, start, _tm_high(cut - 1)),
                _with_time(query, _tm_low(cut), end),
            ]
    if "ModalitiesInStudy" not in keys:
        return None
    asked = [m for m in query.ModalitiesInStudy.split(",") if m]
    if len(asked) > 1:
        return [attrs.evolve(query, ModalitiesInStudy=m, limit=0, offset=0) for m in asked]
    if asked:
        return None
    return [
        attrs.evolve(query, ModalitiesInStudy=m, limit=0, offset=0)
        for m in _modalities(sample, _MODALITIES_IN_STUDY)
    ]


def _modalities(sample: Iterable[Mapping[str, Any]], key: str) -> list[str]:
    seen = _sample_modalities(sample, key)
    return sorted(seen) + [m for m in MODALITIES if m not in seen]


def split_series_query(
    query: BaseQuery, sample: Iterable[Mapping[str, Any]] = (), *, keys: Container[str] = SPLIT_KEYS
) -> list[BaseQuery] | None:
    """Split an overflowing series listing by ``Modality``; ``None`` if it already has one.

    The modalities in ``sample`` (the truncated answer) come first, then the
    standard codes; a series with another modality cannot be reached.  No
    split (``None``) when ``Modality`` is not in ``keys``.
    """
    if query.Modality or "Modality" not in keys:
        return None
    return [
        attrs.evolve(query, Modality=m, limit=0, offset=0) for m in _modalities(sample, _MODALITY)
    ]

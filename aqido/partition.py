"""Sans-I/O rules for complete crawls: when is a response possibly truncated, how to split a query.

Nothing here does I/O; :func:`aqido.crawl.crawl` drives it.

Truncation (:class:`Caps`): a response *may* be cut short when

1. the server says so (a 299 truncation ``Warning`` or 206),
2. it holds exactly as many items as the ``limit`` sent, or
3. the server's cap is known (``server_limit=``) and the response holds at
   least as many items as the largest answer seen from the server, and at
   least the cap.  That covers servers that return exactly the cap and
   Orthanc, which silently returns cap + 1: once a cap + 1 answer has been
   seen, an answer of exactly the cap is known to be complete.

Silent caps (:meth:`Caps.suspect`): a server may stop at its cap and say
nothing (tiny_pacs at 1,000 studies, AWS HealthImaging at 10,000).  A
response to a request sent *without* a ``limit`` whose size looks like a cap
(:func:`looks_capped`: a round number of at least :data:`SUSPECT_MIN` items,
or its + 1, or a power of two, or anything from :data:`SUSPECT_ALWAYS` up) is
*suspect*: one follow-up request at ``offset=len`` settles it.  Nothing new:
the answer was complete.  More results: the cap is learned
(:meth:`Caps.learn`, kept for the client's lifetime) and the listing goes on.
Small answers never cost an extra request.  An empty follow-up after an
answer of a round number + 1 items (:func:`looks_like_cap_plus_one`) proves
nothing on a server that caps before the offset (Orthanc), so a crawl
checks such an answer by splitting the query (a few requests, for a rare
size); :meth:`AsyncQidoRS.iter_search`, which cannot split, logs a warning.

A possibly truncated part is paged with ``offset``; paging is trusted only
if it got past what a server that caps *before* the offset (Orthanc) could
return (more than cap + 1 items, or as many as a 299 warning announced);
otherwise, or if a page repeats earlier items (``offset`` ignored), the query
is split (:func:`split_study_query`):

1. ``StudyDate`` ranges, halved down to single days (a query without dates
   first becomes ``-18991231``, ``19000101-<today>`` and ``<tomorrow>-``);
2. on one day, ``StudyTime`` ranges, halved (on hour, then minute boundaries)
   down to one second;
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
import logging
import re
from collections.abc import Container, Iterable, Mapping
from typing import Any

import attrs

from aqido import dictionary
from aqido.protocol import QidoResponse
from aqido.query import BaseQuery, QueryLevel

logger = logging.getLogger("aqido")


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
_DA = re.compile(r"^\s*(\d{8})?\s*(-)?\s*(\d{8})?\s*$")
_TM = re.compile(r"^(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?(?:\.\d*)?$")


#: The smallest answer that can look like a silent cap.
SUSPECT_MIN = 100
#: From this size on, every answer sent without ``limit`` is suspect.
SUSPECT_ALWAYS = 10_000
_POWERS_OF_TWO = frozenset(1 << n for n in range(7, 14))  # 128 ... 8192


def looks_capped(count: int) -> bool:
    """Whether an answer of ``count`` items (no ``limit`` sent) may have been cut by a silent cap.

    Caps are round numbers: a multiple of 50 from :data:`SUSPECT_MIN` (100,
    200, 500, 1000, 5000 ...), a power of two (128 ... 8192), or one more than
    either (Orthanc returns cap + 1); any answer from :data:`SUSPECT_ALWAYS`
    items up is suspect too.
    """
    if count >= SUSPECT_ALWAYS:
        return True
    return _round(count) or _round(count - 1)


def looks_like_cap_plus_one(count: int) -> bool:
    """Whether ``count`` is one more than a round cap (Orthanc's ``LimitFind*`` answer size).

    Orthanc applies its cap *before* ``offset``, so a follow-up request past
    such an answer comes back empty even when more matches exist: a crawl
    checks such an answer by splitting the query instead.
    """
    return _round(count - 1) and not _round(count)


def _round(count: int) -> bool:
    return count >= SUSPECT_MIN and (count % 50 == 0 or count in _POWERS_OF_TWO)


def _level_key(level: QueryLevel | str) -> str:
    return level.name if isinstance(level, QueryLevel) else str(level).upper()


ServerLimit = int | Mapping[Any, int] | None


def check_server_limit(value: ServerLimit) -> ServerLimit:
    """Validate a ``server_limit``: ``None``, a positive int, or ``{level: positive int}``."""
    if value is None:
        return None
    values = value.values() if isinstance(value, Mapping) else [value]
    for one in values:
        if isinstance(one, bool) or not isinstance(one, int) or one < 1:
            raise ValueError(
                f"server_limit must be a positive int or a mapping of query levels to "
                f"positive ints, not {value!r}"
            )
    if isinstance(value, Mapping):
        for level in value:
            if _level_key(level) not in QueryLevel.__members__:
                raise ValueError(f"server_limit: {level!r} is not a query level")
        return dict(value)
    return value


@attrs.define
class Caps:
    """What a crawl knows about the server's result caps, and learns as it goes.

    ``server_limit``: the cap per response, one number for every level or a
    mapping by level (``{"STUDY": 10, "SERIES": 10, "INSTANCE": 7}`` for an
    Orthanc with ``LimitFindResults=10`` and ``LimitFindInstances=7``).
    """

    server_limit: ServerLimit = attrs.field(default=None, converter=check_server_limit)
    largest: dict[str, int] = attrs.field(factory=dict)
    #: Caps found by a follow-up request (:meth:`learn`), by level name; used where
    #: ``server_limit`` says nothing for a level.
    learned: dict[str, int] = attrs.field(factory=dict)
    #: Set once the server is seen ignoring ``offset`` or capping before it: paging
    #: is then skipped in favour of splitting (it is still tried for parts that
    #: cannot be split).
    offset_unreliable: bool = False

    def limit_for(self, level: QueryLevel | str) -> int | None:
        """The cap for ``level``: configured, else learned (``None``: unknown)."""
        limit = self.server_limit
        if isinstance(limit, int):
            return limit
        key = _level_key(level)
        if limit is not None:
            for name, value in limit.items():
                if _level_key(name) == key:
                    return value
        return self.learned.get(key)

    def learn(self, level: QueryLevel | str, count: int) -> None:
        """Remember that an answer of ``count`` items at ``level`` was cut by a silent cap.

        ``count`` is the size of the cut answer (the cap, or cap + 1 on
        Orthanc): from now on an answer that large may be truncated.
        """
        key = _level_key(level)
        known = self.learned.get(key)
        if known is None or count < known:
            self.learned[key] = count
        logger.info(
            "the server silently caps %s answers at %d results: paging past the cap from now on",
            key.lower(),
            self.learned[key],
        )

    def suspect(self, response: QidoResponse, level: QueryLevel | str, sent_limit: int) -> bool:
        """Whether an answer that does not look truncated should still be checked for a silent cap.

        Only for requests sent without ``limit``, when no cap is known for
        ``level`` and the answer's size :func:`looks_capped`.
        """
        if sent_limit or self.limit_for(level) is not None:
            return False
        return looks_capped(len(response.items))

    def observe(self, level: QueryLevel | str, count: int) -> None:
        """Remember the size of a response (the server's cap is at least the largest)."""
        key = _level_key(level)
        if count > self.largest.get(key, 0):
            self.largest[key] = count

    def threshold(self, level: QueryLevel | str) -> int | None:
        """A response with at least this many items may have been cut by the server's cap."""
        limit = self.limit_for(level)
        if limit is None:
            return None
        return max(limit, self.largest.get(_level_key(level), 0))

    def possibly_truncated(
        self, response: QidoResponse, level: QueryLevel | str, sent_limit: int
    ) -> bool:
        """Whether ``response`` may hold only part of the matches (see the module docstring)."""
        count = len(response.items)
        if response.truncated:
            return response.additional_results != 0
        if count == 0:
            return False
        if sent_limit and count >= sent_limit:
            return True
        threshold = self.threshold(level)
        return threshold is not None and count >= threshold

    def paging_trusted(self, level: QueryLevel | str, total: int, announced: int | None) -> bool:
        """Whether paging that ended normally after ``total`` items may be believed.

        ``announced``: the total a truncation warning promised (first page plus
        "N additional results"), if any.  A server that caps the matches before
        applying the offset returns, over all pages, exactly its capped list:
        fewer than the cap means nothing was cut, more than cap + 1 means the
        offset is applied after the cap; in between it cannot be told apart.
        """
        if announced is not None and total < announced:
            return False
        limit = self.limit_for(level)
        if limit is None:
            return True
        return total < limit or total > max(limit + 1, self.largest.get(_level_key(level), 0))


# --- dates and times --------------------------------------------------------------------------


def _parse_da(text: str) -> _dt.date | None:
    try:
        return _dt.datetime.strptime(text, "%Y%m%d").date()
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
    ``StudyDate`` filter that is not a plain date or date range.
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

    No ``StudyTime`` filter is the whole day ``(0, 86399)``.
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


def _with_time(query: BaseQuery, low: int, high: int) -> BaseQuery:
    value = f"{_tm_low(low)}-{_tm_high(high)}"
    return attrs.evolve(
        query, filters=(*_without(query, _STUDY_TIME), ("StudyTime", value)), limit=0, offset=0
    )


def _sample_modalities(sample: Iterable[Mapping[str, Any]], key: str) -> set[str]:
    found: set[str] = set()
    for item in sample:
        element = item.get(key)
        values = element.get("Value") if isinstance(element, Mapping) else None
        for value in values or ():
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
            return [_with_time(query, times[0], cut - 1), _with_time(query, cut, times[1])]
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

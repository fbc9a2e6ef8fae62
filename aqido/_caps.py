"""When an answer may have been cut by a server's cap: :class:`Caps`, and sizes that look like caps.

Sans-I/O.  Every search checks its answer here; the query splitting a crawl
adds on top is in :mod:`aqido.partition` (which re-exports these names), so
that a plain search does not import it.

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
response to a request sent *without* a ``limit`` (or holding fewer items than
the ``limit`` sent: a page size above the cap) whose size looks like a cap
(:func:`looks_capped`: a round number of at least :data:`SUSPECT_MIN` items,
or its + 1, or a power of two, or anything from :data:`SUSPECT_ALWAYS` up) is
*suspect*: one follow-up request at ``offset=len`` settles it.  Nothing new:
the answer was complete.  More results: the cap is learned
(:meth:`Caps.learn`, kept for the client's lifetime) and the listing goes on.
Small answers never cost an extra request.  An empty follow-up after an
answer of a round number + 1 items (:func:`looks_like_cap_plus_one`) proves
nothing on a server that caps before the offset (Orthanc), nor does one after
a round total from :data:`SUSPECT_ALWAYS` up (a cap of 10,000 applied before the
offset, without the + 1: :func:`looks_like_cap_before_offset`), so a crawl
checks such an answer by splitting the query (a few requests, for a rare
size); :meth:`AsyncQidoRS.iter_search`, which cannot split, logs a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aqido.protocol import QidoResponse, rows
from aqido.query import QueryLevel

logger = logging.getLogger("aqido")


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


def looks_like_cap_before_offset(count: int) -> bool:
    """Whether a total of ``count`` items is what a cap applied before ``offset`` returns.

    Orthanc's cap + 1 (:func:`looks_like_cap_plus_one`), and a round total from
    :data:`SUSPECT_ALWAYS` up: a server that caps its matches at 10,000 *before* the offset,
    without the + 1 (AWS HealthImaging), answers exactly 10,000 however it is paged, and the
    page past them is empty.  Paging cannot tell such a total from a complete one; a crawl
    checks it by splitting the query (a few requests, for a rare size).
    """
    return looks_like_cap_plus_one(count) or (count >= SUSPECT_ALWAYS and _round(count))


def _round(count: int) -> bool:
    return count >= SUSPECT_MIN and (count % 50 == 0 or count in _POWERS_OF_TWO)


def _level_key(level: QueryLevel | str) -> str:
    # ``_name_``, not ``.name``: the enum property costs a Python call (several per request)
    return level._name_ if isinstance(level, QueryLevel) else str(level).upper()


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


class Caps:
    """What a crawl knows about the server's result caps, and learns as it goes.

    ``server_limit``: the cap per response, one number for every level or a
    mapping by level (``{"STUDY": 10, "SERIES": 10, "INSTANCE": 7}`` for an
    Orthanc with ``LimitFindResults=10`` and ``LimitFindInstances=7``).

    A plain class, not an attrs one: every client builds one, and a plain
    search does not pay for generating its methods (about 1 ms at import).
    """

    __slots__ = ("largest", "learned", "offset_unreliable", "server_limit")
    __hash__ = None  # type: ignore[assignment]  # mutable: equal by value, never hashed

    def __init__(
        self,
        server_limit: ServerLimit = None,
        largest: dict[str, int] | None = None,
        learned: dict[str, int] | None = None,
        offset_unreliable: bool = False,
    ) -> None:
        self.server_limit: ServerLimit = check_server_limit(server_limit)
        #: The largest answer seen, by level name.
        self.largest: dict[str, int] = {} if largest is None else largest
        #: Caps found by a follow-up request (:meth:`learn`), by level name; used where
        #: ``server_limit`` says nothing for a level.
        self.learned: dict[str, int] = {} if learned is None else learned
        #: Set once the server is seen ignoring ``offset`` or capping before it: paging
        #: is then skipped in favour of splitting (it is still tried for parts that
        #: cannot be split).
        self.offset_unreliable = offset_unreliable

    def _state(self) -> tuple[Any, ...]:
        return (self.server_limit, self.largest, self.learned, self.offset_unreliable)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._state() == other._state()

    def __repr__(self) -> str:
        return (
            f"Caps(server_limit={self.server_limit!r}, largest={self.largest!r}, "
            f"learned={self.learned!r}, offset_unreliable={self.offset_unreliable!r})"
        )

    def limit_for(self, level: QueryLevel | str) -> int | None:
        """The cap for ``level``: configured, else learned (``None``: unknown)."""
        limit = self.server_limit
        if isinstance(limit, int):
            return limit
        if limit is None and not self.learned:
            return None  # nothing configured or learned (nearly always): no key to compute
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

        Only when no cap is known for ``level`` and the answer's size
        :func:`looks_capped`: for a request sent without ``limit``, or one whose
        answer is short of the ``limit`` sent (a page size above the cap: a
        silent cap of 1,000 answers ``limit=5000`` with 1,000 items, which
        would otherwise end paging as a short last page).
        """
        count = len(rows(response))
        if (sent_limit and count >= sent_limit) or self.limit_for(level) is not None:
            return False  # a full page is paged on anyway
        return looks_capped(count)

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
        count = len(rows(response))
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

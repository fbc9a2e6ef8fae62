"""``limit``/``offset`` paging with every stop condition a real server needs (``iter_pages``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from aqido._caps import Caps, looks_like_cap_before_offset
from aqido._elements import _El, _Elements, json_item
from aqido._json import dumps
from aqido._slots import Slots
from aqido._trusted import _derive
from aqido.errors import (
    InvalidQueryError,
    InvalidResponseError,
    ResultsTruncatedError,
)
from aqido.protocol import QidoResponse, rows
from aqido.query import BaseQuery, QueryLevel

if TYPE_CHECKING:  # pragma: no cover - anyio's streams load on first use (import time)
    pass

logger = logging.getLogger("aqido")

T = TypeVar("T")

#: One logical request: ``await fetch(query, limiter)``; ``limiter`` (or ``None``) is an
#: extra per-operation :class:`~aqido._slots.Slots` to hold while the request is in flight.
Fetch = Callable[[BaseQuery, Slots | None], Awaitable[QidoResponse]]

#: The JSON key of the UID that identifies a result at each level.
UID_KEYS = {
    QueryLevel.STUDY: "0020000D",
    QueryLevel.SERIES: "0020000E",
    QueryLevel.INSTANCE: "00080018",
}


# --- paging --------------------------------------------------------------------------------


@attrs.frozen
class Page:
    """One page of a paged search: the response and its items not seen on earlier pages.

    The items are the response's :func:`~aqido.protocol.rows`: stored datasets or
    DICOM JSON objects (:func:`aqido._elements.raw_items` gives the JSON).
    """

    response: QidoResponse
    items: list[dict[str, Any]]
    offset: int


def _first_uid(item: dict[str, Any], key: str) -> str | None:
    """The first string value of element ``key`` (padding stripped), or ``None``."""
    element = item.get(key)
    if isinstance(element, dict):
        values = element.get("Value")
        if isinstance(values, list) and values and isinstance(values[0], str):
            return values[0].rstrip("\x00 ")
    return None


def uid_of(item: dict[str, Any], key: str) -> str:
    """The item's identity: its UID under ``key``, else its whole JSON (sorted keys)."""
    element = item.get(key)
    if type(element) is _El:  # a stored dataset's (fast_stored) common case
        stored = element.Value
        if stored and type(stored[0]) is str:
            return stored[0].rstrip("\x00 ")
    elif type(element) is dict:  # _first_uid's common case, inline: one call less per item
        values = element.get("Value")
        if type(values) is list and values and type(values[0]) is str:
            return values[0].rstrip("\x00 ")
    if type(item) is _Elements:
        item = json_item(item)
    uid = _first_uid(item, key)
    return uid if uid is not None else dumps(item, sort_keys=True, default=str)


#: The parent UIDs (query field, JSON key) a child listing's items must match when they carry them.
PARENT_KEYS = {
    QueryLevel.SERIES: (("StudyInstanceUID", "0020000D"),),
    QueryLevel.INSTANCE: (("StudyInstanceUID", "0020000D"), ("SeriesInstanceUID", "0020000E")),
}


def check_parents(query: BaseQuery, response: QidoResponse) -> None:
    """Raise if an item of a series or instance listing belongs to another study or series.

    A server that ignores the UIDs in ``/studies/{uid}/series[/{uid}/instances]``
    (or answers for the wrong one) would otherwise have its answer attached to
    the wrong parent, silently.  Items without the parent's UID pass (it is not
    required in the answer); only a UID that differs is refused.
    """
    items = rows(response)
    for name, key in PARENT_KEYS.get(query.query_level, ()):
        wanted = getattr(query, name)
        if not wanted:
            continue
        for item in items:
            element = item.get(key)
            if type(element) is _El:  # the common case, without a call: the wanted UID
                if element.Value and element.Value[0] == wanted:
                    continue
                item = json_item(item)
            elif type(element) is dict:
                values = element.get("Value")
                if type(values) is list and values and values[0] == wanted:
                    continue
            got = _first_uid(item, key)
            if got is None:
                continue  # no UID to compare: the item's own validation speaks for it
            if got != wanted and got not in wanted.split(","):
                raise InvalidResponseError(
                    f"the server answered {query} with a result of another "
                    f"{name.removesuffix('InstanceUID').lower()} ({name} {got!r}, not "
                    f"{wanted!r}): does it ignore the UIDs in the path?",
                    url=response.url,
                    status=response.status,
                    body=dumps(item)[:400],
                )


def unseen(
    items: list[dict[str, Any]],
    key: str,
    seen: set[str],
    identities: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The items whose identity (UID under ``key``) is not in ``seen``; adds theirs to it.

    ``identities``: the items' identities, if already computed.
    """
    new: list[dict[str, Any]] = []
    if identities is None:
        # uid_of() inlined for its common case, a stored UID: half the cost per answer
        for item in items:
            element = item.get(key)
            if type(element) is _El and (stored := element.Value) and type(stored[0]) is str:
                identity = stored[0].rstrip("\x00 ")
            else:
                identity = uid_of(item, key)
            if identity not in seen:
                seen.add(identity)
                new.append(item)
        return new
    for item, identity in zip(items, identities, strict=True):
        if identity not in seen:
            seen.add(identity)
            new.append(item)
    return new


class PageSpan:
    """How many matches each page of one paging covers, so that the next ``offset`` skips none.

    A server's ``offset`` counts matches; a result a page shows twice is one
    match (or one shown in place of another), so a page covers as many
    matches as it holds *distinct* results, not items.  Counting the items
    would skip one match per repeat, silently.  After a page with repeats,
    the next page must bring only new results: if it brings back one of that
    page's, the repeat either was a match of its own (nothing lost) or stood
    in place of another (that one lost), and nothing tells which, so
    :meth:`covered` raises :class:`~aqido.errors.InvalidResponseError`.
    """

    __slots__ = ("_repeated",)

    def __init__(self) -> None:
        self._repeated: set[str] | None = None  # the last page's identities, if it had repeats

    def take(
        self, response: QidoResponse, key: str, seen: set[str], offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page at ``offset``: its items not in ``seen`` (added to it), and the matches it covers.

        Each item's identity (its UID under ``key``) is computed once, for both
        :func:`unseen` and :meth:`covered` (whose error it raises).
        """
        items = rows(response)
        identities = [uid_of(item, key) for item in items]
        fresh = unseen(items, key, seen, identities)
        return fresh, self.covered(response, identities, len(fresh), offset)

    def covered(
        self, response: QidoResponse, identities: list[str], fresh: int, offset: int
    ) -> int:
        """The matches a page at ``offset`` covers: its distinct results.

        ``identities``: its items' identities; ``fresh``: how many of them are
        new (when all are, as nearly always, nothing more is computed).
        """
        repeated, self._repeated = self._repeated, None
        if fresh == len(identities):
            return fresh
        if repeated is not None:
            again = next((i for i, uid in enumerate(identities) if uid in repeated), None)
            if again is not None:
                raise InvalidResponseError(
                    f"the server repeated a result within the page before offset={offset}, "
                    f"and the page at offset={offset} returns one of that page again "
                    f"({identities[again][:80]!r}): "
                    "the repeat may have been shown in place of another match, which then "
                    "cannot be reached, so paging cannot show it has every match; narrow "
                    "the query (e.g. by date) so that one page holds every match",
                    url=response.url,
                    status=response.status,
                    body=dumps(response.items[again])[:400],
                )
        distinct = set(identities)
        if len(distinct) < len(identities):
            self._repeated = distinct
            logger.debug(
                "%s repeats %d results within one page",
                response.url,
                len(identities) - len(distinct),
            )
        return len(distinct)


def check_page_size(page_size: int | None) -> None:
    if page_size is not None and (
        isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1
    ):
        raise InvalidQueryError(f"page_size must be a positive int or None, not {page_size!r}")


async def iter_pages(
    fetch: Fetch,
    query: BaseQuery,
    *,
    page_size: int | None = None,
    limiter: Slots | None = None,
    caps: Caps | None = None,
    doubts: list[str] | None = None,
) -> AsyncGenerator[Page, None]:
    """Page through every match of ``query`` with ``limit``/``offset``.

    The page size is ``page_size``, else the query's own ``limit``; with
    neither, the first request has no ``limit`` and paging continues only if
    the server says it truncated the answer (a 299 truncation warning or 206)
    or, with ``caps``, if the answer is as large as a known cap, or looks like
    a silent cap (:meth:`~aqido._caps.Caps.suspect`; with a page size too, for
    a page short of it): then one follow-up request at ``offset=len`` tells,
    and a cap it reveals is learned in ``caps``.  Where that cannot tell (the
    server ignores ``offset``, or, with no cap known, the matches from offset
    0 add up to a round number + 1, what a server that caps before the
    offset, like Orthanc, returns however many match), paging ends with a
    logged warning, also appended to ``doubts`` (if given) so that a caller
    can mark its result as possibly truncated.
    Paging starts at the query's ``offset`` and stops on:

    1. 204 or an empty page;
    2. a page shorter than the page size with no truncation warning
       (or a warning that says 0 additional results);
    3. a page whose results were *all* returned before: the server ignores
       ``offset``, so :class:`~aqido.errors.InvalidResponseError` is raised
       (continuing would loop forever; stopping silently would lose data).

    With ``caps``, a page is full (rule 2) also when it holds as many items as
    the server's known cap, page size or not (a cap of 10 under a page size
    of 20 gives 10-item pages).  Paging that stops normally is believed only
    if it can be (:meth:`~aqido._caps.Caps.paging_trusted`, as the crawl
    checks): short of what a 299 warning announced, or, with a known cap,
    ending at the cap or cap + 1 (all a server that caps *before* the offset,
    like Orthanc, ever returns), it raises
    :class:`~aqido.errors.ResultsTruncatedError` instead of ending short: paging
    cannot split the query, as :func:`~aqido.crawl.crawl` does.

    Results already seen (by UID: a store changing during paging shifts
    pages) are dropped; a server that ignores ``limit`` and returns more is
    fine (the next offset counts what was received).

    A result repeated *within* a page is yielded once, and the next offset
    counts the page's distinct results (:class:`PageSpan`): counting its items
    would skip one match per repeat without a word.  The page is still short
    (rule 2) only if it holds fewer *items* than the page size, so a repeat
    never ends paging early.  Counting distinct results can only re-read a
    match, never skip one: if the next page brings back a result of the page
    with repeats, the repeat may have stood in place of a match that no
    offset now reaches, so :class:`~aqido.errors.InvalidResponseError` is
    raised rather than a list that looks complete.  A last page (or a single
    answer) with repeats is only de-duplicated: no offset depends on it (and
    a result shown there in place of another could not be told apart).
    """
    check_page_size(page_size)
    size = page_size or query.limit or None
    sent = size or 0
    level = query.query_level
    key = UID_KEYS[level]
    seen: set[str] = set()
    span = PageSpan()
    offset = query.offset
    first = True
    suspected = 0  # the size of an answer that only looked capped, until checked
    announced: int | None = None  # where the first 299 warning with a count said the end is
    while True:
        page_query = query
        if not first or sent != query.limit:
            page_query = _derive(query, limit=sent, offset=offset)
        first = False
        response = await fetch(page_query, limiter)
        items = rows(response)
        if caps is not None:
            caps.observe(level, len(items))
        if not items:
            _check_trusted(caps, query, offset, announced, response)
            _doubt_cap_plus_one(caps, query, suspected or offset, doubts)
            return
        fresh, covered = span.take(response, key, seen, offset)
        if not fresh and suspected:
            _doubt(
                f"{query} returned {suspected} results, as many as a silent cap would, and "
                "the server ignores 'offset', so completeness cannot be checked",
                doubts,
            )
            return
        if suspected and caps is not None:
            caps.learn(level, suspected)  # the follow-up found more: a silent cap
            suspected = 0
        if not fresh:
            raise InvalidResponseError(
                f"the server returned the same results again for offset={offset}: it ignores "
                "'offset', so paging cannot go further; narrow the query (e.g. by date) "
                "so that one page holds every match",
                url=response.url,
                status=response.status,
            )
        yield Page(response, fresh, offset)
        remaining = response.additional_results
        if announced is None and remaining is not None:
            announced = offset + covered + remaining  # a repeat within the page is one match
        offset += covered
        if response.truncated:
            if remaining == 0:
                _check_trusted(caps, query, offset, announced, response)
                return
            logger.debug(
                "following truncation of %s (%s more)", response.url, remaining or "unknown"
            )
            continue
        if caps is None:
            if size is not None and len(items) >= size:
                continue  # a full page: page on
        elif caps.possibly_truncated(response, level, sent):
            continue  # a full page, or as many as the known cap: page on
        elif not suspected and caps.suspect(response, level, sent):
            suspected = len(items)
            logger.debug("%s: %d results may be a silent cap; checking", query, len(items))
            continue
        _check_trusted(caps, query, offset, announced, response)
        _doubt_cap_plus_one(caps, query, offset, doubts)
        return


def _doubt(message: str, doubts: list[str] | None) -> None:
    """Log why paging that ended cannot be shown complete, and append it to ``doubts``."""
    logger.warning("%s", message)
    if doubts is not None:
        doubts.append(message)


def _doubt_cap_plus_one(
    caps: Caps | None, query: BaseQuery, count: int, doubts: list[str] | None
) -> None:
    """Doubt paging that found ``count`` results, a round number + 1 (or a round total from
    10,000 up), when no cap is known.

    Orthanc applies its cap (+ 1) *before* ``offset``: its pages add up to
    cap + 1 whatever the page size, and the page past them is empty (a cap of
    10,000 without the + 1 alike).  A crawl checks such a total by splitting the
    query; paging cannot, so it says so.
    """
    if caps is None or not looks_like_cap_before_offset(count):
        return
    if caps.limit_for(query.query_level) is not None:
        return  # a known cap: paging_trusted has judged the total
    _doubt(
        f"{query} returned {count} results: a server that applies its cap before 'offset' "
        "(Orthanc's LimitFindResults + 1, a round 10,000) would answer just like this; pass "
        "server_limit if it has one, or crawl, which checks by splitting",
        doubts,
    )


def _check_trusted(
    caps: Caps | None, query: BaseQuery, end: int, announced: int | None, response: QidoResponse
) -> None:
    """Raise if paging that ended normally at offset ``end`` may have missed matches.

    :meth:`~aqido._caps.Caps.paging_trusted` says when: a total short of what a
    299 warning ``announced``, or, with a known cap, a total between the cap
    and cap + 1, what a server that caps *before* the offset (Orthanc) returns
    however many matches there are.  ``end`` counts from offset 0, so that a
    query's own ``offset`` does not hide such a total.  A crawl splits the
    query then; paging alone cannot, so it says so rather than end short.
    """
    if caps is not None:
        trusted = caps.paging_trusted(query.query_level, end, announced)
    else:
        trusted = announced is None or end >= announced
    if trusted:
        return
    if announced is not None and end < announced:
        why = f"the server announced {announced} matches, paging reached {end}"
    else:
        cap = caps.limit_for(query.query_level) if caps is not None else None
        why = (
            f"paging ended after {end} results, the server's cap ({cap}) or one more: what "
            "a server that applies its cap before 'offset' (Orthanc's LimitFindResults) "
            "returns however many match"
        )
    raise ResultsTruncatedError(
        f"{query} may have more matches than paging can reach ({why}); use crawl, which "
        "splits the query until each part fits, or narrow the query (e.g. by date) so "
        "that it has fewer matches than the cap",
        url=response.url,
    )

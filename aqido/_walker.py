"""The walker of a crawl: every match of one query, whatever the server's caps.

:class:`_Walker` (used by :func:`aqido.crawl.crawl`, and written against the
same :data:`~aqido._paging.Fetch` seam) fetches a listing's first page, pages
it when the answer may be truncated, and splits the query
(:mod:`aqido.partition`) when paging cannot be believed; it structures and
counts what it finds and records or raises the failures of its parts.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import AsyncGenerator, Callable, Container
from contextlib import aclosing
from typing import Any

from aqido._caps import looks_like_cap_before_offset
from aqido._elements import _El, _Elements, _json_of, json_item
from aqido._paging import UID_KEYS, Fetch, PageSpan, check_parents, uid_of, unseen
from aqido._recorder import Recorder
from aqido._requests import ON_SENT
from aqido._slots import Slots
from aqido._trusted import _derive
from aqido.errors import (
    ClientClosedError,
    QidoError,
    ResultsTruncatedError,
)
from aqido.partition import (
    SPLIT_KEYS,
    Caps,
    looks_like_cap_plus_one,
    split_series_query,
    split_study_query,
)
from aqido.protocol import QidoResponse, rows
from aqido.query import BaseQuery, QueryLevel

logger = logging.getLogger("aqido")

#: The elements a split takes modalities from (ModalitiesInStudy, Modality).
_MODALITY_KEYS = ("00080061", "00080060")

#: Splits an overflowing query into parts, given the truncated answer; ``None``: impossible.
Splitter = Callable[[BaseQuery, list[dict[str, Any]]], "list[BaseQuery] | None"]

#: Structures raw items into typed results: ``structure(response, level, items)``.
Structure = Callable[[QidoResponse, QueryLevel, list[dict[str, Any]]], list[Any]]

#: The studies of a listing to walk, of those the server returned (raw DICOM JSON).
Keep = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def modality_sample(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The modality elements of ``items``, as DICOM JSON: all a split needs of an answer."""
    return [json_item({key: item[key] for key in _MODALITY_KEYS if key in item}) for item in items]


class _Walker:
    """Fetches every match of a query, whatever the server's caps: paging, then splitting."""

    def __init__(
        self,
        fetch: Fetch,
        structure: Structure,
        *,
        limiter: Slots | None,
        caps: Caps,
        stats: Recorder,
        page_size: int | None,
        today: datetime.date | None,
        fail_fast: bool,
        split_keys: Container[str] = SPLIT_KEYS,
        keep: Keep | None = None,
    ) -> None:
        self.fetch = fetch
        self.keep = keep
        self.structure = structure
        self.limiter = limiter
        self.caps = caps
        self.stats = stats
        self.page_size = page_size
        self.today = today
        self.fail_fast = fail_fast
        self.split_keys = split_keys
        #: Called after every request (a window that follows an adaptive limit).
        self.after_request: Callable[[], None] | None = None

    def failed(self, part: BaseQuery, error: QidoError) -> None:
        """Raise ``error`` (``fail_fast``, or the client was closed), or record it and go on."""
        if self.fail_fast or isinstance(error, ClientClosedError):
            raise error
        logger.warning("crawl: %s failed: %s", part, error)
        self.stats.failed(part, error)

    async def request(self, query: BaseQuery) -> QidoResponse:
        """Fetch ``query``, counted in the stats once it is sent (not while it waits for a slot).

        The client's fetch says when it sends (:data:`aqido._requests.ON_SENT`); a request
        cancelled or failed while waiting for its concurrency slot was never sent.  Another
        :data:`Fetch` that answers without saying so is counted when it answers.
        """
        sent = False

        def on_sent() -> None:
            nonlocal sent
            sent = True
            self.stats.request()

        token = ON_SENT.set(on_sent)
        try:
            response = await self.fetch(query, self.limiter)
        finally:
            ON_SENT.reset(token)
            if self.after_request is not None:
                self.after_request()
        if not sent:
            self.stats.request()
        check_parents(query, response)  # an answer for another study or series: refused
        self.caps.observe(query.query_level, len(rows(response)))
        self.stats.page()
        if response.warnings:
            self.stats.warned(response.warnings)
        return response

    def fresh(
        self,
        response: QidoResponse,
        level: QueryLevel,
        items: list[dict[str, Any]],
        seen: set[str],
        identities: list[str] | None = None,
    ) -> list[Any]:
        """Structure the items not seen before (by UID) and count them."""
        new = unseen(items, UID_KEYS[level], seen, identities)
        if new and self.keep is not None and level is QueryLevel.STUDY:
            new = self.keep([json_item(item) if type(item) is _Elements else item for item in new])
        results = self.structure(response, level, new) if new else []
        self.stats.items(level._name_, len(results))
        return results

    def splitter(self, level: QueryLevel) -> Splitter | None:
        """How to split an overflowing query at ``level`` (instances: no way)."""
        today, keys = self.today, self.split_keys
        if level is QueryLevel.STUDY:

            def split_studies(
                query: BaseQuery, sample: list[dict[str, Any]]
            ) -> list[BaseQuery] | None:
                return split_study_query(query, sample, today, keys=keys)

            return split_studies
        if level is QueryLevel.SERIES:

            def split_series(
                query: BaseQuery, sample: list[dict[str, Any]]
            ) -> list[BaseQuery] | None:
                return split_series_query(query, sample, keys=keys)

            return split_series
        return None

    async def matches(
        self,
        query: BaseQuery,
        seen: set[str],
        announced: list[int] | None = None,
        answer: QidoResponse | None = None,
        reached: set[str] | None = None,
        parent: BaseQuery | None = None,
    ) -> AsyncGenerator[list[Any], None]:
        """Yield batches of typed results: every match of ``query`` not in ``seen``.

        A possibly truncated answer is paged with ``offset``; if paging cannot
        be trusted, the query is split (studies by date, time, modality; series
        by modality) and each part walked in turn.  A study-listing part that
        fails is recorded in the stats (or raised at once with ``fail_fast``):
        the other parts go on.  Below the study level a failure is raised, so
        that the study it belongs to is held back whole.  A query that
        overflows and cannot be split raises
        :class:`~aqido.errors.ResultsTruncatedError`.  ``announced`` receives the
        number of matches the server announced (first page plus "N additional
        results"), if it did.  ``answer``: the first page's response, when the
        caller already has it.  ``reached`` receives the identity of every match
        this query and its parts received, also those already in ``seen``
        (another listing's), so that a shortfall is counted for this listing alone.
        """
        level = query.query_level
        size = (self.page_size or 0) if level is QueryLevel.STUDY else 0
        response = answer if answer is not None else await self.request(_first(query, size))
        part_seen: set[str] = set()
        key = UID_KEYS[level]
        found = rows(response)
        identities = [uid_of(item, key) for item in found]
        part_seen.update(identities)
        batch = self.fresh(response, level, found, seen, identities)
        if batch:
            yield batch
        if parent is not None and (ignored := ignored_keys(query, parent, rows(response))):
            # a part of a split whose answer holds results outside it: the server ignores
            # the key split by, and each part would repeat the whole answer (and split again)
            logger.warning(
                "%s: the server ignores %s, so splitting by it cannot check completeness",
                query,
                " and ".join(sorted(ignored)),
            )
            if reached is not None:
                reached.update(part_seen)
            return
        # suspect: no sign of truncation, but as many items as a silent cap would leave
        suspect = not self.caps.possibly_truncated(response, level, size)
        if suspect and not self.caps.suspect(response, level, size):
            if reached is not None:
                reached.update(part_seen)
            return
        first_count = len(found)
        # What a split needs of the first page (its modalities), not the page itself: held
        # while every later page is fetched, the page would keep its results alive.
        sample = modality_sample(found)
        total = None
        if response.additional_results is not None:
            total = len(part_seen) + response.additional_results  # distinct: repeats are one
            if announced is not None:
                announced.append(total)
        split = self.splitter(level) or (lambda _query, _items: None)
        # The parts are worked out only when they may be needed (splitting builds and
        # checks many queries): now if offset cannot be trusted, else after paging.
        planned = self.caps.offset_unreliable
        parts = split(query, sample) if planned else None
        if parts is None or not self.caps.offset_unreliable:
            span = PageSpan()  # offsets count distinct results: a repeat skips no match
            received = span.covered(response, identities, len(part_seen), 0)
            honoured = True
            # Neither the last page nor its results are held while the next is fetched.
            found, identities, batch = [], [], []
            while True:
                page = _derive(query, limit=size, offset=received)
                del response
                response = await self.request(page)
                if not rows(response):  # not .items: that would build every page's JSON
                    break
                new, covered = span.take(response, key, part_seen, received)
                if not new:
                    logger.debug("%s: the server ignores 'offset'; splitting instead", page)
                    honoured = False
                    break
                if suspect:  # the follow-up found more: a silent cap, now known
                    self.caps.learn(level, first_count)
                    suspect = False
                batch = self.fresh(response, level, new, seen)
                if batch:
                    yield batch
                new = batch = []
                received += covered
                if not self.caps.possibly_truncated(response, level, size):
                    break
            if reached is not None:
                reached.update(part_seen)
            if not honoured or not self.caps.paging_trusted(level, received, total):
                self.caps.offset_unreliable = True
            elif not (suspect and looks_like_cap_plus_one(first_count)) and not (
                looks_like_cap_before_offset(received) and self.caps.limit_for(level) is None
            ):  # pages that add up to a round number + 1 (Orthanc's cap + 1) or to 10,000
                return  # (a cap before the offset without the + 1) prove nothing either
            if not planned:
                parts = split(query, sample)
            if not self.caps.offset_unreliable:
                if parts is None:  # instances, or a part split down to one second and modality
                    logger.warning(
                        "%s returned %d results, as many as a server that applies its cap "
                        "before 'offset' returns (Orthanc's LimitFind* + 1, a round 10,000), "
                        "and it cannot be split to check; pass server_limit if the server "
                        "has a cap",
                        query,
                        received,
                    )
                    return
                # a cap applied before offset (Orthanc's + 1) would look just like this
                logger.debug(
                    "%s: %d results may be a cap applied before offset; checking by splitting",
                    query,
                    received,
                )
        fetched = len(part_seen)
        if reached is not None:
            reached.update(part_seen)
        # nothing of this part is kept while its parts are walked
        del response, sample, batch, identities
        part_seen.clear()
        if parts is None and suspect:
            # Only suspected, and the server ignores offset: nothing shows a cap.
            logger.warning(
                "%s returned %d results, as many as a silent cap would, and the server "
                "ignores 'offset', so completeness cannot be checked",
                query,
                fetched,
            )
            return
        if parts is None:
            raise ResultsTruncatedError(
                f"{query} has more matches than the server returns ({fetched} fetched), "
                "paging with offset does not reach them and the query cannot be split further",
                url=query.relative_url(),
            )
        self.stats.split()
        logger.debug("%s looks truncated: split into %d parts", query, len(parts))
        for part in parts:
            try:
                walked = self.matches(part, seen, reached=reached, parent=query)
                async with aclosing(walked) as batches:
                    async for batch in batches:
                        yield batch
            except QidoError as error:
                if level is not QueryLevel.STUDY:
                    raise
                self.failed(part, error)

    async def listing(self, query: BaseQuery, seen: set[str]) -> AsyncGenerator[list[Any], None]:
        """:meth:`matches` for the top-level study query, recording its failure.

        When the server announced how many studies match (a 299 warning with a
        count) and fewer were found, that is a failure too: the difference are
        studies no part could reach (no StudyDate, say).  Only the studies this
        listing received count (``seen`` also holds those of the plan's other
        listings, which would hide this one's shortfall), those another listing
        received first included (listings may overlap).
        """
        announced: list[int] = []
        reached: set[str] = set()
        try:
            async with aclosing(self.matches(query, seen, announced, reached=reached)) as batches:
                async for batch in batches:
                    yield batch
                    del batch  # not held while the next page is fetched
            if announced and len(reached) < announced[0]:
                raise ResultsTruncatedError(
                    f"the server announced {announced[0]} matches for {query} but only "
                    f"{len(reached)} could be reached: the others have no StudyDate, no "
                    "StudyTime or no known modality where the query had to be split "
                    "(or were deleted during the crawl)",
                    url=query.relative_url(),
                )
        except QidoError as error:
            self.failed(query, error)

    async def children(self, query: BaseQuery) -> list[Any]:
        """Every series of a study or instance of a series (paged if the server caps them)."""
        level = query.query_level
        response = await self.request(_first(query, 0))
        caps = self.caps
        if not caps.possibly_truncated(response, level, 0) and not caps.suspect(
            response, level, 0
        ):  # one complete page (nearly always): what matches() would give, without it
            return self.fresh(response, level, rows(response), set())
        out: list[Any] = []
        async with aclosing(self.matches(query, set(), answer=response)) as batches:
            async for batch in batches:
                out.extend(batch)
        return out


def ignored_keys(part: BaseQuery, parent: BaseQuery, items: list[Any]) -> set[str]:
    """The keys ``part`` adds to ``parent`` (a split's) that some of ``items`` have but miss.

    An item with a value of such a key that does not match it shows the server ignores
    the key (an item without the attribute shows nothing: it may match by other rules).
    ``items`` are DICOM JSON or stored datasets (:func:`~aqido.protocol.rows`): each is
    given to the matcher as JSON of the one element checked, so that a whole part's
    answer (the whole listing, from such a server) is never held as JSON too.
    """
    from aqido import dictionary
    from aqido._query_values import RESERVED_PARAMS
    from aqido.matching import Criterion  # only when a split is checked: rare

    own, theirs = part.uri_search_params(), parent.uri_search_params()
    ignored: set[str] = set()
    for name, value in own.items():
        number = dictionary.tag_for_keyword(name) if name not in RESERVED_PARAMS else None
        if number is None or theirs.get(name) == value or not isinstance(value, str):
            continue
        tag = dictionary.tag_key(number)
        criterion = Criterion.of(name, value)
        for item in items:
            elem = item.get(tag)
            one = {tag: _json_of(elem)} if type(elem) is _El else item
            if (one.get(tag) or {}).get("Value") and not criterion.matches(one):
                ignored.add(name)
                break
    return ignored


def _first(query: BaseQuery, size: int) -> BaseQuery:
    """``query``'s first page of ``size`` results (``0``: the server's whole answer)."""
    if query.limit != size or query.offset:
        return _derive(query, limit=size, offset=0)
    return query

"""Concurrency for aqido: paging, many searches at once, and study → series → instance crawls.

Everything here is written against one small seam, a :data:`Fetch` callable
``(query, limiter) -> QidoResponse`` that performs one logical request
(retries included); :class:`aqido.client.AsyncQidoRS` provides it.  There is no
aiohttp here.  The parts (re-exported here):

- :func:`iter_pages` (:mod:`aqido._paging`): ``limit``/``offset`` paging with every stop condition a
  real server needs (204 or empty page, short page, truncation warnings, a
  server that ignores ``offset``), de-duplicating by UID;
- :func:`search_many` / :func:`iter_search_many` (:mod:`aqido._tasks`, with the
  task group and the streaming helper): many queries through a
  bounded pool of workers, in order or as they complete;
- :func:`crawl`: a bounded producer/consumer walk that yields each study as
  soon as its subtree is complete, with a window of studies in flight;
  complete against capped servers (it pages, then splits the queries that
  :mod:`aqido.partition` says may be truncated), with failures either raised
  at once (``fail_fast``) or recorded per part in a
  :class:`~aqido.stats.CrawlStats` and reported at the end
  (:class:`~aqido.errors.CrawlIncompleteError`), and resumable from a
  :class:`~aqido.checkpoint.CrawlCheckpoint`.

Rules that keep cancellation clean: requests are always awaited inside the
task that owns them; the first :class:`~aqido.errors.QidoError` in a group
cancels its siblings and is raised on its own (never an ``ExceptionGroup``);
the streaming iterators run their workers in a background task that is
cancelled and awaited whenever the consumer stops, however it stops (end,
``break``, exception, cancellation, timeout).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import AsyncGenerator, Callable, Container, Mapping, Sequence
from contextlib import aclosing
from typing import Any, TypeVar

import attrs

from aqido._json import dumps
from aqido._paging import UID_KEYS as UID_KEYS
from aqido._paging import Fetch as Fetch
from aqido._paging import Page as Page
from aqido._paging import check_page_size
from aqido._paging import iter_pages as iter_pages
from aqido._recorder import Recorder as Recorder
from aqido._slots import Slots
from aqido._tasks import FirstErrorGroup as FirstErrorGroup
from aqido._tasks import Handoff
from aqido._tasks import iter_search_many as iter_search_many
from aqido._tasks import search_many as search_many
from aqido._tasks import stream_from as stream_from
from aqido._trusted import _child_query
from aqido._walker import Keep as Keep
from aqido._walker import Splitter as Splitter
from aqido._walker import Structure as Structure
from aqido._walker import _Walker
from aqido.checkpoint import CrawlCheckpoint
from aqido.errors import (
    CrawlIncompleteError,
    InvalidQueryError,
    InvalidResponseError,
    QidoError,
    excerpt,
)
from aqido.partition import (
    SPLIT_KEYS,
    Caps,
)
from aqido.query import BaseQuery, HierarchicalQuery, QueryLevel
from aqido.stats import CrawlStats

logger = logging.getLogger("aqido")

T = TypeVar("T")


# --- crawl ---------------------------------------------------------------------------------


def _level(depth: QueryLevel | str) -> QueryLevel:
    try:
        return QueryLevel(str(depth).upper())
    except ValueError:
        raise InvalidQueryError(
            f"depth must be QueryLevel.STUDY, SERIES or INSTANCE, not {depth!r}"
        ) from None


async def crawl(
    fetch: Fetch,
    structure: Structure,
    query: BaseQuery,
    *,
    depth: QueryLevel | str = QueryLevel.INSTANCE,
    window: int | Callable[[], int],
    page_size: int | None = None,
    limiter: Slots | None = None,
    server_limit: int | Mapping[Any, int] | None = None,
    caps: Caps | None = None,
    stats: CrawlStats | Recorder | None = None,
    fail_fast: bool = False,
    partial: bool = False,
    checkpoint: CrawlCheckpoint | None = None,
    server: str | None = None,
    today: datetime.date | None = None,
    split_keys: Container[str] = SPLIT_KEYS,
    parts: Sequence[BaseQuery] | None = None,
    keep: Keep | None = None,
) -> AsyncGenerator[Any, None]:
    """Walk studies → series → instances; yield each study once its subtree is complete.

    Arguments:
        fetch: one logical request (retries included), see :data:`Fetch`.
        structure: turns a response's raw items into typed results.
        query: a study-level query selecting the studies to walk; its
            ``include_fields`` are asked for at every level walked (a series or
            instance attribute is returned by those listings only).
        depth: SERIES stops at series, INSTANCE (default) fetches instances too,
            STUDY only lists the studies.
        window: how many studies may be in progress at once (fetched but not yet
            handed to the consumer): memory is bounded by this window (plus one
            UID per study, for de-duplication), not by the archive.  A callable
            is asked again before each study starts (an adaptive limit's window).
        page_size: page size for the study listing (``None``: the server's).
        limiter: an extra per-operation limiter held by every request.
        server_limit: the server's cap on results per response (an int, or a
            mapping by level); see :class:`~aqido.partition.Caps`.
        caps: what is known of the server's caps, shared with other calls
            (caps learned during the crawl are kept there); overrides
            ``server_limit``.
        stats: a :class:`~aqido.stats.CrawlStats` to update (live), or a
            :class:`Recorder` of one (with its progress hook, closed at the end
            however the crawl ends, arguments refused included).
        fail_fast: ``True``: the first failure (after retries) cancels the
            crawl and is raised as is.  ``False`` (default): failed parts are
            recorded and the crawl goes on; at the end
            :class:`~aqido.errors.CrawlIncompleteError` is raised, unless ``partial``.
        partial: implies ``fail_fast=False``; the crawl ends normally and the
            failures are in ``stats.failures``.
        checkpoint: an opened-on-demand :class:`~aqido.checkpoint.CrawlCheckpoint`:
            studies already in it are skipped, each completed study is written
            before it is yielded.
        server: the service root crawled, recorded in (and checked against) the checkpoint.
        today: the upper end of the date range an undated query is split over.
        split_keys: the keys the server matches for splitting (default: all of
            :data:`~aqido.partition.SPLIT_KEYS`; see :func:`aqido.plan.split_keys`).
        parts, keep: how a server that cannot answer ``query`` as the standard does
            answers it all the same (a :class:`~aqido.plan.Plan`): the study
            queries sent instead of ``query`` (their studies merged by UID), and
            the studies to walk of those they return (matched locally).
            ``query`` is still what the checkpoint records.

    Studies are yielded in completion order, each as ``attrs.evolve(study,
    series=(...))`` with ``series.instances`` filled at INSTANCE depth.  A
    study whose subtree could not be fetched is not yielded (it is listed in
    the failures).  Studies are de-duplicated by StudyInstanceUID.
    """
    record = stats if isinstance(stats, Recorder) else Recorder(stats or CrawlStats())
    stats = record.stats
    try:
        level = _level(depth)
        if query.query_level is not QueryLevel.STUDY:
            raise InvalidQueryError(
                f"crawl starts from a study-level query, not {query.query_level.name} "
                f"({query}); use search or iter_search for that"
            )
        if page_size is None and query.limit:
            page_size = query.limit
        query = attrs.evolve(query, limit=0, offset=0)
        listed = [attrs.evolve(p, limit=0, offset=0) for p in parts] if parts else [query]
        check_page_size(page_size)
    except BaseException:
        record.close()  # arguments refused: the progress hook is closed all the same
        raise
    fail_fast = fail_fast and not partial
    walker = _Walker(
        fetch,
        structure,
        limiter=limiter,
        caps=caps if caps is not None else Caps(server_limit),
        stats=record,
        page_size=page_size,
        today=today,
        fail_fast=fail_fast,
        split_keys=split_keys,
        keep=keep,
    )
    record.start()
    skip: set[str] = set()
    if checkpoint is not None:
        try:
            skip = checkpoint.open(query, level, server=server)
        except BaseException:
            record.close()
            raise
        stats.studies_skipped = len(skip)
        if checkpoint.finished_complete:
            checkpoint.close()
            record.finish()
            record.close()
            return

    failed = walker.failed
    # The base query's vendor parameters, UID leniency and included fields carry over (a
    # series attribute asked for comes with the series only); its matches do not.
    # Child queries are derived from these validated queries and the UIDs the server
    # returned, checked on the way (_child_query): no full re-validation per request.
    children_base = HierarchicalQuery(
        extra_params=query.extra_params,
        permissive_uid=query.permissive_uid,
        include_fields=query.include_fields,
    )

    async def series_with_instances(series: Any, parent: BaseQuery) -> Any:
        try:
            child = _child_query(
                parent,
                QueryLevel.INSTANCE,
                SeriesInstanceUID=_uid(series, "SeriesInstanceUID", parent),
            )
        except QidoError as error:
            failed(parent, error)
            return None
        try:
            instances = await walker.children(child)
            _check_announced(series, "NumberOfSeriesRelatedInstances", instances, child)
        except QidoError as error:
            failed(child, error)
            return None
        return series.with_instances(instances)

    async def subtree(study: Any, study_uid: str) -> Any:
        try:
            child = _child_query(children_base, QueryLevel.SERIES, StudyInstanceUID=study_uid)
        except QidoError as error:  # a UID the server returned that a query cannot carry
            failed(query, error)
            return None
        try:
            series = await walker.children(child)
            _check_announced(study, "NumberOfStudyRelatedSeries", series, child)
        except QidoError as error:
            failed(child, error)
            return None
        if level is QueryLevel.INSTANCE:
            filled: list[Any] = [None] * len(series)

            async def fill(index: int, one: Any) -> None:
                filled[index] = await series_with_instances(one, child)

            async with FirstErrorGroup() as group:
                for index, one in enumerate(series):
                    group.start_soon(fill, index, one)
            if any(one is None for one in filled):
                return None  # incomplete: not handed out (the failure is recorded)
            series = filled
        return study.with_series(series)

    async def produce(send: Handoff[Any]) -> None:
        slots = Slots(max(1, window() if callable(window) else window))
        if callable(window):

            def follow_limit() -> None:
                # the limit changes as answers come in: a grown window starts studies
                # at once, not when a study in progress ends
                size = max(1, window())
                if size != slots.total:
                    slots.resize(size)

            walker.after_request = follow_limit
        seen: set[str] = set()

        async def finish(study: Any, study_uid: str) -> None:
            try:
                done = await subtree(study, study_uid)
                if done is not None:
                    await send.send(done)
            finally:
                slots.release()

        async def walk() -> None:
            for part in listed:
                await walk_part(part)

        async def walk_part(part: BaseQuery) -> None:
            async with aclosing(walker.listing(part, seen)) as batches:
                async for batch in batches:
                    for study in batch:
                        try:
                            study_uid = _uid(study, "StudyInstanceUID", part)
                        except QidoError as error:
                            failed(query, error)
                            continue
                        if study_uid in skip:
                            continue
                        if level is QueryLevel.STUDY:
                            await send.send(study)
                            continue
                        await slots.acquire()  # a free one: no event-loop turn
                        group.start_soon(finish, study, study_uid)
                    # the page is not held while the next is fetched: each study's task
                    # holds its study only until it is handed out
                    del batch

        async with FirstErrorGroup() as group:
            group.start_soon(walk)

    try:
        async with aclosing(stream_from(produce)) as studies:
            async for study in studies:
                if checkpoint is not None:
                    checkpoint.write_study(study)
                record.study_done(study)
                yield study
        record.finish()
        if checkpoint is not None:
            checkpoint.write_end(stats.studies_done + stats.studies_skipped, stats.failures)
    finally:
        if checkpoint is not None:
            checkpoint.close()
        record.close()
    if stats.failures and not partial:
        raise CrawlIncompleteError(stats.failures, stats.counts(), stats=stats)


def _uid(result: Any, keyword: str, listing: BaseQuery) -> str:
    """``result``'s UID ``keyword``, to list its children; else the error naming what was sent.

    ``listing`` is the query that returned ``result``: its URL goes on the error, with
    the result's JSON as the excerpt and, for a UID that came but is not one (a
    JSON object, a number), what it was.
    """
    value = getattr(result, keyword, None)
    if not value:
        sent = next((bad for bad in result.invalid if bad.keyword == keyword), None)
        what = f" ({excerpt(repr(sent.raw), 80)} is not one: {sent.reason})" if sent else ""
        raise InvalidResponseError(
            f"a {type(result).__name__} in the response has no {keyword}{what}, so its "
            "children cannot be listed",
            url=listing.relative_url(),
            body=dumps(result.to_json()),
        )
    return str(value)


def _check_announced(parent: Any, count: str, children: list[Any], listing: BaseQuery) -> None:
    """Raise if ``parent`` announced children (its ``count``) and ``listing`` found none.

    A study listed with 3 series whose series listing is empty was deleted
    during the crawl, or the server does not answer that listing: handed out
    with no series, it would be a wrong answer.  Counts are not compared
    otherwise (a count may be stale, or count what the listing does not show).
    """
    if children:
        return
    announced = getattr(parent, count, None)
    if isinstance(announced, int) and announced > 0:
        raise InvalidResponseError(
            f"{listing} found nothing, but its parent was listed with {count} "
            f"{announced} (deleted during the crawl, or a listing the server does not "
            "answer?)",
            url=listing.relative_url(),
        )

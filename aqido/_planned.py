"""The client's searches planned with a server profile: the standard's answer from any archive.

:class:`PlannedSearch` is a part of :class:`~aqido.client.AsyncQidoRS` (a mixin):
it executes the pure plans of :mod:`aqido.plan` (which requests to send, what
to match locally, which lists to fan out, which relational paths to walk)
through the client's one request method, and merges, filters and cuts the
answers.  Only the client uses it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import attrs

from aqido._caps import Caps
from aqido._elements import raw_items
from aqido._json import dumps
from aqido._search_results import SearchResults
from aqido._slots import Slots
from aqido.errors import (
    InvalidResponseError,
    QidoError,
    UnanswerableQueryError,
)
from aqido.protocol import QidoResponse, join_url
from aqido.query import (
    BaseQuery,
)
from aqido.results import structure

if TYPE_CHECKING:  # pragma: no cover - the planner is imported when a profile is in play
    from aqido.plan import Plan
    from aqido.profile import ServerProfile

plan_logger = logging.getLogger("aqido.plan")

#: Set while the client probes its own server (``profile="auto"``): searches then go out as
#: they are, without a profile (the probe measures the server, it must not be corrected).
_RAW_SEARCHES: contextvars.ContextVar[bool] = contextvars.ContextVar("aqido_raw", default=False)


class PlannedSearch:
    """Searches through a server profile (see :attr:`AsyncQidoRS.profile`).

    What it uses of the client, set by ``AsyncQidoRS.__init__`` or defined there:
    """

    url: str
    pn_case_sensitive: bool | None
    strict_matching: bool
    permissive_uid: bool
    _profile: ServerProfile | None
    _auto_profile: bool
    _profile_lock: asyncio.Lock | None
    _caps: Caps

    if TYPE_CHECKING:  # pragma: no cover - defined by AsyncQidoRS

        async def _fetch(
            self,
            query: BaseQuery,
            limiter: Slots | None = None,
            *,
            on_retry: Callable[[QidoError, float], None] | None = None,
        ) -> QidoResponse: ...

        async def probe(self) -> ServerProfile: ...

        @property
        def _slots(self) -> int: ...

    # --- profiles: the standard's answer from any server -------------------------------------

    @property
    def profile(self) -> ServerProfile | None:
        """The server profile searches are planned with (``None``: none, or not probed yet)."""
        return self._profile

    async def _server_profile(self) -> ServerProfile | None:
        """The profile to plan with; with ``profile="auto"``, probe once (one probe at a time)."""
        if _RAW_SEARCHES.get():
            return None
        if self._profile is not None or not self._auto_profile:
            return self._profile
        if self._profile_lock is None:
            self._profile_lock = asyncio.Lock()
        async with self._profile_lock:
            if self._profile is None:
                token = _RAW_SEARCHES.set(True)
                try:
                    self._profile = await self.probe()
                finally:
                    _RAW_SEARCHES.reset(token)
        return self._profile

    def _plan_for(self, query: BaseQuery) -> Plan:
        """The plan for ``query``, permissive about UIDs if the client is (as a crawl is).

        A walk builds its child queries from the UIDs the server returns: with
        ``permissive_uid=True`` a UID the client accepts must not fail them.
        """
        from aqido.plan import plan_query  # only with a profile: keeps a plain search's start fast

        if self.permissive_uid and not query.permissive_uid:
            query = attrs.evolve(query, permissive_uid=True)
        return plan_query(query, self._profile, pn_case_sensitive=self.pn_case_sensitive)

    async def _plan(self, query: BaseQuery) -> Plan | None:
        """The plan for ``query`` (``None``: no profile, or the query goes out unchanged)."""
        profile = await self._server_profile()
        if profile is None:
            return None
        from aqido._plan_spans import fuzzy_note  # with a profile only, as the planner

        plan = self._plan_for(query)
        if plan.warnings and self.strict_matching:
            raise UnanswerableQueryError(plan.warnings, query=query)
        if (note := fuzzy_note(query.fuzzymatching, profile)) is not None:
            plan_logger.warning("%s: %s", query, note)  # and in the results' warnings
            return plan
        return None if plan.direct else plan

    async def _collect(
        self,
        query: BaseQuery,
        limiter: Slots | None,
        exhaustive: bool,
        page_size: int | None,
    ) -> _Answer:
        """The items of one planned request: one response, or every page (``exhaustive``)."""
        if not exhaustive:
            response = await self._fetch(query, limiter)
            level, caps = query.query_level, self._caps
            caps.observe(level, len(response.items))
            capped = caps.possibly_truncated(response, level, query.limit) or caps.suspect(
                response, level, query.limit
            )
            return _Answer(response.items, [response], [], capped)
        from aqido._paging import iter_pages  # paging: not needed by a plain search's start

        answer = _Answer([], [], [])
        doubts: list[str] = []  # why paging that ended may still have missed matches
        pages = iter_pages(
            self._fetch, query, page_size=page_size, limiter=limiter, caps=self._caps, doubts=doubts
        )
        async with aclosing(pages):
            async for page in pages:
                answer.items.extend(raw_items(page.items))
                answer.responses.append(page.response)
        answer.possibly_truncated = bool(doubts)
        return answer

    async def _execute(
        self,
        plan: Plan,
        limiter: Slots | None,
        *,
        exhaustive: bool,
        page_size: int | None = None,
    ) -> _Answer:
        """Send a plan's requests (or walk the hierarchy), merge, filter locally, cut the window.

        A walk always fetches every parent and child page: its parents must be
        complete.  As in a crawl, a parent without its UIDs (its children cannot
        be listed) and a child listing answering for another parent (a server
        ignoring the UIDs in the path) raise
        :class:`~aqido.errors.InvalidResponseError`: dropping the one or merging
        the other would be a wrong answer that looks complete.
        """
        from aqido._tasks import search_many  # only with a profile: keeps the start fast

        results: list[_Answer]
        if plan.walk is not None:
            from aqido._paging import check_parents  # only for a walk

            walk = plan.walk
            parents = await self._execute(self._plan_for(walk.parent), limiter, exhaustive=True)
            jobs = []
            for parent in parents.items:
                child_query = walk.child(parent)
                if child_query is None:
                    raise InvalidResponseError(
                        f"a {walk.parent.query_level.name.lower()} listed by {walk.parent} has "
                        f"no UID, so its {walk.level.name.lower()} results cannot be listed "
                        f"(walking the hierarchy for {plan.query}: the server has no "
                        "relational path)",
                        url=parents.responses[0].url if parents.responses else None,
                        body=dumps(parent)[:400],
                    )
                jobs.append((parent, child_query))

            async def child(job: tuple[dict[str, Any], BaseQuery]) -> _Answer:
                parent, query = job
                found = await self._execute(self._plan_for(query), limiter, exhaustive=True)
                for response in found.responses:
                    check_parents(query, response)  # an answer for another parent: refused
                # a relational search returns the parents' attributes too
                found.items[:] = [{**parent, **item} for item in found.items]
                return found

            results = [_Answer([], parents.responses, parents.notes, parents.possibly_truncated)]
            results += await search_many(child, jobs, workers=self._slots)
        else:

            async def one(query: BaseQuery) -> _Answer:
                return await self._collect(query, limiter, exhaustive, page_size)

            results = await search_many(one, plan.requests, workers=self._slots)
        merged = plan.merge(r.items for r in results)
        kept, notes = plan.finish(merged)
        all_notes = [*plan.warnings, *(n for r in results for n in r.notes), *notes]
        responses = [resp for r in results for resp in r.responses]
        return _Answer(
            [dict(item) for item in kept],
            responses,
            list(dict.fromkeys(all_notes)),
            any(r.possibly_truncated for r in results),
        )

    async def _every_planned(
        self, plan: Plan, limiter: Slots | None, page_size: int | None
    ) -> SearchResults[Any]:
        """Every match of a planned query (``iter_search``, ``get_remaining``).

        There, as without a plan, the query's ``limit`` is a page size, not the
        size of the answer: the plan is made again without it.
        """
        query = plan.query
        if query.limit:
            plan = self._plan_for(attrs.evolve(query, limit=0))
        size = page_size or query.limit or None
        return await self._search_planned(plan, limiter, exhaustive=True, page_size=size)

    async def _search_planned(
        self,
        plan: Plan,
        limiter: Slots | None,
        *,
        exhaustive: bool,
        page_size: int | None = None,
    ) -> SearchResults[Any]:
        """Execute a plan and return typed results carrying the servers' and aqido's warnings."""
        answer = await self._execute(plan, limiter, exhaustive=exhaustive, page_size=page_size)
        query = plan.query
        if answer.notes and self.strict_matching:
            raise UnanswerableQueryError(answer.notes, query=query)
        for note in answer.notes:
            plan_logger.warning("%s: %s", query, note)
        first = answer.responses[0] if answer.responses else None
        url = first.url if first is not None else join_url(self.url, query.uri_base())
        typed = structure(
            answer.items, query.query_level, url=url, status=first.status if first else None
        )
        results: SearchResults[Any] = SearchResults(typed, response=first)
        server = {w.raw: w for r in answer.responses for w in r.warnings}
        from aqido._plan_spans import fuzzy_note  # loaded by the planner already
        from aqido._warning_headers import QidoWarning

        said = [fuzzy_note(query.fuzzymatching, self._profile)]  # logged by _plan
        ours = (
            QidoWarning(None, "aqido", n, f"aqido: {n}")
            for n in [*answer.notes, *filter(None, said)]
        )
        results.warnings = (*server.values(), *ours)
        if exhaustive:  # every page was fetched (truncation followed), as without a plan
            results.truncated = False
            results.possibly_truncated = answer.possibly_truncated  # a doubt paging logged
            results.additional_results = None
            return results
        results.truncated = any(r.truncated for r in answer.responses)
        # per response, as a plain search says it (a truncation with 0 more is no doubt)
        results.possibly_truncated = answer.possibly_truncated
        if len(answer.responses) != 1:
            results.additional_results = None
        return results


class _Answer:
    """What executing a plan gave: items (DICOM JSON), the responses, aqido's warnings.

    A plain class, not a ``NamedTuple``: building one of those at import costs ~0.3 ms of
    every start, for searches with a profile only.
    """

    __slots__ = ("items", "notes", "possibly_truncated", "responses")

    def __init__(
        self,
        items: list[dict[str, Any]],
        responses: list[QidoResponse],
        notes: list[str],
        possibly_truncated: bool = False,
    ) -> None:
        self.items = items
        self.responses = responses
        self.notes = notes
        self.possibly_truncated = possibly_truncated

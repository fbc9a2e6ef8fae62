"""The dicomweb-client names of the client: ``search_for_studies``, ``_series``, ``_instances``.

:class:`DicomwebMethods` is a part of :class:`~aqido.client.AsyncQidoRS` (a
mixin), and :func:`dicomweb_query` the pure translation of dicomweb-client's
arguments into an aqido query.  The blocking ``QidoRS`` takes these methods
as they are.
"""

from __future__ import annotations

from collections.abc import (
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from aqido import dictionary
from aqido._caps import Caps
from aqido._search_results import SearchResults
from aqido._slots import Slots
from aqido.errors import (
    InvalidQueryError,
    QueryTypeError,
)
from aqido.protocol import QidoResponse
from aqido.query import (
    ATTRIBUTE_FIELDS,
    BaseQuery,
    HierarchicalQuery,
    QueryLevel,
    RelationalQuery,
)
from aqido.results import Instance, Series, Study, structure

if TYPE_CHECKING:  # pragma: no cover
    from aqido._warning_headers import QidoWarning
    from aqido.plan import Plan


class DicomwebMethods:
    """``search_for_*`` with dicomweb-client's arguments, typed results.

    What it uses of the client, set by ``AsyncQidoRS.__init__`` or defined there:
    """

    permissive_uid: bool
    _caps: Caps

    if TYPE_CHECKING:  # pragma: no cover - defined by AsyncQidoRS and PlannedSearch

        async def _search(self, query: BaseQuery, limiter: Slots | None) -> SearchResults[Any]: ...

        async def _fetch(self, query: BaseQuery, limiter: Slots | None = None) -> QidoResponse: ...

        async def _plan(self, query: BaseQuery) -> Plan | None: ...

        async def _every_planned(
            self, plan: Plan, limiter: Slots | None, page_size: int | None
        ) -> SearchResults[Any]: ...

    # --- dicomweb-client names --------------------------------------------------------------

    async def search_for_studies(
        self,
        *,
        fuzzymatching: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        fields: Iterable[str] | None = None,
        search_filters: Mapping[str, Any] | None = None,
        get_remaining: bool = False,
        additional_params: Mapping[str, str | Sequence[str]] | None = None,
    ) -> SearchResults[Study]:
        """Search for studies, with dicomweb-client's arguments; returns typed ``Study`` results.

        ``fields`` are attributes to include (``includefield``);
        ``search_filters`` maps keywords or tags to match values;
        ``get_remaining=True`` pages until every match has been fetched (where
        paging cannot rule out a silent cap, as when the server ignores
        ``offset``, a warning is logged and ``.possibly_truncated`` is true);
        ``additional_params`` are other query parameters (a value or a list
        of values each, sent after aqido's own as ``key=v1&key=v2``): the
        query's ``extra_params``, with the same rules.  As in dicomweb-client,
        a ``fuzzymatching`` that is not a bool (and, for series and instances, an
        empty UID argument) raises; an attribute given twice in ``search_filters``
        (as a tag and a keyword) with two values, or a UID there that contradicts
        the UID argument, raises :class:`~aqido.errors.InvalidQueryError` too.  A
        ``search_filters`` value ``""`` is universal matching (PS3.18 8.3.4.1):
        the attribute is sent as ``includefield``, so it is returned.
        """
        query = self._dicomweb_query(
            QueryLevel.STUDY,
            None,
            None,
            fuzzymatching,
            limit,
            offset,
            fields,
            search_filters,
            additional_params,
        )
        return await self._dicomweb_search(query, get_remaining)

    async def search_for_series(
        self,
        study_instance_uid: str | None = None,
        *,
        fuzzymatching: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        fields: Iterable[str] | None = None,
        search_filters: Mapping[str, Any] | None = None,
        get_remaining: bool = False,
        additional_params: Mapping[str, str | Sequence[str]] | None = None,
    ) -> SearchResults[Series]:
        """Search for series (of one study, or all series), as dicomweb-client does."""
        query = self._dicomweb_query(
            QueryLevel.SERIES,
            study_instance_uid,
            None,
            fuzzymatching,
            limit,
            offset,
            fields,
            search_filters,
            additional_params,
        )
        return await self._dicomweb_search(query, get_remaining)

    async def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        *,
        fuzzymatching: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        fields: Iterable[str] | None = None,
        search_filters: Mapping[str, Any] | None = None,
        get_remaining: bool = False,
        additional_params: Mapping[str, str | Sequence[str]] | None = None,
    ) -> SearchResults[Instance]:
        """Search for instances, as dicomweb-client does.

        Unlike dicomweb-client, a ``series_instance_uid`` without a study UID is
        never dropped: it is sent as a ``SeriesInstanceUID`` match on ``/instances``.
        """
        query = self._dicomweb_query(
            QueryLevel.INSTANCE,
            study_instance_uid,
            series_instance_uid,
            fuzzymatching,
            limit,
            offset,
            fields,
            search_filters,
            additional_params,
        )
        return await self._dicomweb_search(query, get_remaining)

    def _dicomweb_query(
        self,
        level: QueryLevel,
        study_uid: object,
        series_uid: object,
        *args: Any,
    ) -> BaseQuery:
        """:func:`dicomweb_query`, the UID arguments' types checked as dicomweb-client does."""
        for name, value in (("study_instance_uid", study_uid), ("series_instance_uid", series_uid)):
            if value is not None and not isinstance(value, str):
                raise QueryTypeError(
                    f"{name}: {value!r} is not a str; pass one UID as a str (several UIDs: "
                    "search_filters={'StudyInstanceUID': [...]} on a relational search)"
                )
            if value == "":  # not None: dropping it would search the whole archive
                raise InvalidQueryError(
                    f"{name}: the UID is empty; pass a UID, or leave it out (None) to search "
                    "across all studies/series"
                )
        return dicomweb_query(
            level,
            str(study_uid or ""),
            str(series_uid or ""),
            *args,
            permissive_uid=self.permissive_uid,
        )

    async def _dicomweb_search(self, query: BaseQuery, get_remaining: bool) -> SearchResults[Any]:
        """One search, or (``get_remaining``) every page, with the warnings of every page."""
        if not get_remaining:
            return await self._search(query, None)
        plan = await self._plan(query)
        if plan is not None:
            return await self._every_planned(plan, None, None)
        from aqido._paging import iter_pages  # paging: not needed by a plain search's start

        items: list[Any] = []
        first: QidoResponse | None = None
        warnings: dict[str, QidoWarning] = {}
        doubts: list[str] = []  # why paging that ended may still have missed matches
        pages = iter_pages(self._fetch, query, caps=self._caps, doubts=doubts)
        async with aclosing(pages):
            async for page in pages:
                first = first or page.response
                response = page.response
                url, status = response.url, response.status
                items += structure(page.items, query.query_level, url=url, status=status)
                for warning in response.warnings:
                    warnings.setdefault(warning.raw, warning)
        results: SearchResults[Any] = SearchResults(items, response=first)
        results.warnings = tuple(warnings.values())  # every page's, as a planned search gives
        results.truncated = False  # every page was fetched
        # unless paging could not rule out a silent cap (logged): then it says so
        results.possibly_truncated = bool(doubts)
        results.additional_results = None
        return results


_QUERY_FIELDS = frozenset(ATTRIBUTE_FIELDS)


def _fuzzymatching(value: object) -> bool:
    """dicomweb-client's ``fuzzymatching`` (``None``, ``True`` or ``False``), checked as it does.

    A string such as ``"false"`` is refused: it is truthy, and would turn fuzzy
    matching on.
    """
    if value is None:
        return False
    if not isinstance(value, bool):
        raise QueryTypeError(f"fuzzymatching: {value!r} is not a bool; pass True or False")
    return value


def _uids(value: object) -> list[object]:
    """The UIDs of a ``search_filters`` UID value: a UID, ``"a,b"`` or a list."""
    if isinstance(value, str):
        return [u.strip() for u in value.split(",")]
    if isinstance(value, list | tuple):
        return [u.strip() if isinstance(u, str) else u for u in value]
    return [value]


def dicomweb_query(
    level: QueryLevel,
    study_uid: str,
    series_uid: str,
    fuzzymatching: bool | None,
    limit: int | None,
    offset: int | None,
    fields: Iterable[str] | None,
    search_filters: Mapping[str, Any] | None,
    additional_params: Mapping[str, str | Sequence[str]] | None = None,
    *,
    permissive_uid: bool = False,
) -> BaseQuery:
    """Build the query dicomweb-client's ``search_for_*`` arguments describe."""
    if fields is not None and (isinstance(fields, str | bytes) or not isinstance(fields, Iterable)):
        # a str would be its characters: "'P' is not a DICOM keyword"
        raise QueryTypeError(
            f"fields: {type(fields).__name__} {fields!r:.60}; pass a list of keywords or tags"
        )
    if search_filters is not None and not isinstance(search_filters, Mapping):
        raise QueryTypeError(
            f"search_filters: {type(search_filters).__name__} {search_filters!r:.60}; "
            "pass a mapping of keywords or tags to values"
        )
    kwargs: dict[str, Any] = {
        "query_level": level,
        "fuzzymatching": _fuzzymatching(fuzzymatching),
        "limit": limit or 0,
        "offset": offset or 0,
        "include_fields": tuple(fields or ()),
        "extra_params": additional_params,
        "permissive_uid": permissive_uid,
    }
    filters: dict[str, Any] = {}
    given: dict[int, tuple[object, Any]] = {}  # tag -> (the key it was given as, its value)
    universal: list[str] = []  # attributes given "": universal matching
    for key, value in (search_filters or {}).items():
        try:
            tag, keyword = dictionary.resolve(key)
        except (KeyError, ValueError) as exc:
            raise InvalidQueryError(f"search_filters: unknown attribute {key!r} ({exc})") from None
        if value is None:  # a named field's default: dropped, it would search everything
            raise InvalidQueryError(
                f"search_filters: {key!r} is None; give a value, '' to return it for "
                "every match (universal matching), or leave the attribute out"
            )
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if tag in given:  # a tag and its keyword: one of two values would be lost
            if given[tag][1] == value:
                continue
            raise InvalidQueryError(
                f"search_filters: {given[tag][0]!r} and {key!r} are the same attribute "
                f"({keyword or key}) with two values; give it once"
            )
        given[tag] = (key, value)
        if value == "":  # PS3.18 8.3.4.1: match all, return the attribute (as includefield)
            universal.append(keyword or f"{tag:08X}")
        elif keyword in _QUERY_FIELDS:
            kwargs[keyword] = value
        else:
            filters[key] = value
    if universal and "all" not in kwargs["include_fields"]:
        have = set(kwargs["include_fields"])
        kwargs["include_fields"] += tuple(k for k in universal if k not in have)
    if filters:
        kwargs["filters"] = filters
    for keyword, uid in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid)):
        if not uid:
            continue
        given_uids = kwargs.get(keyword)
        if given_uids is not None and uid not in _uids(given_uids):  # a list holding it: fine
            raise InvalidQueryError(
                f"search_filters: {keyword}={kwargs[keyword]!r} contradicts the "
                f"{keyword} argument {uid!r}; give the UID once"
            )
        kwargs[keyword] = uid
    hierarchical = (
        level is QueryLevel.STUDY
        or (level is QueryLevel.SERIES and study_uid)
        or (level is QueryLevel.INSTANCE and study_uid and series_uid)
    )
    if hierarchical:
        return HierarchicalQuery(**kwargs)
    return RelationalQuery(**kwargs)

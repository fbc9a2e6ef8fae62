"""Query planning: how to get the standard's answer from a server with a given profile.

Pure (no I/O).  :func:`plan_query` takes a query and a :class:`~aqido.profile.ServerProfile`
and returns a :class:`Plan`: the requests to send, the local filter to apply to what comes
back (the rules of :mod:`aqido.matching`), and warnings for whatever cannot be answered
exactly.  The client (:mod:`aqido.client`) only executes plans.

Each match key is looked at on its own, against what the profile says the server does with
that form of value (single, wildcard, list, range; case; percent-encoding; attributes it
does not match, ranges on keys it takes none on):

- **exact**: the server matches it as the standard says; it is sent as is;
- **too loose** (case-insensitive where the standard is case-sensitive, prefix/substring
  matching): it is sent, and the results are filtered down locally;
- **not matched** (no wildcards, no ranges, a value the server would read percent-encoded,
  an attribute it ignores): it is left out of the request and matched locally;
- **a list the server cannot OR** (``ModalitiesInStudy=CT,MR``, a UID list): one request
  per value, however many (200 UIDs: 200 requests; matched locally instead, the list would
  fetch every study), merged by UID (first seen wins, order kept).  Further such lists are
  crossed with it, one request per combination, while that makes at most
  :data:`MAX_FAN_OUT` requests; a list that would take the count past it is matched locally.

Local matching needs the attribute in the results: aqido asks for it with ``includefield``
(or relies on the level's default attributes).  When the server neither matches nor returns
a key, the query cannot be answered exactly: the plan says so in :attr:`Plan.warnings` (and
the client raises :class:`~aqido.errors.UnanswerableQueryError` in strict mode).  With local
matching, a ``limit``/``offset`` cannot be sent to the server: every match is fetched and
the window is cut locally.

Relational searches on servers without relational paths walk the hierarchy
(:class:`Walk`): ``/series`` becomes studies then each study's series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from aqido import dictionary
from aqido._plan_spans import full_dates, needs_range, number_forms, span_range, text_form
from aqido._plan_spans import split_keys as split_keys  # re-exported: aqido.plan.split_keys
from aqido.matching import (
    STRING_VRS,
    WILDCARD_VRS,
    Criterion,
    MatchOptions,
    attribute_level,
    filter_datasets,
    is_universal,
    match_form,
)
from aqido.profile import ServerProfile
from aqido.query import (
    ATTRIBUTE_FIELDS,
    BaseQuery,
    HierarchicalQuery,
    QueryLevel,
    RelationalQuery,
    encode_query_value,
)

#: The attributes a server returns without ``includefield`` (PS3.18 Table 10.6.3-3/4/5), by level.
DEFAULT_ATTRIBUTES: Mapping[QueryLevel, frozenset[str]] = {
    QueryLevel.STUDY: frozenset(
        [
            "00080005",
            "00080020",
            "00080030",
            "00080050",
            "00080056",
            "00080061",
            "00080090",
            "00080201",
            "00081190",
            "00100010",
            "00100020",
            "00100030",
            "00100040",
            "0020000D",
            "00200010",
            "00201206",
            "00201208",
        ]
    ),
    QueryLevel.SERIES: frozenset(
        [
            "00080005",
            "00080060",
            "00080201",
            "0008103E",
            "00081190",
            "0020000E",
            "00200011",
            "00201209",
            "00400244",
            "00400245",
            "00400275",
        ]
    ),
    QueryLevel.INSTANCE: frozenset(
        [
            "00080005",
            "00080016",
            "00080018",
            "00080056",
            "00080201",
            "00081190",
            "00200013",
            "00280008",
            "00280010",
            "00280011",
            "00280100",
        ]
    ),
}

#: The UID that identifies a result at each level (merging fanned-out requests).
LEVEL_UID = {
    QueryLevel.STUDY: "0020000D",
    QueryLevel.SERIES: "0020000E",
    QueryLevel.INSTANCE: "00080018",
}

#: The most requests lists the server cannot OR are crossed into (a further list that would
#: pass it is matched locally); the first list always fans out, one request per value.
MAX_FAN_OUT = 64

#: What the server does with one match key (see the module docstring).
Handling = Literal["exact", "loose", "local"]

_ORDER = {"exact": 0, "loose": 1, "local": 2}
_UIDS = ("StudyInstanceUID", "SeriesInstanceUID")  # the UIDs of a series, of an instance


@attrs.frozen
class _Key:
    """One match key of a query: where it lives in the query, and what it means."""

    kind: Literal["field", "dates", "filter"]
    name: str  # the query field, "StudyDate", or the filters key
    criterion: Criterion


@attrs.frozen(kw_only=True)
class Walk:
    """Walk the hierarchy where a relational path is missing.

    Run :attr:`parent` (a query one level up, itself planned), then for each
    of its results one hierarchical query at :attr:`level` holding
    :attr:`fields` and the parent's UIDs (:meth:`child`).
    """

    parent: BaseQuery
    level: QueryLevel
    fields: Mapping[str, Any]

    def child(self, parent_item: Mapping[str, Any]) -> BaseQuery | None:
        """The hierarchical query for one parent result (``None`` if it lacks its UIDs).

        A series listed under one study (``/studies/{uid}/series``) need not carry
        its StudyInstanceUID: the parent query's single study UID stands in.  The
        caller must not drop a parent it gets ``None`` for: its children would
        vanish from the answer without a word.
        """
        uids = {}
        for name, key in (("StudyInstanceUID", "0020000D"), ("SeriesInstanceUID", "0020000E")):
            values = (parent_item.get(key) or {}).get("Value") or ()
            if values and isinstance(values[0], str):
                uids[name] = values[0].rstrip("\0 ")
        study = self.parent.StudyInstanceUID
        if "StudyInstanceUID" not in uids and study and "," not in study:
            uids["StudyInstanceUID"] = study
        need = _UIDS[: 1 if self.level is QueryLevel.SERIES else 2]
        if any(n not in uids for n in need):
            return None
        return HierarchicalQuery(query_level=self.level, **{**self.fields, **uids})


@attrs.frozen(kw_only=True)
class Plan:
    """How to answer one query on one server: requests, local filter, window, warnings.

    - :attr:`requests`: the queries to send (several for a fanned-out list);
      their results are merged by :attr:`merge_key` (first seen wins);
    - :attr:`walk`: instead of :attr:`requests`, walk the hierarchy;
    - :attr:`local`: criteria every result must meet (matched with :attr:`options`);
    - :attr:`offset`, :attr:`limit`: the window cut locally (``limit=0``: all),
      when :attr:`local_window` (the server got neither);
    - :attr:`warnings`: why the answer may differ from the standard's (empty: exact).
    """

    query: BaseQuery
    requests: tuple[BaseQuery, ...] = ()
    walk: Walk | None = None
    local: tuple[Criterion, ...] = ()
    options: MatchOptions = attrs.field(factory=MatchOptions)
    merge_key: str = "0020000D"
    local_window: bool = False
    offset: int = 0
    limit: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def direct(self) -> bool:
        """Whether the query is sent unchanged in one request, nothing done locally, no warning."""
        return (
            self.walk is None
            and not self.local
            and not self.local_window
            and not self.warnings
            and self.requests == (self.query,)
        )

    @property
    def exact(self) -> bool:
        """Whether the plan gives the standard's answer (no warnings)."""
        return not self.warnings

    def merge(self, pages: Iterable[Sequence[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
        """Concatenate result lists, dropping repeats of a UID (first seen wins, order kept)."""
        seen: set[str] = set()
        out: list[Mapping[str, Any]] = []
        for page in pages:
            for item in page:
                values = (item.get(self.merge_key) or {}).get("Value") or ()
                uid = values[0] if values and isinstance(values[0], str) else None
                if uid is not None:
                    if uid in seen:
                        continue
                    seen.add(uid)
                out.append(item)
        return out

    def finish(
        self, items: Sequence[Mapping[str, Any]]
    ) -> tuple[list[Mapping[str, Any]], list[str]]:
        """Filter merged results locally and cut the window; also return runtime warnings.

        A key to match locally that no result carries at all (while there are
        results) means the server did not return it: it cannot be matched, so
        it is not applied, and a warning says so.
        """
        notes: list[str] = []
        criteria = []
        for criterion in self.local:
            first = criterion.path[0]
            if items and not any(first in item for item in items):
                notes.append(
                    f"{_label(criterion)}: the server returned no {_label(criterion)} values, "
                    "so it could not be matched locally; the results are not filtered by it"
                )
                continue
            criteria.append(criterion)
        kept = filter_datasets(items, criteria, self.options) if criteria else list(items)
        if self.local_window:
            kept = kept[self.offset :]
            if self.limit:
                kept = kept[: self.limit]
        return kept, notes


def _label(criterion: Criterion) -> str:
    names = []
    for key in criterion.path:
        keyword = dictionary.keyword_for(dictionary.parse_tag_key(key))
        names.append(keyword or key)
    return ".".join(names)


def _keys(query: BaseQuery) -> list[_Key]:
    """The match keys of a query (UIDs that go in the path are not keys)."""
    in_path = set(query._path_uid_fields())
    keys: list[_Key] = []
    for field in ATTRIBUTE_FIELDS:
        value = getattr(query, field)
        if value and field not in in_path:
            keys.append(_Key("field", field, Criterion.of(field, value)))
    dates = query.study_date_range()
    if dates:
        keys.append(_Key("dates", "StudyDate", Criterion.of("StudyDate", dates)))
    for name, value in query.filters:
        keys.append(_Key("filter", name, Criterion.of(name, value)))
    return keys


def _without(query: BaseQuery, keys: Iterable[_Key]) -> dict[str, Any]:
    """The changes (for ``attrs.evolve``) that leave ``keys`` out of ``query``."""
    changes: dict[str, Any] = {}
    dropped_filters = set()
    for key in keys:
        if key.kind == "field":
            changes[key.name] = ""
        elif key.kind == "dates":
            changes["min_study_date"] = None
            changes["max_study_date"] = None
        else:
            dropped_filters.add(key.name)
    if dropped_filters:
        changes["filters"] = tuple(f for f in query.filters if f[0] not in dropped_filters)
    return changes


def _with_value(query: BaseQuery, key: _Key, value: str) -> BaseQuery:
    if key.kind == "field":
        changes: dict[str, Any] = {key.name: value}
        return attrs.evolve(query, **changes)
    filters = tuple((k, value if k == key.name else v) for k, v in query.filters)
    return attrs.evolve(query, filters=filters)


def _single_handling(
    value: str, vr: str, profile: ServerProfile, pn_case: bool, fuzzy: bool
) -> Handling:
    """What the server does with one value (no list) of this VR."""
    form = match_form(value, vr)
    if form in ("range", "open_range"):
        if vr == "TM":
            ok = profile.time_ranges
        else:
            ok = profile.date_ranges if form == "range" else profile.open_date_ranges
        # ``-d``: a server comparing text (Orthanc) finds the empty values too (they sort
        # first), which the standard never matches: filtered out here
        empties = profile.temporal_text and value.startswith("-")
        return "local" if not ok else "loose" if empties else "exact"
    if vr not in STRING_VRS:
        return "exact"
    if vr not in WILDCARD_VRS and ("*" in value or "?" in value):
        return "loose"  # characters in AS and UR, but a server may read them as wildcards
    if vr == "PN" and fuzzy and profile.fuzzy_matching == "supported":
        return "exact"  # the server's own fuzzy matching: nothing to check it against
    if ("*" in value and not profile.wildcard_star) or (
        "?" in value and not profile.wildcard_question
    ):
        return "local"
    handling: Handling = "exact"
    if vr == "PN":
        if pn_case and not profile.pn_case_sensitive:
            handling = "loose"
        elif not pn_case and profile.pn_case_sensitive:
            return "local"  # the server would miss the other cases: match them here
    elif not profile.case_sensitive:
        handling = "loose"
    if profile.single_value_matching != "exact":
        handling = "loose"
    return handling


def _worst(handlings: Iterable[Handling]) -> Handling:
    return max(handlings, key=lambda h: _ORDER[h], default="exact")


def plan_query(
    query: BaseQuery,
    profile: ServerProfile | None,
    *,
    pn_case_sensitive: bool | None = None,
) -> Plan:
    """Plan ``query`` for a server that behaves as ``profile`` says (``None``: send it as is).

    ``pn_case_sensitive``: whether PN values are matched case-sensitively in
    the answer aqido returns; ``None`` takes the server's choice (PS3.4 lets a
    server match PN without regard to case).  Other strings are always
    case-sensitive, as the standard says.
    """
    if profile is None:
        return Plan(query=query, requests=(query,))
    pn_case = profile.pn_case_sensitive if pn_case_sensitive is None else pn_case_sensitive
    options = MatchOptions(pn_case_sensitive=pn_case)
    walk = _walk(query, profile)
    if walk is not None:
        return Plan(
            query=query,
            walk=walk,
            options=options,
            merge_key=LEVEL_UID[query.query_level],
            local_window=bool(query.limit or query.offset),
            offset=query.offset,
            limit=query.limit,
        )
    level = query.query_level
    keys = _keys(query)
    matched = None if profile.matched_keys is None else set(profile.matched_keys)
    send_as_is: list[_Key] = []
    loose: list[_Key] = []
    local: list[_Key] = []
    universal: list[_Key] = []
    fanouts: list[tuple[_Key, list[str]]] = []
    spans: dict[_Key, str] = {}
    widened: dict[_Key, str] = {}  # DA ranges sent with full dates (full_dates)
    for key in keys:
        crit = key.criterion
        value, vr = crit.value, crit.vr
        first_keyword = dictionary.keyword_for(dictionary.parse_tag_key(crit.path[0]))
        if is_universal(value, vr):
            universal.append(key)
            continue
        if (
            (matched is not None and first_keyword not in matched)
            or (not profile.percent_decoding and encode_query_value(value) != value)
            or (not profile.non_ascii_values and not value.isascii())
        ):
            local.append(key)
            continue
        if needs_range(value, vr, first_keyword, profile.range_keys):
            local.append(key)  # a range on a key the server takes none on (tiny_pacs: 400)
            continue
        if match_form(value, vr) == "single" and (span := span_range(value, vr)) is not None:
            # a year, an hour...: sent as the range it spans (a server may compare the text)
            ranges = profile.time_ranges if vr == "TM" else profile.date_ranges
            span = text_form(span, vr, profile) or span
            spans.update({key: span} if ranges else {})
            (loose if ranges else local).append(key)
            continue
        if (text := text_form(value, vr, profile)) is not None:
            spans[key] = text  # a TM or DT range as text comparison reads it, filtered here
            loose.append(key)
            continue
        if profile.temporal_text and profile.value_lists and (forms := number_forms(value, vr)):
            spans[key] = forms  # ``01`` as ``01,1``: a server comparing text finds both
            loose.append(key)
            continue
        if (full := full_dates(value, vr)) is not None:
            value = widened[key] = full  # ``2008-2013`` as ``20080101-20131231``
        lists_ok = profile.uid_lists if vr == "UI" else profile.value_lists
        # an empty item of a list (``CT,``) matches nothing: sent alone it would be
        # universal matching (every result), so it is never a request of a fan-out
        is_list = "," in value
        items = [v for v in value.split(",") if v] if is_list else [value]
        if is_list and ((not lists_ok and not items) or any(span_range(v, vr) for v in items)):
            local.append(key)  # only commas, or a year, an hour... a server may compare as text
            continue
        if vr == "UI":
            per_item: Handling = "exact"
        else:
            per_item = _worst(
                _single_handling(v, vr, profile, pn_case, query.fuzzymatching)
                for v in value.split(",")
            )
        if is_list and not lists_ok:
            if per_item != "local":
                fanouts.append((key, items))
                if per_item == "loose":
                    loose.append(key)
            else:
                local.append(key)
        elif per_item == "local":
            local.append(key)
        elif per_item == "loose":
            send_as_is.append(key)
            loose.append(key)
        else:
            send_as_is.append(key)

    # Fan out every list the server cannot OR while the requests stay few; match the rest here.
    chosen: list[tuple[_Key, list[str]]] = []
    size = 1
    for key, items in fanouts:
        if not chosen or size * len(items) <= MAX_FAN_OUT:
            chosen.append((key, items))
            size *= len(items)
        else:
            if key in loose:
                loose.remove(key)
            local.append(key)
    fanned = [key for key, _ in chosen]
    warnings: list[str] = []
    to_filter = [*loose, *local]
    include = list(query.include_fields)
    for key in to_filter + universal:
        first = key.criterion.path[0]
        if profile.includefield and "all" not in include:
            if first not in {_tag_of(f) for f in include}:
                include.append(dictionary.keyword_for(dictionary.parse_tag_key(first)) or first)
            continue
        kept_as_match = key in send_as_is or key in fanned or key in spans
        if key in universal or _returned_by_default(query, first):
            continue
        if key in loose and key not in spans and key.criterion.vr in ("DA", "TM", "DT"):
            loose.remove(key)  # a ``-d`` range: only its empties to drop, and it cannot be
            continue  # returned to check (the server's answer as it is, as before)
        if kept_as_match:
            continue
        if profile.includefield_all and "all" in include:
            continue
        name = _label(key.criterion)
        if key in local:
            warnings.append(
                f"{name}={key.criterion.value!r}: the server does not match this as the "
                f"standard does, and does not return {name} to match it locally"
            )
            send_as_is.append(key)  # best effort: let the server try
            local.remove(key)
    to_filter = [*loose, *local]
    refused = query.fuzzymatching and profile.fuzzy_matching == "error"  # sent, a 4xx
    changes = _without(query, [*local, *universal]) | ({"fuzzymatching": False} if refused else {})
    if include != list(query.include_fields):
        changes["include_fields"] = tuple(include)
    local_window = bool(to_filter or chosen) and bool(query.limit or query.offset)
    if local_window:
        changes.update(limit=0, offset=0)
    base = attrs.evolve(query, **changes) if changes else query
    for key, span in spans.items():  # sent as a range, filtered here (loose)
        base = _with_value(base, key, span)
    for key, full in widened.items():
        base = _with_value(base, key, full) if key in send_as_is else base
    requests = [base]
    for key, items in chosen:
        requests = [_with_value(request, key, item) for request in requests for item in items]
    return Plan(
        query=query,
        requests=tuple(requests),
        local=tuple(k.criterion for k in to_filter),
        options=options,
        merge_key=LEVEL_UID[level],
        local_window=local_window,
        offset=query.offset,
        limit=query.limit,
        warnings=tuple(warnings),
    )


def _returned_by_default(query: BaseQuery, key: str) -> bool:
    """Whether results of ``query`` carry attribute ``key`` without ``includefield``."""
    level = query.query_level
    if key in DEFAULT_ATTRIBUTES[level]:
        return True
    if isinstance(query, RelationalQuery):  # relational paths add the parents' defaults
        top = QueryLevel.SERIES if query.uri_base().startswith("/studies/") else QueryLevel.STUDY
        ranks = range(_rank(top), _rank(level))
        return any(key in DEFAULT_ATTRIBUTES[lv] for lv in QueryLevel if _rank(lv) in ranks)
    return False


def _tag_of(name: str) -> str:
    try:
        return dictionary.tag_key(dictionary.resolve(name.split(".")[0])[0])
    except (KeyError, ValueError):
        return name


# --- walking the hierarchy ---------------------------------------------------------------------


def _walk(query: BaseQuery, profile: ServerProfile) -> Walk | None:
    """A :class:`Walk` when the query's relational path is one the server lacks."""
    if not isinstance(query, RelationalQuery):
        return None
    base = query.uri_base()
    missing = (
        (base == "/series" and not profile.relational_series)
        or (base == "/instances" and not profile.relational_instances)
        or (base.endswith("/instances") and base != "/instances" and not profile.study_instances)
    )
    if not missing:
        return None
    keys = _keys(query)
    level = query.query_level
    parent_level = QueryLevel.STUDY if level is QueryLevel.SERIES else QueryLevel.SERIES
    parent_keys = [k for k in keys if attribute_level(k.criterion.path[0]) < _rank(level)]
    child_keys = [k for k in keys if k not in parent_keys]
    parent_changes = _without(query, child_keys)
    parent_changes.update(include_fields=(), limit=0, offset=0, fuzzymatching=query.fuzzymatching)
    parent_fields = _fields(attrs.evolve(query, **parent_changes))
    parent: BaseQuery
    if parent_level is QueryLevel.STUDY:
        parent_fields.pop("SeriesInstanceUID", None)
        parent_fields.pop("SOPInstanceUID", None)
        parent = HierarchicalQuery(query_level=QueryLevel.STUDY, **parent_fields)
    else:
        parent_fields.pop("SOPInstanceUID", None)
        study = parent_fields.get("StudyInstanceUID", "")
        kind = HierarchicalQuery if study and "," not in study else RelationalQuery
        parent = kind(query_level=QueryLevel.SERIES, **parent_fields)
    child_changes = _without(query, parent_keys)
    child_changes.update(limit=0, offset=0)
    child_fields = _fields(attrs.evolve(query, **child_changes))
    # The UIDs of the levels above come from each parent result (Walk.child); a UID of the
    # walked level itself (SeriesInstanceUID of a series search) is a key of the child query.
    for uid_field in _UIDS[: 1 if level is QueryLevel.SERIES else 2]:
        child_fields.pop(uid_field, None)
    return Walk(parent=parent, level=level, fields=child_fields)


def _rank(level: QueryLevel) -> int:
    return {QueryLevel.STUDY: 0, QueryLevel.SERIES: 1, QueryLevel.INSTANCE: 2}[level]


def _fields(query: BaseQuery) -> dict[str, Any]:
    """The set fields of a query, as constructor arguments (level excluded)."""
    out: dict[str, Any] = {}
    for attribute in attrs.fields(type(query)):
        value = getattr(query, attribute.name)
        if attribute.name != "query_level" and value != attribute.default:
            out[attribute.name] = value
    return out


# --- crawl splitting ---------------------------------------------------------------------------

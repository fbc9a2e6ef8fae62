"""How a :class:`~aqido.testing.FakeArchive` reads a query and shapes its answer.

:class:`ServerEmulation` (a base class of ``FakeArchive``) holds the server
quirks to emulate: the behaviour attributes a profile
(:class:`~aqido.profile.ServerProfile`, :meth:`ServerEmulation._apply_profile`)
or the constructor's flags set, and that tests may change between requests.
Each search reads them afresh: which paths are served, how the query string is
decoded and parsed (repeated keys, unknown or unsupported keys, includefield,
limit/offset, fuzzymatching), the :class:`~aqido.matching.MatchOptions` the
match keys are compiled with, the default return attributes of a path, and
the page: offset, limit, result caps and their ``Warning: 299``, and the status
of no match, of malformed input and of an unknown parent.

Malformed queries raise :class:`BadRequest` (a 400) or :class:`InvalidValue`
(a 400, the profile's ``bad_request_status``, or no match); so does a range on a
key outside the profile's ``range_keys``, as tiny_pacs refuses one.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs
from aiohttp import web

from aqido.dictionary import keyword_for, tag_for_keyword, tag_key, vr_for
from aqido.errors import InvalidQueryError
from aqido.matching import MatchOptions, compile_value, match_form
from aqido.plan import DEFAULT_ATTRIBUTES
from aqido.query import QueryLevel
from aqido.testing._store import (
    AVAILABILITY,
    COMPUTED_LEVEL,
    DICOM_JSON,
    INSTANCE,
    SERIES,
    STUDY,
    Match,
    Store,
    dumps,
    level_of,
)

if TYPE_CHECKING:  # pragma: no cover
    from aqido.profile import ServerProfile

# --- query strings ------------------------------------------------------------------------


#: The VRs whose values may be ranges (a profile's ``range_keys`` restricts them).
_TEMPORAL = ("DA", "TM", "DT")


class BadRequest(Exception):
    """A query the archive refuses with 400 (message is the body)."""


class InvalidValue(BadRequest):
    """A malformed match value: 400 (or the profile's status), or matches nothing."""


_PLUS = re.compile(r"\+")


def percent_decoded(text: str) -> str:
    """A query string's name or value decoded (``+`` is a space); UnicodeDecodeError if the
    bytes it gives are not UTF-8."""
    from urllib.parse import unquote

    return unquote(_PLUS.sub(" ", text), errors="strict")


def parse_qs(raw: str, *, decode: bool) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs of a raw query string, percent-decoded when ``decode``."""
    pairs: list[tuple[str, str]] = []
    for part in raw.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if decode:
            key, value = percent_decoded(key), percent_decoded(value)
        pairs.append((key, value))
    return pairs


def _resolve_key(name: str) -> str | None:
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return name.upper()
    tag = tag_for_keyword(name)
    return tag_key(tag) if tag is not None else None


_STUDY_UID_KEY = "0020000D"


def _any_of(matches: list[Match]) -> Match:
    """A repeated key read as OR: any of its compiled values matches."""
    first = matches[0]
    if any(m.predicate is None for m in matches):
        return Match(first.key, first.level, first.path, None)
    preds = [m.predicate for m in matches if m.predicate is not None]
    uids: frozenset[str] | None = None
    if all(m.uids is not None for m in matches):
        uids = frozenset().union(*(m.uids or frozenset() for m in matches))

    def pred(elem: Mapping[str, Any]) -> bool:
        return any(p(elem) for p in preds)

    return Match(first.key, first.level, first.path, pred, uids)


def _nothing(elem: Mapping[str, Any]) -> bool:
    """The predicate of a malformed value when ``strict_values=False``: matches nothing."""
    return False


# --- default return attributes ------------------------------------------------------------

# The first level whose defaults a path returns (standard: relational paths add parents').
_STANDARD_TOP = {
    "studies": STUDY,
    "series": STUDY,
    "instances": STUDY,
    "study-series": SERIES,
    "study-instances": SERIES,
    "series-instances": INSTANCE,
}

# Default return attributes (PS3.18 10.6.3.3, the planner's table), plus the parent UIDs
# that servers repeat.
_DEFAULTS = {
    level: (*sorted(DEFAULT_ATTRIBUTES[query_level]), *parents)
    for level, query_level, parents in (
        (STUDY, QueryLevel.STUDY, ()),
        (SERIES, QueryLevel.SERIES, ("0020000D",)),
        (INSTANCE, QueryLevel.INSTANCE, ("0020000D", "0020000E")),
    )
}

# --- flags and profiles -------------------------------------------------------------------

#: The defaults of the flags a :class:`~aqido.profile.ServerProfile` covers.
FLAG_DEFAULTS: dict[str, Any] = {
    "empty_status": 204,
    "max_results": None,
    "truncation_warning": True,
    "cap_plus_one": False,
    "cap_before_offset": False,
    "ignore_offset": False,
    "ignore_limit": False,
    "case_sensitive": True,
    "unknown_attributes": "error",
    "strict_values": True,
    "include_all_attributes": True,
    "decode_percent": True,
    "fuzzy_warning": False,
    "relational": True,
    "unknown_parent_status": None,
}

#: Flag name -> (the profile fields it sets, how the flag value reads as them), for
#: ``orthanc_like``: every flag of :data:`FLAG_DEFAULTS` but ``max_results``.
FLAG_TO_PROFILE: dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]] = {
    "empty_status": (("empty_status",), lambda v: v),
    "truncation_warning": (("cap_warning",), bool),
    "cap_plus_one": (("cap_plus_one",), bool),
    "cap_before_offset": (("cap_before_offset",), bool),
    "ignore_offset": (("offset",), lambda v: not v),
    "ignore_limit": (("limit",), lambda v: not v),
    "case_sensitive": (("case_sensitive", "pn_case_sensitive"), bool),
    "unknown_attributes": (("unsupported_keys",), lambda v: v),
    "decode_percent": (("percent_decoding",), bool),
    "include_all_attributes": (("includefield_all",), bool),
    "fuzzy_warning": (("fuzzy_matching",), lambda v: "warning" if v else "ignored"),
    "strict_values": (("bad_request_status",), lambda v: 400 if v else 200),
    "relational": (("relational_series", "relational_instances"), bool),
    "unknown_parent_status": (("unknown_parent_status",), lambda v: 200 if v is None else v),
}

# --- the emulation ------------------------------------------------------------------------


class ServerEmulation:
    """The server behaviour a FakeArchive emulates, read afresh by every search.

    The flag attributes are documented on :class:`~aqido.testing.FakeArchive`
    (its constructor sets them); the others only a profile sets
    (:meth:`_init_quirks` gives their standard values).
    """

    prefix: str
    empty_status: Literal[200, 204]
    max_results: int | None
    truncation_warning: bool
    cap_plus_one: bool
    cap_before_offset: bool
    max_limit: int | None
    ignore_offset: bool
    ignore_limit: bool
    case_sensitive: bool
    unknown_attributes: Literal["error", "ignore"]
    strict_values: bool
    pn_groups: bool
    parent_attributes: Literal["standard", "orthanc"]
    instance_availability: bool
    include_all_attributes: bool
    return_sequences: bool
    decode_percent: bool
    fuzzy_warning: bool
    relational: bool
    unknown_parent_status: int | None
    profile: ServerProfile | None
    _store: Store

    #: Overrides the matching the flags and the profile describe with a full
    #: :class:`~aqido.matching.MatchOptions` (e.g. a server without wildcards).
    match_options: MatchOptions | None = None
    #: ``limit=0`` returns every match (Orthanc); the standard's answer is none of them.
    _zero_limit_is_no_limit = False
    #: A single DA/TM/DT value is its precision's span (``False``: text, as Orthanc).
    _temporal_spans = True

    def _init_quirks(self) -> None:
        """Set the quirks only a profile sets to the standard (or what the flags imply)."""
        self.wildcard_star = True
        self.wildcard_question = True
        self.pn_case_sensitive = self.case_sensitive
        self.single_value_matching: Literal["exact", "prefix", "substring"] = "exact"
        self.uid_lists = True
        self.value_lists = True
        self.repeated_keys: Literal["or", "first", "last", "error"] = "last"
        self.date_ranges = True
        self.open_date_ranges = True
        self.time_ranges = True
        self.fuzzy_matching: Literal["warning", "supported", "ignored", "error"] = (
            "warning" if self.fuzzy_warning else "ignored"
        )
        self.unknown_key_policy: Literal["error", "ignore", "empty"] = self.unknown_attributes
        self.includefield = True
        self.relational_series = self.relational_instances = self.relational
        self.study_instances = True
        self.json_accept = True
        self.bad_request_status: int | None = None  # None: 400 when strict, else no match
        self._had_invalid = False

    def _apply_profile(self, p: ServerProfile) -> None:
        """Set every behaviour the profile describes."""
        self.empty_status = p.empty_status
        self.max_results = p.max_results
        self.truncation_warning = p.cap_warning
        self.cap_plus_one = p.cap_plus_one
        self.cap_before_offset = p.cap_before_offset
        self.ignore_limit = not p.limit
        self.ignore_offset = not p.offset
        self.decode_percent = p.percent_decoding
        self.wildcard_star = p.wildcard_star
        self.wildcard_question = p.wildcard_question
        self.case_sensitive = p.case_sensitive
        self.pn_case_sensitive = p.pn_case_sensitive
        self.single_value_matching = p.single_value_matching
        self.uid_lists = p.uid_lists
        self.value_lists = p.value_lists
        self.repeated_keys = p.repeated_keys
        self.date_ranges = p.date_ranges
        self.open_date_ranges = p.open_date_ranges
        self.time_ranges = p.time_ranges
        self.fuzzy_matching = p.fuzzy_matching
        self.fuzzy_warning = p.fuzzy_matching == "warning"
        self.unknown_key_policy = p.unsupported_keys
        self.unknown_attributes = "error" if p.unsupported_keys == "error" else "ignore"
        self.includefield = p.includefield
        self.include_all_attributes = p.includefield_all
        self.relational_series = p.relational_series
        self.relational_instances = p.relational_instances
        self.relational = p.relational_series and p.relational_instances
        self.study_instances = p.study_instances
        self.json_accept = p.json_accept
        self.strict_values = p.bad_request_status >= 400
        self.bad_request_status = p.bad_request_status
        self.unknown_parent_status = p.unknown_parent_status

    def _route(self, parts: list[str]) -> tuple[int, str | None, str | None, str]:
        """(query level, study UID, series UID, path kind)."""
        n = len(parts)
        if n == 1 and parts[0] == "studies":
            return STUDY, None, None, "studies"
        if n == 1 and parts[0] == "series" and self.relational_series:
            return SERIES, None, None, "series"
        if n == 1 and parts[0] == "instances" and self.relational_instances:
            return INSTANCE, None, None, "instances"
        if n == 3 and parts[0] == "studies" and parts[2] == "series":
            return SERIES, parts[1], None, "study-series"
        if n == 3 and parts[0] == "studies" and parts[2] == "instances" and self.study_instances:
            return INSTANCE, parts[1], None, "study-instances"
        if n == 5 and parts[0] == "studies" and parts[2] == "series" and parts[4] == "instances":
            return INSTANCE, parts[1], parts[3], "series-instances"
        raise LookupError(parts)

    def _defaults(self, kind: str, level: int, params: set[str]) -> frozenset[str]:
        """The default attributes returned on a path, as ``parent_attributes`` says.

        ``params``: the tag keys of the match parameters.
        """
        parts: tuple[tuple[int, bool], ...]
        if self.parent_attributes == "orthanc":
            # Every parent level without its aggregates, unless its UID is a parameter.
            parent_uid = {STUDY: "0020000D", SERIES: "0020000E"}
            parents = [(lv, False) for lv in range(STUDY, level) if parent_uid[lv] not in params]
            parts = (*parents, (level, True))
        else:
            parts = tuple((lv, True) for lv in range(_STANDARD_TOP[kind], level + 1))
        keys: set[str] = set()
        for lv, with_aggregates in parts:
            keys.update(k for k in _DEFAULTS[lv] if with_aggregates or k not in COMPUTED_LEVEL)
        if not self.instance_availability:
            keys.discard(AVAILABILITY)
        return frozenset(keys)

    # --- search ---

    def _parse(self, raw_qs: str) -> tuple[list[Match], set[str], bool, int | None, int, bool]:
        """(matches, returned keys, includefield=all, limit, offset, fuzzy)."""
        try:
            pairs = parse_qs(raw_qs, decode=self.decode_percent)
        except UnicodeDecodeError:
            raise BadRequest("query is not valid UTF-8 after percent-decoding") from None
        if not self.decode_percent and any(ord(c) > 127 for c in raw_qs):
            raise BadRequest("Bad request")
        self._had_invalid = False  # set by _compile; _search runs without awaiting
        keyed: dict[str, list[str]] = {}
        include: set[str] = set()
        include_all = False
        limit: int | None = None
        offset = 0
        fuzzy = False
        for name, value in pairs:
            lower = name.lower()
            if lower == "includefield":
                for item in value.split(","):
                    if not item:
                        continue
                    if item == "all":
                        include_all = True
                        continue
                    if not self.includefield:
                        continue
                    key = _resolve_key(item)
                    if key is None:
                        if self.unknown_attributes == "error":
                            raise BadRequest(f"unknown attribute in includefield: {item!r}")
                        continue
                    include.add(key)
            elif lower in ("limit", "offset"):
                if not (value.isascii() and value.isdigit()):  # not '²' nor a full-width '１'
                    raise BadRequest(f"{name} must be an unsigned integer, got {value!r}")
                digits = value.lstrip("0") or "0"  # past 18 digits: more than any archive holds
                number = int(digits) if len(digits) <= 18 else sys.maxsize
                if lower == "limit":
                    limit = number
                    if self.max_limit is not None and limit > self.max_limit:
                        raise BadRequest(f"limit must not exceed {self.max_limit}")
                else:
                    offset = number
            elif lower in ("fuzzymatching", "emptyvaluematching", "multiplevaluematching"):
                if value not in ("true", "false"):
                    raise BadRequest(f"{name} must be 'true' or 'false', got {value!r}")
                if lower == "fuzzymatching":
                    fuzzy = value == "true"
                    if fuzzy and self.fuzzy_matching == "error":
                        raise BadRequest("fuzzymatching is not supported")
            elif name in keyed and self.repeated_keys == "error":
                raise BadRequest(f"repeated match key: {name!r}")
            elif name in keyed and self.repeated_keys == "first":
                continue
            elif name in keyed and self.repeated_keys == "or":
                keyed[name].append(value)
            else:
                keyed[name] = [value]  # a repeated key with "last": the last one wins
        matches: list[Match] = []
        for name, values in keyed.items():
            keys = [_resolve_key(p) for p in name.split(".")]
            if any(k is None for k in keys):
                if self.unknown_key_policy == "error":
                    raise BadRequest(f"unknown attribute: {name!r}")
                if self.unknown_key_policy == "empty":
                    matches.append(Match(_STUDY_UID_KEY, STUDY, (), _nothing))
                continue
            path = [k for k in keys if k is not None]
            if not self._matches_key(path[0]):
                if self.unknown_key_policy == "error":
                    raise BadRequest(f"unsupported match key: {name!r}")
                if self.unknown_key_policy == "empty":
                    matches.append(Match(_STUDY_UID_KEY, STUDY, (), _nothing))
                continue
            if not self.non_ascii_values and not all(v.isascii() for v in values):
                matches.append(Match(_STUDY_UID_KEY, STUDY, (), _nothing))  # misread bytes
                continue
            compiled = [self._compile(path, value, fuzzy) for value in values]
            matches.append(compiled[0] if len(compiled) == 1 else _any_of(compiled))
        returned = {
            m.key for m in matches if m.key != _STUDY_UID_KEY or m.predicate is not _nothing
        }
        return matches, returned | include, include_all, limit, offset, fuzzy

    def _matches_key(self, key: str) -> bool:
        """Whether the emulated server matches this attribute (profile ``matched_keys``)."""
        matched = self.profile.matched_keys if self.profile is not None else None
        return matched is None or keyword_for(int(key, 16)) in matched

    @property
    def non_ascii_values(self) -> bool:
        """Whether the emulated server matches non-ASCII values (profile ``non_ascii_values``)."""
        return self.profile is None or self.profile.non_ascii_values

    def _matching(self) -> MatchOptions:
        """The :mod:`aqido.matching` options this archive matches with."""
        if self.match_options is not None:
            return self.match_options
        return MatchOptions(
            case_sensitive=self.case_sensitive,
            pn_case_sensitive=self.pn_case_sensitive,
            pn_groups=self.pn_groups,
            single_value_matching=self.single_value_matching,
            wildcard_star=self.wildcard_star,
            wildcard_question=self.wildcard_question,
            uid_lists=self.uid_lists,
            value_lists=self.value_lists,
            date_ranges=self.date_ranges,
            open_date_ranges=self.open_date_ranges,
            time_ranges=self.time_ranges,
            strict_values=self.strict_values,
            temporal_spans=self._temporal_spans,
            temporal_text=self.profile is not None and self.profile.temporal_text,
        )

    def _compile(self, path: list[str], value: str, fuzzy: bool = False) -> Match:
        """One match key → a :class:`Match` (the predicate comes from :mod:`aqido.matching`).

        A malformed value is a 400, or (``strict_values=False``) matches nothing and
        marks the request (``bad_request_status``).
        """
        first = path[0]
        level = level_of(first)
        vr = vr_for(int(path[-1], 16)) or "UN"
        options = self._matching()
        if fuzzy and vr == "PN" and self.fuzzy_matching == "supported":
            options = attrs.evolve(options, pn_case_sensitive=False)  # the fake's "fuzzy"
        ranged = self.profile.range_keys if self.profile is not None else None
        keyword = keyword_for(int(first, 16))
        if (
            ranged is not None
            and keyword not in ranged
            and vr in _TEMPORAL
            and any(match_form(v, vr) in ("range", "open_range") for v in value.split(","))
        ):
            raise InvalidValue(f"Invalid {keyword} parameter {value!r}: no ranges on it")
        if vr == "UI" and not self.decode_percent:  # Orthanc understands %2C in UID lists
            value = value.replace("%2C", ",").replace("%2c", ",")
        try:
            pred = compile_value(value, vr, attrs.evolve(options, strict_values=True))
        except InvalidQueryError as exc:
            if vr == "SQ":
                raise BadRequest(str(exc)) from None
            if options.strict_values:
                raise InvalidValue(str(exc)) from None
            self._had_invalid = True
            pred = compile_value(value, vr, options)
        uids = None
        if vr == "UI" and pred is not None and len(path) == 1:
            parts = value.split(",") if options.uid_lists else [value]
            uids = frozenset(u.strip() for u in parts if u.strip())  # for the UID indexes
        return Match(first, level, tuple(path[1:]), pred, uids)

    def _search(
        self, request: web.BaseRequest, route: tuple[int, str | None, str | None, str], raw_qs: str
    ) -> web.Response:
        level, study_uid, series_uid, kind = route
        top = _STANDARD_TOP[kind]
        matches, returned, include_all, limit, offset, fuzzy = self._parse(raw_qs)
        defaults = self._defaults(kind, level, {m.key for m in matches})
        headers: dict[str, str] = {}
        warnings: list[str] = []
        agent = f"{request.host}"
        if fuzzy and self.fuzzy_warning:
            warnings.append(
                f'299 {agent} "The fuzzymatching parameter is not supported. '
                'Only literal matching has been performed."'
            )
        hits = self._store.hits(level, study_uid, series_uid, matches)
        if hits is None:
            status = self.unknown_parent_status
            if status == 200:
                return web.Response(status=200, body=b"[]", content_type=DICOM_JSON)
            if status is not None and status != 204:
                return web.Response(status=status, text="Unknown parent")
            if status == 204:
                return web.Response(status=204)
            hits = iter(())
        skip = 0 if self.ignore_offset else offset
        cap = self.max_results
        if cap is not None and self.cap_before_offset:  # Orthanc: cap the matches, then skip
            every = list(hits)
            kept = cap + (1 if self.cap_plus_one else 0)
            if len(every) > kept and self.truncation_warning and self.profile is not None:
                warnings.append(
                    f'299 {agent} "There are {len(every) - kept} additional results that can '
                    'be requested"'
                )
            hits = iter(every[:kept])
            cap = None
        hit_list = list(itertools.islice(hits, skip, None))
        available = len(hit_list)
        take = available
        if (
            limit is not None
            and not self.ignore_limit
            and (limit or not self._zero_limit_is_no_limit)
        ):
            take = min(take, limit)  # limit=0: nothing (PS3.18 8.3.4.4), unless as Orthanc
        if self.max_results is not None and cap is not None and take > self.max_results:
            take = self.max_results + (1 if self.cap_plus_one else 0)
            take = min(take, available)
            if self.truncation_warning and (not self.cap_plus_one or self.profile is not None):
                warnings.append(
                    f'299 {agent} "There are {available - take} additional results that can '
                    'be requested"'
                )
        page = hit_list[:take]
        if warnings:
            headers["Warning"] = ", ".join(warnings)
        if not page:
            invalid = self.bad_request_status
            if self._had_invalid and invalid is not None and invalid in (200, 204):
                if invalid == 204:
                    return web.Response(status=204, headers=headers)
                return web.Response(
                    status=200, body=b"[]", content_type=DICOM_JSON, headers=headers
                )
            if self.empty_status == 204:
                return web.Response(status=204, headers=headers)
            return web.Response(status=200, body=b"[]", content_type=DICOM_JSON, headers=headers)
        base = f"http://{request.host}{self.prefix}"
        items = self._store.render(
            page,
            level,
            top,
            defaults | returned,
            include_all and self.include_all_attributes,
            base,
            return_sequences=self.return_sequences,
        )
        return web.Response(status=200, body=dumps(items), content_type=DICOM_JSON, headers=headers)

"""``FakeArchive``: an in-process QIDO-RS server to test QIDO clients against.

An aiohttp.web server on 127.0.0.1 (random port) that answers the six QIDO-RS
search paths from content you give it (pydicom Datasets, DICOM JSON dicts or a
:class:`~aqido.testing.synthetic.SyntheticArchive`), and that can be told to
behave like the servers in the wild: 204 or 200 ``[]`` for no match, result
caps with or without a ``Warning: 299`` header, ignored offsets, latency,
faults (deterministic by seed), basic or bearer auth, no percent-decoding::

    async with FakeArchive(SyntheticArchive(seed=1, studies=20)) as archive:
        ...  # query archive.url, e.g. f"{archive.url}/studies?PatientName=Doe*"
    assert archive.peak_concurrency <= 4

From synchronous code (a thread runs the server on its own event loop)::

    with FakeArchive(content).run_in_thread() as archive:
        requests.get(archive.url + "/studies")

Matching (PS3.4 C.2.2.2 as a careful server does it) is :mod:`aqido.matching`,
the matcher the client also uses to filter results locally:

- UI: single UID or a comma-separated list (any of them).
- DA, TM, DT: a single value matches the same text; a range ``a-b``, ``-b``,
  ``a-`` is inclusive (a TM bound with less precision covers its whole span:
  ``-1300`` includes ``130059``); a bare ``-`` or a malformed value is a 400
  (``strict_values=False``: matches nothing).
- strings and PN: exact (case-sensitive unless ``case_sensitive=False``) or
  wildcards ``*`` and ``?`` (``*`` alone is universal matching).  A PN matches
  against the whole value (``Yamada^Tarou=山田^太郎``) and against each
  component group (unless ``pn_groups=False``).
- numbers (IS, DS, US...): numeric equality.
- any value of a multi-valued attribute may match; for every non-UI key a
  comma separates alternatives (OR), as Orthanc does.
- an empty value is universal matching (return the attribute), as is
  ``includefield`` (names, tags, comma lists, repeated, or ``all``).
- sequence paths ``Seq.Attr=v`` match any item.
- an attribute from a lower level than the query (``Modality`` on
  ``/studies``) is never present, so it matches nothing, and is never returned.
- :attr:`FakeArchive.match_options` (a :class:`~aqido.matching.MatchOptions`)
  replaces the matching flags, e.g. to emulate a server without wildcards.

Results come in a stable order (insertion order: study by study, series by
series), so ``limit``/``offset`` paging is consistent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import itertools
import json
import random
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from aqido.dictionary import keyword_for, tag_for_keyword, tag_key, vr_for
from aqido.errors import InvalidQueryError
from aqido.matching import (
    SERIES_ATTRIBUTES,
    STUDY_ATTRIBUTES,
    ElementPredicate,
    MatchOptions,
    compile_value,
    element_strings,
    match_path,
)

if TYPE_CHECKING:  # pragma: no cover
    from aqido.profile import ServerProfile
    from aqido.testing.synthetic import SyntheticArchive

try:  # pragma: no cover - both branches are exercised in different environments
    import orjson

    def _dumps(obj: Any) -> bytes:
        data: bytes = orjson.dumps(obj)
        return data

except ImportError:  # pragma: no cover

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


DICOM_JSON = "application/dicom+json"

FaultKind = Literal["429", "503", "500", "disconnect", "truncated", "malformed", "html"]
_ALL_KINDS: tuple[FaultKind, ...] = (
    "429",
    "503",
    "500",
    "disconnect",
    "truncated",
    "malformed",
    "html",
)

# --- levels -------------------------------------------------------------------------------

_STUDY, _SERIES, _INSTANCE = 0, 1, 2

_STUDY_TAGS = STUDY_ATTRIBUTES
_SERIES_TAGS = SERIES_ATTRIBUTES
_OWN = -1  # stored at every level (SpecificCharacterSet, TimezoneOffsetFromUTC)
_OWN_TAGS = frozenset({"00080005", "00080201"})

# Attributes the archive computes.
_MODALITIES_IN_STUDY = "00080061"
_N_STUDY_SERIES = "00201206"
_N_STUDY_INSTANCES = "00201208"
_N_SERIES_INSTANCES = "00201209"
_AVAILABILITY = "00080056"
_RETRIEVE_URL = "00081190"
_COMPUTED_LEVEL = {
    _MODALITIES_IN_STUDY: _STUDY,
    _N_STUDY_SERIES: _STUDY,
    _N_STUDY_INSTANCES: _STUDY,
    _N_SERIES_INSTANCES: _SERIES,
}


# The first level whose defaults a path returns (standard: relational paths add parents').
_STANDARD_TOP = {
    "studies": _STUDY,
    "series": _STUDY,
    "instances": _STUDY,
    "study-series": _SERIES,
    "study-instances": _SERIES,
    "series-instances": _INSTANCE,
}


def _level_of(key: str) -> int:
    """The level an attribute is stored at: patient and study, series, or instance."""
    if key in _OWN_TAGS:
        return _OWN
    if key in _STUDY_TAGS or key.startswith("0010"):
        return _STUDY
    if key in _SERIES_TAGS:
        return _SERIES
    return _COMPUTED_LEVEL.get(key, _INSTANCE)


# Default return attributes (PS3.18 10.6.3.3), plus the parent UIDs that servers repeat.
_DEFAULTS = {
    _STUDY: (
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
    ),
    _SERIES: (
        "00080005",
        "00080060",
        "00080201",
        "0008103E",
        "00081190",
        "0020000D",
        "0020000E",
        "00200011",
        "00201209",
        "00400244",
        "00400245",
        "00400275",
    ),
    _INSTANCE: (
        "00080005",
        "00080016",
        "00080018",
        "00080056",
        "00080201",
        "00081190",
        "0020000D",
        "0020000E",
        "00200013",
        "00280008",
        "00280010",
        "00280011",
        "00280100",
    ),
}

# --- the store ----------------------------------------------------------------------------

_Element = dict[str, Any]
_Attrs = dict[str, _Element]


class _Study:
    __slots__ = ("attrs", "modalities", "modalities_elem", "n_instances", "series", "uid")

    def __init__(self, uid: str, attrs: _Attrs) -> None:
        self.uid = uid
        self.attrs = attrs
        self.series: dict[str, _Series] = {}
        self.n_instances = 0
        self.modalities: set[str] = set()
        self.modalities_elem: _Element | None = None


class _Series:
    __slots__ = ("attrs", "instances", "study", "uid")

    def __init__(self, uid: str, attrs: _Attrs, study: _Study) -> None:
        self.uid = uid
        self.attrs = attrs
        self.study = study
        self.instances: dict[str, _Instance] = {}


class _Instance:
    __slots__ = ("_attrs", "_loader", "seq", "series", "uid")

    def __init__(
        self,
        uid: str,
        series: _Series,
        attrs: _Attrs | None = None,
        loader: Callable[[], _Attrs] | None = None,
    ) -> None:
        self.uid = uid
        self.series = series
        self.seq = 0  # insertion order in the archive
        self._attrs = attrs
        self._loader = loader

    @property
    def attrs(self) -> _Attrs:
        if self._attrs is not None:
            return self._attrs
        assert self._loader is not None
        return self._loader()  # built on demand, not kept: large synthetic archives stay small


# An entity is (study, series or None, instance or None).
_Entity = tuple[_Study, _Series | None, _Instance | None]


def _uid_of(attrs: Mapping[str, Any], key: str, what: str) -> str:
    elem = attrs.get(key)
    values = elem.get("Value") if isinstance(elem, dict) else None
    if not values or not isinstance(values[0], str) or not values[0]:
        raise ValueError(f"a dataset without {what} ({key}) cannot be stored")
    return values[0].rstrip("\0 ")


def _normalise(dataset: Mapping[str, Any]) -> _Attrs:
    """Uppercase tag keys; drop pixel data and group lengths."""
    out: _Attrs = {}
    for key, elem in dataset.items():
        k = key.upper()
        if k == "7FE00010" or k.endswith("0000"):
            continue
        out[k] = elem
    return out


# --- requests and faults ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ServedRequest:
    """A request the archive served: what came in and the status that went out.

    ``status`` is ``None`` when the connection was dropped on purpose;
    ``fault`` names the injected fault, if any.
    """

    method: str
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    status: int | None
    fault: str | None = None

    @property
    def params(self) -> list[tuple[str, str]]:
        """The query parameters, percent-decoded, in order."""
        return _parse_qs(self.query_string, decode=True)

    @property
    def relative_url(self) -> str:
        """Path and raw query string as sent (``/dicom-web/studies?limit=10``)."""
        return f"{self.path}?{self.query_string}" if self.query_string else self.path


@attrs.frozen(kw_only=True)
class Fault:
    """One injected failure.

    kinds: ``"429"``/``"503"`` (with ``Retry-After: retry_after``), ``"500"``
    (JSON error body), ``"disconnect"`` (connection closed, no response),
    ``"truncated"`` (200 with a body cut short of its Content-Length),
    ``"malformed"`` (200 ``application/dicom+json`` that is not JSON),
    ``"html"`` (an HTML error page, status ``status`` or 502).
    """

    kind: FaultKind
    retry_after: str | None = "0"
    status: int | None = None


@attrs.frozen(kw_only=True)
class Faults:
    """Random faults, reproducible by seed: each request fails with probability ``rate``.

    The draw depends only on ``seed``, the request's path and query and how
    many times that exact URL was requested before (so a retry gets a fresh
    draw), not on the arrival order of concurrent requests.  ``kinds`` picks
    the kinds (uniformly); ``retry_after`` goes into 429/503 responses.
    """

    rate: float = 0.05
    kinds: Sequence[FaultKind] = _ALL_KINDS
    seed: int = 0
    retry_after: str | None = "0"

    def draw(self, url: str, attempt: int) -> Fault | None:
        """The fault for the ``attempt``-th request (0-based) of ``url``, or ``None``."""
        digest = hashlib.sha256(f"{self.seed}\0{url}\0{attempt}".encode()).digest()
        rng = random.Random(digest)
        if rng.random() >= self.rate:
            return None
        return Fault(kind=rng.choice(list(self.kinds)), retry_after=self.retry_after)


@attrs.define
class _FaultRule:
    match: Callable[[str], bool]
    fault: Fault
    remaining: int | None


# --- query parsing and matching -----------------------------------------------------------


class _BadRequest(Exception):
    """A query the archive refuses with 400 (message is the body)."""


class _InvalidValue(_BadRequest):
    """A malformed match value: 400 (or the profile's status), or matches nothing."""


_PLUS = re.compile(r"\+")


def _parse_qs(raw: str, *, decode: bool) -> list[tuple[str, str]]:
    from urllib.parse import unquote

    pairs: list[tuple[str, str]] = []
    for part in raw.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if decode:
            key = unquote(_PLUS.sub(" ", key), errors="strict")
            value = unquote(_PLUS.sub(" ", value), errors="strict")
        pairs.append((key, value))
    return pairs


@attrs.frozen
class _Match:
    key: str  # first tag key of the path
    level: int
    path: tuple[str, ...]  # remaining sequence path (tag keys)
    predicate: ElementPredicate | None  # None = universal
    uids: frozenset[str] | None = None  # for UI list matching (index use)


def _resolve_key(name: str) -> str | None:
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return name.upper()
    tag = tag_for_keyword(name)
    return tag_key(tag) if tag is not None else None


# --- the archive --------------------------------------------------------------------------

#: The defaults of the flags a :class:`~aqido.profile.ServerProfile` covers.
_FLAG_DEFAULTS: dict[str, Any] = {
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

#: Flag name -> (profile field, how the flag value reads as that field), for ``orthanc_like``.
_FLAG_TO_PROFILE: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "empty_status": ("empty_status", lambda v: v),
    "truncation_warning": ("cap_warning", bool),
    "cap_plus_one": ("cap_plus_one", bool),
    "cap_before_offset": ("cap_before_offset", bool),
    "ignore_offset": ("offset", lambda v: not v),
    "ignore_limit": ("limit", lambda v: not v),
    "unknown_attributes": ("unsupported_keys", lambda v: v),
    "decode_percent": ("percent_decoding", bool),
    "include_all_attributes": ("includefield_all", bool),
    "fuzzy_warning": ("fuzzy_matching", lambda v: "warning" if v else "ignored"),
    "strict_values": ("bad_request_status", lambda v: 400 if v else 200),
    "unknown_parent_status": ("unknown_parent_status", lambda v: 200 if v is None else v),
}


class FakeArchive:
    """An in-process QIDO-RS server on 127.0.0.1 with a random port.

    ``content``: a ``SyntheticArchive``, DICOM JSON dicts and/or pydicom
    Datasets (an iterable of them; more with :meth:`add`).  The study and
    series attributes come from the first instance stored for them.

    ``profile``: a :class:`~aqido.profile.ServerProfile` to emulate, the
    documented way to give the archive a server's quirks (one object instead of
    many flags): ``FakeArchive(content, profile=ServerProfile.tiny_pacs())``.
    ``aqido probe`` of the archive then measures that profile (a property test
    checks it).  Every profile field is emulated: percent-decoding, ``*`` and
    ``?`` wildcards, case (PN and other strings), exact/prefix/substring
    matching, UID and value lists, repeated keys (or/first/last/error), closed
    and open date ranges, time ranges, fuzzymatching, unsupported keys
    (error/ignore/empty), includefield and ``includefield=all``, relational
    paths, limit/offset, result caps, the status of no match, of malformed input
    and of an unknown parent, and ``Accept: application/json``.  Without a
    profile the archive is the standard except where the flags below say
    otherwise (and a repeated key: the last one wins; an unknown parent: an
    empty result).  The flags a profile covers cannot be combined with it
    (``ValueError``); the other options can.

    Options (all keyword-only):

    - ``prefix="/dicom-web"``: the service root; ``archive.url`` ends with it.
    - ``empty_status=204``: 204 (current standard) or 200 (``[]``, Orthanc
      and old servers) when nothing matches.
    - ``max_results=None``: a server cap on rows per response.  When it cuts a
      page short the response carries ``Warning: 299 <agent> "There are N
      additional results that can be requested"`` unless
      ``truncation_warning=False`` (silent, Orthanc style); ``cap_plus_one``
      returns cap+1 rows as Orthanc does; ``cap_before_offset`` caps the
      matches before skipping ``offset`` (Orthanc: paging cannot pass the cap).
    - ``max_limit=None``: a ``limit`` above it is a 400 (Azure: 200).
    - ``ignore_offset=False``, ``ignore_limit=False``: imitate servers that do.
    - ``latency=0.0``: seconds to sleep before answering each request.
    - ``faults=None``: a :class:`Faults` (random, by seed); add targeted ones
      with :meth:`fail`.
    - ``basic_auth=("user", "pw")`` and/or ``bearer_token="..."``: require
      credentials (401 with ``WWW-Authenticate`` otherwise).
    - ``case_sensitive=True``: string matching (``False``: as Orthanc does it).
    - ``unknown_attributes="error"``: 400 for a keyword that is not in PS3.6;
      ``"ignore"`` skips it (Orthanc; widens the result).
    - ``strict_values=True``: 400 for a malformed date, time or number (or a
      bare ``-``); ``False`` lets it match nothing (Orthanc: 200 ``[]``).
    - ``pn_groups=True``: a PN value matches if the whole value
      (``Yamada^Tarou=山田^太郎``) or any one component group matches;
      ``False`` matches the whole value only (Orthanc).
    - ``parent_attributes="standard"``: relational queries add the parent
      levels' defaults (``/studies/{s}/instances`` the series'), hierarchical
      ones do not.  ``"orthanc"``: as Orthanc 1.10 does it: every query adds
      each parent level's defaults (without ModalitiesInStudy and the counts)
      unless that level's UID is a query parameter (``/series?StudyInstanceUID=``
      returns no study attributes, ``/studies/{s}/series`` does).
    - ``instance_availability=True``: return InstanceAvailability (``ONLINE``).
    - ``include_all_attributes=True``: ``includefield=all`` returns every stored
      attribute of the returned levels; ``False``: only the defaults (Orthanc).
    - ``return_sequences=True``: ``False`` never returns SQ attributes (Orthanc).
    - ``decode_percent=True``: percent-decode query values (``+`` is a
      space).  ``False`` imitates Orthanc 1.10: ``%5E`` stays literal.
    - ``fuzzy_warning=False``: add the PS3.18 "fuzzymatching not supported"
      299 Warning when ``fuzzymatching=true``.
    - ``relational=True``: ``False`` answers 404 on ``/series`` and ``/instances``.
    - ``unknown_parent_status=None``: status for a path naming an unknown
      study or series (``None``: an ordinary empty result).
    - ``max_url_length=8192``: longer request targets get 414.
    - ``keepalive_timeout=75.0``: idle keep-alive connections are closed
      after this (Orthanc: 1 s).

    Statistics: :attr:`requests` (every :class:`ServedRequest`),
    :attr:`peak_concurrency`, :meth:`reset_stats`.  A request counts as in
    flight from its arrival until its answer is ready; give the archive some
    ``latency`` when a test asserts on concurrency, so requests overlap for sure.

    :meth:`fail`, :meth:`clear_faults` and :meth:`reset_stats` are safe from
    any thread at any time; :meth:`add` only while no request is being served.
    """

    def __init__(
        self,
        content: SyntheticArchive | Iterable[Any] | None = None,
        *,
        prefix: str = "/dicom-web",
        empty_status: Literal[200, 204] = 204,
        max_results: int | None = None,
        truncation_warning: bool = True,
        cap_plus_one: bool = False,
        cap_before_offset: bool = False,
        max_limit: int | None = None,
        ignore_offset: bool = False,
        ignore_limit: bool = False,
        latency: float = 0.0,
        faults: Faults | None = None,
        basic_auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        case_sensitive: bool = True,
        unknown_attributes: Literal["error", "ignore"] = "error",
        strict_values: bool = True,
        pn_groups: bool = True,
        parent_attributes: Literal["standard", "orthanc"] = "standard",
        instance_availability: bool = True,
        include_all_attributes: bool = True,
        return_sequences: bool = True,
        decode_percent: bool = True,
        fuzzy_warning: bool = False,
        relational: bool = True,
        unknown_parent_status: int | None = None,
        max_url_length: int | None = 8192,
        keepalive_timeout: float = 75.0,
        profile: ServerProfile | None = None,
    ) -> None:
        if profile is not None:
            given = {
                "empty_status": empty_status,
                "max_results": max_results,
                "truncation_warning": truncation_warning,
                "cap_plus_one": cap_plus_one,
                "cap_before_offset": cap_before_offset,
                "ignore_offset": ignore_offset,
                "ignore_limit": ignore_limit,
                "case_sensitive": case_sensitive,
                "unknown_attributes": unknown_attributes,
                "strict_values": strict_values,
                "include_all_attributes": include_all_attributes,
                "decode_percent": decode_percent,
                "fuzzy_warning": fuzzy_warning,
                "relational": relational,
                "unknown_parent_status": unknown_parent_status,
            }
            clash = sorted(k for k, v in given.items() if v != _FLAG_DEFAULTS[k])
            if clash:
                raise ValueError(
                    f"give the server's behaviour as profile= or as flags, not both: {clash}"
                )
        if empty_status not in (200, 204):
            raise ValueError("empty_status must be 200 or 204")
        if unknown_attributes not in ("error", "ignore"):
            raise ValueError("unknown_attributes must be 'error' or 'ignore'")
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.empty_status = empty_status
        self.max_results = max_results
        self.truncation_warning = truncation_warning
        self.cap_plus_one = cap_plus_one
        self.cap_before_offset = cap_before_offset
        self.max_limit = max_limit
        self.ignore_offset = ignore_offset
        self.ignore_limit = ignore_limit
        self.latency = latency
        self.faults = faults
        self.basic_auth = basic_auth
        self.bearer_token = bearer_token
        self.case_sensitive = case_sensitive
        self.unknown_attributes = unknown_attributes
        self.strict_values = strict_values
        self.pn_groups = pn_groups
        if parent_attributes not in ("standard", "orthanc"):
            raise ValueError("parent_attributes must be 'standard' or 'orthanc'")
        self.parent_attributes = parent_attributes
        self.instance_availability = instance_availability
        self.include_all_attributes = include_all_attributes
        self.return_sequences = return_sequences
        self.decode_percent = decode_percent
        self.fuzzy_warning = fuzzy_warning
        self.relational = relational
        self.unknown_parent_status = unknown_parent_status
        self.max_url_length = max_url_length
        self.keepalive_timeout = keepalive_timeout
        # Quirks only a profile sets (the flags above cannot express them).
        self.wildcard_star = True
        self.wildcard_question = True
        self.pn_case_sensitive = case_sensitive
        self.single_value_matching: Literal["exact", "prefix", "substring"] = "exact"
        self.uid_lists = True
        self.value_lists = True
        self.repeated_keys: Literal["or", "first", "last", "error"] = "last"
        self.date_ranges = True
        self.open_date_ranges = True
        self.time_ranges = True
        self.fuzzy_matching: Literal["warning", "supported", "ignored", "error"] = (
            "warning" if fuzzy_warning else "ignored"
        )
        self.unknown_key_policy: Literal["error", "ignore", "empty"] = unknown_attributes
        self.includefield = True
        self.relational_series = self.relational_instances = relational
        self.study_instances = True
        self.json_accept = True
        self.bad_request_status: int | None = None  # None: 400 when strict, else no match
        self._had_invalid = False
        #: The profile the archive emulates (``None`` when built from flags).
        self.profile = profile
        if profile is not None:
            self._apply_profile(profile)

        #: Every request served since start (or :meth:`reset_stats`), in completion order.
        self.requests: list[ServedRequest] = []
        #: The largest number of requests in flight at the same time.
        self.peak_concurrency = 0
        self._in_flight = 0
        self._attempts: dict[str, int] = {}
        self._rules: list[_FaultRule] = []
        self._lock = threading.Lock()

        self._studies: dict[str, _Study] = {}
        self._series: dict[str, _Series] = {}
        self._instances: dict[str, _Instance] = {}

        self._runner: web.ServerRunner | None = None
        self._port: int | None = None
        if content is not None:
            self.add(content)

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

    @classmethod
    def orthanc_like(
        cls, content: SyntheticArchive | Iterable[Any] | None = None, **options: Any
    ) -> FakeArchive:
        """A FakeArchive that behaves like Orthanc 1.10 with its DICOMweb 1.7 plugin.

        Built from :meth:`ServerProfile.orthanc() <aqido.profile.ServerProfile.orthanc>`
        (200 ``[]`` for no match, no percent-decoding, case-insensitive
        matching, unknown attributes ignored, malformed values match nothing,
        ``includefield=all`` adds nothing, the last of repeated keys wins,
        silent cap+1 truncation applied before the offset when ``max_results``
        is set) plus what a profile does not describe: PN matched as a whole
        (not group by group), Orthanc's choice of parent attributes, no
        InstanceAvailability, no sequences, idle connections closed after 1 s.
        ``options`` override any of these (the profile's flags by their flag
        names: ``max_results=10``, ``truncation_warning=True``...).  Checked query
        for query against a live Orthanc by ``tests/integration/test_fake_vs_orthanc.py``.
        """
        from aqido.profile import ServerProfile

        flags = dict(options)
        profile = ServerProfile.orthanc(max_results=flags.pop("max_results", None))
        changes = {}
        for flag, (field, to_profile) in _FLAG_TO_PROFILE.items():
            if flag in flags:
                changes[field] = to_profile(flags.pop(flag))
        if changes:
            profile = attrs.evolve(profile, **changes)
        preset: dict[str, Any] = {
            "pn_groups": False,
            "parent_attributes": "orthanc",
            "instance_availability": False,
            "return_sequences": False,
            "keepalive_timeout": 1.0,
        }
        preset.update(flags)
        return cls(content, profile=profile, **preset)

    # --- content ---

    def add(self, content: SyntheticArchive | Iterable[Any] | Mapping[str, Any] | Any) -> None:
        """Store more content: a SyntheticArchive, a DICOM JSON dict, a pydicom Dataset,
        or an iterable of these.  An instance already stored (same SOPInstanceUID) is skipped."""
        from aqido.testing.synthetic import SyntheticArchive, paused_gc

        if isinstance(content, SyntheticArchive):
            with paused_gc():
                self._add_synthetic(content)
        elif isinstance(content, Mapping):
            self._add_json(content)
        elif hasattr(content, "to_json_dict"):  # pydicom Dataset
            self._add_json(content.to_json_dict(bulk_data_threshold=1 << 30))
        elif isinstance(content, Iterable) and not isinstance(content, (str, bytes)):
            for item in content:
                self.add(item)
        else:
            raise TypeError(f"cannot store {type(content).__name__!r} in a FakeArchive")

    def _add_synthetic(self, synth: SyntheticArchive) -> None:
        for st in synth.studies:
            study = self._studies.get(st.study_instance_uid)
            if study is None:
                # study_json/series_json hold only their level's attributes (tested)
                attrs_ = synth.study_json(st, aggregates=False)
                study = self._studies[st.study_instance_uid] = _Study(st.study_instance_uid, attrs_)
            for se in st.series:
                series = self._series.get(se.series_instance_uid)
                if series is None:
                    attrs_ = synth.series_json(se, aggregates=False)
                    series = _Series(se.series_instance_uid, attrs_, study)
                    self._series[se.series_instance_uid] = study.series[series.uid] = series
                    study.modalities.add(se.modality)
                    study.modalities_elem = None
                for inst in se.instances:
                    if inst.sop_instance_uid in self._instances:
                        continue
                    node = _Instance(
                        inst.sop_instance_uid,
                        series,
                        loader=functools.partial(synth._instance_json, st, se, inst),
                    )
                    node.seq = len(self._instances)
                    self._instances[node.uid] = series.instances[node.uid] = node
                    study.n_instances += 1

    def _add_json(self, dataset: Mapping[str, Any]) -> None:
        full = _normalise(dataset)
        study_uid = _uid_of(full, "0020000D", "StudyInstanceUID")
        series_uid = _uid_of(full, "0020000E", "SeriesInstanceUID")
        sop_uid = _uid_of(full, "00080018", "SOPInstanceUID")
        if sop_uid in self._instances:
            return
        levels: tuple[_Attrs, _Attrs, _Attrs] = ({}, {}, {})
        for key, elem in full.items():
            level = _level_of(key)
            if level == _OWN:
                for attrs_ in levels:
                    attrs_[key] = elem
            elif key in _COMPUTED_LEVEL:
                continue
            else:
                levels[level][key] = elem
        levels[_SERIES]["0020000D"] = full["0020000D"]
        levels[_INSTANCE]["0020000D"] = full["0020000D"]
        levels[_INSTANCE]["0020000E"] = full["0020000E"]
        study = self._studies.get(study_uid)
        if study is None:
            study = self._studies[study_uid] = _Study(study_uid, levels[_STUDY])
        series = self._series.get(series_uid)
        if series is None:
            series = _Series(series_uid, levels[_SERIES], study)
            self._series[series_uid] = study.series[series_uid] = series
            for modality in element_strings(levels[_SERIES].get("00080060")):
                study.modalities.add(modality)
            study.modalities_elem = None
        node = _Instance(sop_uid, series, attrs=levels[_INSTANCE])
        node.seq = len(self._instances)
        self._instances[sop_uid] = series.instances[sop_uid] = node
        series.study.n_instances += 1

    @property
    def counts(self) -> tuple[int, int, int]:
        """(studies, series, instances) stored."""
        return len(self._studies), len(self._series), len(self._instances)

    # --- faults and statistics ---

    def fail(
        self,
        match: str | Callable[[str], bool],
        fault: Fault | FaultKind = "500",
        *,
        times: int | None = None,
    ) -> None:
        """Fail requests whose relative URL (path and raw query) contains ``match``.

        ``match`` may also be a predicate on that URL.  ``times=None`` fails
        them forever; otherwise only the next ``times`` matching requests.
        Targeted faults are checked before the random :class:`Faults`.
        """
        pred = match if callable(match) else (lambda url, s=match: s in url)
        f = fault if isinstance(fault, Fault) else Fault(kind=fault)
        with self._lock:
            self._rules.append(_FaultRule(pred, f, times))

    def clear_faults(self) -> None:
        """Remove the targeted faults added with :meth:`fail` (``faults`` stays)."""
        with self._lock:
            self._rules.clear()

    def reset_stats(self) -> None:
        """Forget served requests, the peak concurrency and the per-URL attempt counts."""
        with self._lock:
            self.requests = []
            self.peak_concurrency = self._in_flight
            self._attempts.clear()

    def _pick_fault(self, url: str) -> Fault | None:
        with self._lock:
            attempt = self._attempts.get(url, 0)
            self._attempts[url] = attempt + 1
            for rule in self._rules:
                if rule.match(url) and (rule.remaining is None or rule.remaining > 0):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule.fault
        if self.faults is not None:
            return self.faults.draw(url, attempt)
        return None

    # --- lifecycle ---

    @property
    def port(self) -> int:
        """The TCP port (only while running)."""
        if self._port is None:
            raise RuntimeError("the FakeArchive is not running")
        return self._port

    @property
    def url(self) -> str:
        """The service root, ``http://127.0.0.1:PORT/dicom-web`` (only while running)."""
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    async def start(self) -> None:
        """Start listening on 127.0.0.1 (a free port)."""
        if self._runner is not None:
            raise RuntimeError("the FakeArchive is already running")
        server = web.Server(self._handle, max_line_size=65536, max_field_size=65536)
        runner = web.ServerRunner(
            server,
            access_log=None,
            keepalive_timeout=self.keepalive_timeout,
            shutdown_timeout=0.1,
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self._port = int(address[1])

    async def close(self) -> None:
        """Stop the server and close its connections (idempotent)."""
        runner, self._runner = self._runner, None
        self._port = None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeArchive:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[FakeArchive]:
        """Run the server on its own event loop in a background thread (for sync clients).

        ``with archive.run_in_thread() as archive: requests.get(archive.url + "/studies")``
        """
        loop = asyncio.new_event_loop()
        started = threading.Event()
        errors: list[Exception] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.close())
            loop.run_until_complete(loop.shutdown_asyncgens())

        thread = threading.Thread(target=run, name="FakeArchive", daemon=True)
        thread.start()
        started.wait(30)
        try:
            if errors:
                raise errors[0]
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()

    # --- HTTP ---

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        with self._lock:
            self._in_flight += 1
            self.peak_concurrency = max(self.peak_concurrency, self._in_flight)
        status: int | None = None
        fault_name: str | None = None
        raw_qs = request.raw_path.partition("?")[2]
        try:
            # Always yield once, so requests that arrived together overlap (peak_concurrency).
            await asyncio.sleep(self.latency if self.latency > 0 else 0)
            fault = self._pick_fault(request.raw_path)
            if fault is not None:
                fault_name = fault.kind
                response = await self._fault_response(request, fault)
            else:
                response = self._respond(request, raw_qs)
            status = response.status if response is not None else None
            if response is None:
                return web.Response(status=499)  # never sent: the connection is gone
            return response
        finally:
            with self._lock:
                self._in_flight -= 1
                self.requests.append(
                    ServedRequest(
                        method=request.method,
                        path=request.raw_path.partition("?")[0],
                        query_string=raw_qs,
                        headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                        status=status,
                        fault=fault_name,
                    )
                )

    def _check_auth(self, request: web.BaseRequest) -> web.Response | None:
        if self.basic_auth is None and self.bearer_token is None:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if self.basic_auth is not None and scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            user, _, password = decoded.partition(":")
            if (user, password) == self.basic_auth:
                return None
        if (
            self.bearer_token is not None
            and scheme.lower() == "bearer"
            and credentials == self.bearer_token
        ):
            return None
        challenge = 'Basic realm="FakeArchive"' if self.basic_auth else 'Bearer realm="FakeArchive"'
        return web.Response(
            status=401,
            text="Unauthorized",
            headers={"WWW-Authenticate": challenge},
        )

    async def _fault_response(
        self, request: web.BaseRequest, fault: Fault
    ) -> web.StreamResponse | None:
        kind = fault.kind
        if kind in ("429", "503"):
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return web.Response(status=int(kind), text=f"fault injected: {kind}", headers=headers)
        if kind == "500":
            error = {"HttpError": "Internal Server Error", "HttpStatus": 500, "Message": "fault"}
            return web.Response(status=500, body=_dumps(error), content_type="application/json")
        if kind == "html":
            status = fault.status or 502
            page = (
                f"<html><head><title>{status} Bad Gateway</title></head>"
                f"<body><h1>{status} Bad Gateway</h1><hr>nginx</body></html>"
            )
            return web.Response(status=status, text=page, content_type="text/html")
        if kind == "malformed":
            return web.Response(
                status=200,
                body=b'[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}, {"0020',
                content_type=DICOM_JSON,
            )
        transport = request.transport
        if kind == "disconnect":
            if transport is not None:
                transport.close()
            return None
        # truncated: promise a body, send half of it, hang up
        body = _dumps([{"0020000D": {"vr": "UI", "Value": ["1.2.3.4"]}}] * 50)
        response = web.StreamResponse(status=200, headers={"Content-Type": DICOM_JSON})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        if transport is not None:
            transport.close()
        return None

    def _respond(self, request: web.BaseRequest, raw_qs: str) -> web.Response:
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        if self.max_url_length is not None and len(request.raw_path) > self.max_url_length:
            return web.Response(status=414, text="URI Too Long")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="Method Not Allowed", headers={"Allow": "GET"})
        if not self.json_accept:
            accept = request.headers.get("Accept", "")
            if "application/json" in accept and not any(
                t in accept for t in (DICOM_JSON, "*/*", "application/*")
            ):
                return web.Response(status=406, text="Not Acceptable")
        path = request.raw_path.partition("?")[0]
        if not path.startswith(self.prefix + "/"):
            return web.Response(status=404, text="Not Found")
        parts = path[len(self.prefix) + 1 :].split("/")
        try:
            route = self._route(parts)
        except LookupError:
            return web.Response(status=404, text="Not Found")
        from aqido.testing.synthetic import paused_gc

        try:
            with paused_gc():  # a search allocates many short-lived objects, no cycles
                return self._search(request, route, raw_qs)
        except _InvalidValue as exc:
            status = self.bad_request_status
            return web.Response(status=status if status and status >= 400 else 400, text=str(exc))
        except _BadRequest as exc:
            return web.Response(status=400, text=str(exc))

    def _route(self, parts: list[str]) -> tuple[int, str | None, str | None, str]:
        """(query level, study UID, series UID, path kind)."""
        n = len(parts)
        if n == 1 and parts[0] == "studies":
            return _STUDY, None, None, "studies"
        if n == 1 and parts[0] == "series" and self.relational_series:
            return _SERIES, None, None, "series"
        if n == 1 and parts[0] == "instances" and self.relational_instances:
            return _INSTANCE, None, None, "instances"
        if n == 3 and parts[0] == "studies" and parts[2] == "series":
            return _SERIES, parts[1], None, "study-series"
        if n == 3 and parts[0] == "studies" and parts[2] == "instances" and self.study_instances:
            return _INSTANCE, parts[1], None, "study-instances"
        if n == 5 and parts[0] == "studies" and parts[2] == "series" and parts[4] == "instances":
            return _INSTANCE, parts[1], parts[3], "series-instances"
        raise LookupError(parts)

    def _defaults(self, kind: str, level: int, params: set[str]) -> frozenset[str]:
        """The default attributes returned on a path, as ``parent_attributes`` says.

        ``params``: the tag keys of the match parameters.
        """
        parts: tuple[tuple[int, bool], ...]
        if self.parent_attributes == "orthanc":
            # Every parent level without its aggregates, unless its UID is a parameter.
            parent_uid = {_STUDY: "0020000D", _SERIES: "0020000E"}
            parents = [(lv, False) for lv in range(_STUDY, level) if parent_uid[lv] not in params]
            parts = (*parents, (level, True))
        else:
            parts = tuple((lv, True) for lv in range(_STANDARD_TOP[kind], level + 1))
        keys: set[str] = set()
        for lv, with_aggregates in parts:
            keys.update(k for k in _DEFAULTS[lv] if with_aggregates or k not in _COMPUTED_LEVEL)
        if not self.instance_availability:
            keys.discard(_AVAILABILITY)
        return frozenset(keys)

    # --- search ---

    def _parse(self, raw_qs: str) -> tuple[list[_Match], set[str], bool, int | None, int, bool]:
        """(matches, returned keys, includefield=all, limit, offset, fuzzy)."""
        try:
            pairs = _parse_qs(raw_qs, decode=self.decode_percent)
        except UnicodeDecodeError:
            raise _BadRequest("query is not valid UTF-8 after percent-decoding") from None
        if not self.decode_percent and any(ord(c) > 127 for c in raw_qs):
            raise _BadRequest("Bad request")
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
                            raise _BadRequest(f"unknown attribute in includefield: {item!r}")
                        continue
                    include.add(key)
            elif lower in ("limit", "offset"):
                if not value.isdigit():
                    raise _BadRequest(f"{name} must be an unsigned integer, got {value!r}")
                if lower == "limit":
                    limit = int(value)
                    if self.max_limit is not None and limit > self.max_limit:
                        raise _BadRequest(f"limit must not exceed {self.max_limit}")
                else:
                    offset = int(value)
            elif lower in ("fuzzymatching", "emptyvaluematching", "multiplevaluematching"):
                if value not in ("true", "false"):
                    raise _BadRequest(f"{name} must be 'true' or 'false', got {value!r}")
                if lower == "fuzzymatching":
                    fuzzy = value == "true"
                    if fuzzy and self.fuzzy_matching == "error":
                        raise _BadRequest("fuzzymatching is not supported")
            elif name in keyed and self.repeated_keys == "error":
                raise _BadRequest(f"repeated match key: {name!r}")
            elif name in keyed and self.repeated_keys == "first":
                continue
            elif name in keyed and self.repeated_keys == "or":
                keyed[name].append(value)
            else:
                keyed[name] = [value]  # a repeated key with "last": the last one wins
        matches: list[_Match] = []
        for name, values in keyed.items():
            keys = [_resolve_key(p) for p in name.split(".")]
            if any(k is None for k in keys):
                if self.unknown_key_policy == "error":
                    raise _BadRequest(f"unknown attribute: {name!r}")
                if self.unknown_key_policy == "empty":
                    matches.append(_Match(_STUDY_UID_KEY, _STUDY, (), _nothing))
                continue
            path = [k for k in keys if k is not None]
            if not self._matches_key(path[0]):
                if self.unknown_key_policy == "error":
                    raise _BadRequest(f"unsupported match key: {name!r}")
                if self.unknown_key_policy == "empty":
                    matches.append(_Match(_STUDY_UID_KEY, _STUDY, (), _nothing))
                continue
            if not self.non_ascii_values and not all(v.isascii() for v in values):
                matches.append(_Match(_STUDY_UID_KEY, _STUDY, (), _nothing))  # misread bytes
                continue
            compiled = [self._compile(path, value, fuzzy) for value in values]
            matches.append(compiled[0] if len(compiled) == 1 else _any_of(compiled))
        returned = {
            m.key for m in matches if m.key != _STUDY_UID_KEY or m.predicate is not _nothing
        }
        return matches, returned | include, include_all, limit, offset, fuzzy

    #: Overrides the matching the flags and the profile describe with a full
    #: :class:`~aqido.matching.MatchOptions` (e.g. a server without wildcards).
    match_options: MatchOptions | None = None

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
        )

    def _compile(self, path: list[str], value: str, fuzzy: bool = False) -> _Match:
        """One match key → a :class:`_Match` (the predicate comes from :mod:`aqido.matching`).

        A malformed value is a 400, or (``strict_values=False``) matches nothing and
        marks the request (``bad_request_status``).
        """
        first = path[0]
        level = _level_of(first)
        vr = vr_for(int(path[-1], 16)) or "UN"
        options = self._matching()
        if fuzzy and vr == "PN" and self.fuzzy_matching == "supported":
            options = attrs.evolve(options, pn_case_sensitive=False)  # the fake's "fuzzy"
        if vr == "UI" and not self.decode_percent:  # Orthanc understands %2C in UID lists
            value = value.replace("%2C", ",").replace("%2c", ",")
        try:
            pred = compile_value(value, vr, attrs.evolve(options, strict_values=True))
        except InvalidQueryError as exc:
            if vr == "SQ":
                raise _BadRequest(str(exc)) from None
            if options.strict_values:
                raise _InvalidValue(str(exc)) from None
            self._had_invalid = True
            pred = compile_value(value, vr, options)
        uids = None
        if vr == "UI" and pred is not None and len(path) == 1:
            parts = value.split(",") if options.uid_lists else [value]
            uids = frozenset(u.strip() for u in parts if u.strip())  # for the UID indexes
        return _Match(first, level, tuple(path[1:]), pred, uids)

    def _hits(
        self, level: int, study_uid: str | None, series_uid: str | None, matches: list[_Match]
    ) -> Iterator[_Entity] | None:
        """The matching entities in stable order; ``None`` for an unknown parent in the path.

        UID keys narrow the walk through the indexes; study-level filters run
        once per study and series-level ones once per series.
        """
        uid_sets = {m.key: m.uids for m in matches if m.uids is not None}
        filters = [m for m in matches if m.predicate is not None]
        if any(m.level > level for m in filters):
            return iter(())  # a lower-level attribute is never present, so never matches
        study_f = [m for m in filters if m.level == _STUDY]
        series_f = [m for m in filters if m.level == _SERIES]
        rest_f = [m for m in filters if m.level not in (_STUDY, _SERIES)]
        studies: Iterable[_Study]
        if study_uid is not None:
            study = self._studies.get(study_uid)
            if study is None:
                return None
            if series_uid is not None and series_uid not in study.series:
                return None
            studies = (study,)
        elif "0020000D" in uid_sets:
            wanted = uid_sets["0020000D"] or frozenset()
            studies = [s for u, s in self._studies.items() if u in wanted]
        else:
            studies = self._studies.values()
        if study_f:
            studies = (
                s for s in studies if self._matches_no_instance((s, None, None), study_f, level)
            )
        if level == _STUDY:
            entities: Iterator[_Entity] = ((s, None, None) for s in studies)
            if rest_f:
                return (e for e in entities if self._matches(e, rest_f, level))
            return entities

        wanted_series = uid_sets.get("0020000E")

        def series_of(study: _Study) -> Iterable[_Series]:
            if series_uid is not None:
                found: Iterable[_Series] = (study.series[series_uid],)
            elif wanted_series is not None:
                found = [se for u, se in study.series.items() if u in wanted_series]
            else:
                found = study.series.values()
            if series_f:
                return [
                    se
                    for se in found
                    if self._matches_no_instance((study, se, None), series_f, level)
                ]
            return found

        if level == _SERIES:
            entities = ((s, se, None) for s in studies for se in series_of(s))
        elif "00080018" in uid_sets and study_uid is None and "0020000D" not in uid_sets:
            wanted = uid_sets["00080018"] or frozenset()
            found = sorted(
                (self._instances[u] for u in wanted if u in self._instances),
                key=lambda i: i.seq,
            )
            entities = (
                (i.series.study, i.series, i)
                for i in found
                if self._matches_no_instance(
                    (i.series.study, i.series, None), study_f + series_f, level
                )
            )
        else:
            entities = (
                (s, se, i) for s in studies for se in series_of(s) for i in se.instances.values()
            )
        if rest_f:
            return (e for e in entities if self._matches(e, rest_f, level))
        return entities

    @staticmethod
    def _element(
        entity: _Entity,
        key: str,
        level: int,
        result_level: int,
        inst_attrs: _Attrs | None = None,
    ) -> _Element | None:
        study, series, instance = entity
        if level == _OWN:
            if instance is not None:
                return (inst_attrs if inst_attrs is not None else instance.attrs).get(key)
            return (series.attrs if series is not None else study.attrs).get(key)
        if level > result_level:
            return None
        if key in _COMPUTED_LEVEL:
            if key == _MODALITIES_IN_STUDY:
                if study.modalities_elem is None:
                    study.modalities_elem = {"vr": "CS", "Value": sorted(study.modalities)}
                return study.modalities_elem
            if key == _N_STUDY_SERIES:
                return {"vr": "IS", "Value": [len(study.series)]}
            if key == _N_STUDY_INSTANCES:
                return {"vr": "IS", "Value": [study.n_instances]}
            assert series is not None
            return {"vr": "IS", "Value": [len(series.instances)]}
        if level == _STUDY:
            return study.attrs.get(key)
        if level == _SERIES:
            assert series is not None
            return series.attrs.get(key)
        assert instance is not None
        return (inst_attrs if inst_attrs is not None else instance.attrs).get(key)

    def _matches(self, entity: _Entity, filters: list[_Match], result_level: int) -> bool:
        inst_attrs = entity[2].attrs if entity[2] is not None else None
        return all(self._match_one(entity, m, result_level, inst_attrs) for m in filters)

    def _matches_no_instance(
        self, entity: _Entity, filters: list[_Match], result_level: int
    ) -> bool:
        return all(self._match_one(entity, m, result_level, None) for m in filters)

    def _match_one(
        self, entity: _Entity, match: _Match, result_level: int, inst_attrs: _Attrs | None
    ) -> bool:
        elem = self._element(entity, match.key, match.level, result_level, inst_attrs)
        assert match.predicate is not None
        if elem is None:
            return False
        if not match.path:
            return match.predicate(elem)
        return match_path(elem, match.path, match.predicate)

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
        hits = self._hits(level, study_uid, series_uid, matches)
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
        if limit and not self.ignore_limit:
            take = min(take, limit)
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
        body = _dumps(self._render_all(page, level, top, defaults | returned, include_all, base))
        return web.Response(status=200, body=body, content_type=DICOM_JSON, headers=headers)

    @staticmethod
    def _plan(
        level: int, returned: Iterable[str], extra: Iterable[str] = ()
    ) -> list[tuple[str, int]]:
        """The sorted (key, level) pairs to render; lower-level attributes are left out."""
        keys: set[str] = set(returned)
        keys.update(extra)
        plan = []
        for key in sorted(keys):
            key_level = _OWN if key in (_AVAILABILITY, _RETRIEVE_URL) else _level_of(key)
            if key_level <= level:
                plan.append((key, key_level))
        return plan

    def _render_all(
        self,
        page: list[_Entity],
        level: int,
        top: int,
        returned: frozenset[str],
        include_all: bool,
        base: str,
    ) -> list[dict[str, Any]]:
        if not self.include_all_attributes:
            include_all = False
        shared = None if include_all else self._plan(level, returned)
        out: list[dict[str, Any]] = []
        for entity in page:
            study, series, instance = entity
            inst_attrs = instance.attrs if instance is not None else None
            plan = shared
            if plan is None:
                extra: set[str] = set()
                if top <= _STUDY:
                    extra.update(study.attrs)
                if series is not None and top <= _SERIES:
                    extra.update(series.attrs)
                if inst_attrs is not None:
                    extra.update(inst_attrs)
                plan = self._plan(level, returned, extra)
            item: dict[str, Any] = {}
            for key, key_level in plan:
                if key == _AVAILABILITY:
                    item[key] = {"vr": "CS", "Value": ["ONLINE"]}
                elif key == _RETRIEVE_URL:
                    url = f"{base}/studies/{study.uid}"
                    if level >= _SERIES and series is not None:
                        url += f"/series/{series.uid}"
                    if level == _INSTANCE and instance is not None:
                        url += f"/instances/{instance.uid}"
                    item[key] = {"vr": "UR", "Value": [url]}
                else:
                    elem = self._element(entity, key, key_level, level, inst_attrs)
                    if elem is not None and (self.return_sequences or elem.get("vr") != "SQ"):
                        item[key] = elem
            out.append(item)
        return out


_STUDY_UID_KEY = "0020000D"


def _any_of(matches: list[_Match]) -> _Match:
    """A repeated key read as OR: any of its compiled values matches."""
    first = matches[0]
    if any(m.predicate is None for m in matches):
        return _Match(first.key, first.level, first.path, None)
    preds = [m.predicate for m in matches if m.predicate is not None]
    uids: frozenset[str] | None = None
    if all(m.uids is not None for m in matches):
        uids = frozenset().union(*(m.uids or frozenset() for m in matches))

    def pred(elem: Mapping[str, Any]) -> bool:
        return any(p(elem) for p in preds)

    return _Match(first.key, first.level, first.path, pred, uids)


def _nothing(elem: Mapping[str, Any]) -> bool:
    """The predicate of a malformed value when ``strict_values=False``: matches nothing."""
    return False

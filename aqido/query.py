"""Immutable, validated QIDO-RS queries: a search turned into a path and parameters.

A query is a frozen, keyword-only attrs object.  Every rule is checked when it
is built, so a bad query raises :class:`~aqido.errors.InvalidQueryError` (a
``ValueError``) before any I/O, with a message that names the field and says
how to fix it.  ``attrs.evolve(query, limit=..., offset=...)`` builds a changed
copy (and validates it again); queries are hashable.  A keyword that no
query has raises :class:`~aqido.errors.UnknownFieldError` (also a
``TypeError``), naming the closest field.

Two kinds, as in ``dicomtrolley.qido_rs`` (same field names):

- :class:`HierarchicalQuery`: all studies (``/studies``), a study's series
  (``/studies/{study}/series``), a series' instances
  (``/studies/{study}/series/{series}/instances``);
- :class:`RelationalQuery`: all series (``/series``), all instances
  (``/instances``), a study's instances (``/studies/{study}/instances``).

Encoding policy (:func:`encode_query_value`): only ``%``, ``&``, ``#``, ``+``,
``=``, space and non-ASCII characters (UTF-8) are percent-encoded; the DICOM
matching characters ``^ * ? , - . / :`` are sent as they are.  Some servers
(Orthanc 1.10 with DICOMweb 1.7, Debian 12) do not percent-decode QIDO values,
so ``PatientName=Doe%5EJohn`` silently matches nothing there while
``Doe^John`` works.  Control characters (including CR and LF) are rejected
everywhere.  :meth:`BaseQuery.query_string` is the exact text to send.

The values of the fields (levels, UIDs, text, dates, keys, vendor parameters)
are converted and checked by :mod:`aqido._query_values`; this module holds the
query classes and :func:`ensure_query_type`.

Pure: no I/O happens here, and nothing heavy is imported (the DICOM dictionary
is loaded on first use by :mod:`aqido.dictionary`, without importing pydicom).
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import attrs

from aqido import dictionary
from aqido._attrs_methods import ValueMethods
from aqido._query_values import ATTRIBUTE_FIELDS as ATTRIBUTE_FIELDS
from aqido._query_values import (
    FIELD_ALIASES,
    attribute_values,
    check_bool,
    check_count,
    check_uid_list,
    conv_accession,
    conv_extra_params,
    conv_filters,
    conv_include_fields,
    conv_level,
    conv_max_date,
    conv_min_date,
    conv_modalities,
    conv_modality,
    conv_patient_id,
    conv_patient_name,
    conv_series_description,
    conv_series_uid,
    conv_sop_uid,
    conv_study_description,
    conv_study_uid,
    normalise_key,
)
from aqido._query_values import PERMISSIVE_UID_MAX as PERMISSIVE_UID_MAX
from aqido._query_values import RESERVED_PARAMS as RESERVED_PARAMS
from aqido._query_values import QueryLevel as QueryLevel
from aqido._query_values import encode_query_value as encode_query_value
from aqido._query_values import is_permissive_uid as is_permissive_uid
from aqido._query_values import is_valid_uid as is_valid_uid
from aqido.errors import InvalidQueryError, UnknownFieldError

# --------------------------------------------------------------------------- queries


@functools.cache
def _named_tags() -> tuple[dict[int, str], int]:
    """(tag → named field, StudyDate tag), resolved on first use (not at import)."""
    named = {dictionary.resolve(field)[0]: field for field in ATTRIBUTE_FIELDS}
    return named, dictionary.resolve("StudyDate")[0]


@functools.cache
def _query_field_names() -> tuple[str, ...]:
    return tuple(a.name for a in attrs.fields(BaseQuery))


def _unknown_field_error(kind: str, names: Iterable[str]) -> UnknownFieldError:
    """The :class:`~aqido.errors.UnknownFieldError` for keywords no query has (``kind``'s)."""
    unknown = sorted(names)
    name = unknown[0]
    fields = _query_field_names()
    suggestion = FIELD_ALIASES.get(name) or FIELD_ALIASES.get(name.lower())
    if suggestion is None:
        import difflib  # only on this error path: keeps ``import aqido`` fast

        by_lower = {field.lower(): field for field in fields}
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
        suggestion = by_lower[close[0]] if close else None
    more = f" (and {', '.join(repr(n) for n in unknown[1:])})" if len(unknown) > 1 else ""
    is_keyword = dictionary.tag_for_keyword(name) is not None
    if is_keyword and (suggestion is None or suggestion.lower() != name.lower()):
        hint = f"it is a DICOM attribute: pass it as filters={{{name!r}: ...}}"
        suggestion = None
    elif suggestion is not None:
        hint = (
            f"did you mean {suggestion}=...? Any other DICOM attribute goes in "
            "filters={'Keyword': value}"
        )
    else:
        hint = (
            f"the fields are {', '.join(fields)}; any other DICOM attribute goes in "
            "filters={'Keyword': value}"
        )
    return UnknownFieldError(
        f"{kind}: unknown field {name!r}{more}; {hint}", field=name, suggestion=suggestion
    )


def _raise_unknown_fields(query: object, unknown: Mapping[str, object]) -> None:
    raise _unknown_field_error(type(query).__name__, unknown)


_Q = TypeVar("_Q", bound=type)


def _reject_unknown_fields(cls: _Q) -> _Q:
    """Make ``cls(unknown=...)`` raise :class:`UnknownFieldError` instead of attrs' TypeError.

    attrs' generated ``__init__`` is wrapped: a valid call pays one extra call
    frame (well under a microsecond); the ``TypeError`` of an unexpected
    keyword becomes the error that names the field and suggests the right one.
    Queries the client derives itself from validated parents do not come
    through here.
    """
    init = cls.__init__  # type: ignore[misc]

    @functools.wraps(init)
    def __init__(self: Any, **kwargs: Any) -> None:
        try:
            init(self, **kwargs)
        except TypeError:
            unknown = set(kwargs) - set(_query_field_names())
            if unknown:
                raise _unknown_field_error(type(self).__name__, unknown) from None
            raise

    cls.__init__ = __init__  # type: ignore[misc]
    return cls


# The two kinds add no field: they are plain subclasses that take BaseQuery's generated
# __init__ (with the unknown-field check) rather than having attrs generate and compile it
# twice more at import (~5 ms of a cold start); __eq__ (same class only) and __hash__ are
# the shared ones of aqido._attrs_methods, not compiled at all.
@_reject_unknown_fields
@attrs.frozen(kw_only=True, repr=False, eq=False)
class BaseQuery(ValueMethods):
    """What every QIDO-RS query has: fields, validation, path and encoded parameters.

    Not used directly: build a :class:`HierarchicalQuery` or a
    :class:`RelationalQuery`.  Use ``BaseQuery`` in type annotations and
    ``isinstance`` checks.

    Fields (all keyword-only; empty string / ``None`` / ``0`` / ``()`` mean "not set"):

    - ``query_level``: :class:`QueryLevel` (or its name, any case); default STUDY.
    - ``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID``: a UID, or
      (where the UID is a parameter, not part of the path) several UIDs as a
      list or a comma-separated string.  Trailing NUL and space padding is
      stripped; anything else that is not a valid UID is rejected.
    - ``PatientName``, ``PatientID``, ``AccessionNumber``, ``StudyDescription``,
      ``SeriesDescription``: match values (``*``/``?`` wildcards allowed).
    - ``ModalitiesInStudy``, ``Modality``: a value, or several as a list (sent
      comma-separated: ``CT,MR``).
    - ``min_study_date``, ``max_study_date``: ``date``, ``datetime`` (its day
      is used) or ``'YYYY-MM-DD'``/``'YYYYMMDD'``; stored as ``date``.  Sent as
      ``StudyDate=min-max``; one of them alone gives an open range.
    - ``include_fields``: keywords or 8-hex-digit tags, or ``['all']``; stored as
      a tuple, duplicates removed.
    - ``fuzzymatching``: ``True`` sends ``fuzzymatching=true``; ``False`` sends nothing.
    - ``limit``, ``offset``: ints from 0 (not sent) to ``2**63 - 1``.
    - ``filters``: any other attribute, ``{keyword or tag: value or [values]}``;
      stored as a tuple of ``(key, value)`` pairs sorted by tag, tags
      uppercased, lists comma-joined.  UI values must be UIDs; DA/TM/DT values
      must be a value or a range; numeric (IS, DS, US...) values numbers.
    - ``extra_params``: other query parameters, sent as they are after all of
      aqido's own (vendor-specific ones): ``{name: value or [values]}``; a
      list is sent as the same name repeated, in order
      (``key1=value1&key1=value2&key2=value3``); values are encoded as other
      values are.  Stored as ``((name, (value, ...)), ...)``.  Names that aqido
      sets itself (``limit``, ``offset``, ``includefield``, ``fuzzymatching``)
      and DICOM attributes (use the named fields or ``filters``), in any case,
      are refused, as are control characters.  Kept by paging, splitting and
      the crawl's series and instance queries.
    - ``permissive_uid``: ``True`` relaxes the UID checks (the UID fields and
      UI ``filters``) from PS3.5 syntax to :func:`is_permissive_uid`, for
      archives whose UIDs do not conform; default ``False`` (strict).

    Any other keyword raises :class:`~aqido.errors.UnknownFieldError` (an
    ``InvalidQueryError``, also a ``TypeError``) naming it and the closest field.
    """

    query_level: QueryLevel = attrs.field(default=QueryLevel.STUDY, converter=conv_level)
    StudyInstanceUID: str = attrs.field(default="", converter=conv_study_uid)
    SeriesInstanceUID: str = attrs.field(default="", converter=conv_series_uid)
    SOPInstanceUID: str = attrs.field(default="", converter=conv_sop_uid)
    PatientName: str = attrs.field(default="", converter=conv_patient_name)
    PatientID: str = attrs.field(default="", converter=conv_patient_id)
    AccessionNumber: str = attrs.field(default="", converter=conv_accession)
    ModalitiesInStudy: str = attrs.field(default="", converter=conv_modalities)
    Modality: str = attrs.field(default="", converter=conv_modality)
    StudyDescription: str = attrs.field(default="", converter=conv_study_description)
    SeriesDescription: str = attrs.field(default="", converter=conv_series_description)
    min_study_date: _dt.date | None = attrs.field(default=None, converter=conv_min_date)
    max_study_date: _dt.date | None = attrs.field(default=None, converter=conv_max_date)
    include_fields: tuple[str, ...] = attrs.field(default=(), converter=conv_include_fields)
    fuzzymatching: bool = attrs.field(default=False, validator=check_bool)
    limit: int = attrs.field(default=0, validator=check_count)
    offset: int = attrs.field(default=0, validator=check_count)
    filters: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=conv_filters)
    extra_params: tuple[tuple[str, tuple[str, ...]], ...] = attrs.field(
        default=(), converter=conv_extra_params
    )
    permissive_uid: bool = attrs.field(default=False, validator=check_bool)

    def __attrs_post_init__(self) -> None:
        if type(self) is BaseQuery:
            raise TypeError("BaseQuery is abstract: use HierarchicalQuery or RelationalQuery")
        name = type(self).__name__
        permissive = self.permissive_uid
        if self.StudyInstanceUID:
            check_uid_list("StudyInstanceUID", self.StudyInstanceUID, permissive)
        if self.SeriesInstanceUID:
            check_uid_list("SeriesInstanceUID", self.SeriesInstanceUID, permissive)
        if self.SOPInstanceUID:
            check_uid_list("SOPInstanceUID", self.SOPInstanceUID, permissive)
        if (
            self.min_study_date is not None
            and self.max_study_date is not None
            and self.min_study_date > self.max_study_date
        ):
            raise InvalidQueryError(
                f"{name}: min_study_date ({self.min_study_date}) is after max_study_date "
                f"({self.max_study_date}); swap them"
            )
        named, study_date_tag = _named_tags() if self.filters else ({}, 0)
        for key, value in self.filters:
            _key, tags, vr = normalise_key("filters", key)
            if vr == "UI":
                check_uid_list(f"filters[{key!r}]", value, permissive)
            if len(tags) == 1 and tags[0] in named:
                raise InvalidQueryError(
                    f"{name}: filters[{key!r}] duplicates a query field; "
                    f"use {named[tags[0]]}=... instead"
                )
            if (
                len(tags) == 1
                and tags[0] == study_date_tag
                and (self.min_study_date or self.max_study_date)
            ):
                raise InvalidQueryError(
                    f"{name}: filters[{key!r}] conflicts with min_study_date/max_study_date; "
                    "use one or the other"
                )
        self._validate_structure()
        for field in self._path_uid_fields():
            value = getattr(self, field)
            if "," in value:
                raise InvalidQueryError(
                    f"{name}: {field} goes in the URL path at query_level "
                    f"{self.query_level.name}, so it must be one UID, not a list "
                    f"({value!r}); query one UID at a time"
                )

    # -- hooks for the two kinds ------------------------------------------------

    def _validate_structure(self) -> None:
        """Check the hierarchy and level rules of this kind of query."""
        raise NotImplementedError

    def _path_uid_fields(self) -> tuple[str, ...]:
        """The UID fields that go in the path (not sent as parameters)."""
        raise NotImplementedError

    # -- rendering ----------------------------------------------------------------

    def uri_base(self) -> str:
        """Return the resource path, e.g. ``"/studies/1.2.3/series"`` (as dicomtrolley)."""
        raise NotImplementedError

    def study_date_range(self) -> str:
        """Return the ``StudyDate`` range (``"20240101-20240131"``, ``"20240101-"``), or ``""``."""
        if self.min_study_date is None and self.max_study_date is None:
            return ""
        from aqido.values import format_da  # not needed by ``import aqido``

        low = format_da(self.min_study_date) if self.min_study_date else ""
        high = format_da(self.max_study_date) if self.max_study_date else ""
        return f"{low}-{high}"

    def uri_search_params(self) -> dict[str, str | list[str]]:
        """Return the search parameters (unencoded), leaving out empty values.

        Compatible with ``dicomtrolley``'s ``uri_search_params()`` for the same
        query, except that UIDs in the path are not repeated, dates may form an
        open range, and numbers are strings.  ``includefield`` is a list (one
        parameter each); everything else is a single string.  The order is
        fixed: named attributes, ``StudyDate``, ``filters`` (by tag),
        ``includefield``, ``fuzzymatching``, ``limit``, ``offset``, then
        ``extra_params`` in the order given (a list when a name has several values).
        """
        in_path = self._path_uid_fields()  # a tuple of at most two names
        params: dict[str, str | list[str]] = {}
        # zip() without strict=: attribute_values is attrgetter(*ATTRIBUTE_FIELDS) (a test
        # checks it), and the strict check was a fifth of this method, run for every request.
        for field, value in zip(ATTRIBUTE_FIELDS, attribute_values(self), strict=False):
            if value and field not in in_path:
                params[field] = value
        dates = self.study_date_range()
        if dates:
            params["StudyDate"] = dates
        for key, value in self.filters:
            params[key] = value
        if self.include_fields:
            params["includefield"] = list(self.include_fields)
        if self.fuzzymatching:
            params["fuzzymatching"] = "true"
        if self.limit:
            params["limit"] = str(self.limit)
        if self.offset:
            params["offset"] = str(self.offset)
        for key, values in self.extra_params:
            params[key] = values[0] if len(values) == 1 else list(values)
        return params

    def query_string(self) -> str:
        """Return the exact encoded query string to send, without ``?`` (``""`` if none).

        Values are encoded with :func:`encode_query_value`; a list value
        becomes one ``key=value`` per item.  Send these bytes unchanged (with
        yarl: ``URL(..., encoded=True)``).
        """
        parts: list[str] = []
        for key, value in self.uri_search_params().items():
            values = value if isinstance(value, list) else [value]
            parts.extend(f"{encode_query_value(key)}={encode_query_value(v)}" for v in values)
        return "&".join(parts)

    def relative_url(self) -> str:
        """Return the path and query string (``/studies?PatientID=X``), e.g. for logging."""
        qs = self.query_string()
        return f"{self.uri_base()}?{qs}" if qs else self.uri_base()

    def __str__(self) -> str:
        """Return :meth:`relative_url`, the readable form for logs."""
        return self.relative_url()

    def __repr__(self) -> str:
        """Return a short constructor call showing only the fields that are set."""
        parts = [f"query_level=QueryLevel.{self.query_level.name}"]
        for attribute in attrs.fields(type(self)):
            if attribute.name == "query_level":
                continue
            value = getattr(self, attribute.name)
            if value != attribute.default:
                parts.append(f"{attribute.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


class HierarchicalQuery(BaseQuery):
    """A QIDO-RS query along the study → series → instance hierarchy.

    - STUDY level: all studies, ``/studies``;
    - SERIES level: one study's series, ``/studies/{StudyInstanceUID}/series``;
    - INSTANCE level: one series' instances,
      ``/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances``.

    Rules: a SeriesInstanceUID needs a StudyInstanceUID; a SOPInstanceUID needs
    both; SERIES level needs a StudyInstanceUID and INSTANCE level needs both.
    UIDs in the path must be single UIDs.  See :class:`BaseQuery` for the fields.
    """

    __slots__ = ()  # BaseQuery's: fields, __init__, __eq__ and __hash__ (see BaseQuery)

    def _validate_structure(self) -> None:
        fix = "add it, or use a RelationalQuery"
        if self.SeriesInstanceUID and not self.StudyInstanceUID:
            raise InvalidQueryError(
                f"HierarchicalQuery: SeriesInstanceUID={self.SeriesInstanceUID!r} needs a "
                f"StudyInstanceUID; {fix}"
            )
        if self.SOPInstanceUID and not (self.StudyInstanceUID and self.SeriesInstanceUID):
            raise InvalidQueryError(
                f"HierarchicalQuery: SOPInstanceUID={self.SOPInstanceUID!r} needs a "
                f"StudyInstanceUID and a SeriesInstanceUID; {fix}"
            )
        if self.query_level is QueryLevel.SERIES and not self.StudyInstanceUID:
            raise InvalidQueryError(
                f"HierarchicalQuery: query_level SERIES needs a StudyInstanceUID; {fix}"
            )
        if self.query_level is QueryLevel.INSTANCE and not (
            self.StudyInstanceUID and self.SeriesInstanceUID
        ):
            raise InvalidQueryError(
                "HierarchicalQuery: query_level INSTANCE needs a StudyInstanceUID and a "
                f"SeriesInstanceUID; {fix}"
            )

    def _path_uid_fields(self) -> tuple[str, ...]:
        if self.query_level is QueryLevel.SERIES:
            return ("StudyInstanceUID",)
        if self.query_level is QueryLevel.INSTANCE:
            return ("StudyInstanceUID", "SeriesInstanceUID")
        return ()

    def uri_base(self) -> str:
        """Return ``/studies``, ``/studies/{s}/series`` or ``.../series/{se}/instances``."""
        if self.query_level is QueryLevel.SERIES:
            return f"/studies/{self.StudyInstanceUID}/series"
        if self.query_level is QueryLevel.INSTANCE:
            return f"/studies/{self.StudyInstanceUID}/series/{self.SeriesInstanceUID}/instances"
        return "/studies"


class RelationalQuery(BaseQuery):
    """A QIDO-RS query across the hierarchy: at SERIES or INSTANCE level only.

    - SERIES level: all series, ``/series``;
    - INSTANCE level with one StudyInstanceUID: that study's instances,
      ``/studies/{StudyInstanceUID}/instances`` (the UID is not repeated as a
      parameter, unlike dicomtrolley);
    - INSTANCE level otherwise: all instances, ``/instances`` (a list of
      StudyInstanceUIDs is sent as a ``StudyInstanceUID=a,b`` parameter).

    No hierarchy rules apply.  See :class:`BaseQuery` for the fields.
    """

    __slots__ = ()  # BaseQuery's: fields, __init__, __eq__ and __hash__ (see BaseQuery)

    def _validate_structure(self) -> None:
        if self.query_level is QueryLevel.STUDY:
            raise InvalidQueryError(
                "RelationalQuery: query_level STUDY is not relational; use "
                "HierarchicalQuery for studies, or query_level SERIES/INSTANCE"
            )

    def _path_uid_fields(self) -> tuple[str, ...]:
        if (
            self.query_level is QueryLevel.INSTANCE
            and self.StudyInstanceUID
            and "," not in self.StudyInstanceUID
        ):
            return ("StudyInstanceUID",)
        return ()

    def uri_base(self) -> str:
        """Return ``/series``, ``/studies/{s}/instances`` or ``/instances``."""
        if self.query_level is QueryLevel.SERIES:
            return "/series"
        if self._path_uid_fields():
            return f"/studies/{self.StudyInstanceUID}/instances"
        return "/instances"


# --------------------------------------------------------------------------- casting

_FIELD_NAMES = frozenset(a.name for a in attrs.fields(BaseQuery))
#: Fields whose 0 or False is their default, so "not set" (a 0 elsewhere is a wrong value).
_ZERO_DEFAULTS = frozenset({"limit", "offset", "fuzzymatching", "permissive_uid"})


def _fields_of(query: object) -> dict[str, Any]:
    if isinstance(query, Mapping):  # an iterator is read once, but a query may be built twice
        return {k: tuple(v) if isinstance(v, Iterator) else v for k, v in query.items()}
    dump = getattr(query, "model_dump", None)  # pydantic v2 (dicomtrolley >= 3)
    if callable(dump):
        data = dump()
    else:
        legacy = getattr(query, "dict", None)  # pydantic v1
        data = legacy() if callable(legacy) else None
    if not isinstance(data, dict):
        raise InvalidQueryError(
            f"ensure_query_type: {type(query).__name__} is not a query; pass an aqido query, "
            "a dicomtrolley Query, or a dict of query fields"
        )
    return data


def _temporal_value(keyword: str, value: _dt.date | _dt.time) -> str:
    """A ``date``/``datetime``/``time`` given for an attribute, written in the attribute's VR.

    DA takes a date (a datetime: its day, as ``min_study_date`` does), DT a
    datetime or a date, TM a time; anything else raises
    :class:`~aqido.errors.InvalidQueryError` rather than send a value of another form.
    """
    from aqido.values import format_da, format_dt, format_tm  # not needed by ``import aqido``

    tag = dictionary.tag_for_keyword(keyword)
    vr = dictionary.vr_for(tag) if tag is not None else None
    if isinstance(value, _dt.date):
        day = value.date() if isinstance(value, _dt.datetime) else value
        if vr == "DA":
            return format_da(day)
        if vr == "DT":
            if not isinstance(value, _dt.datetime):
                return format_da(day)
            try:  # in UTC: a '-' offset would read as a range
                utc = value.astimezone(_dt.timezone.utc) if value.utcoffset() is not None else value
                return format_dt(utc)
            except OverflowError:  # UTC is in the year 0 or 10000
                exc = ValueError(f"{value} is outside the years 1-9999 in UTC")
                raise InvalidQueryError(f"ensure_query_type: {keyword}: {exc}") from None
            except ValueError as exc:
                raise InvalidQueryError(f"ensure_query_type: {keyword}: {exc}") from None
    elif vr == "TM":
        try:
            return format_tm(value)
        except ValueError as exc:
            raise InvalidQueryError(f"ensure_query_type: {keyword}: {exc}") from None
    raise InvalidQueryError(
        f"ensure_query_type: {keyword}={value!r} is a {type(value).__name__}, but {keyword} "
        f"has VR {vr or 'unknown'}; pass it as text in that VR's form"
    )


def ensure_query_type(
    query: object, *, permissive_uid: bool = False
) -> HierarchicalQuery | RelationalQuery:
    """Turn any query into an aqido query: hierarchical where possible, relational otherwise.

    Accepts an aqido query (returned unchanged), a dicomtrolley ``Query``,
    ``HierarchicalQuery`` or ``RelationalQuery`` (duck-typed through
    pydantic's ``model_dump()``; dicomtrolley is not imported), or a mapping
    of field names.  A dicomtrolley ``HierarchicalQuery``/``RelationalQuery``
    keeps its kind; anything else becomes a :class:`HierarchicalQuery` if
    that is valid, else a :class:`RelationalQuery`.  Empty values (and a 0 or
    ``False`` limit, offset, fuzzymatching or permissive_uid) are dropped;
    other attributes that are DICOM keywords (``PatientBirthDate`` of a
    dicomtrolley ``ExtendedQuery``) go into ``filters``; anything else raises.
    ``permissive_uid=True`` builds the converted query with relaxed UID checks
    (unless the mapping sets ``permissive_uid`` itself); an aqido query is
    never changed.

    Raises:
        InvalidQueryError: the query cannot be expressed as either kind (the
            message is that of the relational attempt when both fail).
    """
    if isinstance(query, (HierarchicalQuery, RelationalQuery)):
        return query
    data = _fields_of(query)
    kwargs: dict[str, Any] = {}
    filters: dict[str, Any] = dict(conv_filters(data.pop("filters", None) or None))
    for key, value in data.items():
        if value is None or value == "" or value == [] or value == ():
            continue
        if key in _ZERO_DEFAULTS and value == 0:
            continue
        if key in _FIELD_NAMES:
            kwargs[key] = value
        elif isinstance(key, str) and dictionary.tag_for_keyword(key) is not None:
            if isinstance(value, _dt.date | _dt.time):
                value = _temporal_value(key, value)
            if key in filters:  # one would be dropped silently
                raise InvalidQueryError(f"ensure_query_type: {key} given twice (also in filters)")
            filters[key] = value
        else:
            raise InvalidQueryError(
                f"ensure_query_type: {type(query).__name__} has {key}={value!r}, which aqido "
                "has no field for; remove it (nothing is dropped silently)"
            )
    if filters:
        kwargs["filters"] = filters
    if permissive_uid and "permissive_uid" not in data:
        kwargs["permissive_uid"] = True
    kinds = [cls.__name__ for cls in type(query).__mro__]
    if "RelationalQuery" in kinds:
        return RelationalQuery(**kwargs)
    if "HierarchicalQuery" in kinds:
        return HierarchicalQuery(**kwargs)
    try:
        return HierarchicalQuery(**kwargs)
    except InvalidQueryError:
        return RelationalQuery(**kwargs)

"""The query model's values: levels, UIDs, text, dates, keys and their encoding (pure).

Every converter and check a query field goes through when a query is built
(:mod:`aqido.query` holds the query classes); each raises
:class:`~aqido.errors.InvalidQueryError` naming the field and how to fix it.
"""

from __future__ import annotations

import datetime as _dt
import enum
import functools
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from aqido import dictionary
from aqido._lazy import lazy_pattern
from aqido._query_ranges import check_range_value
from aqido.errors import InvalidQueryError, QueryTypeError


class QueryLevel(str, enum.Enum):
    """The information-model level a query searches: study, series or instance."""

    STUDY = "STUDY"
    SERIES = "SERIES"
    INSTANCE = "INSTANCE"

    def __str__(self) -> str:
        """Return the plain value (``"STUDY"``)."""
        return self.value


# --------------------------------------------------------------------------- values

_UID = lazy_pattern(globals(), "_UID", r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_UID_MAX = 64
#: ``permissive_uid=True``: what is safe, unencoded, in a URL path segment and a query value
#: (RFC 3986 unreserved characters), at most 128 characters and not only dots.
_PERMISSIVE_UID = lazy_pattern(globals(), "_PERMISSIVE_UID", r"[A-Za-z0-9._~-]{1,128}")
#: The longest UID accepted with ``permissive_uid=True``.
PERMISSIVE_UID_MAX = 128
#: A date as text: ``YYYYMMDD`` or ``YYYY-MM-DD`` (ASCII digits).
_DATE_TEXT = lazy_pattern(globals(), "_DATE_TEXT", r"[0-9]{4}(?:[0-9]{4}|-[0-9]{2}-[0-9]{2})")
_CONTROL = lazy_pattern(globals(), "_CONTROL", r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = lazy_pattern(globals(), "_SURROGATE", "[\ud800-\udfff]")
# Bytes sent as they are; everything else is percent-encoded.  Printable ASCII
# minus the five characters that change query-string structure (& # + = %) and
# space.  In particular the DICOM matching characters ^ * ? , - . / : stay raw.
_RAW = frozenset(chr(c) for c in range(0x21, 0x7F) if chr(c) not in {"%", "&", "#", "+", "="})


def is_valid_uid(value: object) -> bool:
    """Return whether ``value`` is a single valid DICOM UID (PS3.5 9.1).

    A UID is digits and dots, at most 64 characters, with no empty component
    and no leading zero in a component (``"0"`` itself is fine):
    ``^(0|[1-9]\\d*)(\\.(0|[1-9]\\d*))*$``.  Anything that is not a ``str``
    (including ``None``) is not a UID; no padding is stripped here.
    """
    return (
        isinstance(value, str)
        and len(value) <= _UID_MAX
        and value.isascii()
        and _UID.fullmatch(value) is not None
    )


def is_permissive_uid(value: object) -> bool:
    """Return whether ``value`` is accepted as a UID with ``permissive_uid=True``.

    Looser than :func:`is_valid_uid`, for archives whose UIDs do not conform
    to PS3.5 (leading zeros, letters): 1 to 128 (:data:`PERMISSIVE_UID_MAX`)
    characters among ``A-Z a-z 0-9 . - _ ~`` (RFC 3986's unreserved set, which
    needs no encoding in a URL path segment or a query value), and not only
    dots (``.`` and ``..`` would change the path).  Every valid UID is accepted.
    """
    return (
        isinstance(value, str)
        and _PERMISSIVE_UID.fullmatch(value) is not None
        and value.strip(".") != ""
    )


def _check_text(field: str, value: str) -> str:
    match = _CONTROL.search(value)
    if match is not None:
        raise InvalidQueryError(
            f"{field}: control character {match.group()!r} at position {match.start()} in "
            f"{value!r}; remove it (control characters, CR and LF are never sent)"
        )
    if not value.isascii() and _SURROGATE.search(value) is not None:
        raise InvalidQueryError(
            f"{field}: {value!r} contains a lone surrogate, which has no UTF-8 form; "
            "pass properly decoded text"
        )
    return value


def encode_query_value(value: str) -> str:
    """Percent-encode one query-string key or value the way aqido sends it.

    Only what must be escaped to keep the query string unambiguous is escaped:
    ``%`` ``&`` ``#`` ``+`` ``=``, space and every non-ASCII character (as
    UTF-8 bytes, ``%C3%BC``).  The DICOM matching characters ``^ * ? , - . / :``
    and the other printable ASCII characters are sent as they are, because some
    servers (Orthanc 1.10) do not percent-decode QIDO values.  The result
    round-trips through :func:`urllib.parse.unquote` (not ``unquote_plus``).

    Raises:
        InvalidQueryError: ``value`` contains a control character (C0, DEL,
            C1, including CR and LF) or a lone surrogate.
    """
    if not isinstance(value, str):
        raise InvalidQueryError(f"query value {value!r} is not a str; pass text")
    _check_text("query value", value)
    if all(c in _RAW for c in value):
        return value
    return "".join(
        c if c in _RAW else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in value
    )


# --------------------------------------------------------------------------- converters


def _to_text(field: str, value: object, *, joinable: bool) -> str:
    """Normalise a match value: ``None`` → ``""``; a sequence → comma-joined text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return _check_text(field, value)
    if joinable and isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        items = list(value)
        for item in items:
            if not isinstance(item, str):
                raise InvalidQueryError(
                    f"{field}: list item {item!r} is not a str; pass strings such as 'CT'"
                )
            if "," in item or item == "":
                raise InvalidQueryError(
                    f"{field}: list item {item!r} is empty or contains ','; a list is sent "
                    "comma-separated, so give each value separately and non-empty"
                )
            _check_text(field, item)
        return ",".join(items)
    kind = "a str or a list of str" if joinable else "a str"
    raise InvalidQueryError(f"{field}: {value!r} is not {kind}")


def _to_uid(field: str, value: object) -> str:
    """Normalise a UID (or UID list) field; strips the DICOM padding (trailing NUL/space).

    The UID syntax is checked afterwards (:func:`check_uid_list`), strictly or
    permissively as the query's ``permissive_uid`` says.
    """
    if isinstance(value, str):
        value = value.rstrip("\x00 ")
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        value = [v.rstrip("\x00 ") if isinstance(v, str) else v for v in value]
    return _to_text(field, value, joinable=True)


def check_uid_list(field: str, text: str, permissive: bool) -> None:
    """Raise unless every UID of the comma-separated ``text`` is valid (or permissive-safe)."""
    for uid in text.split(","):
        if permissive:
            if not is_permissive_uid(uid):
                raise InvalidQueryError(
                    f"{field}: {uid!r} is not usable as a UID, even with permissive_uid=True "
                    f"(the UID {uid!r} must match regex '{_PERMISSIVE_UID.pattern}': letters, "
                    "digits, '.', '-', '_' and '~', at most 128 characters, not only dots; "
                    "several UIDs are separated by ',')"
                )
        elif not is_valid_uid(uid):
            raise InvalidQueryError(
                f"{field}: {uid!r} is not a valid DICOM UID (the UID {uid!r} must match regex "
                f"'{_UID.pattern}': digits and dots, no leading zeros in a component, no "
                "wildcards, at most 64 characters; several UIDs are separated by ','); for an "
                "archive whose UIDs do not conform, pass permissive_uid=True"
            )


def conv_study_uid(value: str | Sequence[str] | None) -> str:
    return _to_uid("StudyInstanceUID", value)


def conv_series_uid(value: str | Sequence[str] | None) -> str:
    return _to_uid("SeriesInstanceUID", value)


def conv_sop_uid(value: str | Sequence[str] | None) -> str:
    return _to_uid("SOPInstanceUID", value)


def conv_patient_name(value: str | None) -> str:
    return _to_text("PatientName", value, joinable=False)


def conv_patient_id(value: str | None) -> str:
    return _to_text("PatientID", value, joinable=False)


def conv_accession(value: str | None) -> str:
    return _to_text("AccessionNumber", value, joinable=False)


def conv_modalities(value: str | Sequence[str] | None) -> str:
    return _to_text("ModalitiesInStudy", value, joinable=True)


def conv_modality(value: str | Sequence[str] | None) -> str:
    return _to_text("Modality", value, joinable=True)


def conv_study_description(value: str | None) -> str:
    return _to_text("StudyDescription", value, joinable=False)


def conv_series_description(value: str | None) -> str:
    return _to_text("SeriesDescription", value, joinable=False)


def _to_date(field: str, value: object) -> _dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        # The whole form first: strptime alone reads "202411" as 2024-01-01.
        if _DATE_TEXT.fullmatch(text) is not None:
            digits = text.replace("-", "")
            try:
                return _dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
            except ValueError:
                pass
        elif _DATE_TEXT.fullmatch(text[:10]) is not None and text[10:11] in ("T", " "):
            try:  # an ISO date and time: its day
                return _dt.datetime.fromisoformat(text).date()
            except ValueError:
                pass
    raise InvalidQueryError(
        f"{field}: {value!r} is not a date; pass a datetime.date, a datetime.datetime "
        "or a string such as '2024-01-31' or '20240131'"
    )


def conv_min_date(value: _dt.date | _dt.datetime | str | None) -> _dt.date | None:
    return _to_date("min_study_date", value)


def conv_max_date(value: _dt.date | _dt.datetime | str | None) -> _dt.date | None:
    return _to_date("max_study_date", value)


def conv_level(value: QueryLevel | str) -> QueryLevel:
    raw = getattr(value, "value", value)
    if isinstance(raw, str):
        try:
            return QueryLevel(raw.upper())
        except ValueError:
            pass
    raise InvalidQueryError(
        f"query_level: {value!r} is not a query level; use QueryLevel.STUDY, "
        "QueryLevel.SERIES or QueryLevel.INSTANCE"
    )


def normalise_key(field: str, key: object) -> tuple[str, tuple[int, ...], str | None]:
    """Check an attribute key; return (normalised key, tag path, VR of the last element).

    A key is a PS3.6 keyword, an 8-hex-digit tag (uppercased) or a ``.``-joined
    sequence path of those (``RequestAttributesSequence.ScheduledProcedureStepID``).
    """
    if not isinstance(key, str) or not key:
        raise InvalidQueryError(
            f"{field}: {key!r} is not an attribute name; use a DICOM keyword such as "
            "'PatientBirthDate' or an 8-hex-digit tag such as '00100030'"
        )
    parts: list[str] = []
    tags: list[int] = []
    vr: str | None = None
    steps = key.split(".")
    for i, step in enumerate(steps):
        try:
            tag, _keyword = dictionary.resolve(step)
        except ValueError:
            hint = (
                "tags are exactly 8 hex digits such as '00100010'"
                if re.fullmatch(r"[0-9A-Fa-f]+", step)
                else "check the spelling against the DICOM dictionary (PS3.6), "
                "keywords are case-sensitive, e.g. 'PatientName'"
            )
            where = f" in {key!r}" if len(steps) > 1 else ""
            raise InvalidQueryError(
                f"{field}: {step!r}{where} is not a DICOM keyword nor an 8-hex-digit tag; {hint}"
            ) from None
        vr = dictionary.vr_for(tag)
        if i < len(steps) - 1 and vr not in (None, "SQ"):
            raise InvalidQueryError(
                f"{field}: {step!r} in {key!r} is not a sequence (VR {vr}); only sequence "
                "attributes can be followed by '.'"
            )
        parts.append(step.upper() if dictionary.is_tag_key(step) else step)
        tags.append(tag)
    return ".".join(parts), tuple(tags), vr


def _items(field: str, value: object, kind: str) -> Iterable[Any]:
    """``value``'s items, or :class:`~aqido.errors.QueryTypeError` if it is not a collection.

    ``bytes`` are refused too: iterating them gives ints, not what was meant.
    """
    if isinstance(value, Iterable) and not isinstance(value, bytes | bytearray):
        return value
    raise QueryTypeError(f"{field}: {value!r} is not {kind}")


def conv_include_fields(value: Iterable[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items: list[object] = (
        [value]
        if isinstance(value, str)
        else list(_items("include_fields", value, "a list of keywords or tags"))
    )
    out: list[str] = []
    seen: set[tuple[int, ...]] = set()
    for item in items:
        if isinstance(item, str) and item.lower() == "all":
            if "all" not in out:
                out.append("all")
            continue
        key, tags, _vr = normalise_key("include_fields", item)
        if tags not in seen:
            seen.add(tags)
            out.append(key)
    if "all" in out and len(out) > 1:
        raise InvalidQueryError(
            "include_fields: 'all' cannot be combined with other attributes "
            f"({', '.join(k for k in out if k != 'all')}); pass either ['all'] or a list "
            "of attributes"
        )
    return tuple(out)


_FilterInput = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str | Sequence[str]]]

_RANGE_VRS = frozenset({"DA", "TM", "DT"})
#: VRs matched by numeric equality (:data:`aqido.matching.NUMERIC_VRS`): values are numbers.
_NUMBER_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})
#: A number as PS3.5 writes one (the DS text, padding allowed): no ``nan``, ``inf``, ``1_000``.
_NUMBER = lazy_pattern(
    globals(),
    "_NUMBER",
    r" *[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)? *",
    re.ASCII,
)


def conv_filters(value: _FilterInput | None) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    raw: object = value
    if isinstance(raw, str):
        raise InvalidQueryError(
            f"filters: {value!r} is not a mapping; pass a dict such as "
            "{'PatientBirthDate': '19700101'}"
        )
    pairs: Iterable[Any] = (
        value.items()
        if isinstance(value, Mapping)
        else _items("filters", value, "a mapping; pass a dict of attribute → value")
    )
    by_tags: dict[tuple[int, ...], tuple[str, str]] = {}
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise InvalidQueryError(
                f"filters: {pair!r} is not a (key, value) pair; pass a dict of attribute → value"
            )
        raw_key, raw_value = pair
        key, tags, vr = normalise_key("filters", raw_key)
        if tags in by_tags:
            raise InvalidQueryError(
                f"filters: {raw_key!r} and {by_tags[tags][0]!r} are the same attribute; "
                "give it once"
            )
        label = f"filters[{key!r}]"
        if vr == "UI":
            text = _to_uid(label, raw_value)
        else:
            text = _to_text(label, raw_value, joinable=True)
        if text == "":
            raise InvalidQueryError(
                f"{label}: the value is empty; to have the attribute returned, "
                "list it in include_fields instead"
            )
        if vr in _RANGE_VRS:
            check_range_value(key, vr, text)
        elif vr == "AS" and ("*" in text or "?" in text):
            raise InvalidQueryError(
                f"{label}: {text!r} has a wildcard, and {key} (VR AS) is matched as a whole "
                "value (PS3.4 C.2.2.2.4 allows no wildcards in an age); give an age such "
                "as '045Y' (several are separated by ',')"
            )
        elif vr in _NUMBER_VRS:
            for item in text.split(","):
                if _NUMBER.fullmatch(item) is None:
                    raise InvalidQueryError(
                        f"{label}: {item!r} in {text!r} is not a number, and {key} (VR {vr}) "
                        "is matched numerically; give a number such as '3' or '72.5' "
                        "(no wildcards; several are separated by ',')"
                    )
        by_tags[tags] = (key, text)
    return tuple(by_tags[t] for t in sorted(by_tags))


#: Parameters aqido sets itself (compared in lower case): never accepted in ``extra_params``.
RESERVED_PARAMS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})

_ExtraInput = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str | Sequence[str]]]


@functools.cache
def _keywords_by_lower() -> dict[str, str]:
    """Lower-cased keyword → keyword, for the attributes a query can match (not group 0000).

    A server may read ``patientid`` as ``PatientID``: sent as a vendor parameter
    next to the query's own ``PatientID``, the attribute would go twice with two values.
    """
    by_keyword = dictionary._tables()[1]
    return {k.lower(): k for k, tag in by_keyword.items() if tag >> 16}


def _check_param_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidQueryError(
            f"extra_params: {name!r} is not a parameter name; pass a non-empty str"
        )
    _check_text("extra_params", name)
    if name.lower() in RESERVED_PARAMS:
        raise InvalidQueryError(
            f"extra_params: {name!r} is a parameter aqido sets itself; use the query's "
            "limit=, offset=, include_fields= or fuzzymatching= instead (to page, "
            "iter_search's page_size=)"
        )
    try:
        key = normalise_key("extra_params", name)[0]
    except InvalidQueryError:
        key = _keywords_by_lower().get(name.lower(), "")
        if not key:
            return name  # not a DICOM attribute: a vendor-specific parameter
    raise InvalidQueryError(
        f"extra_params: {name!r} is a DICOM attribute; match it with the query's named field "
        f"or filters={{{key!r}: ...}} (extra_params is for parameters that are not attributes)"
    )


def conv_extra_params(value: _ExtraInput | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Normalise ``extra_params`` to ``((name, (value, ...)), ...)`` in the order given."""
    if not value:
        return ()
    raw: object = value
    if isinstance(raw, str | bytes):
        raise InvalidQueryError(
            f"extra_params: {value!r} is not a mapping; pass a dict such as "
            "{'key1': ['value1', 'value2'], 'key2': 'value3'}"
        )
    pairs: Iterable[Any] = (
        value.items()
        if isinstance(value, Mapping)
        else _items("extra_params", value, "a mapping; pass a dict of name → value or [values]")
    )
    grouped: dict[str, list[str]] = {}
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise InvalidQueryError(
                f"extra_params: {pair!r} is not a (name, value) pair; pass a dict of "
                "name → value or [values]"
            )
        name = _check_param_name(pair[0])
        values: list[object] = (
            [pair[1]]
            if isinstance(pair[1], str)
            else list(pair[1])
            if isinstance(pair[1], list | tuple)
            else [pair[1]]
        )
        if not values:
            raise InvalidQueryError(
                f"extra_params[{name!r}]: no value; give a str or a non-empty list of str"
            )
        for item in values:
            if not isinstance(item, str):
                raise QueryTypeError(
                    f"extra_params[{name!r}]: {item!r} is not a str; pass a str or a list "
                    "of str (write numbers as text, e.g. '5')"
                )
            _check_text(f"extra_params[{name!r}]", item)
        grouped.setdefault(name, []).extend(values)  # type: ignore[arg-type]
    return tuple((name, tuple(items)) for name, items in grouped.items())


def check_bool(instance: object, attribute: attrs.Attribute[bool], value: object) -> None:
    if not isinstance(value, bool):
        raise QueryTypeError(f"{attribute.name}: {value!r} is not a bool; pass True or False")


#: The largest ``limit``/``offset``: a signed 64-bit int, the widest a server reads (and
#: far below the 4300 digits past which Python refuses to write an int as text).
_COUNT_MAX = 2**63 - 1


def check_count(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        # a wrong type ('5', 2.0, True) is a TypeError too, as dicomweb-client raises for it
        raise QueryTypeError(
            f"{attribute.name}: {value!r} is not a non-negative int; pass 0 (not sent) "
            "or a positive number"
        )
    if not 0 <= value <= _COUNT_MAX:
        shown = repr(value) if abs(value) <= _COUNT_MAX else f"a {value.bit_length()}-bit int"
        problem, fix = (
            ("is more than a server reads", f"pass at most {_COUNT_MAX} (2**63 - 1)")
            if value > 0
            else ("is not a non-negative int", "pass 0 (not sent) or a positive number")
        )
        raise InvalidQueryError(f"{attribute.name}: {shown} {problem}; {fix}")


#: Names other libraries use for a query field (dicomweb-client's arguments, QIDO parameters).
FIELD_ALIASES = {
    "fields": "include_fields",
    "includefield": "include_fields",
    "include_field": "include_fields",
    "search_filters": "filters",
    "additional_params": "extra_params",
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "sop_instance_uid": "SOPInstanceUID",
    "permissive_uids": "permissive_uid",
    "level": "query_level",
    "studydate": "min_study_date",
}

#: Named query fields that are DICOM attributes (dicomtrolley's names), in the order their
#: parameters are sent.
ATTRIBUTE_FIELDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "ModalitiesInStudy",
    "Modality",
    "StudyDescription",
    "SeriesDescription",
)
#: The values of :data:`ATTRIBUTE_FIELDS` of a query, in one call (a crawl renders a query
#: per request).
attribute_values = operator.attrgetter(*ATTRIBUTE_FIELDS)

"""QIDO-RS attribute matching (PS3.4 C.2.2.2, PS3.18 8.3.4) over DICOM JSON datasets.

The one matcher of aqido: :class:`~aqido.testing.FakeArchive` answers searches
with it, and the client filters the results of servers that do not match as
the standard says (:mod:`aqido.plan`).  Pure: no I/O, nothing heavy imported.

The rules, for a match value ``v`` of an attribute with value representation
``vr`` (:func:`compile_value`):

- **universal**: an empty ``v`` (and ``*`` alone, where it is a wildcard) matches
  every entity, whether the attribute is present or not;
- **single value**: every other form needs a stored value: an entity whose
  attribute is absent or empty never matches.  Strings match the whole value,
  case-sensitively (:attr:`MatchOptions.case_sensitive`; PN has its own
  :attr:`MatchOptions.pn_case_sensitive`, as the standard lets a server ignore
  case for names; ignored case is folded one character at a time, so ``ß``
  is not ``SS``, with or without wildcards); numbers (IS, DS, US...) compare
  numerically and exactly (integers beyond 2**53 too);
- **wildcards** ``*`` (any run, also empty) and ``?`` (exactly one character),
  in string VRs only (AE, CS, LO, LT, PN, SH, ST, UC, UT); in AS and UR they
  are characters like any other (PS3.4 C.2.2.2.4);
- **lists**: ``a,b`` is any of the values: List of UID Matching for UI, and
  for other VRs the value list most servers accept (``ModalitiesInStudy=CT,MR``);
- **ranges** ``a-b``, ``-b``, ``a-`` for DA, TM and DT, inclusive.  A bound
  with less precision covers its whole span (``-1300`` includes ``130059``,
  ``2024-2025`` for a DA is two whole years), and so does a single DA, TM or
  DT value (``12`` for a TM is 12:00 to 12:59:59.999999, ``2024`` for a DA
  the year), as dcm4chee matches them;
  TM is compared within one day, so ``2200-0200`` matches nothing; DT values
  are compared as instants (fractions too), in UTC when the stored value and
  the bound both carry an offset, as written otherwise; a stored value of
  less precision is its first instant;
- **multi-valued attributes** match when any of their values matches;
- **padding**: a stored value is compared as the results show it, without its
  NUL and space padding (leading too, except for PN and the text VRs ST, LT,
  UT, UC and UR); a value that cannot be read (a ``Value`` that is not an
  array, a PN group that is not a string) matches nothing;
- **PN** is matched against the whole value (``Yamada^Tarou=山田^太郎``) and,
  by default, against each component group on its own (``山田*``);
- **sequences**: a key path ``Seq.Attr`` matches when any item's ``Attr`` does.

A malformed value (``2024-13-45`` for a DA, ``abc`` for an IS, a bare ``-``,
an empty item in a list of DA, TM or DT values)
raises :class:`~aqido.errors.InvalidQueryError`, or matches nothing with
``strict_values=False`` (what some servers answer).  The other options of
:class:`MatchOptions` emulate servers that match differently (used by
:class:`~aqido.testing.FakeArchive`); their defaults are the standard.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import attrs

from aqido import dictionary
from aqido._temporal import dt_in_range, dt_keys, temporal_key
from aqido.errors import InvalidQueryError

if TYPE_CHECKING:  # pragma: no cover
    from aqido.profile import ServerProfile

__all__ = [
    "SERIES_ATTRIBUTES",
    "STANDARD",
    "STUDY_ATTRIBUTES",
    "Criterion",
    "ElementPredicate",
    "MatchOptions",
    "attribute_level",
    "compile_value",
    "element_strings",
    "filter_datasets",
    "is_universal",
    "match_form",
    "match_path",
    "matches_element",
]

#: A compiled match value: does this stored DICOM JSON element match?
ElementPredicate = Callable[[Mapping[str, Any]], bool]

#: String VRs: matched as text (case, padding, single value matching options).
STRING_VRS = frozenset({"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
#: VRs where ``*`` and ``?`` are wildcards (PS3.4 C.2.2.2.4): not AS (excluded by the
#: standard) nor UR (a URI holds ``*`` and ``?`` as characters), where they are literal.
WILDCARD_VRS = STRING_VRS - {"AS", "UR"}
#: VRs matched by numeric equality.
NUMERIC_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})
#: VRs where ``a-b`` is a range (PS3.4 C.2.2.2.5).
RANGE_VRS = frozenset({"DA", "TM", "DT"})

#: The forms a match value takes (:func:`match_form`).
MatchForm = Literal["universal", "single", "wildcard", "list", "range", "open_range"]


@attrs.frozen(kw_only=True)
class MatchOptions:
    """How to match: the defaults are the standard; the rest emulates servers in the wild."""

    #: Single values and wildcards of string VRs other than PN are case-sensitive.
    case_sensitive: bool = True
    #: PN values are matched case-sensitively (PS3.4 lets a server ignore case for PN).
    pn_case_sensitive: bool = True
    #: A PN value also matches on each component group alone (``山田*`` finds
    #: ``Yamada^Tarou=山田^太郎``); ``False``: the whole value only.
    pn_groups: bool = True
    #: How a single string value (no wildcard) is compared: ``"exact"`` (the standard),
    #: or as a prefix or substring of the stored value (servers that match too loosely).
    single_value_matching: Literal["exact", "prefix", "substring"] = "exact"
    #: ``*`` is a wildcard (``False``: a literal character).
    wildcard_star: bool = True
    #: ``?`` is a wildcard (``False``: a literal character).
    wildcard_question: bool = True
    #: ``a,b`` in a UI value is a list of UIDs (``False``: one literal value).
    uid_lists: bool = True
    #: ``a,b`` in other values is a list of values (``False``: one literal value).
    value_lists: bool = True
    #: ``d1-d2`` is a closed range for DA and DT (``False``: a literal value).
    date_ranges: bool = True
    #: ``-d`` and ``d-`` are open ranges for DA and DT (``False``: a literal value).
    open_date_ranges: bool = True
    #: ``t1-t2`` (and open forms) are ranges for TM (``False``: a literal value).
    time_ranges: bool = True
    #: A malformed value raises ``InvalidQueryError`` (``False``: it matches nothing).
    strict_values: bool = True
    #: A single DA/TM/DT value (not a range) is the span its precision covers
    #: (``StudyTime=12``: 12:00 to 12:59:59.999999); ``False``: compared as text
    #: (Orthanc).  aqido sends such a value as the range it covers (:mod:`aqido.plan`).
    temporal_spans: bool = True
    #: Ranges compare the stored text (Orthanc): ``-d`` matches an empty value, ``0305`` is
    #: not in ``030500-``.  Not the standard: for emulating such a server.
    temporal_text: bool = False

    @classmethod
    def from_profile(cls, profile: ServerProfile, *, pn_groups: bool = True) -> MatchOptions:
        """The matching a server with ``profile`` does (to emulate it, e.g. in FakeArchive)."""
        return cls(
            case_sensitive=profile.case_sensitive,
            pn_case_sensitive=profile.pn_case_sensitive,
            pn_groups=pn_groups,
            single_value_matching=profile.single_value_matching,
            wildcard_star=profile.wildcard_star,
            wildcard_question=profile.wildcard_question,
            uid_lists=profile.uid_lists,
            value_lists=profile.value_lists,
            date_ranges=profile.date_ranges,
            open_date_ranges=profile.open_date_ranges,
            time_ranges=profile.time_ranges,
            strict_values=profile.bad_request_status == 400,
            temporal_text=profile.temporal_text,
        )


#: The standard's matching.
STANDARD = MatchOptions()


# --- levels ---------------------------------------------------------------------------------

#: Attributes of the study level besides the Patient group (0010,xxxx): Patient Study and
#: General Study modules, and what archives compute per study.
STUDY_ATTRIBUTES = frozenset(
    {
        "00080020",  # StudyDate
        "00080030",  # StudyTime
        "00080050",  # AccessionNumber
        "00080051",  # IssuerOfAccessionNumberSequence
        "00080090",  # ReferringPhysicianName
        "00080096",  # ReferringPhysicianIdentificationSequence
        "00080061",  # ModalitiesInStudy
        "00081030",  # StudyDescription
        "00081032",  # ProcedureCodeSequence
        "00081048",  # PhysiciansOfRecord
        "00081060",  # NameOfPhysiciansReadingStudy
        "00081080",  # AdmittingDiagnosesDescription
        "00081110",  # ReferencedStudySequence
        "0020000D",  # StudyInstanceUID
        "00200010",  # StudyID
        "00201206",  # NumberOfStudyRelatedSeries
        "00201208",  # NumberOfStudyRelatedInstances
        "00321032",  # RequestingPhysician
        "00321060",  # RequestedProcedureDescription
        "00401001",  # RequestedProcedureID (study level in Orthanc)
    }
)
#: Attributes of the series level (General Series, Frame of Reference, General Equipment).
SERIES_ATTRIBUTES = frozenset(
    {
        "00080021",  # SeriesDate
        "00080031",  # SeriesTime
        "00080060",  # Modality
        "00080070",  # Manufacturer
        "00080080",  # InstitutionName
        "00080081",  # InstitutionAddress
        "00081010",  # StationName
        "0008103E",  # SeriesDescription
        "00081040",  # InstitutionalDepartmentName
        "00081050",  # PerformingPhysicianName
        "00081070",  # OperatorsName
        "00081090",  # ManufacturerModelName
        "00180015",  # BodyPartExamined
        "00181030",  # ProtocolName
        "00185100",  # PatientPosition
        "0020000E",  # SeriesInstanceUID
        "00200011",  # SeriesNumber
        "00200052",  # FrameOfReferenceUID
        "00200060",  # Laterality
        "00201209",  # NumberOfSeriesRelatedInstances
        "00400244",  # PerformedProcedureStepStartDate
        "00400245",  # PerformedProcedureStepStartTime
        "00400253",  # PerformedProcedureStepID
        "00400254",  # PerformedProcedureStepDescription
        "00400275",  # RequestAttributesSequence
    }
)


def attribute_level(key: str) -> int:
    """The level of an attribute (a tag key): 0 study (or patient), 1 series, 2 instance."""
    if key in STUDY_ATTRIBUTES or key.startswith("0010"):
        return 0
    if key in SERIES_ATTRIBUTES:
        return 1
    return 2


# --- stored values ---------------------------------------------------------------------------


#: What DICOM pads values with (NUL, space), as :data:`aqido.values.STRIP`.
_PADDING = "\x00 "
#: String VRs whose leading spaces are significant, as :data:`aqido.values.TEXT_VRS`: only
#: trailing padding is stripped from them (and from PN, group by group); every other
#: value is stripped at both ends, as the results layer reads it.
_TEXT_VRS = frozenset({"ST", "LT", "UT", "UC", "UR"})


def _stored_values(elem: object) -> Sequence[Any]:
    """The ``Value`` array of a stored element; ``()`` when absent, empty or malformed.

    A server may send anything: an element that is not an object, or a
    ``Value`` that is not an array, holds no value that can be matched.
    """
    if not isinstance(elem, Mapping):
        return ()
    values = elem.get("Value")
    return values if isinstance(values, list | tuple) else ()


def element_strings(elem: Mapping[str, Any] | None, *, pn_groups: bool = True) -> list[str]:
    """The stored values of a DICOM JSON element as strings (``[]`` when absent or empty).

    A PN value gives its whole value (``Yamada^Tarou=山田^太郎``, trailing
    empty groups dropped) and, with ``pn_groups``, each non-empty group.
    Padding (NUL and space) is stripped as the results layer strips it: at
    both ends, but only trailing from PN groups and from the text VRs (ST, LT,
    UT, UC, UR), whose leading spaces are significant; ``null`` values are skipped,
    and so are values that cannot be read (a PN group that is not a string, a
    nested array); a malformed element (not an object, a ``Value`` that is
    not an array) has no values.
    """
    values = _stored_values(elem)
    if not values or not isinstance(elem, Mapping):
        return []
    vr = elem.get("vr")
    is_pn = vr == "PN"
    text_vr = isinstance(vr, str) and vr in _TEXT_VRS
    out: list[str] = []
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, dict):  # PN
            groups = [v.get(k) or "" for k in ("Alphabetic", "Ideographic", "Phonetic")]
            if not all(isinstance(g, str) for g in groups):
                continue  # unreadable (a number, a list...): no value to match
            groups = [g.rstrip(_PADDING) for g in groups]
        elif is_pn and isinstance(v, str):  # some servers send PN as a bare string
            groups = [g.rstrip(_PADDING) for g in v.split("=")]
        elif isinstance(v, str | int | float):
            text = str(v).rstrip(_PADDING) if text_vr else str(v).strip(_PADDING)
            if text:
                out.append(text)
            continue
        else:  # a list or another JSON structure where a value belongs: unreadable
            continue
        full = "=".join(groups).rstrip("=")
        if full:
            out.append(full)
        if pn_groups:
            out.extend(g for g in groups if g and g != full)
    return out


# --- match values ------------------------------------------------------------------------------


def is_universal(value: str, vr: str, options: MatchOptions = STANDARD) -> bool:
    """Whether ``value`` is universal matching: empty, or ``*`` alone where ``*`` is a wildcard."""
    return value == "" or (value == "*" and vr in WILDCARD_VRS and options.wildcard_star)


def _is_range(value: str, vr: str) -> bool:
    if vr not in RANGE_VRS:
        return False
    if vr == "DT":  # '-' is also a negative offset: one range dash at most
        return value.count("-") == 1
    return "-" in value


def match_form(value: str, vr: str) -> MatchForm:
    """The form of a match value under the standard: universal, single, wildcard, list, range.

    A list wins over its items' forms (``CT,M*`` is a list); ``open_range`` is
    ``-d`` or ``d-``.
    """
    if is_universal(value, vr):
        return "universal"
    if "," in value:
        return "list"
    if _is_range(value, vr):
        low, _, high = value.partition("-")
        return "range" if low and high else "open_range"
    if vr in WILDCARD_VRS and ("*" in value or "?" in value):
        return "wildcard"
    return "single"


def _nothing(elem: Mapping[str, Any]) -> bool:
    """The predicate of a malformed value with ``strict_values=False``: matches nothing."""
    return False


def compile_value(
    value: str, vr: str | None, options: MatchOptions = STANDARD
) -> ElementPredicate | None:
    """Compile a match value for attributes of ``vr``; ``None`` means universal matching.

    Raises:
        InvalidQueryError: ``value`` is malformed for ``vr`` (with ``strict_values``).
    """
    vr = vr or "UN"
    if vr == "SQ":
        raise InvalidQueryError("a sequence can only be matched through one of its attributes")
    if is_universal(value, vr, options):
        return None
    lists = options.uid_lists if vr == "UI" else options.value_lists
    alternatives = value.split(",") if lists and "," in value else [value]
    if any(is_universal(alt, vr, options) for alt in alternatives if alt):
        return None  # a list is the OR of its values: one universal item makes it universal
    if vr == "UI":
        uids = frozenset(u.strip() for u in alternatives if u.strip())
        return lambda elem: any(v in uids for v in element_strings(elem))
    compiled: list[ElementPredicate] = []
    for alt in alternatives:
        try:
            compiled.append(_compile_single(alt, vr, options))
        except InvalidQueryError:
            if options.strict_values:
                raise
            compiled.append(_nothing)
    if len(compiled) == 1:
        return compiled[0]
    return lambda elem: any(pred(elem) for pred in compiled)


def _compile_single(alt: str, vr: str, options: MatchOptions) -> ElementPredicate:
    """One match value (no list) → a predicate on a stored element."""
    if vr in RANGE_VRS:
        return _compile_temporal(alt, vr, options)
    if vr in NUMERIC_VRS:
        return _compile_number(alt)
    is_pn = vr == "PN"
    groups = options.pn_groups
    case = options.pn_case_sensitive if is_pn else options.case_sensitive
    wild = vr in WILDCARD_VRS and (
        (options.wildcard_star and "*" in alt) or (options.wildcard_question and "?" in alt)
    )
    if wild or options.single_value_matching != "exact":
        pattern = _wildcard_regex(alt, options) if wild else re.escape(alt)
        if wild:
            pass  # a value with wildcards is matched as a pattern, even by loose servers
        elif options.single_value_matching == "prefix":
            pattern += ".*"
        elif options.single_value_matching == "substring":
            pattern = f".*{pattern}.*"
        rx = re.compile(pattern, re.DOTALL | (0 if case else re.IGNORECASE))
        return lambda elem: any(rx.fullmatch(s) for s in element_strings(elem, pn_groups=groups))
    if case:
        return lambda elem: alt in element_strings(elem, pn_groups=groups)
    # Case is ignored one character at a time, as with wildcards (``ß`` is not ``SS``).
    rx = re.compile(re.escape(alt), re.DOTALL | re.IGNORECASE)
    return lambda elem: any(rx.fullmatch(s) for s in element_strings(elem, pn_groups=groups))


def _wildcard_regex(alt: str, options: MatchOptions) -> str:
    parts = []
    for c in alt:
        if c == "*" and options.wildcard_star:
            parts.append(".*")
        elif c == "?" and options.wildcard_question:
            parts.append(".")
        else:
            parts.append(re.escape(c))
    return "".join(parts)


def _exact_number(text: str | int) -> Decimal | None:
    """A number as an exact Decimal; ``None`` when it is not one.

    An exponent beyond what a Decimal holds (``1e99999999999999999999999``, which
    the query accepts) reads as the float it rounds to (infinity, or zero).
    """
    try:
        return Decimal(text)
    except ArithmeticError:  # decimal.InvalidOperation
        pass
    try:
        return Decimal(float(text))
    except (ValueError, OverflowError):
        return None


def _compile_number(alt: str) -> ElementPredicate:
    """A numeric match value: equal to a stored number, compared exactly.

    Text and integers are compared as decimals, so integers beyond 2**53 (an SV,
    UV or long IS) and DS values that differ past a double's precision stay
    apart; a stored JSON float (FL, FD) is compared as the double it is.
    """
    target = _exact_number(alt)
    if target is None:
        raise InvalidQueryError(f"{alt!r} is not a number")
    if target.is_nan():  # equal to nothing
        return _nothing
    target_float = float(target)

    def numeric(elem: Mapping[str, Any]) -> bool:
        for v in _stored_values(elem):
            if isinstance(v, float):
                if v == target_float:
                    return True
            elif isinstance(v, int | str):
                number = _exact_number(v.strip(_PADDING) if isinstance(v, str) else v)
                if number is not None and not number.is_nan() and number == target:
                    return True
        return False

    return numeric


def _compile_temporal(alt: str, vr: str, options: MatchOptions) -> ElementPredicate:
    if alt == "-":
        raise InvalidQueryError("a bare '-' is not a valid range")
    if not alt:  # an empty list item ("20240101,"): no value at all, not every date
        raise InvalidQueryError(f"a list of {vr} values has an empty item")
    low_text, _, high_text = alt.partition("-")
    is_range = _is_range(alt, vr)
    if is_range:
        closed = bool(low_text and high_text)
        supported = options.date_ranges if closed else options.open_date_ranges
        supported = options.time_ranges if vr == "TM" else supported
        if not supported:  # the server reads it as one literal value: nothing has that text
            return lambda elem: any(s == alt for s in element_strings(elem))
    if not is_range and not options.temporal_spans:
        return lambda elem: any(s == alt for s in element_strings(elem))
    if not is_range:  # one value: the span its precision covers ("12" for TM: 12:00 to 12:59)
        low_text = high_text = alt
    if vr == "DT":
        lows = dt_keys(low_text, upper=False) if low_text else None
        highs = dt_keys(high_text, upper=True) if high_text else None
        if (low_text and lows is None) or (high_text and highs is None):
            raise InvalidQueryError(_malformed(alt, vr, is_range))
        if not (options.temporal_text and is_range):  # else the stored text, as below
            return lambda elem: any(dt_in_range(v, lows, highs) for v in element_strings(elem))
    low = temporal_key(low_text, vr, upper=False, partial=True) if low_text else ""
    high = temporal_key(high_text, vr, upper=True, partial=True) if high_text else "~"
    if low is None or high is None:
        raise InvalidQueryError(_malformed(alt, vr, is_range))

    def in_range(elem: Mapping[str, Any]) -> bool:
        for v in element_strings(elem):
            k = temporal_key(v, vr, upper=False)
            if k is not None and low <= k <= high:
                return True
        return False

    if options.temporal_text and is_range:  # the stored text, an empty value as ""
        return lambda elem: any(
            (not low_text or low_text <= s) and (not high_text or s <= high_text)
            for s in element_strings(elem) or [""]
        )
    return in_range


def _malformed(alt: str, vr: str, is_range: bool) -> str:
    """The message of a temporal match value that does not read as its VR."""
    return f"{alt!r} is not a valid {vr} {'range' if is_range else 'value'}"


def matches_element(
    elem: Mapping[str, Any] | None, value: str, vr: str | None, options: MatchOptions = STANDARD
) -> bool:
    """Whether a stored element (``None``: absent) matches ``value`` (one-off use)."""
    pred = compile_value(value, vr or (elem or {}).get("vr"), options)
    if pred is None:
        return True
    return elem is not None and pred(elem)


# --- keys and datasets -------------------------------------------------------------------------


def match_path(elem: Mapping[str, Any], path: Sequence[str], pred: ElementPredicate) -> bool:
    """Sequence matching: any item whose attribute at ``path`` matches."""
    for item in _stored_values(elem):
        if not isinstance(item, Mapping):
            continue
        inner = item.get(path[0])
        if inner is None:
            continue
        if len(path) == 1:
            if pred(inner):
                return True
        elif match_path(inner, path[1:], pred):
            return True
    return False


@attrs.frozen
class Criterion:
    """One match key of a query: a tag path, its match value and the VR of its last tag.

    ``path`` holds 8-hex-digit tag keys (``("00400275", "00400009")`` for a
    sequence path).  Build one from keywords with :meth:`of`.
    """

    path: tuple[str, ...]
    value: str
    vr: str

    @classmethod
    def of(cls, key: str, value: str) -> Criterion:
        """A criterion from a keyword, tag or ``.``-joined path (``"PatientName"``, ``"00100010"``).

        Raises:
            InvalidQueryError: an unknown keyword or tag.
        """
        tags: list[int] = []
        for step in key.split("."):
            try:
                tags.append(dictionary.resolve(step)[0])
            except (KeyError, ValueError):
                raise InvalidQueryError(f"{key!r} is not a DICOM keyword or tag") from None
        return cls(
            tuple(dictionary.tag_key(t) for t in tags), value, dictionary.vr_for(tags[-1]) or "UN"
        )

    @property
    def key(self) -> str:
        """The tag path as sent in a query (``"00100010"``, ``"00400275.00400009"``)."""
        return ".".join(self.path)

    def compile(self, options: MatchOptions = STANDARD) -> Callable[[Mapping[str, Any]], bool]:
        """A predicate on whole DICOM JSON datasets (raises for a malformed value)."""
        pred = compile_value(self.value, self.vr, options)
        first, rest = self.path[0], self.path[1:]
        if pred is None:
            return lambda dataset: True
        if not rest:

            def single(dataset: Mapping[str, Any]) -> bool:
                elem = dataset.get(first)
                return elem is not None and pred(elem)

            return single

        def nested(dataset: Mapping[str, Any]) -> bool:
            elem = dataset.get(first)
            return elem is not None and match_path(elem, rest, pred)

        return nested

    def matches(self, dataset: Mapping[str, Any], options: MatchOptions = STANDARD) -> bool:
        """Whether ``dataset`` (DICOM JSON) matches this key."""
        return self.compile(options)(dataset)


def filter_datasets(
    datasets: Iterable[Mapping[str, Any]],
    criteria: Iterable[Criterion],
    options: MatchOptions = STANDARD,
) -> list[Mapping[str, Any]]:
    """The datasets that match every criterion, in their order."""
    preds = [c.compile(options) for c in criteria]
    return [d for d in datasets if all(p(d) for p in preds)]

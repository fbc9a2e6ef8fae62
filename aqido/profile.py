"""``ServerProfile``: what a QIDO-RS archive really does, one frozen value.

A profile records, capability by capability, how an archive answers where
archives in the field differ from PS3.18 8.3.4 and PS3.4 C.2.2.2: whether it
percent-decodes query values, which matching forms it honours, how it pages
and caps, and how it says "nothing" or "bad request".  Every field defaults to
what the standard defines, so ``ServerProfile()`` is :meth:`ServerProfile.standard`.

Profiles are pure data: ``aqido probe`` / :meth:`AsyncQidoRS.probe` measure
one, :class:`aqido.testing.FakeArchive` emulates one, and the client uses one
to return the standard's answer from a server that does not give it.  They
round-trip through JSON with cattrs (:meth:`ServerProfile.to_json`,
:meth:`ServerProfile.from_json`, :meth:`ServerProfile.load`).

Capabilities are plain booleans where the question is "does the server do what
the standard says"; where servers differ in *how* they deviate, the field is a
small set of literal strings, the first of which is the standard behaviour.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs
import cattrs
from cattrs.v import format_exception

#: How a single value of a string VR is matched: ``"exact"`` is the standard.
SingleValueMatching = Literal["exact", "prefix", "substring"]
#: How the server answers ``fuzzymatching=true``: ``"warning"`` (literal matching plus
#: the standard's 299 Warning), ``"supported"`` (its own fuzzy matching),
#: ``"ignored"`` (as without it, no Warning) or ``"error"`` (4xx: aqido does not send it).
FuzzyMatching = Literal["warning", "supported", "ignored", "error"]
#: A repeated match key (``PatientID=a&PatientID=b``): ``"or"`` (any), ``"first"``,
#: ``"last"`` (one value wins), ``"error"`` (4xx).  The standard leaves it undefined;
#: ``"or"`` is what ``multiplevaluematching`` means.
RepeatedKeys = Literal["or", "first", "last", "error"]
#: What the server does with a match key it does not support: ``"error"`` (4xx),
#: ``"ignore"`` (leaves the key out: a wider answer), ``"empty"`` (matches nothing).
UnsupportedKeys = Literal["error", "ignore", "empty"]


def _notes(value: Iterable[str]) -> tuple[str, ...]:
    """``notes`` as a tuple (a list from JSON, or any iterable of strings)."""
    return tuple(value)


#: The keys ``aqido probe`` measures ranges on with their own checks (``date_ranges``...).
RANGE_PROBED = ("StudyDate", "StudyTime")


def _keywords(value: Iterable[str] | None) -> tuple[str, ...] | None:
    """``matched_keys`` or ``range_keys`` as a tuple (``None`` stays ``None``: every attribute)."""
    return None if value is None else tuple(value)


class _ImpossibleValue(ValueError):
    """A field's value no server can have (``max_results=-3``): refused, its message kept."""


def _cap(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """``max_results``: ``None`` (no cap) or a positive number of results (never a bool)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise _ImpossibleValue(
            f"{attribute.name} must be a positive number of results or None (no cap), not {value!r}"
        )


def _status(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A status field: an HTTP status code, three digits (100 to 999; never a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 999:
        raise _ImpossibleValue(
            f"{attribute.name} must be an HTTP status (100 to 999), not {value!r}"
        )


@attrs.frozen(kw_only=True)
class ServerProfile:
    """How one QIDO-RS archive behaves; every default is the standard's behaviour.

    Compare profiles with ``==``: :attr:`name` and :attr:`notes` take no part in
    equality, so a measured profile equals the preset it matches.
    """

    #: A label for people (``"standard"``, ``"orthanc-1.10"``, a URL); not compared.
    name: str = attrs.field(default="standard", eq=False)
    #: Free-form remarks (how it was measured, caveats); not compared.
    notes: tuple[str, ...] = attrs.field(default=(), eq=False, converter=_notes)

    # --- encoding ---
    #: The server percent-decodes query values (``Doe%5EJohn`` means ``Doe^John``).
    percent_decoding: bool = True
    #: Values with non-ASCII characters (sent as percent-encoded UTF-8) are matched;
    #: ``False``: the server reads the bytes otherwise (tiny_pacs: as Latin-1), so they
    #: match nothing and the client matches them locally.
    non_ascii_values: bool = True

    # --- matching (PS3.4 C.2.2.2) ---
    #: ``*`` matches any run of characters in string VRs.
    wildcard_star: bool = True
    #: ``?`` matches exactly one character in string VRs.
    wildcard_question: bool = True
    #: Single values of string VRs other than PN are matched case-sensitively.
    case_sensitive: bool = True
    #: PN values are matched case-sensitively (the standard lets a server ignore case).
    pn_case_sensitive: bool = True
    #: How a single value (no wildcard) of a string VR is matched.
    single_value_matching: SingleValueMatching = "exact"
    #: ``StudyInstanceUID=a,b`` matches either UID (List of UID Matching).
    uid_lists: bool = True
    #: ``ModalitiesInStudy=CT,MR`` matches either value (an extension most servers have).
    value_lists: bool = True
    #: How a repeated match key is treated.
    repeated_keys: RepeatedKeys = "or"
    #: Closed date ranges ``d1-d2`` on DA attributes.
    date_ranges: bool = True
    #: Open date ranges ``-d`` and ``d-`` on DA attributes.
    open_date_ranges: bool = True
    #: Time ranges ``t1-t2`` on TM attributes.
    time_ranges: bool = True
    #: The attributes (keywords) whose date, time and datetime ranges the server matches;
    #: ``None``: every one (as :attr:`date_ranges`, :attr:`open_date_ranges` and
    #: :attr:`time_ranges` say).  A range on another attribute (tiny_pacs refuses
    #: ``PatientBirthDate=19540101-`` with a 400) is left out of requests and matched by
    #: aqido.  ``aqido probe`` tries a PatientBirthDate range: where it fails, ranges are
    #: trusted only on :data:`RANGE_PROBED` (whose own checks are the fields above).
    range_keys: tuple[str, ...] | None = attrs.field(default=None, converter=_keywords)
    #: Dates and times are compared as text, not as instants (Orthanc): ``-d`` also finds
    #: entities whose value is empty (the empty string sorts first), and a stored ``0305``
    #: is not within ``030500-040000``.  aqido sends a time or datetime range as text
    #: comparison reads it right (``0305-040000.999999``, ``20100315-20100316``) and filters
    #: the answer (the empty values and the rest).
    temporal_text: bool = False
    #: What the server does with ``fuzzymatching=true``.
    fuzzy_matching: FuzzyMatching = "warning"
    #: What the server does with a match key it cannot match.
    unsupported_keys: UnsupportedKeys = "error"
    #: The attributes (keywords) the server matches as keys; ``None``: every attribute.
    #: A key outside the list is ignored, refused or matches nothing, as
    #: :attr:`unsupported_keys` says; the client leaves it out of requests and matches
    #: it locally.
    matched_keys: tuple[str, ...] | None = attrs.field(default=None, converter=_keywords)

    # --- returned attributes ---
    #: ``includefield=<keyword or tag>`` adds that attribute to the results.
    includefield: bool = True
    #: ``includefield=all`` adds every optional attribute the server has at that level.
    includefield_all: bool = True

    # --- resources (PS3.18 10.6) ---
    #: ``/series`` (all series, relational) is served.
    relational_series: bool = True
    #: ``/instances`` (all instances, relational) is served.
    relational_instances: bool = True
    #: ``/studies/{uid}/instances`` (a study's instances) is served.
    study_instances: bool = True

    # --- paging and caps (PS3.18 8.3.4.4) ---
    #: ``limit`` is honoured.
    limit: bool = True
    #: ``offset`` is honoured.
    offset: bool = True
    #: The most results one response holds without ``limit`` (``None``: no cap seen).
    max_results: int | None = attrs.field(default=None, validator=_cap)
    #: A capped response says so in a ``Warning: 299`` header with the remaining count.
    cap_warning: bool = True
    #: A capped response holds ``max_results + 1`` items (Orthanc's ``LimitFind*``).
    cap_plus_one: bool = False
    #: The cap is applied before ``offset``, so paging cannot reach past it.
    cap_before_offset: bool = False

    # --- statuses and negotiation ---
    #: The status of a search that matches nothing: 204 (standard) or 200 with ``[]``.
    empty_status: Literal[204, 200] = 204
    #: ``Accept: application/json`` is answered with DICOM JSON.
    json_accept: bool = True
    #: The status for malformed input (a bad date, ``limit=abc``): 400, or 200 when the
    #: server answers it as an empty match instead.
    bad_request_status: int = attrs.field(default=400, validator=_status)
    #: The status of ``/studies/{unknown}/series``: 404 (standard), or 200/204 when the
    #: server answers an unknown parent as "no results".
    unknown_parent_status: int = attrs.field(default=404, validator=_status)

    @classmethod
    def standard(cls) -> ServerProfile:
        """The behaviour PS3.18 and PS3.4 define: every field at its default."""
        return cls()

    @classmethod
    def orthanc(cls, *, max_results: int | None = None) -> ServerProfile:
        """Orthanc 1.10 with its DICOMweb plugin 1.7, as ``aqido probe`` measured it.

        ``max_results``: Orthanc's ``LimitFindResults`` (0/``None``, the default
        configuration, is no cap).  With a cap, Orthanc answers cap+1 studies with
        no Warning and applies the cap before ``offset`` (so paging cannot pass it).

        Measured by ``tests/integration/test_orthanc_probe.py`` (``probe()`` of the
        integration suite's Orthanc, 300 synthetic studies, equals this preset; and
        of an Orthanc with ``LimitFindResults=10`` equals ``orthanc(max_results=10)``).
        """
        capped: dict[str, Any] = {}
        if max_results:
            capped = {
                "max_results": max_results,
                "cap_warning": False,
                "cap_plus_one": True,
                "cap_before_offset": True,
            }
        return cls(
            name="orthanc-1.10",
            notes=(
                "Orthanc 1.10 + DICOMweb 1.7, measured by aqido probe (tests/integration/"
                "test_orthanc_probe.py)",
                "query values are not percent-decoded: ^ * ? , must be sent raw; values "
                "with spaces or non-ASCII text cannot be matched",
                "every string match ignores case, PatientID included",
                "dates and times are compared as text: a -d range also finds empty values, "
                "030500-040000 misses a stored 0305",
            ),
            percent_decoding=False,  # PatientName=%44%6F%65... does not find Doe
            case_sensitive=False,  # PatientID=pid000026 finds PID000026
            pn_case_sensitive=False,  # PatientName=sMITH^aNNA finds Smith^Anna
            repeated_keys="last",  # StudyInstanceUID=A&StudyInstanceUID=B finds B only
            fuzzy_matching="ignored",  # accepted, no Warning, nothing fuzzy matched
            unsupported_keys="ignore",  # AqidoNoSuchAttribute=1 finds A
            includefield_all=False,  # includefield=all adds nothing to the defaults
            temporal_text=True,  # StudyTime=072700.000000- misses 0727; -d finds empties
            empty_status=200,  # an unknown StudyInstanceUID: 200 []
            bad_request_status=200,  # StudyDate=notadate: 200 []
            unknown_parent_status=200,  # /studies/{unknown}/series: 200 []
            **capped,
        )

    @classmethod
    def tiny_pacs(cls) -> ServerProfile:
        """tiny_pacs 0.4 with tiny_pacs_dicomweb 0.1, as ``aqido probe`` measured it.

        Measured with ``aqido probe`` against tiny_pacs 0.4.1 (started by
        ``/work/shared/tinypacs/up.sh``, seeded with 1,100 studies by its
        ``seed.py``, the same generator as the Orthanc seed): non-ASCII values
        match nothing (the server reads the bytes as Latin-1), no wildcards, no
        lists (a comma list matches nothing), PatientName matched as a
        case-insensitive substring (other strings exactly, case-sensitively), no
        time ranges, no PatientBirthDate ranges (400), no relational paths, unknown
        keys ignored, and a silent cap
        of 1,000 studies per response that ``offset`` pages past.
        """
        return cls(
            name="tiny_pacs-0.4",
            notes=(
                "tiny_pacs 0.4.1 + tiny_pacs_dicomweb 0.1.0, measured by aqido probe "
                "on 1,100 studies",
                "single_value_matching is substring for PatientName only (AccessionNumber "
                "is matched exactly)",
                "a time range matches studies outside it (time_ranges=False)",
                "a PatientBirthDate range is refused with 400 (range_keys: StudyDate, "
                "StudyTime only)",
                "a non-ASCII value sent as percent-encoded UTF-8 matches nothing "
                "(non_ascii_values=False)",
            ),
            non_ascii_values=False,  # PatientName=O%27Brien^Se%C3%A1n: nothing
            wildcard_star=False,  # PatientName=Doe^* does not find Doe^John
            wildcard_question=False,  # PatientName=Doe^?ohn does not find Doe^John
            pn_case_sensitive=False,  # PatientName=dOE^jOHN finds Doe^John
            single_value_matching="substring",  # PatientName=oe^John finds Doe^John
            uid_lists=False,  # StudyInstanceUID=A,B: 204
            value_lists=False,  # AccessionNumber=a,b (and ModalitiesInStudy=CT,MR): 204
            repeated_keys="last",  # StudyInstanceUID=A&StudyInstanceUID=B finds B only
            time_ranges=False,  # StudyTime=080000-235959 finds a study at 070543
            range_keys=RANGE_PROBED,  # PatientBirthDate=19540316-19540318: 400
            fuzzy_matching="ignored",  # accepted, no Warning
            unsupported_keys="ignore",  # AqidoNoSuchAttribute=1 finds A
            # PatientSex, StudyID, StudyDescription, StudyTime, ReferringPhysicianName,
            # SeriesNumber and SeriesDescription are ignored (StudyInstanceUID=A&PatientSex=QZX
            # finds A; /studies/A/series?SeriesNumber=987654321 finds its series)
            matched_keys=(
                "AccessionNumber",
                "ModalitiesInStudy",
                "Modality",
                "PatientBirthDate",
                "PatientID",
                "PatientName",
                "SOPInstanceUID",
                "SeriesInstanceUID",
                "StudyDate",
                "StudyInstanceUID",
            ),
            includefield_all=False,  # includefield=all adds nothing
            relational_series=False,  # /series: 404
            relational_instances=False,  # /instances: 404
            study_instances=False,  # /studies/{A}/instances: 404
            max_results=1000,  # /studies: 1,000 of 1,100; offset=1000&limit=1 finds more
            cap_warning=False,  # no Warning header on that listing
            unknown_parent_status=204,  # /studies/{unknown}/series: 204
        )

    # --- JSON ---

    def to_dict(self) -> dict[str, Any]:
        """The profile as a JSON-ready dict (cattrs unstructure; every field, named)."""
        data: dict[str, Any] = _CONVERTER.unstructure(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerProfile:
        """Build a profile from :meth:`to_dict` output; unknown keys are refused.

        Raises ``ValueError`` naming the offending key(s) for malformed input,
        and for an impossible value (``max_results`` not a positive number or
        ``None``, a status field not an HTTP status), which the constructor refuses too.
        """
        try:
            return _CONVERTER.structure(dict(data), cls)
        except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
            if isinstance(exc, cattrs.BaseValidationError):
                errors = cattrs.transform_error(exc, format_exception=_format_error)
                detail = "; ".join(e.removesuffix(" @ $") for e in errors)
            else:
                detail = str(exc)
            raise ValueError(f"invalid server profile: {detail}") from exc

    def to_json(self, *, indent: int | None = 2) -> str:
        """The profile as a JSON document."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ServerProfile:
        """Parse a profile from :meth:`to_json` output (``ValueError`` when malformed)."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"invalid server profile: not JSON ({exc})") from exc
        except RecursionError:  # a corrupt file nested deeper than the parser goes
            raise ValueError("invalid server profile: not JSON (nested too deeply)") from None
        if not isinstance(data, dict):
            raise ValueError("invalid server profile: the JSON document is not an object")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ServerProfile:
        """Read a profile from a JSON file written by ``aqido probe --json`` or :meth:`save`.

        ``ValueError`` when the file is not a profile (not JSON, not UTF-8 text), ``OSError``
        when it cannot be read.
        """
        with open(path, "rb") as f:
            return cls.from_json(f.read())  # bytes: a file that is not UTF-8 is not JSON either

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the profile as JSON to ``path``, whole or not at all.

        Through a temporary file renamed into place (:func:`aqido._files.write_whole`):
        a write that fails (a full disk) raises ``OSError`` and leaves a profile
        already at ``path`` as it was.
        """
        from aqido._files import write_whole

        write_whole(path, (self.to_json() + "\n").encode("utf-8"))


def _format_error(exc: BaseException, type_: type | None) -> str:
    """cattrs' wording of a structuring error, but an impossible value's own message."""
    if isinstance(exc, _ImpossibleValue):
        return str(exc)
    return format_exception(exc, type_)


def _strict_bool(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _strict_int(value: object, _: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _strict_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _strict_strings(value: object, _: object) -> tuple[str, ...]:
    """A JSON list of strings (a lone string is not a list of its characters)."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"expected a list of strings, got {value!r}")
    return tuple(value)


def _make_converter() -> cattrs.Converter:
    """A converter that refuses unknown keys and coerces nothing (``"yes"`` is not ``True``,
    ``5`` is not ``"5"``, ``"PatientID"`` is not a list of keywords)."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _strict_strings)
    return converter


_CONVERTER = _make_converter()

"""The probe's values and the pure steps at either end of it (no I/O).

:class:`ProbeRequest` is one GET the probe sends, :class:`Answer` what came back,
:class:`Finding` one conclusion and :class:`Check` a few requests with the pure
function that reads their answers as findings (planned by :mod:`aqido._probe_checks`
and :mod:`aqido._probe_caps`).  At the start, :func:`make_context` picks the test
values (studies A and B, a name, a date...) from the first listing
(:func:`discovery_request`); at the end, :func:`build_profile` folds the findings
into a :class:`~aqido.profile.ServerProfile`.  The public names are re-exported by
:mod:`aqido.probe`.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from aqido.profile import ServerProfile
from aqido.values import format_da

#: How many studies the first listing asks for.
DISCOVERY_LIMIT = 50

_STUDY_UID = "0020000D"
_PATIENT_NAME = "00100010"
_PATIENT_ID = "00100020"
_ACCESSION = "00080050"
_STUDY_ID = "00200010"
STUDY_DATE = "00080020"
_STUDY_TIME = "00080030"
_MODALITIES = "00080061"
_SAFE = re.compile(r"[A-Za-z0-9^._-]+")
#: Characters a query value may hold unencoded and literal (RFC 3986 query characters
#: without ``&=+%`` and the wildcards and list separator of QIDO-RS).
_RAW = re.compile(r"[A-Za-z0-9^._~/:@-]+")


# --- records ------------------------------------------------------------------------------


@attrs.frozen
class ProbeRequest:
    """One read-only GET the probe sends: a path under the service root and a raw query.

    ``query`` is sent verbatim (no re-encoding); ``accept`` replaces the
    client's ``Accept`` header when set.
    """

    path: str
    query: str = ""
    accept: str | None = None

    def __str__(self) -> str:
        url = f"{self.path}?{self.query}" if self.query else self.path
        return f"{url} (Accept: {self.accept})" if self.accept else url


@attrs.frozen
class Answer:
    """What the archive answered to one :class:`ProbeRequest`.

    ``items`` is the decoded DICOM JSON array for a 2xx answer (``()`` for 204),
    ``None`` when the status is not 2xx or the body is not DICOM JSON.
    ``headers`` has lower-case names.
    """

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    items: tuple[dict[str, Any], ...] | None = ()

    @property
    def ok(self) -> bool:
        """A 2xx answer whose body is DICOM JSON."""
        return 200 <= self.status < 300 and self.items is not None

    def uids(self) -> list[str]:
        """The StudyInstanceUIDs of the items, in order."""
        return [u for u in (first_value(item, _STUDY_UID) for item in self.items or ()) if u]

    def has(self, uid: str) -> bool:
        """Whether an item with this StudyInstanceUID came back."""
        return self.ok and uid in self.uids()

    @property
    def warning(self) -> str:
        """The ``Warning`` header ('' when there is none)."""
        return self.headers.get("warning", "")


@attrs.frozen
class Finding:
    """One conclusion of the probe, with the request that showed it.

    ``capability`` is a :class:`ServerProfile` field name (or ``"discovery"``);
    ``value`` is the measured field value, or ``None`` when the probe could not
    decide (the profile then keeps the standard default), or ``"none"`` for
    ``max_results`` when a listing showed there is no cap (the field's value is
    then ``None``) and ``"all"`` for ``matched_keys`` when every probed key is
    matched, and for ``range_keys`` when ranges work beyond StudyDate (the field's
    value is then ``None``); ``finding`` says it in words;
    ``request`` is the path and query that showed it.
    """

    capability: str
    finding: str
    request: str
    value: Any = None

    @property
    def decided(self) -> bool:
        """Whether this finding sets its capability (``value`` is not ``None``)."""
        return self.value is not None


Interpret = Callable[[Sequence[Answer]], list[Finding]]


@attrs.frozen
class Check:
    """A few requests and the pure function that reads their answers as findings."""

    capability: str
    requests: tuple[ProbeRequest, ...]
    interpret: Interpret = attrs.field(eq=False)


@attrs.frozen
class ProbeReport:
    """The result of a probe: the measured profile and every finding behind it.

    ``requests`` is the number of HTTP requests sent.
    """

    profile: ServerProfile
    findings: tuple[Finding, ...]
    requests: int
    #: The test values taken from the archive (studies A and B...).
    context: ProbeContext | None = None


@attrs.frozen
class ProbeContext:
    """The test values the probe took from the archive's first listing.

    ``a`` and ``b`` are StudyInstanceUIDs of two listed studies (``None`` when
    the archive has fewer, or fewer whose UID is made of the safe characters below);
    ``listed`` holds every listed UID; every other value belongs to study A unless named
    ``*_b``; a value is ``None`` when A does not have a usable one (values must
    be made of ``A-Z a-z 0-9 ^ . - _``, which every server reads the same
    way, with or without percent-decoding).
    """

    listed: tuple[str, ...]
    a: str | None = None
    b: str | None = None
    name: str | None = None
    text_key: str | None = None
    text: str | None = None
    date: str | None = None
    time: str | None = None
    #: A keyword and a value of it that A has and B lacks, and one B has and A lacks
    #: (ModalitiesInStudy when the listing returns it, else the ``text_key`` values).
    list_key: str | None = None
    list_a: str | None = None
    list_b: str | None = None
    #: A listed study (UID, PatientName) whose name has non-ASCII characters.
    non_ascii: tuple[str, str] | None = None
    #: Study A's own values of the keys :mod:`aqido._probe_keys` probes, as
    #: ``(keyword, value)`` pairs (those A has, made of characters a query holds
    #: unencoded: the safe ones and ``~ / : @``): sent
    #: together, they must find A on a server that matches every one of them.
    own: tuple[tuple[str, str], ...] = ()
    #: The same for one of A's series and the series keys (Modality, SeriesNumber,
    #: SeriesDescription), read from A's series listing (:func:`with_series`): sent
    #: together on ``/studies/A/series``, they must find that series.
    series_own: tuple[tuple[str, str], ...] = ()
    #: A listed study (UID, PatientBirthDate) with a usable birth date, A's when it has one
    #: (the range check of ``range_keys``).
    birth: tuple[str, str] | None = None
    #: A's StudyTime as stored, when it is plain digits (``HH``, ``HHMM``, ``HHMMSS``): a
    #: server comparing text does not find it with ``HHMMSS.000000-`` (``temporal_text``).
    stored_time: str | None = None


# --- the first listing --------------------------------------------------------------------


def discovery_request() -> ProbeRequest:
    """The first request: a small study listing whose values the checks reuse."""
    return ProbeRequest("/studies", f"limit={DISCOVERY_LIMIT}")


def _values(item: Mapping[str, Any], key: str) -> list[Any]:
    elem = item.get(key)
    if not isinstance(elem, Mapping):
        return []
    values = elem.get("Value")
    return list(values) if isinstance(values, list) else []


def first_value(item: Mapping[str, Any], key: str) -> str | None:
    """The first non-empty value of ``key`` in a DICOM JSON item, as text (PN: Alphabetic)."""
    for value in _values(item, key):
        if isinstance(value, Mapping):
            value = value.get("Alphabetic")
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value).strip()
            if text:
                return text
    return None


def _usable(value: str | None, *, letters: bool = False) -> bool:
    if value is None or len(value) < 3 or not _SAFE.fullmatch(value):
        return False
    return not letters or any(c.isalpha() for c in value)


#: A TM value's ``HH``, ``HHMM`` or ``HHMMSS`` (ASCII digits only: ``\d`` would take
#: ``'١٢'``, which ``int`` reads as 12, though no server matches it as a time).
_TM = re.compile(r"(?:[01][0-9]|2[0-3])(?:[0-5][0-9](?:[0-5][0-9]|60)?)?")
#: A DA value ``YYYYMMDD``, ASCII digits only (as :data:`_TM`).
_DA = re.compile(r"[0-9]{8}")


def _time_of(value: str | None) -> str | None:
    """A server's TM value as a test time (``HH[MM[SS]]``), or ``None`` if it is not one."""
    if value is None:
        return None
    digits = value.replace(":", "").split(".")[0]
    return digits if _TM.fullmatch(digits) else None


def make_context(listing: Answer) -> ProbeContext:
    """Pick study A, study B and the test values from the first listing (pure)."""
    items = [item for item in listing.items or () if first_value(item, _STUDY_UID)]
    listed = tuple(first_value(item, _STUDY_UID) or "" for item in items)
    # A, B and the non-ASCII study go into paths and queries as they are: only UIDs made
    # of the safe characters (a server's "1.2&x=1" or "1.2\x00" would change or break them)
    items = [item for item in items if _SAFE.fullmatch(first_value(item, _STUDY_UID) or "")]
    if not items:
        return ProbeContext(listed=listed)

    def score(item: Mapping[str, Any]) -> int:
        return sum(
            (
                4 * _usable(first_value(item, _PATIENT_NAME), letters=True),
                2 * any(_usable(first_value(item, k), letters=True) for k in _TEXT_KEYS),
                usable_date(first_value(item, STUDY_DATE)),
                _time_of(first_value(item, _STUDY_TIME)) is not None,
                bool(_values(item, _MODALITIES)),
            )
        )

    a_item = max(items, key=score)  # the first of the best
    a = first_value(a_item, _STUDY_UID)
    name = first_value(a_item, _PATIENT_NAME)
    text_key = text = None
    for key in _TEXT_KEYS:  # prefer a value with letters (for the case check)
        if _usable(first_value(a_item, key), letters=True):
            text_key, text = key, first_value(a_item, key)
            break
    else:
        for key in _TEXT_KEYS:
            if _usable(first_value(a_item, key)):
                text_key, text = key, first_value(a_item, key)
                break
    date = first_value(a_item, STUDY_DATE)
    mods_a = {str(m) for m in _values(a_item, _MODALITIES) if isinstance(m, str) and m}
    b = list_key = list_a = list_b = None
    others = [item for item in items if first_value(item, _STUDY_UID) != a]  # A listed twice
    best_b: tuple[int, Mapping[str, Any]] | None = None
    for item in others:  # B: another patient, with a modality A lacks (and vice versa)
        mods_b = {str(m) for m in _values(item, _MODALITIES) if isinstance(m, str) and m}
        rank = 2 * bool(mods_b - mods_a and mods_a - mods_b) + (
            first_value(item, _PATIENT_ID) != first_value(a_item, _PATIENT_ID)
        )
        if best_b is None or rank > best_b[0]:
            best_b = (rank, item)
    if best_b is not None:
        b_item = best_b[1]
        b = first_value(b_item, _STUDY_UID)
        mods_b = {str(m) for m in _values(b_item, _MODALITIES) if isinstance(m, str) and m}
        only_a, only_b = sorted(mods_a - mods_b), sorted(mods_b - mods_a)
        if only_a and only_b and all(_SAFE.fullmatch(m) for m in (only_a[0], only_b[0])):
            list_key, list_a, list_b = "ModalitiesInStudy", only_a[0], only_b[0]
        elif text_key is not None:
            text_b = first_value(b_item, text_key)
            if _usable(text_b) and text_b != text:
                list_key, list_a, list_b = KEYWORDS[text_key], text, text_b
    non_ascii = None
    for item in items:
        uid, pn = first_value(item, _STUDY_UID), first_value(item, _PATIENT_NAME)
        if uid and pn and not pn.isascii() and pn.isprintable():
            non_ascii = (uid, pn)
            break
    stored_time = first_value(a_item, _STUDY_TIME)
    birth = None
    for item in (a_item, *items):
        uid, born = first_value(item, _STUDY_UID), first_value(item, _BIRTH_DATE)
        if uid and usable_date(born):
            birth = (uid, str(born))
            break
    return ProbeContext(
        listed=listed,
        non_ascii=non_ascii,
        own=_own_values(a_item),
        birth=birth,
        stored_time=stored_time if stored_time and _PLAIN_TIME.fullmatch(stored_time) else None,
        a=a,
        b=b,
        name=name if _usable(name) else None,
        text_key=text_key,
        text=text,
        date=date if usable_date(date) else None,
        time=_time_of(first_value(a_item, _STUDY_TIME)),
        list_key=list_key,
        list_a=list_a,
        list_b=list_b,
    )


_BIRTH_DATE = "00100030"
_PLAIN_TIME = re.compile(r"[0-9]{2}(?:[0-9]{2}(?:[0-9]{2})?)?")
#: Study-level keys returned by default whose own value A is sent with (a positive control
#: of the matched-keys check), by tag; TM is left out (stored times vary in form).
_OWN_KEYS = {
    _PATIENT_NAME: "PatientName",
    STUDY_DATE: "StudyDate",
    _MODALITIES: "ModalitiesInStudy",
    _PATIENT_ID: "PatientID",
    _BIRTH_DATE: "PatientBirthDate",
    "00100040": "PatientSex",
    _ACCESSION: "AccessionNumber",
    _STUDY_ID: "StudyID",
    "00080090": "ReferringPhysicianName",
}


#: Series-level keys returned by default whose own value one of A's series is sent with.
_SERIES_OWN_KEYS = {
    "00080060": "Modality",
    "00200011": "SeriesNumber",
    "0008103E": "SeriesDescription",
}


def series_request(a: str) -> ProbeRequest:
    """A's series listing: where :func:`with_series` takes ``series_own`` from."""
    return ProbeRequest(f"/studies/{a}/series")


def with_series(ctx: ProbeContext, answer: Answer) -> ProbeContext:
    """``ctx`` with ``series_own`` from the first of A's series that has any (else ``ctx``)."""
    for item in (answer.items or ()) if answer.ok else ():
        own = tuple(
            (keyword, value)
            for tag, keyword in _SERIES_OWN_KEYS.items()
            if (value := first_value(item, tag)) is not None and _RAW.fullmatch(value)
        )
        if own:
            return attrs.evolve(ctx, series_own=own)
    return ctx


def _own_values(item: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A's own values of :data:`_OWN_KEYS` (see :attr:`ProbeContext.own`)."""
    out = []
    for tag, keyword in _OWN_KEYS.items():
        value = first_value(item, tag)
        if value is None or not _RAW.fullmatch(value):
            continue
        if tag in (STUDY_DATE, _BIRTH_DATE) and not _DA.fullmatch(value):
            continue
        out.append((keyword, value))
    return tuple(out)


#: Non-PN string attributes returned by default at the study level, by preference.
_TEXT_KEYS = (_PATIENT_ID, _ACCESSION, _STUDY_ID)
KEYWORDS = {_PATIENT_ID: "PatientID", _ACCESSION: "AccessionNumber", _STUDY_ID: "StudyID"}


# --- helpers for the checks ---------------------------------------------------------------


def studies_request(query: str) -> ProbeRequest:
    """A ``/studies`` request with this raw query."""
    return ProbeRequest("/studies", query)


def undecided(capability: str, why: str, request: ProbeRequest | str) -> Finding:
    """A finding that leaves ``capability`` undecided (the profile keeps its default)."""
    return Finding(capability, f"not decided: {why}; kept the standard default", str(request))


def add_days(date: str, days: int) -> str:
    """The DA value ``days`` days after ``date`` (``YYYYMMDD``; negative: before)."""
    day = _dt.date(int(date[:4]), int(date[4:6]), int(date[6:8])) + _dt.timedelta(days=days)
    return format_da(day)


def usable_date(value: str | None) -> bool:
    """Whether a server's DA value can be a test date: ``YYYYMMDD``, a real day, not at the
    calendar's edge (the checks ask for ranges a few days around it).

    A server may store anything (``20231345``, ``00000000``, ``99991231``).
    """
    if value is None or not _DA.fullmatch(value):
        return False
    try:
        add_days(value, -2)
        add_days(value, 2)
    except (ValueError, OverflowError):
        return False
    return True


# --- the profile ----------------------------------------------------------------------------


def build_profile(
    findings: Sequence[Finding], *, name: str = "probed", notes: Sequence[str] = ()
) -> ServerProfile:
    """The profile the findings describe; undecided capabilities keep the standard default."""
    fields = {f.name for f in attrs.fields(ServerProfile)}
    changes: dict[str, Any] = {}
    out_notes = list(notes)
    for finding in findings:
        if finding.capability not in fields:
            continue
        if finding.value is None:
            out_notes.append(f"{finding.capability}: {finding.finding}")
        elif finding.value == "none" and finding.capability == "max_results":
            changes["max_results"] = None
            out_notes.append(
                "no result cap seen: cap_warning, cap_plus_one and cap_before_offset "
                "keep the standard defaults"
            )
        elif finding.value == "all" and finding.capability in ("matched_keys", "range_keys"):
            changes[finding.capability] = None  # every attribute: the standard default
        else:
            changes[finding.capability] = finding.value
    changes["notes"] = tuple(out_notes)
    return attrs.evolve(ServerProfile(name=name), **changes)

"""``probe``: measure a QIDO-RS archive's :class:`~aqido.profile.ServerProfile` from its own data.

The probe sends a bounded number of small read-only GET requests (at most
:data:`MAX_REQUESTS`, at most :data:`MAX_IN_FLIGHT` at once) and decides, field by
field, how the archive behaves.  It first lists a few studies (``/studies?limit=50``)
and takes its test values from what came back: a study *A* with a PatientName,
its case-flipped form, a prefix with ``*``, the name with one ``?``, a second
study *B* for UID lists, value lists and repeated keys, date and time ranges around
A's StudyDate and StudyTime, and so on.

The logic is pure and separate from the I/O:

- :func:`discovery_request` is the first request; :func:`make_context` picks the
  test values from its answer (a :class:`ProbeContext`).
- :func:`plan_checks` turns the context into :class:`Check` objects: each check is a
  few :class:`ProbeRequest` values plus a pure ``interpret`` function from their
  :class:`Answer` values (status, headers, items) to :class:`Finding` values.
- The caps are measured in three dependent steps (:func:`cap_guard_request`,
  :func:`cap_listing_request`, :func:`cap_followups`, :func:`interpret_caps`).
- :func:`build_profile` folds the findings into a profile; a capability that could
  not be decided keeps the standard default and gets a line in the profile's ``notes``.

:func:`probe_report` is the thin async driver (used by :meth:`AsyncQidoRS.probe`
and ``aqido probe``); it returns a :class:`ProbeReport`, the profile plus every
finding with the request that showed it.

Matching checks are narrowed to study A with ``StudyInstanceUID=A`` (so a server
cap or a popular name cannot hide A), and each comes with a negative control (a
value A must *not* match), so a server that ignores a key is not mistaken for one
that matches it.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs

from aqido.profile import ServerProfile

if TYPE_CHECKING:  # pragma: no cover
    from aqido.client import AsyncQidoRS

__all__ = [
    "MAX_IN_FLIGHT",
    "MAX_REQUESTS",
    "TYPICAL_CAPS",
    "Answer",
    "Check",
    "Finding",
    "ProbeContext",
    "ProbeReport",
    "ProbeRequest",
    "build_profile",
    "cap_followups",
    "cap_guard_request",
    "cap_listing_request",
    "discovery_request",
    "interpret_caps",
    "make_context",
    "plan_checks",
    "probe_report",
]

#: The most requests one probe sends.
MAX_REQUESTS = 60
#: The most requests a probe has in flight at once.
MAX_IN_FLIGHT = 4
#: Result caps seen in the field; a listing of exactly this many (or one more) is suspect.
TYPICAL_CAPS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
#: How many studies the first listing asks for.
DISCOVERY_LIMIT = 50
#: The largest archive (studies reachable by ``offset``) the probe lists without a limit.
UNLIMITED_LISTING_MAX = 10000

_STUDY_UID = "0020000D"
_PATIENT_NAME = "00100010"
_PATIENT_ID = "00100020"
_ACCESSION = "00080050"
_STUDY_ID = "00200010"
_STUDY_DATE = "00080020"
_STUDY_TIME = "00080030"
_MODALITIES = "00080061"
_STUDY_DESCRIPTION = "00081030"
#: A UID no archive holds (under aqido's own test root), for "nothing matches" checks.
_NO_SUCH_UID = "1.2.826.0.1.3680043.10.1447.999.4242"
_SAFE = re.compile(r"[A-Za-z0-9^._-]+")


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
        return [u for u in (_first(item, _STUDY_UID) for item in self.items or ()) if u]

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
    then ``None``); ``finding`` says it in words; ``request`` is the path and
    query that showed it.
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
    the archive has fewer); every other value belongs to study A unless named
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


def _first(item: Mapping[str, Any], key: str) -> str | None:
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


def _time_of(value: str | None) -> str | None:
    if value is None:
        return None
    digits = value.replace(":", "").split(".")[0]
    return digits if re.fullmatch(r"\d{2}(\d{2}){0,2}", digits) else None


def make_context(listing: Answer) -> ProbeContext:
    """Pick study A, study B and the test values from the first listing (pure)."""
    items = [item for item in listing.items or () if _first(item, _STUDY_UID)]
    listed = tuple(_first(item, _STUDY_UID) or "" for item in items)
    if not items:
        return ProbeContext(listed=listed)

    def score(item: Mapping[str, Any]) -> int:
        return sum(
            (
                4 * _usable(_first(item, _PATIENT_NAME), letters=True),
                2 * any(_usable(_first(item, k), letters=True) for k in _TEXT_KEYS),
                bool(re.fullmatch(r"\d{8}", _first(item, _STUDY_DATE) or "")),
                _time_of(_first(item, _STUDY_TIME)) is not None,
                bool(_values(item, _MODALITIES)),
            )
        )

    a_item = max(items, key=score)  # the first of the best
    a = _first(a_item, _STUDY_UID)
    name = _first(a_item, _PATIENT_NAME)
    text_key = text = None
    for key in _TEXT_KEYS:  # prefer a value with letters (for the case check)
        if _usable(_first(a_item, key), letters=True):
            text_key, text = key, _first(a_item, key)
            break
    else:
        for key in _TEXT_KEYS:
            if _usable(_first(a_item, key)):
                text_key, text = key, _first(a_item, key)
                break
    date = _first(a_item, _STUDY_DATE)
    mods_a = {str(m) for m in _values(a_item, _MODALITIES) if isinstance(m, str) and m}
    b = list_key = list_a = list_b = None
    others = [item for item in items if item is not a_item]
    best_b: tuple[int, Mapping[str, Any]] | None = None
    for item in others:  # B: another patient, with a modality A lacks (and vice versa)
        mods_b = {str(m) for m in _values(item, _MODALITIES) if isinstance(m, str) and m}
        rank = 2 * bool(mods_b - mods_a and mods_a - mods_b) + (
            _first(item, _PATIENT_ID) != _first(a_item, _PATIENT_ID)
        )
        if best_b is None or rank > best_b[0]:
            best_b = (rank, item)
    if best_b is not None:
        b_item = best_b[1]
        b = _first(b_item, _STUDY_UID)
        mods_b = {str(m) for m in _values(b_item, _MODALITIES) if isinstance(m, str) and m}
        only_a, only_b = sorted(mods_a - mods_b), sorted(mods_b - mods_a)
        if only_a and only_b and all(_SAFE.fullmatch(m) for m in (only_a[0], only_b[0])):
            list_key, list_a, list_b = "ModalitiesInStudy", only_a[0], only_b[0]
        elif text_key is not None:
            text_b = _first(b_item, text_key)
            if _usable(text_b) and text_b != text:
                list_key, list_a, list_b = _KEYWORDS[text_key], text, text_b
    non_ascii = None
    for item in items:
        uid, pn = _first(item, _STUDY_UID), _first(item, _PATIENT_NAME)
        if uid and pn and not pn.isascii() and pn.isprintable():
            non_ascii = (uid, pn)
            break
    return ProbeContext(
        listed=listed,
        non_ascii=non_ascii,
        a=a,
        b=b,
        name=name if _usable(name) else None,
        text_key=text_key,
        text=text,
        date=date if date and re.fullmatch(r"\d{8}", date) else None,
        time=_time_of(_first(a_item, _STUDY_TIME)),
        list_key=list_key,
        list_a=list_a,
        list_b=list_b,
    )


#: Non-PN string attributes returned by default at the study level, by preference.
_TEXT_KEYS = (_PATIENT_ID, _ACCESSION, _STUDY_ID)
_KEYWORDS = {_PATIENT_ID: "PatientID", _ACCESSION: "AccessionNumber", _STUDY_ID: "StudyID"}


# --- the checks -----------------------------------------------------------------------------


def _studies(query: str) -> ProbeRequest:
    return ProbeRequest("/studies", query)


def _pct(text: str) -> str:
    """Every byte percent-encoded: only a server that decodes can read it."""
    return "".join(f"%{b:02X}" for b in text.encode("utf-8"))


def _swapcase(text: str) -> str:
    return text.swapcase()


def _undecided(capability: str, why: str, request: ProbeRequest | str) -> Finding:
    return Finding(capability, f"not decided: {why}; kept the standard default", str(request))


def _day(date: str, days: int) -> str:
    day = _dt.date(int(date[:4]), int(date[4:6]), int(date[6:8])) + _dt.timedelta(days=days)
    return day.strftime("%Y%m%d")


def _status_text(answer: Answer) -> str:
    if answer.ok:
        return f"{answer.status} with {len(answer.items or ())} result(s)"
    return f"{answer.status}"


def plan_checks(ctx: ProbeContext) -> list[Check]:
    """The checks for this archive's data (pure); the ones the data allows."""
    checks: list[Check] = []
    checks += _status_checks(ctx)
    if ctx.a is None:
        return checks
    a = ctx.a
    if ctx.name is not None:
        checks += _name_checks(ctx, a, ctx.name)
    if ctx.text is not None and ctx.text_key is not None:
        checks += _text_checks(a, _KEYWORDS[ctx.text_key], ctx.text)
    singles = [("PatientName", ctx.name)] if ctx.name is not None else []
    if ctx.text is not None and ctx.text_key is not None:
        singles.append((_KEYWORDS[ctx.text_key], ctx.text))
    if singles:
        checks.append(_single_value_check(a, singles))
    if ctx.b is not None:
        checks += _list_checks(ctx, a, ctx.b)
    if ctx.date is not None:
        checks += _date_checks(a, ctx.date)
    if ctx.time is not None:
        checks.append(_time_check(a, ctx.time))
    checks.append(_unsupported_key_check(a))
    checks.append(_includefield_check(a))
    checks += _paging_checks(ctx)
    checks.append(_json_accept_check(a))
    checks.append(_study_instances_check(a))
    return checks


def _status_checks(ctx: ProbeContext) -> list[Check]:
    empty = _studies(f"StudyInstanceUID={_NO_SUCH_UID}")

    def empty_status(answers: Sequence[Answer]) -> list[Finding]:
        (ans,) = answers
        if ans.status == 204:
            return [Finding("empty_status", "no match: 204 No Content", str(empty), 204)]
        if ans.status == 200 and ans.items == ():
            return [Finding("empty_status", "no match: 200 with []", str(empty), 200)]
        return [_undecided("empty_status", f"a search for an unknown UID gave {ans.status}", empty)]

    bad = _studies("StudyDate=notadate")

    def bad_request(answers: Sequence[Answer]) -> list[Finding]:
        (ans,) = answers
        return [
            Finding("bad_request_status", f"a malformed date: {ans.status}", str(bad), ans.status)
        ]

    parent = ProbeRequest(f"/studies/{_NO_SUCH_UID}/series")

    def unknown_parent(answers: Sequence[Answer]) -> list[Finding]:
        (ans,) = answers
        return [
            Finding(
                "unknown_parent_status", f"an unknown study: {ans.status}", str(parent), ans.status
            )
        ]

    checks = [
        Check("empty_status", (empty,), empty_status),
        Check("bad_request_status", (bad,), bad_request),
        Check("unknown_parent_status", (parent,), unknown_parent),
    ]
    for field, path in (("relational_series", "/series"), ("relational_instances", "/instances")):
        checks.append(_path_check(field, ProbeRequest(path, "limit=1")))
    return checks


def _path_check(field: str, request: ProbeRequest) -> Check:
    def served(answers: Sequence[Answer]) -> list[Finding]:
        (ans,) = answers
        if ans.ok:
            return [Finding(field, f"served: {_status_text(ans)}", str(request), True)]
        if 400 <= ans.status < 500:
            return [Finding(field, f"not served: {ans.status}", str(request), False)]
        return [_undecided(field, f"answered {ans.status}", request)]

    return Check(field, (request,), served)


def _study_instances_check(a: str) -> Check:
    return _path_check("study_instances", ProbeRequest(f"/studies/{a}/instances", "limit=1"))


def _matches(a: str, key: str, value: str, extra: str = "") -> ProbeRequest:
    return _studies(f"StudyInstanceUID={a}&{key}={value}{extra}")


def _name_checks(ctx: ProbeContext, a: str, name: str) -> list[Check]:
    checks: list[Check] = []
    exact = _matches(a, "PatientName", name)
    control = _matches(a, "PatientName", name + "Qzx")

    def baseline(answers: Sequence[Answer]) -> str | None:
        """Why PatientName checks are void ('' when the key is matched at all)."""
        if not answers[0].has(a):
            return f"A's own PatientName did not find A ({_status_text(answers[0])})"
        if answers[1].has(a):
            return "PatientName looks ignored (a different name found A too)"
        return None

    def simple(field: str, request: ProbeRequest, yes: str, no: str, found_means: bool) -> Check:
        def interpret(answers: Sequence[Answer]) -> list[Finding]:
            why = baseline(answers)
            if why:
                return [_undecided(field, why, request)]
            found = answers[2].has(a)
            return [Finding(field, yes if found else no, str(request), found == found_means)]

        return Check(field, (exact, control, request), interpret)

    encoded = _matches(a, "PatientName", _pct(name))
    if ctx.non_ascii is not None:
        uid, other = ctx.non_ascii
        utf8 = _matches(uid, "PatientName", quote(other, safe="^"))

        def non_ascii(answers: Sequence[Answer]) -> list[Finding]:
            why = baseline(answers)
            if why or not answers[2].has(a):
                why = why or "the server does not percent-decode, so non-ASCII cannot be sent"
                return [_undecided("non_ascii_values", why, utf8)]
            found = answers[3].has(uid)
            said = "a non-ASCII name (UTF-8) " + ("is matched" if found else "matches nothing")
            return [Finding("non_ascii_values", said, str(utf8), found)]

        checks.append(Check("non_ascii_values", (exact, control, encoded, utf8), non_ascii))
    half = max(1, len(name) // 2)
    star = _matches(a, "PatientName", name[:half] + "*")
    pos = next((i for i in range(len(name) // 2, len(name)) if name[i].isalnum()), None)
    checks += [
        simple(
            "percent_decoding",
            encoded,
            "percent-encoded value decoded (A found)",
            "percent-encoded value not decoded (A not found)",
            True,
        ),
        simple("wildcard_star", star, "'*' is a wildcard", "'*' is not a wildcard", True),
    ]
    if pos is not None:
        question = _matches(a, "PatientName", name[:pos] + "?" + name[pos + 1 :])
        checks.append(
            simple(
                "wildcard_question", question, "'?' is a wildcard", "'?' is not a wildcard", True
            )
        )
    if any(c.isalpha() for c in name):
        flipped = _matches(a, "PatientName", _swapcase(name))
        checks.append(
            simple(
                "pn_case_sensitive",
                flipped,
                "case-insensitive (the case-flipped name found A)",
                "case-sensitive (the case-flipped name did not find A)",
                False,
            )
        )
        fuzzy = _matches(a, "PatientName", _swapcase(name), "&fuzzymatching=true")

        def fuzzy_interpret(answers: Sequence[Answer]) -> list[Finding]:
            ans = answers[3]
            if 400 <= ans.status < 500:
                return [Finding("fuzzy_matching", f"refused: {ans.status}", str(fuzzy), "error")]
            if "fuzzy" in ans.warning.lower():
                return [
                    Finding(
                        "fuzzy_matching", "not supported, says a 299 Warning", str(fuzzy), "warning"
                    )
                ]
            why = baseline(answers)
            if why or not ans.ok:
                return [_undecided("fuzzy_matching", why or f"answered {ans.status}", fuzzy)]
            if ans.has(a) and not answers[2].has(a):
                return [
                    Finding(
                        "fuzzy_matching",
                        "supported (the case-flipped name found A)",
                        str(fuzzy),
                        "supported",
                    )
                ]
            note = "" if not answers[2].has(a) else " (PN matching ignores case anyway)"
            return [
                Finding(
                    "fuzzy_matching",
                    f"accepted silently, literal matching{note}",
                    str(fuzzy),
                    "ignored",
                )
            ]

        checks.append(Check("fuzzy_matching", (exact, control, flipped, fuzzy), fuzzy_interpret))
    return checks


def _text_checks(a: str, keyword: str, text: str) -> list[Check]:
    exact = _matches(a, keyword, text)
    control = _matches(a, keyword, text + "Qzx")

    def baseline(answers: Sequence[Answer]) -> str | None:
        if not answers[0].has(a):
            return f"A's own {keyword} did not find A ({_status_text(answers[0])})"
        if answers[1].has(a):
            return f"{keyword} looks ignored (a different value found A too)"
        return None

    checks = []
    if any(c.isalpha() for c in text):
        flipped = _matches(a, keyword, _swapcase(text))

        def case(answers: Sequence[Answer]) -> list[Finding]:
            why = baseline(answers)
            if why:
                return [_undecided("case_sensitive", why, flipped)]
            found = answers[2].has(a)
            said = f"{keyword}: case-{'in' if found else ''}sensitive"
            return [Finding("case_sensitive", said, str(flipped), not found)]

        checks.append(Check("case_sensitive", (exact, control, flipped), case))
    return checks


_LOOSENESS = {"exact": 0, "prefix": 1, "substring": 2}


def _single_value_check(a: str, values: Sequence[tuple[str, str]]) -> Check:
    """Exact, prefix or substring matching, per key (PN and not); the loosest one wins."""
    requests: list[ProbeRequest] = []
    for keyword, value in values:
        requests += [
            _matches(a, keyword, value),
            _matches(a, keyword, value + "Qzx"),
            _matches(a, keyword, value[:-1]),
            _matches(a, keyword, value[1:]),
        ]

    def interpret(answers: Sequence[Answer]) -> list[Finding]:
        seen: list[tuple[str, str, ProbeRequest]] = []
        for i, (keyword, _) in enumerate(values):
            exact, control, prefix, inner = answers[4 * i : 4 * i + 4]
            if not exact.has(a) or control.has(a):
                continue
            if inner.has(a):
                seen.append(("substring", keyword, requests[4 * i + 3]))
            elif prefix.has(a):
                seen.append(("prefix", keyword, requests[4 * i + 2]))
            else:
                seen.append(("exact", keyword, requests[4 * i + 2]))
        if not seen:
            why = "no key found study A by its own value (or every key looked ignored)"
            return [_undecided("single_value_matching", why, requests[0])]
        kind, _, request = max(seen, key=lambda s: _LOOSENESS[s[0]])
        said = ", ".join(f"{keyword}: {how}" for how, keyword, _ in seen)
        return [Finding("single_value_matching", said, str(request), kind)]

    return Check("single_value_matching", tuple(requests), interpret)


def _list_checks(ctx: ProbeContext, a: str, b: str) -> list[Check]:
    both = _studies(f"StudyInstanceUID={a},{b}")

    def uid_lists(answers: Sequence[Answer]) -> list[Finding]:
        (ans,) = answers
        if ans.has(a) and ans.has(b):
            return [Finding("uid_lists", "a UID list matches either UID", str(both), True)]
        if ans.ok or 400 <= ans.status < 500:
            return [
                Finding(
                    "uid_lists", f"a UID list is not a list ({_status_text(ans)})", str(both), False
                )
            ]
        return [_undecided("uid_lists", f"answered {ans.status}", both)]

    repeated = _studies(f"StudyInstanceUID={a}&StudyInstanceUID={b}")

    def repeated_keys(answers: Sequence[Answer]) -> list[Finding]:
        (ans,) = answers
        if 400 <= ans.status < 500:
            return [Finding("repeated_keys", f"refused: {ans.status}", str(repeated), "error")]
        found_a, found_b = ans.has(a), ans.has(b)
        if found_a and found_b:
            return [Finding("repeated_keys", "either value matches (OR)", str(repeated), "or")]
        if found_a:
            return [Finding("repeated_keys", "the first value wins", str(repeated), "first")]
        if found_b:
            return [Finding("repeated_keys", "the last value wins", str(repeated), "last")]
        return [
            _undecided("repeated_keys", f"neither study came back ({_status_text(ans)})", repeated)
        ]

    checks = [
        Check("uid_lists", (both,), uid_lists),
        Check("repeated_keys", (repeated,), repeated_keys),
    ]
    key = ctx.list_key
    if key is not None and ctx.list_a is not None and ctx.list_b is not None:
        pair = f"{ctx.list_a},{ctx.list_b}"
        list_a = _matches(a, key, pair)
        list_b = _matches(b, key, pair)
        control = _matches(b, key, ctx.list_a)

        def value_lists(answers: Sequence[Answer]) -> list[Finding]:
            if answers[2].has(b):
                return [_undecided("value_lists", f"{key} looks ignored", control)]
            if answers[0].has(a) and answers[1].has(b):
                return [
                    Finding("value_lists", f"{key}: a list matches either value", str(list_a), True)
                ]
            return [Finding("value_lists", f"{key}: a list is not a list", str(list_a), False)]

        checks.append(Check("value_lists", (list_a, list_b, control), value_lists))
    return checks


def _date_checks(a: str, date: str) -> list[Check]:
    closed = _matches(a, "StudyDate", f"{_day(date, -1)}-{_day(date, 1)}")
    closed_out = _matches(a, "StudyDate", f"{_day(date, 1)}-{_day(date, 2)}")
    upto = _matches(a, "StudyDate", f"-{_day(date, 1)}")
    since = _matches(a, "StudyDate", f"{_day(date, -1)}-")
    upto_out = _matches(a, "StudyDate", f"-{_day(date, -1)}")

    def closed_ranges(answers: Sequence[Answer]) -> list[Finding]:
        inside, outside = answers
        if inside.has(a) and not outside.has(a):
            return [
                Finding("date_ranges", "a closed range around A's date finds A", str(closed), True)
            ]
        if outside.has(a):
            return [
                Finding(
                    "date_ranges", "a range that excludes A's date finds A", str(closed_out), False
                )
            ]
        return [
            Finding(
                "date_ranges",
                f"a closed range around A's date: {_status_text(inside)}",
                str(closed),
                False,
            )
        ]

    def open_ranges(answers: Sequence[Answer]) -> list[Finding]:
        up, down, out = answers
        if up.has(a) and down.has(a) and not out.has(a):
            return [
                Finding("open_date_ranges", "-d and d- ranges find A", f"{upto}; {since}", True)
            ]
        return [
            Finding(
                "open_date_ranges", "open ranges do not match as ranges", f"{upto}; {since}", False
            )
        ]

    return [
        Check("date_ranges", (closed, closed_out), closed_ranges),
        Check("open_date_ranges", (upto, since, upto_out), open_ranges),
    ]


def _time_check(a: str, time: str) -> Check:
    hour = int(time[:2])
    inside = _matches(a, "StudyTime", f"{hour:02d}0000-{hour:02d}5959")
    out_range = f"{hour + 1:02d}0000-235959" if hour < 23 else f"000000-{hour - 1:02d}5959"
    outside = _matches(a, "StudyTime", out_range)

    def time_ranges(answers: Sequence[Answer]) -> list[Finding]:
        found, wrong = answers
        if found.has(a) and not wrong.has(a):
            return [Finding("time_ranges", "a range around A's time finds A", str(inside), True)]
        shown = outside if wrong.has(a) else inside
        return [Finding("time_ranges", "time ranges do not match as ranges", str(shown), False)]

    return Check("time_ranges", (inside, outside), time_ranges)


def _unsupported_key_check(a: str) -> Check:
    request = _studies(f"StudyInstanceUID={a}&AqidoNoSuchAttribute=1")

    def unsupported(answers: Sequence[Answer]) -> list[Finding]:
        (ans,) = answers
        if 400 <= ans.status < 500:
            return [
                Finding("unsupported_keys", f"an unknown key: {ans.status}", str(request), "error")
            ]
        if ans.has(a):
            return [
                Finding("unsupported_keys", "an unknown key is ignored", str(request), "ignore")
            ]
        if ans.ok:
            return [
                Finding("unsupported_keys", "an unknown key matches nothing", str(request), "empty")
            ]
        return [_undecided("unsupported_keys", f"answered {ans.status}", request)]

    return Check("unsupported_keys", (request,), unsupported)


def _includefield_check(a: str) -> Check:
    base = _studies(f"StudyInstanceUID={a}")
    every = _studies(f"StudyInstanceUID={a}&includefield=all")
    one = _studies(f"StudyInstanceUID={a}&includefield=StudyDescription")

    def keys(answer: Answer) -> set[str]:
        return {k.upper() for item in answer.items or () for k in item} if answer.has(a) else set()

    def interpret(answers: Sequence[Answer]) -> list[Finding]:
        base_keys, all_keys, one_keys = (keys(x) for x in answers)
        if not base_keys:
            return [
                _undecided("includefield", "study A did not come back", base),
                _undecided("includefield_all", "study A did not come back", base),
            ]
        described = _STUDY_DESCRIPTION in one_keys
        extra = sorted(all_keys - base_keys)
        out = []
        if described:
            out.append(
                Finding("includefield", "includefield=StudyDescription returns it", str(one), True)
            )
        elif _STUDY_DESCRIPTION in all_keys:
            out.append(
                Finding(
                    "includefield",
                    "includefield=StudyDescription does not return it",
                    str(one),
                    False,
                )
            )
        else:
            out.append(_undecided("includefield", "study A may have no StudyDescription", one))
        if extra:
            text = f"includefield=all adds {len(extra)} attribute(s)"
            out.append(Finding("includefield_all", text, str(every), True))
        elif described:
            out.append(
                Finding("includefield_all", "includefield=all adds nothing", str(every), False)
            )
        else:
            out.append(
                _undecided("includefield_all", "includefield=all added nothing to check", every)
            )
        return out

    return Check("includefield", (base, every, one), interpret)


def _paging_checks(ctx: ProbeContext) -> list[Check]:
    checks = []
    if len(ctx.listed) >= 3:
        two = _studies("limit=2")

        def limit(answers: Sequence[Answer]) -> list[Finding]:
            (ans,) = answers
            if not ans.ok:
                return [_undecided("limit", f"answered {ans.status}", two)]
            n = len(ans.items or ())
            return [Finding("limit", f"limit=2 gave {n} result(s)", str(two), n <= 2)]

        checks.append(Check("limit", (two,), limit))
    if len(ctx.listed) >= 2:
        first = ctx.listed[0]
        page = _studies("limit=2&offset=1")

        def offset(answers: Sequence[Answer]) -> list[Finding]:
            (ans,) = answers
            uids = ans.uids()
            if not ans.ok or not uids:
                return [_undecided("offset", f"offset=1 gave {_status_text(ans)}", page)]
            honoured = first not in uids
            said = "offset=1 skips the first study" if honoured else "offset=1 is ignored"
            return [Finding("offset", said, str(page), honoured)]

        checks.append(Check("offset", (page,), offset))
    return checks


def _json_accept_check(a: str) -> Check:
    request = ProbeRequest("/studies", f"StudyInstanceUID={a}", accept="application/json")

    def interpret(answers: Sequence[Answer]) -> list[Finding]:
        (ans,) = answers
        if ans.has(a):
            return [
                Finding(
                    "json_accept", "Accept: application/json gets DICOM JSON", str(request), True
                )
            ]
        if 400 <= ans.status < 500 or (200 <= ans.status < 300 and ans.items is None):
            return [
                Finding(
                    "json_accept", f"Accept: application/json: {ans.status}", str(request), False
                )
            ]
        return [_undecided("json_accept", f"answered {ans.status}", request)]

    return Check("json_accept", (request,), interpret)


# --- caps -----------------------------------------------------------------------------------


def cap_guard_request() -> ProbeRequest:
    """Step 1 of the cap check: is a study reachable at offset 10000?"""
    return _studies(f"offset={UNLIMITED_LISTING_MAX}&limit=1")


def cap_listing_request(paging_ok: bool, guard: Answer) -> ProbeRequest | None:
    """Step 2: the listing that may hit a cap (``None``: the cap cannot be measured).

    Without a limit when the guard shows at most 10000 studies (or a cap before
    the offset); with ``limit=10001`` otherwise, so the answer stays bounded.
    """
    if not paging_ok or not guard.ok:
        return None
    if guard.items:
        return _studies(f"limit={UNLIMITED_LISTING_MAX + 1}")
    return _studies("")


def _suspect(n: int) -> bool:
    return n in TYPICAL_CAPS or n - 1 in TYPICAL_CAPS


def cap_followups(listing: Answer) -> list[ProbeRequest]:
    """Step 3: what more to ask after the listing of ``n`` studies.

    ``offset=n&limit=1`` (is there anything past the listing?) and, when ``n`` is a
    typical cap size, the listing split in two by StudyDate (do the halves hold more
    than ``n`` between them?  That shows a cap applied before the offset).
    """
    if not listing.ok:
        return []
    n = len(listing.items or ())
    requests = [_studies(f"offset={n}&limit=1")]
    if _suspect(n):
        dates = sorted(d for d in (_first(i, _STUDY_DATE) for i in listing.items or ()) if d)
        dates = [d for d in dates if re.fullmatch(r"\d{8}", d)]
        if dates:
            middle = dates[len(dates) // 2]
            requests += [
                _studies(f"StudyDate=-{middle}"),
                _studies(f"StudyDate={_day(middle, 1)}-"),
            ]
    return requests


def interpret_caps(
    listing_request: ProbeRequest, listing: Answer, followups: Sequence[Answer]
) -> list[Finding]:
    """The cap fields from the listing and its follow-ups (pure)."""
    where = str(listing_request)
    if not listing.ok or not followups:
        return [_undecided("max_results", f"the listing answered {listing.status}", where)]
    n = len(listing.items or ())
    truncation = bool(
        re.search(r"additional\s+results|more\s+results|maximum", listing.warning, re.I)
    )
    past = followups[0]
    split_total = None
    if len(followups) == 3 and followups[1].ok and followups[2].ok:
        split_total = len(followups[1].items or ()) + len(followups[2].items or ())
    if past.ok and past.items:  # more studies exist past the listing: a cap after the offset
        before_offset = False
    elif split_total is not None and split_total > n:
        before_offset = True  # the halves hold more than the whole: capped, offset cannot pass it
    elif _suspect(n) and (split_total is None or split_total < n):
        why = (
            f"{n} studies is a typical cap and nothing is past them, but splitting the "
            "listing by StudyDate did not work, so a cap before the offset cannot be ruled out"
        )
        return [_undecided("max_results", why, where)]
    else:
        limited = "limit" in listing_request.query
        said = f"{n} studies in one listing and nothing past them: no cap"
        if limited:
            said = f"limit={UNLIMITED_LISTING_MAX + 1} gave {n} studies: no cap up to that"
        return [
            Finding("max_results", said, where, None if limited else "none"),
        ]
    plus_one = n - 1 in TYPICAL_CAPS and n not in TYPICAL_CAPS
    cap = n - 1 if plus_one else n
    shown = str(_studies(f"offset={n}&limit=1")) if not before_offset else "StudyDate split"
    return [
        Finding("max_results", f"a listing stops at {n} studies", where, cap),
        Finding("cap_plus_one", f"{n} = cap + {1 if plus_one else 0}", where, plus_one),
        Finding(
            "cap_before_offset",
            "paging cannot pass the cap" if before_offset else "offset reaches past the cap",
            shown,
            before_offset,
        ),
        Finding(
            "cap_warning",
            "the capped listing has a truncation Warning"
            if truncation
            else "no Warning on the capped listing",
            where,
            truncation,
        ),
    ]


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
        else:
            changes[finding.capability] = finding.value
    changes["notes"] = tuple(out_notes)
    return attrs.evolve(ServerProfile(name=name), **changes)


# --- I/O ------------------------------------------------------------------------------------


async def probe_report(client: AsyncQidoRS, *, max_in_flight: int = MAX_IN_FLIGHT) -> ProbeReport:
    """Probe the archive behind ``client`` and return the profile with its findings.

    Sends at most :data:`MAX_REQUESTS` GET requests, ``max_in_flight`` at a time
    (and never more than the client's ``max_concurrency``).  Transport errors
    (unreachable server, timeouts) are raised as :class:`~aqido.errors.QidoError`;
    HTTP error statuses are answers the probe interprets.  Raises
    :class:`~aqido.errors.HTTPStatusError` when the first listing itself fails.
    """
    sender = Sender(client, max_in_flight=max_in_flight, budget=MAX_REQUESTS)
    first = discovery_request()
    listing = await sender.get(first, raise_for_status=True)
    ctx = make_context(listing)
    findings: list[Finding] = []
    notes: list[str] = []
    if ctx.a is None:
        notes.append("the archive listed no studies: only data-free checks were run")
    findings.append(
        Finding("discovery", f"{len(ctx.listed)} studies listed; A={ctx.a}, B={ctx.b}", str(first))
    )
    checks = plan_checks(ctx)
    guard = cap_guard_request()
    wanted = [r for c in checks for r in c.requests] + [guard]
    answers = await sender.get_all(wanted)
    for check in checks:
        findings += check.interpret([answers[r] for r in check.requests])
    decided = {f.capability: f.value for f in findings if f.decided}
    paging_ok = decided.get("limit") is True and decided.get("offset") is True
    listing_request = cap_listing_request(paging_ok, answers[guard])
    if listing_request is None:
        why = "limit and offset must both work" if not paging_ok else "the offset check failed"
        findings.append(_undecided("max_results", why, guard))
    else:
        big = await sender.get(listing_request)
        follow = cap_followups(big)
        more = await sender.get_all(follow)
        findings += interpret_caps(listing_request, big, [more[r] for r in follow])
    profile = build_profile(findings, name=client.url, notes=notes)
    return ProbeReport(profile=profile, findings=tuple(findings), requests=sender.sent, context=ctx)


class Sender:
    """Sends probe requests through a client: bounded in count and in flight, answers cached."""

    def __init__(self, client: AsyncQidoRS, *, max_in_flight: int, budget: int) -> None:
        import anyio

        self._client = client
        self._limiter = anyio.CapacityLimiter(max(1, min(max_in_flight, client.concurrency_limit)))
        self._budget = budget
        self._answers: dict[ProbeRequest, Answer] = {}
        self.sent = 0

    async def get(self, request: ProbeRequest, *, raise_for_status: bool = False) -> Answer:
        """The answer to ``request`` (sent once; later calls reuse it)."""
        from aqido.errors import HTTPStatusError, InvalidResponseError, error_for_status
        from aqido.protocol import join_url, parse_response
        from aqido.retry import call_with_retry

        cached = self._answers.get(request)
        if cached is not None:
            return cached
        if self.sent >= self._budget:
            raise RuntimeError(f"the probe would exceed its budget of {self._budget} requests")
        self.sent += 1
        client = self._client
        url = join_url(client.url, request.path, request.query)
        # Transient answers (429, 502-504) and transport errors are retried as the client
        # retries; a 500 is an answer the probe reads (a server failing on a query form).
        transient = client.retry.statuses - {500}

        async def attempt() -> tuple[int, Mapping[str, str], bytes]:
            async with self._limiter:
                headers = await client._request_headers()
                if request.accept is not None:
                    headers["Accept"] = request.accept
                status, raw, body = await client._send(url, headers)
            if status in transient:
                error = error_for_status(status)
                raise error(status, url, body, reason="", headers=_joined(raw))
            return status, raw, body

        raw_headers: Mapping[str, str]
        try:
            status, raw_headers, body = await call_with_retry(
                attempt, client.retry, what=f"GET {url}"
            )
        except HTTPStatusError as exc:
            if raise_for_status:
                raise
            status, raw_headers, body = exc.status, {}, b""
        flat = {k.lower(): v for k, v in _joined(raw_headers).items()}
        items: tuple[dict[str, Any], ...] | None = None
        if 200 <= status < 300 or raise_for_status:
            try:
                items = tuple(parse_response(status, raw_headers, body, url=url).items)
            except InvalidResponseError:
                if raise_for_status:
                    raise
                items = None
        answer = Answer(status=status, headers=flat, items=items)
        self._answers[request] = answer
        return answer

    async def get_all(self, requests: Sequence[ProbeRequest]) -> dict[ProbeRequest, Answer]:
        """The answers to ``requests`` (duplicates sent once), a few in flight at a time."""
        import anyio

        unique = list(dict.fromkeys(requests))
        if self.sent + sum(r not in self._answers for r in unique) > self._budget:
            raise RuntimeError(f"the probe would exceed its budget of {self._budget} requests")
        async with anyio.create_task_group() as group:
            for request in unique:
                group.start_soon(self.get, request)
        return {r: self._answers[r] for r in unique}


def _joined(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers.items():
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out

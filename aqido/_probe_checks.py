"""The probe's single-step checks: what each asks the archive and how it reads the answers.

:func:`plan_checks` turns the :class:`~aqido._probe_model.ProbeContext` into the
checks the archive's data allows, each a few requests and a pure ``interpret``
function from their answers to findings.  Matching checks are narrowed to study A
with ``StudyInstanceUID=A`` (so a server cap or a popular name cannot hide A), and
each comes with a negative control (a value A must *not* match), so a server that
ignores a key is not mistaken for one that matches it.  The public names are
re-exported by :mod:`aqido.probe`.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from aqido._probe_keys import (
    matched_keys_check,
    range_keys_check,
    temporal_text_check,
    time_requests,
)
from aqido._probe_model import (
    KEYWORDS,
    Answer,
    Check,
    Finding,
    ProbeContext,
    ProbeRequest,
    add_days,
    studies_request,
    undecided,
)

_STUDY_DESCRIPTION = "00081030"
#: A UID no archive holds (under aqido's own test root), for "nothing matches" checks.
_NO_SUCH_UID = "1.2.826.0.1.3680043.10.1447.999.4242"


def _pct(text: str) -> str:
    """Every byte percent-encoded: only a server that decodes can read it."""
    return "".join(f"%{b:02X}" for b in text.encode("utf-8"))


def _swapcase(text: str) -> str:
    return text.swapcase()


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
        checks += _text_checks(a, KEYWORDS[ctx.text_key], ctx.text)
    singles = [("PatientName", ctx.name)] if ctx.name is not None else []
    if ctx.text is not None and ctx.text_key is not None:
        singles.append((KEYWORDS[ctx.text_key], ctx.text))
    if singles:
        checks.append(_single_value_check(a, singles))
    if ctx.b is not None:
        checks += _list_checks(ctx, a, ctx.b)
    if ctx.date is not None:
        checks += _date_checks(a, ctx.date)
    if ctx.time is not None:
        checks.append(_time_check(a, ctx.time))
    if ctx.birth is not None:
        checks.append(range_keys_check(*ctx.birth, a, ctx.date))
    checks.append(temporal_text_check(a, ctx.time, ctx.stored_time))
    checks.append(_unsupported_key_check(a))
    checks.append(matched_keys_check(a, ctx.own, name=ctx.name, series_own=ctx.series_own))
    checks.append(_includefield_check(a))
    checks += _paging_checks(ctx)
    checks.append(_json_accept_check(a))
    checks.append(_study_instances_check(a))
    return checks


def _status_checks(ctx: ProbeContext) -> list[Check]:
    empty = studies_request(f"StudyInstanceUID={_NO_SUCH_UID}")

    def empty_status(answers: Sequence[Answer]) -> list[Finding]:
        (ans,) = answers
        if ans.status == 204:
            return [Finding("empty_status", "no match: 204 No Content", str(empty), 204)]
        if ans.status == 200 and ans.items == ():
            return [Finding("empty_status", "no match: 200 with []", str(empty), 200)]
        return [undecided("empty_status", f"a search for an unknown UID gave {ans.status}", empty)]

    bad = studies_request("StudyDate=notadate")

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
        return [undecided(field, f"answered {ans.status}", request)]

    return Check(field, (request,), served)


def _study_instances_check(a: str) -> Check:
    return _path_check("study_instances", ProbeRequest(f"/studies/{a}/instances", "limit=1"))


def _matches(a: str, key: str, value: str, extra: str = "") -> ProbeRequest:
    return studies_request(f"StudyInstanceUID={a}&{key}={value}{extra}")


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
                return [undecided(field, why, request)]
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
                return [undecided("non_ascii_values", why, utf8)]
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
                return [undecided("fuzzy_matching", why or f"answered {ans.status}", fuzzy)]
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
                return [undecided("case_sensitive", why, flipped)]
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
            return [undecided("single_value_matching", why, requests[0])]
        kind, _, request = max(seen, key=lambda s: _LOOSENESS[s[0]])
        said = ", ".join(f"{keyword}: {how}" for how, keyword, _ in seen)
        return [Finding("single_value_matching", said, str(request), kind)]

    return Check("single_value_matching", tuple(requests), interpret)


def _list_checks(ctx: ProbeContext, a: str, b: str) -> list[Check]:
    both = studies_request(f"StudyInstanceUID={a},{b}")

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
        return [undecided("uid_lists", f"answered {ans.status}", both)]

    repeated = studies_request(f"StudyInstanceUID={a}&StudyInstanceUID={b}")

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
            undecided("repeated_keys", f"neither study came back ({_status_text(ans)})", repeated)
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
                return [undecided("value_lists", f"{key} looks ignored", control)]
            if answers[0].has(a) and answers[1].has(b):
                return [
                    Finding("value_lists", f"{key}: a list matches either value", str(list_a), True)
                ]
            return [Finding("value_lists", f"{key}: a list is not a list", str(list_a), False)]

        checks.append(Check("value_lists", (list_a, list_b, control), value_lists))
    return checks


def _date_checks(a: str, date: str) -> list[Check]:
    closed = _matches(a, "StudyDate", f"{add_days(date, -1)}-{add_days(date, 1)}")
    closed_out = _matches(a, "StudyDate", f"{add_days(date, 1)}-{add_days(date, 2)}")
    upto = _matches(a, "StudyDate", f"-{add_days(date, 1)}")
    since = _matches(a, "StudyDate", f"{add_days(date, -1)}-")
    upto_out = _matches(a, "StudyDate", f"-{add_days(date, -1)}")

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
    inside, outside = time_requests(a, time)

    def time_ranges(answers: Sequence[Answer]) -> list[Finding]:
        found, wrong = answers
        if found.has(a) and not wrong.has(a):
            return [Finding("time_ranges", "a range around A's time finds A", str(inside), True)]
        shown = outside if wrong.has(a) else inside
        return [Finding("time_ranges", "time ranges do not match as ranges", str(shown), False)]

    return Check("time_ranges", (inside, outside), time_ranges)


def _unsupported_key_check(a: str) -> Check:
    request = studies_request(f"StudyInstanceUID={a}&AqidoNoSuchAttribute=1")

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
        return [undecided("unsupported_keys", f"answered {ans.status}", request)]

    return Check("unsupported_keys", (request,), unsupported)


def _includefield_check(a: str) -> Check:
    base = studies_request(f"StudyInstanceUID={a}")
    every = studies_request(f"StudyInstanceUID={a}&includefield=all")
    one = studies_request(f"StudyInstanceUID={a}&includefield=StudyDescription")

    def keys(answer: Answer) -> set[str]:
        return {k.upper() for item in answer.items or () for k in item} if answer.has(a) else set()

    def interpret(answers: Sequence[Answer]) -> list[Finding]:
        base_keys, all_keys, one_keys = (keys(x) for x in answers)
        if not base_keys:
            return [
                undecided("includefield", "study A did not come back", base),
                undecided("includefield_all", "study A did not come back", base),
            ]
        described = _STUDY_DESCRIPTION in one_keys
        extra = sorted(all_keys - base_keys)
        out = []
        if _STUDY_DESCRIPTION in base_keys:  # returned without includefield: it shows nothing
            why = "StudyDescription comes back without includefield too"
            out.append(undecided("includefield", why, one))
        elif described:
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
            out.append(undecided("includefield", "study A may have no StudyDescription", one))
        if extra:
            text = f"includefield=all adds {len(extra)} attribute(s)"
            out.append(Finding("includefield_all", text, str(every), True))
        elif described:
            out.append(
                Finding("includefield_all", "includefield=all adds nothing", str(every), False)
            )
        else:
            out.append(
                undecided("includefield_all", "includefield=all added nothing to check", every)
            )
        return out

    return Check("includefield", (base, every, one), interpret)


def _paging_checks(ctx: ProbeContext) -> list[Check]:
    checks = []
    if len(ctx.listed) >= 3:
        two = studies_request("limit=2")

        def limit(answers: Sequence[Answer]) -> list[Finding]:
            (ans,) = answers
            if not ans.ok:
                return [undecided("limit", f"answered {ans.status}", two)]
            n = len(ans.items or ())
            return [Finding("limit", f"limit=2 gave {n} result(s)", str(two), n <= 2)]

        checks.append(Check("limit", (two,), limit))
    if len(ctx.listed) >= 2:
        first = ctx.listed[0]
        page = studies_request("limit=2&offset=1")

        def offset(answers: Sequence[Answer]) -> list[Finding]:
            (ans,) = answers
            uids = ans.uids()
            if not ans.ok or not uids:
                return [undecided("offset", f"offset=1 gave {_status_text(ans)}", page)]
            # the listing's next studies (A listed twice is at 0 and 1), or anything but A
            honoured = first not in uids or uids == list(ctx.listed[1 : 1 + len(uids)])
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
        return [undecided("json_accept", f"answered {ans.status}", request)]

    return Check("json_accept", (request,), interpret)

"""The probe's checks of which keys a server matches at all (``ServerProfile.matched_keys``),
which take ranges (``range_keys``), and whether ``-d`` finds empty values.

Each key is sent alone with a value study A does not have (narrowed to A by its
UID): a server that matches the key does not find A; one that ignores it does.  A's
own values of the keys it has, sent together, must find A: a server that answers a
key it does not match with nothing (or a 4xx) does not.
"""

from __future__ import annotations

from collections.abc import Sequence

from aqido._probe_model import (
    Answer,
    Check,
    Finding,
    ProbeRequest,
    add_days,
    first_value,
    studies_request,
    undecided,
)
from aqido.profile import RANGE_PROBED


def _matches(a: str, key: str, value: str) -> ProbeRequest:
    return studies_request(f"StudyInstanceUID={a}&{key}={value}")


#: Keys probed one by one for being matched at all (with a value study A does not have):
#: the study-level ones on ``/studies``, the series-level ones on ``/studies/A/series``.
#: The UIDs are not probed: every check relies on them.
MATCHED_KEY_PROBES: tuple[tuple[str, str, str], ...] = (
    ("study", "PatientName", "Qzxqzx^Qzx"),
    ("study", "StudyDate", "18000102"),
    ("study", "ModalitiesInStudy", "QZ"),
    ("study", "PatientID", "QZXQZX"),
    ("study", "PatientBirthDate", "18000101"),
    ("study", "PatientSex", "QZX"),
    ("study", "AccessionNumber", "QZXQZX"),
    ("study", "StudyID", "QZXQZX"),
    ("study", "StudyDescription", "QZXQZX"),
    ("study", "StudyTime", "000001"),
    ("study", "ReferringPhysicianName", "Qzxqzx^Qzx"),
    ("series", "Modality", "QZ"),
    ("series", "SeriesNumber", "987654321"),
    ("series", "SeriesDescription", "QZXQZX"),
)
#: Keys a profile with a ``matched_keys`` list always holds: the UIDs (the probe relies
#: on them).  PatientName, StudyDate and ModalitiesInStudy are probed like the others: a
#: server that ignores one must not get a profile that sends it and trusts the answer.
ASSUMED_MATCHED = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)


def matched_keys_check(
    a: str,
    own: Sequence[tuple[str, str]] = (),
    *,
    name: str | None = None,
    series_own: Sequence[tuple[str, str]] = (),
) -> Check:
    """Which keys the server matches at all: a value A lacks must not find A (or its series).

    ``own``: A's own values of some of the keys (:attr:`ProbeContext.own`), sent together
    as a positive control: a server that answers a key it does not match with nothing
    (``unsupported_keys="empty"``) or a 4xx looks, to the value A lacks, like one that
    matches it; A's own values find A only where every key is matched.  When they do
    not, the keys among them are not trusted as matched (aqido matches them locally).
    ``name``: A's PatientName; the value A lacks is then the one the name checks send.
    ``series_own``: the same control for the series keys, with one of A's series' own
    values (:attr:`ProbeContext.series_own`), which must find a series of A.
    """
    probes = [
        (level, keyword, f"{name}Qzx" if keyword == "PatientName" and name else value)
        for level, keyword, value in MATCHED_KEY_PROBES
    ]
    requests = tuple(
        _matches(a, keyword, value)
        if level == "study"
        else ProbeRequest(f"/studies/{a}/series", f"{keyword}={value}")
        for level, keyword, value in probes
    )
    positive = (
        studies_request(f"StudyInstanceUID={a}&" + "&".join(f"{k}={v}" for k, v in own))
        if own
        else None
    )
    series_positive = (
        ProbeRequest(f"/studies/{a}/series", "&".join(f"{k}={v}" for k, v in series_own))
        if series_own
        else None
    )
    controls = tuple(r for r in (positive, series_positive) if r is not None)

    def interpret(answers: Sequence[Answer]) -> list[Finding]:
        ignored: list[str] = []
        matched: list[str] = []
        unproven: list[str] = []
        shown = dict(zip(controls, answers[len(probes) :], strict=True))
        trusted = positive is None or shown[positive].has(a)
        series_trusted = series_positive is None or bool(
            shown[series_positive].ok and shown[series_positive].items
        )
        owned = {keyword for keyword, _ in own}
        series_owned = {keyword for keyword, _ in series_own}
        for (level, keyword, _), ans in zip(probes, answers[: len(probes)], strict=True):
            found = ans.ok and (ans.has(a) if level == "study" else bool(ans.items))
            if found:
                ignored.append(keyword)
            elif (keyword in owned and not trusted) or (
                keyword in series_owned and not series_trusted
            ):
                unproven.append(keyword)
            else:  # A not found, or refused (4xx): the server reads the key
                matched.append(keyword)
        if not ignored and not unproven:
            return [Finding("matched_keys", "every probed key is matched", str(requests[0]), "all")]
        keys = tuple(sorted({*matched, *ASSUMED_MATCHED}))
        said = []
        if ignored:
            said.append(f"ignored: {', '.join(ignored)}")
        failed = [
            (control, why)
            for control, ok, why in (
                (positive, trusted, "A's own values did not find A"),
                (series_positive, series_trusted, "A's series' own values did not find it"),
            )
            if control is not None and not ok
        ]
        if unproven:
            why = "; ".join(f"{text}: {_status_text(shown[control])}" for control, text in failed)
            said.append(f"not shown matched: {', '.join(unproven)} ({why})")
        keywords = [k for _, k, _ in probes]
        first = requests[keywords.index(ignored[0])] if ignored else failed[0][0]
        return [
            Finding(
                "matched_keys",
                f"{'; '.join(said)} (kept out of requests, matched by aqido)",
                str(first),
                keys,
            )
        ]

    return Check("matched_keys", (*requests, *controls), interpret)


def _status_text(answer: Answer) -> str:
    if answer.ok:
        return f"{answer.status} with {len(answer.items or ())} result(s)"
    return f"{answer.status}"


def range_keys_check(study: str, birth: str, a: str, date: str | None) -> Check:
    """Whether ranges work beyond StudyDate: a PatientBirthDate range around ``study``'s
    birth date finds it (A, or another listed study when A has no birth date).

    tiny_pacs matches StudyDate ranges and refuses a PatientBirthDate one (400): a
    server that fails here while A's StudyDate range (the ``date_ranges`` check's
    request, sent once) finds A gets ranges trusted on :data:`RANGE_PROBED` only.
    """
    inside = _matches(study, "PatientBirthDate", f"{add_days(birth, -1)}-{add_days(birth, 1)}")
    outside = _matches(study, "PatientBirthDate", f"{add_days(birth, 1)}-{add_days(birth, 2)}")
    around = f"{add_days(date, -1)}-{add_days(date, 1)}" if date is not None else None
    dated = (_matches(a, "StudyDate", around),) if around is not None else ()

    def range_keys(answers: Sequence[Answer]) -> list[Finding]:
        found, control = answers[:2]
        if found.has(study) and not control.has(study):
            text = "a PatientBirthDate range around a study's birth date finds it"
            return [Finding("range_keys", text, str(inside), "all")]
        if found.has(study):
            return [undecided("range_keys", "PatientBirthDate ranges look ignored", outside)]
        if not dated or not answers[2].has(a):  # no range works: date_ranges says it
            return [undecided("range_keys", "no StudyDate range to compare with", inside)]
        text = (
            f"a PatientBirthDate range around a study's birth date: {_status_text(found)} "
            f"(ranges trusted on {', '.join(RANGE_PROBED)} only; others matched by aqido)"
        )
        return [Finding("range_keys", text, str(inside), RANGE_PROBED)]

    return Check("range_keys", (inside, outside, *dated), range_keys)


def time_requests(a: str, time: str) -> tuple[ProbeRequest, ProbeRequest]:
    """The ``time_ranges`` check's requests: a range around A's hour, and one past it."""
    hour = int(time[:2])
    inside = _matches(a, "StudyTime", f"{hour:02d}0000-{hour:02d}5959")
    out_range = f"{hour + 1:02d}0000-235959" if hour < 23 else f"000000-{hour - 1:02d}5959"
    return inside, _matches(a, "StudyTime", out_range)


def temporal_text_check(a: str, time: str | None, stored: str | None) -> Check:
    """Whether dates and times are compared as text (Orthanc), by either of two signs.

    - Archive-wide, a birth date before 1800 finds a study without one (the empty string
      sorts first); an archive where every study has one cannot show it.
    - Where time ranges work (the ``time_ranges`` check's requests, sent once), A's own
      stored time as ``HHMMSS.000000-`` misses A (``0305`` sorts before ``030500.000000``);
      only when A's time is stored as plain digits.
    Neither: not decided (the standard default).
    """
    before = studies_request("PatientBirthDate=-18000101&limit=10")
    since = f"{stored.ljust(6, '0')}.000000-" if stored is not None else None
    timed = (*time_requests(a, time), _matches(a, "StudyTime", since)) if since and time else ()

    def compared_as_text(answers: Sequence[Answer]) -> list[Finding]:
        empties = answers[0]
        if empties.ok and any(first_value(i, "00100030") is None for i in empties.items or ()):
            text = "PatientBirthDate=-18000101 finds a study without a birth date"
            return [Finding("temporal_text", text, str(before), True)]
        if timed:
            inside, outside, missed = answers[1:]
            if inside.has(a) and not outside.has(a) and not missed.has(a):
                text = f"StudyTime={since} misses A, stored at {stored}: compared as text"
                return [Finding("temporal_text", text, str(timed[2]), True)]
        why = "no study without a birth date, and A's stored time did not show it"
        return [undecided("temporal_text", why, before)]

    return Check("temporal_text", (before, *timed), compared_as_text)

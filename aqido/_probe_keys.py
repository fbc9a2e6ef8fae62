"""The probe's check of which keys a server matches at all (``ServerProfile.matched_keys``).

Each key is sent alone with a value study A does not have (narrowed to A by its
UID): a server that matches the key does not find A; one that ignores it does.
"""

from __future__ import annotations

from collections.abc import Sequence

from aqido._probe_model import Answer, Check, Finding, ProbeRequest, studies_request


def _matches(a: str, key: str, value: str) -> ProbeRequest:
    return studies_request(f"StudyInstanceUID={a}&{key}={value}")


#: Keys probed one by one for being matched at all (with a value study A does not have):
#: the study-level ones on ``/studies``, the series-level ones on ``/studies/A/series``.
#: PatientName, StudyDate, ModalitiesInStudy and the UIDs are probed by other checks.
MATCHED_KEY_PROBES: tuple[tuple[str, str, str], ...] = (
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
#: on them) and the keys the other checks measure the matching of.
ASSUMED_MATCHED = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "PatientName",
    "StudyDate",
    "ModalitiesInStudy",
)


def matched_keys_check(a: str) -> Check:
    """Which keys the server matches at all: a value A lacks must not find A (or its series)."""
    requests = tuple(
        _matches(a, keyword, value)
        if level == "study"
        else ProbeRequest(f"/studies/{a}/series", f"{keyword}={value}")
        for level, keyword, value in MATCHED_KEY_PROBES
    )

    def interpret(answers: Sequence[Answer]) -> list[Finding]:
        ignored: list[str] = []
        matched: list[str] = []
        for (level, keyword, _), ans in zip(MATCHED_KEY_PROBES, answers, strict=True):
            if not ans.ok:  # refused (4xx): the server reads the key, it does not ignore it
                matched.append(keyword)
                continue
            found = ans.has(a) if level == "study" else bool(ans.items)
            (ignored if found else matched).append(keyword)
        if not ignored:
            return [Finding("matched_keys", "every probed key is matched", str(requests[0]), "all")]
        keys = tuple(sorted({*matched, *ASSUMED_MATCHED}))
        first = requests[[k for _, k, _ in MATCHED_KEY_PROBES].index(ignored[0])]
        return [
            Finding(
                "matched_keys",
                f"ignored: {', '.join(ignored)} (kept out of requests, matched by aqido)",
                str(first),
                keys,
            )
        ]

    return Check("matched_keys", requests, interpret)

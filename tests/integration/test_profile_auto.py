"""``profile="auto"`` on both real servers: the standard's answers from non-standard servers.

Issue 13's "done when": with ``profile="auto"``, an exact PatientName, a
PatientName wildcard, a ModalitiesInStudy list and a StudyInstanceUID list
return exactly the standard's answer on Orthanc and on tiny_pacs (which on its
own matches names as substrings, reads ``*`` literally and lists as one value:
docs/tinypacs.md).  Expected answers come from the seed.  PN case: the
client matches person names case-sensitively by default (``pn_case_sensitive=True``);
with ``pn_case_sensitive=None`` it follows the server, and both servers ignore
case (their profiles say so, as PS3.4 allows).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import pytest

from aqido.client import AsyncQidoRS
from aqido.profile import ServerProfile
from aqido.query import HierarchicalQuery, QueryLevel, RelationalQuery
from aqido.testing.synthetic import SyntheticStudy
from tests.integration.expected import check_series_results, check_study
from tests.integration.support import SEEDED, Served

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("server", ["orthanc", "tinypacs"], indirect=True),
]


@pytest.fixture
async def qido(server: Served) -> AsyncIterator[AsyncQidoRS]:
    """A client of the seeded server that probes it once and plans with its profile."""
    async with AsyncQidoRS(server.dicomweb_url, profile="auto") as client:
        yield client


def name_matches(pattern: str, value: str, *, case: bool) -> bool:
    """The standard's PN matching: ``*``/``?`` wildcards over the whole value, case as asked."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = re.DOTALL if case else re.DOTALL | re.IGNORECASE
    return re.fullmatch(regex, value, flags) is not None


def _where(predicate: Callable[[SyntheticStudy], object]) -> set[str]:
    return {s.study_instance_uid for s in SEEDED.studies if predicate(s)}


async def _check(
    qido: AsyncQidoRS, server: Served, query: HierarchicalQuery, expected: set[str]
) -> None:
    assert expected, "a case must match something to prove anything"
    found = await qido.search(query)
    assert sorted(s.StudyInstanceUID for s in found) == sorted(expected)
    for study in found:
        check_study(study, SEEDED.study(study.StudyInstanceUID), server.dicomweb_url, server.omits)
    assert qido.profile is not None


@pytest.mark.anyio
@pytest.mark.parametrize(
    "pattern",
    ["Doe^John", "Doe*", "doe^j*", "D?e^*", "*Smith*", "M*ller^J*", "Müller^Jürgen", "Ivanov*"],
)
async def test_patient_name(qido: AsyncQidoRS, server: Served, pattern: str) -> None:
    expected = _where(lambda s: name_matches(pattern, s.patient_name, case=True))
    await _check(qido, server, HierarchicalQuery(PatientName=pattern), expected)


@pytest.mark.anyio
@pytest.mark.parametrize("pattern", ["Doe^John", "doe^j*", "*SMITH*", "m*LLER^j*"])
async def test_patient_name_with_the_servers_case(server: Served, pattern: str) -> None:
    expected = _where(lambda s: name_matches(pattern, s.patient_name, case=False))
    async with AsyncQidoRS(server.dicomweb_url, profile="auto", pn_case_sensitive=None) as qido:
        await _check(qido, server, HierarchicalQuery(PatientName=pattern), expected)


@pytest.mark.anyio
@pytest.mark.parametrize("modalities", [["MG", "XA"], ["CT", "MR", "NM"]])
async def test_modalities_in_study_list(
    qido: AsyncQidoRS, server: Served, modalities: list[str]
) -> None:
    expected = _where(lambda s: set(modalities) & set(s.modalities_in_study))
    await _check(qido, server, HierarchicalQuery(ModalitiesInStudy=modalities), expected)


@pytest.mark.anyio
async def test_study_instance_uid_list(qido: AsyncQidoRS, server: Served) -> None:
    wanted = [s.study_instance_uid for s in SEEDED.studies[10:14]]
    await _check(qido, server, HierarchicalQuery(StudyInstanceUID=wanted), set(wanted))


@pytest.mark.anyio
async def test_a_list_and_a_wildcard_together(qido: AsyncQidoRS, server: Served) -> None:
    expected = _where(
        lambda s: (
            name_matches("Doe*", s.patient_name, case=True)
            and {"CT", "MR"} & set(s.modalities_in_study)
        )
    )
    query = HierarchicalQuery(PatientName="Doe*", ModalitiesInStudy=["CT", "MR"])
    await _check(qido, server, query, expected)


@pytest.mark.anyio
async def test_all_series_of_a_modality(qido: AsyncQidoRS, server: Served) -> None:
    # tiny_pacs has no /series: the profile makes the client walk the hierarchy.
    expected = [s for s in SEEDED.series if s.modality == "NM"]
    found = await qido.search(RelationalQuery(query_level=QueryLevel.SERIES, Modality="NM"))
    check_series_results(found, expected, SEEDED, server.dicomweb_url, omits=server.omits)


@pytest.mark.anyio
@pytest.mark.parametrize(("key", "value"), [("StudyDate", "2010"), ("StudyTime", "10")])
async def test_a_year_or_an_hour(qido: AsyncQidoRS, server: Served, key: str, value: str) -> None:
    # Orthanc compares a single value as text (StudyDate=2010: nothing), tiny_pacs refuses a
    # year (400): the profile sends the span as a range and matches the rest locally.
    attribute = {"StudyDate": "study_date", "StudyTime": "study_time"}[key]
    expected = _where(lambda s: getattr(s, attribute).startswith(value))
    await _check(qido, server, HierarchicalQuery(filters={key: value}), expected)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "low", "high"),
    [("2008-2013", "2008", "2013"), ("200807-201303", "200807", "201303"), ("-2013", "", "2013")],
)
async def test_a_date_range_with_bounds_of_less_precision(
    qido: AsyncQidoRS, server: Served, value: str, low: str, high: str
) -> None:
    # A bound is the span it covers (2008-2013: 20080101 to 20131231). Sent as written,
    # Orthanc (comparing text) missed every study of 2013 and tiny_pacs answered 400:
    # aqido sends the full dates.
    expected = _where(
        lambda s: low <= s.study_date[: len(high)] and s.study_date[: len(high)] <= high
    )
    await _check(qido, server, HierarchicalQuery(filters={"StudyDate": value}), expected)


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["closed", "since", "until", "year"])
async def test_a_birth_date_range(qido: AsyncQidoRS, server: Served, form: str) -> None:
    # tiny_pacs matches StudyDate ranges but answers PatientBirthDate=d1-d2 with a 400: the
    # probe measures it (range_keys) and the range is matched locally; Orthanc matches it,
    # but -d finds the studies without a birth date too (temporal_text): dropped.
    born = sorted(s.patient_birth_date for s in SEEDED.studies if s.patient_birth_date)
    low, pivot = born[len(born) // 4], born[len(born) // 2]
    value, wanted = {
        "closed": (f"{low}-{pivot}", lambda d: low <= d <= pivot),
        "since": (f"{pivot}-", lambda d: d >= pivot),
        "until": (f"-{pivot}", lambda d: d <= pivot),
        "year": (pivot[:4], lambda d: d.startswith(pivot[:4])),
    }[form]
    expected = _where(lambda s: s.patient_birth_date and wanted(s.patient_birth_date))
    await _check(qido, server, HierarchicalQuery(filters={"PatientBirthDate": value}), expected)
    assert qido.profile is not None
    ranges = None if server.name == "orthanc" else ("StudyDate", "StudyTime")
    assert qido.profile.range_keys == ranges
    assert qido.profile.temporal_text is (server.name == "orthanc")


def _seconds(text: str) -> float:
    """A TM value (HH, HHMM, HHMMSS[.f]) as seconds since midnight."""
    whole, _, fraction = text.partition(".")
    hh, mm, ss = (int(whole[i : i + 2] or 0) for i in (0, 2, 4))
    return hh * 3600 + mm * 60 + ss + float(f"0.{fraction or 0}")


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["closed", "since", "single"])
async def test_a_time_range_finds_times_stored_with_less_precision(
    qido: AsyncQidoRS, server: Served, form: str
) -> None:
    # Orthanc compares times as text: StudyTime=HHMM00-... missed a study stored as HHMM
    # (it sorts before HHMM00); the profile sends the range as text comparison reads it.
    # tiny_pacs ignores StudyTime: its profile matches it locally.
    short = next(s.study_time for s in SEEDED.studies if len(s.study_time) == 4)
    low = _seconds(short)
    value, high = {
        "closed": (f"{short}00-{int(short[:2]) + 1:02d}0000", low + 3600 - 60 * int(short[2:])),
        "since": (f"{short}00-", 86400.0),
        "single": (f"{short}00", low + 0.999999),
    }[form]
    expected = _where(lambda s: bool(s.study_time) and low <= _seconds(s.study_time) <= high)
    await _check(qido, server, HierarchicalQuery(filters={"StudyTime": value}), expected)
    assert qido.profile is not None
    assert qido.profile.temporal_text is (server.name == "orthanc")


@pytest.mark.anyio
async def test_a_series_number_written_with_a_leading_zero(
    qido: AsyncQidoRS, server: Served
) -> None:
    # aqido compares numbers by value: SeriesNumber=01 is series 1. Orthanc compares the
    # text and found nothing; aqido sends 01,1 and filters the answer.
    study = SEEDED.studies[3]
    expected = [s for s in study.series if s.series_number == 1]
    assert expected
    query = HierarchicalQuery(
        query_level=QueryLevel.SERIES,
        StudyInstanceUID=study.study_instance_uid,
        filters={"SeriesNumber": "01"},
    )
    found = await qido.search(query)
    check_series_results(found, expected, SEEDED, server.dicomweb_url, omits=server.omits)


@pytest.mark.anyio
@pytest.mark.parametrize("profile", ["preset", "auto"])
@pytest.mark.parametrize("pattern", ["Doe^John", "M*ller^J*"])
async def test_fuzzymatching_gives_the_literal_answer(
    server: Served, profile: str, pattern: str
) -> None:
    # Both servers ignore fuzzymatching=true and say nothing. tiny_pacs then matches
    # PatientName as ever, as a substring (Doe^John found Doe^John^Q^Dr^Jr): the standard
    # answer of a server without fuzzy matching is the literal one, and aqido says so.
    query = HierarchicalQuery(PatientName=pattern, fuzzymatching=True)
    expected = _where(lambda s: name_matches(pattern, s.patient_name, case=True))
    preset = {"orthanc": ServerProfile.orthanc(), "tinypacs": ServerProfile.tiny_pacs()}
    async with AsyncQidoRS(server.dicomweb_url) as raw:
        as_is = {s.StudyInstanceUID for s in await raw.search(query)}
    assert (as_is != expected) is (server.name == "tinypacs")
    chosen = preset[server.name] if profile == "preset" else "auto"
    async with AsyncQidoRS(server.dicomweb_url, profile=chosen) as qido:
        await _check(qido, server, query, expected)
        found = await qido.search(query)
        assert qido.profile is not None
        assert qido.profile.fuzzy_matching == "ignored"
    notes = [w.text for w in found.warnings if w.agent == "aqido"]
    assert len(notes) == 1
    assert "only literal matching" in notes[0]

"""``probe()``: the pure plan and interpretation, and probes of FakeArchives built from profiles.

The property test is the contract of issue 13: ``probe()`` of a
``FakeArchive(profile=p)`` returns ``p``, for generated profiles bounded to what
the fake emulates and what the probe can observe with the data it is loaded with.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qido_server import MiniArchive, element

from aqido import AsyncQidoRS, QidoRS
from aqido.errors import NotFoundError, TransportError
from aqido.probe import (
    MAX_IN_FLIGHT,
    MAX_REQUESTS,
    Answer,
    Finding,
    ProbeContext,
    ProbeRequest,
    build_profile,
    cap_followups,
    cap_listing_request,
    discovery_request,
    interpret_caps,
    make_context,
    plan_checks,
    probe_report,
)
from aqido.profile import RANGE_PROBED, ServerProfile
from aqido.testing import FakeArchive, SyntheticArchive

#: The data every probed fake holds: 25 studies, more than the caps the test generates.
DATA = SyntheticArchive(seed=3, studies=25, series_per_study=2, instances_per_series=1)
STUDY_UIDS = [s.study_instance_uid for s in DATA.studies]


def _study(uid: str, **values: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"0020000D": {"vr": "UI", "Value": [uid]}}
    if "name" in values:
        item["00100010"] = {"vr": "PN", "Value": [{"Alphabetic": values["name"]}]}
    if "pid" in values:
        item["00100020"] = {"vr": "LO", "Value": [values["pid"]]}
    if "date" in values:
        item["00080020"] = {"vr": "DA", "Value": [values["date"]]}
    if "time" in values:
        item["00080030"] = {"vr": "TM", "Value": [values["time"]]}
    if "mods" in values:
        item["00080061"] = {"vr": "CS", "Value": list(values["mods"])}
    return item


LISTING = Answer(
    200,
    items=(
        _study("1.2.1", name="Doe John", pid="P/1"),  # unusable values (space, slash)
        _study(
            "1.2.2", name="Doe^Jane", pid="pat02", date="20200229", time="10:30:00", mods=("CT",)
        ),
        _study("1.2.3", name="Roe^Rich", pid="pat03", date="20200101", mods=("MR",)),
    ),
)


def test_context_takes_the_study_with_usable_values_and_a_contrasting_second() -> None:
    ctx = make_context(LISTING)
    assert ctx.listed == ("1.2.1", "1.2.2", "1.2.3")
    assert ctx.a == "1.2.2"
    assert (ctx.name, ctx.text, ctx.date, ctx.time) == ("Doe^Jane", "pat02", "20200229", "103000")
    assert ctx.b == "1.2.3"
    assert (ctx.list_key, ctx.list_a, ctx.list_b) == ("ModalitiesInStudy", "CT", "MR")


@pytest.mark.parametrize("date", ["20231345", "00000000", "99991231", "00010101"])
def test_a_date_no_calendar_has_is_no_test_date(date: str) -> None:
    """A stored StudyDate that is no day (or at the calendar's edge) is not probed around."""
    items = (_study("1.2.1", name="Doe^Jane", date=date), _study("1.2.2", name="Roe^Rich"))
    ctx = make_context(Answer(200, items=items))
    assert (ctx.a, ctx.date) == ("1.2.1", None)
    assert "date_ranges" not in {c.capability for c in plan_checks(ctx)}
    listing = Answer(200, items=tuple(_study(f"1.{i}", date=date) for i in range(100)))
    assert cap_followups(listing) == [ProbeRequest("/studies", "offset=100&limit=1")]


@pytest.mark.parametrize(
    ("date", "time"),
    [
        ("\u0662\u0660\u0662\u0663\u0660\u0661\u0660\u0665", "\u0661\u0662\u0663\u0660"),
        ("\uff12\uff10\uff12\uff13\uff10\uff11\uff10\uff15", "\uff11\uff12"),  # fullwidth
        ("2023\u0966\u0967\u0966\u096b", "12\u0969\u0966"),  # a few Devanagari digits
    ],
)
def test_a_date_or_time_in_non_ascii_digits_is_no_test_value(date: str, time: str) -> None:
    # \d took them and int() read them (Arabic-Indic 20230105 as 2023-01-05): the probe then
    # asked for ASCII ranges around a value the server does not hold as one, and a
    # standard archive holding such dates was found to have no date ranges at all.
    items = (_study("1.2.1", name="Doe^Jane", date=date, time=time), _study("1.2.2"))
    ctx = make_context(Answer(200, items=items))
    assert (ctx.a, ctx.date, ctx.time) == ("1.2.1", None, None)
    planned = {c.capability for c in plan_checks(ctx)}
    assert "date_ranges" not in planned
    assert "time_ranges" not in planned


@pytest.mark.parametrize("time", ["990000", "2400", "126000", "1"])
def test_a_time_no_clock_shows_is_no_test_time(time: str) -> None:
    items = (_study("1.2.1", name="Doe^Jane", time=time), _study("1.2.2"))
    assert make_context(Answer(200, items=items)).time is None


@pytest.mark.anyio
@pytest.mark.parametrize("date", ["20231345", "99991231"])
async def test_a_probe_of_an_archive_with_an_impossible_date_completes(date: str) -> None:
    async with MiniArchive(studies=5) as archive:
        archive.studies[0]["00080020"] = element("DA", date)
        async with AsyncQidoRS(archive.url, retries=0) as client:
            report = await probe_report(client)
    assert report.context is not None
    assert report.context.date != date  # another study's date, a real day


@pytest.mark.anyio
async def test_a_study_listed_twice_is_not_its_own_contrast() -> None:
    """A listed twice: B is another study, and offset=1 landing on A's repeat is honoured."""
    async with MiniArchive(studies=3) as archive:  # repeated keys: the first value wins
        for study in archive.studies:
            study["00100020"]["Value"] = ["PID1"]  # one patient: no B is better than another
        archive.studies.insert(1, copy.deepcopy(archive.studies[0]))
        async with AsyncQidoRS(archive.url, retries=0) as client:
            report = await probe_report(client)
    assert report.context is not None
    assert report.context.b not in (None, report.context.a)
    assert (report.profile.repeated_keys, report.profile.offset) == ("first", True)


@pytest.mark.anyio
@pytest.mark.parametrize("uid", ["1.2\x00", "1.2&PatientID=x", "1.2/../x", "1.2 3"])
async def test_a_study_uid_that_cannot_be_sent_as_it_is_is_not_probed_with(uid: str) -> None:
    """A server's UID goes into paths and queries raw: one that would break them is skipped."""
    async with MiniArchive(studies=3) as archive:
        archive.studies[0]["0020000D"] = element("UI", uid)
        async with AsyncQidoRS(archive.url, retries=0) as client:
            report = await probe_report(client)
    assert report.context is not None
    assert report.context.listed[0] == uid
    assert uid not in (report.context.a, report.context.b)
    assert not any(uid in request for f in report.findings for request in [f.request])


@pytest.mark.anyio
async def test_an_attribute_returned_by_default_does_not_show_includefield_works() -> None:
    async with MiniArchive(studies=3) as archive:  # it ignores includefield
        for study in archive.studies:
            study["00081030"] = element("LO", "CT Head")  # and returns StudyDescription anyway
        async with AsyncQidoRS(archive.url, retries=0) as client:
            report = await probe_report(client)
    finding = next(f for f in report.findings if f.capability == "includefield")
    assert not finding.decided
    assert "without includefield" in finding.finding


def test_empty_archive_plans_only_data_free_checks() -> None:
    ctx = make_context(Answer(204))
    assert ctx == ProbeContext(listed=())
    capabilities = {c.capability for c in plan_checks(ctx)}
    assert capabilities == {
        "empty_status",
        "bad_request_status",
        "unknown_parent_status",
        "relational_series",
        "relational_instances",
    }


def _findings(ctx: ProbeContext, answer: Callable[[ProbeRequest], Answer]) -> list[Finding]:
    out: list[Finding] = []
    for check in plan_checks(ctx):
        out += check.interpret([answer(r) for r in check.requests])
    return out


def test_a_server_that_ignores_patient_name_decides_nothing_about_it() -> None:
    ctx = make_context(LISTING)
    a = ctx.a
    assert a is not None

    def answer(request: ProbeRequest) -> Answer:
        # Every search narrowed to A finds A, whatever else it asks: keys are ignored.
        if f"StudyInstanceUID={a}" in request.query:
            return Answer(200, items=(_study(a),))
        return Answer(200, items=LISTING.items)

    by_field = {f.capability: f for f in _findings(ctx, answer)}
    for field in ("percent_decoding", "wildcard_star", "pn_case_sensitive", "case_sensitive"):
        assert not by_field[field].decided, field
        assert "ignored" in by_field[field].finding
    assert by_field["unsupported_keys"].value == "ignore"
    profile = build_profile(list(by_field.values()))
    assert profile.percent_decoding is True  # the standard default, kept
    assert any(note.startswith("wildcard_star: not decided") for note in profile.notes)


def test_caps_after_the_offset_are_seen_past_the_listing() -> None:
    listing = Answer(200, items=tuple(_study(f"1.{i}") for i in range(500)))
    follow = cap_followups(listing)
    assert follow[0] == ProbeRequest("/studies", "offset=500&limit=1")
    findings = interpret_caps(
        ProbeRequest("/studies"), listing, [Answer(200, items=(_study("9"),))]
    )
    profile = build_profile(findings)
    assert (profile.max_results, profile.cap_plus_one, profile.cap_before_offset) == (
        500,
        False,
        False,
    )
    assert profile.cap_warning is False


def test_orthanc_caps_are_cap_plus_one_before_the_offset() -> None:
    dates = [f"2020{m:02d}01" for m in range(1, 12)]
    listing = Answer(
        200,
        headers={},
        items=tuple(_study(f"1.{i}", date=dates[i]) for i in range(11)),
    )
    follow = cap_followups(listing)
    assert len(follow) == 3  # past the listing, and the date split (11 = 10 + 1 is suspect)
    halves = [Answer(200, items=tuple(_study(f"2.{i}") for i in range(8)))] * 2
    findings = interpret_caps(ProbeRequest("/studies"), listing, [Answer(200), *halves])
    profile = build_profile(findings)
    assert (profile.max_results, profile.cap_plus_one, profile.cap_before_offset) == (
        10,
        True,
        True,
    )


def test_a_listing_with_nothing_past_it_is_not_capped() -> None:
    listing = Answer(200, items=tuple(_study(f"1.{i}") for i in range(37)))
    assert len(cap_followups(listing)) == 1  # 37 is no typical cap: no split
    profile = build_profile(interpret_caps(ProbeRequest("/studies"), listing, [Answer(204)]))
    assert profile.max_results is None
    assert any("no result cap seen" in note for note in profile.notes)


def test_a_large_archive_without_a_cap_is_not_capped_at_the_probes_own_limit() -> None:
    """More than 10,001 studies, no cap: ``limit=10001`` gives 10,001 and more lie past them."""
    request = cap_listing_request(True, Answer(200, items=(_study("9.9"),)))
    assert request == ProbeRequest("/studies", "limit=10001")
    dates = [f"2020{m:02d}01" for m in range(1, 13)]
    listing = Answer(200, items=tuple(_study(f"1.{i}", date=dates[i % 12]) for i in range(10001)))
    follow = cap_followups(listing)
    assert follow[0] == ProbeRequest("/studies", "offset=10001&limit=1")
    assert all(r.query.endswith("&limit=10002") for r in follow[1:])  # halves bounded too
    halves = [Answer(200, items=tuple(_study(f"2.{i}") for i in range(10002)))] * 2
    past = Answer(200, items=(_study("3.1"),))
    findings = interpret_caps(request, listing, [past, *halves][: len(follow)])
    profile = build_profile(findings)
    assert (profile.max_results, profile.cap_plus_one) == (None, False)
    assert any("no cap up to that" in note for note in profile.notes)
    # nothing past them and halves that hold more: Orthanc's cap of 10,000 (+1, before offset)
    orthanc = build_profile(interpret_caps(request, listing, [Answer(200, items=()), *halves]))
    assert (orthanc.max_results, orthanc.cap_plus_one, orthanc.cap_before_offset) == (
        10000,
        True,
        True,
    )


@pytest.mark.anyio
async def test_a_listing_of_nothing_is_no_cap_of_zero() -> None:
    """A server that lists nothing without a key or a limit (studies exist): not decided."""
    past = Answer(200, items=(_study("1"),))
    empty = interpret_caps(ProbeRequest("/studies"), Answer(204), [past])
    assert [f.value for f in empty] == [None]
    async with MiniArchive(studies=5) as archive:
        archive.rewrite_page = lambda page, limit: [] if limit == 0 and len(page) == 5 else page
        async with AsyncQidoRS(archive.url, retries=0) as client:
            report = await probe_report(client)
    assert report.profile.max_results is None
    assert any(n.startswith("max_results: not decided") for n in report.profile.notes)


def test_the_cap_listing_is_bounded_and_needs_paging() -> None:
    many = Answer(200, items=(_study("1.1"),))
    assert cap_listing_request(True, many) == ProbeRequest("/studies", "limit=10001")
    assert cap_listing_request(True, Answer(204)) == ProbeRequest("/studies", "")
    assert cap_listing_request(False, Answer(204)) is None


def test_a_warning_on_the_capped_listing_is_recorded() -> None:
    listing = Answer(
        200,
        headers={"warning": '299 x "There are 7 additional results that can be requested"'},
        items=tuple(_study(f"1.{i}") for i in range(20)),
    )
    findings = interpret_caps(
        ProbeRequest("/studies"), listing, [Answer(200, items=(_study("2"),)), Answer(204)]
    )
    assert build_profile(findings).cap_warning is True


# --- against FakeArchive ------------------------------------------------------------------


def _probe(profile: ServerProfile, **options: Any) -> tuple[ServerProfile, int, FakeArchive]:
    async def run() -> tuple[ServerProfile, int, FakeArchive]:
        archive = FakeArchive(DATA, profile=profile, **options)
        async with archive, AsyncQidoRS(archive.url, retries=0) as client:
            report = await probe_report(client)
        return report.profile, report.requests, archive

    return anyio.run(run)


@pytest.mark.parametrize(
    "preset",
    [
        ServerProfile.standard(),
        ServerProfile.orthanc(),
        ServerProfile.orthanc(max_results=10),
        attrs.evolve(ServerProfile.tiny_pacs(), max_results=20),
    ],
    ids=["standard", "orthanc", "orthanc-capped", "tiny_pacs-like"],
)
def test_probe_of_a_preset_fake_is_the_preset(preset: ServerProfile) -> None:
    measured, sent, archive = _probe(preset, latency=0.005)
    assert measured == preset
    assert sent == len(archive.requests) <= MAX_REQUESTS
    assert archive.peak_concurrency <= MAX_IN_FLIGHT
    assert all(r.method == "GET" for r in archive.requests)


@st.composite
def profiles(draw: st.DrawFn) -> ServerProfile:
    """Profiles the fake emulates and the probe can tell apart with ``DATA`` loaded."""
    b = st.booleans()
    paging = draw(st.sampled_from([(True, True), (True, False), (False, True)]))
    capped = paging == (True, True) and draw(b)
    pn_case = draw(b)
    fuzzy = draw(st.sampled_from(["warning", "ignored", "error", "supported"]))
    if fuzzy == "supported" and not pn_case:
        fuzzy = "ignored"  # fuzzy matching that only ignores case looks like literal matching
    includefield, includefield_all = draw(
        st.sampled_from([(True, True), (True, False), (False, True)])
    )
    before_offset = draw(b) if capped else False
    decoding = draw(b)
    return ServerProfile(
        percent_decoding=decoding,
        # non-ASCII values can only be sent to a server that percent-decodes, and DATA's
        # non-ASCII names come after the first 20 studies (a capped first listing)
        non_ascii_values=draw(b) if decoding and not capped else True,
        wildcard_star=draw(b),
        wildcard_question=draw(b),
        case_sensitive=draw(b),
        pn_case_sensitive=pn_case,
        single_value_matching=draw(st.sampled_from(["exact", "prefix", "substring"])),
        uid_lists=draw(b),
        value_lists=draw(b),
        repeated_keys=draw(st.sampled_from(["or", "first", "last", "error"])),
        date_ranges=(dates := draw(b)),
        open_date_ranges=(opened := True if before_offset else draw(b)),  # splits by date
        # ranges on StudyDate only (tiny_pacs: a PatientBirthDate range is a 400); without
        # date ranges at all there is nothing to tell apart
        range_keys=(ranges := draw(st.sampled_from([None, RANGE_PROBED])) if dates else None),
        # seen when a birth date before 1800 finds a study of DATA without one
        temporal_text=draw(b) if opened and ranges is None else False,
        time_ranges=draw(b),
        fuzzy_matching=fuzzy,
        unsupported_keys=draw(st.sampled_from(["error", "ignore", "empty"])),
        includefield=includefield,
        includefield_all=includefield_all,
        relational_series=draw(b),
        relational_instances=draw(b),
        study_instances=draw(b),
        limit=paging[0],
        offset=paging[1],
        max_results=draw(st.sampled_from([10, 20])) if capped else None,
        cap_warning=draw(b) if capped else True,
        cap_plus_one=draw(b) if capped else False,
        cap_before_offset=before_offset,
        empty_status=draw(st.sampled_from([204, 200])),
        json_accept=draw(b),
        bad_request_status=draw(st.sampled_from([400, 422, 200, 204])),
        unknown_parent_status=draw(st.sampled_from([404, 200, 204])),
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profiles())
def test_probe_of_a_fake_built_from_a_profile_returns_that_profile(
    profile: ServerProfile,
) -> None:
    measured, sent, _ = _probe(profile)
    assert measured == profile
    assert sent <= MAX_REQUESTS


@pytest.mark.parametrize("range_keys", [None, RANGE_PROBED])
def test_ranges_refused_beyond_study_date_are_measured(range_keys: tuple[str, ...] | None) -> None:
    # tiny_pacs: StudyDate=d1-d2 works, PatientBirthDate=d1-d2 is a 400
    async def run() -> list[Any]:
        archive = FakeArchive(DATA, profile=ServerProfile(range_keys=range_keys))
        async with archive, AsyncQidoRS(archive.url, retries=0) as client:
            report = await probe_report(client)
        assert report.profile.range_keys == range_keys
        return [f for f in report.findings if f.capability == "range_keys"]

    (finding,) = anyio.run(run)
    assert "PatientBirthDate=" in finding.request
    assert ("400" in finding.finding) is (range_keys is not None)


@pytest.mark.parametrize("empties", [False, True])
def test_an_open_range_that_finds_empty_values_is_measured(empties: bool) -> None:
    # Orthanc compares text: PatientBirthDate=-18000101 finds the studies without one
    assert any(not s.patient_birth_date for s in DATA.studies)
    measured, _, archive = _probe(ServerProfile(temporal_text=empties))
    assert measured.temporal_text is empties
    assert any("PatientBirthDate=-18000101" in r.query_string for r in archive.requests)


def test_profile_and_the_flags_it_covers_do_not_mix() -> None:
    with pytest.raises(ValueError, match="max_results"):
        FakeArchive(DATA, profile=ServerProfile.standard(), max_results=5)
    FakeArchive(DATA, profile=ServerProfile.standard(), latency=0.01, prefix="/qido")


def test_orthanc_like_is_built_from_the_orthanc_profile() -> None:
    archive = FakeArchive.orthanc_like(DATA, max_results=10, truncation_warning=True)
    assert archive.profile == attrs.evolve(ServerProfile.orthanc(max_results=10), cap_warning=True)
    assert archive.pn_groups is False


@pytest.mark.anyio
async def test_client_probe_returns_the_profile() -> None:
    archive = FakeArchive(DATA, profile=ServerProfile.orthanc())
    async with archive, AsyncQidoRS(archive.url) as client:
        assert await client.probe() == ServerProfile.orthanc()


def test_blocking_probe_returns_the_profile() -> None:
    fake = FakeArchive(DATA, profile=ServerProfile.tiny_pacs())
    with fake.run_in_thread() as archive, QidoRS(archive.url) as client:
        # 25 studies cannot show tiny_pacs' cap of 1,000: the probe keeps the default.
        assert client.probe() == attrs.evolve(
            ServerProfile.tiny_pacs(), max_results=None, cap_warning=True
        )


@pytest.mark.anyio
async def test_a_failing_first_listing_is_an_error() -> None:
    archive = FakeArchive(DATA, prefix="/dicom-web")
    async with archive, AsyncQidoRS(archive.url + "/nowhere", retries=0) as client:
        with pytest.raises(NotFoundError):
            await client.probe()


@pytest.mark.anyio
async def test_a_transport_error_of_the_parallel_checks_is_raised_alone() -> None:
    """A QidoError on its own, as the client promises, not an ExceptionGroup around it."""
    archive = FakeArchive(DATA)
    archive.fail("includefield=all", "disconnect")  # one of the checks sent together
    async with archive, AsyncQidoRS(archive.url, retries=0) as client:
        with pytest.raises(TransportError):
            await client.probe()


def test_discovery_is_a_small_listing() -> None:
    assert discovery_request() == ProbeRequest("/studies", "limit=50")
    assert STUDY_UIDS  # DATA is loaded as the tests assume


@pytest.mark.anyio
async def test_transient_failures_are_retried_not_read_as_answers() -> None:
    archive = FakeArchive(DATA, profile=ServerProfile.orthanc())
    archive.fail("limit=50", "503", times=1)  # the first listing
    archive.fail("includefield=all", "429", times=2)
    async with archive, AsyncQidoRS(archive.url) as client:
        assert await client.probe() == ServerProfile.orthanc()
    assert [r.status for r in archive.requests if "limit=50" in r.query_string] == [503, 200]


@pytest.mark.anyio
async def test_a_500_is_an_answer_the_probe_reads() -> None:
    archive = FakeArchive(DATA)
    archive.fail("/series", "500")
    async with archive, AsyncQidoRS(archive.url) as client:
        report = await probe_report(client)
    finding = next(f for f in report.findings if f.capability == "relational_series")
    assert not finding.decided
    assert "500" in finding.finding
    assert report.profile.relational_series is True
    assert any(n.startswith("relational_series: not decided") for n in report.profile.notes)


def test_keys_the_server_ignores_are_measured() -> None:
    from aqido._probe_keys import ASSUMED_MATCHED, MATCHED_KEY_PROBES

    probed = {keyword for _, keyword, _ in MATCHED_KEY_PROBES}
    kept = tuple(sorted((probed - {"SeriesNumber", "StudyDescription"}) | set(ASSUMED_MATCHED)))
    measured, _, _ = _probe(ServerProfile(unsupported_keys="ignore", matched_keys=kept))
    assert measured.matched_keys == kept
    everything, _, _ = _probe(ServerProfile(unsupported_keys="ignore"))
    assert everything.matched_keys is None  # every probed key matched: every attribute


@pytest.mark.parametrize(
    ("unmatched", "policy"),
    [
        ("PatientName", "ignore"),
        ("StudyDate", "ignore"),
        ("ModalitiesInStudy", "ignore"),
        ("PatientID", "empty"),  # nothing for a key it does not match: no different from a miss
        ("Modality", "empty"),  # the same on /studies/A/series: A's series' own values show it
        ("SeriesNumber", "empty"),
        ("SeriesDescription", "ignore"),
        ("AccessionNumber", "error"),
    ],
)
def test_a_key_the_server_does_not_match_is_not_in_the_measured_profile(
    unmatched: str, policy: str
) -> None:
    """Otherwise the client sends it, and the server's wider (or empty) answer is returned."""
    from aqido._probe_keys import ASSUMED_MATCHED, MATCHED_KEY_PROBES

    probed = {keyword for _, keyword, _ in MATCHED_KEY_PROBES} | set(ASSUMED_MATCHED)
    kept = tuple(sorted(probed - {unmatched}))
    server = ServerProfile(unsupported_keys=policy, matched_keys=kept)  # type: ignore[arg-type]
    measured, sent, _ = _probe(server)
    assert measured.matched_keys is not None
    assert unmatched not in measured.matched_keys
    assert sent <= MAX_REQUESTS


def test_a_series_of_a_with_safe_values_is_the_series_keys_control() -> None:
    from aqido._probe_model import ProbeContext, with_series

    ctx = ProbeContext(listed=("1.2",), a="1.2")

    def series(modality: str, number: int | None, description: str) -> dict[str, Any]:
        item: dict[str, Any] = {
            "00080060": {"vr": "CS", "Value": [modality]},
            "0008103E": {"vr": "LO", "Value": [description]},
        }
        if number is not None:
            item["00200011"] = {"vr": "IS", "Value": [number]}
        return item

    listing = Answer(200, items=(series("CT", None, "Axial 5mm"), series("MR", 3, "T1")))
    # the first series with a value safe to send (a space is not: Orthanc does not decode)
    assert with_series(ctx, listing).series_own == (("Modality", "CT"),)
    assert with_series(ctx, Answer(200, items=(series("C T", 2, "a b"),))).series_own == (
        ("SeriesNumber", "2"),
    )
    assert with_series(ctx, Answer(404, items=None)) is ctx  # no /series: no control
    assert with_series(ctx, Answer(204)) is ctx


def test_a_series_key_answered_with_nothing_is_not_trusted_and_says_why() -> None:
    from aqido._probe_keys import ASSUMED_MATCHED, MATCHED_KEY_PROBES

    probed = {keyword for _, keyword, _ in MATCHED_KEY_PROBES} | set(ASSUMED_MATCHED)
    server = ServerProfile(
        unsupported_keys="empty", matched_keys=tuple(sorted(probed - {"Modality"}))
    )

    async def run() -> Any:
        archive = FakeArchive(DATA, profile=server)
        async with archive, AsyncQidoRS(archive.url, retries=0) as client:
            return await probe_report(client)

    report = anyio.run(run)
    (finding,) = [f for f in report.findings if f.capability == "matched_keys"]
    assert "not shown matched: Modality" in finding.finding
    assert "A's series' own values did not find it: 204" in finding.finding
    assert "A's own values did not find A" not in finding.finding  # the study keys' control did
    assert finding.request.startswith(f"/studies/{report.context.a}/series?Modality=")
    assert "Modality" not in (report.profile.matched_keys or ())


def test_the_largest_plan_fits_the_request_budget() -> None:
    # Every context field set (the most checks), the series listing, the cap guard, the
    # bounded listing and its three follow-ups: the Sender raises past MAX_REQUESTS.
    from aqido._probe_checks import plan_checks
    from aqido._probe_model import ProbeContext

    ctx = ProbeContext(
        listed=("1.2", "1.3"),
        a="1.2",
        b="1.3",
        name="Doe^John",
        text_key="00100020",
        text="PID1",
        date="20200101",
        time="120000",
        list_key="ModalitiesInStudy",
        list_a="CT",
        list_b="MR",
        non_ascii=("1.3", "Müller^Hans"),
        own=(("PatientName", "Doe^John"), ("StudyDate", "20200101")),
        series_own=(("Modality", "CT"), ("SeriesNumber", "1")),
        birth=("1.2", "19700101"),
        stored_time="120000",
    )
    planned = {request for check in plan_checks(ctx) for request in check.requests}
    assert len(planned) + 1 + 1 + 1 + 1 + 3 <= MAX_REQUESTS

"""Profiles drive the client: the standard's answer from FakeArchives with server quirks.

The expected answer of every query is what a FakeArchive in standard mode
(no quirks) returns for the same content; each case first checks that the
quirky archive, asked without a profile, answers differently, so the
profile is what makes the difference.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import pathlib
from typing import Any

import attrs
import pytest

from aqido.blocking import QidoRS
from aqido.cli import main as cli_main
from aqido.client import AsyncQidoRS
from aqido.errors import BadRequestError, NotFoundError, UnanswerableQueryError
from aqido.matching import MatchOptions
from aqido.partition import SPLIT_KEYS
from aqido.plan import split_keys
from aqido.probe import MAX_REQUESTS
from aqido.profile import ServerProfile
from aqido.query import BaseQuery, HierarchicalQuery, QueryLevel, RelationalQuery
from aqido.testing import FakeArchive, SyntheticArchive

SYNTH = SyntheticArchive(seed=11, studies=40, series_per_study=3, instances_per_series=2)
UIDS = [s.study_instance_uid for s in SYNTH.studies]

Case = tuple[str, dict[str, Any], ServerProfile, BaseQuery]

CASES: list[Case] = [
    (
        "PN case-insensitive server, exact PatientName",
        {"case_sensitive": False},
        ServerProfile(case_sensitive=False, pn_case_sensitive=False),
        HierarchicalQuery(PatientName="Doe^Jane"),
    ),
    (
        "no wildcards, PatientName wildcard",
        {"match_options": MatchOptions(wildcard_star=False, wildcard_question=False)},
        ServerProfile(wildcard_star=False, wildcard_question=False),
        HierarchicalQuery(PatientName="Doe^J*"),
    ),
    (
        "prefix matching, exact PatientName",
        {"match_options": MatchOptions(single_value_matching="prefix")},
        ServerProfile(single_value_matching="prefix"),
        HierarchicalQuery(PatientName="Doe^John"),
    ),
    (
        "no value lists, ModalitiesInStudy list",
        {"match_options": MatchOptions(value_lists=False)},
        ServerProfile(value_lists=False),
        HierarchicalQuery(ModalitiesInStudy=["CT", "MR"]),
    ),
    (
        "no UID lists, StudyInstanceUID list",
        {"match_options": MatchOptions(uid_lists=False)},
        ServerProfile(uid_lists=False),
        HierarchicalQuery(StudyInstanceUID=[UIDS[3], UIDS[0], UIDS[17]]),
    ),
    (
        "no lists at all, two lists",
        {"match_options": MatchOptions(uid_lists=False, value_lists=False)},
        ServerProfile(uid_lists=False, value_lists=False),
        HierarchicalQuery(StudyInstanceUID=UIDS[:20], ModalitiesInStudy=["CT", "US"]),
    ),
    (
        "no date ranges, closed range",
        {"match_options": MatchOptions(date_ranges=False, open_date_ranges=False)},
        ServerProfile(date_ranges=False, open_date_ranges=False),
        HierarchicalQuery(min_study_date=dt.date(2010, 1, 1), max_study_date="2019-12-31"),
    ),
    (
        "no open date ranges, open range",
        {"match_options": MatchOptions(open_date_ranges=False)},
        ServerProfile(open_date_ranges=False),
        HierarchicalQuery(min_study_date=dt.date(2020, 1, 1)),
    ),
    (
        "no time ranges, StudyTime range",
        {"match_options": MatchOptions(time_ranges=False)},
        ServerProfile(time_ranges=False),
        HierarchicalQuery(filters={"StudyTime": "0600-1200"}),
    ),
    (
        "no percent-decoding, non-ASCII PatientName",
        {"decode_percent": False},
        ServerProfile(percent_decoding=False),
        HierarchicalQuery(PatientName="Müller*"),
    ),
    (
        "case-insensitive strings, StudyDescription wildcard",
        {"case_sensitive": False},
        ServerProfile(case_sensitive=False, pn_case_sensitive=False),
        HierarchicalQuery(StudyDescription="*t*"),
    ),
    (
        "no /series, relational series search",
        {"relational": False},
        ServerProfile(relational_series=False),
        RelationalQuery(query_level=QueryLevel.SERIES, PatientName="Doe*", Modality="CT"),
    ),
    (
        "no /instances, relational instance search",
        {"relational": False},
        ServerProfile(relational_series=False, relational_instances=False),
        RelationalQuery(query_level=QueryLevel.INSTANCE, ModalitiesInStudy="MR", Modality="MR"),
    ),
    (
        "no wildcards, paged: limit and offset are cut locally",
        {"match_options": MatchOptions(wildcard_star=False)},
        ServerProfile(wildcard_star=False),
        HierarchicalQuery(PatientName="Doe*", limit=4, offset=2),
    ),
]


def quirky(content: Any = SYNTH, **quirks: Any) -> FakeArchive:
    """A FakeArchive with quirk flags; ``match_options`` replaces its matching."""
    options = quirks.pop("match_options", None)
    archive = FakeArchive(content, **quirks)
    archive.match_options = options
    return archive


def uids(results: list[Any], level: QueryLevel) -> list[str]:
    """The result UIDs, in order."""
    if level is QueryLevel.INSTANCE:
        return [str(r.SOPInstanceUID) for r in results]
    if level is QueryLevel.SERIES:
        return [str(r.SeriesInstanceUID) for r in results]
    return [str(r.StudyInstanceUID) for r in results]


async def standard_answer(query: BaseQuery) -> list[str]:
    """What a server that follows the standard answers (a FakeArchive without quirks)."""
    async with FakeArchive(SYNTH) as archive, AsyncQidoRS(archive.url) as qido:
        return uids(await qido.search(query), query.query_level)


async def standard_iteration(query: BaseQuery) -> list[str]:
    """What iter_search gives on a server that follows the standard."""
    async with FakeArchive(SYNTH) as archive, AsyncQidoRS(archive.url) as qido:
        return uids([r async for r in qido.iter_search(query)], query.query_level)


@pytest.mark.anyio
@pytest.mark.parametrize(("label", "quirks", "profile", "query"), CASES, ids=[c[0] for c in CASES])
async def test_the_profile_gives_the_standard_answer(
    label: str, quirks: dict[str, Any], profile: ServerProfile, query: BaseQuery
) -> None:
    expected = await standard_answer(query)
    assert expected, "a case whose answer is empty proves little"
    async with quirky(**quirks) as archive:
        async with AsyncQidoRS(archive.url) as raw:
            try:
                as_is: list[str] | None = uids(await raw.search(query), query.query_level)
            except NotFoundError:  # a missing relational path
                as_is = None
        assert as_is != expected, "the quirk does not change this query's answer"
        async with AsyncQidoRS(archive.url, profile=profile) as qido:
            found = await qido.search(query)
            got = uids(found, query.query_level)
            assert len(set(got)) == len(got)  # no duplicates
            if "list" in label:  # fanned out: merged in request order, not the server's
                assert sorted(got) == sorted(expected)
            else:
                assert got == expected
            assert not [w for w in found.warnings if w.agent == "aqido"]
            # iter_search pages through every match from the query's offset (its limit is a
            # page size there), as it does on a server that follows the standard
            paged = uids([r async for r in qido.iter_search(query)], query.query_level)
            iterated = await standard_iteration(query)
            if "list" in label:
                assert sorted(paged) == sorted(iterated)
            else:
                assert paged == iterated


@pytest.mark.anyio
async def test_person_name_case_is_the_standard_or_the_servers_choice() -> None:
    query = HierarchicalQuery(PatientName="doe^jane")
    loose = ServerProfile(case_sensitive=False, pn_case_sensitive=False)
    async with quirky(case_sensitive=False) as archive:
        async with AsyncQidoRS(archive.url, profile=loose) as qido:  # case-sensitive by default
            sensitive = uids(await qido.search(query), QueryLevel.STUDY)
        async with AsyncQidoRS(archive.url, profile=loose, pn_case_sensitive=None) as qido:
            servers_choice = uids(await qido.search(query), QueryLevel.STUDY)
    names = {s.study_instance_uid: s.patient_name for s in SYNTH.studies}
    assert {names[u] for u in sensitive} == {"doe^jane"}
    assert {names[u] for u in servers_choice} == {"doe^jane", "Doe^Jane"}
    # a case-sensitive server, asked for case-insensitive names: they are matched here
    async with (
        FakeArchive(SYNTH) as archive,
        AsyncQidoRS(archive.url, profile=ServerProfile(), pn_case_sensitive=False) as qido,
    ):
        assert uids(await qido.search(query), QueryLevel.STUDY) == servers_choice
        assert archive.requests[-1].params == [("includefield", "PatientName")]


@pytest.mark.anyio
async def test_an_attribute_the_server_does_not_match_is_matched_here() -> None:
    query = HierarchicalQuery(filters={"PatientSex": "F"}, PatientName="Doe*")
    expected = await standard_answer(query)
    profile = ServerProfile(matched_keys=("PatientName",))
    async with FakeArchive(SYNTH) as archive, AsyncQidoRS(archive.url, profile=profile) as qido:
        found = await qido.search(query)
        assert archive.requests[-1].params == [
            ("PatientName", "Doe*"),
            ("includefield", "PatientSex"),
        ]
    assert expected
    assert uids(found, QueryLevel.STUDY) == expected


@pytest.mark.anyio
async def test_a_list_fans_out_into_one_request_per_value() -> None:
    query = HierarchicalQuery(ModalitiesInStudy=["CT", "MR"])
    async with quirky(match_options=MatchOptions(value_lists=False)) as archive:
        async with AsyncQidoRS(archive.url, profile=ServerProfile(value_lists=False)) as qido:
            found = await qido.search(query)
        sent = sorted(r.query_string for r in archive.requests)
    assert sent == ["ModalitiesInStudy=CT", "ModalitiesInStudy=MR"]
    assert len(set(uids(found, QueryLevel.STUDY))) == len(found)  # merged by UID


async def _unanswerable(archive: FakeArchive, **options: Any) -> Any:
    # No wildcards, and no includefield: a StudyDescription wildcard can be neither sent
    # nor matched locally (StudyDescription is not a default study attribute).
    profile = ServerProfile(wildcard_star=False, includefield=False, includefield_all=False)
    async with AsyncQidoRS(archive.url, profile=profile, **options) as qido:
        return await qido.search(HierarchicalQuery(StudyDescription="CT*"))


@pytest.mark.anyio
async def test_an_unanswerable_query_warns_or_raises_in_strict_mode() -> None:
    async with quirky(match_options=MatchOptions(wildcard_star=False)) as archive:
        found = await _unanswerable(archive)
        ours = [w for w in found.warnings if w.agent == "aqido"]
        assert len(ours) == 1
        assert "StudyDescription" in ours[0].text
        assert not ours[0].is_truncation
        archive.reset_stats()
        with pytest.raises(UnanswerableQueryError, match="StudyDescription") as caught:
            await _unanswerable(archive, strict_matching=True)
        assert archive.requests == []  # refused before any request
        assert isinstance(caught.value, ValueError)


@pytest.mark.anyio
async def test_empty_stored_values_do_not_match_a_key_matched_locally() -> None:
    profile = ServerProfile(matched_keys=())
    content = [
        {
            "0020000D": {"vr": "UI", "Value": [f"1.2.{i}"]},
            "0020000E": {"vr": "UI", "Value": [f"1.2.{i}.1"]},
            "00080018": {"vr": "UI", "Value": [f"1.2.{i}.1.1"]},
            "00100030": {"vr": "DA", "Value": ["19700101"]} if i else {"vr": "DA"},
        }
        for i in range(3)
    ]
    async with FakeArchive(content) as archive:
        async with AsyncQidoRS(archive.url, profile=profile) as qido:
            found = await qido.search(HierarchicalQuery(filters={"PatientBirthDate": "19700101-"}))
        assert archive.requests[-1].params == [("includefield", "PatientBirthDate")]
    assert uids(found, QueryLevel.STUDY) == ["1.2.1", "1.2.2"]
    assert not [w for w in found.warnings if w.agent == "aqido"]


@pytest.mark.anyio
async def test_get_remaining_uses_the_profile() -> None:
    query = HierarchicalQuery(PatientName="Doe^J*")
    expected = await standard_answer(query)
    quirks = MatchOptions(wildcard_star=False)
    profile = ServerProfile(wildcard_star=False)
    async with (
        quirky(match_options=quirks, max_results=3) as archive,
        AsyncQidoRS(archive.url, profile=profile) as qido,
    ):
        remaining = await qido.search_for_studies(
            search_filters={"PatientName": "Doe^J*"}, get_remaining=True
        )
        one = await qido.search(query)
    assert uids(remaining, QueryLevel.STUDY) == expected
    assert one.truncated  # one request per planned query: the cap shows
    assert set(uids(one, QueryLevel.STUDY)) <= set(expected)


def test_blocking_client_reads_a_profile_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "server.json"
    ServerProfile(name="no wildcards", wildcard_star=False).save(path)
    query = HierarchicalQuery(PatientName="Doe^J*")
    archive = quirky(match_options=MatchOptions(wildcard_star=False))
    with archive.run_in_thread(), QidoRS(archive.url, profile=path) as qido:
        assert qido.profile == ServerProfile(wildcard_star=False)
        names = {str(s.PatientName) for s in qido.search(query)}
    assert names == {"Doe^John", "Doe^Jane", "Doe^John^Q^Dr^Jr"}


def test_profile_argument_is_checked() -> None:
    with pytest.raises(ValueError, match="profile"):
        AsyncQidoRS("http://127.0.0.1:1", profile=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pn_case_sensitive"):
        AsyncQidoRS("http://127.0.0.1:1", pn_case_sensitive="yes")  # type: ignore[arg-type]
    assert AsyncQidoRS("http://127.0.0.1:1", profile="auto").profile is None  # probed lazily


#: tiny_pacs' matching keys and its Latin-1 reading of query bytes (docs/tinypacs.md); the
#: preset does not carry them yet because ``probe()`` does not measure them.
TINY_PACS = attrs.evolve(
    ServerProfile.tiny_pacs(),
    non_ascii_values=False,
    matched_keys=(
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "AccessionNumber",
        "StudyDate",
        "StudyInstanceUID",
        "Modality",
        "ModalitiesInStudy",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    ),
)
PRESETS = {
    "orthanc": ServerProfile.orthanc(),
    "tiny_pacs": ServerProfile.tiny_pacs(),
    "tiny_pacs+keys": TINY_PACS,
}
DONE_WHEN = {
    "exact PatientName": HierarchicalQuery(PatientName="Doe^John"),
    "PatientName wildcard": HierarchicalQuery(PatientName="Doe^J*"),
    "ModalitiesInStudy list": HierarchicalQuery(ModalitiesInStudy=["CT", "MR"]),
    "StudyInstanceUID list": HierarchicalQuery(StudyInstanceUID=[UIDS[5], UIDS[1], UIDS[30]]),
    "non-ASCII PatientName": HierarchicalQuery(PatientName="Müller^Jürgen"),
    "StudyDescription wildcard": HierarchicalQuery(StudyDescription="CT*", PatientName="Doe*"),
    "relational series": RelationalQuery(query_level=QueryLevel.SERIES, PatientName="Doe^Jane"),
    "relational series UID list": RelationalQuery(
        query_level=QueryLevel.SERIES,
        SeriesInstanceUID=[
            SYNTH.series[3].series_instance_uid,
            SYNTH.series[50].series_instance_uid,
        ],
    ),
    "relational instance UID list": RelationalQuery(
        query_level=QueryLevel.INSTANCE,
        SOPInstanceUID=[SYNTH.instances[7].sop_instance_uid, SYNTH.instances[99].sop_instance_uid],
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("what", DONE_WHEN)
async def test_presets_give_the_standard_answer(preset: str, what: str) -> None:
    query, profile = DONE_WHEN[what], PRESETS[preset]
    expected = await standard_answer(query)
    assert expected
    async with (
        FakeArchive(SYNTH, profile=profile) as archive,
        AsyncQidoRS(archive.url, profile=profile) as qido,
    ):
        found = await qido.search(query)
    assert not [w.text for w in found.warnings if w.agent == "aqido"]
    assert sorted(uids(found, query.query_level)) == sorted(expected)


@pytest.mark.anyio
async def test_auto_probes_once_before_the_first_search() -> None:
    query = DONE_WHEN["PatientName wildcard"]
    expected = await standard_answer(query)
    async with (
        FakeArchive(SYNTH, profile=ServerProfile.tiny_pacs()) as archive,
        AsyncQidoRS(archive.url, profile="auto") as qido,
    ):
        assert qido.profile is None  # nothing sent yet
        first, second = await qido.search_many([query, query])  # concurrent: one probe
        probed = len(archive.requests)
        assert qido.profile is not None
        assert not qido.profile.wildcard_star
        assert uids(first, QueryLevel.STUDY) == uids(second, QueryLevel.STUDY) == expected
        archive.reset_stats()
        assert uids(await qido.search(query), QueryLevel.STUDY) == expected
        assert len(archive.requests) == 1  # the profile is kept: no second probe
    assert 2 < probed <= MAX_REQUESTS + 2  # the probe, then the two searches


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = cli_main(list(argv), stdout=out, stderr=err, environ={})
    return status, out.getvalue(), err.getvalue()


def test_cli_profile_option(tmp_path: pathlib.Path) -> None:
    no_wildcards = ServerProfile(wildcard_star=False)
    path = tmp_path / "profile.json"
    no_wildcards.save(path)
    odd = tmp_path / "odd.json"
    ServerProfile(wildcard_star=False, includefield=False, includefield_all=False).save(odd)
    names = {"Doe^John", "Doe^Jane", "Doe^John^Q^Dr^Jr"}
    with FakeArchive(SYNTH, profile=no_wildcards).run_in_thread() as archive:
        search = ("search", archive.url, "--PatientName", "Doe^J*")
        status, out, _ = run_cli(*search)
        assert (status, out) == (0, "")  # '*' is a literal character there
        status, out, err = run_cli(*search, "--profile", str(path))
        assert status == 0, err
        items = [json.loads(line) for line in out.splitlines()]
        found = {item["00100010"]["Value"][0]["Alphabetic"] for item in items}
        assert found == names
        status, _, err = run_cli(*search, "--profile", str(tmp_path / "missing.json"))
        assert status == 2
        assert "missing.json" in err
        loose = ("search", archive.url, "--StudyDescription", "CT*", "--profile", str(odd))
        status, _, err = run_cli(*loose)
        assert status == 0
        assert err.startswith("aqido: warning: /studies?StudyDescription=CT*: StudyDescription=")
        status, _, err = run_cli(*loose, "--strict-matching")
        assert status == 2
        assert err.startswith("aqido: error: the server cannot give the standard's answer")


@pytest.mark.anyio
async def test_crawl_splits_only_by_keys_the_server_matches() -> None:
    # A server that ignores StudyDate and StudyTime, ignores offset and caps at 20 studies:
    # only ModalitiesInStudy can split its listing (MR, the largest, has 17 studies).
    keys = ("StudyInstanceUID", "SeriesInstanceUID", "ModalitiesInStudy", "Modality")
    profile = ServerProfile(matched_keys=keys, offset=False, max_results=20)
    async with (
        FakeArchive(SYNTH, profile=profile) as archive,
        AsyncQidoRS(archive.url, profile=profile) as qido,
    ):
        studies = [s async for s in qido.crawl(depth=QueryLevel.STUDY)]
        sent = [r.query_string for r in archive.requests]
    assert sorted(str(s.StudyInstanceUID) for s in studies) == sorted(UIDS)
    assert not [q for q in sent if "StudyDate" in q or "StudyTime" in q]
    assert any("ModalitiesInStudy=MR" in q for q in sent)


def test_split_keys_follow_the_profile() -> None:
    assert split_keys(None) == split_keys(ServerProfile()) == SPLIT_KEYS
    assert "StudyTime" not in split_keys(ServerProfile.tiny_pacs())
    assert split_keys(ServerProfile(open_date_ranges=False)) == SPLIT_KEYS - {"StudyDate"}
    assert split_keys(TINY_PACS) == {"StudyDate", "ModalitiesInStudy", "Modality"}
    # a split sends ranges: not by a key the server takes none on
    assert split_keys(ServerProfile(range_keys=("StudyTime",))) == SPLIT_KEYS - {"StudyDate"}
    assert split_keys(ServerProfile(range_keys=())) == SPLIT_KEYS - {"StudyDate", "StudyTime"}


@pytest.mark.anyio
@pytest.mark.parametrize("profile", ["auto", ServerProfile.tiny_pacs()], ids=["auto", "preset"])
@pytest.mark.parametrize("form", ["closed", "since", "until", "year"])
async def test_a_birth_date_range_on_a_server_that_refuses_one_is_answered_here(
    profile: Any, form: str
) -> None:
    """tiny_pacs refuses a PatientBirthDate range with a 400 (StudyDate ranges work): the
    probe measures it (``range_keys``) and the range is left out and matched locally."""
    born = sorted(s.patient_birth_date for s in SYNTH.studies if s.patient_birth_date)
    pivot = born[len(born) // 2]
    value, wanted = {
        "closed": (f"{born[2]}-{pivot}", lambda d: born[2] <= d <= pivot),
        "since": (f"{pivot}-", lambda d: d >= pivot),
        "until": (f"-{pivot}", lambda d: d <= pivot),
        "year": (pivot[:4], lambda d: d[:4] == pivot[:4]),  # sent as its year's range
    }[form]
    query = HierarchicalQuery(filters={"PatientBirthDate": value})
    async with FakeArchive(SYNTH, profile=ServerProfile.tiny_pacs()) as archive:
        if form != "year":  # a year goes out as a range of the planner's only
            async with AsyncQidoRS(archive.url, retries=0) as plain:
                with pytest.raises(BadRequestError, match="PatientBirthDate"):
                    await plain.search(query)  # what a range on it gets from the server
        async with AsyncQidoRS(archive.url, retries=0, profile=profile) as client:
            found = await client.search(query)
            assert client.profile is not None
            assert client.profile.range_keys == ("StudyDate", "StudyTime")
        sent = [r.query_string for r in archive.requests if r.path.endswith("/studies")]
    expected = {
        s.study_instance_uid
        for s in SYNTH.studies
        if s.patient_birth_date and wanted(s.patient_birth_date)
    }
    assert expected
    assert {r.StudyInstanceUID for r in found} == expected
    assert not [q for q in sent[-1:] if "PatientBirthDate=" in q]


@pytest.mark.anyio
@pytest.mark.parametrize("preset", PRESETS)
async def test_a_limit_is_a_page_size_when_paging_a_planned_query(preset: str) -> None:
    """iter_search and get_remaining page through every match, also when aqido plans the query."""
    profile = PRESETS[preset]
    query = HierarchicalQuery(PatientName="Doe*", limit=4)
    expected = await standard_answer(attrs.evolve(query, limit=0))
    assert len(expected) > 4
    async with (
        FakeArchive(SYNTH, profile=profile) as archive,
        AsyncQidoRS(archive.url, profile=profile) as qido,
    ):
        paged = [s.StudyInstanceUID async for s in qido.iter_search(query)]
        remaining = await qido.search_for_studies(
            search_filters={"PatientName": "Doe*"}, limit=4, get_remaining=True
        )
        one_page = await qido.search(query)
    assert sorted(paged) == sorted(expected)
    assert sorted(uids(remaining, QueryLevel.STUDY)) == sorted(expected)
    assert len(one_page) == 4  # search() is one page: the limit is the answer's size


CRAWLABLE = [  # a crawl walks every match: the cases without a window
    c
    for c in CASES
    if isinstance(c[3], HierarchicalQuery)
    and c[3].query_level is QueryLevel.STUDY
    and not (c[3].limit or c[3].offset)
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("label", "quirks", "profile", "query"), CRAWLABLE, ids=[c[0] for c in CRAWLABLE]
)
async def test_a_crawl_with_the_profile_walks_the_standard_answer(
    label: str,
    quirks: dict[str, Any],
    profile: ServerProfile,
    query: BaseQuery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A crawl sends what the plan sends and walks only the studies the standard matches."""
    expected = sorted(await standard_iteration(query))
    assert expected
    async with quirky(**quirks) as archive:
        async with AsyncQidoRS(archive.url) as raw:  # the quirk matters to a crawl too
            as_is = sorted([str(s.StudyInstanceUID) async for s in raw.crawl(query)])
        assert as_is != expected
        async with AsyncQidoRS(archive.url, profile=profile) as qido:
            studies = [s async for s in qido.crawl(query, depth=QueryLevel.SERIES)]
    assert sorted(str(s.StudyInstanceUID) for s in studies) == expected
    for study in studies:  # every walked study is whole
        record = SYNTH.study(str(study.StudyInstanceUID))
        assert len(study.series) == len(record.series)
    assert "crawls do not match locally" not in caplog.text


@pytest.mark.anyio
async def test_a_crawl_matches_what_tiny_pacs_ignores_and_warns_or_raises_when_it_cannot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    profile = ServerProfile.tiny_pacs()
    query = HierarchicalQuery(StudyDescription="*t*")  # a key tiny_pacs ignores
    async with (
        FakeArchive(SYNTH, profile=profile) as archive,
        AsyncQidoRS(archive.url, profile=profile) as qido,
    ):
        studies = sorted([str(s.StudyInstanceUID) async for s in qido.crawl(query)])
    expected = sorted(await standard_iteration(query))
    assert studies == expected
    assert len(expected) < len(UIDS)  # the server alone would have returned them all
    async with quirky(match_options=MatchOptions(wildcard_star=False)) as archive:
        unanswerable = HierarchicalQuery(StudyDescription="CT*")  # see _unanswerable
        blind = ServerProfile(wildcard_star=False, includefield=False, includefield_all=False)
        async with AsyncQidoRS(archive.url, profile=blind) as qido:
            [s async for s in qido.crawl(unanswerable, depth=QueryLevel.STUDY)]
        assert "StudyDescription" in caplog.text
        archive.reset_stats()
        async with AsyncQidoRS(archive.url, profile=blind, strict_matching=True) as qido:
            with pytest.raises(UnanswerableQueryError, match="StudyDescription"):
                [s async for s in qido.crawl(unanswerable)]
        assert archive.requests == []


# --- a walk's parents and children are checked, as a crawl's are (found by review) ------------


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


def _walked_fetch(*, wrong_parent: bool = False, uidless: bool = False) -> Any:
    """A server without /series: three studies; each study's series listing, maybe wrong."""
    from aqido.protocol import QidoResponse

    async def fetch(query: BaseQuery, limiter: Any = None, **_: Any) -> QidoResponse:
        if query.query_level is QueryLevel.STUDY:
            items = [{"0020000D": _ui("1.1"), "00100020": {"vr": "LO", "Value": ["PAT-A"]}}]
            if uidless:
                items.append({"00100020": {"vr": "LO", "Value": ["PAT-B"]}})
            items.append({"0020000D": _ui("1.3"), "00100020": {"vr": "LO", "Value": ["PAT-C"]}})
        else:
            study = query.StudyInstanceUID
            if wrong_parent and study == "1.3":
                study = "1.1"  # the answer for another study than the path's
            items = [{"0020000D": _ui(study), "0020000E": _ui(study + ".1")}]
        return QidoResponse(200, "http://h/x", {}, items)

    return fetch


async def _walk_search(qido: AsyncQidoRS, query: BaseQuery, paged: bool) -> list[Any]:
    """``search``, or every result of ``iter_search`` (``paged``)."""
    if paged:
        return [s async for s in qido.iter_search(query)]
    return list(await qido.search(query))


@pytest.mark.anyio
@pytest.mark.parametrize("paged", [False, True])
async def test_a_walked_parent_without_its_uid_is_an_error_not_a_silent_loss(paged: bool) -> None:
    from aqido.errors import InvalidResponseError

    query = RelationalQuery(query_level=QueryLevel.SERIES)
    profile = ServerProfile(relational_series=False)
    async with AsyncQidoRS("http://h", profile=profile, retries=0) as qido:
        qido._fetch = _walked_fetch()  # type: ignore[method-assign]
        found = await qido.search(query)  # the well-formed listing walks as before
        assert sorted(uids(found, QueryLevel.SERIES)) == ["1.1.1", "1.3.1"]
        qido._fetch = _walked_fetch(uidless=True)  # type: ignore[method-assign]
        with pytest.raises(InvalidResponseError, match="has no UID") as info:
            await _walk_search(qido, query, paged)
        assert "PAT-B" in (info.value.body_excerpt or "")


@pytest.mark.anyio
@pytest.mark.parametrize("paged", [False, True])
async def test_a_walked_child_listing_for_another_parent_is_refused(paged: bool) -> None:
    from aqido.errors import InvalidResponseError

    query = RelationalQuery(query_level=QueryLevel.SERIES)
    profile = ServerProfile(relational_series=False)
    async with AsyncQidoRS("http://h", profile=profile, retries=0) as qido:
        qido._fetch = _walked_fetch(wrong_parent=True)  # type: ignore[method-assign]
        with pytest.raises(InvalidResponseError, match="ignore the UIDs in the path"):
            await _walk_search(qido, query, paged)


@pytest.mark.anyio
@pytest.mark.parametrize("paged", [False, True])
async def test_a_walked_parent_nested_deep_without_its_uid_is_excerpted(paged: bool) -> None:
    # Its excerpt is its JSON: json.dumps raised a raw RecursionError for 340 levels of SQ.
    from aqido._json import decode_json
    from aqido.errors import InvalidResponseError
    from aqido.protocol import QidoResponse

    text = '{"00100020": {"vr": "LO", "Value": ["PAT-B"]}}'
    for _ in range(340):
        text = '{"00400275": {"vr": "SQ", "Value": [' + text + "]}}"

    async def fetch(query: BaseQuery, limiter: Any = None, **_: Any) -> QidoResponse:
        return QidoResponse(200, "http://h/x", {}, decode_json(f"[{text}]".encode()))

    query = RelationalQuery(query_level=QueryLevel.SERIES)
    profile = ServerProfile(relational_series=False)
    async with AsyncQidoRS("http://h", profile=profile, retries=0) as qido:
        qido._fetch = fetch  # type: ignore[method-assign]
        with pytest.raises(InvalidResponseError, match="has no UID") as info:
            await _walk_search(qido, query, paged)
    assert (info.value.body_excerpt or "").startswith('{"00400275": {"vr": "SQ", "Value": [{')


@pytest.mark.anyio
@pytest.mark.parametrize("level", [QueryLevel.SERIES, QueryLevel.INSTANCE])
@pytest.mark.parametrize("paged", [False, True])
async def test_a_walk_honours_the_clients_permissive_uid(level: QueryLevel, paged: bool) -> None:
    # The walk built its child queries strictly from an aqido query (not permissive itself):
    # a UID the client was told to accept ('1.2.abc') failed the walk with InvalidQueryError.
    from aqido.protocol import QidoResponse

    async def fetch(query: BaseQuery, limiter: Any = None, **_: Any) -> QidoResponse:
        if query.query_level is QueryLevel.STUDY:
            items = [{"0020000D": _ui("1.2.abc")}, {"0020000D": _ui("1.3_x")}]
        else:
            study = query.StudyInstanceUID
            series = query.SeriesInstanceUID or study + ".s_1"
            items = [{"0020000D": _ui(study), "0020000E": _ui(series)}]
            if query.query_level is QueryLevel.INSTANCE:
                items[0]["00080018"] = _ui(series + ".i")
        return QidoResponse(200, "http://h/x", {}, items)

    profile = ServerProfile(relational_series=False, relational_instances=False)
    async with AsyncQidoRS("http://h", profile=profile, retries=0, permissive_uid=True) as qido:
        qido._fetch = fetch  # type: ignore[method-assign]
        found = await _walk_search(qido, RelationalQuery(query_level=level), paged)
    expected = ["1.2.abc.s_1", "1.3_x.s_1"]
    if level is QueryLevel.INSTANCE:
        expected = [uid + ".i" for uid in expected]
    assert sorted(uids(found, level)) == expected


@pytest.mark.anyio
async def test_a_planned_get_remaining_is_not_truncated_once_every_page_is_fetched() -> None:
    # A cap of 100 with a 299 warning: the plan (a wildcard the profile lacks) pages past it;
    # the result is every match, and says so, as without a plan.
    content = SyntheticArchive(seed=3, studies=300, series_per_study=1, instances_per_series=1)
    profile = attrs.evolve(ServerProfile.tiny_pacs(), max_results=100, cap_warning=True)
    async with (
        FakeArchive(content, profile=profile) as archive,
        AsyncQidoRS(archive.url, profile=profile) as client,
    ):
        found = await client.search_for_studies(
            search_filters={"PatientName": "*"}, get_remaining=True
        )
        assert len(found) == 300
        assert not found.truncated
        assert not found.possibly_truncated
        assert found.additional_results is None


@pytest.mark.anyio
async def test_an_upper_bounded_range_on_orthanc_leaves_out_studies_without_the_value() -> None:
    """Orthanc compares text: PatientBirthDate=-d finds the studies without a birth date
    too (the empty string sorts first); with its profile they are filtered out."""
    born = sorted(s.patient_birth_date for s in SYNTH.studies if s.patient_birth_date)
    assert len(born) < len(SYNTH.studies)  # some studies have no birth date
    query = HierarchicalQuery(filters={"PatientBirthDate": f"-{born[len(born) // 2]}"})
    expected = {
        s.study_instance_uid
        for s in SYNTH.studies
        if s.patient_birth_date and s.patient_birth_date <= born[len(born) // 2]
    }
    undated = {s.study_instance_uid for s in SYNTH.studies if not s.patient_birth_date}
    async with FakeArchive.orthanc_like(SYNTH) as archive:
        async with AsyncQidoRS(archive.url, retries=0) as plain:
            assert {r.StudyInstanceUID for r in await plain.search(query)} == expected | undated
        for profile in (ServerProfile.orthanc(), "auto"):
            async with AsyncQidoRS(archive.url, retries=0, profile=profile) as client:
                found = await client.search(query)
                assert {r.StudyInstanceUID for r in found} == expected
                assert client.profile is not None
                assert client.profile.temporal_text


@pytest.mark.anyio
async def test_a_date_range_of_years_on_orthanc_finds_the_last_year_too() -> None:
    """StudyDate=2008-2013 is 20080101 to 20131231 (a bound is the span it covers); Orthanc
    compares text, so sent as written it missed every study of 2013 (20130315 > 2013)."""
    years = sorted({s.study_date[:4] for s in SYNTH.studies})
    low, high = years[1], years[-2]
    query = HierarchicalQuery(filters={"StudyDate": f"{low}-{high}"})
    expected = {s.study_instance_uid for s in SYNTH.studies if low <= s.study_date[:4] <= high}
    assert any(s.study_date[:4] == high for s in SYNTH.studies)
    async with FakeArchive.orthanc_like(SYNTH) as archive:
        for profile in (ServerProfile.orthanc(), "auto"):
            async with AsyncQidoRS(archive.url, retries=0, profile=profile) as client:
                found = await client.search(query)
                assert {r.StudyInstanceUID for r in found} == expected


@pytest.mark.anyio
@pytest.mark.parametrize("strict", [False, True])
async def test_fuzzymatching_on_a_server_that_ignores_it_gives_the_literal_answer(
    caplog: pytest.LogCaptureFixture, strict: bool
) -> None:
    # tiny_pacs ignores fuzzymatching=true (no Warning) and matches PatientName as a
    # substring; a server without fuzzy matching matches literally (PS3.18 8.3.4.2), so the
    # answer is the literal one, and aqido says what the server did not (strict or not:
    # the answer is the standard's)
    query = HierarchicalQuery(PatientName="Doe^John", fuzzymatching=True)
    expected = await standard_answer(query)
    assert expected
    profile = ServerProfile.tiny_pacs()
    async with FakeArchive(SYNTH, profile=profile) as archive:
        async with AsyncQidoRS(archive.url) as raw:
            assert uids(await raw.search(query), QueryLevel.STUDY) != expected  # substrings
        async with AsyncQidoRS(archive.url, profile=profile, strict_matching=strict) as qido:
            found = await qido.search(query)
            paged = [r async for r in qido.iter_search(query)]
    assert uids(found, QueryLevel.STUDY) == uids(paged, QueryLevel.STUDY) == expected
    ours = [w.text for w in found.warnings if w.agent == "aqido"]
    assert len(ours) == 1
    assert "only literal matching" in ours[0]
    assert "only literal matching" in caplog.text


@pytest.mark.anyio
async def test_fuzzymatching_on_a_server_that_does_it_is_left_to_the_server() -> None:
    query = HierarchicalQuery(PatientName="doe^john", fuzzymatching=True)
    profile = ServerProfile(fuzzy_matching="supported")
    async with FakeArchive(SYNTH, profile=profile) as archive:
        async with AsyncQidoRS(archive.url, profile=profile) as qido:
            found = await qido.search(query)
        assert [r.query_string for r in archive.requests] == [query.query_string()]
    assert found  # the fake's "fuzzy" matching ignores case
    assert not [w for w in found.warnings if w.agent == "aqido"]


@pytest.mark.anyio
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    "query",
    [
        HierarchicalQuery(PatientName="Doe^John", fuzzymatching=True),
        # relational series on a server without /series: the studies are walked
        RelationalQuery(query_level="SERIES", PatientName="Doe^John", fuzzymatching=True),
    ],
    ids=["studies", "walked-series"],
)
async def test_fuzzymatching_is_not_sent_to_a_server_that_refuses_it(
    caplog: pytest.LogCaptureFixture, strict: bool, query: BaseQuery
) -> None:
    # a server whose profile says fuzzymatching=true is an error (4xx) got it all the same
    # and the search failed; it is now left out (the literal answer a server without fuzzy
    # matching owes, PS3.18 8.3.4.2), and aqido says so as on a server that ignores it
    expected = await standard_answer(attrs.evolve(query, fuzzymatching=False))
    assert expected
    profile = ServerProfile(fuzzy_matching="error", relational_series=False)
    async with FakeArchive(SYNTH, profile=profile) as archive:
        async with AsyncQidoRS(archive.url, retries=0) as raw:
            with pytest.raises(BadRequestError, match="fuzzymatching"):
                await raw.search(HierarchicalQuery(PatientName="Doe^John", fuzzymatching=True))
        sent = len(archive.requests)
        async with AsyncQidoRS(archive.url, profile=profile, strict_matching=strict) as qido:
            found = await qido.search(query)
            paged = [r async for r in qido.iter_search(query)]
        assert archive.requests[sent:]
        assert not [r for r in archive.requests[sent:] if "fuzzymatching" in r.query_string]
    level = query.query_level
    assert uids(found, level) == uids(paged, level) == expected
    ours = [w.text for w in found.warnings if w.agent == "aqido"]
    assert len(ours) == 1
    assert "fuzzymatching=true was not sent" in ours[0]
    assert "only literal matching" in ours[0]
    assert "fuzzymatching=true was not sent" in caplog.text


@pytest.mark.anyio
async def test_a_crawl_does_not_send_fuzzymatching_to_a_server_that_refuses_it() -> None:
    query = HierarchicalQuery(PatientName="Doe^John", fuzzymatching=True)
    expected = sorted(await standard_iteration(attrs.evolve(query, fuzzymatching=False)))
    assert expected
    profile = ServerProfile(fuzzy_matching="error")
    async with FakeArchive(SYNTH, profile=profile) as archive:
        async with AsyncQidoRS(archive.url, profile=profile) as qido:
            studies = sorted([str(s.StudyInstanceUID) async for s in qido.crawl(query)])
        assert not [r for r in archive.requests if "fuzzymatching" in r.query_string]
    assert studies == expected

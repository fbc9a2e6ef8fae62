"""aqido.testing.FakeArchive: paths, matching, paging, server quirks, faults, auth, statistics.

Driven by a plain aiohttp session with ``yarl.URL(..., encoded=True)``, so the
query string reaches the server exactly as written here.  Expected answers are
computed from the SyntheticArchive records.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import requests
import yarl

from aqido.testing import FakeArchive, Fault, Faults, ServedRequest
from aqido.testing._store import level_of as _level_of
from aqido.testing.synthetic import SyntheticArchive, SyntheticStudy

pytestmark = pytest.mark.anyio

SYNTH = SyntheticArchive(seed=42, studies=40, series_per_study=3, instances_per_series=2)
STUDY = SYNTH.studies[5]
SERIES = STUDY.series[1]


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> list[dict[str, Any]]:
        return json.loads(self.body) if self.body else []  # type: ignore[no-any-return]

    def values(self, key: str) -> list[Any]:
        return [item[key]["Value"][0] for item in self.json]


async def get(archive: FakeArchive, rel: str, **kwargs: Any) -> Reply:
    """GET ``archive.url + rel`` with the query string sent exactly as written."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(yarl.URL(archive.url + rel, encoded=True), **kwargs) as response,
    ):
        return Reply(response.status, response.headers, await response.read())


@pytest.fixture
async def archive() -> AsyncIterator[FakeArchive]:
    async with FakeArchive(SYNTH) as running:
        yield running


def study_uids(studies: list[SyntheticStudy] | tuple[SyntheticStudy, ...]) -> list[str]:
    return [s.study_instance_uid for s in studies]


# --- the six paths -------------------------------------------------------------------------


async def test_studies(archive: FakeArchive) -> None:
    reply = await get(archive, "/studies")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/dicom+json")
    assert reply.values("0020000D") == study_uids(SYNTH.studies)
    first = reply.json[5]
    assert first["00201206"] == {"vr": "IS", "Value": [3]}
    assert first["00201208"] == {"vr": "IS", "Value": [6]}
    assert first["00080061"]["Value"] == list(STUDY.modalities_in_study)
    assert first["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert first["00081190"]["Value"] == [f"{archive.url}/studies/{STUDY.study_instance_uid}"]
    assert "00081030" not in first  # StudyDescription is not a default attribute
    assert "00080060" not in first  # nor any series attribute
    assert list(first) == sorted(first)


async def test_hierarchical_series(archive: FakeArchive) -> None:
    reply = await get(archive, f"/studies/{STUDY.study_instance_uid}/series")
    assert reply.values("0020000E") == [s.series_instance_uid for s in STUDY.series]
    assert reply.values("00080060") == [s.modality for s in STUDY.series]
    assert reply.values("00201209") == [2, 2, 2]
    assert reply.values("0020000D") == [STUDY.study_instance_uid] * 3
    assert "00100010" not in reply.json[0]  # no study attributes on a hierarchical query


async def test_hierarchical_instances(archive: FakeArchive) -> None:
    rel = f"/studies/{STUDY.study_instance_uid}/series/{SERIES.series_instance_uid}/instances"
    reply = await get(archive, rel)
    assert reply.values("00080018") == [i.sop_instance_uid for i in SERIES.instances]
    assert reply.values("00200013") == [1, 2]
    assert reply.values("00280010") == [8, 8]
    assert "00080060" not in reply.json[0]
    assert reply.json[0]["00081190"]["Value"][0].endswith(
        f"/series/{SERIES.series_instance_uid}/instances/{SERIES.instances[0].sop_instance_uid}"
    )


async def test_study_instances_add_series_attributes(archive: FakeArchive) -> None:
    reply = await get(archive, f"/studies/{STUDY.study_instance_uid}/instances")
    assert reply.values("00080018") == [i.sop_instance_uid for i in STUDY.instances]
    assert reply.values("00080060") == [s.modality for s in STUDY.series for _ in range(2)]
    assert "00100010" not in reply.json[0]


async def test_relational_series_and_instances(archive: FakeArchive) -> None:
    series = await get(archive, "/series")
    assert series.values("0020000E") == [s.series_instance_uid for s in SYNTH.series]
    assert "00100010" in series.json[0]  # study-level defaults on relational queries
    assert "00201206" in series.json[0]
    instances = await get(archive, "/instances")
    assert instances.values("00080018") == [i.sop_instance_uid for i in SYNTH.instances]
    item = instances.json[0]
    assert {"00100010", "00080060", "00080018", "00201209"} <= set(item)


async def test_unknown_parent_and_unknown_path(archive: FakeArchive) -> None:
    assert (await get(archive, "/studies/1.2.3/series")).status == 204
    rel = f"/studies/{STUDY.study_instance_uid}/series/1.2.3/instances"
    assert (await get(archive, rel)).status == 204
    assert (await get(archive, "/patients")).status == 404
    assert (await get(archive, "/studies/1.2/series/3")).status == 404
    async with FakeArchive(SYNTH, unknown_parent_status=404, relational=False) as strict:
        assert (await get(strict, "/studies/1.2.3/series")).status == 404
        assert (await get(strict, "/series")).status == 404
        assert (await get(strict, "/instances")).status == 404


# --- matching ------------------------------------------------------------------------------


def pn_matches(pattern: str, name: str, *, case: bool = True) -> bool:
    candidates = [name, *name.split("=")]
    if not case:
        pattern, candidates = pattern.lower(), [c.lower() for c in candidates]
    return any(fnmatch.fnmatchcase(c, pattern) for c in candidates if c)


async def test_uid_list(archive: FakeArchive) -> None:
    wanted = [SYNTH.studies[9], SYNTH.studies[2]]
    reply = await get(archive, f"/studies?StudyInstanceUID={','.join(study_uids(wanted))}")
    assert reply.values("0020000D") == study_uids([SYNTH.studies[2], SYNTH.studies[9]])
    encoded = "%2C".join(study_uids(wanted))
    assert len((await get(archive, f"/studies?StudyInstanceUID={encoded}")).json) == 2
    sop = [SYNTH.instances[7].sop_instance_uid, SYNTH.instances[70].sop_instance_uid]
    reply = await get(archive, f"/instances?SOPInstanceUID={','.join(sop)}")
    assert reply.values("00080018") == sop
    reply = await get(archive, f"/series?SeriesInstanceUID={SERIES.series_instance_uid}")
    assert reply.values("0020000E") == [SERIES.series_instance_uid]


@pytest.mark.parametrize("pattern", ["Doe^John", "Doe^J*", "D?e^*", "*oe*", "doe^*", "山田*"])
async def test_patient_name_wildcards_exact_and_groups(archive: FakeArchive, pattern: str) -> None:
    reply = await get(archive, f"/studies?PatientName={quote(pattern, safe='*?^')}")
    expected = [s for s in SYNTH.studies if pn_matches(pattern, s.patient_name)]
    assert expected, pattern  # the synthetic data has matches for each pattern
    assert reply.values("0020000D") == study_uids(expected)


async def test_case_insensitive_option() -> None:
    async with FakeArchive(SYNTH, case_sensitive=False) as archive:
        reply = await get(archive, "/studies?PatientName=doe^j*")
    expected = [s for s in SYNTH.studies if pn_matches("doe^j*", s.patient_name, case=False)]
    assert {"Doe^John", "DOE^JOHNNY"} <= {s.patient_name for s in expected}
    assert reply.values("0020000D") == study_uids(expected)


async def test_percent_decoding(archive: FakeArchive) -> None:
    name = next(s.patient_name for s in SYNTH.studies if not s.patient_name.isascii())
    expected = study_uids([s for s in SYNTH.studies if s.patient_name == name])
    reply = await get(archive, f"/studies?PatientName={quote(name)}")
    assert reply.values("0020000D") == expected
    spaced = next(s.patient_name for s in SYNTH.studies if " " in s.patient_name)
    plus = quote(spaced).replace("%20", "+")
    reply = await get(archive, f"/studies?PatientName={plus}")
    assert reply.values("0020000D") == study_uids(
        [s for s in SYNTH.studies if s.patient_name == spaced]
    )


async def test_no_percent_decoding_like_orthanc() -> None:
    async with FakeArchive(SYNTH, decode_percent=False) as archive:
        assert (await get(archive, "/studies?PatientName=Doe%5EJohn")).status == 204
        raw = await get(archive, "/studies?PatientName=Doe^John")
        assert raw.values("0020000D") == study_uids(
            [s for s in SYNTH.studies if s.patient_name == "Doe^John"]
        )
        uids = "%2C".join(study_uids(SYNTH.studies[:2]))
        assert len((await get(archive, f"/studies?StudyInstanceUID={uids}")).json) == 2


async def test_patient_id_with_slash_and_comma_or(archive: FakeArchive) -> None:
    odd = next(s for s in SYNTH.studies if "/" in s.patient_id)
    other = SYNTH.studies[-1]
    reply = await get(archive, f"/studies?PatientID={odd.patient_id},{other.patient_id}")
    wanted = {odd.patient_id, other.patient_id}
    assert reply.values("0020000D") == study_uids(
        [s for s in SYNTH.studies if s.patient_id in wanted]
    )


@pytest.mark.parametrize(
    ("query", "low", "high"),
    [
        ("20100101-20151231", "20100101", "20151231"),
        ("-20121231", "", "20121231"),
        ("20180101-", "20180101", "99999999"),
    ],
)
async def test_date_ranges(archive: FakeArchive, query: str, low: str, high: str) -> None:
    reply = await get(archive, f"/studies?StudyDate={query}")
    expected = [s for s in SYNTH.studies if low <= s.study_date <= high]
    assert 0 < len(expected) < len(SYNTH.studies)
    assert reply.values("0020000D") == study_uids(expected)


async def test_single_date_and_invalid_dates(archive: FakeArchive) -> None:
    reply = await get(archive, f"/studies?StudyDate={STUDY.study_date}")
    assert STUDY.study_instance_uid in reply.values("0020000D")
    assert all(d == STUDY.study_date for d in reply.values("00080020"))
    assert (await get(archive, "/studies?StudyDate=-")).status == 400
    assert (await get(archive, "/studies?StudyDate=garbage")).status == 400
    assert (await get(archive, "/studies?StudyDate=20200101-20100101")).status == 204


def tm_key(value: str) -> str:
    hh, mm, ss = value[:2], value[2:4] or "00", value[4:6] or "00"
    frac = value[7:] if "." in value else ""
    return f"{hh}{mm}{ss}{frac.ljust(6, '0')}"


async def test_time_ranges_with_short_and_fractional_values(archive: FakeArchive) -> None:
    reply = await get(archive, "/studies?StudyTime=0800-1530")
    expected = [
        s for s in SYNTH.studies if "080000000000" <= tm_key(s.study_time) <= "153059999999"
    ]
    assert expected
    assert reply.values("0020000D") == study_uids(expected)
    assert {len(s.study_time) for s in SYNTH.studies} >= {4, 6, 13}
    short = next(s for s in SYNTH.studies if len(s.study_time) == 4)
    reply = await get(archive, f"/studies?StudyTime={short.study_time}")  # single value: same text
    assert reply.values("00080030") == [
        s.study_time for s in SYNTH.studies if s.study_time == short.study_time
    ]


async def test_multi_valued_modalities_in_study(archive: FakeArchive) -> None:
    mixed = [s for s in SYNTH.studies if len(s.modalities_in_study) > 1]
    assert mixed
    reply = await get(archive, "/studies?ModalitiesInStudy=CT")
    assert reply.values("0020000D") == study_uids(
        [s for s in SYNTH.studies if "CT" in s.modalities_in_study]
    )
    reply = await get(archive, "/studies?00080061=CT,MR")
    assert reply.values("0020000D") == study_uids(
        [s for s in SYNTH.studies if {"CT", "MR"} & set(s.modalities_in_study)]
    )
    reply = await get(archive, "/studies?ModalitiesInStudy=C*")
    assert reply.values("0020000D") == study_uids(
        [s for s in SYNTH.studies if any(m.startswith("C") for m in s.modalities_in_study)]
    )


async def test_series_and_numeric_matching(archive: FakeArchive) -> None:
    reply = await get(archive, "/series?Modality=MR&SeriesNumber=2")
    expected = [s for s in SYNTH.series if s.modality == "MR" and s.series_number == 2]
    assert expected
    assert reply.values("0020000E") == [s.series_instance_uid for s in expected]
    assert (await get(archive, "/series?SeriesNumber=two")).status == 400
    reply = await get(archive, "/instances?InstanceNumber=2&Modality=CT")
    expected_i = [
        i for i in SYNTH.instances if i.instance_number == 2 and SYNTH.series_of(i).modality == "CT"
    ]
    assert reply.values("00080018") == [i.sop_instance_uid for i in expected_i]


async def test_sequence_path_matching(archive: FakeArchive) -> None:
    reply = await get(archive, "/studies?ProcedureCodeSequence.CodeValue=P005")
    assert reply.values("0020000D") == study_uids(
        [s for s in SYNTH.studies if s.procedure_code == "P005"]
    )
    assert "00081032" in reply.json[0]
    assert (await get(archive, "/studies?ProcedureCodeSequence=x")).status == 400


async def test_lower_level_attribute_matches_nothing_on_studies(archive: FakeArchive) -> None:
    assert (await get(archive, "/studies?Modality=CT")).status == 204
    reply = await get(archive, "/studies?includefield=Modality&limit=1")
    assert "00080060" not in reply.json[0]


async def test_universal_matching_and_includefield(archive: FakeArchive) -> None:
    rel = f"/studies/{STUDY.study_instance_uid}/series?StudyDescription=&includefield=00080080"
    reply = await get(archive, rel)
    assert reply.json[0]["00081030"] == {"vr": "LO", "Value": [STUDY.study_description]}
    assert reply.json[0]["00080080"]["Value"] == ["Hôpital Général Test"]
    a = await get(archive, "/studies?includefield=StudyDescription,PatientWeight&limit=3")
    b = await get(archive, "/studies?includefield=StudyDescription&includefield=00101030&limit=3")
    assert a.json == b.json
    assert a.values("00101030") == [float(s.patient_weight) for s in SYNTH.studies[:3]]
    every = await get(archive, f"/studies/{STUDY.study_instance_uid}/instances?includefield=all")
    assert {"00280030", "00200032", "00080008", "0008103E"} <= set(every.json[0])
    assert "00100010" not in every.json[0]


async def test_fuzzymatching_and_unknown_keys(archive: FakeArchive) -> None:
    assert (await get(archive, "/studies?fuzzymatching=true&limit=1")).status == 200
    assert (await get(archive, "/studies?fuzzymatching=false&limit=1")).status == 200
    bad = await get(archive, "/studies?fuzzymatching=yes")
    assert bad.status == 400
    assert b"fuzzymatching" in bad.body
    assert (await get(archive, "/studies?PatientNmae=Doe")).status == 400
    assert (await get(archive, "/studies?includefield=NoSuchThing")).status == 400
    assert (await get(archive, "/studies?limit=abc")).status == 400
    assert (await get(archive, "/studies?offset=-1")).status == 400
    async with FakeArchive(SYNTH, unknown_attributes="ignore", fuzzy_warning=True) as lax:
        reply = await get(lax, "/studies?PatientNmae=Doe")
        assert len(reply.json) == len(SYNTH.studies)  # ignored: the result widens
        fuzzy = await get(lax, "/studies?fuzzymatching=true&limit=1")
        assert "fuzzymatching parameter is not supported" in fuzzy.headers["Warning"]


# --- paging, caps, empty results -----------------------------------------------------------


async def test_limit_offset_pages_are_stable(archive: FakeArchive) -> None:
    everything = (await get(archive, "/series")).values("0020000E")
    pages: list[str] = []
    for offset in range(0, 200, 25):
        reply = await get(archive, f"/series?limit=25&offset={offset}")
        if reply.status == 204:
            break
        pages.extend(reply.values("0020000E"))
    assert pages == everything
    assert (await get(archive, "/series?offset=120")).status == 204
    assert (await get(archive, "/series?limit=0")).status == 204  # 0: none (PS3.18 8.3.4.4)


async def test_limit_zero_is_no_match_but_no_limit_as_orthanc() -> None:
    # the standard archive read limit=0 as no limit, as Orthanc does; its answer is no match
    async with FakeArchive(SYNTH, max_results=50) as archive:
        reply = await get(archive, "/series?limit=0")
        assert (reply.status, reply.body) == (204, b"")
        assert "Warning" not in reply.headers  # the client's limit cut it, not the cap
    async with FakeArchive(SYNTH, empty_status=200) as archive:
        assert (await get(archive, "/studies?limit=0&offset=3")).json == []
    async with FakeArchive.orthanc_like(SYNTH) as orthanc:
        assert len((await get(orthanc, "/series?limit=0")).json) == 120
        assert len((await get(orthanc, "/series?limit=0&offset=100")).json) == 20


async def test_limit_and_offset_that_are_not_ascii_digits_get_400(archive: FakeArchive) -> None:
    # '²' passed isdigit() and crashed int() (a 500, which clients retry); '１' was read as 1
    for value in ("%C2%B2", "%EF%BC%91", "-1", "1.0", ""):
        assert (await get(archive, f"/series?limit={value}")).status == 400, value
        assert (await get(archive, f"/series?offset={value}")).status == 400, value
    # past int()'s 4,300 digits: a valid, huge number (nothing left: 204; no limit: all)
    huge = "9" * 5000
    assert (await get(archive, f"/series?offset={huge}")).status == 204
    assert len((await get(archive, f"/series?limit={huge}")).json) == 120
    assert len((await get(archive, "/series?limit=00000000000000000000000003")).json) == 3


async def test_empty_result_204_or_200(archive: FakeArchive) -> None:
    reply = await get(archive, "/studies?PatientID=nobody")
    assert reply.status == 204
    assert reply.body == b""
    async with FakeArchive(SYNTH, empty_status=200) as old:
        reply = await get(old, "/studies?PatientID=nobody")
        assert reply.status == 200
        assert reply.body == b"[]"


async def test_cap_with_warning() -> None:
    async with FakeArchive(SYNTH, max_results=15) as archive:
        reply = await get(archive, "/studies?offset=5")
        assert len(reply.json) == 15
        assert reply.headers["Warning"] == (
            f'299 127.0.0.1:{archive.port} "There are 20 additional results that can be requested"'
        )
        limited = await get(archive, "/studies?limit=10")
        assert len(limited.json) == 10
        assert "Warning" not in limited.headers
        tail = await get(archive, "/studies?offset=30")
        assert len(tail.json) == 10
        assert "Warning" not in tail.headers


async def test_cap_silent_and_plus_one() -> None:
    async with FakeArchive(SYNTH, max_results=10, truncation_warning=False) as silent:
        reply = await get(silent, "/studies")
        assert len(reply.json) == 10
        assert "Warning" not in reply.headers
    async with FakeArchive.orthanc_like(SYNTH, max_results=10) as orthanc:
        reply = await get(orthanc, "/studies")
        assert len(reply.json) == 11
        assert "Warning" not in reply.headers
        assert len((await get(orthanc, "/studies?offset=5")).json) == 6  # cap before offset
        assert (await get(orthanc, "/studies?offset=20")).body == b"[]"
        assert (await get(orthanc, "/studies?PatientID=nobody")).body == b"[]"
        garbage = await get(orthanc, "/studies?StudyDate=garbage")
        assert (garbage.status, garbage.body) == (200, b"[]")
        assert (await get(orthanc, "/studies?StudyDate=garbage,20100101-")).status == 200


async def test_orthanc_like_takes_every_profile_flag_by_its_flag_name() -> None:
    # case_sensitive=True was silently ignored; case_sensitive=False and relational=False
    # were refused as clashing with the profile
    name = SYNTH.studies[0].patient_name.split("=")[0]
    swapped = name.swapcase()
    expected = len([s for s in SYNTH.studies if s.patient_name.split("=")[0] == swapped])
    async with FakeArchive.orthanc_like(SYNTH) as lax:
        assert len((await get(lax, f"/studies?PatientName={swapped}")).json) >= 1
    async with FakeArchive.orthanc_like(SYNTH, case_sensitive=True) as strict:
        assert (strict.case_sensitive, strict.pn_case_sensitive) == (True, True)
        assert len((await get(strict, f"/studies?PatientName={swapped}")).json) == expected
    async with FakeArchive.orthanc_like(SYNTH, case_sensitive=False, relational=False) as old:
        assert (old.case_sensitive, old.relational) == (False, False)
        assert (await get(old, "/series")).status == 404


async def test_ignore_offset_ignore_limit_and_max_limit() -> None:
    async with FakeArchive(SYNTH, ignore_offset=True) as archive:
        first = await get(archive, "/studies?limit=5")
        again = await get(archive, "/studies?limit=5&offset=5")
        assert first.json == again.json
    async with FakeArchive(SYNTH, ignore_limit=True, max_limit=20) as archive:
        assert len((await get(archive, "/studies?limit=5")).json) == 40
        assert (await get(archive, "/studies?limit=21")).status == 400


async def test_long_url_gets_414() -> None:
    async with FakeArchive(SYNTH, max_url_length=2000) as archive:
        uids = ",".join(s.study_instance_uid for s in SYNTH.studies)  # about 2,600 characters
        assert (await get(archive, f"/studies?StudyInstanceUID={uids}")).status == 414


# --- content sources -----------------------------------------------------------------------


def _without_urls(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "00081190"} for item in items]


async def test_json_and_pydicom_content_serve_the_same_answers() -> None:
    small = SyntheticArchive(seed=9, studies=4, series_per_study=2, instances_per_series=2)
    queries = [
        "/studies",
        "/series?includefield=all",
        "/instances?includefield=all",
        "/studies?PatientName=*a*&includefield=StudyDescription",
    ]
    answers = []
    for content in (small, list(small.iter_json()), small.to_pydicom_datasets()):
        async with FakeArchive(content) as archive:
            assert archive.counts == (4, 8, 16)
            answers.append([_without_urls((await get(archive, q)).json) for q in queries])
    assert answers[0] == answers[1] == answers[2]


def test_synthetic_json_levels_agree_with_the_archive() -> None:
    study = SYNTH.studies[0]
    assert all(_level_of(k) in (0, -1) for k in SYNTH.study_json(study, aggregates=False))
    series_keys = set(SYNTH.series_json(study.series[0], aggregates=False)) - {"0020000D"}
    assert all(_level_of(k) in (1, -1) for k in series_keys)


def test_add_rejects_bad_content() -> None:
    archive = FakeArchive()
    with pytest.raises(ValueError, match="SOPInstanceUID"):
        archive.add(
            {"0020000D": {"vr": "UI", "Value": ["1.2"]}, "0020000E": {"vr": "UI", "Value": ["1.3"]}}
        )
    with pytest.raises(ValueError, match="SeriesInstanceUID"):
        archive.add({"0020000D": {"vr": "UI", "Value": ["1.2"]}, "0020000E": {"vr": "UI"}})
    with pytest.raises(TypeError, match="int"):
        archive.add(3)
    archive.add(SYNTH.dataset_json(SYNTH.instances[0]))
    archive.add(SYNTH.dataset_json(SYNTH.instances[0]))  # duplicates are skipped
    assert archive.counts == (1, 1, 1)
    with pytest.raises(RuntimeError, match="not running"):
        _ = archive.url


async def test_added_instances_update_aggregates() -> None:
    small = SyntheticArchive(seed=1, studies=1, series_per_study=1, instances_per_series=1)
    extra = small.dataset_json(small.instances[0])
    extra["00080018"] = {"vr": "UI", "Value": ["1.2.3.4"]}
    extra["0020000E"] = {"vr": "UI", "Value": ["1.2.3.5"]}
    extra["00080060"] = {"vr": "CS", "Value": ["ZZ"]}
    async with FakeArchive(small) as archive:
        archive.add(extra)
        item = (await get(archive, "/studies")).json[0]
    assert "ZZ" in item["00080061"]["Value"]
    assert item["00201206"]["Value"] == [2]
    assert item["00201208"]["Value"] == [2]


# --- auth, latency, statistics -------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_basic_and_bearer_auth() -> None:
    async with FakeArchive(SYNTH, basic_auth=("alice", "s3cret")) as archive:
        denied = await get(archive, "/studies?limit=1")
        assert denied.status == 401
        assert denied.headers["WWW-Authenticate"].startswith("Basic")
        wrong = {"Authorization": basic("alice", "nope")}
        assert (await get(archive, "/studies?limit=1", headers=wrong)).status == 401
        right = {"Authorization": basic("alice", "s3cret")}
        assert (await get(archive, "/studies?limit=1", headers=right)).status == 200
    async with FakeArchive(SYNTH, bearer_token="tok") as archive:
        assert (await get(archive, "/studies?limit=1")).status == 401
        bad = {"Authorization": "Bearer other"}
        assert (await get(archive, "/studies?limit=1", headers=bad)).status == 401
        good = {"Authorization": "Bearer tok"}
        assert (await get(archive, "/studies?limit=1", headers=good)).status == 200


async def test_requests_are_recorded(archive: FakeArchive) -> None:
    await get(archive, "/studies?PatientName=Doe%5EJ*&limit=2", headers={"X-Trace": "7"})
    await get(archive, "/nothing")
    first, second = archive.requests
    assert isinstance(first, ServedRequest)
    assert first.method == "GET"
    assert first.path == "/dicom-web/studies"
    assert first.query_string == "PatientName=Doe%5EJ*&limit=2"
    assert first.params == [("PatientName", "Doe^J*"), ("limit", "2")]
    assert first.relative_url == "/dicom-web/studies?PatientName=Doe%5EJ*&limit=2"
    assert first.headers["x-trace"] == "7"
    assert first.status == 200
    assert first.fault is None
    assert second.status == 404
    archive.reset_stats()
    assert archive.requests == []
    assert archive.peak_concurrency == 0


async def test_recorded_params_keep_what_is_not_utf8_as_sent(archive: FakeArchive) -> None:
    # params raised UnicodeDecodeError for a request the archive had answered with 400
    reply = await get(archive, "/studies?PatientName=%FF%5E&%C3=x+y&limit=1")
    assert reply.status == 400
    (served,) = archive.requests
    assert served.params == [("PatientName", "%FF%5E"), ("%C3", "x y"), ("limit", "1")]


async def test_latency_keeps_requests_in_flight_and_peak_concurrency() -> None:
    async with FakeArchive(SYNTH, latency=0.5) as archive, aiohttp.ClientSession() as session:

        async def one(k: int) -> int:
            async with session.get(f"{archive.url}/studies?limit=1&offset={k}") as response:
                await response.read()
                return response.status

        assert await asyncio.gather(*(one(k) for k in range(4))) == [200] * 4
        assert archive.peak_concurrency == 4
        with pytest.raises(asyncio.TimeoutError):
            async with session.get(
                f"{archive.url}/studies", timeout=aiohttp.ClientTimeout(total=0.05)
            ) as response:
                await response.read()


# --- faults --------------------------------------------------------------------------------


async def _statuses(archive: FakeArchive, rels: list[str]) -> list[tuple[str | None, int | None]]:
    async with aiohttp.ClientSession() as session:
        for rel in rels:
            try:
                async with session.get(yarl.URL(archive.url + rel, encoded=True)) as response:
                    await response.read()
            except aiohttp.ClientError:
                pass
    return [(r.fault, r.status) for r in archive.requests]


async def test_random_faults_are_reproducible_by_seed() -> None:
    rels = [f"/studies?limit=1&offset={k}" for k in range(40)]
    kinds = ("429", "503", "500", "html", "malformed")
    runs = []
    for seed in (3, 3, 4):
        async with FakeArchive(SYNTH, faults=Faults(rate=0.3, kinds=kinds, seed=seed)) as archive:
            runs.append(await _statuses(archive, rels))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    faulted = [f for f, _ in runs[0] if f is not None]
    assert 3 < len(faulted) < 25
    assert set(faulted) <= set(kinds)


def test_fault_draw_depends_on_url_and_attempt_only() -> None:
    faults = Faults(rate=0.5, seed=1)
    draws = [faults.draw(f"/studies?offset={k}", 0) for k in range(200)]
    assert draws == [faults.draw(f"/studies?offset={k}", 0) for k in range(200)]
    assert 60 < sum(d is not None for d in draws) < 140
    retried = [faults.draw("/studies?offset=1", n) for n in range(50)]
    assert any(d is None for d in retried)
    assert any(d is not None for d in retried)
    assert all(Faults(rate=0.0).draw("/x", n) is None for n in range(20))
    assert all(Faults(rate=1.0).draw("/x", n) is not None for n in range(20))


async def test_an_unknown_fault_kind_is_refused(archive: FakeArchive) -> None:
    # "502" was served as a "truncated" fault; Faults(kinds=[]) crashed the server (500)
    with pytest.raises(ValueError, match="fault kinds must be some of"):
        archive.fail("/studies", "502")  # type: ignore[arg-type]
    for kinds in ([], ["404"], "503"):
        with pytest.raises(ValueError, match="fault kinds must be some of"):
            Faults(kinds=kinds)  # type: ignore[arg-type]
    assert (await get(archive, "/studies")).status == 200
    archive.fail("/studies", Fault(kind="html", status=502), times=1)
    assert (await get(archive, "/studies")).status == 502


async def test_each_fault_kind_as_a_client_sees_it(archive: FakeArchive) -> None:
    async with aiohttp.ClientSession() as session:
        archive.fail("/studies", Fault(kind="429", retry_after="7"), times=1)
        async with session.get(archive.url + "/studies") as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "7"
        archive.fail("/studies", "503", times=1)
        async with session.get(archive.url + "/studies") as response:
            assert response.status == 503
            assert "Retry-After" in response.headers
        archive.fail("/studies", "500", times=1)
        async with session.get(archive.url + "/studies") as response:
            assert response.status == 500
            assert (await response.json())["HttpStatus"] == 500
        archive.fail("/studies", Fault(kind="html", status=200), times=1)
        async with session.get(archive.url + "/studies") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
        archive.fail("/studies", "malformed", times=1)
        async with session.get(archive.url + "/studies") as response:
            assert response.content_type == "application/dicom+json"
            with pytest.raises(json.JSONDecodeError):
                json.loads(await response.read())
        archive.fail("/studies", "truncated", times=1)
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.get(archive.url + "/studies") as response:
                await response.read()
        archive.fail("/studies", "disconnect")  # permanent: aiohttp retries a reset once
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with session.get(archive.url + "/studies") as response:
                await response.read()
        archive.clear_faults()
        async with session.get(archive.url + "/studies") as response:
            assert response.status == 200
    recorded = [(r.fault, r.status) for r in archive.requests]
    assert ("truncated", None) in recorded
    assert ("disconnect", None) in recorded
    assert recorded[-1] == (None, 200)


async def test_targeted_fault_for_one_uid_is_permanent(archive: FakeArchive) -> None:
    archive.fail(STUDY.study_instance_uid, "500")
    for _ in range(3):
        assert (await get(archive, f"/studies/{STUDY.study_instance_uid}/series")).status == 500
    other = SYNTH.studies[0].study_instance_uid
    assert (await get(archive, f"/studies/{other}/series")).status == 200
    archive.fail(lambda url: "offset=3" in url, "503", times=2)
    statuses = [(await get(archive, "/studies?offset=3")).status for _ in range(3)]
    assert statuses == [503, 503, 200]


# --- thread mode ---------------------------------------------------------------------------


def test_run_in_thread_for_sync_clients() -> None:
    fake = FakeArchive(SYNTH, latency=0.0)
    with fake.run_in_thread() as archive, requests.Session() as session:
        response = session.get(archive.url + "/studies", params={"limit": "3"}, timeout=10)
        assert response.status_code == 200
        assert [s["0020000D"]["Value"][0] for s in response.json()] == study_uids(SYNTH.studies[:3])
        url = archive.url
    assert [r.query_string for r in fake.requests] == ["limit=3"]
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/studies", timeout=5)


def test_closing_ends_the_requests_whose_client_has_gone() -> None:
    # aiohttp left them running: on a stopped loop ("Task was destroyed but it is
    # pending!"), never recorded, and counted in flight for ever
    fake = FakeArchive(SYNTH, latency=30)
    with fake.run_in_thread() as archive:
        with socket.create_connection(("127.0.0.1", archive.port)) as gone:
            gone.sendall(f"GET {archive.prefix}/studies HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            deadline = time.monotonic() + 10
            while fake._in_flight == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(0.1)  # the connection is lost, the handler still sleeps
    assert fake._in_flight == 0
    assert [(r.path, r.status) for r in fake.requests] == [("/dicom-web/studies", None)]


async def test_closing_the_async_archive_ends_its_requests_too() -> None:
    async with FakeArchive(SYNTH, latency=30) as archive:
        _, writer = await asyncio.open_connection("127.0.0.1", archive.port)
        writer.write(f"GET {archive.prefix}/studies HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        for _ in range(1000):  # until the request is in flight (10 s at most)
            if archive._in_flight:
                break
            await asyncio.sleep(0.01)
        writer.close()
        await asyncio.sleep(0.1)
    assert archive._in_flight == 0
    assert [r.status for r in archive.requests] == [None]


def _custom(sop: str, acquired: str, station: str) -> dict[str, Any]:
    """A minimal DICOM JSON instance (lowercase keys on purpose) with a DT and a multi-valued SH."""
    return {
        "0020000d": {"vr": "UI", "Value": ["1.2.3"]},
        "0020000e": {"vr": "UI", "Value": ["1.2.3.1"]},
        "00080018": {"vr": "UI", "Value": [sop]},
        "0008002A": {"vr": "DT", "Value": [acquired]},
        "00081010": {"vr": "SH", "Value": [station]},
        "00180010": {"vr": "LO", "Value": ["Iodine", None, "Gadolinium"]},
    }


async def test_json_content_dt_ranges_and_multi_valued_strings() -> None:
    content = [
        _custom("1.2.3.1.1", "20240101120000", "CT01"),
        _custom("1.2.3.1.2", "20240102083000.5", "MR02"),
        _custom("1.2.3.1.3", "2023", "CT03"),
    ]
    async with FakeArchive(content) as archive:
        reply = await get(archive, "/instances?AcquisitionDateTime=20240101-20240101235959")
        assert reply.values("00080018") == ["1.2.3.1.1"]
        reply = await get(archive, "/instances?AcquisitionDateTime=20240102-")
        assert reply.values("00080018") == ["1.2.3.1.2"]
        reply = await get(archive, "/instances?AcquisitionDateTime=-2023")
        assert reply.values("00080018") == ["1.2.3.1.3"]
        reply = await get(archive, "/instances?ContrastBolusAgent=Gad*&includefield=00081010")
        # StationName is a series attribute: the series keeps its first instance's value
        assert reply.values("00081010") == ["CT01"] * 3
        assert (await get(archive, "/studies/1.2.3/series?StationName=MR*")).status == 204
        assert (await get(archive, "/instances?emptyvaluematching=true")).status == 200
        assert (await get(archive, "/instances?emptyvaluematching=1")).status == 400


async def test_only_get_is_allowed(archive: FakeArchive) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(archive.url + "/studies", data=b"x") as response:
            assert response.status == 405
        async with session.head(archive.url + "/studies") as response:
            assert response.status == 200

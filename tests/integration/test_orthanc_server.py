"""The launcher, the seed, and Orthanc's QIDO-RS behaviour, checked over raw HTTP.

No aqido client here: these tests pin down what the real server does (the
facts docs/servers.md and the client rely on), with URLs
sent byte for byte.  Expected answers are computed from the synthetic
records the server was seeded with.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable

import aiohttp
import pytest

from aqido.testing.orthanc import OrthancServer
from aqido.testing.synthetic import SyntheticStudy
from tests.integration.support import (
    AUTH_PASSWORD,
    AUTH_USER,
    AUTHED,
    CAP_INSTANCES,
    CAP_RESULTS,
    CAPPED,
    SEEDED,
    get_json,
)

pytestmark = pytest.mark.integration

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"


def uids(items: list[dict[str, dict[str, list[str]]]], tag: str = STUDY_UID) -> list[str]:
    return [item[tag]["Value"][0] for item in items]


def studies_where(predicate: Callable[[SyntheticStudy], bool]) -> set[str]:
    return {s.study_instance_uid for s in SEEDED.studies if predicate(s)}


def wildcard(pattern: str) -> Callable[[str], bool]:
    """DICOM wildcard matching (``*``, ``?``), case-insensitive like Orthanc, on the whole value."""
    regex = re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
        re.IGNORECASE | re.DOTALL,
    )
    return lambda value: regex.fullmatch(value) is not None


# --- the launcher and the seed ---------------------------------------------------------


def test_config_is_loopback_only(orthanc: OrthancServer) -> None:
    assert orthanc.directory is not None
    config = json.loads((orthanc.directory / "orthanc.json").read_text())
    assert config["RemoteAccessAllowed"] is False
    assert config["DicomServerEnabled"] is False
    assert config["HttpPort"] == orthanc.port
    assert orthanc.url == f"http://127.0.0.1:{orthanc.port}"
    assert orthanc.dicomweb_url == orthanc.url + "/dicom-web"


def test_seeded_counts_are_the_synthetic_archive(orthanc: OrthancServer) -> None:
    stats = orthanc.statistics()
    assert stats["CountStudies"] == len(SEEDED.studies) == 300
    assert stats["CountSeries"] == len(SEEDED.series) == 900
    assert stats["CountInstances"] == len(SEEDED.instances) == 1800


@pytest.mark.anyio
async def test_all_seeded_studies_are_found(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    status, items, headers = await get_json(http, f"{orthanc.dicomweb_url}/studies")
    assert status == 200
    assert headers["Content-Type"] == "application/dicom+json"
    assert sorted(uids(items)) == sorted(s.study_instance_uid for s in SEEDED.studies)


@pytest.mark.anyio
async def test_stop_ends_the_process_and_removes_its_directory(
    orthanc_installed: None, http: aiohttp.ClientSession
) -> None:
    server = OrthancServer(keep_alive=False)
    with server:
        report = server.seed(AUTHED.iter_pydicom(AUTHED.studies[:1]))
        assert (report.studies, report.series, report.instances) == (1, 2, 2)
        assert report.stored == 2
        # the same data again: nothing new, and the counts still add up
        assert server.seed(AUTHED.iter_pydicom(AUTHED.studies[:1])).already_stored == 2
        status, _, headers = await get_json(http, f"{server.dicomweb_url}/studies")
        assert status == 200
        assert headers.get("Connection", "").lower() == "close"  # keep_alive=False
        pid, directory, url = server.pid, server.directory, server.url
        assert pid is not None
        assert directory is not None
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not directory.exists()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get_json(http, f"{url}/system")


@pytest.mark.anyio
async def test_basic_auth(orthanc_auth: OrthancServer, http: aiohttp.ClientSession) -> None:
    url = f"{orthanc_auth.dicomweb_url}/studies"
    status, _, headers = await get_json(http, url)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic ")
    status, _, _ = await get_json(http, url, auth=(AUTH_USER, AUTH_PASSWORD + "x"))
    assert status == 401
    status, items, _ = await get_json(http, url, auth=(AUTH_USER, AUTH_PASSWORD))
    assert status == 200
    assert sorted(uids(items)) == sorted(s.study_instance_uid for s in AUTHED.studies)


# --- matching --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_empty_result_is_200_empty_array_never_204(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    for query in (
        "/studies?StudyInstanceUID=1.2.3.4",
        "/studies/1.2.3.4/series",  # unknown parent: still 200 [], not 404
        "/studies?StudyDate=garbage",  # malformed date: 200 [], not 400
        "/studies?Modality=MR",  # a series attribute at study level filters everything out
    ):
        status, items, _ = await get_json(http, orthanc.dicomweb_url + query)
        assert (status, items) == (200, []), query


@pytest.mark.anyio
@pytest.mark.parametrize(
    "pattern",
    ["Doe^John", "doe^john", "doe*", "DOE*", "D?e*", "*an*", "Smith", "Yamada*", "M*ller^J*"],
)
async def test_patient_name_matching(
    orthanc: OrthancServer, http: aiohttp.ClientSession, pattern: str
) -> None:
    """Exact and wildcard PN matching, case-insensitive, against the whole stored value."""
    matches = wildcard(pattern)
    expected = studies_where(lambda s: matches(s.patient_name))
    assert expected
    status, items, _ = await get_json(http, f"{orthanc.dicomweb_url}/studies?PatientName={pattern}")
    assert status == 200
    assert set(uids(items)) == expected


@pytest.mark.anyio
async def test_multi_group_names_match_only_with_all_groups(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    """``Ivanov^Ivan`` does not match ``Ivanov^Ivan=Иванов^Иван``: matching sees the whole value."""
    assert studies_where(lambda s: s.patient_name == "Ivanov^Ivan=Иванов^Иван")
    url = f"{orthanc.dicomweb_url}/studies?PatientName="
    assert (await get_json(http, url + "Ivanov^Ivan"))[1] == []
    _, items, _ = await get_json(http, url + "Ivanov^Ivan=*")
    assert set(uids(items)) == studies_where(lambda s: s.patient_name.startswith("Ivanov^Ivan="))


@pytest.mark.anyio
async def test_query_values_are_not_percent_decoded(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    """``^`` and ``*`` must be sent raw; percent-encoded they match nothing."""
    url = f"{orthanc.dicomweb_url}/studies?PatientName="
    assert studies_where(lambda s: s.patient_name.lower() == "doe^john")
    assert studies_where(lambda s: s.patient_name.startswith("Müller"))
    for encoded in ("Doe%5EJohn", "Doe%2A", "M%C3%BCller%2A", "M%C3%BCller*", "Doe+John"):
        status, items, _ = await get_json(http, url + encoded)
        assert (status, items) == (200, []), encoded


@pytest.mark.anyio
async def test_a_comma_means_or_in_any_value(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    url = f"{orthanc.dicomweb_url}/studies?PatientName=Smith,lee^ji-hoon"
    expected = studies_where(lambda s: s.patient_name in ("Smith", "Lee^Ji-hoon"))
    assert set(uids((await get_json(http, url))[1])) == expected


@pytest.mark.anyio
async def test_raw_utf8_in_the_url_is_rejected(orthanc: OrthancServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", orthanc.port)
    try:
        writer.write(
            "GET /dicom-web/studies?PatientName=Müller* HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert status_line.split()[1] == b"400"
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.anyio
async def test_patient_id_matching_is_case_insensitive_and_takes_slashes_raw(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    odd = next(s for s in SEEDED.studies if "/" in s.patient_id)
    expected = studies_where(lambda s: s.patient_id == odd.patient_id)
    url = f"{orthanc.dicomweb_url}/studies?PatientID="
    assert set(uids((await get_json(http, url + odd.patient_id))[1])) == expected
    assert set(uids((await get_json(http, url + odd.patient_id.lower()))[1])) == expected
    assert (await get_json(http, url + odd.patient_id.replace("/", "%2F")))[1] == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("20100101-20121231", "20100101", "20121231"),
        ("-20091231", "", "20091231"),
        ("20200101-", "20200101", "99999999"),
        ("20150615-20150615", "20150615", "20150615"),
    ],
)
async def test_study_date_ranges(
    orthanc: OrthancServer, http: aiohttp.ClientSession, value: str, low: str, high: str
) -> None:
    expected = studies_where(lambda s: low <= s.study_date <= high)
    status, items, _ = await get_json(http, f"{orthanc.dicomweb_url}/studies?StudyDate={value}")
    assert status == 200
    assert set(uids(items)) == expected


@pytest.mark.anyio
async def test_exact_study_date(orthanc: OrthancServer, http: aiohttp.ClientSession) -> None:
    day = SEEDED.studies[7].study_date
    _, items, _ = await get_json(http, f"{orthanc.dicomweb_url}/studies?StudyDate={day}")
    assert set(uids(items)) == studies_where(lambda s: s.study_date == day)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "wanted"),
    [
        ("ModalitiesInStudy=CT", {"CT"}),
        ("ModalitiesInStudy=CT,MR", {"CT", "MR"}),  # a list means OR
        ("ModalitiesInStudy=C*", {"CT", "CR"}),
        ("00080061=MR", {"MR"}),  # the tag form of the key
    ],
)
async def test_modalities_in_study(
    orthanc: OrthancServer, http: aiohttp.ClientSession, query: str, wanted: set[str]
) -> None:
    expected = studies_where(lambda s: bool(wanted & set(s.modalities_in_study)))
    assert expected
    _, items, _ = await get_json(http, f"{orthanc.dicomweb_url}/studies?{query}")
    assert set(uids(items)) == expected
    for item in items:  # the aggregate is the study's modalities, computed by the server
        study = SEEDED.study(item[STUDY_UID]["Value"][0])
        assert tuple(sorted(item["00080061"]["Value"])) == study.modalities_in_study


@pytest.mark.anyio
async def test_uid_lists(orthanc: OrthancServer, http: aiohttp.ClientSession) -> None:
    a, b, c = (s.study_instance_uid for s in SEEDED.studies[10:13])
    url = f"{orthanc.dicomweb_url}/studies?StudyInstanceUID="
    assert set(uids((await get_json(http, url + f"{a},{b},{c}"))[1])) == {a, b, c}
    assert set(uids((await get_json(http, url + f"{a}%2C{b}"))[1])) == {a, b}
    assert (await get_json(http, url + f"{a}%5C{b}"))[1] == []  # backslash is not a separator


@pytest.mark.anyio
async def test_unknown_attributes_are_ignored(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    query = "/studies?StudyDate=20100101-20101231&FooBar=1&99999999=1&includefield=FooBar"
    _, items, _ = await get_json(http, orthanc.dicomweb_url + query)
    assert set(uids(items)) == studies_where(lambda s: s.study_date.startswith("2010"))


# --- the hierarchy and the relational queries ---------------------------------------------


@pytest.mark.anyio
async def test_every_query_path(orthanc: OrthancServer, http: aiohttp.ClientSession) -> None:
    study = SEEDED.studies[42]
    series = study.series[1]
    base = orthanc.dicomweb_url
    st = study.study_instance_uid
    cases: list[tuple[str, str, set[str]]] = [
        (f"/studies?PatientID={study.patient_id}", STUDY_UID,
         studies_where(lambda s: s.patient_id == study.patient_id)),
        (f"/studies/{st}/series", SERIES_UID, {s.series_instance_uid for s in study.series}),
        (f"/studies/{st}/series/{series.series_instance_uid}/instances", SOP_UID,
         {i.sop_instance_uid for i in series.instances}),
        (f"/studies/{st}/instances", SOP_UID, {i.sop_instance_uid for i in study.instances}),
        ("/series?Modality=NM", SERIES_UID,
         {s.series_instance_uid for s in SEEDED.series if s.modality == "NM"}),
        (f"/instances?SeriesInstanceUID={series.series_instance_uid}", SOP_UID,
         {i.sop_instance_uid for i in series.instances}),
    ]  # fmt: skip
    for path, tag, expected in cases:
        status, items, _ = await get_json(http, base + path)
        assert status == 200, path
        assert expected, path
        assert set(uids(items, tag)) == expected, path


# --- paging, includefield and the JSON shapes ----------------------------------------------


@pytest.mark.anyio
async def test_limit_offset_pages_cover_the_archive_exactly(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    base = f"{orthanc.dicomweb_url}/studies"
    _, everything, _ = await get_json(http, base)
    pages = [
        uids((await get_json(http, f"{base}?limit=70&offset={offset}"))[1])
        for offset in range(0, 350, 70)
    ]
    assert [len(page) for page in pages] == [70, 70, 70, 70, 20]
    assert [uid for page in pages for uid in page] == uids(everything)  # same order, no gaps
    assert (await get_json(http, f"{base}?offset=300"))[1] == []
    assert len((await get_json(http, f"{base}?limit=0"))[1]) == 300  # 0 means no limit
    assert (await get_json(http, f"{base}?limit=-1"))[0] == 500  # validate client-side!


@pytest.mark.anyio
async def test_includefield_and_value_types(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    study = next(s for s in SEEDED.studies if s.study_description)
    url = (
        f"{orthanc.dicomweb_url}/studies?StudyInstanceUID={study.study_instance_uid}"
        "&includefield=PatientWeight&includefield=00081030,ProcedureCodeSequence"
    )
    (item,) = (await get_json(http, url))[1]
    assert item["00101030"] == {"vr": "DS", "Value": [float(study.patient_weight)]}
    assert item["00081030"]["Value"] == [study.study_description]
    assert "00081032" not in item  # sequences are never returned by QIDO
    assert item["00201206"] == {"vr": "IS", "Value": [3]}  # IS: a JSON number
    assert item["00201208"] == {"vr": "IS", "Value": [6]}

    series = study.series[0]
    url = (
        f"{orthanc.dicomweb_url}/studies/{study.study_instance_uid}/series/"
        f"{series.series_instance_uid}/instances?includefield=PixelSpacing,SliceThickness"
        "&includefield=ImagePositionPatient"
    )
    instances = (await get_json(http, url))[1]
    for item in instances:
        number = item["00200013"]["Value"][0]
        assert isinstance(number, int)
        assert item["00280030"]["Value"] == [float(series.pixel_spacing)] * 2
        assert item["00180050"]["Value"] == [float(series.slice_thickness)]
        assert item["00200032"]["Value"][:2] == [-125, -125]  # "-125" arrives as an int
    assert sorted(item["00200013"]["Value"][0] for item in instances) == [1, 2]


@pytest.mark.anyio
async def test_empty_attributes_have_no_value_key(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    cases = [
        ("00080090", next(s for s in SEEDED.studies if not s.referring_physician_name), "PN"),
        ("00100030", next(s for s in SEEDED.studies if not s.patient_birth_date), "DA"),
        ("00080050", next(s for s in SEEDED.studies if not s.accession_number), "SH"),
    ]
    for tag, study, vr in cases:
        url = f"{orthanc.dicomweb_url}/studies?StudyInstanceUID={study.study_instance_uid}"
        (item,) = (await get_json(http, url))[1]
        assert item[tag] == {"vr": vr}, tag


@pytest.mark.anyio
async def test_person_name_groups_come_back_as_utf8(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    study = next(s for s in SEEDED.studies if s.patient_name.startswith("Yamada"))
    url = f"{orthanc.dicomweb_url}/studies?StudyInstanceUID={study.study_instance_uid}"
    (item,) = (await get_json(http, url))[1]
    assert item["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]


@pytest.mark.anyio
async def test_accept_is_not_negotiated(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    for accept in ("application/json", "text/html", "*/*"):
        url = f"{orthanc.dicomweb_url}/studies?limit=1"
        status, _, headers = await get_json(http, url, headers={"Accept": accept})
        assert (status, headers["Content-Type"]) == (200, "application/dicom+json"), accept


@pytest.mark.anyio
async def test_error_bodies_have_no_content_type(
    orthanc: OrthancServer, http: aiohttp.ClientSession
) -> None:
    status, body, headers = await get_json(http, f"{orthanc.dicomweb_url}/patients")
    assert status == 404
    assert "Content-Type" not in headers
    assert body["HttpStatus"] == 404


# --- caps and keep-alive -------------------------------------------------------------------


@pytest.mark.anyio
async def test_caps_truncate_silently_at_cap_plus_one(
    orthanc_capped: OrthancServer, http: aiohttp.ClientSession
) -> None:
    base = orthanc_capped.dicomweb_url
    assert len(CAPPED.studies) > 2 * CAP_RESULTS
    for path, cap in (("/studies", CAP_RESULTS), ("/series", CAP_RESULTS)):
        status, items, headers = await get_json(http, base + path)
        assert (status, len(items)) == (200, cap + 1), path
        assert "Warning" not in headers
    _, items, headers = await get_json(http, base + "/instances")
    assert len(items) == CAP_INSTANCES + 1
    assert "Warning" not in headers
    # the cap applies before the offset: paging cannot get past it
    assert len((await get_json(http, f"{base}/studies?offset=5"))[1]) == CAP_RESULTS + 1 - 5
    assert (await get_json(http, f"{base}/studies?offset={CAP_RESULTS + 5}"))[1] == []
    # a narrow enough query is complete
    day = CAPPED.studies[0].study_date
    _, items, _ = await get_json(http, f"{base}/studies?StudyDate={day}")
    assert set(uids(items)) == {s.study_instance_uid for s in CAPPED.studies if s.study_date == day}


@pytest.mark.anyio
async def test_idle_keep_alive_connections_are_closed_after_a_second(
    orthanc: OrthancServer,
) -> None:
    """What a client must survive: the server closes an idle pooled connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", orthanc.port)
    try:
        writer.write(
            b"GET /dicom-web/studies?limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Connection: keep-alive\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert b"Keep-Alive: timeout=1" in head
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        await asyncio.wait_for(reader.readexactly(length), 10)
        # nothing more is sent; the server closes the idle connection (EOF) well within 10 s
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
        await writer.wait_closed()

"""The launcher, the STOW-RS load, and tiny_pacs' QIDO-RS behaviour, checked over raw HTTP.

No aqido client here: these tests pin down what tiny_pacs 0.4 + tiny_pacs_dicomweb
0.1 really do (``docs/tinypacs.md``), with URLs sent byte for byte.  Expected
answers are computed from the synthetic records it was loaded with, through a
model of tiny_pacs' matching (SQL ``LIKE`` on Latin-1-decoded query values);
where that differs from the standard's answer, the test says so.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
import pytest

from aqido.testing import _launch
from aqido.testing._launch import request
from aqido.testing.synthetic import SyntheticStudy
from aqido.testing.tinypacs import TinyPacsServer
from tests.integration.expected import matches
from tests.integration.support import BIG, SEEDED, TINYPACS_CAP, get_json

pytestmark = pytest.mark.integration

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"

#: What tiny_pacs returns at each level, whatever is asked for (its table columns).
PATIENT_TAGS = {"00100010", "00100020", "00100021", "00100030", "00100040", "00101001"}
PATIENT_TAGS |= {"00104000"}
STUDY_TAGS = {"00080020", "00080030", "00080050", "00080090", "00081030", "00081060"}
STUDY_TAGS |= {"00101010", "00101030", STUDY_UID, "00200010", "001021B0"}
SERIES_TAGS = {"00080060", "00200011", SERIES_UID}
INSTANCE_TAGS = {"00020010", "00080016", SOP_UID, "00200013"}
#: Attributes whose columns are empty for every seeded instance (sent without a Value)
#: and so absent from the JSON: none of the seed has them.
_ABSENT_WHEN_EMPTY = {"00102160", "00101020", "00102180", "00081080", "00100032", "00400512"}


def uids(items: list[dict[str, Any]] | None, tag: str = STUDY_UID) -> list[str]:
    return [item[tag]["Value"][0] for item in items or []]


def studies_where(predicate: Callable[[SyntheticStudy], object]) -> set[str]:
    return {s.study_instance_uid for s in SEEDED.studies if predicate(s)}


def like(encoded: str) -> Callable[[str], bool]:
    """tiny_pacs' PatientName matching for a query value sent as ``encoded``.

    The value is percent-decoded (``+`` is a space) as Latin-1, stripped, and
    matched as SQL ``'%value%' LIKE`` in SQLite: a substring, ``%`` and ``_``
    are wildcards, ``*`` and ``?`` are literal, case folding for ASCII only.
    """
    received = urllib.parse.unquote_plus(encoded, encoding="latin-1").strip()
    regex = re.compile(
        "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in received),
        re.IGNORECASE | re.ASCII | re.DOTALL,
    )
    return lambda value: regex.search(value) is not None


async def studies(http: aiohttp.ClientSession, url: str) -> tuple[int, list[str]]:
    status, body, _ = await get_json(http, url)
    assert status in (200, 204), (status, body)
    assert (status == 204) == (body is None)  # no match: 204 without a body, never 200 []
    return status, uids(body)


# --- the launcher and the load --------------------------------------------------------


def test_config_is_loopback_without_in_memory_storage(tinypacs: TinyPacsServer) -> None:
    assert tinypacs.directory is not None
    config = json.loads((tinypacs.directory / "config.yaml").read_text())
    components = config["components"]
    assert components["InMemoryStorage"] == {"on": False}
    assert components["HttpServer"]["host"] == "127.0.0.1"
    assert components["HttpServer"]["port"] == tinypacs.port
    assert config["ae"]["port"] == tinypacs.dicom_port != tinypacs.port
    assert tinypacs.dicomweb_url == f"http://127.0.0.1:{tinypacs.port}/dicomweb"
    assert tinypacs.versions["tiny_pacs"].startswith("0.4.")
    assert tinypacs.versions["tiny_pacs_dicomweb"].startswith("0.1.")
    assert "waitress" in tinypacs.versions
    assert tinypacs.running
    assert tinypacs.pid is not None


def test_each_instance_is_stored_once(tinypacs: TinyPacsServer) -> None:
    # With the in-memory storage on, every instance would be stored twice.
    assert tinypacs.count() == len(SEEDED.studies)
    record = SEEDED.studies[7]
    assert tinypacs.count(f"/studies/{record.study_instance_uid}/series") == len(record.series)
    series = record.series[0]
    path = f"/studies/{record.study_instance_uid}/series/{series.series_instance_uid}/instances"
    assert tinypacs.count(path) == len(series.instances)


def test_a_token_server_refuses_requests_without_the_token(tinypacs_installed: None) -> None:
    with TinyPacsServer(token="t0ken-for-aqido-tests") as pacs:
        url = f"{pacs.dicomweb_url}/studies"
        assert request(url)[0] == 401
        assert request(url, headers={"Authorization": "Bearer wrong"})[0] == 401
        status, body, _headers = request(url, headers=pacs.headers)
        assert (status, body) == (204, b"")  # empty archive
    assert not pacs.running


def test_a_taken_port_is_retried_with_another(
    tinypacs_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aqido.testing import tinypacs as launcher

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = [taken]
        given: list[int] = []

        def free_port() -> int:
            port = ports.pop() if ports else _launch.free_port()
            given.append(port)
            return port

        monkeypatch.setattr(launcher, "free_port", free_port)
        with TinyPacsServer() as pacs:
            assert given[0] == taken
            assert pacs.port not in (taken, given[1])  # a second attempt, on new ports
            assert request(f"{pacs.dicomweb_url}/studies")[0] == 204


# --- endpoints, empty answers, returned attributes -----------------------------------


@pytest.mark.anyio
async def test_all_studies_in_load_order(
    tinypacs: TinyPacsServer, http: aiohttp.ClientSession
) -> None:
    _status, found = await studies(http, f"{tinypacs.dicomweb_url}/studies")
    assert found == [s.study_instance_uid for s in SEEDED.studies]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/series", "/instances", "/studies/{s}/instances", "/studies/"])
async def test_relational_paths_are_404(
    tinypacs: TinyPacsServer, http: aiohttp.ClientSession, path: str
) -> None:
    url = tinypacs.dicomweb_url + path.format(s=SEEDED.studies[0].study_instance_uid)
    async with http.get(url) as resp:
        assert resp.status == 404
        assert resp.content_type == "text/plain"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    [
        "/studies/1.2.3/series",  # unknown parent: 204, not 404
        "/studies/1.2.3/series/1.2.4/instances",
        "/studies?PatientID=nobody",
        "/studies?offset=300",
        "/studies?offset=200000",
    ],
)
async def test_nothing_found_is_204(
    tinypacs: TinyPacsServer, http: aiohttp.ClientSession, path: str
) -> None:
    status, found = await studies(http, tinypacs.dicomweb_url + path)
    assert (status, found) == (204, [])


@pytest.mark.anyio
async def test_returned_attributes_are_the_tables_columns_at_every_level(
    tinypacs: TinyPacsServer, http: aiohttp.ClientSession
) -> None:
    record = next(
        s
        for s in SEEDED.studies
        if s.referring_physician_name
        and s.patient_birth_date
        and s.accession_number
        and s.study_description
    )
    series = record.series[0]
    base = f"{tinypacs.dicomweb_url}/studies"
    study_level = f"{base}?StudyInstanceUID={record.study_instance_uid}"
    series_level = f"{base}/{record.study_instance_uid}/series"
    instance_level = f"{series_level}/{series.series_instance_uid}/instances"
    upper = PATIENT_TAGS | STUDY_TAGS
    for url, tags in (
        (study_level, upper),
        (study_level + "&includefield=all", upper),
        (study_level + "&includefield=00081030&includefield=ModalitiesInStudy", upper),
        (series_level, upper | SERIES_TAGS),
        (
            series_level + "?includefield=all&StudyInstanceUID=" + record.study_instance_uid,
            upper | SERIES_TAGS,
        ),
        (instance_level, upper | SERIES_TAGS | INSTANCE_TAGS),
    ):
        status, body, _ = await get_json(http, url)
        assert status == 200
        assert {frozenset(item) for item in body} == {frozenset(tags)}, url
    item = body[0]
    assert item["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": record.patient_name}]}
    assert item["00100020"]["Value"] == [record.patient_id]
    assert item["00100030"]["Value"] == [record.patient_birth_date]
    assert item["00080020"]["Value"] == [record.study_date]
    assert item["00080090"]["Value"] == [{"Alphabetic": record.referring_physician_name}]
    assert item["00080060"]["Value"] == [series.modality]
    assert item["00200011"]["Value"] == [series.series_number]  # IS as a JSON number
    assert item["00020010"]["Value"] == ["1.2.840.10008.1.2.1"]  # a file-meta tag
    assert item["00100021"] == {"vr": "LO"}  # an empty column: no Value
    for missing in ("00080061", "00201206", "00201208", "0008103E", "00080005", "00081190"):
        assert missing not in item  # no aggregates, SeriesDescription, charset, RetrieveURL
    assert not (_ABSENT_WHEN_EMPTY & set(item))


@pytest.mark.anyio
async def test_person_name_groups_come_back_split(
    tinypacs: TinyPacsServer, http: aiohttp.ClientSession
) -> None:
    record = next(s for s in SEEDED.studies if s.patient_name.count("=") == 2)
    url = f"{tinypacs.dicomweb_url}/studies?StudyInstanceUID={record.study_instance_uid}"
    _, body, _ = await get_json(http, url)
    alphabetic, ideographic, phonetic = record.patient_name.split("=")
    assert body[0]["00100010"]["Value"] == [
        {"Alphabetic": alphabetic, "Ideographic": ideographic, "Phonetic": phonetic}
    ]


# --- matching --------------------------------------------------------------------------

NAME_VALUES = [
    "Doe^John",  # the standard: exact; tiny_pacs: a substring, any ASCII case
    "Doe",
    "doe",
    "%20Doe%20",  # stripped
    "%5E",  # percent-decoded: every name with a component separator
    "D_e",  # SQL LIKE wildcards work ...
    "Do%25n",
    "Doe*",  # ... DICOM wildcards are literal characters
    "Doe?John",
    "van+der",  # + is a space
    "Wang%5EXiaoming%3D",  # matched against the stored value with all its groups
    "Doe%5EJohn%5EQ%5EDr%5EJr",
    "M%C3%BCller",  # UTF-8 (what the standard and aqido send): never matches
    "M%FCller",  # Latin-1 bytes do match
    "m%FCller",
    "M%DCller",  # no case folding beyond ASCII
    "%D0%98%D0%B2%D0%B0%D0%BD%D0%BE%D0%B2",  # Иванов: outside Latin-1, unmatchable
]


@pytest.mark.anyio
@pytest.mark.parametrize("value", NAME_VALUES)
async def test_patient_name_is_a_like_substring_of_latin1_text(
    tinypacs: TinyPacsServer, http: aiohttp.ClientSession, value: str
) -> None:
    _, found = await studies(http, f"{tinypacs.dicomweb_url}/studies?PatientName={value}")
    assert set(found) == studies_where(lambda s: like(value)(s.patient_name))


@pytest.mark.anyio
async def test_patient_name_answers_differ_from_the_standard(
    tinypacs: TinyPacsServer, http: aiohttp.ClientSession
) -> None:
    base = f"{tinypacs.dicomweb_url}/studies?PatientName="
    exact = studies_where(lambda s: matches("Doe^John", s.patient_name))
    _, found = await studies(http, base + "Doe^John")
    assert exact < set(found)  # more than the exact matches
    _, found = await studies(http, base + "Doe*")
    assert studies_where(lambda s: matches("Doe*", s.patient_name))
    assert found == []
    _, found = await studies(http, base + "M%C3%BCller%5EJ%C3%BCrgen")
    assert studies_where(lambda s: s.patient_name == "Müller^Jürgen")
    assert found == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("key", "value", "pick"),
    [
        ("PatientID", "{pid}", lambda s, r: s.patient_id == r.patient_id),
        ("PatientID", "{pid_lower}", lambda s, r: False),  # exact and case-sensitive
        ("PatientID", "{pid_prefix}", lambda s, r: False),
        ("PatientID", "PID*", lambda s, r: False),
        ("AccessionNumber", "{acc}", lambda s, r: s.accession_number == r.accession_number),
        ("AccessionNumber", "{acc_lower}", lambda s, r: False),
        ("PatientBirthDate", "{birth}", lambda s, r: s.patient_birth_date == r.patient_birth_date),
    ],
)
async def test_exact_case_sensitive_keys(
    tinypacs: TinyPacsServer,
    http: aiohttp.ClientSession,
    key: str,
    value: str,
    pick: Callable[[SyntheticStudy, SyntheticStudy], bool],
) -> None:
    record = next(
        s
        for s in SEEDED.studies
        if s.accession_number and s.patient_birth_date and "/" not in s.patient_id
    )
    text = value.format(
        pid=record.patient_id,
        pid_lower=record.patient_id.lower(),
        pid_prefix=record.patient_id[:-1],
        acc=record.accession_number,
        acc_lower=record.accession_number.lower(),
        birth=record.patient_birth_date,
    )
    _, found = await studies(http, f"{tinypacs.dicomweb_url}/studies?{key}={text}")
    assert set(found) == studies_where(lambda s: pick(s, record))


@pytest.mark.anyio
async def test_lists_are_one_literal_value_and_repeats_keep_the_last(
    tinypacs: TinyPacsServer, http: aiohttp.ClientSession
) -> None:
    base = f"{tinypacs.dicomweb_url}/studies"
    ct = studies_where(lambda s: "CT" in s.modalities_in_study)
    mr = studies_where(lambda s: "MR" in s.modalities_in_study)
    assert (await studies(http, f"{base}?ModalitiesInStudy=CT"))[1] == _ordered(ct)
    assert (await studies(http, f"{base}?ModalitiesInStudy=ct"))[1] == []
    assert (await studies(http, f"{base}?ModalitiesInStudy=CT,MR"))[1] == []  # standard: ct | mr
    assert (await studies(http, f"{base}?ModalitiesInStudy=CT%5CMR"))[1] == []
    repeated = f"{base}?ModalitiesInStudy=CT&ModalitiesInStudy=MR"
    assert (await studies(http, repeated))[1] == _ordered(mr)
    assert (await studies(http, f"{base}?Modality=MR"))[1] == _ordered(mr)
    assert (await studies(http, f"{base}?Modality=MR&ModalitiesInStudy=CT"))[1] == _ordered(ct)

    a, b = (s.study_instance_uid for s in SEEDED.studies[10:12])
    assert (await studies(http, f"{base}?StudyInstanceUID={a}"))[1] == [a]
    assert (await studies(http, f"{base}?StudyInstanceUID={a},{b}"))[1] == []  # standard: a, b
    assert (await studies(http, f"{base}?StudyInstanceUID={a}%5C{b}"))[1] == []
    assert (await studies(http, f"{base}?StudyInstanceUID={a}&StudyInstanceUID={b}"))[1] == [b]

    record = next(s for s in SEEDED.studies if len(s.series) > 1)
    one, two = (s.series_instance_uid for s in record.series[:2])
    series = f"{base}/{record.study_instance_uid}/series?SeriesInstanceUID="
    status, body, _ = await get_json(http, series + one)
    assert uids(body, SERIES_UID) == [one]
    status, body, _ = await get_json(http, f"{series}{one},{two}")
    assert status == 204


def _ordered(wanted: Iterable[str]) -> list[str]:
    keep = set(wanted)
    return [s.study_instance_uid for s in SEEDED.studies if s.study_instance_uid in keep]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "query",
    [
        "StudyDescription=Bone+scan",
        "StudyID=S3",
        "PatientSex=F",
        "StudyTime=000000-010000",
        "StudyTime=bogus",
        "patientname=Doe",  # parameter names are case-sensitive
        "00100010=Doe",  # tags are not read
        "fuzzymatching=true",
        "includefield=all",
        "FooBar=1",
    ],
)
async def test_other_keys_are_ignored_silently(
    tinypacs: TinyPacsServer, http: aiohttp.ClientSession, query: str
) -> None:
    status, found = await studies(http, f"{tinypacs.dicomweb_url}/studies?{query}")
    assert (status, len(found)) == (200, len(SEEDED.studies))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("20090101-20101231", "20090101", "20101231"),
        ("20090101-", "20090101", "99999999"),
        ("-20090101", "00000000", "20090101"),
        ("{day}", "{day}", "{day}"),
    ],
)
async def test_study_date_ranges(
    tinypacs: TinyPacsServer, http: aiohttp.ClientSession, value: str, low: str, high: str
) -> None:
    day = SEEDED.studies[3].study_date
    value, low, high = (v.format(day=day) for v in (value, low, high))
    _, found = await studies(http, f"{tinypacs.dicomweb_url}/studies?StudyDate={value}")
    assert set(found) == studies_where(lambda s: low <= s.study_date <= high)
    assert found


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("StudyDate=2020", "Invalid StudyDate parameter '2020': dates must be YYYYMMDD"),
        ("StudyDate=2009-01-01", "Invalid StudyDate range '2009-01-01'"),
        ("PatientBirthDate=19540317-", "Invalid StudyDate parameter '19540317-'"),
        ("limit=x", 'The "limit" parameter must be an integer.'),
        ("limit=1.5", 'The "limit" parameter must be an integer.'),
        ("offset=x", 'The "offset" parameter must be an integer.'),
    ],
)
async def test_bad_values_are_400_plain_text(
    tinypacs: TinyPacsServer, http: aiohttp.ClientSession, query: str, message: str
) -> None:
    async with http.get(f"{tinypacs.dicomweb_url}/studies?{query}") as resp:
        assert resp.status == 400
        assert resp.content_type == "text/plain"
        assert (await resp.text()).startswith(message)


# --- limit, offset, the silent cap ------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("limit=7", slice(0, 7)),
        ("limit=7&offset=295", slice(295, 300)),
        ("limit=0", slice(0, 1)),  # clamped to 1
        ("limit=-5", slice(0, 1)),
        ("limit=2&limit=7", slice(0, 7)),  # the last one wins
        ("limit=%201", slice(0, 1)),
        ("offset=-5&limit=2", slice(0, 2)),
        ("limit=20000", slice(0, 300)),
    ],
)
async def test_limit_and_offset(
    tinypacs: TinyPacsServer, http: aiohttp.ClientSession, query: str, expected: slice
) -> None:
    _, found = await studies(http, f"{tinypacs.dicomweb_url}/studies?{query}")
    assert found == [s.study_instance_uid for s in SEEDED.studies[expected]]


@pytest.mark.anyio
async def test_listings_stop_at_1000_without_a_warning(
    tinypacs_big: TinyPacsServer, http: aiohttp.ClientSession
) -> None:
    base = f"{tinypacs_big.dicomweb_url}/studies"
    every = [s.study_instance_uid for s in BIG.studies]
    status, body, headers = await get_json(http, base)
    assert (status, uids(body)) == (200, every[:TINYPACS_CAP])
    assert "Warning" not in headers
    status, body, headers = await get_json(http, f"{base}?offset={TINYPACS_CAP}")
    assert (status, uids(body)) == (200, every[TINYPACS_CAP:])
    status, body, headers = await get_json(http, f"{base}?limit=10000")
    assert (status, uids(body)) == (200, every)
    status, body, headers = await get_json(http, f"{base}?limit=1001&offset=49")
    assert uids(body) == every[49:]


# --- Accept ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("accept", "status"),
    [
        (None, 200),
        ("*/*", 200),
        ("application/*", 200),
        ("application/dicom+json", 200),
        ("application/json", 200),
        ("application/dicom+xml;q=0.9, application/json;q=0.1", 200),
        ("application/dicom+xml", 406),
        ('multipart/related; type="application/dicom+json"', 406),
        ("text/html", 406),
    ],
)
async def test_accept(
    tinypacs: TinyPacsServer, http: aiohttp.ClientSession, accept: str | None, status: int
) -> None:
    headers = {"Accept": accept} if accept is not None else {"Accept": ""}
    async with http.get(f"{tinypacs.dicomweb_url}/studies?limit=1", headers=headers) as resp:
        assert resp.status == status
        if status == 200:
            assert resp.content_type == "application/dicom+json"
        else:
            assert await resp.text() == "Only DICOM JSON responses are supported.\n"

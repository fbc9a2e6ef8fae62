"""DT (datetime) ranges on a real Orthanc: compared as text there, the standard's answer here.

Orthanc matches a DT attribute it does not index (AcquisitionDateTime, read from the
files) by comparing the stored text with the bounds, as it does dates and times
(``ServerProfile.temporal_text``): ``20100315-20100315`` finds a stored ``20100315``
alone, ``20100315103000-`` misses a stored ``201003151030``, ``-2010031510`` misses
``201003151030`` and finds the instances whose value is empty, and a single value
finds that text alone (``20100315``: not ``20100315103000``).  The raw checks pin that
down; with the preset profile or ``profile="auto"`` aqido sends the bounds as text
comparison reads them and filters the answer (:func:`aqido._plan_spans.text_range`).
Expected answers are written out from the stored values, never taken from the server.
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from aqido.client import AsyncQidoRS
from aqido.profile import ServerProfile
from aqido.query import QueryLevel, RelationalQuery
from aqido.testing.orthanc import OrthancServer
from aqido.testing.synthetic import SyntheticArchive
from tests.integration.support import get_json

pytestmark = pytest.mark.integration

#: One instance each, its AcquisitionDateTime (``""``: empty, ``None``: absent).
STORED = [
    "20100315103000",
    "201003151030",
    "20100315103000.123456",
    "20100315103000+0100",
    "2010031510",
    "20100315",
    "20100315103000.5-0500",
    "20100315235959",
    "20100316",
    "2010031511",
    "20100315105959.999999+0100",
    "2010",
    "20100314",
    "",
    None,
]
ARCHIVE = SyntheticArchive(seed=21, studies=len(STORED), series_per_study=1, instances_per_series=1)
AT_1030 = {"20100315103000", "201003151030", "20100315103000.123456", "20100315103000+0100"}
AT_1030 |= {"20100315103000.5-0500"}
#: Each range and the stored values in its standard answer (a bound is the span it covers,
#: a stored value of less precision its first instant; offsets as written, as no bound
#: has one).
CASES = {
    "20100315-20100315": AT_1030
    | {"2010031510", "20100315", "20100315235959", "2010031511", "20100315105959.999999+0100"},
    "20100315103000-": AT_1030
    | {"20100315235959", "20100316", "2010031511", "20100315105959.999999+0100"},
    "-2010031510": AT_1030
    | {"2010031510", "20100315", "20100315105959.999999+0100", "2010", "20100314"},
    "201003151030-201003151030": AT_1030,
    "2010-2010": {v for v in STORED if v},
}
#: A single value is the span it covers (sent as that range): the day, the hour.
CASES["20100315"] = CASES["20100315-20100315"]
CASES["2010031510"] = AT_1030 | {"2010031510", "20100315105959.999999+0100"}


@pytest.fixture(scope="module")
def orthanc_dt(orthanc_installed: None) -> Iterator[tuple[OrthancServer, dict[str, str | None]]]:
    """An Orthanc holding :data:`STORED`, and the stored value of each SOPInstanceUID."""
    stored: dict[str, str | None] = {}
    datasets = []
    for ds, value in zip(ARCHIVE.iter_pydicom(), STORED, strict=True):
        if value is not None:
            ds.AcquisitionDateTime = value
        stored[ds.SOPInstanceUID] = value
        datasets.append(ds)
    with OrthancServer() as server:  # installed (orthanc_installed): a failed start fails
        assert server.seed(datasets).instances == len(STORED)
        yield server, stored


@pytest.mark.anyio
@pytest.mark.parametrize("value", list(CASES))
async def test_orthanc_compares_datetimes_as_text(
    orthanc_dt: tuple[OrthancServer, dict[str, str | None]],
    http: aiohttp.ClientSession,
    value: str,
) -> None:
    server, stored = orthanc_dt
    url = f"{server.dicomweb_url}/instances?AcquisitionDateTime={value}"
    status, items, _ = await get_json(http, url)
    assert status == 200
    found = {stored[i["00080018"]["Value"][0]] or "" for i in items or []}
    low, dash, high = value.partition("-")
    between = {v for v in STORED if v is not None and low <= v and (not high or v <= high)}
    assert found == (between if dash else {value})  # the text, the empty value too
    assert found != CASES[value]


@pytest.mark.anyio
@pytest.mark.parametrize("profile", ["preset", "auto"])
@pytest.mark.parametrize("value", list(CASES))
async def test_a_datetime_range_gets_the_standard_answer(
    orthanc_dt: tuple[OrthancServer, dict[str, str | None]], profile: str, value: str
) -> None:
    server, stored = orthanc_dt
    chosen = ServerProfile.orthanc() if profile == "preset" else "auto"
    async with AsyncQidoRS(server.dicomweb_url, profile=chosen) as qido:
        query = RelationalQuery(
            query_level=QueryLevel.INSTANCE, filters={"AcquisitionDateTime": value}
        )
        found = await qido.search(query)
        assert qido.profile is not None
        assert qido.profile.temporal_text
    assert sorted(stored[i.SOPInstanceUID] or "" for i in found) == sorted(CASES[value])


@pytest.mark.anyio
@pytest.mark.parametrize("profile", ["preset", "auto"])
@pytest.mark.parametrize("value", ["20100315153000+0000", "2010031515+0000"])
async def test_a_negative_offset_written_in_utc_finds_its_instant(
    orthanc_dt: tuple[OrthancServer, dict[str, str | None]], profile: str, value: str
) -> None:
    # 20100315103000-0500 is refused as ambiguous (a range to the year 500 to a server);
    # the UTC value aqido says to write instead finds the instant stored at UTC-05:00
    # (Orthanc reads no %2B: matched locally)
    server, stored = orthanc_dt
    with pytest.raises(ValueError, match=r"ambiguous.*'20100315153000\+0000'"):
        RelationalQuery(
            query_level=QueryLevel.INSTANCE,
            filters={"AcquisitionDateTime": "20100315103000-0500"},
        )
    chosen = ServerProfile.orthanc() if profile == "preset" else "auto"
    async with AsyncQidoRS(server.dicomweb_url, profile=chosen) as qido:
        query = RelationalQuery(
            query_level=QueryLevel.INSTANCE, filters={"AcquisitionDateTime": value}
        )
        found = await qido.search(query)
    assert [stored[i.SOPInstanceUID] for i in found] == ["20100315103000.5-0500"]

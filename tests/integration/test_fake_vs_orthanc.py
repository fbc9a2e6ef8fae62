"""``FakeArchive.orthanc_like`` answers like the real Orthanc, query for query.

The same synthetic archive is served by Orthanc and by the fake; each raw query
(sent byte for byte) must give the same status, the same UIDs and the same
attribute values (RetrieveURL aside, which names the host).  This is what
makes the fake a fair stand-in for Orthanc in unit tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import yarl

from aqido.testing import FakeArchive
from aqido.testing.orthanc import OrthancServer
from tests.integration.support import CAP_RESULTS, CAPPED, SEEDED, get_json

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

_study = SEEDED.studies[123]
_series = _study.series[2]
_odd_pid = next(s.patient_id for s in SEEDED.studies if "/" in s.patient_id)
_uids = ",".join(s.study_instance_uid for s in SEEDED.studies[5:8])
_uids_encoded = "%2C".join(s.study_instance_uid for s in SEEDED.studies[9:11])

# No limit/offset here: the two archives were filled in different orders.
QUERIES = [
    "/studies",
    "/studies?PatientName=Doe*",
    "/studies?PatientName=doe*",
    "/studies?PatientName=D?e^J*",
    "/studies?PatientName=*ller*",
    "/studies?PatientName=Doe^John",
    "/studies?PatientName=Doe%5EJohn",
    "/studies?PatientName=Yamada^Tarou",
    "/studies?PatientName=Yamada*",
    "/studies?PatientName=*Tarou",
    f"/studies?PatientID={_odd_pid}",
    "/studies?PatientID=pid000001",
    "/studies?StudyDate=20100101-20121231",
    "/studies?StudyDate=-20121231",
    "/studies?StudyDate=20100101-",
    "/studies?StudyDate=garbage",
    "/studies?ModalitiesInStudy=CT",
    "/studies?ModalitiesInStudy=CT,MR",
    "/studies?ModalitiesInStudy=C*",
    "/studies?00080061=MR",
    "/studies?Modality=MR",
    "/studies?FooBar=1",
    f"/studies?StudyInstanceUID={_uids}",
    f"/studies?StudyInstanceUID={_uids_encoded}",
    f"/studies?includefield=PatientWeight,StudyDescription&StudyInstanceUID={_uids}",
    "/studies?fuzzymatching=maybe",
    f"/studies/{_study.study_instance_uid}/series",
    f"/studies/{_study.study_instance_uid}/series?includefield=BodyPartExamined",
    f"/studies/{_study.study_instance_uid}/instances",
    f"/studies/{_study.study_instance_uid}/series/{_series.series_instance_uid}/instances",
    "/studies/1.2.3/series",
    "/series?Modality=MR",
    "/series?SeriesDescription=*MPR*",
    f"/series?StudyInstanceUID={_study.study_instance_uid}",
    f"/instances?SeriesInstanceUID={_series.series_instance_uid}",
    "/instances?InstanceNumber=2&Modality=US",
    f"/instances?includefield=PixelSpacing,ImagePositionPatient&StudyInstanceUID={_uids}",
    "/studies?StudyTime=1200-1300",
    "/studies?StudyTime=1200",
    "/studies?AccessionNumber=ACC006000012*",
    f"/studies?includefield=all&StudyInstanceUID={_uids}",
    f"/studies/{_study.study_instance_uid}/series?includefield=all",
    f"/studies/{_study.study_instance_uid}/instances?includefield=all",
    f"/studies?includefield=ProcedureCodeSequence&StudyInstanceUID={_uids}",
]

UID_KEY = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeArchive]:
    with FakeArchive.orthanc_like(SEEDED).run_in_thread() as archive:
        yield archive


def _by_uid(items: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {item[key]["Value"][0]: item for item in items}


async def _status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(yarl.URL(url, encoded=True)) as response:
        await response.read()
        return response.status


@pytest.mark.parametrize("rel", QUERIES)
async def test_fake_answers_like_orthanc(
    rel: str, orthanc: OrthancServer, fake: FakeArchive, http: aiohttp.ClientSession
) -> None:
    real_status = await _status(http, orthanc.dicomweb_url + rel)
    assert await _status(http, fake.url + rel) == real_status
    if real_status != 200:
        return
    _, real, _ = await get_json(http, orthanc.dicomweb_url + rel)
    _, faked, _ = await get_json(http, fake.url + rel)
    key = UID_KEY[rel.split("?")[0].rsplit("/", 1)[-1]]
    real_items, fake_items = _by_uid(real, key), _by_uid(faked, key)
    assert sorted(fake_items) == sorted(real_items)  # (filled in different orders)
    for uid, item in real_items.items():
        mine = fake_items[uid]
        assert sorted(mine) == sorted(item), uid  # the same attributes...
        assert {k: v for k, v in mine.items() if k != "00081190"} == {
            k: v for k, v in item.items() if k != "00081190"
        }, uid  # ...with the same values


@pytest.mark.parametrize("rel", ["/studies", "/studies?offset=5", "/series?offset=3", "/series"])
async def test_capped_fake_answers_like_capped_orthanc(
    rel: str, orthanc_capped: OrthancServer, http: aiohttp.ClientSession
) -> None:
    _, real, headers = await get_json(http, orthanc_capped.dicomweb_url + rel)
    with FakeArchive.orthanc_like(CAPPED, max_results=CAP_RESULTS).run_in_thread() as fake:
        _, faked, fake_headers = await get_json(http, fake.url + rel)
    assert len(faked) == len(real)
    assert "Warning" not in headers
    assert "Warning" not in fake_headers

"""``probe()`` against the real Orthanc measures exactly :meth:`ServerProfile.orthanc`."""

from __future__ import annotations

import pytest

from aqido import AsyncQidoRS
from aqido.probe import MAX_REQUESTS, probe_report
from aqido.profile import ServerProfile
from aqido.testing.orthanc import OrthancServer
from tests.integration.support import CAP_RESULTS

pytestmark = pytest.mark.anyio


async def test_probe_of_orthanc_is_the_orthanc_preset(orthanc: OrthancServer) -> None:
    async with AsyncQidoRS(orthanc.dicomweb_url) as client:
        report = await probe_report(client)
    print(report.profile.to_json())
    for finding in report.findings:
        print(finding)
    assert report.requests <= MAX_REQUESTS
    assert report.profile == ServerProfile.orthanc()


async def test_probe_of_capped_orthanc_finds_its_silent_cap(orthanc_capped: OrthancServer) -> None:
    async with AsyncQidoRS(orthanc_capped.dicomweb_url) as client:
        profile = await client.probe()
    print(profile.to_json())
    assert profile.max_results == CAP_RESULTS
    assert profile == ServerProfile.orthanc(max_results=CAP_RESULTS)

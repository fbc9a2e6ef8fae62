"""``probe()`` against the real tiny_pacs measures exactly :meth:`ServerProfile.tiny_pacs`."""

from __future__ import annotations

import attrs
import pytest

from aqido import AsyncQidoRS
from aqido.probe import MAX_REQUESTS, probe_report
from aqido.profile import ServerProfile
from aqido.testing.tinypacs import TinyPacsServer
from tests.integration.support import TINYPACS_CAP

pytestmark = pytest.mark.anyio


async def test_probe_of_tiny_pacs_past_its_cap_is_the_tiny_pacs_preset(
    tinypacs_big: TinyPacsServer,
) -> None:
    async with AsyncQidoRS(tinypacs_big.dicomweb_url) as client:
        report = await probe_report(client)
    for finding in report.findings:
        print(finding)
    assert report.requests <= MAX_REQUESTS
    assert report.profile.max_results == TINYPACS_CAP
    assert report.profile == ServerProfile.tiny_pacs()


async def test_probe_of_a_small_tiny_pacs_sees_no_cap(tinypacs: TinyPacsServer) -> None:
    async with AsyncQidoRS(tinypacs.dicomweb_url) as client:
        profile = await client.probe()
    # 300 studies cannot show the cap of 1,000: the cap fields keep the standard defaults.
    expected = attrs.evolve(ServerProfile.tiny_pacs(), max_results=None, cap_warning=True)
    assert profile == expected
    assert any("no result cap seen" in note for note in profile.notes)

"""What the integration tests share: the seeded archives, credentials, caps and raw HTTP helpers."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import aiohttp
import yarl

from aqido.testing.synthetic import SyntheticArchive

#: The main archive (``orthanc`` fixture): 300 studies, 900 series, 1,800 instances.
SEEDED = SyntheticArchive(seed=6, studies=300, series_per_study=3, instances_per_series=2)
#: The archive behind basic auth (``orthanc_auth`` fixture).
AUTHED = SyntheticArchive(seed=66, studies=4, series_per_study=2, instances_per_series=1)
#: The archive of the capped server (``orthanc_capped`` fixture): several times the caps.
CAPPED = SyntheticArchive(seed=666, studies=40, series_per_study=2, instances_per_series=2)

AUTH_USER = "aqido-tester"
AUTH_PASSWORD = "s3cret-Pa55-4-orthanc"
#: ``LimitFindResults`` (studies, series) and ``LimitFindInstances`` of ``orthanc_capped``.
CAP_RESULTS = 10
CAP_INSTANCES = 7


async def get_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    auth: tuple[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any, Mapping[str, str]]:
    """GET ``url`` byte for byte (no re-quoting); return status, parsed JSON (or None), headers."""
    sent = dict(headers or {})
    if auth:  # by hand: aiohttp 3.14 deprecates BasicAuth
        sent["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    async with session.get(yarl.URL(url, encoded=True), headers=sent) as resp:
        body = await resp.read()
        data = await resp.json(content_type=None) if body else None
        return resp.status, data, resp.headers

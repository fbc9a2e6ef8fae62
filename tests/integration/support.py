"""What the integration tests share: the seeded archives, servers, credentials, caps, raw HTTP."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
import attrs
import pytest
import yarl

from aqido.client import AsyncQidoRS
from aqido.testing.synthetic import SyntheticArchive

#: The main archive (``orthanc`` fixture): 300 studies, 900 series, 1,800 instances.
SEEDED = SyntheticArchive(seed=6, studies=300, series_per_study=3, instances_per_series=2)
#: The archive behind basic auth (``orthanc_auth`` fixture).
AUTHED = SyntheticArchive(seed=66, studies=4, series_per_study=2, instances_per_series=1)
#: The archive of the capped server (``orthanc_capped`` fixture): several times the caps.
CAPPED = SyntheticArchive(seed=666, studies=40, series_per_study=2, instances_per_series=2)

#: The archive of ``tinypacs_big``: more studies than tiny_pacs returns without a ``limit``.
BIG = SyntheticArchive(seed=7, studies=1050, series_per_study=1, instances_per_series=1)
#: tiny_pacs' default ``limit`` at every level (a silent cap: no Warning header).
TINYPACS_CAP = 1000

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


#: Attributes tiny_pacs never returns (it answers from its own tables: docs/tinypacs.md).
TINYPACS_OMITS = frozenset(
    {
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "NumberOfSeriesRelatedInstances",
        "SeriesDescription",
        "SpecificCharacterSet",
        "RetrieveURL",
        "Rows",
        "Columns",
        "BitsAllocated",
    }
)


@attrs.frozen
class Served:
    """One seeded real server as the client tests see it (the ``server`` fixture).

    ``omits``: attributes the server never returns.  ``drops_named_levels``:
    whether naming StudyInstanceUID / SeriesInstanceUID as a query key makes the
    server leave that level's attributes out (Orthanc does, tiny_pacs does not).
    ``options``: how :meth:`client` builds its client (``tinypacs-auto``: with
    ``profile="auto"``, PN case as the server does it).
    """

    name: str
    dicomweb_url: str
    omits: frozenset[str] = frozenset()
    drops_named_levels: bool = False
    options: Mapping[str, Any] = attrs.field(factory=dict)

    def client(self, url: str | None = None, **options: Any) -> AsyncQidoRS:
        """An ``AsyncQidoRS`` of this server (``url`` defaults to its DICOMweb root)."""
        return AsyncQidoRS(url or self.dicomweb_url, **{**self.options, **options})


#: ``tinypacs-auto`` is tiny_pacs through a client with ``profile="auto"``: the scenarios
#: that are strict xfails on plain ``tinypacs`` must give the standard's answer there.
SERVERS = ("orthanc", "tinypacs", "tinypacs-auto")
AUTO = {"profile": "auto", "pn_case_sensitive": None}


def on_servers(
    *, tinypacs: str | None = None, orthanc: str | None = None, auto: str | None = None
) -> list[Any]:
    """``server`` parameters for ``parametrize(..., indirect=True)``; a reason marks that server.

    A reason makes the test a strict xfail on that server only.  ``tinypacs``:
    the plain client's answer on tiny_pacs is not the standard's (docs/tinypacs.md
    says how); the same scenario must pass on ``tinypacs-auto`` unless ``auto``
    gives a reason too.
    """
    reasons = {"orthanc": orthanc, "tinypacs": tinypacs, "tinypacs-auto": auto}
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=reasons[name]))
        if reasons[name]
        else name
        for name in SERVERS
    ]


def server_cases(
    values: Iterable[Any], tinypacs: Callable[[Any], str | None] = lambda value: None
) -> list[Any]:
    """``(value, server)`` parameters (``indirect=["server"]``): each value on each server.

    ``tinypacs(value)`` gives the reason why that value is a strict xfail on
    plain ``tinypacs`` (see :func:`on_servers`), or ``None``.
    """
    cases = []
    for value in values:
        reason = tinypacs(value)
        for name in SERVERS:
            marks = (
                [pytest.mark.xfail(strict=True, reason=reason)]
                if reason and name == "tinypacs"
                else []
            )
            label = value if isinstance(value, str) else "+".join(map(str, value))
            cases.append(pytest.param(value, name, marks=marks, id=f"{label}-{name}"))
    return cases


def served(request: pytest.FixtureRequest, name: str) -> Served:
    """The seeded server ``name`` (``orthanc`` or ``tinypacs``), started through its fixture."""
    if name == "orthanc":
        return Served(
            name, request.getfixturevalue("orthanc").dicomweb_url, drops_named_levels=True
        )
    if name in ("tinypacs", "tinypacs-auto"):
        url = request.getfixturevalue("tinypacs").dicomweb_url
        options = AUTO if name == "tinypacs-auto" else {}
        return Served(name, url, omits=TINYPACS_OMITS, options=options)
    raise ValueError(f"no server {name!r}")

"""Fixtures for the integration tests: real Orthanc + DICOMweb servers on 127.0.0.1.

Every test in this directory is marked ``integration`` (the ``tests`` nox
session deselects them, ``nox -s integration`` runs only them).  The servers
are session-scoped, started on first use and seeded once from
:class:`~aqido.testing.synthetic.SyntheticArchive`; nothing is cached between
sessions.  Expected answers come from the synthetic records, never from the
server:

The archives and constants live in ``tests/integration/support.py``:

* ``orthanc``: the main archive, ``SEEDED`` (300 studies x 3 series x 2 instances).
* ``orthanc_auth``: HTTP basic auth on (``AUTH_USER`` / ``AUTH_PASSWORD``), a few studies.
* ``orthanc_capped``: ``LimitFindResults=CAP_RESULTS``, ``LimitFindInstances=CAP_INSTANCES``,
  ``CAPPED`` studies (several times the cap).

If Orthanc cannot be installed or started, the tests fail when
``AQIDO_REQUIRE_ORTHANC=1`` (CI, ``nox -s integration``) and are skipped with
the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import aiohttp
import pytest

from aqido.testing.orthanc import OrthancServer, OrthancUnavailableError, install_orthanc
from aqido.testing.synthetic import SyntheticArchive
from tests.integration.support import (
    AUTH_PASSWORD,
    AUTH_USER,
    AUTHED,
    CAP_INSTANCES,
    CAP_RESULTS,
    CAPPED,
    SEEDED,
)

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration ``integration`` (before ``-m`` selects)."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


def _unavailable(exc: Exception) -> NoReturn:
    if os.environ.get("AQIDO_REQUIRE_ORTHANC") == "1":
        pytest.fail(f"AQIDO_REQUIRE_ORTHANC=1 but Orthanc is unavailable: {exc}", pytrace=False)
    pytest.skip(f"Orthanc is unavailable ({exc}); set AQIDO_REQUIRE_ORTHANC=1 to fail instead")


@pytest.fixture(scope="session")
def orthanc_installed() -> None:
    """Find (or, as root, install) Orthanc once per session; skip or fail if impossible."""
    try:
        install_orthanc()
    except OrthancUnavailableError as exc:
        _unavailable(exc)


@contextlib.contextmanager
def running(server: OrthancServer, archive: SyntheticArchive) -> Iterator[OrthancServer]:
    """Start ``server``, seed it with ``archive``, and stop it afterwards."""
    try:
        server.start()
    except OrthancUnavailableError as exc:
        _unavailable(exc)
    try:
        server.seed(archive.iter_pydicom())
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def synthetic() -> SyntheticArchive:
    """The records the ``orthanc`` server was seeded with (expected answers come from here)."""
    return SEEDED


@pytest.fixture(scope="session")
def orthanc(orthanc_installed: None) -> Iterator[OrthancServer]:
    """The main seeded Orthanc (no auth, no caps)."""
    with running(OrthancServer(), SEEDED) as server:
        yield server


@pytest.fixture(scope="session")
def orthanc_auth(orthanc_installed: None) -> Iterator[OrthancServer]:
    """An Orthanc with HTTP basic auth on, seeded with ``AUTHED``."""
    with running(OrthancServer(users={AUTH_USER: AUTH_PASSWORD}), AUTHED) as server:
        yield server


@pytest.fixture(scope="session")
def orthanc_capped(orthanc_installed: None) -> Iterator[OrthancServer]:
    """An Orthanc that caps find results (studies/series) and instances, seeded with ``CAPPED``."""
    server = OrthancServer(limit_find_results=CAP_RESULTS, limit_find_instances=CAP_INSTANCES)
    with running(server, CAPPED) as started:
        yield started


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session for raw-HTTP checks of the server itself."""
    async with aiohttp.ClientSession() as session:
        yield session

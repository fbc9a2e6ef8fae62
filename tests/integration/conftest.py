"""Fixtures for the integration tests: real Orthanc and tiny_pacs servers on 127.0.0.1.

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
* ``tinypacs``: tiny_pacs (``aqido.testing.tinypacs``) holding ``SEEDED``, loaded by STOW-RS.
* ``tinypacs_big``: tiny_pacs holding ``BIG`` (1,050 studies: more than its silent
  1,000-result cap).
* ``server``: ``orthanc``, ``tinypacs`` and ``tinypacs-auto`` (tiny_pacs through a client
  with ``profile="auto"``) in turn, as a :class:`~tests.integration.support.Served`
  (parametrize it with ``on_servers(...)``, ``indirect=True``, to mark one server xfail).

Neither server is installed unless ``AQIDO_INSTALL_SERVERS=1`` (``nox -s integration``
and CI set it).  If a server cannot be installed or started, its tests fail when
``AQIDO_REQUIRE_ORTHANC=1`` / ``AQIDO_REQUIRE_TINYPACS=1`` (CI, ``nox -s integration``)
and are skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import aiohttp
import pytest

from aqido.testing._launch import INSTALL_ENV, install_requested
from aqido.testing.orthanc import (
    OrthancServer,
    OrthancUnavailableError,
    find_orthanc,
    install_orthanc,
)
from aqido.testing.synthetic import SyntheticArchive
from aqido.testing.tinypacs import (
    TinyPacsServer,
    TinyPacsUnavailableError,
    find_tinypacs,
    install_tinypacs,
)
from tests.integration.support import (
    AUTH_PASSWORD,
    AUTH_USER,
    AUTHED,
    BIG,
    CAP_INSTANCES,
    CAP_RESULTS,
    CAPPED,
    SEEDED,
    SERVERS,
    Served,
    served,
)

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration ``integration`` (before ``-m`` selects)."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


def _unavailable(exc: Exception, name: str = "Orthanc") -> NoReturn:
    env = f"AQIDO_REQUIRE_{name.upper().replace('_', '')}"
    if os.environ.get(env) == "1":
        pytest.fail(f"{env}=1 but {name} is unavailable: {exc}", pytrace=False)
    pytest.skip(f"{name} is unavailable ({exc}); set {env}=1 to fail instead")


@pytest.fixture(scope="session")
def orthanc_installed() -> None:
    """Find (or, when asked to and as root, install) Orthanc once; skip or fail if impossible."""
    try:
        if find_orthanc() is None:
            if not install_requested():
                raise OrthancUnavailableError(f"not installed, and {INSTALL_ENV} is not 1")
            install_orthanc()
    except OrthancUnavailableError as exc:
        _unavailable(exc)


@pytest.fixture(scope="session")
def tinypacs_installed() -> None:
    """Find (or, when asked to, install) tiny_pacs in its virtualenv once; skip or fail if not."""
    try:
        if find_tinypacs() is None:
            if not install_requested():
                raise TinyPacsUnavailableError(f"not installed, and {INSTALL_ENV} is not 1")
            install_tinypacs()
    except TinyPacsUnavailableError as exc:
        _unavailable(exc, "tiny_pacs")


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


@contextlib.contextmanager
def running_tinypacs(archive: SyntheticArchive) -> Iterator[TinyPacsServer]:
    """Start a tiny_pacs, load ``archive`` by STOW-RS, check it holds every study, stop it after."""
    server = TinyPacsServer()
    try:
        server.start()
    except TinyPacsUnavailableError as exc:
        _unavailable(exc, "tiny_pacs")
    try:
        report = server.stow(archive.iter_pydicom(), batch=50)
        assert (report.studies, report.instances) == (len(archive.studies), len(archive.instances))
        assert server.count() == len(archive.studies)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tinypacs(tinypacs_installed: None) -> Iterator[TinyPacsServer]:
    """tiny_pacs holding ``SEEDED`` (the same records as ``orthanc``)."""
    with running_tinypacs(SEEDED) as server:
        yield server


@pytest.fixture(scope="session")
def tinypacs_big(tinypacs_installed: None) -> Iterator[TinyPacsServer]:
    """tiny_pacs holding ``BIG``: 1,050 one-instance studies, past its silent 1,000 cap."""
    with running_tinypacs(BIG) as server:
        yield server


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> Served:
    """The seeded ``orthanc`` or ``tinypacs`` (plain or ``-auto``), for shared client scenarios."""
    return served(request, request.param)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session for raw-HTTP checks of the server itself."""
    async with aiohttp.ClientSession() as session:
        yield session

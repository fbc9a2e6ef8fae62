"""AsyncQidoRS sessions, auth and logging: ownership, closing, credentials kept secret."""

from __future__ import annotations

import asyncio
import base64
import logging
import warnings
from collections.abc import AsyncIterator

import aiohttp
import pytest
from qido_server import MiniArchive

import aqido
from aqido.client import AsyncQidoRS
from aqido.errors import ClientClosedError, InvalidQueryError, UnauthorizedError
from aqido.query import HierarchicalQuery

SECRET = "s3cr3t-P4ss"
TOKEN = "tok-abcdef-123456"


@pytest.fixture
async def archive() -> AsyncIterator[MiniArchive]:
    async with MiniArchive(studies=2, series=1, instances=1) as server:
        yield server


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- sessions -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_owned_session_is_created_lazily_and_closed_once(archive: MiniArchive) -> None:
    qido = AsyncQidoRS(archive.url)
    assert qido._session is None
    await qido.search(HierarchicalQuery())  # notebook style: no async with
    session = qido._session
    assert session is not None
    connector = session.connector
    assert connector is not None
    assert connector.limit == qido.max_concurrency
    await qido.close()
    assert session.closed
    assert qido.closed
    await qido.close()  # idempotent


@pytest.mark.anyio
async def test_async_with_closes_the_owned_session(archive: MiniArchive) -> None:
    async with AsyncQidoRS(archive.url, max_concurrency=3) as qido:
        await qido.search(HierarchicalQuery())
        session = qido._session
        assert session is not None
        assert session.connector is not None
        assert session.connector.limit == 3
    assert session.closed


@pytest.mark.anyio
async def test_unused_client_closes_cleanly() -> None:
    async with AsyncQidoRS("http://127.0.0.1:9/dicom-web") as qido:
        pass
    assert qido.closed


@pytest.mark.anyio
async def test_borrowed_session_is_never_closed(archive: MiniArchive) -> None:
    async with aiohttp.ClientSession() as session:
        async with AsyncQidoRS(archive.url, session=session) as qido:
            assert len(await qido.search(HierarchicalQuery())) == 2
        assert not session.closed
        await qido.close()
        assert not session.closed
        async with AsyncQidoRS(archive.url, session=session) as again:
            assert len(await again.search(HierarchicalQuery())) == 2
        assert "borrowed" in repr(again)
    assert archive.requests[0].headers["Accept"] == "application/dicom+json, application/json"


@pytest.mark.anyio
async def test_lifecycle_guards(archive: MiniArchive) -> None:
    qido = AsyncQidoRS(archive.url)
    async with qido:
        with pytest.raises(RuntimeError, match="more than once"):
            await qido.__aenter__()
    with pytest.raises(RuntimeError, match="closed"):
        await qido.search(HierarchicalQuery())
    with pytest.raises(RuntimeError, match="reopen"):
        await qido.__aenter__()


def test_a_client_used_in_another_event_loop_raises_a_named_error() -> None:
    """One client across two event loops (``asyncio.run`` twice, say): its connections
    belong to the first, so the second gets a ClientClosedError that says so, not aiohttp's
    bare RuntimeError ("Timeout context manager should be used inside a task")."""
    from aqido.testing import FakeArchive, SyntheticArchive

    with FakeArchive(SyntheticArchive(seed=1, studies=2)).run_in_thread() as archive:
        qido = AsyncQidoRS(archive.url)
        first = asyncio.new_event_loop()
        try:
            assert len(first.run_until_complete(qido.search(HierarchicalQuery()))) == 2
            with pytest.raises(ClientClosedError, match="another event loop"):
                asyncio.run(asyncio.wait_for(qido.search(HierarchicalQuery()), 10))
            assert len(first.run_until_complete(qido.search(HierarchicalQuery()))) == 2
            first.run_until_complete(qido.close())
        finally:
            first.close()


def test_constructor_validation() -> None:
    for bad in ("ftp://h/x", "dicom-web", "http:///x", "ftp://u:p@h/x"):
        with pytest.raises(ValueError, match="http"):
            AsyncQidoRS(bad)
    with pytest.raises(ValueError, match="query string"):
        AsyncQidoRS("http://h/dicom-web?x=1")
    for concurrency in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_concurrency"):
            AsyncQidoRS("http://h/dicom-web", max_concurrency=concurrency)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"http://alice:{SECRET}@\u2100.example/dicom-web", "'http://\u2100.example/dicom-web'"),
        (f"http://alice:{SECRET}@[::1/dicom-web", "'http://[::1/dicom-web'"),
        (f"http://alice:{SECRET}@xn--/dicom-web", "'http://xn--/dicom-web'"),
        (f"http://alice:{SECRET}@h:99999/dicom-web", "'http://h:99999/dicom-web'"),
        # a '/' in the password: the whole userinfo goes, not only what precedes the '/'
        (f"http://alice:{SECRET}/x@h/dicom-web", "'http://h/dicom-web'"),
    ],
)
def test_a_url_that_does_not_parse_never_shows_its_password(url: str, shown: str) -> None:
    """yarl's error quoted the netloc, password included (found by review); a UnicodeError
    for the host came out untyped."""
    with pytest.raises(ValueError, match="url is not a valid URL") as info:
        AsyncQidoRS(url)
    assert SECRET not in str(info.value)
    assert str(info.value).endswith(shown)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.anyio
async def test_per_call_max_concurrency_validation() -> None:
    async with AsyncQidoRS("http://127.0.0.1:9/dicom-web") as qido:
        for concurrency in (0, -1, True, 1.5):
            with pytest.raises(ValueError, match="max_concurrency"):
                await qido.search_many([], max_concurrency=concurrency)  # type: ignore[arg-type]
        assert await qido.search_many([], max_concurrency=1) == []


@pytest.mark.anyio
async def test_crawl_page_size_validation() -> None:
    async with AsyncQidoRS("http://127.0.0.1:9/dicom-web") as qido:
        for bad in (-1, 0, 2.5, True):
            with pytest.raises(InvalidQueryError, match="page_size"):
                [s async for s in qido.crawl(page_size=bad)]  # type: ignore[arg-type]


def test_import_aqido_exports_the_client_lazily() -> None:
    assert aqido.AsyncQidoRS is AsyncQidoRS
    assert aqido.Retry.__module__ == "aqido.retry"


# --- auth ---------------------------------------------------------------------------------------


def basic_auth_object(user: str, password: str) -> aiohttp.BasicAuth:
    """An aiohttp.BasicAuth (deprecated in aiohttp 3.14, still accepted by aqido)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return aiohttp.BasicAuth(user, password)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["tuple", "aiohttp"])
async def test_basic_auth(archive: MiniArchive, kind: str) -> None:
    archive.check_auth = lambda header: header == basic("alice", SECRET)
    auth = ("alice", SECRET) if kind == "tuple" else basic_auth_object("alice", SECRET)
    async with AsyncQidoRS(archive.url, auth=auth) as qido:
        assert len(await qido.search(HierarchicalQuery())) == 2
        assert SECRET not in repr(qido)
        assert "auth=<basic>" in repr(qido)


def test_bad_basic_auth_tuple() -> None:
    with pytest.raises(ValueError, match="user, password"):
        AsyncQidoRS("http://h/dicom-web", auth=("only-user",))  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_credentials_in_the_url_become_basic_auth_and_are_hidden(
    archive: MiniArchive, caplog: pytest.LogCaptureFixture
) -> None:
    archive.check_auth = lambda header: header == basic("alice", SECRET)
    url = archive.url.replace("http://", f"http://alice:{SECRET}@")
    with caplog.at_level(logging.DEBUG, logger="aqido"):
        async with AsyncQidoRS(url, retries=0) as qido:
            assert len(await qido.search(HierarchicalQuery())) == 2
            assert SECRET not in qido.url
            assert SECRET not in repr(qido)
    assert "GET http://127.0.0.1" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize("blocking", [False, True])
def test_a_client_does_not_pickle_its_credentials(blocking: bool) -> None:
    """A pickle of an AsyncQidoRS held its bearer token (in a file, sent to another process);
    a QidoRS failed with "cannot pickle '_thread.lock'" (found by review)."""
    import copy
    import pickle

    from aqido import QidoRS

    client = (QidoRS if blocking else AsyncQidoRS)("http://127.0.0.1:9/dicom-web", auth=TOKEN)
    try:
        for dump in (pickle.dumps, copy.copy, copy.deepcopy):
            with pytest.raises(TypeError, match=r"cannot be pickled \(it holds credentials"):
                dump(client)
    finally:
        if blocking:
            client.close()  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_bearer_token(archive: MiniArchive) -> None:
    archive.check_auth = lambda header: header == f"Bearer {TOKEN}"
    async with AsyncQidoRS(archive.url, auth=TOKEN) as qido:
        assert len(await qido.search(HierarchicalQuery())) == 2
        assert TOKEN not in repr(qido)


@pytest.mark.anyio
@pytest.mark.parametrize("is_async", [False, True])
async def test_header_factory_is_called_per_request(archive: MiniArchive, is_async: bool) -> None:
    calls = 0

    def make() -> dict[str, str]:
        nonlocal calls
        calls += 1
        return {"Authorization": f"Bearer {TOKEN}-{calls}"}

    async def amake() -> dict[str, str]:
        return make()

    archive.check_auth = lambda header: header is not None and header.startswith("Bearer ")
    async with AsyncQidoRS(archive.url, auth=amake if is_async else make) as qido:
        await qido.search(HierarchicalQuery())
        await qido.search(HierarchicalQuery())
    assert calls == 2
    assert [r.headers["Authorization"] for r in archive.requests] == [
        f"Bearer {TOKEN}-1",
        f"Bearer {TOKEN}-2",
    ]


@pytest.mark.anyio
async def test_401_refreshes_a_callable_token_once(archive: MiniArchive) -> None:
    tokens = iter(["expired", "fresh", "unused"])
    archive.check_auth = lambda header: header == "Bearer fresh"

    async def token() -> dict[str, str]:
        return {"Authorization": f"Bearer {next(tokens)}"}

    async with AsyncQidoRS(archive.url, auth=token, retries=0) as qido:
        assert len(await qido.search(HierarchicalQuery())) == 2
    assert len(archive.requests) == 2


@pytest.mark.anyio
async def test_401_after_refresh_is_raised_and_static_credentials_never_retried(
    archive: MiniArchive,
) -> None:
    archive.check_auth = lambda header: False
    async with AsyncQidoRS(archive.url, auth=lambda: {"Authorization": "Bearer x"}) as qido:
        with pytest.raises(UnauthorizedError):
            await qido.search(HierarchicalQuery())
    assert len(archive.requests) == 2
    async with AsyncQidoRS(archive.url, auth=TOKEN) as qido:
        with pytest.raises(UnauthorizedError):
            await qido.search(HierarchicalQuery())
    assert len(archive.requests) == 3


@pytest.mark.anyio
async def test_credentials_never_in_errors_or_logs(
    archive: MiniArchive, caplog: pytest.LogCaptureFixture
) -> None:
    archive.check_auth = lambda header: False
    url = archive.url.replace("http://", f"http://bob:{SECRET}@")
    with caplog.at_level(logging.DEBUG, logger="aqido"):
        async with AsyncQidoRS(url, retries=1, headers={"X-Api-Key": TOKEN}) as qido:
            with pytest.raises(UnauthorizedError) as info:
                await qido.search(HierarchicalQuery(PatientID="X"))
    message = str(info.value)
    assert "HTTP 401" in message
    assert info.value.url.startswith("http://127.0.0.1")
    for secret in (SECRET, TOKEN, base64.b64encode(f"bob:{SECRET}".encode()).decode()):
        assert secret not in message
        assert secret not in caplog.text
        assert secret not in repr(info.value.headers)


# --- logging ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_one_debug_line_per_request(
    archive: MiniArchive, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="aqido"):
        async with AsyncQidoRS(archive.url) as qido:
            await qido.search(HierarchicalQuery(PatientID="PID000001"))
    lines = [r for r in caplog.records if r.name == "aqido" and r.levelno == logging.DEBUG]
    assert len(lines) == 1
    text = lines[0].getMessage()
    assert text.startswith(f"GET {archive.url}/studies?PatientID=PID000001 -> 200 (")
    assert " ms, " in text


# --- what a plain search loads ---------------------------------------------------------------

PLAIN_SEARCH = """
import asyncio, json, sys
from aiohttp import web
from aqido import AsyncQidoRS, HierarchicalQuery

STUDY = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}

async def main():
    async def studies(request):
        body = json.dumps([STUDY]).encode()
        return web.Response(body=body, content_type="application/dicom+json")
    app = web.Application()
    app.router.add_get("/studies", studies)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with AsyncQidoRS(f"http://127.0.0.1:{port}") as client:
        found = await client.search(HierarchicalQuery())
    await runner.cleanup()
    assert [s.StudyInstanceUID for s in found] == ["1.2.3"]

asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""


def test_a_plain_search_does_not_load_anyios_asyncio_backend() -> None:
    """Requests are cancelled on close() without a cancel scope each (cold start, CPU)."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", PLAIN_SEARCH], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "aqido.client" in loaded
    assert "anyio._backends._asyncio" not in loaded

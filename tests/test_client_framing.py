"""AsyncQidoRS against servers whose bodies do not match their ``Content-Length``.

A body longer than its ``Content-Length`` leaves its excess on the keep-alive
connection, where aiohttp reads it as the start of the next response (a "bad
status line"); a body shorter than it, then a closed connection, is a response
cut short.  The servers here are raw asyncio sockets: an aiohttp server cannot
send either.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import attrs
import pytest
from aiohttp.http_exceptions import ContentLengthError

from aqido._http import map_aiohttp_errors
from aqido.client import AsyncQidoRS
from aqido.errors import ServerError, TransportError
from aqido.retry import Retry

#: What the server writes for one request: the bytes, and whether it then closes the connection.
Answer = tuple[bytes, bool]

#: Bytes no HTTP response starts with: ESC sequences (a terminal title, a colour) and a bidi
#: override, as the excess of a body would carry whatever the server put there.
EXCESS = b"\x1b]0;owned\x07\x1b[31m\xe2\x80\xae" + b'{"0020000D": {"vr": "UI"}}]'


def study(uid: str) -> bytes:
    return json.dumps([{"0020000D": {"vr": "UI", "Value": [uid]}}]).encode()


def response(body: bytes, *, length: int | None = None, excess: bytes = b"") -> bytes:
    """A 200 of DICOM JSON whose Content-Length is ``length`` (else the body's), then ``excess``."""
    declared = len(body) if length is None else length
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
        b"Content-Length: %d\r\n\r\n" % declared
    )
    return head + body + excess


@attrs.define
class RawServer:
    """A loopback HTTP/1.1 server that writes, for each request, the bytes a test scripts.

    ``answer(number, connection)`` (both 1-based) gives them; the server records
    every request's connection and which connections the client closed.
    """

    answer: Callable[[int, int], Answer]
    url: str = ""
    requests: list[int] = attrs.Factory(list)  # the connection of each request, in order
    closed_by_client: set[int] = attrs.Factory(set)
    _connections: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        connection = self._connections
        try:
            while True:
                try:
                    await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if not exc.partial:
                        self.closed_by_client.add(connection)
                    return
                self.requests.append(connection)
                data, close = self.answer(len(self.requests), connection)
                writer.write(data)
                await writer.drain()
                if close:
                    return
        except ConnectionError:
            self.closed_by_client.add(connection)
        finally:
            writer.close()

    async def wait_closed_by_client(self, connection: int) -> None:
        for _ in range(500):
            if connection in self.closed_by_client:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the client kept connection {connection} open")


@asynccontextmanager
async def raw_server(answer: Callable[[int, int], Answer]) -> AsyncIterator[RawServer]:
    server = RawServer(answer)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/dicom-web"
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


def uids(results: list[object]) -> list[str]:
    return [str(getattr(item, "StudyInstanceUID", None)) for item in results]


def assert_printable(message: str) -> None:
    """No control character (C0, DEL, C1) and no bidi override of the server's in ``message``."""
    assert not [c for c in message if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c == "\u202e"]


# --- a body longer than its Content-Length --------------------------------------------------


@pytest.mark.anyio
async def test_the_excess_of_a_longer_body_spoils_no_later_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Request 2 finds the excess of a body ahead of its answer on the keep-alive
    # connection: sent here just before that answer, so that it is there whatever the
    # timing (left by a longer body, it arrives any time after the first answer's bytes).
    def answer(number: int, connection: int) -> Answer:
        if number == 1:
            return response(study("1.2.1")), False
        if number == 2:
            return EXCESS + response(study("1.2.2")), False
        return response(study(f"1.2.{number}")), False

    async with raw_server(answer) as server:
        async with AsyncQidoRS(server.url, retries=0) as client:
            assert uids(await client.search({})) == ["1.2.1"]
            with caplog.at_level(logging.WARNING, logger="aqido"):
                assert uids(await client.search({})) == ["1.2.3"]  # re-sent, on connection 2
            await server.wait_closed_by_client(1)  # the spoilt connection, closed at once
            assert uids(await client.search({})) == ["1.2.4"]
        assert server.requests == [1, 1, 2, 2]  # connection 1 never used again
    (record,) = [r for r in caplog.records if r.name == "aqido"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "the server sent bytes that are not an HTTP response" in message
    assert "longer than its Content-Length" in message
    assert "re-sending once on another connection" in message
    assert f"({server.url}/studies)" in message
    assert_printable(message)


@pytest.mark.anyio
async def test_a_longer_body_whose_excess_comes_in_the_same_read_is_sent_again() -> None:
    # The excess arrives with the answer.  aiohttp's C parser fails on the whole read, so
    # the request that got the longer body fails (its body is never taken for the first
    # Content-Length bytes) and is re-sent: the server's next answer is the one returned.
    # Its pure-Python parser (AIOHTTP_NO_EXTENSIONS, PyPy) takes the first answer and keeps
    # the excess, a line not ended yet, in its buffer, which the next response's new parser
    # drops: the connection then serves the next request.
    def answer(number: int, connection: int) -> Answer:
        if number == 1:
            return response(study("1.2.1"), excess=EXCESS), False
        return response(study(f"1.2.{number}")), False

    async with raw_server(answer) as server:
        async with AsyncQidoRS(server.url, retries=0) as client:
            first = uids(await client.search({}))
            assert uids(await client.search({})) == [f"1.2.{len(server.requests)}"]
        if first == ["1.2.2"]:  # the C parser: re-sent
            assert server.requests == [1, 2, 2]
        else:
            assert first == ["1.2.1"]
            assert len(server.requests) == 2


@pytest.mark.anyio
async def test_bytes_that_are_never_an_http_response_fail_after_one_resend() -> None:
    # Every answer starts with bytes no status line starts with: the re-send fails too,
    # and its error says what the server sent, escaped, and the likely cause.
    never_http = EXCESS + response(study("1.2.1"))
    async with raw_server(lambda number, connection: (never_http, False)) as server:
        async with AsyncQidoRS(server.url, retries=0) as client:
            with pytest.raises(TransportError) as info:
                await client.search({})
        assert server.requests == [1, 2]  # sent, then re-sent on another connection
    error = info.value
    message = str(error)
    assert message.startswith("the server sent bytes that are not an HTTP response (")
    assert "most likely the rest of a body longer than its Content-Length" in message
    assert "owned" in message  # aiohttp's words quote the bytes...
    assert "\\x1b" in message  # ...escaped
    assert_printable(message)
    assert error.url == f"{server.url}/studies"
    assert message.endswith(f"({error.url})")
    assert isinstance(error.__cause__, aiohttp.ClientResponseError)


@pytest.mark.anyio
async def test_each_attempt_of_the_retry_policy_is_resent_once() -> None:
    # The retry policy sees the TransportError as any other (retry_transport_errors): its
    # attempts each get their one re-send.
    async with raw_server(lambda number, connection: (EXCESS + response(b"[]"), False)) as server:
        retries = Retry(max_attempts=2, backoff_base=0.001, backoff_max=0.002)
        async with AsyncQidoRS(server.url, retries=retries) as client:
            with pytest.raises(TransportError, match="not an HTTP response"):
                await client.search({})
        assert server.requests == [1, 2, 3, 4]


@pytest.mark.anyio
async def test_a_malformed_header_is_not_blamed_on_content_length() -> None:
    bad = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nno colon here\r\n\r\n[]"
    async with raw_server(lambda number, connection: (bad, False)) as server:
        async with AsyncQidoRS(server.url, retries=0) as client:
            with pytest.raises(TransportError) as info:
                await client.search({})
        assert server.requests == [1, 2]
    message = str(info.value)
    assert message.startswith("the server sent a malformed HTTP response head (")
    assert "Content-Length" not in message
    assert message.endswith(f"({server.url}/studies)")


@pytest.mark.anyio
async def test_a_content_encoding_aiohttp_cannot_decode_is_named_and_not_resent() -> None:
    # It was "a malformed HTTP response head", re-sent at once on another connection (with a
    # warning) on every attempt of the retry policy: 8 requests for what cannot change.
    from aiohttp import compression_utils

    encoding = next(
        (
            name
            for name, known in (("br", "HAS_BROTLI"), ("zstd", "HAS_ZSTD"))
            if not getattr(compression_utils, known, True)
        ),
        None,
    )
    if encoding is None:
        pytest.skip("aiohttp decodes both br and zstd here")
    body = b"\x1b[2J not really compressed"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
    head += b"Content-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (encoding.encode(), len(body))
    async with raw_server(lambda number, connection: (head + body, False)) as server:
        async with AsyncQidoRS(server.url, retries=0) as client:
            with pytest.raises(TransportError) as info:
                await client.search({})
        assert server.requests == [1]
    message = str(info.value)
    assert message.startswith("the server sent a body in a Content-Encoding aqido cannot decode (")
    assert message.endswith(f"({server.url}/studies)")
    assert_printable(message)


@pytest.mark.anyio
async def test_a_server_warning_is_logged_with_its_control_characters_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The Warning header's text was logged raw: an application's log handler (basicConfig)
    # wrote the server's ESC sequences to the terminal; the result keeps them as sent.
    body = study("1.2.1")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
    head += b'Warning: 299 pacs "evil \x1b]0;owned\x07\x1b[31mred"\r\n'
    head += b"Content-Length: %d\r\n\r\n" % len(body)
    async with raw_server(lambda number, connection: (head + body, False)) as server:
        with caplog.at_level(logging.WARNING, logger="aqido"):
            async with AsyncQidoRS(server.url, retries=0) as client:
                results = await client.search({})
    assert results.warnings[0].text == "evil \x1b]0;owned\x07\x1b[31mred"
    [record] = [r for r in caplog.records if "server warning" in r.getMessage()]
    assert_printable(record.getMessage())
    assert record.getMessage().endswith('299 pacs "evil \\x1b]0;owned\\x07\\x1b[31mred"')


# --- a body shorter than its Content-Length -------------------------------------------------


@pytest.mark.anyio
async def test_a_body_cut_short_says_how_many_bytes_came() -> None:
    body = study("1.2.1")
    cut = response(body, length=len(body) + 30)
    async with raw_server(lambda number, connection: (cut, True)) as server:
        async with AsyncQidoRS(server.url, retries=0) as client:
            with pytest.raises(TransportError) as info:
                await client.search({})
        assert server.requests == [1]  # not a spoilt connection: no re-send
        retries = Retry(max_attempts=3, backoff_base=0.001, backoff_max=0.002)
        async with AsyncQidoRS(server.url, retries=retries) as client:
            with pytest.raises(TransportError):
                await client.search({})
        assert len(server.requests) == 4  # retried as a transport error
    message = str(info.value)
    assert message == (
        f"the response was cut short: it ended after {len(body)} of the {len(body) + 30} "
        f"bytes its Content-Length announced (the connection closed) ({server.url}/studies)"
    )
    assert isinstance(info.value.__cause__, aiohttp.ClientPayloadError)


@pytest.mark.anyio
async def test_a_chunked_body_cut_short() -> None:
    body = study("1.2.1")
    cut = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(body), body)
    )
    async with raw_server(lambda number, connection: (cut, True)) as server:
        async with AsyncQidoRS(server.url, retries=0) as client:
            with pytest.raises(TransportError) as info:
                await client.search({})
        assert server.requests == [1]
    assert str(info.value) == (
        "the response was cut short: its chunked body ended before its last chunk "
        f"(the connection closed) ({server.url}/studies)"
    )


@pytest.mark.anyio
@pytest.mark.parametrize("size", [b"ZZ", b"-1", b"1;\x01"])
async def test_a_malformed_chunk_size(size: bytes) -> None:
    # Said as a malformed chunked body, not as a malformed response head (the head is fine)
    body = study("1.2.1")
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%s\r\n%s\r\n0\r\n\r\n" % (size, body)
    )
    async with raw_server(lambda number, connection: (reply, True)) as server:
        async with AsyncQidoRS(server.url, retries=0) as client:
            with pytest.raises(TransportError) as info:
                await client.search({})
        assert server.requests == [1, 2]  # re-sent once at once, as a malformed head is
    assert str(info.value).startswith("the server sent a malformed chunked body ("), info.value
    assert str(info.value).endswith(f" ({server.url}/studies)")
    assert "\x01" not in str(info.value)  # the parser's quote of the bytes, escaped


def test_a_body_cut_short_without_aiohttps_byte_count() -> None:
    # Older aiohttp says no numbers: the message still says what happened.
    cause = ContentLengthError("Not enough data to satisfy content length header.")
    error = aiohttp.ClientPayloadError(f"Response payload is not completed: {cause!r}")
    error.__cause__ = cause
    with pytest.raises(TransportError) as info, map_aiohttp_errors("http://u:pw@h/x"):
        raise error
    assert str(info.value) == (
        "the response was cut short: it ended before the bytes its Content-Length announced "
        "(the connection closed) (http://h/x)"
    )


def test_another_payload_error_is_an_escaped_excerpt() -> None:
    with pytest.raises(TransportError) as info, map_aiohttp_errors("http://h/x"):
        raise aiohttp.ClientPayloadError("Can not decode content-encoding: \x1b[2Jgzip\n")
    assert str(info.value) == (
        "incomplete response body ('Can not decode content-encoding: \\x1b[2Jgzip') (http://h/x)"
    )


# --- a Content-Length over max_response_bytes where no success's body is read ---------------


@pytest.mark.anyio
async def test_a_204_declaring_a_huge_content_length_is_no_results() -> None:
    # A 204 has no body, whatever it declares (RFC 9110): not a ResponseTooLargeError.
    head = b"HTTP/1.1 204 No Content\r\nContent-Length: 999999999999\r\n\r\n"
    async with (
        raw_server(lambda number, connection: (head, True)) as server,
        AsyncQidoRS(server.url, retries=0, max_response_bytes=1024) as client,
    ):
        assert await client.search({}) == []


@pytest.mark.anyio
async def test_an_error_status_declaring_a_huge_content_length_is_what_it_is() -> None:
    # Cut short: a TransportError, retried (a ResponseTooLargeError never is).
    cut = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 999999999999\r\n\r\nbusy"
    async with raw_server(lambda number, connection: (cut, True)) as server:
        retries = Retry(max_attempts=2, backoff_base=0.001, backoff_max=0.002)
        async with AsyncQidoRS(server.url, retries=retries, max_response_bytes=1024) as client:
            with pytest.raises(TransportError, match="ended after 4 of the 999999999999"):
                await client.search({})
        assert len(server.requests) == 2
    # Longer than the limit: the status's error, with an excerpt of the body's start.
    page = b"\x1b[31mbusy " + b"x" * 4096
    long = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % len(page) + page
    async with (
        raw_server(lambda number, connection: (long, True)) as server,
        AsyncQidoRS(server.url, retries=0, max_response_bytes=1024) as client,
    ):
        with pytest.raises(ServerError) as info:
            await client.search({})
    assert info.value.status == 503
    assert info.value.body_excerpt.startswith("\x1b[31mbusy xxx")
    assert_printable(str(info.value))


def test_aiohttps_own_text_is_cut_in_the_message() -> None:
    # aiohttp names a redirect's host (up to 6 KB: 100 labels of 63) in its connection errors.
    host = ".".join(["a" * 63] * 100)
    with pytest.raises(TransportError) as info, map_aiohttp_errors("http://h/x"):
        raise aiohttp.ClientError(f"Cannot connect to host {host}:80 ssl:default [unknown]")
    message = str(info.value)
    assert message.startswith("ClientError: Cannot connect to host aaa")
    assert message.endswith("… (http://h/x)")
    assert len(message) < 400

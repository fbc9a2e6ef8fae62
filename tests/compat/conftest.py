"""Fixtures for the ported peer test suites: a real HTTP server where the peers mock ``requests``.

dicomweb-client's tests use pytest-localserver's ``httpserver`` fixture and dicomtrolley's
use ``requests_mock`` (which only intercepts the ``requests`` library; aqido speaks aiohttp).
Both are replaced by :class:`ContentServer`: a real HTTP/1.1 server on 127.0.0.1 (standard
library, in a thread) with the subset of their APIs the ported tests use:

- ``httpserver.url``, ``httpserver.serve_content(content, code=200, headers=None)`` and
  ``httpserver.requests`` (each with ``.method``, ``.path``, ``.query_string`` as bytes,
  ``.headers`` and ``.accept_mimetypes`` as ``[(mime, quality)]``), as pytest-localserver;
- ``requests_mock.request_history`` (each with ``.path`` and ``.query``), as requests_mock.

As pytest-localserver's server does, every answer carries a ``Content-Length`` (``0`` for
empty content), and the default answer is 200 with an empty body.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from aqido import QidoRS


@attrs.frozen
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    query_string: bytes
    headers: Mapping[str, str]

    @property
    def query(self) -> str:
        """The raw query string as text (requests_mock's ``request.query``)."""
        return self.query_string.decode("ascii")

    @property
    def accept_mimetypes(self) -> list[tuple[str, float]]:
        """The ``Accept`` header as ``[(mime, quality)]`` (werkzeug's ``accept_mimetypes``)."""
        out: list[tuple[str, float]] = []
        for part in self.headers.get("Accept", "").split(","):
            mime, *params = (p.strip() for p in part.split(";"))
            if not mime:
                continue
            quality = 1.0
            for param in params:
                name, _, value = param.partition("=")
                if name.strip() == "q":
                    quality = float(value)
            out.append((mime, quality))
        return out


class ContentServer:
    """A real HTTP server on 127.0.0.1 that answers every GET with the content it is given."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._answer: tuple[int, dict[str, str], bytes] = (200, {}, b"")
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                with server._lock:
                    server.requests.append(
                        RecordedRequest(
                            method="GET",
                            path=path,
                            query_string=query.encode("ascii"),
                            headers=dict(self.headers.items()),
                        )
                    )
                    code, headers, body = server._answer
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                if code != 204:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if code != 204:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests assert on ``requests``, not on a log."""

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    def serve_content(
        self, content: str | bytes, code: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer every request from now on with ``content``, status ``code`` and ``headers``."""
        body = content.encode("utf-8") if isinstance(content, str) else content
        with self._lock:
            self._answer = (int(code), dict(headers or {}), body)

    @property
    def request_history(self) -> list[RecordedRequest]:
        """The requests received so far (requests_mock's name)."""
        return list(self.requests)

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def httpserver() -> Iterator[ContentServer]:
    """pytest-localserver's ``httpserver``: a real server on 127.0.0.1 serving canned content."""
    server = ContentServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def requests_mock(httpserver: ContentServer) -> ContentServer:
    """dicomtrolley's ``requests_mock``: the same real server (aqido does not use requests)."""
    return httpserver


@pytest.fixture
def client(httpserver: ContentServer) -> Iterator[QidoRS]:
    """dicomweb-client's ``client`` fixture: ``DICOMwebClient(httpserver.url)`` → ``QidoRS``."""
    with QidoRS(httpserver.url) as qido:
        yield qido


@pytest.fixture
def cache_dir() -> Path:
    """dicomweb-client's canned responses (copied from its 0.61.2 sdist; see NOTICE.txt)."""
    return Path(__file__).parent / "data" / "dicomweb_client"

"""A minimal canned-response QIDO-RS server for the client-CPU benchmarks, in its own process.

``benchmarks.server`` runs a ``FakeArchive`` (aiohttp web server, matching,
rendering): per request it spends more CPU than the client being measured,
which on a 2-core machine narrows every client-vs-client ratio.  This server
does nearly nothing per request, so the client's cost shows:

- a raw :class:`asyncio.Protocol` speaking just enough HTTP/1.1 (keep-alive
  ``GET``, ``Content-Length`` answers, ``204`` for an empty page); no routing
  framework, no query matching;
- bodies are canned: the study listing is precomputed item by item (sliced
  for ``limit``/``offset``; ``StudyInstanceUID=`` picks one study by its
  number, nothing else is matched), the series of a study and the instances of a
  series are one precomputed template each, with the UIDs of the path
  substituted (``bytes.replace``), so any archive size costs the same memory;
- UIDs are ``{ROOT}.1.{k}`` (study ``k``), ``{ROOT}.2.{k}.{j}`` (series ``j``
  of it), ``{ROOT}.3.{k}.{j}.{i}`` (instance), ``k, j, i`` from 1; the
  attributes of every item are those of :class:`aqido.testing.SyntheticArchive`'s
  first study, series and instance (what the ``FakeArchive`` answers).

``python -m benchmarks.canned --studies N --series M --instances K`` prints
one JSON line (``url``, ``counts``) and then takes the commands of
:mod:`benchmarks.server` (``latency``, ``stats``, ``quit``) on stdin;
:class:`CannedServerProcess` is the parent's side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any
from urllib.parse import parse_qsl

from benchmarks.server import ServerProcess

ROOT = "1.2.826.0.1.3680043.9.7433"
_STUDY_MARK = "@STUDY@"
_SERIES_MARK = "@SERIES@"
_INSTANCE_MARK = "@INSTANCE@"


class CannedServerProcess(ServerProcess):
    """:class:`benchmarks.server.ServerProcess`, but serving :mod:`benchmarks.canned`."""

    module = "benchmarks.canned"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class Canned:
    """The canned bodies of one archive shape, and the path → body look-up."""

    def __init__(self, studies: int, series: int, instances: int) -> None:
        from aqido.testing import SyntheticArchive

        synthetic = SyntheticArchive(
            seed=7, studies=1, series_per_study=series, instances_per_series=instances
        )
        study = synthetic.studies[0]
        self.studies = studies
        self.series = series
        self.instances = instances
        study_json = synthetic.study_json(study)
        study_json["0020000D"]["Value"] = [_STUDY_MARK]
        template = _dumps(study_json)
        self.study_items = [
            template.replace(_STUDY_MARK.encode(), f"{ROOT}.1.{k}".encode())
            for k in range(1, studies + 1)
        ]
        items = []
        for j, one in enumerate(study.series, start=1):
            item = synthetic.series_json(one)
            item["0020000D"]["Value"] = [_STUDY_MARK]
            item["0020000E"]["Value"] = [f"{ROOT}.2.{_SERIES_MARK}.{j}"]
            items.append(item)
        self.series_body = _dumps(items)
        first = study.series[0]
        items = []
        for i, instance in enumerate(first.instances, start=1):
            item = synthetic.instance_json(instance)
            item["0020000D"]["Value"] = [_STUDY_MARK]
            item["0020000E"]["Value"] = [_SERIES_MARK]
            item["00080018"]["Value"] = [f"{ROOT}.3.{_INSTANCE_MARK}.{i}"]
            items.append(item)
        self.instances_body = _dumps(items)

    @property
    def counts(self) -> tuple[int, int, int]:
        """(studies, series, instances) in the archive."""
        n_series = self.studies * self.series
        return self.studies, n_series, n_series * self.instances

    def body(self, target: str) -> bytes | None:
        """The JSON body for a request target (path and query), ``b""`` if empty, ``None``: 404."""
        path, _, query = target.partition("?")
        parts = path.rstrip("/").split("/")
        # [..., "studies"] | [..., "studies", S, "series"] | [..., S, "series", SE, "instances"]
        if parts[-1] == "studies":
            params = dict(parse_qsl(query))
            offset = int(params.get("offset", 0) or 0)
            limit = int(params.get("limit", 0) or 0)
            chosen = self.study_items
            uid = params.get("StudyInstanceUID")
            if uid is not None:  # one study by UID (a warm-up's crawl): a look-up, no matching
                k = uid.rpartition(".")[2]
                known = uid.startswith(f"{ROOT}.1.") and k.isdigit() and 1 <= int(k) <= self.studies
                chosen = [self.study_items[int(k) - 1]] if known else []
            chosen = chosen[offset : offset + limit if limit else None]
            return b"[" + b",".join(chosen) + b"]" if chosen else b""
        if query and "offset=" in query and "offset=0" not in query:
            return b""  # one page holds every series / instance
        if len(parts) >= 3 and parts[-1] == "series" and parts[-3] == "studies":
            study = parts[-2]
            k = study.rpartition(".")[2]
            if not study.startswith(f"{ROOT}.1.") or not 1 <= int(k) <= self.studies:
                return None
            body = self.series_body.replace(_SERIES_MARK.encode(), k.encode())
            return body.replace(_STUDY_MARK.encode(), study.encode())
        if len(parts) >= 5 and parts[-1] == "instances" and parts[-3] == "series":
            study, series = parts[-4], parts[-2]
            if not series.startswith(f"{ROOT}.2."):
                return None
            tail = series[len(ROOT) + 3 :]
            body = self.instances_body.replace(_INSTANCE_MARK.encode(), tail.encode())
            body = body.replace(_SERIES_MARK.encode(), series.encode())
            return body.replace(_STUDY_MARK.encode(), study.encode())
        return None


_HEAD_200 = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
    b"Connection: keep-alive\r\nContent-Length: "
)
_HEAD_204 = b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
_HEAD_404 = b"HTTP/1.1 404 Not Found\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"


class Server:
    """The state shared by every connection: bodies, latency and request statistics."""

    def __init__(self, canned: Canned, latency: float) -> None:
        self.canned = canned
        self.latency = latency
        self.requests = 0
        self.in_flight = 0
        self.peak = 0

    def stats(self) -> dict[str, int]:
        """Requests and peak concurrency since the last call (then reset)."""
        out = {"requests": self.requests, "peak_concurrency": self.peak}
        self.requests = 0
        self.peak = self.in_flight
        return out


class _Connection(asyncio.Protocol):
    """One keep-alive connection: a request at a time (clients here do not pipeline)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            target = line.split(" ")[1] if line.count(" ") >= 2 else "/"
            body = self.server.canned.body(target)
            if body is None:
                answer = _HEAD_404
            elif not body:
                answer = _HEAD_204
            else:
                answer = b"".join((_HEAD_200, str(len(body)).encode(), b"\r\n\r\n", body))
            server = self.server
            server.requests += 1
            server.in_flight += 1
            server.peak = max(server.peak, server.in_flight)
            if server.latency > 0:
                asyncio.get_running_loop().call_later(server.latency, self._send, answer)
            else:
                self._send(answer)

    def _send(self, answer: bytes) -> None:
        self.server.in_flight -= 1
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


async def _serve(args: argparse.Namespace) -> None:
    canned = Canned(args.studies, args.series, args.instances)
    server = Server(canned, args.latency)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: _Connection(server), "127.0.0.1", 0, backlog=1024)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        print(json.dumps({"url": f"http://127.0.0.1:{port}", "counts": canned.counts}), flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            command, _, value = line.strip().partition(" ")
            if command in ("", "quit"):
                break
            if command == "latency":
                server.latency = float(value)
                answer: Any = "ok"
            elif command == "stats":
                answer = server.stats()
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(answer if isinstance(answer, str) else json.dumps(answer), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--studies", type=int, required=True)
    parser.add_argument("--series", type=int, required=True)
    parser.add_argument("--instances", type=int, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--latency", type=float, default=0.0)
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

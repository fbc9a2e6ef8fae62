"""The benchmark's QIDO-RS server: a ``FakeArchive`` in a child process, driven over a pipe.

The server runs in its own process so that its CPU time and memory never count
against the client being measured, and every client (async or sync) talks to
the same server the same way.  ``python -m benchmarks.server --studies N
--series M --instances K`` builds a ``SyntheticArchive``, starts a
``FakeArchive`` on 127.0.0.1, prints one JSON line (``url``, ``counts``) and
then reads commands, one per line, from stdin:

- ``latency SECONDS``: the per-request latency from now on (answers ``ok``);
- ``stats``: answers ``{"requests": n, "peak_concurrency": p}`` for the
  requests served since the last ``stats``, and resets the counters;
- ``quit`` or end of file: stops the server and exits.

:class:`ServerProcess` is the parent's side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from types import TracebackType
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ServerProcess:
    """A ``FakeArchive`` serving a ``SyntheticArchive`` in a child process.

    ``with ServerProcess(studies=300, series=2, instances=3) as server:`` then
    ``server.url``, ``server.counts`` (studies, series, instances),
    ``server.set_latency(0.01)`` and ``server.stats()``.  Subclasses serve another
    module that speaks the same protocol (``module``).
    """

    module = "benchmarks.server"

    def __init__(
        self, *, studies: int, series: int, instances: int, seed: int = 7, latency: float = 0.0
    ) -> None:
        self.args = [
            "--studies",
            str(studies),
            "--series",
            str(series),
            "--instances",
            str(instances),
            "--seed",
            str(seed),
            "--latency",
            repr(latency),
        ]
        self._process: subprocess.Popen[str] | None = None
        self.url = ""
        self.counts: tuple[int, int, int] = (0, 0, 0)

    def __enter__(self) -> ServerProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=_ROOT,
            env=env,
        )
        try:
            hello = json.loads(self._readline())
        except BaseException:
            self.close()
            raise
        self.url = hello["url"]
        studies, series, instances = hello["counts"]
        self.counts = (studies, series, instances)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _readline(self) -> str:
        assert self._process is not None
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server exited unexpectedly (see its stderr above)")
        return line

    def _command(self, text: str) -> str:
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(text + "\n")
        self._process.stdin.flush()
        return self._readline()

    @property
    def pid(self) -> int:
        """The server process's id (to pin it to a CPU)."""
        assert self._process is not None
        return self._process.pid

    def set_latency(self, seconds: float) -> None:
        """Set the per-request latency of the server."""
        if self._command(f"latency {seconds!r}").strip() != "ok":
            raise RuntimeError("the benchmark server did not accept the latency")

    def stats(self) -> dict[str, int]:
        """Requests served and their peak concurrency since the last call (then reset)."""
        result: dict[str, int] = json.loads(self._command("stats"))
        return result

    def close(self) -> None:
        """Stop the server process (idempotent)."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        finally:
            if process.stdout is not None:
                process.stdout.close()


async def _serve(args: argparse.Namespace) -> None:
    from aqido.testing import FakeArchive, SyntheticArchive

    synthetic = SyntheticArchive(
        seed=args.seed,
        studies=args.studies,
        series_per_study=args.series,
        instances_per_series=args.instances,
    )
    archive = FakeArchive(synthetic, latency=args.latency)
    del synthetic
    loop = asyncio.get_running_loop()
    async with archive:
        print(json.dumps({"url": archive.url, "counts": list(archive.counts)}), flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            command, _, value = line.strip().partition(" ")
            if command in ("", "quit"):
                break
            if command == "latency":
                archive.latency = float(value)
                answer: Any = "ok"
            elif command == "stats":
                answer = {"requests": len(archive.requests), "peak_concurrency": 0}
                answer["peak_concurrency"] = archive.peak_concurrency
                archive.reset_stats()
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

"""Benchmark: sharded crawls on Dask, 1 vs 2 worker processes, against latency-bound archives.

Each archive is a ``FakeArchive`` in its own process (:mod:`benchmarks.server`)
with a fixed per-request latency, so the server, not the client, sets the pace.
Rows (every run checked against the archive's counts):

* one archive, ``max_concurrency`` 8 per archive, 1 worker vs 2 workers:
  the per-archive limit caps requests in flight whatever the workers, so
  two workers are not faster (the scaling model: the server's capacity and
  the limit you grant it bound a crawl, not the client);
* two archives, 1 worker vs 2 workers: each archive has its own limit, so
  a second worker crawls the second archive at the same time.

``python -m benchmarks.scale [--tiny]``; ``run(tiny) -> dict`` for ``nox -s bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from typing import Any

from benchmarks.server import ServerProcess

LATENCY = 0.05
LIMIT = 8


def _crawl(urls: list[str], workers: int, shards: int) -> tuple[float, int]:
    import distributed

    from aqido.dask import crawl_to_parquet

    with (
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.submit(int, 1).result()  # workers are up: their start is not timed
        out = tempfile.mkdtemp(prefix="aqido-bench-scale-")
        try:
            started = time.perf_counter()
            frame = crawl_to_parquet(
                urls, out=out, client=client, shards=shards, max_concurrency=LIMIT
            )
            elapsed = time.perf_counter() - started
            rows = len(frame)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return elapsed, rows


def run(tiny: bool = False) -> dict[str, Any]:
    """Time the rows of the module docstring; counts are checked against the archives."""
    studies, series, instances = (12, 2, 2) if tiny else (60, 3, 3)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                ServerProcess(
                    studies=studies, series=series, instances=instances, seed=s, latency=LATENCY
                )
            )
            for s in (1, 2)
        ]
        for archives in (1, 2):
            urls = [server.url for server in servers[:archives]]
            expected = sum(server.counts[2] for server in servers[:archives])
            for workers in (1, 2):
                elapsed, got = _crawl(urls, workers, shards=4)
                rows.append(
                    {
                        "archives": archives,
                        "workers": workers,
                        "seconds": elapsed,
                        "rows": got,
                        "match": got == expected,
                    }
                )
                print(
                    f"{archives} archive(s), {workers} worker(s): {elapsed:6.2f} s, "
                    f"{got} rows{'' if got == expected else f' (expected {expected})'}"
                )
    return {
        "latency_ms": LATENCY * 1000,
        "max_concurrency": LIMIT,
        "size": [studies, series, instances],
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="smoke size")
    args = parser.parse_args(argv)
    run(args.tiny)


if __name__ == "__main__":
    main()

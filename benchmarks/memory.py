"""Benchmark: peak memory of a streaming crawl against the size of what it returns.

Method (the numbers are only meaningful if nothing else shares the process):

- The archive is served by a ``FakeArchive`` in its own process
  (:class:`benchmarks.server.ServerProcess`), so the server's memory (the
  synthetic records, the responses it renders) is never counted.
- Each measurement runs in a fresh worker process
  (``python -m benchmarks.memory --url ...``) that imports everything, does an
  untimed warm-up crawl of one study (lazy imports, cattrs code generation,
  the DICOM dictionary), runs ``gc.collect()``, and only then starts
  measuring:

  * ``tracemalloc``: ``tracemalloc.start()`` right before the crawl,
    ``get_traced_memory()`` peak after it: every Python-level allocation made
    during the crawl (aiohttp buffers included, since they are Python bytes);
  * ``rss``: a second worker without tracemalloc samples its resident set
    size (``/proc/self/statm``) after every study and reports the peak minus
    the RSS just before the crawl; this includes allocator slack and
    C-level buffers.  (Not ``ru_maxrss``: on Linux it survives ``fork`` +
    ``exec``, so a worker would report its parent's peak.)

- The crawl is ``AsyncQidoRS.crawl(page_size=P)``: the studies are consumed
  one at a time (counted, their JSON size added up) and dropped.  The study
  listing is paged (``page_size``) because an unpaged ``/studies`` answer is
  itself proportional to the archive.
- "Result size" is the total size of the DICOM JSON of everything crawled
  (``len(orjson.dumps(x.to_json()))`` summed over studies, series and
  instances): what a non-streaming crawl would have to hold at once, as text.

The target: the peak stays flat (within 2x) from 10,000 to 100,000 instances.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    """The current resident set size in bytes (Linux), or 0 where unknown."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # pragma: no cover - not Linux
        return 0


async def _crawl(args: argparse.Namespace) -> dict[str, Any]:
    import orjson

    from aqido.client import AsyncQidoRS
    from aqido.query import HierarchicalQuery

    def size(x: Any) -> int:
        return len(orjson.dumps(x.to_json()))

    def account(study: Any, counts: list[int]) -> int:
        """Count the study's tree; return the size of its JSON."""
        total = size(study)
        counts[0] += 1
        for series in study.series:
            counts[1] += 1
            total += size(series)
            for instance in series.instances:
                counts[2] += 1
                total += size(instance)
        return total

    async with AsyncQidoRS(args.url, max_concurrency=args.concurrency) as client:
        # Warm-up: one study, whole subtree.
        first = await client.search(HierarchicalQuery(limit=1))
        warm = HierarchicalQuery(StudyInstanceUID=first[0].StudyInstanceUID)
        async for study in client.crawl(warm):
            account(study, [0, 0, 0])
        del first, warm
        gc.collect()
        counts = [0, 0, 0]
        result_bytes = 0
        baseline_rss = _rss()
        peak_rss = baseline_rss
        if args.mode == "tracemalloc":
            tracemalloc.start()
        start = time.perf_counter()
        crawl = client.crawl(max_concurrency=args.concurrency, page_size=args.page_size)
        async with contextlib.aclosing(crawl):
            async for study in crawl:
                result_bytes += account(study, counts)
                del study
                if args.mode == "rss":
                    peak_rss = max(peak_rss, _rss())
        seconds = time.perf_counter() - start
        report: dict[str, Any] = {
            "mode": args.mode,
            "counts": counts,
            "result_bytes": result_bytes,
            "seconds": seconds,
        }
        if args.mode == "tracemalloc":
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            report["peak_bytes"] = peak
            report["end_bytes"] = current
        else:
            report["baseline_rss_bytes"] = baseline_rss
            report["peak_bytes"] = peak_rss - baseline_rss
        return report


def measure(url: str, *, mode: str, concurrency: int, page_size: int | None) -> dict[str, Any]:
    """Run one worker process against ``url``; return its report."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "benchmarks.memory",
        "--url",
        url,
        "--mode",
        mode,
        "--concurrency",
        str(concurrency),
    ]
    if page_size:
        command += ["--page-size", str(page_size)]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=_ROOT, env=env, timeout=1800, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"memory worker failed:\n{result.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def run(
    sizes: list[tuple[int, int, int]],
    *,
    concurrency: int = 16,
    page_size: int | None = 100,
) -> dict[str, Any]:
    """Measure every archive size (studies, series per study, instances per series)."""
    from benchmarks.server import ServerProcess

    rows = []
    for studies, series, instances in sizes:
        with ServerProcess(studies=studies, series=series, instances=instances) as server:
            row: dict[str, Any] = {
                "archive": {"studies": studies, "series": series, "instances": instances},
                "expected_counts": list(server.counts),
            }
            for mode in ("tracemalloc", "rss"):
                row[mode] = measure(
                    server.url, mode=mode, concurrency=concurrency, page_size=page_size
                )
                server.stats()
            row["match"] = all(
                row[m]["counts"] == row["expected_counts"] for m in ("tracemalloc", "rss")
            )
            rows.append(row)
    report: dict[str, Any] = {"concurrency": concurrency, "page_size": page_size, "rows": rows}
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        report["growth"] = {
            m: last[m]["peak_bytes"] / max(first[m]["peak_bytes"], 1)
            for m in ("tracemalloc", "rss")
        }
        report["instances_growth"] = last["expected_counts"][2] / max(
            first["expected_counts"][2], 1
        )
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    lines = [
        f"streaming crawl, c={report['concurrency']}, study listing paged by "
        f"{report['page_size']}; server in another process",
        f"{'instances':>10} {'result JSON MB':>15} {'tracemalloc peak MB':>20} "
        f"{'RSS peak delta MB':>18} {'s':>7}",
    ]
    for row in report["rows"]:
        lines.append(
            f"{row['expected_counts'][2]:>10,} {row['tracemalloc']['result_bytes'] / 1e6:>15.1f} "
            f"{row['tracemalloc']['peak_bytes'] / 1e6:>20.2f} "
            f"{row['rss']['peak_bytes'] / 1e6:>18.2f} {row['rss']['seconds']:>7.1f}"
        )
        if not row["match"]:
            lines.append(
                f"!!! COUNT MISMATCH: expected {row['expected_counts']}, "
                f"got {row['tracemalloc']['counts']} / {row['rss']['counts']}"
            )
    if "growth" in report:
        lines.append(
            f"{report['instances_growth']:.0f}x the instances: tracemalloc peak x"
            f"{report['growth']['tracemalloc']:.2f}, RSS peak x{report['growth']['rss']:.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="memory worker (one measurement)")
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=["tracemalloc", "rss"], required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--page-size", type=int, default=None)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_crawl(args))))


if __name__ == "__main__":
    main()

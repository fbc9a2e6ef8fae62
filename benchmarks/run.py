"""Run every benchmark in one go: crawl, parse, import time, streaming memory.

``nox -s bench`` (or ``python -m benchmarks``) prints the tables, writes
``benchmarks/results/latest.json`` (and ``latest.md``, the same tables as
Markdown) and draws ``benchmarks/results/crawl.png`` when matplotlib is
installed.  ``--tiny`` runs a small smoke size in seconds and writes to
``benchmarks/results/tiny/`` instead.  ``--orthanc`` adds the crawl against a
real Orthanc (started and seeded here) when it is installed.

Exit status 1 when any client found different counts than the archive holds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

from benchmarks import cpu, crawl, imports, memory, parse, scale
from benchmarks.crawl import Contender, Counts

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

NOISE_NOTE = (
    "The machine is noisy (2 shared cores; other processes run at the same time), so "
    "single numbers move by 10-30 % from run to run; the medians and ratios are more "
    "stable than the absolute times."
)


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _loud(text: str) -> None:
    line = "!" * 78
    print(f"\n{line}\n!!! {text}\n{line}\n", file=sys.stderr, flush=True)


# --- crawl --------------------------------------------------------------------------------


def _crawl_server(
    label: str,
    url: str,
    expected: Counts,
    contenders: list[Contender],
    *,
    repeat: int,
    budget: float,
    stats: Callable[[], dict[str, int]] | None,
    reference: int,
) -> dict[str, Any]:
    """Time every contender against one server; round-robin rounds, median per contender.

    A contender is repeated up to ``repeat`` times while its total time stays
    under ``budget`` seconds (latency-bound sequential crawls vary little, and
    take long), and always at least once.
    """
    runs: dict[str, list[float]] = {c.name: [] for c in contenders}
    limits: dict[str, list[list[tuple[float, int]]]] = {c.name: [] for c in contenders}
    cpu: dict[str, list[float]] = {c.name: [] for c in contenders}
    found: dict[str, Counts] = {}
    served: dict[str, dict[str, int]] = {}
    for round_ in range(repeat):
        for contender in contenders:
            done = runs[contender.name]
            if round_ > 0 and sum(done) + statistics.median(done) > budget:
                continue
            seconds, cpu_seconds, counts = crawl.timed(contender, url)
            done.append(seconds)
            cpu[contender.name].append(cpu_seconds)
            if contender.name in found and found[contender.name] != counts:
                _loud(f"{contender.name} found {counts}, then {found[contender.name]}")
            found[contender.name] = counts
            if stats is not None:
                served[contender.name] = stats()
            if contender.family == "aqido auto":
                limits[contender.name].append(crawl.AUTO_LIMITS.pop(url, []))
            print(
                f"  {label:<24} {contender.name:<30} {seconds:8.3f} s  {counts}",
                flush=True,
            )
    rows: list[dict[str, Any]] = []
    mismatches: list[str] = []
    for contender in contenders:
        counts = found[contender.name]
        match = tuple(counts) == tuple(expected)
        if not match:
            message = (
                f"COUNT MISMATCH on {label}: {contender.name} found "
                f"{counts[0]} studies / {counts[1]} series / {counts[2]} instances, "
                f"the archive has {expected[0]} / {expected[1]} / {expected[2]}"
            )
            mismatches.append(message)
            _loud(message)
        rows.append(
            {
                "name": contender.name,
                "family": contender.family,
                "concurrency": contender.concurrency,
                "runs": runs[contender.name],
                "median_s": statistics.median(runs[contender.name]),
                "cpu_s": cpu[contender.name],
                "median_cpu_s": statistics.median(cpu[contender.name]),
                "requests": served.get(contender.name, {}).get("requests"),
                "peak_concurrency": served.get(contender.name, {}).get("peak_concurrency"),
                "counts": list(counts),
                "match": match,
            }
        )
        if limits[contender.name]:
            rows[-1]["limit_history"] = limits[contender.name]
    _add_ratios(rows, reference)
    return {
        "server": label,
        "expected_counts": list(expected),
        "rows": rows,
        "mismatches": mismatches,
    }


def _add_ratios(rows: list[dict[str, Any]], reference: int) -> None:
    """``x_bare``: time over bare aiohttp at the same concurrency (peers: at the reference);
    ``x_aqido``: time over aqido at the reference concurrency (how much slower than aqido)."""
    bare = {r["concurrency"]: r["median_s"] for r in rows if r["family"] == "bare aiohttp"}
    aqido_ref = next(
        (r["median_s"] for r in rows if r["family"] == "aqido" and r["concurrency"] == reference),
        None,
    )
    for row in rows:
        c = row["concurrency"] if row["family"] in ("aqido", "bare aiohttp") else reference
        base = bare.get(c) if row["family"] != "aqido auto" else None
        row["x_bare"] = row["median_s"] / base if base else None
        row["x_aqido"] = row["median_s"] / aqido_ref if aqido_ref else None


def run_crawl(args: argparse.Namespace) -> dict[str, Any]:
    """The crawl benchmark on the fake archive (every latency) and, if asked, on Orthanc."""
    from benchmarks.server import ServerProcess

    lineup, notes = crawl.contenders(args.concurrency, args.reference)
    if args.families:
        lineup = [c for c in lineup if c.family in args.families]
        notes.append(f"only these clients were run: {', '.join(args.families)}")
    for note in notes:
        print(f"NOTE: {note}")
    report: dict[str, Any] = {
        "archive": {
            "studies": args.studies,
            "series_per_study": args.series,
            "instances_per_series": args.instances,
        },
        "concurrency": args.concurrency,
        "reference_concurrency": args.reference,
        "repeat": args.repeat,
        "budget_s": args.budget,
        "notes": notes,
        "servers": [],
    }
    with ServerProcess(studies=args.studies, series=args.series, instances=args.instances) as srv:
        expected: Counts = srv.counts
        report["archive"]["counts"] = list(expected)
        print(
            f"fake archive: {expected[0]} studies, {expected[1]} series, {expected[2]} instances "
            f"({1 + expected[0] + expected[1]} requests per crawl)",
            flush=True,
        )
        # Warm-up, untimed, no latency: imports, connection set-up code paths, caches.
        for contender in lineup:
            contender.run(srv.url)
        srv.stats()
        for latency in args.latency:
            srv.set_latency(latency)
            label = f"fake {latency * 1000:g} ms"
            result = _crawl_server(
                label,
                srv.url,
                expected,
                lineup,
                repeat=args.repeat,
                budget=args.budget,
                stats=srv.stats,
                reference=args.reference,
            )
            result["latency_ms"] = latency * 1000
            report["servers"].append(result)
    if args.orthanc:
        on_orthanc = _crawl_orthanc(args, lineup)
        if on_orthanc is not None:
            report["servers"].append(on_orthanc)
        else:
            report["notes"].append("Orthanc was asked for but is not available: skipped")
    return report


def _crawl_orthanc(args: argparse.Namespace, lineup: list[Contender]) -> dict[str, Any] | None:
    from aqido.testing import SyntheticArchive
    from aqido.testing.orthanc import OrthancServer, find_orthanc

    if find_orthanc() is None:
        print("SKIP: Orthanc + DICOMweb plugin not installed here (--orthanc ignored)")
        return None
    synthetic = SyntheticArchive(
        seed=7,
        studies=args.studies,
        series_per_study=args.series,
        instances_per_series=args.instances,
    )
    expected = (len(synthetic.studies), len(synthetic.series), len(synthetic.instances))
    with OrthancServer(install=False) as orthanc:
        started = time.perf_counter()
        orthanc.seed(synthetic.iter_pydicom())
        print(
            f"Orthanc {orthanc.version}: seeded {expected[2]} instances in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        url = orthanc.dicomweb_url
        for contender in lineup:
            contender.run(url)
        result = _crawl_server(
            f"Orthanc {orthanc.version}",
            url,
            expected,
            lineup,
            repeat=args.repeat,
            budget=args.budget,
            stats=None,
            reference=args.reference,
        )
    result["latency_ms"] = None
    return result


# --- targets and output -------------------------------------------------------------------


def _row(server: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((r for r in server["rows"] if r["name"] == name), None)


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met."""
    targets: list[dict[str, Any]] = []
    ref = report["crawl"]["reference_concurrency"] if "crawl" in report else None
    for server in report.get("crawl", {}).get("servers", []):
        aqido_row = _row(server, f"aqido c={ref}")
        bare_row = _row(server, f"bare aiohttp c={ref}")
        if aqido_row and bare_row:
            value = aqido_row["median_s"] / bare_row["median_s"]
            targets.append(
                {
                    "target": f"crawl, {server['server']}: aqido c={ref} within 1.25x of "
                    f"bare aiohttp c={ref}",
                    "value": f"{value:.2f}x",
                    "met": value <= 1.25,
                }
            )
        auto = auto_summary(server)
        if auto is not None:
            targets.append(
                {
                    "target": f"crawl, {server['server']}: aqido auto within 1.1x of the best "
                    f"fixed aqido ({auto['best_name']})",
                    "value": f"{auto['x_best']:.2f}x",
                    "met": auto["x_best"] <= 1.1,
                }
            )
            if auto["x_default"] is not None:
                targets.append(
                    {
                        "target": f"crawl, {server['server']}: aqido auto no slower than "
                        f"aqido c={DEFAULT_CONCURRENCY} (the default)",
                        "value": f"{auto['x_default']:.2f}x",
                        "met": auto["x_default"] <= 1.0,
                    }
                )
        seq = _row(server, "dicomweb-client sequential")
        if aqido_row and seq and server.get("latency_ms") == 10:
            value = seq["median_s"] / aqido_row["median_s"]
            targets.append(
                {
                    "target": f"crawl, {server['server']}: aqido c={ref} at least 10x faster "
                    "than dicomweb-client sequential",
                    "value": f"{value:.1f}x faster",
                    "met": value >= 10,
                }
            )
    if "parse" in report:
        seconds = report["parse"]["seconds"]
        typed = seconds.get("aqido parse_results")
        from_json = seconds.get("pydicom Dataset.from_json per item")
        if typed and from_json:
            value = from_json / typed
            targets.append(
                {
                    "target": "parse: aqido typed parse at least 10x faster than Dataset.from_json",
                    "value": f"{value:.1f}x faster",
                    "met": value >= 10,
                }
            )
        if typed:
            value = typed / seconds["json.loads"]
            targets.append(
                {
                    "target": "parse: aqido typed parse within 2x of json.loads",
                    "value": f"{value:.2f}x",
                    "met": value <= 2,
                }
            )
    targets += _cpu_targets(report.get("cpu", {}))
    over = report.get("imports", {}).get("client_over_aiohttp_seconds")
    if over is not None:
        targets.append(
            {
                "target": "import: `from aqido import AsyncQidoRS` adds at most 50 ms over "
                "`import aiohttp`",
                "value": f"{over * 1000:+.0f} ms",
                "met": over <= 0.050,
            }
        )
    growth = report.get("memory", {}).get("growth")
    if growth:
        worst = max(growth.values())
        targets.append(
            {
                "target": "memory: streaming crawl peak within 2x from "
                f"{report['memory']['rows'][0]['expected_counts'][2]:,} to "
                f"{report['memory']['rows'][-1]['expected_counts'][2]:,} instances",
                "value": f"x{growth['tracemalloc']:.2f} (tracemalloc), x{growth['rss']:.2f} (RSS)",
                "met": worst <= 2,
            }
        )
    return targets


def _cpu_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 18's targets: client CPU and wall time at the latency floor, cold start, 1M scale."""
    targets: list[dict[str, Any]] = []
    for row in report.get("crawl", {}).get("rows", []):
        where = f"{row['latency_ms']:g} ms, {row['concurrency']} in flight"
        if row["latency_ms"] == 2:
            targets.append(
                {
                    "target": f"client CPU, canned {where}: aqido CPU per request within 1.3x "
                    "of bare aiohttp",
                    "value": f"{row['cpu_ratio']:.2f}x",
                    "met": row["cpu_ratio"] <= 1.3,
                }
            )
        targets.append(
            {
                "target": f"client CPU, canned {where}: aqido crawl wall time within 1.15x "
                "of bare aiohttp",
                "value": f"{row['wall_ratio']:.2f}x",
                "met": row["wall_ratio"] <= 1.15,
            }
        )
    cold = report.get("cold_start")
    if cold:
        over = cold["over_bare_s"]
        targets.append(
            {
                "target": "client CPU, cold start: import aqido + one search at most 50 ms "
                "over bare aiohttp",
                "value": f"{over * 1000:+.0f} ms",
                "met": over <= 0.050,
            }
        )
    growth = report.get("scale", {}).get("peak_rss_growth")
    if growth is not None:
        rows = report["scale"]["rows"]
        targets.append(
            {
                "target": f"client CPU, scale: peak RSS of a {rows[-1]['expected_counts'][2]:,}"
                f"-instance crawl within 1.5x of {rows[0]['expected_counts'][2]:,}",
                "value": f"x{growth:.2f}",
                "met": growth <= 1.5 and all(r["match"] for r in rows),
            }
        )
    return targets


def _round_spread(row: dict[str, Any]) -> str:
    """The lowest and highest of a row's per-round wall ratios (older reports: best runs)."""
    rounds = row.get("round_wall_ratios")
    if not rounds:
        return f"best {row['best_wall_ratio']:.2f}"
    return f"{min(rounds):.2f}-{max(rounds):.2f}"


def _median_ratios(row: dict[str, Any]) -> str:
    """The ratio of the medians, wall and CPU (before 2026-12-03's paired rounds: the ratios)."""
    wall = row.get("median_wall_ratio", row["wall_ratio"])
    cpu = row.get("median_cpu_ratio", row["cpu_ratio"])
    return f"{wall:.2f} / {cpu:.2f}"


def cpu_tables(report: dict[str, Any], *, markdown: bool = False) -> list[str]:
    """The client-CPU section as tables: crawl rows, cold start, scale."""
    h = "#### " if markdown else ""
    parts: list[str] = []
    crawl_part = report.get("crawl")
    if crawl_part:
        counts = crawl_part["expected_counts"]
        runs = max(max(r["aqido"]["runs"], r["bare"]["runs"]) for r in crawl_part["rows"])
        body = [
            [
                f"{r['latency_ms']:g}",
                str(r["concurrency"]),
                f"{r['bare']['median_wall_s']:.3f}",
                f"{r['aqido']['median_wall_s']:.3f}",
                f"{r['wall_ratio']:.2f}",
                f"{r['bare']['cpu_us_per_request']:.0f}",
                f"{r['aqido']['cpu_us_per_request']:.0f}",
                f"{r['cpu_ratio']:.2f}",
                _round_spread(r),
                _median_ratios(r),
                f"{r['load_average'][0]:.1f}",
            ]
            + ([] if r["counts_ok"] else ["MISMATCH"])
            for r in crawl_part["rows"]
        ]
        parts.append(
            f"{h}Client CPU, canned server: {counts[0]} studies / {counts[1]} series / "
            f"{counts[2]} instances, aqido crawl() vs bare aiohttp, {runs} interleaved rounds; "
            + (
                "the ratios are the median of the rounds' own ratios (each round runs both, "
                "one after the other, in alternating order)"
                if "round_wall_ratios" in crawl_part["rows"][0]
                else "the ratios are those of the medians"
            )
            + (
                f", client and server pinned to CPUs {' and '.join(map(str, pinned))}"
                if (pinned := crawl_part["rows"][0].get("pinned_cpus"))
                else ""
            )
            + "\n\n"
            + _table(
                [
                    "latency ms",
                    "in flight",
                    "bare s",
                    "aqido s",
                    "wall x",
                    "bare CPU us/req",
                    "aqido CPU us/req",
                    "CPU x",
                    "rounds' wall x, min-max",
                    "x of medians (wall / CPU)",
                    "load avg",
                ],
                body,
                markdown=markdown,
                numeric_from=0,
            )
        )
    cold = report.get("cold_start")
    if cold:
        body = [
            [name, f"{seconds * 1000:.0f}", f"{cold['median_cpu_s'][name] * 1000:.0f}"]
            for name, seconds in cold["median_s"].items()
        ] + [
            [
                "aqido over bare aiohttp (median of paired runs)",
                f"{cold['over_bare_s'] * 1000:+.0f}",
                f"{cold['cpu_over_bare_s'] * 1000:+.0f}",
            ]
        ]
        if cold.get("aqido_import_s") is not None:
            body.append(
                [
                    "of which importing aqido (timed inside the process)",
                    f"{cold['aqido_import_s'] * 1000:.0f}",
                    "-",
                ]
            )
        parts.append(
            f"{h}Cold start: a fresh process imports the client and runs one search "
            f"(bytecode cached), median of {cold['repeat']} interleaved runs, load avg "
            f"{cold['load_average'][0]:.1f}\n\n"
            + _table(["script", "wall ms", "process CPU ms"], body, markdown=markdown)
        )
    sc = report.get("scale")
    if sc:
        body = [
            [
                f"{r['expected_counts'][2]:,}",
                "x".join(str(n) for n in r["archive"]),
                f"{r['requests']:,}",
                f"{r['seconds']:.1f}",
                f"{r['requests_per_s']:.0f}",
                f"{r['cpu_s'] / r['requests'] * 1e6:.0f}",
                f"{r['high_water_rss_bytes'] / 1e6:.0f}",
                f"{r['peak_delta_bytes'] / 1e6:.1f}",
                f"{r['load_average'][0]:.1f}",
                "yes" if r["match"] else "MISMATCH",
            ]
            for r in sc["rows"]
        ]
        parts.append(
            f"{h}Scale: one aqido crawl() per archive in a fresh process, canned server, no "
            f"latency, {sc['concurrency']} in flight, study listing paged by {sc['page_size']}"
            "\n\n"
            + _table(
                [
                    "instances",
                    "archive",
                    "requests",
                    "s",
                    "requests/s",
                    "CPU us/req",
                    "peak RSS MB (VmHWM)",
                    "RSS over start MB (per study)",
                    "load avg",
                    "counts ok",
                ],
                body,
                markdown=markdown,
                numeric_from=0,
            )
        )
    return parts


#: The client's default ``max_concurrency`` (the one ``"auto"`` must not lose to).
DEFAULT_CONCURRENCY = 8


def auto_summary(server: dict[str, Any]) -> dict[str, Any] | None:
    """``aqido auto`` against the fixed settings on one server (``None`` without an auto row)."""
    auto = _row(server, "aqido auto")
    fixed = [r for r in server["rows"] if r["family"] == "aqido"]
    if auto is None or not fixed:
        return None
    best = min(fixed, key=lambda r: r["median_s"])
    worst = max(fixed, key=lambda r: r["median_s"])
    default = _row(server, f"aqido c={DEFAULT_CONCURRENCY}")
    histories = auto.get("limit_history") or [[]]
    last = histories[-1]
    path = [limit for _, limit in last]
    settled = [limit for t, limit in last if t >= 0.5 * (last[-1][0] if last else 0)] or path
    return {
        "auto_s": auto["median_s"],
        "best_name": best["name"],
        "best_s": best["median_s"],
        "x_best": auto["median_s"] / best["median_s"],
        "worst_name": worst["name"],
        "x_worst": auto["median_s"] / worst["median_s"],
        "default_s": default["median_s"] if default else None,
        "x_default": auto["median_s"] / default["median_s"] if default else None,
        "limits": path,
        "settled": (min(settled), max(settled)) if settled else None,
        "final": path[-1] if path else None,
    }


def auto_table(report: dict[str, Any], *, markdown: bool = False) -> str:
    """``aqido auto`` next to the fixed limits, one row per server."""
    header = [
        "server",
        "auto s",
        "best fixed",
        "x best",
        "worst fixed",
        "x worst",
        f"x c={DEFAULT_CONCURRENCY}",
        "auto's limit (last run): start → peak, 2nd-half range incl. probes, final",
    ]
    body = []
    for server in report["crawl"]["servers"]:
        auto = auto_summary(server)
        if auto is None:
            continue
        limits = auto["limits"]
        if limits:
            low, high = auto["settled"]
            shape = f"{limits[0]} → {max(limits)}, {low}-{high}, {auto['final']}"
        else:
            shape = "-"
        body.append(
            [
                server["server"],
                f"{auto['auto_s']:.3f}",
                f"{auto['best_name'].removeprefix('aqido ')} {auto['best_s']:.3f}",
                f"{auto['x_best']:.2f}",
                auto["worst_name"].removeprefix("aqido "),
                f"{auto['x_worst']:.2f}",
                _fmt(auto["x_default"], ".2f"),
                shape,
            ]
        )
    return _table(header, body, markdown=markdown, numeric_from=1)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def crawl_table(server: dict[str, Any], reference: int, *, markdown: bool = False) -> str:
    """One server's crawl results as a text (or Markdown) table."""
    header = [
        "client",
        "median s",
        "client CPU s",
        "runs",
        "requests",
        "peak in flight",
        "studies / series / instances",
        "x bare aiohttp",
        f"x aqido c={reference}",
    ]
    body = []
    for r in server["rows"]:
        counts = " / ".join(str(c) for c in r["counts"])
        if not r["match"]:
            counts += " MISMATCH"
        body.append(
            [
                r["name"],
                f"{r['median_s']:.3f}",
                f"{r['median_cpu_s']:.3f}",
                str(len(r["runs"])),
                _fmt(r["requests"], "d"),
                _fmt(r["peak_concurrency"], "d"),
                counts,
                _fmt(r["x_bare"], ".2f"),
                _fmt(r["x_aqido"], ".2f"),
            ]
        )
    return _table(header, body, markdown=markdown, numeric_from=1)


def _table(
    header: list[str], body: list[list[str]], *, markdown: bool, numeric_from: int = 1
) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |"]
        lines.append(
            "|" + "|".join("---" if i < numeric_from else "---:" for i in range(len(header))) + "|"
        )
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < numeric_from else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), *(line(row) for row in body)])


def targets_table(targets: list[dict[str, Any]], *, markdown: bool = False) -> str:
    """The targets as a table."""
    body = [[t["target"], t["value"], "met" if t["met"] else "MISSED"] for t in targets]
    return _table(["target", "measured", ""], body, markdown=markdown, numeric_from=1)


def _title(server: dict[str, Any], report: dict[str, Any]) -> str:
    counts = server["expected_counts"]
    return (
        f"Crawl, {server['server']}: {counts[0]} studies / {counts[1]} series / "
        f"{counts[2]} instances ({1 + counts[0] + counts[1]} requests), "
        f"median of up to {report['crawl']['repeat']} runs"
    )


def render(report: dict[str, Any], *, markdown: bool) -> str:
    """Every table of the report, as text or Markdown."""
    parts: list[str] = []
    h = "#### " if markdown else ""
    if "crawl" in report:
        ref = report["crawl"]["reference_concurrency"]
        for server in report["crawl"]["servers"]:
            parts.append(
                f"{h}{_title(server, report)}\n\n{crawl_table(server, ref, markdown=markdown)}"
            )
        if any(auto_summary(server) for server in report["crawl"]["servers"]):
            parts.append(
                f'{h}Adaptive concurrency: aqido auto (max_concurrency="auto") against the '
                "fixed limits (median crawl time)\n\n" + auto_table(report, markdown=markdown)
            )
    if "cpu" in report:
        parts += cpu_tables(report["cpu"], markdown=markdown)
    if "parse" in report:
        p = report["parse"]
        body = [
            [name, f"{s * 1000:.1f}", f"{p['ratio_vs_json_loads'][name]:.2f}"]
            for name, s in p["seconds"].items()
        ]
        parts.append(
            f"{h}Parse: {p['studies']:,} studies, {p['body_bytes'] / 1e6:.1f} MB "
            f"(tab-indented like Orthanc), median of {p['repeat']}\n\n"
            + _table(["contender", "ms", "x json.loads"], body, markdown=markdown)
        )
    if "imports" in report:
        i = report["imports"]
        body = [[name, f"{s * 1000:.1f}"] for name, s in i["seconds"].items()]
        body += [[name, "n/a"] for name in i["unavailable"]]
        if "client_over_aiohttp_rounds" in i:
            body.append(
                [
                    "`from aqido import AsyncQidoRS` over `import aiohttp` (median of the "
                    "rounds' own differences)",
                    f"{i['client_over_aiohttp_seconds'] * 1000:+.1f}",
                ]
            )
        top = ", ".join(
            f"{row['module']} {row['cumulative_ms']:.0f} ms" for row in i["importtime_top"][:6]
        )
        parts.append(
            f"{h}Import time in a fresh interpreter, median of {i['repeat']}\n\n"
            + _table(["statement", "ms"], body, markdown=markdown)
            + f"\n\n`-X importtime` of `from aqido import AsyncQidoRS`, largest: {top}"
        )
    if "memory" in report:
        m = report["memory"]
        body = [
            [
                f"{row['expected_counts'][2]:,}",
                f"{row['tracemalloc']['result_bytes'] / 1e6:.1f}",
                f"{row['tracemalloc']['peak_bytes'] / 1e6:.2f}",
                f"{row['rss']['peak_bytes'] / 1e6:.2f}",
                f"{row['rss']['seconds']:.1f}",
                "yes" if row["match"] else "MISMATCH",
            ]
            for row in m["rows"]
        ]
        parts.append(
            f"{h}Streaming crawl memory (c={m['concurrency']}, study listing paged by "
            f"{m['page_size']}, server in another process)\n\n"
            + _table(
                [
                    "instances",
                    "result JSON MB",
                    "tracemalloc peak MB",
                    "RSS peak delta MB",
                    "crawl s",
                    "counts ok",
                ],
                body,
                markdown=markdown,
                numeric_from=0,
            )
        )
    if "scale" in report:
        sc = report["scale"]
        body = [
            [str(r["archives"]), str(r["workers"]), f"{r['seconds']:.2f}", str(r["rows"])]
            for r in sc["rows"]
        ]
        studies, series, instances = sc["size"]
        parts.append(
            f"{h}Sharded crawls on Dask ({studies}x{series}x{instances} per archive, "
            f"{sc['latency_ms']:.0f} ms latency, max_concurrency {sc['max_concurrency']} "
            "per archive)\n\n"
            + _table(["archives", "workers", "s", "rows"], body, markdown=markdown)
        )
    if report.get("targets"):
        note = ""
        if report.get("meta", {}).get("tiny"):
            note = "\n\n(tiny smoke size: the numbers and targets mean nothing at this size)"
        parts.append(f"{h}Targets\n\n{targets_table(report['targets'], markdown=markdown)}{note}")
    return "\n\n".join(parts)


def draw_chart(report: dict[str, Any], path: str) -> bool:
    """Horizontal bars of median crawl time per client, one panel per server; False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        return False
    servers = report["crawl"]["servers"]
    if not servers:
        return False
    colours = {
        "aqido": "#1f77b4",
        "aqido auto": "#17becf",
        "bare aiohttp": "#7f7f7f",
        "dicomweb-client sequential": "#d62728",
        "dicomweb-client threads": "#ff7f0e",
        "dicomtrolley sequential": "#9467bd",
    }
    rows0 = servers[0]["rows"]
    fig, axes = plt.subplots(
        1, len(servers), figsize=(4.2 * len(servers) + 2.2, 0.42 * len(rows0) + 1.6), sharey=True
    )
    if len(servers) == 1:
        axes = [axes]
    names = [r["name"] for r in rows0]
    for ax, server in zip(axes, servers, strict=True):
        by_name = {r["name"]: r for r in server["rows"]}
        values = [by_name[n]["median_s"] if n in by_name else 0 for n in names]
        bars = ax.barh(
            names,
            values,
            color=[colours.get(by_name[n]["family"], "#333333") for n in names],
        )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(server["server"], fontsize=10)
        ax.set_xlabel("seconds (log scale, lower is better)", fontsize=8)
        ax.tick_params(labelsize=8)
        for bar, value in zip(bars, values, strict=True):
            ax.text(
                value, bar.get_y() + bar.get_height() / 2, f" {value:.2f}", va="center", fontsize=7
            )
        ax.set_xlim(min(v for v in values if v > 0) / 1.5, max(values) * 4)
    axes[0].invert_yaxis()  # shared y axis: invert once, first row on top
    counts = servers[0]["expected_counts"]
    fig.suptitle(
        f"Full crawl of {counts[0]} studies / {counts[1]} series / {counts[2]} instances "
        "(median wall time)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _commit() -> str | None:
    """The checkout's commit (``<sha>``, ``<sha>-dirty`` with uncommitted changes to tracked
    files), or ``None`` outside a git checkout: which code the tables describe."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", root, *args], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "--short=7", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def _provenance(report: dict[str, Any]) -> str:
    """The last line of ``latest.md``: when, at which commit and with which command it ran."""
    meta = report["meta"]
    return (
        f"Run {meta['date']} at commit {meta.get('commit') or '(not a git checkout)'}, "
        f"`{meta['command']}`, {meta['seconds'] / 60:.0f} min, Python {meta['python']}, "
        f"{meta['cpu_count']} CPUs."
    )


def _versions() -> dict[str, str]:
    out = {}
    for name in ("aqido", "aiohttp", "dicomweb-client", "dicomtrolley", "pydicom", "orjson"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    from aqido import __version__

    out["aqido (this checkout)"] = __version__
    return out


# --- command line -------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    return [float(x) / 1000 for x in text.split(",") if x]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _sizes(text: str) -> list[tuple[int, int, int]]:
    out = []
    for part in filter(None, text.split(",")):
        a, b, c = (int(x) for x in part.lower().split("x"))
        out.append((a, b, c))
    return out


PARTS = ("crawl", "cpu", "parse", "imports", "memory", "scale")


def _cpu_rows(text: str) -> list[tuple[float, int]]:
    """``"2:16,2:64"``: (latency in seconds, requests in flight) pairs (``""``: none)."""
    out = []
    for part in filter(None, text.split(",")):
        latency, _, concurrency = part.partition(":")
        out.append((float(latency) / 1000, int(concurrency)))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--tiny", action="store_true", help="smoke size: runs in seconds")
    parser.add_argument("--only", default=",".join(PARTS), help="comma list of " + ", ".join(PARTS))
    parser.add_argument("--latency", type=_floats, default=None, help="ms, e.g. 2,10,50")
    parser.add_argument("--studies", type=int, default=None)
    parser.add_argument("--series", type=int, default=None, help="series per study")
    parser.add_argument("--instances", type=int, default=None, help="instances per series")
    parser.add_argument(
        "--concurrency", type=_ints, default=None, help="aqido limits, e.g. 1,4,16,64"
    )
    parser.add_argument("--reference", type=int, default=None, help="reference concurrency")
    parser.add_argument("--repeat", type=int, default=None, help="crawl runs per contender (max)")
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds per contender and server (repeats)"
    )
    parser.add_argument("--orthanc", action="store_true", help="also crawl a real Orthanc")
    parser.add_argument(
        "--families",
        type=lambda text: [f.strip() for f in text.split(",") if f.strip()],
        default=None,
        help="crawl only these client families, e.g. 'aqido,aqido auto' (default: all)",
    )
    parser.add_argument("--parse-studies", type=int, default=None)
    parser.add_argument("--parse-repeat", type=int, default=None)
    parser.add_argument("--import-repeat", type=int, default=None)
    parser.add_argument("--memory-sizes", type=_sizes, default=None, help="e.g. 100x4x25,1000x4x25")
    parser.add_argument(
        "--cpu-rows",
        type=_cpu_rows,
        default=None,
        help="client CPU rows, ms:in-flight, e.g. 2:16 ('' : none)",
    )
    parser.add_argument(
        "--cpu-size", type=_sizes, default=None, help="canned archive, e.g. 200x4x3"
    )
    parser.add_argument("--cpu-repeat", type=int, default=None)
    parser.add_argument(
        "--cpu-no-pin",
        dest="cpu_pin",
        action="store_false",
        help="client CPU rows: leave the client and the canned server unpinned",
    )
    parser.add_argument("--cold-repeat", type=int, default=None, help="cold-start pairs (0: none)")
    parser.add_argument(
        "--scale-sizes", type=_sizes, default=None, help="e.g. 500x20x10,5000x20x10 ('' : none)"
    )
    parser.add_argument("--out", default=None, help="directory for latest.json/.md and crawl.png")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args(argv)
    full: dict[str, Any] = {
        "latency": [0.002, 0.010, 0.050],
        "studies": 200,
        "series": 2,
        "instances": 3,
        "concurrency": [1, 4, 8, 16, 64],
        "reference": 16,
        # 9, not 5: a crawl at 2 ms takes a third of a second and single runs move by
        # 10-30 % on a shared machine; the budget still caps the slow sequential ones
        "repeat": 9,
        "budget": 20.0,
        "parse_studies": 10_000,
        "parse_repeat": 7,
        "import_repeat": 20,
        "memory_sizes": [(100, 4, 25), (300, 4, 25), (1000, 4, 25)],
        "cpu_rows": [(0.002, 16), (0.002, 64), (0.005, 16), (0.010, 16), (0.050, 16)],
        "cpu_size": [(200, 4, 3)],
        "cpu_repeat": 21,
        "cold_repeat": 30,
        "scale_sizes": [(500, 20, 10), (5000, 20, 10)],
        "out": RESULTS,
    }
    tiny: dict[str, Any] = {
        "latency": [0.002],
        "studies": 6,
        "series": 2,
        "instances": 2,
        "concurrency": [1, 4],
        "reference": 4,
        "repeat": 1,
        "budget": 5.0,
        "parse_studies": 200,
        "parse_repeat": 1,
        "import_repeat": 1,
        "memory_sizes": [(4, 2, 5), (12, 2, 5)],
        "cpu_rows": [(0.002, 4)],
        "cpu_size": [(6, 2, 2)],
        "cpu_repeat": 1,
        "cold_repeat": 1,
        "scale_sizes": [],  # the 1M-instance crawl takes minutes: full runs only
        "out": os.path.join(RESULTS, "tiny"),
    }
    for key, value in (tiny if args.tiny else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(args.only) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {sorted(unknown)}")
    if args.reference not in args.concurrency:
        args.concurrency = sorted({*args.concurrency, args.reference})
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
            "tiny": args.tiny,
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "versions": _versions(),
            "commit": _commit(),
            "noise": NOISE_NOTE,
        }
    }
    commit = report["meta"]["commit"] or "not a git checkout"
    print(f"aqido benchmarks ({'tiny' if args.tiny else 'full'}, commit {commit}); {NOISE_NOTE}")
    if "crawl" in args.only:
        _banner("crawl")
        report["crawl"] = run_crawl(args)
    if "cpu" in args.only:
        _banner("client CPU against a canned server (issue 18)")
        report["cpu"] = cpu.run(
            args.cpu_rows,
            args.cpu_size[0],
            repeat=args.cpu_repeat,
            budget=args.budget,
            cold_repeat=args.cold_repeat,
            scale_sizes=args.scale_sizes,
            pin=args.cpu_pin,
        )
    if "parse" in args.only:
        _banner("parse")
        report["parse"] = parse.run(args.parse_studies, args.parse_repeat)
    if "imports" in args.only:
        _banner("import time")
        report["imports"] = imports.run(args.import_repeat)
    if "memory" in args.only:
        _banner("streaming crawl memory")
        if crawl.aqido_available():
            report["memory"] = memory.run(args.memory_sizes)
        else:
            print("PENDING: aqido.client is not on this branch yet")
    if "scale" in args.only:
        _banner("sharded crawls on Dask: 1 vs 2 workers")
        report["scale"] = scale.run(args.tiny)
    report["targets"] = evaluate_targets(report)
    report["meta"]["seconds"] = time.perf_counter() - started
    mismatches = [m for s in report.get("crawl", {}).get("servers", []) for m in s["mismatches"]]
    mismatches += [
        f"scale: {row['archives']} archive(s), {row['workers']} worker(s): rows differ"
        for row in report.get("scale", {}).get("rows", [])
        if not row["match"]
    ]
    mismatches += [
        f"cpu: {row['latency_ms']:g} ms, {row['concurrency']} in flight: counts differ"
        for row in report.get("cpu", {}).get("crawl", {}).get("rows", [])
        if not row["counts_ok"]
    ]
    mismatches += [
        f"cpu scale: {row['expected_counts']} expected, got {row['counts']}"
        for row in report.get("cpu", {}).get("scale", {}).get("rows", [])
        if not row["match"]
    ]
    mismatches += [
        f"memory: {row['expected_counts']} expected, counts differ"
        for row in report.get("memory", {}).get("rows", [])
        if not row["match"]
    ]
    report["mismatches"] = mismatches

    _banner("results")
    print(render(report, markdown=False))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "latest.md"), "w", encoding="utf-8") as f:
        f.write(render(report, markdown=True) + "\n\n" + _provenance(report) + "\n")
    written = ["latest.json", "latest.md"]
    if "crawl" in report and not args.no_chart:
        if draw_chart(report, os.path.join(args.out, "crawl.png")):
            written.append("crawl.png")
        else:
            print("(matplotlib is not installed: no chart)")
    print(f"\nwrote {', '.join(os.path.join(args.out, w) for w in written)}")
    print(f"total {report['meta']['seconds']:.0f} s. {NOISE_NOTE}")
    if mismatches:
        _loud(f"{len(mismatches)} COUNT MISMATCH(ES): " + "; ".join(mismatches))
        return 1
    return 0

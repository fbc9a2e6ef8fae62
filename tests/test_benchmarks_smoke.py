"""The benchmark suite starts and finishes on its tiny size, and every client agrees.

This runs ``python -m benchmarks --tiny`` once (a few seconds) in a subprocess
and checks the JSON it writes: the shape, and that every crawl client found
exactly what the archive holds.  It never looks at a timing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--no-chart", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return result, out


@pytest.fixture(scope="module")
def report(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, Any]:
    result, out = tiny_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data: dict[str, Any] = json.loads((out / "latest.json").read_text(encoding="utf-8"))
    return data


def test_tiny_run_prints_every_table(
    tiny_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, out = tiny_run
    assert result.returncode == 0, result.stderr[-3000:]
    for heading in (
        "Crawl, fake 2 ms",
        "Client CPU, canned server",
        "Cold start",
        "Parse:",
        "Import time",
        "Streaming crawl memory",
        "Targets",
    ):
        assert heading in result.stdout
    assert "MISMATCH" not in result.stdout + result.stderr
    markdown = (out / "latest.md").read_text(encoding="utf-8")
    assert markdown.startswith("#### Crawl, fake 2 ms")
    assert "| aqido c=4 |" in markdown
    assert "| aqido auto |" in markdown
    assert "Adaptive concurrency" in markdown
    # which code the tables describe: the checkout's commit, in the JSON and the Markdown
    commit = json.loads((out / "latest.json").read_text(encoding="utf-8"))["meta"]["commit"]
    last = markdown.rstrip().splitlines()[-1]
    assert last.startswith("Run ")
    assert "`python -m benchmarks --tiny" in last
    if (ROOT / ".git").exists():
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{7,}(-dirty)?", commit), commit
        assert head.startswith(commit.removesuffix("-dirty"))
        assert f"at commit {commit}," in last
    else:  # an unpacked source distribution
        assert commit is None
        assert "(not a git checkout)" in last


def test_every_crawl_client_finds_the_whole_archive(report: dict[str, Any]) -> None:
    crawl = report["crawl"]
    expected = crawl["archive"]["counts"]
    assert expected == [6, 12, 24]
    (server,) = crawl["servers"]
    assert server["latency_ms"] == 2
    assert server["mismatches"] == []
    names = {row["name"] for row in server["rows"]}
    assert {
        "aqido c=1",
        "aqido c=4",
        "aqido auto",
        "bare aiohttp c=1",
        "bare aiohttp c=4",
    } <= names
    requests_per_crawl = 1 + expected[0] + expected[1]
    for row in server["rows"]:
        assert row["counts"] == expected, row["name"]
        assert row["match"] is True
        assert row["requests"] == requests_per_crawl, row["name"]
        assert 1 <= row["peak_concurrency"] <= row["concurrency"], row["name"]
        assert len(row["runs"]) == 1
        assert row["median_s"] > 0
        assert row["x_aqido"] is not None
        if row["family"] == "aqido auto":  # no bare aiohttp at an adaptive limit
            assert row["x_bare"] is None
            [history] = row["limit_history"]
            assert history[0][1] == 16  # the initial limit, then its changes
            assert all(1 <= limit <= row["concurrency"] for _, limit in history)
        else:
            assert row["x_bare"] is not None
    assert report["mismatches"] == []


def test_parse_imports_and_memory_sections_have_their_shape(report: dict[str, Any]) -> None:
    parse = report["parse"]
    assert parse["studies"] == 200
    assert {"json.loads", "aqido parse_results"} <= set(parse["seconds"])
    assert parse["ratio_vs_json_loads"]["json.loads"] == 1.0

    imports = report["imports"]
    assert {"import aiohttp", "import aqido", "from aqido import AsyncQidoRS"} <= set(
        imports["seconds"]
    )
    # one round (--tiny): its own difference is the median
    (difference,) = imports["client_over_aiohttp_rounds"]
    assert difference == (
        imports["seconds"]["from aqido import AsyncQidoRS"] - imports["seconds"]["import aiohttp"]
    )
    assert imports["client_over_aiohttp_seconds"] == difference
    assert any(row["module"] == "aiohttp" for row in imports["importtime_top"])

    memory = report["memory"]
    assert [row["expected_counts"] for row in memory["rows"]] == [[4, 8, 40], [12, 24, 120]]
    for row in memory["rows"]:
        assert row["match"] is True
        for mode in ("tracemalloc", "rss"):
            assert row[mode]["counts"] == row["expected_counts"]
            assert row[mode]["result_bytes"] > 0
            assert row[mode]["peak_bytes"] >= 0
    assert set(memory["growth"]) == {"tracemalloc", "rss"}


def test_targets_are_evaluated(report: dict[str, Any]) -> None:
    targets = report["targets"]
    kinds = {t["target"].split(":")[0].split(",")[0] for t in targets}
    assert kinds == {"crawl", "client CPU", "parse", "import", "memory"}
    for target in targets:
        assert isinstance(target["met"], bool)
        assert target["value"]
    meta = report["meta"]
    assert meta["tiny"] is True
    assert "noisy" in meta["noise"]


def test_client_cpu_rows_cold_start_and_no_scale_run_in_the_smoke_size(
    report: dict[str, Any],
) -> None:
    cpu = report["cpu"]
    crawl = cpu["crawl"]
    assert crawl["expected_counts"] == [6, 12, 24]
    (row,) = crawl["rows"]
    assert (row["latency_ms"], row["concurrency"]) == (2, 4)
    assert row["counts_ok"] is True
    for client in ("aqido", "bare"):
        assert row[client]["runs"] == 1
        assert row[client]["median_cpu_s"] > 0
        assert row[client]["cpu_us_per_request"] > 0
    assert row["bare"]["requests"] == 1 + 6 + 12  # the listing, then one per study and series
    assert row["aqido"]["requests"] >= row["bare"]["requests"]  # plus a silent-cap check, if any
    # one round: its own ratios are the row's (the median of one)
    assert row["round_wall_ratios"] == [row["aqido"]["wall_s"][0] / row["bare"]["wall_s"][0]]
    assert row["wall_ratio"] == row["round_wall_ratios"][0] > 0
    assert row["cpu_ratio"] == pytest.approx(
        row["aqido"]["cpu_us_per_request"] / row["bare"]["cpu_us_per_request"]
    )
    assert len(row["load_average"]) == 2
    assert 0 <= row["busy_before"] <= 1
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) >= 2:  # the client and the canned server, on a CPU each
        assert row["pinned_cpus"] == [cpus[0], cpus[-1]]
    cold = cpu["cold_start"]
    assert set(cold["median_s"]) == {"aqido", "bare aiohttp"}
    assert set(cold["median_cpu_s"]) == {"aqido", "bare aiohttp"}
    assert "scale" not in cpu  # the 1M-instance crawl belongs to the full run only


def test_canned_server_answers_like_a_qido_rs_archive() -> None:
    from benchmarks.canned import ROOT, Canned

    canned = Canned(3, 2, 2)
    studies = json.loads(canned.body("/studies") or b"")
    assert [s["0020000D"]["Value"][0] for s in studies] == [f"{ROOT}.1.{k}" for k in (1, 2, 3)]
    assert json.loads(canned.body("/studies?limit=1&offset=2") or b"") == studies[2:]
    assert canned.body("/studies?offset=3") == b""  # past the end: 204
    assert json.loads(canned.body(f"/studies?StudyInstanceUID={ROOT}.1.2") or b"") == [studies[1]]
    series = json.loads(canned.body(f"/dicom-web/studies/{ROOT}.1.2/series") or b"")
    assert [s["0020000E"]["Value"][0] for s in series] == [f"{ROOT}.2.2.1", f"{ROOT}.2.2.2"]
    assert {s["0020000D"]["Value"][0] for s in series} == {f"{ROOT}.1.2"}
    instances = json.loads(canned.body(f"/studies/{ROOT}.1.2/series/{ROOT}.2.2.1/instances") or b"")
    assert [i["00080018"]["Value"][0] for i in instances] == [f"{ROOT}.3.2.1.1", f"{ROOT}.3.2.1.2"]
    assert {i["0020000E"]["Value"][0] for i in instances} == {f"{ROOT}.2.2.1"}
    assert canned.body(f"/studies/{ROOT}.1.9/series") is None  # no such study: 404
    assert canned.counts == (3, 6, 12)

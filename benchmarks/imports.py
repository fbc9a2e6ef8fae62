"""Benchmark: import time of aqido against aiohttp and the peers, in fresh interpreters.

Each measurement starts a new ``python`` process that times only the import
statement (``time.perf_counter`` around it, interpreter start-up excluded),
repeated and reduced to the median.  Measured statements:

- ``import aiohttp``: the floor for any aiohttp-based client;
- ``import aqido``: the package alone (errors and query model; the rest is lazy);
- ``from aqido import AsyncQidoRS``: what a user of the client pays (pulls in
  aiohttp, anyio, attrs); the target is at most 50 ms over ``import aiohttp``;
- ``from aqido import AsyncQidoRS, Study``: plus the typed results (cattrs);
- ``import dicomweb_client`` and ``import dicomtrolley.qido_rs``, for context.

``python -X importtime`` of the client import gives the top offenders.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STATEMENTS: dict[str, str] = {
    "import aiohttp": "import aiohttp",
    "import aqido": "import aqido",
    "from aqido import AsyncQidoRS": "from aqido import AsyncQidoRS",
    "from aqido import AsyncQidoRS, Study": "from aqido import AsyncQidoRS, Study",
    "import dicomweb_client": "import dicomweb_client.api",
    "import dicomtrolley.qido_rs": "import dicomtrolley.qido_rs",
}

_TIMER = (
    "import time, warnings\n"
    "warnings.simplefilter('ignore')\n"
    "t = time.perf_counter()\n"
    "{statement}\n"
    "print(time.perf_counter() - t)\n"
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def time_import(statement: str) -> float | None:
    """Seconds the statement takes in a fresh interpreter; ``None`` if it fails."""
    result = subprocess.run(
        [sys.executable, "-c", _TIMER.format(statement=statement)],
        capture_output=True,
        text=True,
        cwd=_ROOT,
        env=_env(),
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        return None
    return float(result.stdout.strip().splitlines()[-1])


def importtime_offenders(statement: str, top: int = 10) -> list[dict[str, Any]]:
    """The modules with the largest cumulative import time (``-X importtime``)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        cwd=_ROOT,
        env=_env(),
        timeout=120,
        check=False,
    )
    rows: list[dict[str, Any]] = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        head, cumulative_us, name = line.split("|", 2)
        self_us = head.removeprefix("import time:").strip()
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append(
            {
                "module": name.strip(),
                "depth": depth,
                "self_ms": int(self_us) / 1000,
                "cumulative_ms": int(cumulative_us) / 1000,
            }
        )
    # Top-level packages (no dot) that are first imported here, largest first.
    roots = [r for r in rows if "." not in r["module"]]
    roots.sort(key=lambda r: r["cumulative_ms"], reverse=True)
    return roots[:top]


def run(repeat: int = 10) -> dict[str, Any]:
    """Median import time of every statement (round-robin over ``repeat`` rounds).

    The client's cost over ``import aiohttp`` is the median of the rounds' own
    differences (both run in each round, seconds apart, the round's order
    alternating): a fresh interpreter's import time drifts by tens of milliseconds
    within a minute on a shared machine, which a difference of two medians
    taken over the whole run would keep.
    """
    times: dict[str, list[float]] = {name: [] for name in STATEMENTS}
    failed: set[str] = set()
    client, floor = "from aqido import AsyncQidoRS", "import aiohttp"
    differences: list[float] = []
    names = list(STATEMENTS)
    for round_ in range(repeat):
        this_round: dict[str, float] = {}
        for name in names if round_ % 2 == 0 else names[::-1]:
            if name in failed:
                continue
            seconds = time_import(STATEMENTS[name])
            if seconds is None:
                failed.add(name)
            else:
                times[name].append(seconds)
                this_round[name] = seconds
        if client in this_round and floor in this_round:
            differences.append(this_round[client] - this_round[floor])
    medians = {name: statistics.median(t) for name, t in times.items() if t}
    report: dict[str, Any] = {
        "repeat": repeat,
        "seconds": medians,
        "unavailable": sorted(failed),
    }
    if differences:
        report["client_over_aiohttp_rounds"] = differences
        report["client_over_aiohttp_seconds"] = statistics.median(differences)
    report["importtime_top"] = importtime_offenders(client if client in medians else "import aqido")
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    lines = [
        f"import time in a fresh interpreter, median of {report['repeat']}",
        f"{'statement':<40} {'ms':>8}",
    ]
    for name, seconds in report["seconds"].items():
        lines.append(f"{name:<40} {seconds * 1000:>8.1f}")
    for name in report["unavailable"]:
        lines.append(f"{name:<40} {'n/a':>8}")
    if "client_over_aiohttp_seconds" in report:
        over = report["client_over_aiohttp_seconds"] * 1000
        lines.append(f"AsyncQidoRS over import aiohttp (median of the rounds): {over:+.1f} ms")
    lines.append("-X importtime, top-level packages by cumulative time:")
    for row in report["importtime_top"]:
        lines.append(f"  {row['module']:<30} {row['cumulative_ms']:>8.1f} ms")
    return "\n".join(lines)

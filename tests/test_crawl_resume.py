"""Kill-and-resume: a crawl SIGKILLed at a random point, then resumed, gives a clean run's set.

The crawl runs in a subprocess with its own FakeArchive (the content is
deterministic, so every run serves the same archive).  The checkpoint is
killed at a seeded random study, halfway through writing its line, with
requests still in flight.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aqido import CrawlCheckpoint
from tests.crawl_data import busy_archive, tree_of

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = {"seed": 4, "series": 2, "instances": 2, "scale": 0.05}

SCRIPT = """
import asyncio, json, os, signal, sys
from aqido import AsyncQidoRS, CrawlCheckpoint, CrawlStats
from aqido.testing import FakeArchive
from tests.crawl_data import busy_archive

path, kill_at, options = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])

class Dying(CrawlCheckpoint):
    written = 0

    def write_study(self, study):
        if self.written == kill_at:
            line = json.dumps({"study": study.to_json()})
            self._file.write(line[: len(line) // 2].encode())  # killed in the middle of a line
            self._file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        super().write_study(study)
        self.written += 1

async def main():
    data, _ = busy_archive(**options)
    stats = CrawlStats()
    async with FakeArchive.orthanc_like(data, max_results=50) as archive:
        async with AsyncQidoRS(archive.url, retries=0, max_concurrency=4) as qido:
            checkpoint = Dying(path, force=True)  # the archive is back on another port
            async for _ in qido.crawl(server_limit=50, checkpoint=checkpoint, stats=stats):
                pass
    print(stats.studies_skipped, stats.studies_done)

asyncio.run(main())
"""


def run(path: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), str(kill_at), json.dumps(ARCHIVE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_killed_crawl_resumes_to_the_same_set(tmp_path: Path, seed: int) -> None:
    _, expected = busy_archive(**ARCHIVE)  # type: ignore[arg-type]
    kill_at = random.Random(seed).randrange(1, len(expected) - 1)
    path = tmp_path / "crawl.jsonl"

    killed = run(path, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not path.read_bytes().endswith(b"\n")  # the last line was cut short
    assert len(list(CrawlCheckpoint.read_studies(path))) == kill_at

    resumed = run(path, -1)
    assert resumed.returncode == 0, resumed.stderr
    skipped, done = map(int, resumed.stdout.split())
    assert skipped == kill_at
    assert skipped + done == len(expected)

    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(json.loads(line) for line in lines)  # every line is whole JSON
    assert tree_of(list(CrawlCheckpoint.read_studies(path))) == expected  # no duplicates, no gaps
    assert json.loads(lines[-1])["end"]["complete"] is True

"""``aqido probe URL [--json FILE]``: the findings table and the profile file."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aqido.cli import EXIT_ERROR, EXIT_OK, main
from aqido.profile import ServerProfile
from aqido.testing import FakeArchive, SyntheticArchive

DATA = SyntheticArchive(seed=5, studies=12, series_per_study=2, instances_per_series=1)


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(argv, stdout=out, stderr=err, environ={})
    return status, out.getvalue(), err.getvalue()


def test_probe_prints_each_finding_with_its_request_and_writes_the_profile(
    tmp_path: Path,
) -> None:
    profile = ServerProfile.orthanc()
    target = tmp_path / "profile.json"
    with FakeArchive(DATA, profile=profile).run_in_thread() as archive:
        status, out, err = _run(["probe", archive.url, "--json", str(target)])
    assert (status, err) == (EXIT_OK, "")
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "not decoded" in rows["percent_decoding"]
    assert "PatientName=%" in rows["percent_decoding"]  # the request that showed it
    assert "the last value wins" in rows["repeated_keys"]
    assert "StudyInstanceUID={A}&StudyInstanceUID={B}" in rows["repeated_keys"]
    assert "studies: {A} = " in out
    assert "differs from the standard in: percent_decoding, case_sensitive" in out
    assert "compared as text" in rows["temporal_text"]  # A's stored StudyTime showed it
    assert ServerProfile.load(target) == profile


def test_probe_of_an_unreachable_server_is_one_line_and_exit_1() -> None:
    with FakeArchive(DATA).run_in_thread() as archive:
        url = archive.url
    status, out, err = _run(["probe", url, "--retries", "0"])
    assert status == EXIT_ERROR
    assert out == ""
    assert err.startswith("aqido: cannot reach the server")
    assert err.count("\n") == 1


@pytest.mark.parametrize("terminal", [False, True])
def test_probe_shows_server_text_escaped_and_markup_as_text(
    terminal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe's cells come from the server (values, paths); printed as rich Text on a
    # terminal, plain otherwise: control characters escaped, brackets shown as they are.
    from aqido import cli, probe
    from aqido._probe_model import Finding, ProbeContext, ProbeReport

    if terminal:
        pytest.importorskip("rich")
        monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setattr(cli, "_isatty", lambda stream: terminal)
    report = ProbeReport(
        profile=ServerProfile.standard(),
        findings=(
            Finding("fuzzy_matching", "answered [bold]x[/bold]\x1b[2J", "/studies?U=1.2.3", None),
        ),
        requests=1,
        context=ProbeContext(listed=("1.2.3",), a="1.2.3"),
    )

    async def canned(*_args: Any, **_kwargs: Any) -> ProbeReport:
        return report

    monkeypatch.setattr(probe, "probe_report", canned)
    status, out, err = _run(["probe", "http://127.0.0.1:9/dicom-web"])
    assert (status, err) == (EXIT_OK, "")
    text = " ".join(out.split())
    assert "answered [bold]x[/bold]\\x1b[2J" in text  # no `\\[`, no ESC
    assert "\x1b" not in out
    assert "/studies?U={A}" in text
    assert "studies: {A} = 1.2.3" in text


def test_probe_with_adaptive_concurrency_runs() -> None:
    # `--concurrency auto` is a valid value for every command; the probe compared it with an
    # int (a TypeError traceback) before it sent a request.
    with FakeArchive(DATA).run_in_thread() as archive:
        status, out, err = _run(["probe", archive.url, "--concurrency", "auto"])
    assert (status, err) == (EXIT_OK, "")
    assert "differs from the standard in: " in out


#: `aqido` with files limited to 200 bytes: a longer write fails (EFBIG) part-way.
_SMALL_FILES = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))
from aqido.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE (POSIX)")
def test_a_profile_that_cannot_be_written_leaves_the_file_there_was(tmp_path: Path) -> None:
    # `--json FILE` truncated FILE, then failed: a cut, unloadable profile replaced a good one
    target = tmp_path / "profile.json"
    ServerProfile.orthanc().save(target)
    before = target.read_bytes()
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root}
    with FakeArchive(DATA).run_in_thread() as archive:
        argv = [sys.executable, "-c", _SMALL_FILES, "probe", archive.url, "--json", str(target)]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == EXIT_ERROR
    assert "could not write the profile" in done.stderr
    assert str(target) in done.stderr
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.json"]  # no temporary left

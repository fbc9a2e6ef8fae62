"""``aqido probe URL [--json FILE]``: the findings table and the profile file."""

from __future__ import annotations

import io
from pathlib import Path

from aqido._cli.commands import server_text
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
    assert ServerProfile.load(target) == profile


def test_probe_of_an_unreachable_server_is_one_line_and_exit_1() -> None:
    with FakeArchive(DATA).run_in_thread() as archive:
        url = archive.url
    status, out, err = _run(["probe", url, "--retries", "0"])
    assert status == EXIT_ERROR
    assert out == ""
    assert err.startswith("aqido: cannot reach the server")
    assert err.count("\n") == 1


def test_server_text_escapes_control_characters() -> None:
    assert server_text("Doe^John") == "Doe^John"
    assert server_text("a\x1b[2Jb\nc\u202e") == "a\\x1b[2Jb\\nc\\u202e"

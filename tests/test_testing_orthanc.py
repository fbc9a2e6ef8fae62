"""The Orthanc launcher's failure paths, with stand-in binaries (no Orthanc needed).

Each test points ``AQIDO_ORTHANC_BINARY`` at a small script and checks that a
failed start raises :class:`OrthancUnavailableError` with the log tail, and
leaves no process and no temporary directory behind.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from aqido.testing import orthanc as launcher
from aqido.testing.orthanc import OrthancServer, OrthancUnavailableError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the launcher targets POSIX")


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def fake_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    plugin = tmp_path / "libOrthancDicomWeb.so"
    plugin.write_bytes(b"not really a plugin")
    monkeypatch.setenv(launcher.PLUGIN_ENV, str(plugin))
    return plugin


@pytest.fixture(autouse=True)
def _private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory of this test's own for the launcher's ``aqido-orthanc-*`` dirs.

    The system one is shared: a real Orthanc started meanwhile by another test run (an
    integration run, a second suite on the same machine) adds its directory there and
    would make "no directory left behind" fail; the sweep test would touch theirs too.
    """
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    return private


def _our_temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("aqido-orthanc-*")}


def _assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_find_orthanc_honours_overrides(
    tmp_path: Path, fake_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = _script(tmp_path / "Orthanc", "")
    monkeypatch.setenv(launcher.BINARY_ENV, binary)
    assert launcher.find_orthanc() == (binary, str(fake_plugin))
    monkeypatch.setenv(launcher.BINARY_ENV, str(tmp_path / "missing"))
    assert launcher.find_orthanc() is None


def test_missing_binary_without_install_is_a_clear_error(
    tmp_path: Path, fake_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(launcher.BINARY_ENV, str(tmp_path / "missing"))
    with pytest.raises(OrthancUnavailableError, match="not found"):
        OrthancServer(install=False).start()


def test_a_wrong_override_is_reported_not_installed_around(
    tmp_path: Path, fake_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(launcher.BINARY_ENV, str(tmp_path / "missing"))
    with pytest.raises(OrthancUnavailableError, match=r"AQIDO_ORTHANC_BINARY=.*missing does not"):
        launcher.install_orthanc()


def test_install_refused_when_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "find_orthanc", lambda: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(OrthancUnavailableError, match=r"not running as root.*apt-get install"):
        launcher.install_orthanc()


def test_binary_that_exits_at_once_reports_its_log(
    tmp_path: Path, fake_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "import sys\nprint('E: cannot bind the HTTP port', flush=True)\nsys.exit(3)\n"
    monkeypatch.setenv(launcher.BINARY_ENV, _script(tmp_path / "Orthanc", body))
    before = _our_temp_dirs()
    server = OrthancServer()
    with pytest.raises(OrthancUnavailableError, match=r"status 3.*\n.*cannot bind the HTTP port"):
        server.start()
    assert not server.running
    assert server.directory is None
    assert _our_temp_dirs() <= before


def test_binary_that_never_answers_is_killed(
    tmp_path: Path, fake_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that ignores SIGTERM and never answers: timeout, then SIGKILL, then cleanup."""
    pid_file = tmp_path / "pid"
    body = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "print('config file:', sys.argv[1], flush=True)\n"
        "time.sleep(120)\n"
    )
    monkeypatch.setenv(launcher.BINARY_ENV, _script(tmp_path / "Orthanc", body))
    before = _our_temp_dirs()
    server = OrthancServer(startup_timeout=4.0, stop_timeout=0.2)  # generous: loaded CI machines
    with pytest.raises(OrthancUnavailableError, match=r"did not answer(.|\n)*config file: "):
        server.start()
    _assert_gone(int(pid_file.read_text()))
    assert _our_temp_dirs() <= before


def test_directories_of_killed_launchers_are_swept(
    tmp_path: Path, fake_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launcher killed with SIGKILL cannot clean up; the next start does it for it."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    orphan = Path(tempfile.mkdtemp(prefix="aqido-orthanc-"))
    (orphan / "owner.pid").write_text(dead.stdout.strip())
    alive = Path(tempfile.mkdtemp(prefix="aqido-orthanc-"))
    (alive / "owner.pid").write_text(str(os.getpid()))
    try:
        binary = _script(tmp_path / "Orthanc", "raise SystemExit(1)")
        monkeypatch.setenv(launcher.BINARY_ENV, binary)
        with pytest.raises(OrthancUnavailableError):
            OrthancServer().start()
        assert not orphan.exists()
        assert alive.exists()
    finally:
        for directory in (orphan, alive):
            shutil.rmtree(directory, ignore_errors=True)


def test_stop_is_idempotent_and_safe_before_start() -> None:
    server = OrthancServer()
    server.stop()
    server.stop()
    assert not server.running
    with pytest.raises(launcher.OrthancError, match="not running"):
        _ = server.url


def test_seeding_raises_when_an_upload_thread_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # an upload's exception that is not an OSError (an answer cut short, one that is not
    # Orthanc's JSON) was lost with its thread: seeding reported success, one instance short
    stored: list[bytes] = []

    def fake_request(url: str, *, data: bytes | None = None, **_: object) -> tuple[int, bytes]:
        if url.endswith("/statistics"):
            n = len(stored)
            counts = {"CountStudies": n, "CountSeries": n, "CountInstances": n}
            return 200, json.dumps(counts).encode()
        if data == b"cut":
            raise http.client.IncompleteRead(b"")
        if data == b"odd":
            return 200, b"<html>not JSON</html>"
        stored.append(data or b"")
        i = len(stored)
        answer = {"ID": f"i{i}", "ParentSeries": f"s{i}", "ParentStudy": f"t{i}"}
        return 200, json.dumps({**answer, "Status": "Success"}).encode()

    monkeypatch.setattr(launcher, "_request", fake_request)
    for bad in (b"cut", b"odd"):
        stored.clear()
        with pytest.raises(launcher.SeedError, match="1 upload"):
            launcher.seed_orthanc("http://orthanc", [b"a", bad, b"c"], workers=2)
    stored.clear()
    report = launcher.seed_orthanc("http://orthanc", [b"a", b"b", b"c"], workers=2)
    assert (report.instances, report.stored) == (3, 3)

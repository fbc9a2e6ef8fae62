"""The tiny_pacs launcher without tiny_pacs: the install switch, stand-in venvs, STOW-RS uploads.

Stand-in virtualenvs (a ``bin/python`` and a ``bin/tiny-pacs`` script) exercise
finding, refusing to install and failed starts; a small HTTP server on
127.0.0.1 plays the STOW-RS endpoint.  The real server is covered by
``tests/integration/test_tinypacs_server.py``.  Also here: the Orthanc
launcher's explicit install switch (issue 14).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aqido.testing import _launch
from aqido.testing import orthanc as orthanc_launcher
from aqido.testing import tinypacs as launcher
from aqido.testing.synthetic import SyntheticArchive
from aqido.testing.tinypacs import (
    StowError,
    TinyPacsServer,
    TinyPacsUnavailableError,
    find_tinypacs,
    stow_rs,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the launchers target POSIX")

VERSIONS = {"tiny_pacs": "0.4.1", "tiny_pacs_dicomweb": "0.1.0", "waitress": "3.0.2"}


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No install switch from outside; a private temp dir for ``aqido-tinypacs-*`` dirs."""
    monkeypatch.delenv(_launch.INSTALL_ENV, raising=False)
    monkeypatch.delenv(launcher.VENV_ENV, raising=False)
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    return private


def _script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


def _fake_venv(root: Path, server_body: str = "raise SystemExit(0)") -> Path:
    """A directory that looks like a tiny_pacs virtualenv to :func:`find_tinypacs`."""
    _script(root / "bin" / "python", f"print({json.dumps(json.dumps(VERSIONS))})\n")
    _script(root / "bin" / "tiny-pacs", server_body)
    return root


# --- the install switch ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("explicit", "env", "expected"),
    [
        (None, None, False),
        (None, "1", True),
        (None, "true", True),
        (None, " YES ", True),
        (None, "0", False),
        (None, "", False),
        (True, None, True),
        (False, "1", False),
    ],
)
def test_install_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, explicit: bool | None, env: str | None, expected: bool
) -> None:
    if env is not None:
        monkeypatch.setenv(_launch.INSTALL_ENV, env)
    assert _launch.install_requested(explicit) is expected


def test_default_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert launcher.default_venv() == tmp_path / "cache" / "aqido" / "tinypacs-venv"
    monkeypatch.setenv(launcher.VENV_ENV, str(tmp_path / "mine"))
    assert launcher.default_venv() == tmp_path / "mine"


# --- finding and refusing to install ---------------------------------------------------


def test_find_tinypacs(tmp_path: Path) -> None:
    assert find_tinypacs(tmp_path / "nothing") is None
    root = _fake_venv(tmp_path / "venv")
    found = find_tinypacs(root)
    assert found is not None
    assert found.executable == root / "bin" / "tiny-pacs"
    assert found.versions == VERSIONS
    _script(root / "bin" / "python", "raise SystemExit(1)")  # e.g. waitress missing
    assert find_tinypacs(root) is None


def test_a_missing_install_is_not_installed_unless_asked(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    with pytest.raises(TinyPacsUnavailableError, match=r"not installed.*AQIDO_INSTALL_SERVERS=1"):
        TinyPacsServer(venv=venv).start()
    with pytest.raises(TinyPacsUnavailableError, match="install=True"):
        TinyPacsServer(venv=venv, install=False).start()
    assert not venv.exists()


def test_asked_to_install_it_creates_the_venv_and_reports_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def run(args: list[str], deadline: float, timeout: float) -> None:
        calls.append(args)
        if "pip" in args:
            raise TinyPacsUnavailableError("pip failed (stand-in)")

    monkeypatch.setattr(launcher, "_run", run)
    monkeypatch.setenv(_launch.INSTALL_ENV, "1")
    venv = tmp_path / "venv"
    with pytest.raises(TinyPacsUnavailableError, match=r"pip failed \(stand-in\)"):
        TinyPacsServer(venv=venv).start()
    assert calls[0] == [sys.executable, "-m", "venv", str(venv)]
    assert calls[1][:4] == [str(venv / "bin" / "python"), "-m", "pip", "install"]
    assert set(calls[1][5:]) == set(launcher.PACKAGES)


# --- failed starts leave nothing behind ------------------------------------------------


def _our_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("aqido-tinypacs-*")}


def test_a_server_that_exits_at_once_reports_its_log(tmp_path: Path) -> None:
    body = "import sys\nprint('E: no config', sys.argv[1:], flush=True)\nsys.exit(3)\n"
    venv = _fake_venv(tmp_path / "venv", body)
    server = TinyPacsServer(venv=venv)
    with pytest.raises(TinyPacsUnavailableError, match=r"status 3(.|\n)*E: no config.*'run', '-c'"):
        server.start()
    assert not server.running
    assert server.directory is None
    assert _our_dirs() == set()


def test_a_server_that_never_answers_is_stopped(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    body = (
        "import json, os, sys, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "config = json.load(open(sys.argv[3]))\n"
        "print('in-memory storage', config['components']['InMemoryStorage'], flush=True)\n"
        "time.sleep(120)\n"
    )
    venv = _fake_venv(tmp_path / "venv", body)
    server = TinyPacsServer(venv=venv, startup_timeout=5.0)  # generous: loaded CI machines
    with pytest.raises(TinyPacsUnavailableError, match=r"did not answer(.|\n)*{'on': False}"):
        server.start()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
    assert _our_dirs() == set()


def test_stop_is_idempotent_and_safe_before_start() -> None:
    server = TinyPacsServer()
    server.stop()
    server.stop()
    assert not server.running
    with pytest.raises(launcher.TinyPacsError, match="not running"):
        _ = server.dicomweb_url


# --- STOW-RS ---------------------------------------------------------------------------


class _Stow(BaseHTTPRequestHandler):
    """Answers STOW-RS like tiny_pacs; ``server.fail_after`` makes later parts fail."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        boundary = self.headers["Content-Type"].split("boundary=")[1]
        parts = body.split(f"--{boundary}".encode())[1:-1]
        state: dict[str, Any] = self.server.state  # type: ignore[attr-defined]
        state["requests"].append((self.path, self.headers["Authorization"], len(parts)))
        stored, failed = [], []
        for part in parts:
            state["parts"] += 1
            assert part.startswith(b"\r\nContent-Type: application/dicom\r\n\r\n")
            item = {"00081155": {"vr": "UI", "Value": [str(state["parts"])]}}
            (failed if state["parts"] > state["fail_after"] else stored).append(item)
        answer: dict[str, Any] = {}
        if stored:
            answer["00081199"] = {"vr": "SQ", "Value": stored}
        if failed:
            answer["00081198"] = {"vr": "SQ", "Value": failed}
        data = json.dumps(answer).encode()
        self.send_response(409 if not stored else 202 if failed else 200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stow_server() -> Iterator[tuple[str, dict[str, Any]]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stow)
    state: dict[str, Any] = {"requests": [], "parts": 0, "fail_after": 10**9}
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/dicomweb", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_stow_rs_sends_batches_one_at_a_time(stow_server: tuple[str, dict[str, Any]]) -> None:
    url, state = stow_server
    archive = SyntheticArchive(seed=3, studies=4, series_per_study=2, instances_per_series=2)
    report = stow_rs(url, archive.iter_pydicom(), headers={"Authorization": "Bearer t"}, batch=5)
    assert (report.instances, report.studies, report.requests) == (16, 4, 4)
    assert state["requests"] == [("/dicomweb/studies", "Bearer t", n) for n in (5, 5, 5, 1)]


def test_stow_rs_raises_when_a_part_fails(stow_server: tuple[str, dict[str, Any]]) -> None:
    url, state = stow_server
    state["fail_after"] = 7
    data = [b"DICM-stand-in"] * 10
    with pytest.raises(StowError, match=r"HTTP 202"):
        stow_rs(url, data, batch=4)
    assert [n for _, _, n in state["requests"]] == [4, 4]  # stops at the first failure
    with pytest.raises(ValueError, match="batch"):
        stow_rs(url, data, batch=0)


# --- the Orthanc launcher's install switch (issue 14) -----------------------------------


def test_orthanc_is_not_installed_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(orthanc_launcher.BINARY_ENV, str(tmp_path / "missing"))

    def install(**_: object) -> tuple[str, str]:
        raise orthanc_launcher.OrthancUnavailableError("install_orthanc was called")

    monkeypatch.setattr(orthanc_launcher, "install_orthanc", install)
    with pytest.raises(orthanc_launcher.OrthancUnavailableError, match="AQIDO_INSTALL_SERVERS=1"):
        orthanc_launcher.OrthancServer().start()
    monkeypatch.setenv(_launch.INSTALL_ENV, "1")
    with pytest.raises(orthanc_launcher.OrthancUnavailableError, match="was called"):
        orthanc_launcher.OrthancServer().start()
    with pytest.raises(orthanc_launcher.OrthancUnavailableError, match="install=True"):
        orthanc_launcher.OrthancServer(install=False).start()

"""What the real-server launchers share: the explicit install switch and child-process helpers.

Used by :mod:`aqido.testing.orthanc` (the install switch) and
:mod:`aqido.testing.tinypacs`.  Standard library only, so synchronous pytest
fixtures can use it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

#: Environment variable that lets the launchers install their servers (``1``, ``true``, ``yes``).
INSTALL_ENV = "AQIDO_INSTALL_SERVERS"

_TRUE = frozenset({"1", "true", "yes", "on"})

# A urllib opener that ignores http_proxy & co: the servers are always on 127.0.0.1.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def install_requested(install: bool | None = None) -> bool:
    """Whether a launcher may install its server: ``install``, else ``AQIDO_INSTALL_SERVERS``.

    Installing is never the default: it downloads packages (and, for Orthanc,
    installs system packages as root), so it happens only when asked for.
    """
    if install is not None:
        return install
    return os.environ.get(INSTALL_ENV, "").strip().lower() in _TRUE


def tail(text: str, lines: int = 30) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


def request(
    url: str,
    *,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes, Mapping[str, str]]:
    """Send one request; return ``(status, body, headers)`` (HTTP errors are not raised)."""
    req = urllib.request.Request(
        url, data=data, headers=dict(headers or {}), method="POST" if data is not None else "GET"
    )
    try:
        with OPENER.open(req, timeout=timeout) as response:
            return int(response.status), bytes(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), bytes(exc.read()), dict(exc.headers)


def free_port() -> int:
    """A TCP port that is free on every interface right now (a later bind may still race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans(prefix: str, owner_file: str = "owner.pid") -> None:
    """Delete temporary directories ``prefix*`` whose owner process (in ``owner_file``) is gone."""
    for directory in Path(tempfile.gettempdir()).glob(prefix + "*"):
        try:
            owner = int((directory / owner_file).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        if not alive(owner):
            shutil.rmtree(directory, ignore_errors=True)


def parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when its parent thread dies (Linux)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return preexec

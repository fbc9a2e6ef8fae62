"""A real tiny_pacs + DICOMweb server on 127.0.0.1, for integration tests.

tiny_pacs (a small Python PACS) with its DICOMweb front-end
``tiny_pacs_dicomweb`` is aqido's second real server: written independently
of Orthanc and of aqido, and non-standard in other ways (``docs/tinypacs.md``
lists how).  :class:`TinyPacsServer` starts it as a child process with a
throw-away configuration, database and storage in a temporary directory,
waits until QIDO-RS answers, and stops it by PID afterwards::

    from aqido.testing.tinypacs import TinyPacsServer

    with TinyPacsServer(install=True) as pacs:
        pacs.stow(datasets)                  # pydicom Datasets, uploaded by STOW-RS
        print(pacs.dicomweb_url)             # http://127.0.0.1:PORT/dicomweb

Details that matter:

* tiny_pacs lives in its own virtualenv, never in the caller's environment:
  ``AQIDO_TINYPACS_VENV`` or ``~/.cache/aqido/tinypacs-venv`` (under
  ``XDG_CACHE_HOME`` when set).  It needs ``tiny_pacs`` 0.4,
  ``tiny_pacs_dicomweb`` 0.1 and ``waitress`` (without waitress tiny_pacs
  opens no HTTP port and only logs a warning).
* **Nothing is installed unless asked explicitly**: ``TinyPacsServer(install=True)``,
  the environment variable ``AQIDO_INSTALL_SERVERS=1`` (``nox -s integration``
  and CI set it), or a direct call of :func:`install_tinypacs`.  Installing
  creates the virtualenv with the running interpreter's ``venv`` module and
  runs ``pip install`` from the package index.  Otherwise a missing install
  is a :class:`TinyPacsUnavailableError` that says what to do.
* The configuration (:meth:`TinyPacsServer.config`, written as JSON, which is
  YAML) switches tiny_pacs' in-memory storage off (on by default, it stores
  every instance twice), binds HTTP to 127.0.0.1 on a free port and keeps the
  SQLite database and files in the temporary directory.  tiny_pacs 0.4 always
  runs a DICOM (DIMSE) listener, on every interface: it gets a free port too;
  data is loaded by STOW-RS, never through it.
* STOW-RS uploads go one request at a time (several instances per request):
  concurrent STOW-RS requests fail on SQLite's table locks.
* Nothing is left behind: :meth:`TinyPacsServer.stop` sends SIGTERM, then
  SIGKILL after ``stop_timeout``, and deletes the temporary directory; it runs
  on every failure inside :meth:`~TinyPacsServer.start`, on ``__exit__`` and at
  interpreter exit; directories of launchers that were killed outright are
  swept by the next start.

Standard library only for HTTP, so it works from synchronous pytest fixtures.

It is one module because a launcher is read top to bottom by whoever debugs a
failed start: finding or installing the server, its configuration, starting,
waiting, loading data and stopping, in that order, for one server.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from aqido.testing._launch import (
    INSTALL_ENV,
    free_port,
    install_requested,
    parent_death_signal,
    request,
    sweep_orphans,
    tail,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

#: What goes into the virtualenv (the versions aqido is tested with).
PACKAGES = ("tiny_pacs>=0.4,<0.5", "tiny_pacs_dicomweb>=0.1,<0.2", "waitress>=3,<4")
#: Environment variable naming the virtualenv (default: :func:`default_venv`).
VENV_ENV = "AQIDO_TINYPACS_VENV"
#: Where tiny_pacs_dicomweb is mounted on the HTTP server.
PREFIX = "/dicomweb"

_DIR_PREFIX = "aqido-tinypacs-"
_OWNER_FILE = "owner.pid"
_BIN = "Scripts" if os.name == "nt" else "bin"
_CHECK = (
    "import json, importlib.metadata as m, tiny_pacs, tiny_pacs_dicomweb, waitress; "
    "print(json.dumps({p: m.version(p) for p in "
    "('tiny_pacs', 'tiny_pacs_dicomweb', 'waitress')}))"
)


class TinyPacsError(RuntimeError):
    """Base class of the errors raised by this launcher (not part of :class:`aqido.QidoError`)."""


class TinyPacsUnavailableError(TinyPacsError):
    """tiny_pacs cannot be found, installed or started (the message says why, with its log)."""


class StowError(TinyPacsError):
    """A STOW-RS upload failed or stored fewer instances than were sent."""


# --------------------------------------------------------------------------------------
# Finding and installing tiny_pacs
# --------------------------------------------------------------------------------------


@attrs.frozen
class Installation:
    """A virtualenv holding tiny_pacs: its root, the ``tiny-pacs`` script and package versions."""

    venv: Path
    executable: Path
    versions: Mapping[str, str]


def default_venv() -> Path:
    """The virtualenv used when none is given: ``AQIDO_TINYPACS_VENV`` or the user's cache."""
    override = os.environ.get(VENV_ENV)
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "aqido" / "tinypacs-venv"


def find_tinypacs(venv: str | Path | None = None) -> Installation | None:
    """Return the installation in ``venv`` (default :func:`default_venv`) if it works, else None.

    Works means: the ``tiny-pacs`` script exists and the venv's Python imports
    ``tiny_pacs``, ``tiny_pacs_dicomweb`` and ``waitress``.
    """
    root = Path(venv) if venv is not None else default_venv()
    executable = root / _BIN / "tiny-pacs"
    python = root / _BIN / "python"
    if not executable.is_file() or not python.exists():
        return None
    try:
        done = subprocess.run(
            [str(python), "-c", _CHECK],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return Installation(root, executable, json.loads(done.stdout))


def install_tinypacs(
    venv: str | Path | None = None, *, python: str | None = None, timeout: float = 600.0
) -> Installation:
    """Create the virtualenv (if needed) and ``pip install`` tiny_pacs into it; return it.

    Calling it is the explicit request to install (the launcher itself only
    calls it with ``install=True`` or ``AQIDO_INSTALL_SERVERS=1``).  ``python``
    makes the virtualenv (default: the running interpreter).  Concurrent
    callers on one machine serialise on a lock file and install once.
    """
    root = Path(venv) if venv is not None else default_venv()
    found = find_tinypacs(root)
    if found is not None:
        return found
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "w") as lock:
        if os.name == "posix":
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        found = find_tinypacs(root)  # another process may have installed it meanwhile
        if found is not None:
            return found
        deadline = time.monotonic() + timeout
        venv_python = root / _BIN / "python"
        steps = []
        if not venv_python.exists():
            steps.append([python or sys.executable, "-m", "venv", str(root)])
        steps.append([str(venv_python), "-m", "pip", "install", "--quiet", *PACKAGES])
        for args in steps:
            _run(args, deadline, timeout)
    found = find_tinypacs(root)
    if found is None:
        raise TinyPacsUnavailableError(
            f"installed {' '.join(PACKAGES)} into {root}, but it does not import"
        )
    return found


def _run(args: list[str], deadline: float, timeout: float) -> None:
    try:
        done = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=max(1.0, deadline - time.monotonic()),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TinyPacsUnavailableError(
            f"`{' '.join(args)}` did not finish within {timeout:.0f} s"
        ) from exc
    except OSError as exc:
        raise TinyPacsUnavailableError(f"`{' '.join(args)}` could not run: {exc}") from exc
    if done.returncode != 0:
        raise TinyPacsUnavailableError(
            f"`{' '.join(args)}` failed with exit status {done.returncode}:\n" + tail(done.stdout)
        )


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------

_RUNNING: set[TinyPacsServer] = set()
_RUNNING_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:  # pragma: no cover - runs at interpreter exit
    with _RUNNING_LOCK:
        servers = list(_RUNNING)
    for server in servers:
        server.stop()


@attrs.define(eq=False)
class TinyPacsServer:
    """A throw-away tiny_pacs + DICOMweb server on 127.0.0.1, started as a child process.

    Use it as a context manager or call :meth:`start` and :meth:`stop` (both
    idempotent).  Options:

    * ``install``: install tiny_pacs into ``venv`` when missing: ``True`` yes,
      ``False`` never, ``None`` (default) only when ``AQIDO_INSTALL_SERVERS=1``.
    * ``venv``: the virtualenv (default :func:`default_venv`).
    * ``token``: turns bearer-token auth on (tiny_pacs' ``auth: token``).
    * ``log_level``: tiny_pacs' log level (``INFO`` logs every request).
    * ``startup_timeout``: seconds to wait for ``/dicomweb/studies`` to answer.
    * ``stop_timeout``: seconds between SIGTERM and SIGKILL.
    """

    install: bool | None = None
    venv: str | Path | None = None
    token: str | None = None
    log_level: str = "WARNING"
    startup_timeout: float = 60.0
    stop_timeout: float = 15.0

    _process: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False)
    _dir: Path | None = attrs.field(default=None, init=False)
    _port: int | None = attrs.field(default=None, init=False)
    _dicom_port: int | None = attrs.field(default=None, init=False)
    _installation: Installation | None = attrs.field(default=None, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    # -- addresses and state ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The HTTP port (only while running)."""
        if self._port is None:
            raise TinyPacsError("the tiny_pacs server is not running")
        return self._port

    @property
    def dicom_port(self) -> int:
        """The DICOM (DIMSE) port tiny_pacs listens on (only while running)."""
        if self._dicom_port is None:
            raise TinyPacsError("the tiny_pacs server is not running")
        return self._dicom_port

    @property
    def url(self) -> str:
        """The HTTP root, ``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb (QIDO-RS) root, ``{url}/dicomweb`` (no trailing slash)."""
        return f"{self.url}{PREFIX}"

    @property
    def headers(self) -> dict[str, str]:
        """The headers every request needs (the bearer token, when set)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def versions(self) -> Mapping[str, str]:
        """Versions of tiny_pacs, tiny_pacs_dicomweb and waitress (after :meth:`start`)."""
        return self._installation.versions if self._installation is not None else {}

    @property
    def directory(self) -> Path | None:
        """The temporary directory holding config, database, storage and log (while running)."""
        return self._dir

    @property
    def log_path(self) -> Path | None:
        """tiny_pacs' log file (while running)."""
        return self._dir / "server.log" if self._dir is not None else None

    def log_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of tiny_pacs' log ("" if there is none)."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return tail(path.read_text(errors="replace"), lines)

    def config(self, port: int, dicom_port: int, directory: Path) -> dict[str, Any]:
        """Return the tiny_pacs configuration used for these ports and this directory."""
        level = self.log_level.upper()
        return {
            "ae": {"ae_title": ["AQIDO_TINY"], "port": dicom_port, "dump_ds": False},
            "log": {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {
                    "simple": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
                },
                "handlers": {
                    "console": {
                        "class": "logging.StreamHandler",
                        "level": level,
                        "formatter": "simple",
                        "stream": "ext://sys.stdout",
                    }
                },
                "root": {"level": level, "handlers": ["console"]},
            },
            "components": {
                "Database": {
                    "on": True,
                    "driver": "sqlite",
                    "db_name": str(directory / "pacs.db"),
                    "mode": "rwc",
                },
                "Devices": {"on": True, "auto_add": False},
                "PACS": {"on": True},
                "InMemoryStorage": {"on": False},  # on by default: every instance stored twice
                "FileStorage": {"on": True, "storage_dir": str(directory / "storage")},
                "HttpServer": {"on": True, "host": "127.0.0.1", "port": port, "threads": 8},
                "DICOMWeb": {
                    "on": True,
                    "prefix": PREFIX,
                    "auth": "token" if self.token else "none",
                    "tokens": [self.token] if self.token else [],
                },
            },
        }

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> TinyPacsServer:
        """Start the server and wait until QIDO-RS answers; return ``self``.

        Raises :class:`TinyPacsUnavailableError` (with the log tail) if tiny_pacs
        is missing and may not or cannot be installed, or does not come up
        within ``startup_timeout``.  On any failure the process is stopped and
        the temporary directory removed before the error propagates.
        """
        with self._lock:
            if self._process is not None:
                return self
            installation = find_tinypacs(self.venv)
            if installation is None:
                where = self.venv if self.venv is not None else default_venv()
                if not install_requested(self.install):
                    raise TinyPacsUnavailableError(
                        f"tiny_pacs is not installed in {where}; let the launcher install it "
                        f"with install=True or {INSTALL_ENV}=1, or run "
                        f"`python -m venv {where} && {where}/{_BIN}/pip install "
                        + " ".join(f"'{p}'" for p in PACKAGES)
                        + "`"
                    )
                installation = install_tinypacs(self.venv)
            self._installation = installation
            started = False
            try:
                for attempt in range(3):
                    if self._launch(installation, last_attempt=attempt == 2):
                        break
                started = True
            finally:
                if not started:
                    self._stop_locked()
            return self

    def _launch(self, installation: Installation, *, last_attempt: bool) -> bool:
        """Start one process and wait for it; False if a port was taken meanwhile."""
        sweep_orphans(_DIR_PREFIX, _OWNER_FILE)
        self._dir = directory = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        (directory / _OWNER_FILE).write_text(str(os.getpid()))
        (directory / "storage").mkdir()
        self._port = port = free_port()
        self._dicom_port = dicom_port = free_port()
        config_path = directory / "config.yaml"
        config_path.write_text(json.dumps(self.config(port, dicom_port, directory), indent=1))
        with open(directory / "server.log", "wb") as log:
            self._process = subprocess.Popen(
                [str(installation.executable), "run", "-c", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
                start_new_session=True,
                preexec_fn=parent_death_signal(),
            )
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            exited = self._process.poll() is not None
            if exited or "address already in use" in self.log_tail(200).lower():
                if last_attempt:
                    how = f"exited with status {self._process.returncode}" if exited else "failed"
                    raise TinyPacsUnavailableError(
                        f"tiny_pacs {how} during startup; last log lines:\n{self.log_tail()}"
                    )
                self._stop_locked()  # most likely a port was taken meanwhile: retry
                return False
            try:
                status, body, _ = request(
                    f"{self.dicomweb_url}/studies?limit=1", headers=self.headers, timeout=5
                )
            except OSError as exc:
                last = repr(exc)
            else:
                if status in (200, 204):
                    return True
                last = f"HTTP {status} {body[:200]!r}"
            time.sleep(0.05)
        raise TinyPacsUnavailableError(
            f"tiny_pacs did not answer {PREFIX}/studies within {self.startup_timeout:.0f} s "
            f"(last: {last}); last log lines:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``stop_timeout``) and delete its directory."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            try:
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(self.stop_timeout)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait(10)
            finally:
                with _RUNNING_LOCK:
                    _RUNNING.discard(self)
        directory, self._dir = self._dir, None
        self._port = self._dicom_port = None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    # -- content ---------------------------------------------------------------------

    def stow(self, datasets: Iterable[Dataset | bytes], *, batch: int = 50) -> StowReport:
        """Upload ``datasets`` with :func:`stow_rs` (with this server's token)."""
        return stow_rs(self.dicomweb_url, datasets, headers=self.headers, batch=batch)

    def count(self, path: str = "/studies") -> int:
        """Count the results of the QIDO-RS listing ``path`` (paged past tiny_pacs' 1,000 cap)."""
        page, total = 10_000, 0
        for _ in range(100):  # tiny_pacs' offset stops at 100,000 anyway
            sep = "&" if "?" in path else "?"
            url = f"{self.dicomweb_url}{path}{sep}limit={page}&offset={total}"
            status, body, _ = request(url, headers=self.headers, timeout=120)
            if status == 204:
                return total
            if status != 200:
                raise TinyPacsError(f"GET {url} answered HTTP {status}: {body[:200]!r}")
            found = len(json.loads(body))
            total += found
            if found < page:
                return total
        raise TinyPacsError(f"{path} holds more than {total} results: too many to count")


# --------------------------------------------------------------------------------------
# STOW-RS
# --------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StowReport:
    """What :func:`stow_rs` stored: instances, distinct studies, requests and seconds taken."""

    instances: int
    studies: int
    requests: int
    elapsed: float


def _parts(datasets: Iterable[Dataset | bytes]) -> Iterator[tuple[bytes, str | None]]:
    from aqido.testing.orthanc import encode_dataset

    for item in datasets:
        if isinstance(item, bytes | bytearray):
            yield bytes(item), None
        else:
            yield encode_dataset(item), str(item.StudyInstanceUID)


def stow_rs(
    url: str,
    datasets: Iterable[Dataset | bytes],
    *,
    headers: Mapping[str, str] | None = None,
    batch: int = 50,
    timeout: float = 120.0,
) -> StowReport:
    """Upload DICOM instances by STOW-RS (``POST {url}/studies``), ``batch`` per request.

    ``url`` is the DICOMweb root.  ``datasets`` yields pydicom Datasets
    (encoded as Part 10 with Explicit VR Little Endian meta when missing) or
    Part 10 bytes.  Requests go one at a time: tiny_pacs answers concurrent
    STOW-RS requests with failures (SQLite table locks).  Raises
    :class:`StowError` unless every request answers 200 and references every
    instance it carried, with no failed SOP instances.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    endpoint = f"{url.rstrip('/')}/studies"
    started = time.monotonic()
    instances = requests = 0
    studies: set[str] = set()
    pending: list[bytes] = []

    def post() -> None:
        nonlocal instances, requests
        boundary = uuid.uuid4().hex
        body = bytearray()
        for data in pending:
            body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            body += data + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        status, answer, _ = request(
            endpoint,
            data=bytes(body),
            headers={
                **(headers or {}),
                "Content-Type": (
                    f'multipart/related; type="application/dicom"; boundary={boundary}'
                ),
                "Accept": "application/dicom+json",
            },
            timeout=timeout,
        )
        requests += 1
        if status != 200:
            raise StowError(f"STOW-RS to {endpoint} answered HTTP {status}: {answer[:300]!r}")
        result = json.loads(answer)
        stored = result.get("00081199", {}).get("Value", [])
        failed = result.get("00081198", {}).get("Value", [])
        if failed or len(stored) != len(pending):
            raise StowError(
                f"STOW-RS to {endpoint} stored {len(stored)} of {len(pending)} instances "
                f"({len(failed)} failed)"
            )
        instances += len(stored)
        pending.clear()

    for data, study in _parts(datasets):
        pending.append(data)
        if study is not None:
            studies.add(study)
        if len(pending) >= batch:
            post()
    if pending:
        post()
    return StowReport(
        instances=instances,
        studies=len(studies),
        requests=requests,
        elapsed=time.monotonic() - started,
    )

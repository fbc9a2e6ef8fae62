"""A real Orthanc + DICOMweb server on 127.0.0.1, for integration tests.

:class:`OrthancServer` starts Orthanc (Debian packages ``orthanc`` and
``orthanc-dicomweb``) as a child process with a throw-away configuration and
storage in a temporary directory, waits until QIDO-RS answers, and stops it by
PID afterwards::

    from aqido.testing.orthanc import OrthancServer

    with OrthancServer(users={"alice": "secret"}) as orthanc:
        orthanc.seed(datasets)               # pydicom Datasets, uploaded via POST /instances
        print(orthanc.dicomweb_url)          # http://127.0.0.1:PORT/dicom-web

Details that matter:

* The binary and plugin are looked up in the usual Debian locations (override
  with ``AQIDO_ORTHANC_BINARY`` / ``AQIDO_ORTHANC_DICOMWEB_PLUGIN``).
* **System packages are never installed unless asked explicitly**:
  ``OrthancServer(install=True)``, the environment variable
  ``AQIDO_INSTALL_SERVERS=1`` (``nox -s integration`` and CI set it), or a
  direct call of :func:`install_orthanc`.  Then, when the process runs as root
  on a system with ``apt-get``, the packages are installed (``apt-get update``
  first, ``DEBIAN_FRONTEND=noninteractive``, a temporary
  ``/usr/sbin/policy-rc.d`` so that no system service starts).  Otherwise
  :class:`OrthancUnavailableError` says what to do.
* The server is loopback-only: Orthanc has no bind-address option, so the
  config sets ``RemoteAccessAllowed: false`` and disables the DICOM (DIMSE)
  server.  The HTTP port is a free one picked at start.
* Nothing is left behind: :meth:`OrthancServer.stop` sends SIGTERM, then
  SIGKILL after ``stop_timeout``, and deletes the temporary directory.  It runs
  on every failure inside :meth:`~OrthancServer.start`, on ``__exit__``, and at
  interpreter exit for servers still running; on Linux the child also gets
  SIGTERM if the thread that started it dies (``PR_SET_PDEATHSIG``, only set
  when started from the main thread).  A launcher killed outright cannot
  delete its directory; the next :meth:`~OrthancServer.start` on the machine
  deletes directories whose owner process is gone.

This module uses only the standard library for HTTP (no aiohttp, no requests),
so it works from synchronous pytest fixtures.

It is one module because a launcher is read top to bottom by whoever debugs a
failed start: finding or installing the server, its configuration, starting,
waiting, loading data and stopping, in that order, for one server.
"""

from __future__ import annotations

import atexit
import base64
import glob
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
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


#: Debian packages that provide the server and the DICOMweb plugin.
PACKAGES = ("orthanc", "orthanc-dicomweb")

BINARY_ENV = "AQIDO_ORTHANC_BINARY"
PLUGIN_ENV = "AQIDO_ORTHANC_DICOMWEB_PLUGIN"

_BINARY_CANDIDATES = (
    "/usr/sbin/Orthanc",
    "/usr/bin/Orthanc",
    "/usr/local/sbin/Orthanc",
    "/usr/local/bin/Orthanc",
)
_PLUGIN_PATTERNS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/x86_64-linux-gnu/orthanc/libOrthancDicomWeb.so*",
    "/usr/lib/aarch64-linux-gnu/orthanc/libOrthancDicomWeb.so*",
)
_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


# A urllib opener that ignores http_proxy & co: the server is always on 127.0.0.1.
class OrthancError(RuntimeError):
    """Base class of the errors raised by this launcher (not part of :class:`aqido.QidoError`)."""


class OrthancUnavailableError(OrthancError):
    """Orthanc or its DICOMweb plugin cannot be found, installed or started.

    The message says why and, when the server got as far as starting, ends
    with the tail of its log.
    """


class SeedError(OrthancError):
    """Uploading datasets failed, or the server's counts do not match what was uploaded."""


# --------------------------------------------------------------------------------------
# Finding and installing Orthanc
# --------------------------------------------------------------------------------------


def find_orthanc() -> tuple[str, str] | None:
    """Return ``(binary, dicomweb_plugin)`` paths if both exist, else ``None``.

    ``AQIDO_ORTHANC_BINARY`` and ``AQIDO_ORTHANC_DICOMWEB_PLUGIN``, when set,
    are the only candidates for their part (a wrong override is not silently
    replaced by a system copy).
    """
    binary_env = os.environ.get(BINARY_ENV)
    binaries = [binary_env] if binary_env else [shutil.which("Orthanc"), *_BINARY_CANDIDATES]
    binary = next((b for b in binaries if b and os.path.isfile(b) and os.access(b, os.X_OK)), None)

    plugin_env = os.environ.get(PLUGIN_ENV)
    plugins = (
        [plugin_env]
        if plugin_env
        else [p for pattern in _PLUGIN_PATTERNS for p in sorted(glob.glob(pattern))]
    )
    plugin = next((p for p in plugins if p and os.path.isfile(p)), None)
    if binary is None or plugin is None:
        return None
    return binary, plugin


def install_orthanc(*, timeout: float = 900.0) -> tuple[str, str]:
    """Install the Debian packages ``orthanc`` and ``orthanc-dicomweb``; return their paths.

    Calling it is the explicit request to install (the launcher itself only
    calls it with ``install=True`` or ``AQIDO_INSTALL_SERVERS=1``).
    Only as root on a system with ``apt-get``; otherwise raises
    :class:`OrthancUnavailableError` with instructions.  Runs ``apt-get
    update`` and ``apt-get install -y`` non-interactively.  A temporary
    ``/usr/sbin/policy-rc.d`` (exit 101) stops the packages' maintainer
    scripts from starting a system-wide Orthanc service on port 8042; an
    existing policy file is left alone.  Concurrent callers on the same
    machine serialise on a lock file and install only once.
    """
    found = find_orthanc()
    if found is not None:
        return found
    apt_get = shutil.which("apt-get")
    hint = (
        "install the Debian packages with `apt-get install orthanc orthanc-dicomweb`, "
        f"or point {BINARY_ENV} and {PLUGIN_ENV} at an Orthanc binary and its DICOMweb plugin"
    )
    for env in (BINARY_ENV, PLUGIN_ENV):
        if os.environ.get(env) and not os.path.isfile(os.environ[env]):
            raise OrthancUnavailableError(f"{env}={os.environ[env]} does not exist")
    if os.name != "posix" or os.geteuid() != 0:
        raise OrthancUnavailableError(
            f"Orthanc + DICOMweb plugin not found and not running as root: {hint}"
        )
    if apt_get is None:
        raise OrthancUnavailableError(f"Orthanc + DICOMweb plugin not found and no apt-get: {hint}")

    import fcntl  # POSIX only; imported here so that the module imports everywhere

    lock_path = Path(tempfile.gettempdir()) / "aqido-orthanc-install.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            found = find_orthanc()  # another process may have installed it meanwhile
            if found is not None:
                return found
            _apt_install(apt_get, timeout)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    found = find_orthanc()
    if found is None:
        raise OrthancUnavailableError(
            f"installed {' '.join(PACKAGES)} but the Orthanc binary or the DICOMweb plugin "
            f"is still not where expected: {hint}"
        )
    return found


def _apt_install(apt_get: str, timeout: float) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    created_policy = False
    if not _POLICY_RC_D.exists():
        _POLICY_RC_D.write_text(
            "#!/bin/sh\n# temporary, written by aqido.testing.orthanc\nexit 101\n"
        )
        _POLICY_RC_D.chmod(0o755)
        created_policy = True
    deadline = time.monotonic() + timeout
    try:
        for args in (
            [apt_get, "update"],
            [
                apt_get,
                "-o",
                "DPkg::Lock::Timeout=300",
                "install",
                "-y",
                "--no-install-recommends",
                *PACKAGES,
            ],
        ):
            try:
                done = subprocess.run(
                    args,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=max(1.0, deadline - time.monotonic()),
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise OrthancUnavailableError(
                    f"`{' '.join(args)}` did not finish within {timeout:.0f} s"
                ) from exc
            if done.returncode != 0:
                raise OrthancUnavailableError(
                    f"`{' '.join(args)}` failed with exit status {done.returncode}:\n"
                    + tail(done.stdout)
                )
    finally:
        if created_policy:
            _POLICY_RC_D.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# Small HTTP helpers (stdlib only)
# --------------------------------------------------------------------------------------


def _auth_header(auth: tuple[str, str] | None) -> dict[str, str]:
    if auth is None:
        return {}
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def _request(
    url: str,
    *,
    auth: tuple[str, str] | None = None,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    """Send one request; return ``(status, body)`` (HTTP errors are returned, not raised)."""
    status, body, _ = request(
        url, data=data, headers={**_auth_header(auth), **(headers or {})}, timeout=timeout
    )
    return status, body


# --------------------------------------------------------------------------------------
# Process lifetime
# --------------------------------------------------------------------------------------

_RUNNING: set[OrthancServer] = set()
_RUNNING_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:  # pragma: no cover - runs at interpreter exit
    with _RUNNING_LOCK:
        servers = list(_RUNNING)
    for server in servers:
        server.stop()


_DIR_PREFIX = "aqido-orthanc-"
_OWNER_FILE = "owner.pid"


@attrs.define(eq=False)
class OrthancServer:
    """A throw-away Orthanc + DICOMweb server on 127.0.0.1, started as a child process.

    Use it as a context manager (``with OrthancServer() as orthanc:``) or call
    :meth:`start` and :meth:`stop` (both idempotent).  Options:

    * ``users``: ``{"name": "password"}`` turns HTTP basic auth on; every
      request without valid credentials then gets 401.
    * ``limit_find_results`` / ``limit_find_instances``: Orthanc's
      ``LimitFindResults`` (studies, series) and ``LimitFindInstances``; 0 means
      no cap.  Orthanc answers a capped query with cap+1 items and no warning.
    * ``keep_alive``: HTTP keep-alive (Orthanc closes idle connections after 1 s).
    * ``extra_config``: more top-level configuration keys, merged last.
    * ``install``: install the Debian packages when missing (root only):
      ``True`` yes, ``False`` never, ``None`` (default) only when the
      environment variable ``AQIDO_INSTALL_SERVERS`` is ``1``.
    * ``startup_timeout``: seconds to wait for ``/dicom-web/studies`` to answer.
    * ``stop_timeout``: seconds between SIGTERM and SIGKILL.
    """

    users: Mapping[str, str] | None = None
    limit_find_results: int = 0
    limit_find_instances: int = 0
    keep_alive: bool = True
    extra_config: Mapping[str, Any] | None = None
    install: bool | None = None
    startup_timeout: float = 60.0
    stop_timeout: float = 15.0
    name: str = "AQIDO"

    _process: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False)
    _dir: Path | None = attrs.field(default=None, init=False)
    _port: int | None = attrs.field(default=None, init=False)
    _version: str | None = attrs.field(default=None, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    # -- addresses and state ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The HTTP port (only while running)."""
        if self._port is None:
            raise OrthancError("the Orthanc server is not running")
        return self._port

    @property
    def url(self) -> str:
        """Orthanc's REST root, e.g. ``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb (QIDO-RS) root, ``{url}/dicom-web`` (no trailing slash)."""
        return f"{self.url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str] | None:
        """The first configured ``(user, password)``, or ``None`` without auth."""
        if not self.users:
            return None
        user, password = next(iter(self.users.items()))
        return user, password

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def version(self) -> str | None:
        """Orthanc's version as reported by ``/system`` (after :meth:`start`)."""
        return self._version

    @property
    def directory(self) -> Path | None:
        """The temporary directory holding config, storage and log (while running)."""
        return self._dir

    @property
    def log_path(self) -> Path | None:
        """Orthanc's log file (while running)."""
        return self._dir / "orthanc.log" if self._dir is not None else None

    def log_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of Orthanc's log ("" if there is none)."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return tail(path.read_text(errors="replace"), lines)

    def config(self, port: int, storage: Path, plugin: str) -> dict[str, Any]:
        """Return the Orthanc configuration used for ``port`` (loopback-only, no DIMSE)."""
        config: dict[str, Any] = {
            "Name": f"{self.name}_{port}",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "Plugins": [plugin],
            "HttpServerEnabled": True,
            "HttpPort": port,
            "HttpDescribeErrors": True,
            "HttpThreadsCount": 20,
            "KeepAlive": self.keep_alive,
            "TcpNoDelay": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": dict(self.users or {}),
            "DicomServerEnabled": False,
            "DicomAet": self.name,
            "DefaultEncoding": "Utf8",
            "LimitFindResults": self.limit_find_results,
            "LimitFindInstances": self.limit_find_instances,
            "StorageAccessOnFind": "Always",
            "SaveJobs": False,
            "StoreMD5ForAttachments": False,
            "OverwriteInstances": False,
            "ExecuteLuaEnabled": False,
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": True,
                "WadoRoot": "/wado",
                "Host": f"127.0.0.1:{port}",
                "Ssl": False,
            },
        }
        config.update(self.extra_config or {})
        return config

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

    def start(self) -> OrthancServer:
        """Start the server and wait until QIDO-RS answers; return ``self``.

        Raises :class:`OrthancUnavailableError` (with the log tail) if the
        binary is missing and cannot be installed, or the server does not come
        up within ``startup_timeout``.  On any failure the process is stopped
        and the temporary directory removed before the error propagates.
        """
        with self._lock:
            if self._process is not None:
                return self
            found = find_orthanc()
            if found is None:
                if not install_requested(self.install):
                    raise OrthancUnavailableError(
                        "Orthanc + DICOMweb plugin not found; install them (`apt-get install "
                        "orthanc orthanc-dicomweb`), or let the launcher do it as root with "
                        f"install=True or {INSTALL_ENV}=1"
                    )
                found = install_orthanc()
            binary, plugin = found
            started = False
            try:
                for attempt in range(3):
                    if self._launch(binary, plugin, last_attempt=attempt == 2):
                        break
                started = True
            finally:
                if not started:
                    self._stop_locked()
            return self

    def _launch(self, binary: str, plugin: str, *, last_attempt: bool) -> bool:
        """Start one process and wait for it; False if it exited early (e.g. port taken)."""
        sweep_orphans(_DIR_PREFIX, _OWNER_FILE)
        self._dir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        (self._dir / _OWNER_FILE).write_text(str(os.getpid()))
        storage = self._dir / "db"
        storage.mkdir()
        self._port = port = free_port()
        config_path = self._dir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(port, storage, plugin), indent=2))
        log_path = self._dir / "orthanc.log"
        with open(log_path, "wb") as log:
            self._process = subprocess.Popen(
                [binary, str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                start_new_session=True,
                preexec_fn=parent_death_signal(),
            )
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self.log_tail()
                if last_attempt:
                    raise OrthancUnavailableError(
                        f"Orthanc exited with status {self._process.returncode} during "
                        f"startup; last log lines:\n{tail}"
                    )
                self._stop_locked()  # most likely the port was taken meanwhile: retry
                return False
            try:
                status, body = _request(
                    f"{self.dicomweb_url}/studies?limit=1", auth=self.auth, timeout=5
                )
            except OSError as exc:
                last = repr(exc)
            else:
                if status == 200:
                    self._version = self._read_version()
                    return True
                last = f"HTTP {status} {body[:200]!r}"
            time.sleep(0.05)
        raise OrthancUnavailableError(
            f"Orthanc did not answer /dicom-web/studies within {self.startup_timeout:.0f} s "
            f"(last: {last}); last log lines:\n{self.log_tail()}"
        )

    def _read_version(self) -> str | None:
        status, body = _request(f"{self.url}/system", auth=self.auth, timeout=5)
        if status != 200:
            return None
        version = json.loads(body).get("Version")
        return str(version) if version is not None else None

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
        self._port = None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    # -- content ---------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """Return Orthanc's ``/statistics`` (``CountStudies``, ``CountInstances``, ...)."""
        return _statistics(self.url, self.auth)

    def seed(self, datasets: Iterable[Dataset | bytes], *, workers: int = 4) -> SeedReport:
        """Upload ``datasets`` with :func:`seed_orthanc` using this server's credentials."""
        return seed_orthanc(self.url, datasets, auth=self.auth, workers=workers)


# --------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SeedReport:
    """What :func:`seed_orthanc` uploaded and what the server counts afterwards.

    ``studies``, ``series`` and ``instances`` are the distinct resources the
    upload touched (as Orthanc identified them); ``stored`` the instances that
    were new, ``already_stored`` those the server had before.  ``statistics``
    is ``/statistics`` after the upload.
    """

    studies: int
    series: int
    instances: int
    stored: int
    already_stored: int
    statistics: Mapping[str, Any]
    elapsed: float


def _statistics(url: str, auth: tuple[str, str] | None) -> dict[str, Any]:
    status, body = _request(f"{url.rstrip('/')}/statistics", auth=auth)
    if status != 200:
        raise SeedError(f"GET /statistics answered HTTP {status}: {body[:200]!r}")
    result: dict[str, Any] = json.loads(body)
    return result


def encode_dataset(ds: Dataset) -> bytes:
    """Return ``ds`` as DICOM Part 10 bytes (adds Explicit VR Little Endian meta if absent)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        meta = FileMetaDataset(meta) if meta is not None else FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta = meta
    buffer = io.BytesIO()
    try:
        dcmwrite(buffer, ds, enforce_file_format=True)
    except TypeError:  # pragma: no cover - pydicom < 3
        dcmwrite(buffer, ds, write_like_original=False)
    return buffer.getvalue()


def _encoded(datasets: Iterable[Dataset | bytes]) -> Iterator[bytes]:
    for item in datasets:
        yield bytes(item) if isinstance(item, bytes | bytearray) else encode_dataset(item)


def seed_orthanc(
    url: str,
    datasets: Iterable[Dataset | bytes],
    *,
    auth: tuple[str, str] | None = None,
    workers: int = 4,
    timeout: float = 60.0,
) -> SeedReport:
    """Upload DICOM instances to Orthanc (``POST /instances``) concurrently, then check counts.

    ``url`` is Orthanc's REST root (not the ``/dicom-web`` root).  ``datasets``
    yields pydicom Datasets (encoded with :func:`encode_dataset`) or Part 10
    bytes; they are encoded in this thread while ``workers`` threads upload.

    Raises :class:`SeedError` if any upload fails (an error status, a network
    error, an answer cut short or not Orthanc's JSON), or if ``/statistics``
    afterwards disagrees with what was uploaded: the instance count must have
    grown by exactly the number of new instances, and on a server that was
    empty before, the study/series/instance counts must equal the distinct
    resources uploaded.
    """
    base = url.rstrip("/")
    before = _statistics(base, auth)
    started = time.monotonic()
    studies: set[str] = set()
    series: set[str] = set()
    instances: set[str] = set()
    statuses: dict[str, int] = {}
    errors: list[str] = []
    gate = threading.BoundedSemaphore(workers * 2)
    record_lock = threading.Lock()

    def upload(data: bytes) -> None:
        status, body = _request(
            f"{base}/instances",
            auth=auth,
            data=data,
            headers={"Content-Type": "application/dicom"},
            timeout=timeout,
        )
        with record_lock:
            if status != 200:
                errors.append(f"HTTP {status}: {body[:200]!r}")
                return
            answer = json.loads(body)
            for item in answer if isinstance(answer, list) else [answer]:
                statuses[item.get("Status", "?")] = statuses.get(item.get("Status", "?"), 0) + 1
                instances.add(item["ID"])
                series.add(item["ParentSeries"])
                studies.add(item["ParentStudy"])

    def release(done: Future[None]) -> None:
        gate.release()
        if (exc := done.exception()) is not None:  # any: an OSError, a cut or odd answer
            with record_lock:
                errors.append(repr(exc))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aqido-seed") as pool:
        for data in _encoded(datasets):
            gate.acquire()
            pool.submit(upload, data).add_done_callback(release)
            if errors:
                break
    if errors:
        raise SeedError(
            f"{len(errors)} upload(s) to {base}/instances failed; first: " + "; ".join(errors[:3])
        )
    after = _statistics(base, auth)
    stored = statuses.get("Success", 0)
    report = SeedReport(
        studies=len(studies),
        series=len(series),
        instances=len(instances),
        stored=stored,
        already_stored=statuses.get("AlreadyStored", 0),
        statistics=after,
        elapsed=time.monotonic() - started,
    )
    problems = []
    if after["CountInstances"] - before["CountInstances"] != stored:
        problems.append(
            f"CountInstances went from {before['CountInstances']} to "
            f"{after['CountInstances']} but {stored} new instances were stored"
        )
    if before["CountInstances"] == 0:
        for key, expected in (
            ("CountStudies", report.studies),
            ("CountSeries", report.series),
            ("CountInstances", report.instances),
        ):
            if after[key] != expected:
                problems.append(f"{key} is {after[key]}, expected {expected}")
    if problems:
        raise SeedError("seeding did not add up: " + "; ".join(problems))
    return report

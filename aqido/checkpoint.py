"""``CrawlCheckpoint``: a crawl's results in a JSONL file that a later run can resume.

The file is the crawl's output *and* its state.  One JSON object per line:

- a header, written once when the file is created::

      {"aqido_crawl": 1, "query": "/studies?StudyDate=20240101-", "depth": "INSTANCE",
       "server": "https://pacs.example/dicom-web"}

  (``"server"``: the service root, without credentials, query or fragment;
  files written before aqido recorded it have none);

- one line per study, written only when the study's whole subtree has been
  fetched (so a study in the file is always complete)::

      {"StudyInstanceUID": "1.2...", "study": {<DICOM JSON>},
       "series": [{"series": {<DICOM JSON>}, "instances": [{<DICOM JSON>}, ...]}, ...]}

  (``"series": []`` at depth STUDY; ``"instances": []`` at depth SERIES; the
  same study line as the ``aqido crawl`` CLI's files, whose readers also
  accept a missing ``"instances"``);

- an end record each time a run finishes (not when it is killed)::

      {"end": {"complete": true, "studies": 2040, "failures": []}}

  with ``"failures"`` as ``[{"query": "/studies/1.2/series", "error": "ServerError: ..."}]``.

Resuming (opening an existing file) reads every complete line, drops a last
line cut short by a kill, checks that the header names the same query, depth
and server, and returns the StudyInstanceUIDs already written: the crawl lists
the studies again and skips those, so the file ends up with exactly the studies
of a clean run, each once.  If the last end record says ``complete``, there is
nothing left to do.

Durability: lines are flushed as they are written (a killed process loses
nothing written), and the file is synced to disk (``fsync``, and its directory)
when a run writes its end record, so a run that reports its end, complete or
not, has its whole file on disk also after a power loss or a kernel crash.  A
line is not synced by itself: that would be a disk flush per study, and what a
crash loses in between is studies the next run fetches again (the file stays
readable: the line being written when the power went is cut short, and a
cut-short last line is dropped).  ``fsync=True`` also syncs each line, for a
crawl whose every study must survive a power loss as soon as it is yielded.

Safety:

- **Nothing is dropped silently.**  Only a last line without its newline (a
  write cut short by a kill) is dropped.  Any other line that is not a valid
  record (not JSON, too deeply nested, not UTF-8 or a lone surrogate, not an
  object, a header, study or end record with the wrong types, a second header,
  a header of another format version) raises :class:`~aqido.errors.CheckpointError`
  naming the line, and so do lines that do not fit the others: a study line whose
  ``StudyInstanceUID`` is not its study's, a study written twice, an end record
  counting more studies than the lines before it (a resume would skip or repeat
  studies without a word); so does any line
  :meth:`read_studies` cannot turn into results.  A line is read as strictly as
  a response body (:func:`aqido._json.strict_loads`): ``NaN``, ``Infinity`` and
  numbers out of a double's range are not JSON (aqido never writes them), and
  an integer beyond 64 bits reads as a float.  (A JSON object of a kind this
  version does not know is skipped: later versions may add records.)
- **One server.**  Resuming against another server (a crawl of archive A
  completed with archive B's studies) raises ``CheckpointError``, as does a
  file that records no server (an older aqido's); ``force=True`` (CLI
  ``--force``) resumes anyway, for an archive that moved.
- **One writer.**  :meth:`~CrawlCheckpoint.open` takes an exclusive lock
  (``filelock`` on ``FILE.lock`` next to the file, left in place) until
  :meth:`~CrawlCheckpoint.close`: a second writer fails at once with
  ``CheckpointError`` instead of interleaving its lines (saying whether the
  holder is this process: an earlier crawl not closed).  Reading needs no lock.
  A lock that cannot be taken or released (a full disk, a read-only
  filesystem) is a ``CheckpointError`` naming the lock file, as any failed
  write is one naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from aqido._files import note_released, sync_directory, sync_file, take_lock, write_failed
from aqido._json import dumps
from aqido.errors import CheckpointError, CrawlFailure, QidoError
from aqido.query import BaseQuery, QueryLevel

if TYPE_CHECKING:  # pragma: no cover
    from filelock import BaseFileLock

    from aqido.results import Study

#: The format version written in the header (``"aqido_crawl": 1``).
CHECKPOINT_VERSION = 1
_STUDY_UID = "0020000D"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _file_lock(path: Path) -> BaseFileLock:
    """The exclusive lock of a checkpoint (or plan) ``path``: ``FILE.lock``, not waited for.

    filelock is imported here, when a checkpoint is first written, not with
    aqido; and a test can give a checkpoint a lock that fails (a full disk)
    without touching filelock's other users in the process.
    """
    from filelock import FileLock

    return FileLock(path.with_name(path.name + ".lock"), timeout=0)


def _study_uid(study_json: dict[str, Any]) -> str | None:
    element = study_json.get(_STUDY_UID)
    values = element.get("Value") if isinstance(element, dict) else None
    if isinstance(values, list) and values and isinstance(values[0], str):
        return values[0].rstrip("\x00 ")
    return None


def _sequence_error(record: dict[str, Any], number: int, first_line: dict[str, int]) -> str | None:
    """Why a valid record does not fit the lines before it (``None``: it does).

    ``first_line`` maps the UID of each study line read so far to its line (and
    is updated).  A study written twice (a damaged or concatenated file) and an
    end record counting more studies than the lines before it (lines lost) are
    refused: a resume would skip or repeat studies without a word.
    """
    if "study" in record:
        uid = record.get("StudyInstanceUID") or _study_uid(record["study"])
        assert uid  # _record_error refused a study line without one
        first = first_line.setdefault(uid, number)
        if first != number:
            return f"study {uid} is written again (first on line {first})"
    elif "end" in record:
        counted = record["end"].get("studies")
        if type(counted) is int and counted > len(first_line):
            lines = len(first_line)
            return (
                f"the end record counts {counted} studies, but the file holds {lines} study "
                f"line{'' if lines == 1 else 's'} before it: lines were lost"
            )
    return None


def checkpoint_server(url: str) -> str:
    """The server a checkpoint records: ``url`` without userinfo, query or fragment.

    Scheme and host are lower-cased, a default port and a trailing ``/`` are
    dropped, so two spellings of one service root compare equal.
    """
    try:
        parts = urlsplit(str(url))
    except ValueError:  # not a URL at all (a crafted header): compared as it is
        return str(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    scheme = parts.scheme.lower()
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), "", ""))


def _is_dict_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _record_error(record: dict[str, Any], number: int) -> str | None:
    """Why a parsed line is not a valid checkpoint record (``None``: it is one).

    The header is optional for reading (a file of study lines, filtered by
    another tool, reads fine); :meth:`CrawlCheckpoint.open` requires it.
    """
    if number == 1 and "aqido_crawl" in record:
        version = record["aqido_crawl"]
        if type(version) is not int:
            return "not an aqido crawl checkpoint ('aqido_crawl' is not a number)"
        if version != CHECKPOINT_VERSION:
            return (
                f"checkpoint format {version}, not {CHECKPOINT_VERSION}: written by another "
                "version of aqido (or not by aqido); use that version, or start a new file"
            )
        for key in ("query", "depth"):
            if not isinstance(record.get(key), str):
                return f"the header's {key!r} is not a string"
        if "server" in record and not isinstance(record["server"], str):
            return "the header's 'server' is not a string"
        return None
    if "study" in record:
        if not isinstance(record["study"], dict):
            return "'study' is not a JSON object"
        uid = record.get("StudyInstanceUID")
        if uid is not None and not isinstance(uid, str):
            return "'StudyInstanceUID' is not a string"
        own = _study_uid(record["study"])
        if uid and own and uid != own:  # a resume would skip one and fetch the other again
            return f"'StudyInstanceUID' {uid!r} is not its study's ({own!r})"
        if not (uid or own):
            return "a study line without a StudyInstanceUID"
        series = record.get("series", [])
        if not _is_dict_list(series):
            return "'series' is not a list of JSON objects"
        for entry in series:
            if not isinstance(entry.get("series"), dict):
                return "a series entry has no 'series' object"
            if not _is_dict_list(entry.get("instances", [])):
                return "a series entry's 'instances' is not a list of JSON objects"
        return None
    if "end" in record:
        end = record["end"]
        if not isinstance(end, dict) or not isinstance(end.get("complete", False), bool):
            return "'end' is not an end record"
        return None
    if "aqido_crawl" in record:
        return "a header that is not on the first line"
    return None  # a record of a kind this version does not know: skipped, as the format says


class CrawlCheckpoint:
    """A JSONL crawl output file that records progress and lets a crawl resume.

    Use it through ``client.crawl(query, checkpoint="out.jsonl")`` (a path or
    a ``CrawlCheckpoint``); run the same call again after an interruption to
    finish the crawl.  :meth:`read_studies` loads the file back as ``Study``
    objects with their series and instances attached.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, fsync: bool = False, force: bool = False
    ) -> None:
        self.path = Path(path)
        self.fsync = fsync
        #: Resume even if the file records another server, or none (an older aqido's file).
        self.force = force
        self.done: set[str] = set()
        self.finished_complete = False
        self._file: IO[bytes] | None = None  # unbuffered: a failed line leaves nothing to flush
        self._size = 0  # the file's length after its last whole line
        self._lock: BaseFileLock | None = None

    def __repr__(self) -> str:
        return f"CrawlCheckpoint({str(self.path)!r}, done={len(self.done)})"

    # --- reading ------------------------------------------------------------------------

    @staticmethod
    def _records(path: Path) -> tuple[list[dict[str, Any]], int]:
        """Every complete record, and the byte length of the file without a cut-short last line.

        Raises :class:`CheckpointError` for any complete line that is not a valid record.
        """
        from aqido._json import LoneSurrogateError, strict_loads_nested

        records: list[dict[str, Any]] = []
        good = 0
        first_line: dict[str, int] = {}  # each study's UID → its line
        with path.open("rb") as file:
            for number, raw in enumerate(file, start=1):
                if not raw.endswith(b"\n"):
                    break  # the last line, cut short by a kill: dropped
                problem: str | None
                try:  # a byte order mark (an editor's) is read past
                    record = strict_loads_nested(raw[3:] if raw[:3] == b"\xef\xbb\xbf" else raw)
                except RecursionError:
                    problem = "not a record (JSON nested too deeply)"
                except UnicodeDecodeError:
                    problem = "not a JSON record (not UTF-8 text)"
                except json.JSONDecodeError as exc:
                    problem = f"not a JSON record ({exc.msg} at column {exc.colno})"
                except LoneSurrogateError:
                    problem = "not a JSON record (a lone surrogate: not UTF-8 text)"
                except ValueError as exc:  # NaN, a number out of range or too long to convert
                    problem = f"not a JSON record ({exc})"
                else:
                    problem = (
                        _record_error(record, number)
                        if isinstance(record, dict)
                        else f"not a JSON object but {type(record).__name__}"
                    )
                    if problem is None:
                        problem = _sequence_error(record, number, first_line)
                if problem is not None:
                    if number == 1 and not problem.startswith("not an aqido"):
                        problem = f"not an aqido crawl checkpoint: {problem}"
                    raise CheckpointError(problem, path=path, line=number)
                records.append(record)
                good += len(raw)
        return records, good

    @classmethod
    def read_records(cls, path: str | os.PathLike[str]) -> list[dict[str, Any]]:
        """Every complete record (header, study lines, end records) of a checkpoint file."""
        return cls._records(Path(path))[0]

    @classmethod
    def read_studies(cls, path: str | os.PathLike[str]) -> Iterator[Study]:
        """Yield the studies of a checkpoint file as ``Study`` objects, subtrees attached."""
        import attrs

        from aqido.results import Instance, Series, Study

        for number, record in enumerate(cls._records(Path(path))[0], start=1):
            if "study" not in record:
                continue
            try:
                series = []
                for entry in record.get("series", ()):
                    instances = [Instance.from_json(i) for i in entry.get("instances", ())]
                    series.append(
                        attrs.evolve(Series.from_json(entry["series"]), instances=instances)
                    )
                study = attrs.evolve(Study.from_json(record["study"]), series=series)
            except QidoError as exc:
                raise CheckpointError(
                    f"not valid DICOM JSON: {exc}", path=path, line=number
                ) from None
            yield study

    # --- writing (used by the crawl) ----------------------------------------------------

    def open(self, query: BaseQuery, depth: QueryLevel, *, server: str | None = None) -> set[str]:
        """Lock the file and open it for appending (creating it and its header if needed).

        ``server``: the service root crawled (the client passes its URL; it is
        recorded without credentials, query or fragment, see
        :func:`checkpoint_server`).  Returns the StudyInstanceUIDs already
        written.  Raises :class:`~aqido.errors.CheckpointError` (a
        ``ValueError``) if another writer holds the file, if a line is damaged,
        or if the file belongs to a crawl of another query or depth, or of
        another server (or none recorded) unless ``force``.  The lock is held
        until :meth:`close`.
        """
        header: dict[str, Any] = {
            "aqido_crawl": CHECKPOINT_VERSION,
            "query": str(query),
            "depth": depth.name,
        }
        if server is not None:
            header["server"] = checkpoint_server(server)
        try:
            self.lock()
            try:
                return self._open(header)
            except BaseException:
                self.close()
                raise
        except OSError as exc:  # a read-only filesystem, a full disk...
            raise write_failed(self.path, exc, "open it for writing") from exc

    def lock(self) -> None:
        """Take the file's exclusive lock (``FILE.lock``) now, or raise CheckpointError.

        :meth:`open` takes it too; call this first to fail before anything else
        is touched (the CLI does, before it replaces a file for ``--overwrite``).
        Held until :meth:`close`; taking it again while held does nothing.
        A path that is not a regular file (``/dev/null``, a FIFO) is a
        CheckpointError, as is another process holding the lock: one chained from filelock's
        ``Timeout``.  An OSError taking it (some filelock versions truncate the
        lock file: a full disk or quota, an I/O error, a read-only filesystem,
        a permission) is one naming the lock file and the OS error, as is one
        creating the file's directory.
        """
        if self._lock is not None and self._lock.is_locked:
            return
        if self.path.exists() and not self.path.is_file():  # before its lock file is made
            raise CheckpointError(
                "not a regular file (a device, a FIFO or a directory): a checkpoint is read "
                "back to resume and synced to disk; give the path of a file",
                path=self.path,
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_failed(self.path.parent, exc, "create the directory") from exc
        lock = _file_lock(self.path)
        take_lock(
            lock,
            self.path,
            here=f"in use by another crawl in this process, which holds its lock "
            f"{lock.lock_file}: one not closed yet (a crawl left with break keeps its "
            "checkpoint until it is closed); close it first: iterate it in "
            "contextlib.aclosing(client.crawl(...)) (QidoRS: contextlib.closing), "
            "or call its aclose() (QidoRS: close())",
            elsewhere="in use by another crawl (another aqido process holds its lock "
            f"{lock.lock_file}); wait for it to finish or stop it",
        )
        self._lock = lock

    def _open(self, header: dict[str, Any]) -> set[str]:
        if self._file is not None:  # opened again (the CLI checks the file, then crawls)
            self._file.close()
            self._file = None
        self.done = set()
        self.finished_complete = False
        records: list[dict[str, Any]] = []
        good = 0
        if self.path.exists() and self.path.stat().st_size > 0:
            records, good = self._records(self.path)
            if not records:
                data = self.path.read_bytes()
                if not self._line(header).encode("utf-8").startswith(data):
                    raise CheckpointError("not an aqido crawl checkpoint", path=self.path)
                # else: this crawl was killed while writing its header; start again
        if records:
            if "aqido_crawl" not in records[0]:
                raise CheckpointError("not an aqido crawl checkpoint (no header)", path=self.path)
            self._check_header(records[0], header)
            for record in records:
                if "study" in record:
                    uid = record.get("StudyInstanceUID") or _study_uid(record["study"])
                    if uid:
                        self.done.add(uid)
                elif "end" in record:  # a record is of one kind: a study line is a study
                    self.finished_complete = bool(record["end"].get("complete"))
            with self.path.open("r+b") as file:
                file.truncate(good)
            self._file = self.path.open("ab", buffering=0)
            self._size = good
        else:
            self._file = self.path.open("wb", buffering=0)
            self._size = 0
            self._write(header)
        return set(self.done)

    def _check_header(self, first: dict[str, Any], header: dict[str, Any]) -> None:
        """Refuse a file of another query, depth or (unless forced) server."""
        if first["query"] != header["query"] or first["depth"] != header["depth"]:
            raise CheckpointError(
                f"holds a crawl of {first['query']!r} at depth {first['depth']}, not "
                f"{header['query']!r} at {header['depth']}; use another file to start a new crawl",
                path=self.path,
            )
        if self.force or "server" not in header:
            return
        if "server" not in first:
            raise CheckpointError(
                "records no server (written by an older aqido); resume with force=True "
                f"(--force) if it was crawled from {header['server']}",
                path=self.path,
            )
        if checkpoint_server(first["server"]) != header["server"]:
            raise CheckpointError(
                f"holds a crawl of {first['server']}, not {header['server']}; resume with "
                "force=True (--force) only if both are the same archive",
                path=self.path,
            )

    @staticmethod
    def _line(record: dict[str, Any]) -> str:
        # allow_nan=False: NaN and Infinity are not JSON, and reading refuses them
        # aqido's dumps: a server's item may nest deeper than json.dumps' recursion reaches
        line = dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return line + "\n"

    def _write(self, record: dict[str, Any]) -> None:
        """Append one line (synced if ``fsync``); if that fails, cut the file back to before it.

        A failure (a full disk...) is a CheckpointError naming the file and the OS error,
        as is a record that reading could not take back (NaN or Infinity, a lone
        surrogate, a value that is not JSON: only a study built by hand can hold one),
        refused before anything is written.
        """
        assert self._file is not None, "open() the checkpoint first"
        try:
            line = self._line(record).encode("utf-8")
        except (ValueError, TypeError) as exc:  # UnicodeEncodeError is a ValueError
            raise CheckpointError(
                f"could not write a record to it: not JSON text it could be read back from ({exc})",
                path=self.path,
            ) from exc
        data = memoryview(line)
        try:
            while data:  # unbuffered: a write may take only part of it (a disk filling up)
                written = self._file.write(data)
                if not written:  # nothing taken and no error: never loop on it
                    raise OSError(errno.EIO, os.strerror(errno.EIO))
                data = data[written:]
            if self.fsync:
                sync_file(self._file)
        except OSError as exc:
            with contextlib.suppress(OSError):  # else the next run drops the cut-short line
                os.ftruncate(self._file.fileno(), self._size)
            raise write_failed(self.path, exc, "write to it") from exc
        self._size += len(line)

    def write_study(self, study: Any) -> None:
        """Append one complete study (with ``.series`` and their ``.instances``)."""
        self._write(
            {
                "StudyInstanceUID": str(study.StudyInstanceUID),
                "study": study.to_json(),
                "series": [
                    {"series": s.to_json(), "instances": [i.to_json() for i in s.instances]}
                    for s in study.series
                ],
            }
        )
        self.done.add(str(study.StudyInstanceUID))

    def write_end(self, studies: int, failures: list[CrawlFailure]) -> None:
        """Append an end record for this run, and sync the file (and its directory) to disk."""
        self._write(
            {
                "end": {
                    "complete": not failures,
                    "studies": studies,
                    "failures": [
                        {"query": str(f.query), "error": f"{type(f.error).__name__}: {f.error}"}
                        for f in failures
                    ],
                }
            }
        )
        assert self._file is not None
        try:
            if not self.fsync:  # else _write synced it
                sync_file(self._file)
            sync_directory(self.path.parent)
        except OSError as exc:
            raise write_failed(self.path, exc, "sync it to disk") from exc

    def close(self) -> None:
        """Close the file and release its lock (idempotent).

        An OSError closing the file (its last bytes could not be written) or
        releasing the lock is a CheckpointError naming the file and the OS
        error; the lock is released either way.
        """
        file, self._file = self._file, None
        lock, self._lock = self._lock, None
        try:
            if file is not None:
                try:
                    file.close()
                except OSError as exc:
                    raise write_failed(self.path, exc, "close it") from exc
        finally:
            if lock is not None:
                note_released(lock)
                try:
                    lock.release(force=True)
                except OSError as exc:
                    raise write_failed(
                        self.path, exc, f"release its lock {lock.lock_file}"
                    ) from exc

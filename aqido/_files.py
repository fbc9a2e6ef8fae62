"""Output files written whole or not at all, and on disk before they count as written.

Used by every writer of a sharded crawl's directory (:mod:`aqido._shards`):
the plan, the Parquet parts (:func:`aqido._arrow.write_parquet`) and the
checkpoints (:class:`aqido.checkpoint.CrawlCheckpoint`).

* **One writer, one temporary file.**  A whole file (a plan, a part) is
  written to a temporary file of its writer's own (created new, mode 0666 less the umask), so
  two runs, processes or Dask tasks writing the same file at once never
  rename each other's half-written file into place.  It is in the target's
  directory (so the rename is atomic) and hidden (``.<name>.<random>.tmp``:
  dataset readers skip it), and removed when the write fails.
* **Synced before it counts.**  :func:`commit` flushes the temporary file's
  data to disk (``fsync``) before renaming it, then syncs the directory, so
  after a power loss or a kernel crash a file under its final name is whole,
  never empty or cut short, and a finished rename is not undone.  A directory
  that cannot be synced (Windows, some network filesystems) is skipped
  silently; any other failure is raised.
* **One writer, one lock.**  A checkpoint and a plan being made are locked
  (:func:`take_lock`); a lock refused says truthfully whether its holder is
  this process (an earlier crawl not closed, a planning still running) or
  another one: the process records the lock files it holds.
* **A failure named.**  A write that fails (a full disk or quota, an I/O
  error, a read-only filesystem) is a :class:`~aqido.errors.CheckpointError`
  naming the file and the OS error (:func:`write_failed`); the temporary
  file is removed, and nothing is left under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from aqido.errors import CheckpointError

if TYPE_CHECKING:  # pragma: no cover
    from filelock import BaseFileLock

_O_BINARY: int = getattr(os, "O_BINARY", 0)  # Windows: no newline translation

#: What a directory's fsync fails with where the platform or filesystem does not do it.
_CANNOT_SYNC_DIRECTORY = frozenset(
    {errno.EINVAL, errno.EBADF, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTSUP}
)


@contextlib.contextmanager
def temporary_for(path: str | os.PathLike[str]) -> Iterator[str]:
    """A new, empty temporary file of this writer's own next to ``path``; removed on failure.

    The caller writes it and :func:`commit`\\ s it onto ``path`` before the block ends.
    """
    head, name = os.path.split(os.fspath(path))
    # Not mkstemp: its files are owner-only (0600) whatever the umask, and the file put in
    # place keeps its mode; a new file of mode 0666 less the umask is what `open` makes.
    for _ in range(100):
        tmp = os.path.join(head or os.curdir, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        break
    else:  # pragma: no cover
        raise FileExistsError(f"no free temporary file name next to {path}")
    os.close(fd)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sync_file(file: IO[Any]) -> None:
    """Flush an open file and sync its data to disk."""
    file.flush()
    os.fsync(file.fileno())


def sync_directory(directory: str | os.PathLike[str]) -> None:
    """Sync a directory, so that a rename or a new file in it survives a crash.

    Skipped silently where the platform or filesystem cannot (Windows cannot
    open a directory; some filesystems refuse the fsync).
    """
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        if exc.errno in _CANNOT_SYNC_DIRECTORY:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _CANNOT_SYNC_DIRECTORY:
            raise
    finally:
        os.close(fd)


def commit(tmp: str, path: str | os.PathLike[str]) -> None:
    """Put a finished temporary file in place: its data synced, renamed, its directory synced."""
    fd = os.open(tmp, os.O_RDWR)  # writable: Windows' fsync (_commit) needs it
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_directory(os.path.dirname(os.fspath(path)) or os.curdir)


def write_whole(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file of its own, synced and renamed."""
    with temporary_for(path) as tmp:
        with open(tmp, "wb") as file:
            file.write(data)
        commit(tmp, path)


def os_error(exc: OSError) -> str:
    """An OSError in a message: its text and errno name (``No space left on device (ENOSPC)``)."""
    if exc.errno is not None and exc.strerror:
        return f"{exc.strerror} ({errno.errorcode.get(exc.errno, exc.errno)})"
    return f"{type(exc).__name__}: {exc}"  # pyarrow's OSError: a message without an errno


def write_failed(path: object, exc: OSError, doing: str = "write it") -> CheckpointError:
    """The error to raise (``from exc``) when ``doing`` (``"write it"``) at ``path`` failed."""
    return CheckpointError(f"could not {doing}: {os_error(exc)}", path=path)


#: The lock files this process holds (real path -> pid): a lock refused while this process
#: holds it is an earlier crawl's or planning's here, not done yet, not another process's
#: (a pid: a forked child holds none).
_HELD_HERE: dict[str, int] = {}


def take_lock(lock: BaseFileLock, path: object, *, here: str, elsewhere: str) -> None:
    """Acquire ``lock`` (never waited for) and record it held by this process.

    Held already: a :class:`~aqido.errors.CheckpointError` about ``path`` saying
    ``here`` if this process holds it (taken by another lock of its own on that file,
    not released yet), else ``elsewhere``.  An OSError taking it (a full disk, a
    read-only filesystem) is one too, naming the lock file.
    """
    from filelock import Timeout

    held = os.path.realpath(lock.lock_file)
    try:
        lock.acquire()
    except Timeout as exc:  # first: a Timeout is a TimeoutError, so an OSError too
        mine = _HELD_HERE.get(held) == os.getpid()
        raise CheckpointError(here if mine else elsewhere, path=path) from exc
    except OSError as exc:
        raise write_failed(path, exc, f"take its lock {lock.lock_file}") from exc
    _HELD_HERE[held] = os.getpid()


def note_released(lock: BaseFileLock) -> None:
    """Forget ``lock`` taken with :func:`take_lock`: called as it is released."""
    _HELD_HERE.pop(os.path.realpath(lock.lock_file), None)

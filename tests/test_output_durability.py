"""A sharded crawl's files on disk: each written whole by one writer, synced, failures named.

The plan, the Parquet parts and the checkpoints of an output directory.
Failures of the disk (full, read-only, an I/O error) are simulated by
replacing the OS call that would meet them, not by filling a disk.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import pathlib
import pickle
from typing import Any

import anyio
import pytest

from aqido import HierarchicalQuery
from aqido.cli import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_OK, main
from aqido.errors import CheckpointError
from aqido.testing import FakeArchive, SyntheticArchive

pytest.importorskip("pyarrow")

from aqido._shards import plan, plan_path

SYNTH = SyntheticArchive(seed=43, studies=6, series_per_study=1, instances_per_series=1)


def plan_into(url: str, out: pathlib.Path, shards: int = 2) -> Any:
    """The shards :func:`aqido._shards.plan` plans (or re-reads) for ``url`` under ``out``."""
    return anyio.run(
        functools.partial(
            plan, url, HierarchicalQuery(), out=out, shards=shards, client_options={"retries": 0}
        )
    )


def crawl(url: str, out: pathlib.Path, *more: str) -> tuple[int, str, str]:
    """``aqido crawl URL --out OUT --format parquet MORE...``: exit status, stdout, stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["crawl", url, "--out", str(out), "--format", "parquet", "--retries", "0", *more]
    status = main(argv, stdout=stdout, stderr=stderr, environ={})
    return status, stdout.getvalue(), stderr.getvalue()


def files_under(directory: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


# --- 1. each writer its own temporary file ------------------------------------------------------


def test_each_plan_writer_has_a_hidden_temporary_file_of_its_own(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renamed: list[str] = []
    replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        renamed.append(os.fspath(src))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    with FakeArchive(SYNTH).run_in_thread() as archive:
        path = plan_path(tmp_path, archive.url)
        first = plan_into(archive.url, tmp_path)
        path.unlink()  # a second run (or Dask task) writing the plan of the same directory
        assert plan_into(archive.url, tmp_path) == first
    assert len(renamed) == 2
    assert renamed[0] != renamed[1]
    for tmp in renamed:
        assert os.path.dirname(tmp) == str(path.parent)  # same directory: the rename is atomic
        assert os.path.basename(tmp).startswith("._plan.json.")  # hidden from dataset readers
    assert files_under(tmp_path) == [str(path.relative_to(tmp_path))]


@pytest.mark.skipif(os.name != "posix", reason="file modes and the umask are POSIX")
def test_a_file_put_in_place_has_the_mode_the_umask_gives(tmp_path: pathlib.Path) -> None:
    from aqido._files import write_whole

    old = os.umask(0o022)
    try:
        write_whole(tmp_path / "a.json", b"{}")
        os.umask(0o077)
        write_whole(tmp_path / "b.json", b"{}")
    finally:
        os.umask(old)
    # mkstemp made every file owner-only (0600): unreadable to the other users of a dataset
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    assert files_under(tmp_path) == ["a.json", "b.json"]


def test_a_plan_whose_rename_fails_leaves_no_temporary_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: Any, dst: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    with FakeArchive(SYNTH).run_in_thread() as archive:
        url = archive.url
        with pytest.raises(
            CheckpointError,
            match=r"could not write the shard plan: Read-only file system \(EROFS\)",
        ):
            plan_into(url, tmp_path)
    lock = plan_path(tmp_path, url).with_name("_plan.json.lock")  # left, as a checkpoint's is
    assert files_under(tmp_path) == [str(lock.relative_to(tmp_path))]  # no temporary file


# --- 2. synced to disk before it counts -------------------------------------------------------


def test_every_file_is_synced_before_its_rename_and_its_directory_after(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, int]] = []  # ("fsync", inode) / ("replace", the renamed file's inode)
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        fsync(fd)

    def spy_replace(src: Any, dst: Any) -> None:
        events.append(("replace", os.stat(src).st_ino))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    with FakeArchive(SYNTH).run_in_thread() as archive:
        status, _, err = crawl(archive.url, tmp_path, "--shards", "2")
        url = archive.url
    assert status == EXIT_OK, err
    directory = plan_path(tmp_path, url).parent
    whole = [plan_path(tmp_path, url), *sorted(directory.glob("part-*.parquet"))]
    assert len(whole) == 3
    for path in whole:  # the data synced before the rename, the directory after it
        renamed = events.index(("replace", path.stat().st_ino))
        assert ("fsync", path.stat().st_ino) in events[:renamed]
        assert ("fsync", directory.stat().st_ino) in events[renamed:]
    checkpoints = sorted((directory / "_checkpoints").glob("*.jsonl"))
    assert len(checkpoints) == 2
    for path in checkpoints:  # each synced when its run ended, with its new directory entry
        assert ("fsync", path.stat().st_ino) in events
    assert ("fsync", (directory / "_checkpoints").stat().st_ino) in events


def test_a_checkpoint_line_is_synced_only_when_asked(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aqido import AsyncQidoRS, CrawlCheckpoint

    synced: list[int] = []
    fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)

    async def crawl_into(checkpoint: CrawlCheckpoint) -> None:
        async with AsyncQidoRS(archive.url, retries=0) as client:
            async for _ in client.crawl(checkpoint=checkpoint):
                pass

    with FakeArchive(SYNTH).run_in_thread() as archive:
        anyio.run(crawl_into, CrawlCheckpoint(tmp_path / "once.jsonl"))
        once = synced.count((tmp_path / "once.jsonl").stat().st_ino)
        anyio.run(crawl_into, CrawlCheckpoint(tmp_path / "each.jsonl", fsync=True))
        each = synced.count((tmp_path / "each.jsonl").stat().st_ino)
    assert once == 1  # at the end record: not a disk flush per study
    assert each == 1 + 6 + 1  # the header, each of the 6 studies, the end record


@pytest.mark.parametrize("refused", [errno.EINVAL, errno.ENOTSUP, errno.EACCES])
def test_a_directory_the_platform_cannot_sync_is_skipped(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, refused: int
) -> None:
    from aqido._files import sync_directory

    def refuse(*args: Any) -> None:
        raise OSError(refused, os.strerror(refused))

    monkeypatch.setattr(os, "fsync", refuse)
    sync_directory(tmp_path)  # no error
    monkeypatch.setattr(os, "open", refuse)  # Windows: a directory cannot be opened
    sync_directory(tmp_path)


def test_a_directory_sync_that_fails_otherwise_is_raised(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aqido._files import sync_directory

    def fail(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="Input/output"):
        sync_directory(tmp_path)


# --- 3. a failed write is a named CheckpointError, and leaves nothing half-written ---------------

FULL = "No space left on device (ENOSPC)"


def no_space(*args: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def failure_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("could not fetch")]


def test_a_plan_that_cannot_be_written_is_a_named_error_on_one_line(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out\nforged"  # a line break of the path stays escaped: one line
    monkeypatch.setattr(os, "fsync", no_space)
    with FakeArchive(SYNTH).run_in_thread() as archive:
        status, _, err = crawl(archive.url, out)
        path = plan_path(out, archive.url)
    assert status == EXIT_INCOMPLETE
    (line,) = failure_lines(err)
    assert "(planning its shards)" in line
    assert f"{path}: could not write the shard plan: {FULL}".replace("\n", "\\n") in line
    assert "\nforged" not in err
    lock = path.with_name("_plan.json.lock")  # left in place, as a checkpoint's lock is
    assert files_under(out) == [str(lock.relative_to(out))]  # no plan, no temporary file


def test_a_plan_write_error_pickles_with_its_path() -> None:
    from aqido._files import write_failed

    error = write_failed("/out/_plan.json", OSError(errno.EDQUOT, "Disk quota exceeded"))
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is CheckpointError
    assert again.path == "/out/_plan.json"
    assert str(again) == "/out/_plan.json: could not write it: Disk quota exceeded (EDQUOT)"


def _fail_parquet_write(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    def write_table(self: Any, table: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError("IOError: [Errno 28] Error writing bytes to file")  # pyarrow's: no errno

    monkeypatch.setattr(pq.ParquetWriter, "write_table", write_table)


def _fail_part_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    fsync = os.fsync

    def fail_a_part(fd: int) -> None:
        if ".parquet." in os.readlink(f"/proc/self/fd/{fd}"):
            no_space()
        fsync(fd)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    monkeypatch.setattr(os, "fsync", fail_a_part)


@pytest.mark.parametrize(
    ("fail", "shown"),
    [
        (_fail_parquet_write, "OSError: IOError: [Errno 28] Error writing bytes to file"),
        (_fail_part_sync, FULL),
    ],
)
def test_a_part_that_cannot_be_written_is_a_named_error_and_no_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, fail: Any, shown: str
) -> None:
    with FakeArchive(SYNTH).run_in_thread() as archive:
        directory = plan_path(tmp_path, archive.url).parent
        with monkeypatch.context() as patch:
            fail(patch)
            status, _, err = crawl(archive.url, tmp_path, "--shards", "2")
        assert status == EXIT_INCOMPLETE
        lines = failure_lines(err)
        assert len(lines) == 2
        for line in lines:
            assert f"could not write the Parquet part: {shown}" in line
            assert str(directory / "part-") in line
        names = files_under(directory)
        assert [n for n in names if "parquet" in n] == []  # no part, no temporary file
        status, _, err = crawl(archive.url, tmp_path, "--shards", "2")  # the disk has room again
    assert status == EXIT_OK, err
    assert len(list(directory.glob("part-*.parquet"))) == 2


class _FileStandIn:
    """A checkpoint's open file with some of its methods replaced; the rest are the file's."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def test_a_checkpoint_that_cannot_be_written_is_cut_back_to_its_last_whole_line(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FillsUp(_FileStandIn):
        """A checkpoint file on a disk that fills up in the middle of its third line."""

        lines = 0

        def write(self, data: Any) -> int:
            self.lines += 1
            if self.lines == 3:
                self.file.write(bytes(data[:20]))
                no_space()
            written: int = self.file.write(data)
            return written

    path_open = pathlib.Path.open

    def open_(self: pathlib.Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = path_open(self, mode, *args, **kwargs)
        return FillsUp(file) if self.suffix == ".jsonl" and mode in ("ab", "wb") else file

    with FakeArchive(SYNTH).run_in_thread() as archive:
        directory = plan_path(tmp_path, archive.url).parent
        with monkeypatch.context() as patch:
            patch.setattr(pathlib.Path, "open", open_)
            status, _, err = crawl(archive.url, tmp_path)
        assert status == EXIT_INCOMPLETE
        (line,) = failure_lines(err)
        (checkpoint,) = (directory / "_checkpoints").glob("*.jsonl")
        assert f"{checkpoint}: could not write to it: {FULL}" in line
        text = checkpoint.read_bytes()
        assert text.endswith(b"\n")
        assert text.count(b"\n") == 2  # the header and one study: the third line cut away
        assert list(directory.glob("part-*")) == []
        status, _, err = crawl(archive.url, tmp_path)  # resumed where the disk filled up
    assert status == EXIT_OK, err
    assert len(list(directory.glob("part-*.parquet"))) == 1


def test_a_jsonl_crawl_on_a_full_disk_is_one_error_line(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aqido.checkpoint

    out = tmp_path / "crawl.jsonl"
    with FakeArchive(SYNTH).run_in_thread() as archive:
        # The checkpoint's own syncs fail, not os.fsync/os.ftruncate for everyone: some
        # filelock versions truncate the lock file with os.ftruncate when they take it.
        monkeypatch.setattr(aqido.checkpoint, "sync_file", no_space)
        monkeypatch.setattr(aqido.checkpoint, "sync_directory", no_space)
        stdout, stderr = io.StringIO(), io.StringIO()
        argv = ["crawl", archive.url, "--out", str(out), "--retries", "0", "--no-progress"]
        status = main(argv, stdout=stdout, stderr=stderr, environ={})
    assert status == EXIT_ERROR
    assert stderr.getvalue() == f"aqido: error: {out}: could not sync it to disk: {FULL}\n"


def failing_lock(method: str, code: int) -> Any:
    """``aqido.checkpoint._file_lock``, but each lock's ``method`` fails with the OSError ``code``.

    Only the checkpoint's lock object is changed, not ``os`` or filelock for the
    whole process (pytest and its plugins take file locks of their own).
    """
    import aqido.checkpoint

    make = aqido.checkpoint._file_lock

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(code, os.strerror(code))

    def file_lock(path: pathlib.Path) -> Any:
        lock = make(path)
        setattr(lock, method, fail)
        return lock

    return file_lock


def os_error_text(code: int) -> str:
    return f"{os.strerror(code)} ({errno.errorcode[code]})"


@pytest.mark.parametrize(
    "code",
    [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES],
    ids=errno.errorcode.get,
)
def test_a_checkpoint_lock_that_cannot_be_taken_is_a_checkpoint_error_naming_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    import aqido.checkpoint
    from aqido.checkpoint import CrawlCheckpoint
    from aqido.query import QueryLevel

    path = tmp_path / "c.jsonl"
    checkpoint = CrawlCheckpoint(path)
    with monkeypatch.context() as patch:
        patch.setattr(aqido.checkpoint, "_file_lock", failing_lock("acquire", code))
        with pytest.raises(CheckpointError) as info:
            checkpoint.open(HierarchicalQuery(), QueryLevel.INSTANCE)
    error = info.value
    assert str(error) == f"{path}: could not take its lock {path}.lock: {os_error_text(code)}"
    assert error.path == str(path)
    assert isinstance(error.__cause__, OSError)
    assert error.__cause__.errno == code
    assert not path.exists()  # nothing written without the lock
    checkpoint.close()  # no lock to release: nothing raised
    checkpoint.open(HierarchicalQuery(), QueryLevel.INSTANCE)  # the disk has room again
    checkpoint.close()


def test_a_checkpoint_lock_that_cannot_be_released_is_a_checkpoint_error_naming_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aqido.checkpoint
    from aqido.checkpoint import CrawlCheckpoint
    from aqido.query import QueryLevel

    path = tmp_path / "c.jsonl"
    monkeypatch.setattr(aqido.checkpoint, "_file_lock", failing_lock("release", errno.EIO))
    checkpoint = CrawlCheckpoint(path)
    checkpoint.open(HierarchicalQuery(), QueryLevel.INSTANCE)
    lock = checkpoint._lock
    assert lock is not None
    try:
        with pytest.raises(CheckpointError) as info:
            checkpoint.close()
        assert str(info.value) == (
            f"{path}: could not release its lock {path}.lock: {os_error_text(errno.EIO)}"
        )
        assert isinstance(info.value.__cause__, OSError)
        checkpoint.close()  # idempotent: the failed release is not tried again
    finally:
        type(lock).release(lock, force=True)


def test_a_checkpoint_whose_directory_cannot_be_made_is_a_checkpoint_error_naming_it(
    tmp_path: pathlib.Path,
) -> None:
    from aqido.checkpoint import CrawlCheckpoint
    from aqido.query import QueryLevel

    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(CheckpointError, match="could not create the directory") as info:
        CrawlCheckpoint(tmp_path / "file" / "c.jsonl").open(
            HierarchicalQuery(), QueryLevel.INSTANCE
        )
    assert info.value.path == str(tmp_path / "file")
    assert isinstance(info.value.__cause__, OSError)


def test_a_jsonl_crawl_whose_lock_cannot_be_taken_is_one_error_line(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aqido.checkpoint

    out = tmp_path / "crawl.jsonl"
    monkeypatch.setattr(aqido.checkpoint, "_file_lock", failing_lock("acquire", errno.ENOSPC))
    with FakeArchive(SYNTH).run_in_thread() as archive:
        stdout, stderr = io.StringIO(), io.StringIO()
        argv = ["crawl", archive.url, "--out", str(out), "--retries", "0", "--no-progress"]
        status = main(argv, stdout=stdout, stderr=stderr, environ={})
    assert status == EXIT_ERROR  # as a checkpoint that cannot be synced, above
    assert stderr.getvalue() == f"aqido: error: {out}: could not take its lock {out}.lock: {FULL}\n"
    assert stdout.getvalue() == ""
    assert not out.exists()


def test_a_blocking_crawl_whose_lock_cannot_be_taken_raises_the_checkpoint_error(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aqido.checkpoint
    from aqido.blocking import QidoRS

    out = tmp_path / "crawl.jsonl"
    monkeypatch.setattr(aqido.checkpoint, "_file_lock", failing_lock("acquire", errno.ENOSPC))
    with (
        FakeArchive(SYNTH).run_in_thread() as archive,
        QidoRS(archive.url, retries=0) as qido,
        pytest.raises(CheckpointError) as info,
    ):
        list(qido.crawl(checkpoint=out))
    assert str(info.value) == f"{out}: could not take its lock {out}.lock: {FULL}"
    assert isinstance(info.value.__cause__, OSError)


def test_a_parquet_crawl_whose_locks_cannot_be_taken_names_them_and_resumes(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aqido.checkpoint

    with FakeArchive(SYNTH).run_in_thread() as archive:
        directory = plan_path(tmp_path, archive.url).parent
        with monkeypatch.context() as patch:
            patch.setattr(aqido.checkpoint, "_file_lock", failing_lock("acquire", errno.ENOSPC))
            status, _, err = crawl(archive.url, tmp_path, "--shards", "2")
        assert status == EXIT_INCOMPLETE
        lines = failure_lines(err)
        assert len(lines) == 2
        for line in lines:
            assert f"could not take its lock {directory / '_checkpoints'}" in line
            assert f".jsonl.lock: {FULL}" in line
        assert list(directory.glob("part-*")) == []
        status, _, err = crawl(archive.url, tmp_path, "--shards", "2")  # the disk has room again
    assert status == EXIT_OK, err
    assert len(list(directory.glob("part-*.parquet"))) == 2


def test_a_checkpoint_write_that_takes_nothing_is_an_error_not_a_hang(
    tmp_path: pathlib.Path,
) -> None:
    from aqido.checkpoint import CrawlCheckpoint
    from aqido.query import QueryLevel

    class TakesNothing(_FileStandIn):
        """An unbuffered file whose write returns 0 without an error."""

        def write(self, data: Any) -> int:
            return 0

    checkpoint = CrawlCheckpoint(tmp_path / "c.jsonl")
    checkpoint.open(HierarchicalQuery(), QueryLevel.INSTANCE)
    try:
        whole = checkpoint.path.read_bytes()
        checkpoint._file = TakesNothing(checkpoint._file)  # type: ignore[assignment]
        with pytest.raises(CheckpointError, match="could not write to it"):
            checkpoint.write_end(0, [])
        assert checkpoint.path.read_bytes() == whole  # nothing half-written
    finally:
        checkpoint.close()


def test_a_checkpoint_file_that_cannot_be_closed_is_a_checkpoint_error_and_frees_its_lock(
    tmp_path: pathlib.Path,
) -> None:
    from aqido.checkpoint import CrawlCheckpoint
    from aqido.query import QueryLevel

    class FailsToClose(_FileStandIn):
        """A file whose close meets an I/O error (an NFS server gone)."""

        def close(self) -> None:
            self.file.close()
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    path = tmp_path / "c.jsonl"
    checkpoint = CrawlCheckpoint(path)
    checkpoint.open(HierarchicalQuery(), QueryLevel.INSTANCE)
    checkpoint._file = FailsToClose(checkpoint._file)  # type: ignore[assignment]
    with pytest.raises(CheckpointError) as info:
        checkpoint.close()
    assert str(info.value) == f"{path}: could not close it: {os_error_text(errno.EIO)}"
    assert isinstance(info.value.__cause__, OSError)
    checkpoint.close()  # idempotent
    other = CrawlCheckpoint(path)  # the lock was released all the same
    other.lock()
    other.close()


def test_a_checkpoint_lock_is_taken_by_lock_and_refused_to_a_second_writer(
    tmp_path: pathlib.Path,
) -> None:
    from aqido.checkpoint import CrawlCheckpoint
    from aqido.query import QueryLevel

    path = tmp_path / "c.jsonl"
    first, second = CrawlCheckpoint(path), CrawlCheckpoint(path)
    first.lock()
    try:
        first.lock()  # held already: nothing happens
        assert not path.exists()  # the lock alone writes nothing of the checkpoint
        with pytest.raises(CheckpointError, match="in use by another crawl"):
            second.lock()
        with pytest.raises(CheckpointError, match="in use by another crawl"):
            second.open(HierarchicalQuery(), QueryLevel.INSTANCE)
        first.open(HierarchicalQuery(), QueryLevel.INSTANCE)  # under the lock it holds
    finally:
        first.close()
    second.lock()
    second.close()


@pytest.mark.parametrize(
    ("element", "says"),
    [
        ({"vr": "FD", "Value": [float("nan")]}, "Out of range float values"),
        ({"vr": "FD", "Value": [float("inf")]}, "Out of range float values"),
        ({"vr": "LO", "Value": ["a\ud800"]}, "surrogates not allowed"),
    ],
    ids=["nan", "infinity", "lone surrogate"],
)
def test_a_hand_built_study_a_reader_would_refuse_is_not_written(
    tmp_path: pathlib.Path, element: dict[str, Any], says: str
) -> None:
    """What reading a checkpoint refuses, writing one refuses first: nothing half-written."""
    from aqido import Study
    from aqido.checkpoint import CrawlCheckpoint
    from aqido.query import QueryLevel

    path = tmp_path / "c.jsonl"
    checkpoint = CrawlCheckpoint(path)
    checkpoint.open(HierarchicalQuery(), QueryLevel.INSTANCE)
    try:
        header = path.read_bytes()
        bad = Study.from_json({"0020000D": {"vr": "UI", "Value": ["1.2"]}, "00181050": element})
        with pytest.raises(CheckpointError, match="not JSON text it could be read back") as info:
            checkpoint.write_study(bad)
        assert says in str(info.value)
        assert str(path) in str(info.value)
        assert path.read_bytes() == header
        assert "1.2" not in checkpoint.done
        good = Study.from_json({"0020000D": {"vr": "UI", "Value": ["1.3"]}})
        checkpoint.write_study(good)  # the file is still good for the next study
    finally:
        checkpoint.close()
    assert [s.StudyInstanceUID for s in CrawlCheckpoint.read_studies(path)] == ["1.3"]

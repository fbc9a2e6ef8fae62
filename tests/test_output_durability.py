"""A sharded crawl's files on disk: each written whole by one writer, synced, failures named.

The plan, the Parquet parts and the checkpoints of an output directory.
Failures of the disk (full, read-only, an I/O error) are simulated by
replacing the OS call that would meet them, not by filling a disk.
"""

from __future__ import annotations

import errno
import functools
import os
import pathlib
from typing import Any

import anyio
import pytest

from aqido import HierarchicalQuery
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


def test_a_plan_whose_rename_fails_leaves_no_temporary_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: Any, dst: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    with FakeArchive(SYNTH).run_in_thread() as archive, pytest.raises(OSError, match="Read-only"):
        plan_into(archive.url, tmp_path)
    assert files_under(tmp_path) == []

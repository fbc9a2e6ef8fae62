"""Parquet output and sharded crawls in one process: what reaches the files, and what may not.

Values, the files a run leaves, and what a run over an existing output
directory does.  No Dask here (``tests/test_dask.py`` has the cluster);
expected answers come from the DICOM JSON the tests build.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from aqido.results import Study

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from aqido._arrow import write_parquet  # noqa: E402 - after the importorskips


def study(uid: str, **elements: tuple[str, list[Any]]) -> Study:
    """A Study from its UID and ``Keyword=(vr, values)`` elements."""
    from aqido import dictionary

    raw: dict[str, Any] = {"0020000D": {"vr": "UI", "Value": [uid]}}
    for keyword, (vr, values) in elements.items():
        raw[dictionary.tag_key(dictionary.resolve(keyword)[0])] = {"vr": vr, "Value": values}
    return Study.from_json(raw)


STUDIES = [study(f"1.2.3.{n}", StudyDate=("DA", ["20240102"])) for n in range(6)]


# --- files --------------------------------------------------------------------------------------


def test_two_writers_racing_for_one_part_leave_a_complete_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "part.parquet"

    def first() -> Iterator[Sequence[Study]]:
        yield STUDIES[:2]
        # a second writer of the same part (a Dask task run twice) starts and finishes meanwhile
        assert write_parquet([STUDIES[2:3]], path, level="study") == 1
        yield STUDIES[3:]

    assert write_parquet(first(), path, level="study") == 5
    table = pq.read_table(path)
    assert table.column("StudyInstanceUID").to_pylist() == [
        s.StudyInstanceUID for s in STUDIES[:2] + STUDIES[3:]
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["part.parquet"]


def test_a_failed_write_leaves_no_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "part.parquet"

    def broken() -> Iterator[Sequence[Study]]:
        yield STUDIES[:2]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_parquet(broken(), path, level="study")
    assert list(tmp_path.iterdir()) == []

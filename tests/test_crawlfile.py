"""Crawl files: complete study lines, a cut anywhere is detected, resume appends after the cut."""

from __future__ import annotations

import json
import pathlib

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aqido.crawlfile import (
    CrawlFileError,
    CrawlState,
    CrawlWriter,
    dumps_line,
    read_studies,
    scan,
    state_path,
    study_from_record,
    study_record,
)
from aqido.query import QueryLevel
from aqido.results import Study, build_tree, structure
from aqido.testing import SyntheticArchive

SYNTHETIC = SyntheticArchive(seed=3, studies=6, series_per_study=2, instances_per_series=2)


def _studies() -> list[Study]:
    instances = structure(
        [SYNTHETIC.dataset_json(i) for i in SYNTHETIC.instances], QueryLevel.INSTANCE
    )
    trees = build_tree(instances)
    studies = structure([SYNTHETIC.study_json(s) for s in SYNTHETIC.studies], QueryLevel.STUDY)
    by_uid = {t.StudyInstanceUID: t for t in trees}
    return [attrs.evolve(s, series=by_uid[s.StudyInstanceUID].series) for s in studies]


STUDIES = _studies()
FILE = b"".join(dumps_line(study_record(s)) for s in STUDIES)


def test_records_round_trip() -> None:
    for study in STUDIES:
        record = study_record(study)
        assert record["StudyInstanceUID"] == study.StudyInstanceUID
        again = study_from_record(json.loads(dumps_line(record)))
        assert again == study
        assert [s.SeriesInstanceUID for s in again.series] == [
            s.SeriesInstanceUID for s in study.series
        ]
        assert [len(s.instances) for s in again.series] == [2, 2]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=len(FILE)))
def test_a_cut_anywhere_keeps_exactly_the_complete_lines(cut: int, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cut.jsonl"
    path.write_bytes(FILE[:cut])
    found = scan(path)
    complete = FILE[:cut].count(b"\n")
    assert found.done == {s.StudyInstanceUID for s in STUDIES[:complete]}
    assert found.valid_bytes == (FILE[:cut].rfind(b"\n") + 1)
    assert found.dropped_tail == (found.valid_bytes != cut)
    assert [s.StudyInstanceUID for s in read_studies(path)] == [
        s.StudyInstanceUID for s in STUDIES[:complete]
    ]
    # resuming: cut the tail off, append the rest: the same file as an uninterrupted write
    with CrawlWriter(path, keep_bytes=found.valid_bytes) as writer:
        for study in STUDIES[complete:]:
            writer.write(study)
    assert path.read_bytes() == FILE


def test_a_bad_line_before_the_end_is_an_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = FILE.split(b"\n")
    path.write_bytes(lines[0] + b"\n" + b'{"not": "a study"}\n' + lines[1] + b"\n")
    with pytest.raises(CrawlFileError, match="line 2"):
        scan(path)
    path.write_bytes(lines[0] + b"\n" + b"garbage\n")  # a garbled *last* line: a cut write
    assert scan(path).dropped_tail
    assert scan(tmp_path / "missing.jsonl").done == frozenset()


def test_state_round_trip_and_differences(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.jsonl"
    assert CrawlState.load(path) is None
    state = CrawlState(url="http://h/dicom-web", query="/studies", depth="INSTANCE")
    state.save(path)
    assert state_path(path).name == "x.jsonl.state"
    assert CrawlState.load(path) == state
    other = attrs.evolve(state, depth="SERIES")
    assert state.differences(other) == ["depth: 'INSTANCE' != 'SERIES'"]
    state_path(path).write_text("{}")
    with pytest.raises(CrawlFileError):
        CrawlState.load(path)

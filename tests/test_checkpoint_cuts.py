"""A crawl file cut at any byte (a killed ``aqido crawl``) resumes to exactly the clean file.

``CrawlCheckpoint.open`` keeps the complete lines, drops the cut one (also a cut
header: nothing to resume), and the studies not yet written are appended.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import typing
from collections.abc import Iterator

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aqido.checkpoint import CrawlCheckpoint
from aqido.errors import CheckpointError
from aqido.query import HierarchicalQuery, QueryLevel
from aqido.results import Study, build_tree, structure
from aqido.testing import SyntheticArchive

SYNTHETIC = SyntheticArchive(seed=3, studies=5, series_per_study=2, instances_per_series=2)
QUERY = HierarchicalQuery(ModalitiesInStudy="CT,MR")


def _studies() -> list[Study]:
    instances = structure(
        [SYNTHETIC.dataset_json(i) for i in SYNTHETIC.instances], QueryLevel.INSTANCE
    )
    trees = {t.StudyInstanceUID: t for t in build_tree(instances)}
    studies = structure([SYNTHETIC.study_json(s) for s in SYNTHETIC.studies], QueryLevel.STUDY)
    return [attrs.evolve(s, series=trees[s.StudyInstanceUID].series) for s in studies]


STUDIES = _studies()


def _write(path: pathlib.Path, studies: list[Study]) -> set[str]:
    checkpoint = CrawlCheckpoint(path)
    done = checkpoint.open(QUERY, QueryLevel.INSTANCE)
    for study in studies:
        if study.StudyInstanceUID not in done:
            checkpoint.write_study(study)
    checkpoint.close()
    return done


def _clean() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "clean.jsonl"
        _write(path, STUDIES)
        return path.read_bytes()


CLEAN = _clean()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(min_value=1, max_value=len(CLEAN) - 1))
def test_a_cut_anywhere_resumes_to_the_clean_file(cut: int, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cut.jsonl"
    path.write_bytes(CLEAN[:cut])
    complete_studies = max(0, CLEAN[:cut].count(b"\n") - 1)  # lines after the header
    done = _write(path, STUDIES)
    assert done == {s.StudyInstanceUID for s in STUDIES[:complete_studies]}
    assert path.read_bytes() == CLEAN
    assert [s.StudyInstanceUID for s in CrawlCheckpoint.read_studies(path)] == [
        s.StudyInstanceUID for s in STUDIES
    ]


def test_a_file_that_is_not_a_checkpoint_is_refused_and_left_alone(
    tmp_path: pathlib.Path,
) -> None:
    for text in ("not a crawl file\nat all\n", "no newline at all"):
        path = tmp_path / "other.txt"
        path.write_text(text)
        with pytest.raises(ValueError, match="not an aqido crawl checkpoint"):
            CrawlCheckpoint(path).open(QUERY, QueryLevel.INSTANCE)
        assert path.read_text() == text


# --- damaged files a resume must refuse (a silent wrong resume otherwise) -----------------------


def _lines() -> list[str]:
    return CLEAN.decode().splitlines(keepends=True)


def _refused(path: pathlib.Path, text: str, match: str) -> None:
    path.write_text(text)
    with pytest.raises(CheckpointError, match=match):
        CrawlCheckpoint(path).open(QUERY, QueryLevel.INSTANCE)
    with pytest.raises(CheckpointError, match=match):
        list(CrawlCheckpoint.read_studies(path))
    assert path.read_text() == text  # left alone


def test_a_study_line_whose_uid_is_not_its_studys_is_refused(tmp_path: pathlib.Path) -> None:
    lines = _lines()
    record = json.loads(lines[1])
    record["StudyInstanceUID"] = STUDIES[1].StudyInstanceUID  # would skip study 1, never written
    lines[1] = json.dumps(record) + "\n"
    _refused(
        tmp_path / "c.jsonl", "".join(lines), r"line 2: 'StudyInstanceUID' .* is not its study"
    )


def test_a_study_written_twice_is_refused(tmp_path: pathlib.Path) -> None:
    lines = _lines()
    text = "".join([*lines, lines[2]])  # a concatenated or damaged file
    _refused(tmp_path / "c.jsonl", text, r"line 7: study .* is written again \(first on line 3\)")


def test_an_end_record_counting_more_studies_than_the_file_holds_is_refused(
    tmp_path: pathlib.Path,
) -> None:
    lines = _lines()
    end = json.dumps({"end": {"complete": True, "studies": len(STUDIES), "failures": []}})
    text = "".join([lines[0], lines[1], end + "\n"])  # study lines lost before a complete end
    _refused(tmp_path / "c.jsonl", text, "line 3: the end record counts 5 studies, but the file")


@pytest.mark.parametrize("version", [True, 0, 2, 999, -1])
def test_a_header_of_another_format_version_is_refused(
    tmp_path: pathlib.Path, version: object
) -> None:
    lines = _lines()
    header = json.loads(lines[0])
    header["aqido_crawl"] = version
    path = tmp_path / "c.jsonl"
    path.write_text("".join([json.dumps(header) + "\n", *lines[1:]]))
    with pytest.raises(CheckpointError, match="not an aqido crawl checkpoint"):
        CrawlCheckpoint(path).open(QUERY, QueryLevel.INSTANCE)


def test_the_clean_file_and_its_end_record_resume() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "c.jsonl"
        end = json.dumps({"end": {"complete": True, "studies": len(STUDIES), "failures": []}})
        path.write_bytes(CLEAN + end.encode() + b"\n")
        checkpoint = CrawlCheckpoint(path)
        assert checkpoint.open(QUERY, QueryLevel.INSTANCE) == {s.StudyInstanceUID for s in STUDIES}
        assert checkpoint.finished_complete
        checkpoint.close()


def test_read_studies_yields_studies_and_is_typed_so(tmp_path: pathlib.Path) -> None:
    """Typed ``Iterator[Study]`` (not ``Any``), as documented: a type checker reads the fields."""
    hints = typing.get_type_hints(CrawlCheckpoint.read_studies, None, {"Study": Study})
    assert hints["return"] == Iterator[Study]
    path = tmp_path / "crawl.jsonl"
    path.write_bytes(CLEAN)
    read = list(CrawlCheckpoint.read_studies(path))
    assert all(type(study) is Study for study in read)
    assert read == STUDIES

"""A crawl file cut at any byte (a killed ``aqido crawl``) resumes to exactly the clean file.

``CrawlCheckpoint.open`` keeps the complete lines, drops the cut one (also a cut
header: nothing to resume), and the studies not yet written are appended.
"""

from __future__ import annotations

import pathlib
import tempfile

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aqido.checkpoint import CrawlCheckpoint
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

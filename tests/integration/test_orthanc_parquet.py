"""``aqido crawl --format parquet --workers 2`` against a real Orthanc: the single-process result.

Expected answers come from the synthetic records Orthanc was seeded with.
"""

from __future__ import annotations

import datetime as dt
import io
import pathlib

import pytest

from aqido.cli import EXIT_OK, main
from aqido.testing.orthanc import OrthancServer
from tests.integration.support import SEEDED

pytestmark = pytest.mark.integration
pytest.importorskip("distributed")
pq = pytest.importorskip("pyarrow.parquet")


def _rows(directory: pathlib.Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for part in sorted(directory.glob("archive=*/part-*.parquet")):
        rows.extend(pq.read_table(part).to_pylist())
    return rows


@pytest.mark.parametrize("extra", [[], ["--workers", "2", "--shards", "6"]], ids=["one", "dask"])
def test_parquet_crawl_of_orthanc_is_exactly_the_seeded_archive(
    orthanc: OrthancServer, tmp_path: pathlib.Path, extra: list[str]
) -> None:
    out, err = io.StringIO(), io.StringIO()
    argv = ["crawl", orthanc.dicomweb_url, "--out", str(tmp_path), "--format", "parquet", *extra]
    status = main(argv, stdout=out, stderr=err, environ={})
    assert status == EXIT_OK, err.getvalue()
    rows = _rows(tmp_path)
    expected = {
        (study.study_instance_uid, series.series_instance_uid, instance.sop_instance_uid)
        for study in SEEDED.studies
        for series in study.series
        for instance in series.instances
    }
    got = [(r["StudyInstanceUID"], r["SeriesInstanceUID"], r["SOPInstanceUID"]) for r in rows]
    assert len(got) == len(expected)  # no duplicates
    assert set(got) == expected  # no gaps
    dates = {
        s.study_instance_uid: dt.datetime.strptime(s.study_date, "%Y%m%d").date()
        for s in SEEDED.studies
    }
    for row in rows[:50]:
        assert row["StudyDate"] == dates[str(row["StudyInstanceUID"])]

"""Sharded crawls: the pure plan, Parquet output, and ``aqido.dask`` on a 2-process LocalCluster.

Expected answers come from a single-process crawl of the same archive (and
from the synthetic records), never from the sharded run itself.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import pathlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aqido import (
    CrawlFailure,
    CrawlIncompleteError,
    CrawlStats,
    HierarchicalQuery,
    NotFoundError,
    QidoError,
    QidoRS,
    ServerError,
)
from aqido._shards import UIDS_PER_SHARD, Shard, plan_shards
from aqido.testing import FakeArchive, Faults, SyntheticArchive

distributed = pytest.importorskip("distributed")
pytest.importorskip("pyarrow")
dd = pytest.importorskip("dask.dataframe")

from aqido.dask import _qido, crawl_to_parquet  # noqa: E402 - after the importorskips

SYNTH = SyntheticArchive(seed=21, studies=48, series_per_study=2, instances_per_series=2)
OTHER = SyntheticArchive(seed=22, studies=12, series_per_study=1, instances_per_series=3)


def keys(rows: Any) -> set[tuple[str, str, str]]:
    """(study, series, instance) UIDs of a DataFrame's rows."""
    return set(zip(rows.StudyInstanceUID, rows.SeriesInstanceUID, rows.SOPInstanceUID, strict=True))


def single_process(url: str) -> set[tuple[str, str, str]]:
    with QidoRS(url, retries=5) as client:
        return {
            (study.StudyInstanceUID, series.SeriesInstanceUID, instance.SOPInstanceUID)
            for study in client.crawl()
            for series in study.series
            for instance in series.instances
        }


# --- the plan (pure) ----------------------------------------------------------------------------

DAY = dt.timedelta(days=1)


def _covering(shards: list[Shard], day: dt.date) -> list[str]:
    out = []
    for shard in shards:
        q = shard.query
        if q.StudyInstanceUID:
            continue
        low, high = q.min_study_date, q.max_study_date
        if (low is None or low <= day) and (high is None or day <= high):
            out.append(shard.name)
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.dates(dt.date(1990, 1, 1), dt.date(2030, 12, 31)), max_size=300),
    st.integers(min_value=0, max_value=120),
    st.integers(min_value=1, max_value=12),
)
def test_every_day_falls_in_exactly_one_shard(
    dates: list[dt.date], undated: int, shards: int
) -> None:
    studies: list[tuple[str, dt.date | None]] = [(f"1.2.{i}", d) for i, d in enumerate(dates)]
    studies += [(f"1.3.{i}", None) for i in range(undated)]
    plan = plan_shards(HierarchicalQuery(), studies, shards=shards)
    dated = [s for s in plan if not s.query.StudyInstanceUID]
    assert 1 <= len(dated) <= shards
    for day in [*dates, dt.date(1000, 1, 1), dt.date(9999, 12, 31), dt.date(2001, 2, 3)]:
        assert len(_covering(plan, day)) == 1
    listed = [
        u for s in plan if s.query.StudyInstanceUID for u in s.query.StudyInstanceUID.split(",")
    ]
    unbounded = [s for s in dated if s.query.min_study_date is s.query.max_study_date is None]
    if unbounded:  # the whole query: it lists the undated studies itself
        assert listed == []
    else:
        assert sorted(listed) == sorted(f"1.3.{i}" for i in range(undated))
    assert all(
        len(s.query.StudyInstanceUID.split(",")) <= UIDS_PER_SHARD
        for s in plan
        if s.query.StudyInstanceUID
    )
    assert len({s.name for s in plan}) == len(plan)


@pytest.mark.parametrize("dated", [0, 1, 5])
def test_a_shard_without_a_date_range_is_the_only_one_with_the_undated(dated: int) -> None:
    studies: list[tuple[str, dt.date | None]] = [("1.3.1", None), ("1.3.2", None)]
    studies += [(f"1.2.{i}", dt.date(2024, 1, 1)) for i in range(dated)]
    (only,) = plan_shards(HierarchicalQuery(), studies, shards=1)  # /studies: every study
    assert only.query == HierarchicalQuery()
    ranged = plan_shards(HierarchicalQuery(min_study_date=dt.date(2020, 1, 1)), studies, shards=1)
    assert [s.query.StudyInstanceUID or None for s in ranged] == [None, "1.3.1,1.3.2"]


def test_shards_are_sized_from_the_counts() -> None:
    busy, quiet = dt.date(2020, 1, 1), [dt.date(2021, 1, d) for d in range(1, 31)]
    studies = [(f"1.{i}", busy) for i in range(30)] + [(f"2.{i}", d) for i, d in enumerate(quiet)]
    plan = plan_shards(HierarchicalQuery(), studies, shards=2)
    assert [s.name for s in plan] == ["date--20201231", "date-20210101-"]


def test_the_querys_own_range_bounds_the_outer_shards() -> None:
    query = HierarchicalQuery(
        min_study_date=dt.date(2020, 1, 1), max_study_date=dt.date(2020, 12, 31)
    )
    studies = [(f"1.{m}", dt.date(2020, m, 1)) for m in range(1, 13)]
    plan = plan_shards(query, studies, shards=3)
    assert plan[0].query.min_study_date == dt.date(2020, 1, 1)
    assert plan[-1].query.max_study_date == dt.date(2020, 12, 31)
    for before, after in itertools.pairwise(plan):
        assert before.query.max_study_date + DAY == after.query.min_study_date  # type: ignore[operator]


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_a_listed_study_outside_the_querys_range_is_the_servers_fault_not_the_querys(
    shards: int,
) -> None:
    from aqido import InvalidQueryError, InvalidResponseError

    query = HierarchicalQuery(
        min_study_date=dt.date(2024, 1, 1), max_study_date=dt.date(2024, 1, 31)
    )
    for outside in (dt.date(2023, 12, 31), dt.date(2024, 2, 1)):
        studies = [("1.1", dt.date(2024, 1, 5)), ("1.2", outside), ("1.3", dt.date(2024, 1, 20))]
        with pytest.raises(InvalidResponseError, match="outside the query's range") as info:
            plan_shards(query, studies, shards=shards)  # not min_study_date after max_study_date
        assert not isinstance(info.value, InvalidQueryError)  # which stops a run as a usage error


def test_a_shard_round_trips_through_json() -> None:
    query = HierarchicalQuery(PatientID="P1", ModalitiesInStudy="CT", min_study_date="20200101")
    shard = plan_shards(query, [("1.2", None)], shards=1)[1]  # the undated shard
    assert Shard.from_json(shard.to_json()) == shard


def test_shards_must_be_positive() -> None:
    with pytest.raises(ValueError, match="shards"):
        plan_shards(HierarchicalQuery(), [], shards=0)


# --- Parquet ------------------------------------------------------------------------------------


def test_parquet_round_trip_keeps_types_and_values(tmp_path: pathlib.Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aqido import to_records
    from aqido._arrow import write_parquet

    with FakeArchive(SYNTH).run_in_thread() as archive, QidoRS(archive.url) as client:
        studies = list(client.crawl())
    path = tmp_path / "part.parquet"
    assert write_parquet([studies[:10], studies[10:]], path, level="instance").rows == 48 * 4
    table = pq.read_table(path)
    schema = table.schema
    assert schema.field("StudyDate").type == pa.date32()
    assert schema.field("StudyTime").type == pa.time64("us")
    assert schema.field("InstanceNumber").type == pa.int64()
    assert schema.field("ModalitiesInStudy").type == pa.list_(pa.string())
    assert schema.field("PatientName").type == pa.string()
    expected = to_records(studies, level="instance", columns=schema.names)
    got = table.to_pylist()
    assert len(got) == len(expected)
    for row, record in zip(got, expected, strict=True):
        assert row["StudyDate"] == record["StudyDate"]
        assert row["PatientName"] == record["PatientName"]
        assert row["InstanceNumber"] == record["InstanceNumber"]
        assert tuple(row["ModalitiesInStudy"]) == record["ModalitiesInStudy"]
        assert row["SOPInstanceUID"] == record["SOPInstanceUID"]
    assert not list(tmp_path.glob("*.tmp"))


def test_results_to_arrow_one_row_per_study() -> None:
    with FakeArchive(OTHER).run_in_thread() as archive, QidoRS(archive.url) as client:
        found = client.search(HierarchicalQuery())
    table = found.to_arrow()
    assert table.num_rows == 12
    assert sorted(table.column("StudyInstanceUID").to_pylist()) == sorted(
        s.study_instance_uid for s in OTHER.studies
    )


# --- on a cluster -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client


def test_a_workers_aqido_error_arrives_as_itself(cluster: Any) -> None:
    """An aqido exception raised in a worker process reaches the client with its class and state."""
    url = "http://alice:secret@127.0.0.1:9/dicom-web/studies/1.2/series"

    def not_found() -> None:  # local: sent to the worker by value
        raise NotFoundError(404, url, b"no such study", reason="Not Found")

    def incomplete() -> None:
        stats = CrawlStats()
        error = ServerError(503, url, b"busy", headers={"Retry-After": "2"})
        stats.failures.append(CrawlFailure(HierarchicalQuery(StudyInstanceUID="1.2"), error))
        raise CrawlIncompleteError(stats.failures, {"STUDY": 3}, stats=stats)

    with pytest.raises(NotFoundError) as info:
        cluster.submit(not_found, pure=False).result()
    assert info.value.status == 404
    assert info.value.url == "http://127.0.0.1:9/dicom-web/studies/1.2/series"
    assert info.value.body_excerpt == "no such study"
    assert str(info.value) == str(NotFoundError(404, url, b"no such study", reason="Not Found"))
    assert _qido(info.value) is info.value

    with pytest.raises(CrawlIncompleteError) as crawl:
        cluster.submit(incomplete, pure=False).result()
    (failure,) = crawl.value.failures
    assert failure.query == HierarchicalQuery(StudyInstanceUID="1.2")
    assert isinstance(failure.error, ServerError)
    assert failure.error.status == 503
    assert failure.error.headers == {"Retry-After": "2"}
    assert crawl.value.counts == {"STUDY": 3}
    assert isinstance(crawl.value.stats, CrawlStats)


def test_qido_keeps_aqido_errors_and_wraps_the_others() -> None:
    error = NotFoundError(404, "http://h/studies")
    assert _qido(error) is error
    wrapped = _qido(KeyError("StudyDate"))
    assert type(wrapped) is QidoError
    assert str(wrapped) == "KeyError: 'StudyDate'"


def test_sharded_crawl_equals_the_single_process_crawl(
    cluster: Any, tmp_path: pathlib.Path
) -> None:
    faults = Faults(rate=0.05, seed=3, kinds=("503", "disconnect", "truncated"))
    with FakeArchive(SYNTH, faults=faults).run_in_thread() as archive:
        expected = single_process(archive.url)
        archive.reset_stats()
        frame = crawl_to_parquet(
            archive.url, out=tmp_path, client=cluster, shards=5, max_concurrency=4, retries=8
        )
        rows = frame.compute()
        assert archive.peak_concurrency <= 4
    assert len(rows) == len(expected)  # no duplicates
    assert keys(rows) == expected  # no gaps
    assert len(expected) == 48 * 2 * 2


def test_rerun_skips_finished_shards(cluster: Any, tmp_path: pathlib.Path) -> None:
    with FakeArchive(OTHER).run_in_thread() as archive:
        first = crawl_to_parquet(archive.url, out=tmp_path, client=cluster, shards=3).compute()
        archive.reset_stats()
        again = crawl_to_parquet(archive.url, out=tmp_path, client=cluster, shards=3).compute()
        assert archive.requests == []  # the plan and every part were already there
    assert keys(again) == keys(first)


def test_a_study_in_two_parts_is_a_failure_not_a_duplicate_row(
    cluster: Any, tmp_path: pathlib.Path
) -> None:
    # Re-dated between the crawls of two shards: the last shard, crawled again, finds the study
    # the first one's part holds; the frame would hold its rows twice.
    from aqido._shards import archive_dirname

    with FakeArchive(OTHER).run_in_thread() as archive:
        crawl_to_parquet(archive.url, out=tmp_path, client=cluster, shards=3, depth="study")
        directory = tmp_path / archive_dirname(archive.url)
        parts = sorted(directory.glob("part-*.parquet"))
        early = dd.read_parquet(str(parts[0])).compute()
        late = dd.read_parquet(str(parts[-1])).compute()
        moved = str(early.StudyInstanceUID.iloc[0])
        archive._store.studies[moved].attrs["00080020"] = {
            "vr": "DA",
            "Value": [max(late.StudyDate).strftime("%Y%m%d")],
        }
        parts[-1].unlink()
        (directory / "_checkpoints" / f"{parts[-1].stem[5:]}.jsonl").unlink()
        with pytest.raises(CrawlIncompleteError) as info:
            crawl_to_parquet(archive.url, out=tmp_path, client=cluster, shards=3, depth="study")
    (failure,) = info.value.failures
    assert str(failure.query) == f"{directory.name} (its parts together)"
    assert str(failure.error).startswith(f"1 study is in more than one part ({moved!r} in ")
    assert parts[0].name in str(failure.error)
    assert parts[-1].name in str(failure.error)


@pytest.mark.parametrize("shards", [0, -1, 2.0])
def test_shards_must_be_a_positive_int_before_anything_runs(
    tmp_path: pathlib.Path, shards: Any
) -> None:
    with pytest.raises(ValueError, match="shards must be a positive int"):
        crawl_to_parquet("http://127.0.0.1:9/dicom-web", out=tmp_path / "out", shards=shards)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("depth", "shown"),
    [
        ("studies", "'studies'"),
        ("\u017ftudy", "'\u017ftudy'"),  # "ſtudy".upper() is "STUDY"
        (b"study", "b'study'"),
        (None, "None"),
        ("x" * 5000, "'" + "x" * 58 + "\u2026"),  # cut: not a 5 KB message
    ],
)
def test_depth_must_be_a_level_before_anything_runs(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, depth: Any, shown: str
) -> None:
    """The house message naming the levels, not the enum's "'STUDIES' is not a valid
    QueryLevel"; checked before dask is even imported (so before any cluster starts)."""
    for name in ("dask.dataframe", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError
    with pytest.raises(ValueError, match=r"^depth must be ") as info:
        crawl_to_parquet("http://127.0.0.1:9/dicom-web", out=tmp_path / "out", depth=depth)
    assert str(info.value) == (
        f"depth must be 'study', 'series' or 'instance' (or a QueryLevel), not {shown}"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("shards", 0),
        ("shard_concurrency", "4"),
        ("max_concurrency", True),
        ("urls", []),
        ("query", 5),
    ],
)
def test_every_argument_is_checked_before_dask_is_imported(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, option: str, value: Any
) -> None:
    """A bad argument is its own ValueError or QueryTypeError, not an ImportError where dask
    is missing, nor found only after a cluster started."""
    for name in ("dask.dataframe", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError
    given: dict[str, Any] = {"urls": "http://127.0.0.1:9/dicom-web", option: value}
    with pytest.raises((ValueError, TypeError)) as info:
        crawl_to_parquet(out=tmp_path / "out", **given)
    assert not isinstance(info.value, ImportError)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("concurrency", [0, -1, "4", 2.0, True])
def test_shard_concurrency_must_be_a_positive_int_before_anything_runs(
    tmp_path: pathlib.Path, concurrency: Any
) -> None:
    # not a TypeError after the cluster started ("4"), nor every archive's planning failing
    # on its workers (-1), nor the default taken for it (0)
    with pytest.raises(ValueError, match="shard_concurrency must be a positive int"):
        crawl_to_parquet(
            "http://127.0.0.1:9/dicom-web", out=tmp_path / "out", shard_concurrency=concurrency
        )
    assert not (tmp_path / "out").exists()


def _junk_instances() -> list[dict[str, Any]]:
    """Two studies' instances whose Rows cannot be read (a US value "tall")."""
    return [
        {
            "0020000D": {"vr": "UI", "Value": [f"1.2.9.{n}"]},
            "0020000E": {"vr": "UI", "Value": [f"1.2.9.{n}.1"]},
            "00080018": {"vr": "UI", "Value": [f"1.2.9.{n}.1.1"]},
            "00080020": {"vr": "DA", "Value": [f"2024010{n}"]},
            "00080060": {"vr": "CS", "Value": ["OT"]},
            "00280010": {"vr": "US", "Value": ["tall"]},
        }
        for n in (1, 2)
    ]


def test_the_nulled_values_of_every_shard_are_reported_and_warned_of(
    cluster: Any, tmp_path: pathlib.Path
) -> None:
    reports: list[Any] = []
    warned = pytest.warns(UserWarning, match=r"^crawl_to_parquet: 2 values null, .*: Rows 2$")
    with FakeArchive(_junk_instances()).run_in_thread() as archive, warned:
        frame = crawl_to_parquet(
            archive.url,
            out=tmp_path,
            client=cluster,
            shards=2,
            on_shard=lambda url, report: reports.append(report),
        )
    assert sorted(report.nulled for report in reports) == [(("Rows", 1),), (("Rows", 1),)]
    assert frame.compute()["Rows"].isna().all()


def test_the_cli_on_a_cluster_names_the_nulled_values_once(
    cluster: Any, tmp_path: pathlib.Path
) -> None:
    import io

    from aqido.cli import EXIT_OK, main

    out, err = io.StringIO(), io.StringIO()
    with FakeArchive(_junk_instances()).run_in_thread() as archive:
        argv = ["crawl", archive.url, "--out", str(tmp_path), "--format", "parquet"]
        argv += ["--shards", "2", "--scheduler", cluster.scheduler.address]
        status = main(argv, stdout=out, stderr=err, environ={})  # a warning would be an error
    assert status == EXIT_OK, err.getvalue()
    assert err.getvalue().count("; 1 value null, not readable as one value") == 2
    assert (
        out.getvalue()
        .rstrip("\n")
        .endswith("; 2 values null, not readable as one value of their column's type: Rows 2")
    )


def test_the_frame_holds_only_this_calls_archives(cluster: Any, tmp_path: pathlib.Path) -> None:
    with FakeArchive(SYNTH).run_in_thread() as one, FakeArchive(OTHER).run_in_thread() as two:
        crawl_to_parquet(one.url, out=tmp_path, client=cluster, shards=2)
        rows = crawl_to_parquet(two.url, out=tmp_path, client=cluster, shards=2).compute()
        expected = single_process(two.url)
    assert len(rows) == len(expected)
    assert keys(rows) == expected


def test_two_calls_at_once_on_one_cluster_each_write_their_own_parts(
    cluster: Any, tmp_path: pathlib.Path
) -> None:
    # Found by review: a shard task's key was the archive's and the shard's name alone, and a
    # key is the scheduler's: a second call on the same cluster (another output directory,
    # another depth) got the first call's tasks for its own, so its parts were never written
    # (an untyped FileNotFoundError) or, into one directory, were the other call's depth.
    results: dict[str, Any] = {}
    with FakeArchive(OTHER, latency=0.05).run_in_thread() as archive:

        def call(name: str, depth: str) -> None:
            try:
                frame = crawl_to_parquet(
                    archive.url, out=tmp_path / name, client=cluster, shards=3, depth=depth
                )
                results[name] = frame.compute()
            except Exception as exc:  # asserted below
                results[name] = exc

        threads = [
            threading.Thread(target=call, args=args)
            for args in (("instances", "instance"), ("studies", "study"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results["instances"]) == 12 * 1 * 3, results["instances"]
    assert len(results["studies"]) == 12, results["studies"]
    assert "SOPInstanceUID" not in results["studies"].columns
    for name in ("instances", "studies"):
        assert len(list((tmp_path / name).glob("archive=*/part-*.parquet"))) == 3


def test_a_call_with_another_limit_on_the_same_cluster_is_not_refused(
    cluster: Any, tmp_path: pathlib.Path
) -> None:
    # Found by review: the archive's Semaphore was named after the archive alone, and a
    # Semaphore keeps the max_leases it was made with: a later call on the same cluster with
    # another limit failed every shard ("Inconsistent max leases: 2, expected: 4").
    with FakeArchive(OTHER).run_in_thread() as archive:
        expected = single_process(archive.url)
        for name, limits in (("four", (4, 1)), ("two", (8, 4))):
            max_concurrency, shard_concurrency = limits
            rows = crawl_to_parquet(
                archive.url,
                out=tmp_path / name,
                client=cluster,
                shards=2,
                max_concurrency=max_concurrency,
                shard_concurrency=shard_concurrency,
            ).compute()
            assert keys(rows) == expected


def test_a_relative_output_directory_is_this_processs_not_the_workers(
    cluster: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: a relative `out` was sent to the workers as it was, and a worker
    # takes it from its own working directory (the one it started in, or another machine's):
    # the parts were written there, and reading them here failed (an untyped
    # FileNotFoundError) or read another run's parts that this directory held.
    monkeypatch.chdir(tmp_path)  # not the directory the cluster's workers started in
    with FakeArchive(OTHER).run_in_thread() as archive:
        rows = crawl_to_parquet(archive.url, out="crawl-out", client=cluster, shards=2).compute()
        expected = single_process(archive.url)
    assert keys(rows) == expected
    assert len(list(tmp_path.glob("crawl-out/archive=*/part-*.parquet"))) == 2


def test_a_shard_that_keeps_failing_is_reported_by_name(
    cluster: Any, tmp_path: pathlib.Path
) -> None:
    broken = OTHER.studies[0].study_instance_uid
    with FakeArchive(OTHER).run_in_thread() as archive:
        url = archive.url
        archive.fail(f"/studies/{broken}/series", "500")
        with pytest.raises(CrawlIncompleteError) as info:
            crawl_to_parquet(
                archive.url, out=tmp_path, client=cluster, shards=3, task_retries=1, retries=0
            )
    (failure,) = info.value.failures
    assert "archive=127.0.0.1_" in str(failure.query)
    assert "date-" in str(failure.query)
    # the worker's own exception, as the shard's crawl raised it: its failures, its status
    assert type(failure.error) is CrawlIncompleteError
    (inner,) = failure.error.failures
    assert isinstance(inner.error, ServerError)
    assert inner.error.status == 500
    assert inner.error.url == f"{url}/studies/{broken}/series"
    parts = list(tmp_path.glob("archive=*/part-*.parquet"))
    assert len(parts) == 2  # the other shards are written


def test_several_archives_are_partitioned_by_archive(cluster: Any, tmp_path: pathlib.Path) -> None:
    with FakeArchive(SYNTH).run_in_thread() as one, FakeArchive(OTHER).run_in_thread() as two:
        rows = crawl_to_parquet(
            [one.url, two.url], out=tmp_path, client=cluster, shards=2
        ).compute()
        expected_one, expected_two = single_process(one.url), single_process(two.url)
    by_archive = {str(name): keys(group) for name, group in rows.groupby("archive", observed=True)}
    assert sorted(by_archive.values(), key=len) == [expected_two, expected_one]


def test_an_archive_whose_planning_fails_is_named_and_the_others_are_crawled(
    cluster: Any, tmp_path: pathlib.Path
) -> None:
    from aqido._shards import archive_dirname

    with FakeArchive(SYNTH).run_in_thread() as one, FakeArchive(OTHER).run_in_thread() as two:
        one.fail("/studies", "500")  # its study listing, so its plan, fails
        with pytest.raises(CrawlIncompleteError) as info:
            crawl_to_parquet(
                [one.url, two.url],
                out=tmp_path,
                client=cluster,
                shards=2,
                task_retries=0,
                retries=0,
            )
        expected_two = single_process(two.url)
        name_one, name_two = archive_dirname(one.url), archive_dirname(two.url)
        url_one = one.url
    (failure,) = info.value.failures
    assert str(failure.query).startswith(f"{name_one} (planning its shards)")
    # the planning task's own exception (its listing's crawl), not a wrapper of its text
    assert type(failure.error) is CrawlIncompleteError
    (inner,) = failure.error.failures
    assert isinstance(inner.error, ServerError)
    assert inner.error.status == 500
    assert inner.error.url == f"{url_one}/studies"
    rows = dd.read_parquet(sorted(str(p) for p in (tmp_path / name_two).glob("part-*.parquet")))
    assert keys(rows.compute()) == expected_two


def test_killing_a_worker_mid_run_still_ends_complete(tmp_path: pathlib.Path) -> None:
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as local,
        distributed.Client(local) as client,
        FakeArchive(SYNTH, latency=0.01).run_in_thread() as archive,
    ):
        expected = single_process(archive.url)
        done = threading.Event()

        def kill_one(url: str, report: Any) -> None:
            if done.is_set():
                return
            done.set()
            pids = client.run(os.getpid)
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)

        rows = crawl_to_parquet(
            archive.url, out=tmp_path, client=client, shards=8, on_shard=kill_one, task_retries=3
        ).compute()
        assert done.is_set()
    assert len(rows) == len(expected)
    assert keys(rows) == expected

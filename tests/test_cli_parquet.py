"""``aqido crawl --format parquet``: in one process and on a local Dask cluster.

Expected rows come from a single-process crawl of the same in-process archive.
"""

from __future__ import annotations

import io
import pathlib

import pytest

from aqido import QidoRS
from aqido.cli import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, main
from aqido.testing import FakeArchive, SyntheticArchive

pq = pytest.importorskip("pyarrow.parquet")

SYNTH = SyntheticArchive(seed=31, studies=24, series_per_study=2, instances_per_series=2)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err, environ={})
    return status, out.getvalue(), err.getvalue()


def rows(directory: pathlib.Path) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for part in sorted(directory.glob("archive=*/part-*.parquet")):
        found.extend(pq.read_table(part).to_pylist())
    return found


def expected(url: str, depth: str) -> set[tuple[object, ...]]:
    with QidoRS(url) as client:
        studies = list(client.crawl(depth=depth.upper()))
    if depth == "study":
        return {(s.StudyInstanceUID,) for s in studies}
    if depth == "series":
        return {(s.StudyInstanceUID, se.SeriesInstanceUID) for s in studies for se in s.series}
    return {
        (s.StudyInstanceUID, se.SeriesInstanceUID, i.SOPInstanceUID)
        for s in studies
        for se in s.series
        for i in se.instances
    }


def keys(found: list[dict[str, object]], depth: str) -> list[tuple[object, ...]]:
    names = {"study": 1, "series": 2, "instance": 3}[depth]
    columns = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")[:names]
    return [tuple(row[c] for c in columns) for row in found]


@pytest.mark.parametrize("depth", ["study", "series", "instance"])
def test_parquet_in_one_process_is_the_single_process_crawl(
    tmp_path: pathlib.Path, depth: str
) -> None:
    with FakeArchive(SYNTH).run_in_thread() as archive:
        status, out, err = run(
            "crawl", archive.url, "--out", str(tmp_path), "--format", "parquet",
            "--depth", depth, "--shards", "3",
        )  # fmt: skip
        want = expected(archive.url, depth)
    assert status == EXIT_OK, err
    got = keys(rows(tmp_path), depth)
    assert len(got) == len(want)
    assert set(got) == want
    assert "parquet: 3 shards" in out
    assert err.count("shard ") == 3


def test_shard_lines_and_the_summary_read_as_words(tmp_path: pathlib.Path) -> None:
    # "1 shards, 1 new rows" and "shard 1 date-- of URL: 1 studies, 1 rows" read as typos
    one = SyntheticArchive(seed=31, studies=1, series_per_study=1, instances_per_series=1)
    with FakeArchive(one).run_in_thread() as archive:
        status, out, err = run(
            "crawl", archive.url, "--out", str(tmp_path / "a"), "--format", "parquet",
            "--depth", "study",
        )  # fmt: skip
        assert (status, err) == (
            EXIT_OK,
            f"shard 1 (every study date) of {archive.url}: 1 study, 1 row\n",
        )
        assert out.startswith("parquet: 1 shard, 1 new row in ")
        status, out, err = run(
            "crawl", archive.url, "--out", str(tmp_path / "b"), "--format", "parquet",
            "--depth", "study", "--date-from", "2000-01-01",
        )  # fmt: skip
        assert status == EXIT_OK
        assert err == f"shard 1 (study dates from 2000-01-01) of {archive.url}: 1 study, 1 row\n"


def test_shard_labels() -> None:
    from aqido._cli.parquet import shard_label

    assert shard_label("date-20100101-20101231") == "study dates 2010-01-01 to 2010-12-31"
    assert shard_label("date-20100101-20100101") == "study date 2010-01-01"
    assert shard_label("date--20101231") == "study dates up to 2010-12-31"
    assert shard_label("undated-0123456789ab") == "undated studies 0123456789ab"
    assert shard_label("other\x1bname") == "other\\x1bname"  # another aqido's plan: escaped


def test_a_rerun_writes_nothing_new(tmp_path: pathlib.Path) -> None:
    with FakeArchive(SYNTH).run_in_thread() as archive:
        assert run("crawl", archive.url, "--out", str(tmp_path), "--format", "parquet")[0] == 0
        archive.reset_stats()
        status, _, err = run("crawl", archive.url, "--out", str(tmp_path), "--format", "parquet")
        assert archive.requests == []
    assert status == EXIT_OK
    assert "already written" in err


def test_a_failed_shard_is_exit_3_and_named(tmp_path: pathlib.Path) -> None:
    broken = SYNTH.studies[0].study_instance_uid
    with FakeArchive(SYNTH).run_in_thread() as archive:
        archive.fail(f"/studies/{broken}/series", "500")
        status, _, err = run(
            "crawl", archive.url, "--out", str(tmp_path), "--format", "parquet",
            "--shards", "2", "--retries", "0",
        )  # fmt: skip
    assert status == EXIT_INCOMPLETE
    assert "could not fetch" in err
    assert "date-" in err
    assert len(list(tmp_path.glob("archive=*/part-*.parquet"))) == 1


def test_a_failed_shard_s_long_query_is_cut_in_its_line(tmp_path: pathlib.Path) -> None:
    # A shard of a query naming 24 studies (1,600 characters): its line shows the query's
    # first 150 characters (the archive and the shard first) and how many more it has.
    uids = [s.study_instance_uid for s in SYNTH.studies]
    with FakeArchive(SYNTH).run_in_thread() as archive:
        archive.fail(f"/studies/{uids[0]}/series", "500")
        status, _, err = run(
            "crawl", archive.url, "--out", str(tmp_path), "--format", "parquet",
            "--shards", "2", "--retries", "0", "--study", ",".join(uids),
        )  # fmt: skip
        url = archive.url
    assert status == EXIT_INCOMPLETE
    (line,) = [line for line in err.splitlines() if line.startswith("could not fetch: ")]
    shown, _, rest = line.partition(" more characters): ")
    assert shown.startswith(f"could not fetch: {url} date-")
    assert f"/studies?StudyInstanceUID={uids[0]}," in shown
    assert len(shown) == len("could not fetch: ") + 150 + len("… (1,234")
    assert rest.startswith("crawl incomplete: 1 part(s) could not be fetched")
    assert uids[-1] not in line  # the end of the list, left out


def test_a_failed_shard_s_missed_parts_are_lines_of_their_own(tmp_path: pathlib.Path) -> None:
    # The shard's CrawlIncompleteError has a line per missed part: each is a line of stderr,
    # indented under the shard's, not a literal "\\n" in one long line.
    broken = SYNTH.studies[0].study_instance_uid
    with FakeArchive(SYNTH).run_in_thread() as archive:
        archive.fail(f"/studies/{broken}/series", "500")
        archive.fail(f"/studies/{SYNTH.studies[1].study_instance_uid}/series", "500")
        status, _, err = run(
            "crawl", archive.url, "--out", str(tmp_path), "--format", "parquet",
            "--shards", "1", "--retries", "0",
        )  # fmt: skip
    assert status == EXIT_INCOMPLETE
    assert "\\n" not in err
    lines = err.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("could not fetch: ")]
    assert ": crawl incomplete: 2 part(s) could not be fetched (fetched " in lines[at]
    missed = lines[at + 1 : at + 3]
    assert len(lines) == at + 3
    assert all(line.startswith("    - /studies/") for line in missed), missed
    assert any(
        line.startswith(f"    - /studies/{broken}/series: ServerError: HTTP 500") for line in missed
    )


def test_two_archives_on_two_workers(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("distributed")
    other = SyntheticArchive(seed=32, studies=6, series_per_study=1, instances_per_series=2)
    with (
        FakeArchive(SYNTH).run_in_thread() as one,
        FakeArchive(other).run_in_thread() as two,
    ):
        status, _, err = run(
            "crawl", one.url, two.url, "--out", str(tmp_path), "--format", "parquet",
            "--workers", "2",
        )  # fmt: skip
        want = expected(one.url, "instance") | expected(two.url, "instance")
    assert status == EXIT_OK, err
    got = keys(rows(tmp_path), "instance")
    assert len(got) == len(want)
    assert set(got) == want
    assert len(list(tmp_path.glob("archive=*"))) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["http://127.0.0.1:9/a", "http://127.0.0.1:9/b", "--out", "x.jsonl"], "several URLs"),
        (["http://127.0.0.1:9/a", "--out", "x.jsonl", "--workers", "2"], "--format parquet"),
        (
            ["http://127.0.0.1:9/a", "--out", "d", "--format", "parquet", "--workers", "2",
             "--scheduler", "tcp://127.0.0.1:1"],
            "not both",
        ),
        # a parquet directory is resumed: --overwrite kept the old parts and said nothing
        (["http://127.0.0.1:9/a", "--out", "d", "--format", "parquet", "--overwrite"],
         "--overwrite and --force are for --format jsonl"),
        (["http://127.0.0.1:9/a", "--out", "d", "--format", "parquet", "--force"],
         "--overwrite and --force are for --format jsonl"),
        # ignored: a server's answers were not paged, the listing could be too large
        (["http://127.0.0.1:9/a", "--out", "d", "--format", "parquet", "--page-size", "5"],
         "--page-size is for --format jsonl, not parquet"),
        # crawl_to_parquet's ValueError traceback: it divides a number among the workers
        (["http://127.0.0.1:9/a", "--out", "d", "--format", "parquet", "--workers", "1",
          "--concurrency", "auto"], "--concurrency auto is not available with --workers"),
        # a name from argv's bytes: pyarrow's UnicodeEncodeError once every shard was crawled
        (["http://127.0.0.1:9/a", "--out", "d\udcff", "--format", "parquet"],
         "needs a directory name in UTF-8"),
    ],
)  # fmt: skip
def test_usage_errors(tmp_path: pathlib.Path, argv: list[str], message: str) -> None:
    status, _, err = run("crawl", *argv)
    assert status == EXIT_USAGE
    assert message in err


@pytest.mark.parametrize("address", ["notanaddress", "tcp://\udcff:1"])
def test_a_scheduler_that_is_not_an_address_is_a_usage_error(
    tmp_path: pathlib.Path, address: str
) -> None:
    # distributed.Client raised ValueError (UnicodeError): a traceback, exit 1
    pytest.importorskip("distributed")
    out = str(tmp_path / "d")
    argv = ["http://127.0.0.1:9/a", "--out", out, "--format", "parquet", "--scheduler", address]
    status, _, err = run("crawl", *argv)
    assert status == EXIT_USAGE
    assert err.startswith("aqido: error: --scheduler: not a scheduler address (")
    assert err.count("\n") == 1


def test_a_ca_bundle_reaches_the_dask_workers(tmp_path: pathlib.Path) -> None:
    # the client's ssl= was the SSLContext --cacert made: not picklable, a TypeError traceback
    pytest.importorskip("distributed")
    trustme = pytest.importorskip("trustme")
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    out = tmp_path / "out"
    with FakeArchive(SYNTH).run_in_thread() as archive:
        argv = [archive.url, "--out", str(out), "--format", "parquet", "--depth", "study"]
        status, _, err = run("crawl", *argv, "--workers", "1", "--cacert", str(bundle))
    assert status == EXIT_OK, err
    assert len(rows(out)) == 24


def test_a_client_certificate_with_dask_is_a_usage_error(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("distributed")
    trustme = pytest.importorskip("trustme")
    cert = tmp_path / "client.pem"
    trustme.CA().issue_cert("client@example").private_key_and_cert_chain_pem.write_to_path(
        str(cert)
    )
    argv = ["http://127.0.0.1:9/a", "--out", str(tmp_path / "d"), "--format", "parquet"]
    status, _, err = run("crawl", *argv, "--workers", "1", "--cert", str(cert))
    assert status == EXIT_USAGE
    assert "--cert/--key cannot be sent to Dask workers" in err


def test_a_study_re_dated_between_two_shards_is_not_counted_twice(tmp_path: pathlib.Path) -> None:
    # The first shard's part holds the study at its old date; the last shard, crawled after
    # the study was moved to its range, finds it again: the output would count it twice.
    with FakeArchive(SYNTH).run_in_thread() as archive:
        first = ("crawl", archive.url, "--out", str(tmp_path), "--format", "parquet")
        status, _, err = run(*first, "--depth", "study", "--shards", "3")
        assert status == EXIT_OK, err
        parts = sorted(tmp_path.glob("archive=*/part-*.parquet"))
        assert len(parts) == 3
        early = pq.read_table(parts[0]).to_pylist()
        late = pq.read_table(parts[-1]).to_pylist()
        moved = str(early[0]["StudyInstanceUID"])
        new_date = max(row["StudyDate"] for row in late).strftime("%Y%m%d")
        study = archive._store.studies[moved]
        study.attrs["00080020"] = {"vr": "DA", "Value": [new_date]}
        parts[-1].unlink()  # the last shard is crawled again (as after an interruption)
        for checkpoint in tmp_path.glob(f"archive=*/_checkpoints/{parts[-1].stem[5:]}.jsonl"):
            checkpoint.unlink()
        status, _, err = run(*first, "--depth", "study", "--shards", "3")
    assert status == EXIT_INCOMPLETE, err
    assert "1 study is in more than one part" in err
    assert repr(moved) in err
    assert parts[0].name in err
    assert parts[-1].name in err
    assert "delete those parts and their checkpoints" in err
    # each part is still what its shard's crawl found: the error says which to delete
    assert moved in {row["StudyInstanceUID"] for row in pq.read_table(parts[-1]).to_pylist()}

"""The ``aqido`` command line through its real entry points, against the in-process archive.

``main(argv, stdout=..., stderr=..., environ=...)`` is what the console script
runs; a few tests also run ``python -m aqido`` in a subprocess (exit codes,
no traceback, kill and resume).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import os
import pathlib
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aqido.checkpoint import CrawlCheckpoint
from aqido.cli import (
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    build_parser,
    format_value,
    main,
)
from aqido.errors import CheckpointError, UnauthorizedError
from aqido.testing import FakeArchive, SyntheticArchive
from tests.terminal import run_on_pty

ROOT = pathlib.Path(__file__).resolve().parent.parent
SYNTHETIC = SyntheticArchive(seed=11, studies=12, series_per_study=2, instances_per_series=3)
STUDY_UIDS = [s.study_instance_uid for s in SYNTHETIC.studies]


@pytest.fixture(scope="module")
def archive() -> Iterator[FakeArchive]:
    with FakeArchive(SYNTHETIC).run_in_thread() as running:
        yield running


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err, environ=env or {})
    return status, out.getvalue(), err.getvalue()


def run_module(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aqido", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", ""), **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )


def uid_of(item: dict[str, Any], tag: str = "0020000D") -> str:
    value: str = item[tag]["Value"][0]
    return value


# --- search --------------------------------------------------------------------------------


def test_search_pipes_jsonl_by_default(archive: FakeArchive) -> None:
    status, out, err = run("search", archive.url)
    assert (status, err) == (EXIT_OK, "")
    items = [json.loads(line) for line in out.splitlines()]
    assert [uid_of(i) for i in items] == STUDY_UIDS
    assert items[0]["00100010"]["vr"] == "PN"


def test_search_json_is_the_dicom_json_array(archive: FakeArchive) -> None:
    study = SYNTHETIC.studies[3]
    status, out, _ = run("search", archive.url, "--PatientID", study.patient_id, "--format", "json")
    assert status == EXIT_OK
    items = json.loads(out)
    expected = [s.study_instance_uid for s in SYNTHETIC.studies if s.patient_id == study.patient_id]
    assert [uid_of(i) for i in items] == expected


def test_search_csv_has_a_column_per_keyword(archive: FakeArchive) -> None:
    status, out, _ = run("search", archive.url, "--format", "csv", "--include", "PatientAge")
    assert status == EXIT_OK
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["StudyInstanceUID"] for r in rows] == STUDY_UIDS
    first = SYNTHETIC.studies[0]
    assert rows[0]["PatientName"] == first.patient_name
    assert (
        rows[0]["StudyDate"]
        == f"{first.study_date[:4]}-{first.study_date[4:6]}-{first.study_date[6:]}"
    )
    assert rows[0]["ModalitiesInStudy"] == "\\".join(first.modalities_in_study)
    assert rows[0]["PatientAge"] == first.patient_age


def test_search_table_lists_the_usual_columns(archive: FakeArchive) -> None:
    status, out, _ = run("search", archive.url, "--format", "table", "--limit", "3")
    assert status == EXIT_OK
    lines = out.splitlines()
    assert lines[0] == "3 study result(s)"
    assert lines[1].split()[:3] == ["PatientName", "PatientID", "StudyDate"]
    for study, line in zip(SYNTHETIC.studies[:3], lines[3:], strict=True):
        assert study.study_instance_uid in line
        assert study.patient_id in line


def test_a_broken_pipe_on_a_given_stream_leaves_the_process_stdout_alone(
    archive: FakeArchive, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """main(stdout=...) whose stream breaks (a pipe's reader gone) ends quietly with 0, and
    neither points the process's own stdout at /dev/null nor leaks a descriptor per call."""

    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    fds = pathlib.Path("/proc/self/fd")
    with open(tmp_path / "stdout.txt", "w", encoding="utf-8") as process_stdout:
        monkeypatch.setattr(sys, "stdout", process_stdout)
        gc.collect()  # an earlier test's unreferenced socket must not close mid-measurement
        before = len(list(fds.iterdir())) if fds.is_dir() else 0
        for _ in range(3):
            status = main(["search", archive.url], stdout=Broken(), stderr=io.StringIO())
            assert status == EXIT_OK
        after = len(list(fds.iterdir())) if fds.is_dir() else 0
        # the archive's server thread closes its end of each connection a moment later
        deadline = time.monotonic() + 5.0
        while after > before and time.monotonic() < deadline:
            time.sleep(0.02)
            after = len(list(fds.iterdir()))
        process_stdout.write("still the process's stdout\n")
    assert (tmp_path / "stdout.txt").read_text(encoding="utf-8") == "still the process's stdout\n"
    # fewer is not a leak: a connection of an earlier test may still close meanwhile (seen in CI)
    assert after <= before


@pytest.mark.anyio
async def test_main_inside_a_running_event_loop_is_a_usage_error(
    archive: FakeArchive, tmp_path: pathlib.Path
) -> None:
    """A notebook cell or an async function calling main(): one line and exit 2, not
    asyncio.run's bare RuntimeError and a "coroutine ... was never awaited" warning."""
    parquet = ["crawl", archive.url, "--format", "parquet", "--out", str(tmp_path / "pq")]
    for argv in (["search", archive.url], parquet):
        out, err = io.StringIO(), io.StringIO()
        assert main(argv, stdout=out, stderr=err) == EXIT_USAGE
        assert "already runs one" in err.getvalue()
        assert out.getvalue() == ""
    assert not (tmp_path / "pq").exists()


def test_search_series_and_instances(archive: FakeArchive) -> None:
    study = SYNTHETIC.studies[1]
    series = study.series[1]
    status, out, _ = run(
        "search", archive.url, "--level", "series", "--study", study.study_instance_uid
    )
    assert status == EXIT_OK
    assert [uid_of(json.loads(x), "0020000E") for x in out.splitlines()] == [
        s.series_instance_uid for s in study.series
    ]
    status, out, _ = run(
        "search",
        archive.url,
        "--level=instance",
        f"--study={study.study_instance_uid}",
        f"--series={series.series_instance_uid}",
        "--format=jsonl",
    )
    assert status == EXIT_OK
    assert [uid_of(json.loads(x), "00080018") for x in out.splitlines()] == [
        i.sop_instance_uid for i in series.instances
    ]
    # relational: every CT instance, no parent UIDs needed
    status, out, _ = run(
        "search", archive.url, "--level", "instance", "--relational", "--Modality", "CT"
    )
    ct = [i.sop_instance_uid for s in SYNTHETIC.series if s.modality == "CT" for i in s.instances]
    assert status == EXIT_OK
    assert ct
    assert sorted(uid_of(json.loads(x), "00080018") for x in out.splitlines()) == sorted(ct)


def test_search_dates_names_and_limit(archive: FakeArchive) -> None:
    dates = sorted(s.study_date for s in SYNTHETIC.studies)
    low, high = dates[2], dates[8]
    status, out, _ = run(
        "search", archive.url, "--date-from", low, "--date-to", f"{high[:4]}-{high[4:6]}-{high[6:]}"
    )
    assert status == EXIT_OK
    expected = [s.study_instance_uid for s in SYNTHETIC.studies if low <= s.study_date <= high]
    assert [uid_of(json.loads(x)) for x in out.splitlines()] == expected
    status, out, _ = run("search", archive.url, "--limit", "5")
    assert [uid_of(json.loads(x)) for x in out.splitlines()] == STUDY_UIDS[:5]
    name = SYNTHETIC.studies[0].patient_name.split("^")[0]
    status, out, _ = run("search", archive.url, "--PatientName", f"{name}*")
    found = [uid_of(json.loads(x)) for x in out.splitlines()]
    assert SYNTHETIC.studies[0].study_instance_uid in found
    assert archive.requests[-1].query_string == f"PatientName={name}*"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--study", "1.2.03"], "StudyInstanceUID"),
        (["--date-from", "2024-13-01"], "not a date"),
        (["--filter", "PatientNmae=x"], "PatientNmae"),
        (["--filter", "novalue"], "KEYWORD=VALUE"),
        # the last one won, unseen: a search for M answered as if it were the one asked
        (["--filter", "PatientSex=F", "--filter", "PatientSex=M"], "given twice"),
        (["--filter", "00100040=F", "--filter", "PatientSex=M"], "same attribute"),
        (["--level", "patient"], "invalid choice"),
        (["--limit", "0"], "at least 1"),
        (["--no-such-option"], "unrecognized arguments"),
        (["--level", "series"], "StudyInstanceUID"),
        (["--header", "no colon"], "NAME: VALUE"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    archive: FakeArchive, argv: list[str], message: str
) -> None:
    before = len(archive.requests)
    status, out, err = run("search", archive.url, *argv)
    assert status == EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("aqido: error: ")
    assert message in err
    assert len(archive.requests) == before  # nothing was sent


def test_bad_url_is_a_usage_error() -> None:
    status, _, err = run("search", "ftp://example.org/dicom-web")
    assert status == EXIT_USAGE
    assert err.count("\n") == 1
    assert "http" in err


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_server_is_one_line_without_traceback() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/dicom-web"
    result = run_module("search", url, "--retries", "0")
    assert result.returncode == EXIT_ERROR
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("aqido: cannot reach the server: ")
    assert "Traceback" not in result.stderr
    debug = run_module("search", url, "--retries", "0", "--debug")
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr


def test_debug_before_the_command_is_accepted(archive: FakeArchive, tmp_path: pathlib.Path) -> None:
    # `aqido --debug crawl ...` was refused ("unrecognized arguments"), with a traceback
    status, out, err = run("--debug", "search", archive.url, "--limit", "1")
    assert status == EXIT_OK
    assert len(out.splitlines()) == 1
    assert "DEBUG aqido: GET " in err
    path = tmp_path / "debug.jsonl"
    status, _, err = run("--debug", "crawl", archive.url, "--depth", "study", "--out", str(path))
    assert status == EXIT_OK
    assert "DEBUG aqido: GET " in err
    assert len(_lines(path)) == len(STUDY_UIDS)
    status, _, err = run("search", archive.url, "--limit", "1")  # and off without it
    assert (status, err) == (EXIT_OK, "")


def test_http_errors_name_the_status() -> None:
    with FakeArchive(SYNTHETIC, basic_auth=("ann", "s3cret-pw")).run_in_thread() as locked:
        status, out, err = run("search", locked.url, "--retries", "0")
        assert status == EXIT_ERROR
        assert out == ""
        assert err.count("\n") == 1
        assert "HTTP 401" in err
        locked.fail("/studies", "500")
        status, out, err = run(
            "search",
            locked.url,
            "--user",
            "ann",
            "--retries",
            "0",
            env={"AQIDO_PASSWORD": "s3cret-pw"},
        )
        assert status == EXIT_ERROR
        assert out == ""
        assert err.count("\n") == 1
        assert err.startswith("aqido: error: HTTP 500")


def test_credentials_are_used_and_never_echoed() -> None:
    password, token = "s3cret-pw", "tok-9f8e7d"
    with FakeArchive(SYNTHETIC, basic_auth=("ann", password)).run_in_thread() as locked:
        status, out, err = run(
            "search", locked.url, "--user", "ann", "--debug", env={"AQIDO_PASSWORD": password}
        )
        assert status == EXIT_OK
        assert len(out.splitlines()) == len(STUDY_UIDS)
        assert "DEBUG aqido: GET " in err  # the debug log is on, and still shows no secret
        assert password not in out + err
        status, out, err = run(
            "search", locked.url, "--user", "ann", "--password", "wrong-pw", "--retries", "0"
        )
        assert status == EXIT_ERROR
        assert "401" in err
        assert "wrong-pw" not in out + err
        with pytest.raises(UnauthorizedError) as raised:  # --debug: the exception propagates
            run("search", locked.url, "--user", "ann", "--password", "wrong-pw", "--debug")
        assert "wrong-pw" not in f"{raised.value!r} {raised.value} {raised.value.__cause__}"
        # no password and no terminal to ask on: a usage error, not a hang
        status, _, err = run("search", locked.url, "--user", "ann")
        assert status == EXIT_USAGE
        assert "AQIDO_PASSWORD" in err
    with FakeArchive(SYNTHETIC, bearer_token=token).run_in_thread() as locked:
        status, out, err = run(
            "search", locked.url, "--limit", "1", "--debug", env={"AQIDO_TOKEN": token}
        )
        assert status == EXIT_OK
        assert "DEBUG aqido: GET " in err
        assert token not in out + err
        status, out, err = run("search", locked.url, "--token", "bad-token-1", "--retries", "0")
        assert status == EXIT_ERROR
        assert "bad-token-1" not in out + err
        status, out, err = run(
            "search", locked.url, "--header", f"Authorization: Bearer {token}", "--limit", "1"
        )
        assert status == EXIT_OK
        assert token not in out + err
        sent = locked.requests[-1].headers
        assert sent["Authorization"] == f"Bearer {token}"


def test_password_in_the_url_is_not_echoed(archive: FakeArchive) -> None:
    url = archive.url.replace("http://", "http://ann:url-pw-77@").replace(
        str(archive.port), str(_closed_port())
    )
    status, out, err = run("search", url, "--retries", "0")
    assert status == EXIT_USAGE  # refused: credentials go in --user/AQIDO_PASSWORD or --token
    assert "url-pw-77" not in out + err


# --- crawl ---------------------------------------------------------------------------------


def _crawl(url: str, out: pathlib.Path, *extra: str) -> tuple[int, str, str]:
    return run("crawl", url, "--out", str(out), "--concurrency", "3", "--retries", "0", *extra)


def _records(path: pathlib.Path) -> list[dict[str, Any]]:
    """Every record of a crawl file: the header, the study lines, the end records."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _lines(path: pathlib.Path) -> list[str]:
    """The study lines of a crawl file (its results), in file order."""
    text = path.read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.startswith('{"StudyInstanceUID":')]


def _check_complete(path: pathlib.Path, query: str = "/studies", depth: str = "INSTANCE") -> None:
    """The file starts with its header and its last run ended complete."""
    records = _records(path)
    header = dict(records[0])
    assert header.pop("server").startswith("http://127.0.0.1:")  # the archive crawled
    assert header == {"aqido_crawl": 1, "query": query, "depth": depth}
    assert records[-1]["end"]["complete"] is True
    assert records[-1]["end"]["failures"] == []


def _portless(lines: list[str], archive: FakeArchive) -> list[str]:
    """The lines sorted, with the archive's URL (in RetrieveURL) made port-independent."""
    return sorted(line.replace(archive.url, "ARCHIVE") for line in lines)


@pytest.fixture(scope="module")
def reference(archive: FakeArchive, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The lines of an uninterrupted crawl of the archive (instance depth), in file order."""
    path = tmp_path_factory.mktemp("reference") / "all.jsonl"
    status, _out, err = _crawl(archive.url, path)
    assert (status, err) == (EXIT_OK, "")
    _check_complete(path)
    return _lines(path)


def test_crawl_writes_one_complete_study_per_line(
    reference: list[str], tmp_path: pathlib.Path
) -> None:
    assert sorted(json.loads(x)["StudyInstanceUID"] for x in reference) == sorted(STUDY_UIDS)
    for line in reference:
        record = json.loads(line)
        study = SYNTHETIC.study(record["StudyInstanceUID"])
        assert [uid_of(s["series"], "0020000E") for s in record["series"]] == [
            s.series_instance_uid for s in study.series
        ]
        for entry, series in zip(record["series"], study.series, strict=True):
            assert [uid_of(i, "00080018") for i in entry["instances"]] == [
                i.sop_instance_uid for i in series.instances
            ]
    path = tmp_path / "copy.jsonl"
    path.write_text("\n".join(reference) + "\n", encoding="utf-8")
    studies = list(CrawlCheckpoint.read_studies(path))
    assert [s.StudyInstanceUID for s in studies] == [
        json.loads(x)["StudyInstanceUID"] for x in reference
    ]
    assert sum(len(se.instances) for st in studies for se in st.series) == len(SYNTHETIC.instances)


def test_crawl_summary_and_series_depth(archive: FakeArchive, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "series.jsonl"
    status, out, err = _crawl(archive.url, path, "--depth", "series", "--ModalitiesInStudy", "CT")
    assert (status, err) == (EXIT_OK, "")
    ct = [s for s in SYNTHETIC.studies if "CT" in s.modalities_in_study]
    records = [json.loads(x) for x in _lines(path)]
    assert sorted(r["StudyInstanceUID"] for r in records) == sorted(
        s.study_instance_uid for s in ct
    )
    assert all(entry["instances"] == [] for r in records for entry in r["series"])
    summary = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines()[2:])
    assert summary["studies written"] == str(len(ct))
    assert summary["series"] == str(2 * len(ct))
    _check_complete(path, "/studies?ModalitiesInStudy=CT", "SERIES")


def test_failed_study_is_named_then_resume_fills_the_gap(
    archive: FakeArchive, reference: list[str], tmp_path: pathlib.Path
) -> None:
    broken = SYNTHETIC.studies[4].series[1].series_instance_uid
    path = tmp_path / "crawl.jsonl"
    with FakeArchive(SYNTHETIC).run_in_thread() as flaky:
        flaky.fail(broken, "500")
        status, _, err = _crawl(flaky.url, path)
        assert status == EXIT_INCOMPLETE
        failed = f"/studies/{STUDY_UIDS[4]}/series/{broken}/instances"
        assert f"aqido: could not fetch {failed}: HTTP 500" in err
        assert _records(path)[-1]["end"]["complete"] is False
        assert "--resume" in err.splitlines()[-1]
        assert len(_lines(path)) == len(STUDY_UIDS) - 1
        flaky.clear_faults()
        flaky.reset_stats()
        status, out, err = _crawl(flaky.url, path, "--resume")
        assert (status, err) == (EXIT_OK, "")
        # only the missing study's subtree was fetched again (plus the study list)
        assert {r.path.split("/")[3] for r in flaky.requests if r.path.count("/") > 2} == {
            STUDY_UIDS[4]
        }
        assert _portless(_lines(path), flaky) == _portless(reference, archive)
        _check_complete(path)
    assert "studies already in the file" in out


def test_a_long_failed_query_is_cut_in_its_line(tmp_path: pathlib.Path) -> None:
    # A listing of many UIDs that fails on its second page: the line names the query's
    # first 150 characters and how many more it has, not the whole 800-character list.
    uids = ",".join(STUDY_UIDS)
    query = f"/studies?StudyInstanceUID={uids}"
    with FakeArchive(SYNTHETIC, max_results=4).run_in_thread() as capped:
        capped.fail(lambda url: "offset=4" in url, "500")
        status, _, err = _crawl(capped.url, tmp_path / "cut.jsonl", "--study", uids)
    assert status == EXIT_INCOMPLETE, err
    (line,) = [line for line in err.splitlines() if line.startswith("aqido: could not fetch ")]
    shown = f"{query[:150]}… ({len(query) - 150:,} more characters)"
    assert line.startswith(f"aqido: could not fetch {shown}: HTTP 500")
    # The error's message repeats the URL, cut the same way: the line stays short.
    assert STUDY_UIDS[-1] not in line
    assert line.count("more characters)") == 2
    assert len(line) < 600, line


def _server_warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("aqido: server warning for ")]


def test_the_servers_warnings_are_printed_once_each_and_counted(tmp_path: pathlib.Path) -> None:
    with FakeArchive(SYNTHETIC, fuzzy_warning=True).run_in_thread() as warning:
        status, out, err = _crawl(
            warning.url, tmp_path / "fuzzy.jsonl", "--fuzzy", "--page-size", "5"
        )
        assert status == EXIT_OK, err
        (row,) = [line for line in out.splitlines() if "server warnings" in line]
        assert row.split()[-3:] == ["3", "(1", "distinct)"]  # the listing's 3 pages
        (line,) = _server_warnings(err)  # printed once
        assert "/studies?fuzzymatching=true" in line
        assert line.endswith('Only literal matching has been performed."')
        status, out, err = run("search", warning.url, "--fuzzy", "--format", "jsonl")
        assert status == EXIT_OK, err
        assert len(out.splitlines()) == len(STUDY_UIDS)
        (line,) = _server_warnings(err)
        assert "The fuzzymatching parameter is not supported" in line
        status, out, err = _crawl(warning.url, tmp_path / "plain.jsonl")
    assert status == EXIT_OK, err
    assert "server warnings" not in out
    assert _server_warnings(err) == []


@contextlib.contextmanager
def _one_answer_server(reply: bytes) -> Iterator[str]:
    """A loopback HTTP server giving every request ``reply`` (raw bytes): its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # to see `stop` (closing the socket does not wake accept())
    stop = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    connection.settimeout(30)
                    received = b""
                    while b"\r\n\r\n" not in received:
                        chunk = connection.recv(65536)
                        if not chunk:
                            break
                        received += chunk
                    connection.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web"
    finally:
        stop.set()
        thread.join(30)
        listener.close()


def test_a_servers_warning_is_printed_escaped() -> None:
    # The server's text goes to the terminal: its ESC sequences and BEL escaped, as any.
    body = json.dumps([{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]).encode()
    warning = b'299 pacs "\x1b]0;pwned\x07 see \x1b[31mred"'
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nWarning: %s\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (warning, len(body))
    ) + body
    with _one_answer_server(reply) as url:
        status, out, err = run("search", url, "--format", "jsonl")
    assert status == EXIT_OK, err
    assert json.loads(out)["0020000D"]["Value"] == ["1.2.3"]
    (line,) = _server_warnings(err)
    assert "\x1b" not in err
    assert "\x07" not in err
    assert line.endswith('299 pacs "\\x1b]0;pwned\\x07 see \\x1b[31mred"')
    with _one_answer_server(reply) as url:  # --debug prints every record itself: once, not twice
        status, out, err = run("search", url, "--format", "jsonl", "--debug")
    assert status == EXIT_OK, err
    assert "\x1b" not in err
    assert err.count("pwned") == 1, err
    assert "WARNING aqido.server: server warning for " in err


def test_resume_drops_a_truncated_last_line(
    archive: FakeArchive, reference: list[str], tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "cut.jsonl"
    _crawl(archive.url, path, "--depth", "instance")
    lines = path.read_text(encoding="utf-8").splitlines()
    keep, cut = lines[:6], lines[6]  # the header and 5 studies, then half a study
    path.write_bytes(("\n".join(keep) + "\n" + cut[: len(cut) // 2]).encode())
    status, out, err = _crawl(archive.url, path, "--resume")
    assert status == EXIT_OK
    assert "dropped an incomplete last line" in err
    assert re.search(r"studies already in the file\s+5$", out, flags=re.MULTILINE)
    assert sorted(_lines(path)) == sorted(reference)
    _check_complete(path)


@pytest.mark.skipif(not os.path.exists(os.devnull), reason="no /dev/null")
def test_out_that_is_not_a_regular_file_is_refused_before_crawling(
    archive: FakeArchive, tmp_path: pathlib.Path
) -> None:
    # /dev/null was crawled whole, then failed to sync (EINVAL, exit 1); a directory with
    # --resume was an IsADirectoryError
    for target, extra in ((os.devnull, ()), (os.devnull, ("--resume",)), (tmp_path, ("--resume",))):
        before = len(archive.requests)
        status, out, err = _crawl(archive.url, pathlib.Path(target), *extra)
        assert (status, out) == (EXIT_USAGE, "")
        assert err.count("\n") == 1
        assert "not a regular file" in err
        assert len(archive.requests) == before  # refused before anything was sent
    with pytest.raises(CheckpointError, match="not a regular file"):
        CrawlCheckpoint(os.devnull).lock()


def test_resume_refuses_another_crawl_and_overwrite_is_explicit(
    archive: FakeArchive, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "a.jsonl"
    assert _crawl(archive.url, path, "--depth", "series")[0] == EXIT_OK
    status, _, err = _crawl(archive.url, path)
    assert status == EXIT_USAGE
    assert "--resume" in err
    assert "--overwrite" in err
    status, _, err = _crawl(archive.url, path, "--resume", "--PatientID", "X")
    assert status == EXIT_USAGE
    assert "holds a crawl of '/studies' at depth SERIES, not '/studies?PatientID=X'" in err
    status, _, err = _crawl(archive.url, path, "--resume")  # depth differs
    assert status == EXIT_USAGE
    assert "at depth SERIES, not '/studies' at INSTANCE" in err
    assert _crawl(archive.url, path, "--overwrite")[0] == EXIT_OK
    path.write_text("not a crawl file\nat all\n")
    status, _, err = _crawl(archive.url, path, "--resume")
    assert status == EXIT_USAGE
    assert "not an aqido crawl checkpoint" in err
    assert path.read_text() == "not a crawl file\nat all\n"  # left alone


def test_killed_crawl_resumes_to_exactly_the_same_lines(tmp_path: pathlib.Path) -> None:
    """SIGKILL the crawl process after a seeded number of studies, resume, compare."""
    synthetic = SyntheticArchive(seed=5, studies=40, series_per_study=1, instances_per_series=1)
    kill_after = random.Random(20261125).randint(2, 20)
    path, clean = tmp_path / "killed.jsonl", tmp_path / "clean.jsonl"
    with FakeArchive(synthetic, latency=0.04).run_in_thread() as slow:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aqido",
                "crawl",
                slow.url,
                "--out",
                str(path),
                "--concurrency",
                "2",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and process.poll() is None:
                if path.exists() and path.read_bytes().count(b"\n") >= kill_after + 1:  # + header
                    break
                time.sleep(0.005)
            assert process.poll() is None, "the crawl finished before it could be killed"
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.wait(30)
        interrupted = len(_lines(path))
        assert kill_after <= interrupted < 40
        slow.latency = 0.0
        status, _, err = _crawl(slow.url, path, "--resume")
        assert status == EXIT_OK, err
        assert _crawl(slow.url, clean)[0] == EXIT_OK
    lines = _lines(path)
    assert len(lines) == len(set(lines)) == 40
    assert sorted(lines) == sorted(_lines(clean))
    _check_complete(path)
    assert _records(path)[0] == _records(clean)[0]


# --- demo, formats without rich, packaging ---------------------------------------------------


def test_demo_runs_and_summarises(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "demo.jsonl"
    result = run_module("demo", "--studies", "15", "--out", str(out))
    assert result.returncode == EXIT_OK, result.stderr
    assert "15 synthetic studies" in result.stdout
    assert "what the crawl found" in result.stdout
    assert len(_lines(out)) == 15
    assert "retries" in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fault-rate", "5"], "from 0 to 1"),
        (["--fault-rate", "-0.1"], "from 0 to 1"),
        (["--fault-rate", "nan"], "finite"),
        (["--latency", "1e300"], "from 0 to 10 seconds"),
        (["--latency", "11"], "from 0 to 10 seconds"),
        (["--latency", "-1"], "from 0 to 10 seconds"),
        (["--latency", "inf"], "finite"),
        (["--studies", "10001"], "must be from 1 to 10,000"),
        (["--studies", str(10**9)], "must be from 1 to 10,000"),  # built studies for ever
        (["--studies", "0"], "at least 1"),
    ],
)
def test_demo_values_out_of_range_are_usage_errors(argv: list[str], message: str) -> None:
    # a fault rate of 5 failed every request; a latency of 1e300 s hung the crawl for minutes
    with pytest.raises(UsageError, match=message):
        build_parser().parse_args(["demo", *argv])
    status, out, err = run("demo", "--studies", "1", "--no-progress", *argv)
    assert (status, out) == (EXIT_USAGE, "")
    assert err.startswith("aqido: error: argument ")
    assert err.count("\n") == 1
    assert message in err


def test_demo_help_names_only_the_demo_s_options() -> None:
    # --out and --overwrite spoke of --format parquet, which only crawl has
    status, out, _ = run("demo", "--help")
    assert status == EXIT_OK
    assert "--out" in out
    assert "--format" not in out
    assert "parquet" not in out
    assert "{study,series,instance}" in out


@pytest.mark.parametrize(
    ("depth", "headings"),
    [
        ("study", ["modality", "studies"]),
        ("series", ["modality", "studies", "series"]),
        ("instance", ["modality", "studies", "series", "instances"]),
    ],
)
def test_demo_takes_every_depth_crawl_takes(depth: str, headings: list[str]) -> None:
    # docs/cli.md: demo accepts --depth as crawl does; `--depth study` was refused
    status, out, err = run(
        "demo", "--depth", depth, "--studies", "6", "--no-progress", "--fault-rate", "0"
    )
    assert (status, err) == (EXIT_OK, "")
    lines = out.splitlines()
    table = lines.index("what the crawl found")
    assert lines[table + 1].split() == headings  # a column for each level crawled
    rows = lines[table + 3 : next(i for i, line in enumerate(lines) if line.startswith("Next:"))]
    assert rows
    assert all(len(row.split()) == len(headings) for row in rows)
    assert sum(int(row.split()[1]) for row in rows) >= 6  # a study may have several modalities


def test_plain_tables_without_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    from aqido._cli import output as cli

    monkeypatch.setitem(sys.modules, "rich", None)
    assert not cli.have_rich()
    out = io.StringIO()
    cli.print_table(["a", "n"], [["x", "1"], ["yy", "22"]], out, numeric=["n"])
    assert out.getvalue() == "a    n\n--  --\nx    1\nyy  22\n"
    out = io.StringIO()  # a title is escaped as the cells are (no ESC, one line)
    cli.print_table(["a"], [["x"]], out, title="t\x1b[2J\nu")
    assert out.getvalue().splitlines()[0] == "t\\x1b[2J\\nu"


def test_format_value() -> None:
    import datetime as dt

    assert format_value(None) == ""
    assert format_value(("CT", "MR")) == "CT\\MR"
    assert format_value(dt.date(2024, 1, 2)) == "2024-01-02"
    assert format_value(dt.time(10, 30)) == "10:30:00"


def test_help_and_version() -> None:
    status, out, _ = run("--version")
    assert status == EXIT_OK
    assert out.startswith("aqido ")
    status, out, _ = run("crawl", "--help")
    assert status == EXIT_OK
    assert "--resume" in out


def test_console_script_is_declared() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert 'aqido = "aqido.cli:main"' in text


def test_import_aqido_does_not_import_the_cli() -> None:
    code = "import sys, aqido; print('aqido.cli' in sys.modules, 'rich' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT)},
    )
    assert result.stdout.split() == ["False", "False"]


def test_ctrl_c_stops_cleanly_and_resume_completes(tmp_path: pathlib.Path) -> None:
    """SIGINT (Ctrl-C): exit 130, the file holds only complete lines, --resume finishes it."""
    # 120 studies: at 8 requests in flight the crawl takes over a second, so it is still
    # running when the test (polling from a possibly loaded machine) sends the signal.
    synthetic = SyntheticArchive(seed=6, studies=120, series_per_study=1, instances_per_series=1)
    path, clean = tmp_path / "interrupted.jsonl", tmp_path / "clean.jsonl"
    with FakeArchive(synthetic, latency=0.04).run_in_thread() as slow:
        process = subprocess.Popen(
            [sys.executable, "-m", "aqido", "crawl", slow.url, "--out", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and process.poll() is None:
                if path.exists() and path.read_bytes().count(b"\n") >= 3 + 1:  # + header
                    break
                time.sleep(0.005)
            assert process.poll() is None, "the crawl finished before it could be interrupted"
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
        assert process.returncode == 130
        assert stderr.strip().splitlines()[-1] == "aqido: interrupted"
        assert "Traceback" not in stderr
        assert path.read_bytes().endswith(b"\n")  # only complete lines
        assert 3 <= len(_lines(path)) < 120
        assert "end" not in _records(path)[-1]  # interrupted: no end record
        slow.latency = 0.0
        assert _crawl(slow.url, path, "--resume")[0] == EXIT_OK
        assert _crawl(slow.url, clean)[0] == EXIT_OK
    assert sorted(_lines(path)) == sorted(_lines(clean))
    assert len(set(_lines(path))) == 120


def test_page_size_pages_with_limit_and_offset(tmp_path: pathlib.Path) -> None:
    with FakeArchive(SYNTHETIC, max_results=5, truncation_warning=False).run_in_thread() as capped:
        status, out, _ = run("search", capped.url, "--page-size", "5")
        assert status == EXIT_OK
        assert [uid_of(json.loads(x)) for x in out.splitlines()] == STUDY_UIDS
        assert [r.query_string for r in capped.requests] == [
            "limit=5",
            "limit=5&offset=5",
            "limit=5&offset=10",
        ]
        capped.reset_stats()
        status, _, err = _crawl(capped.url, tmp_path / "paged.jsonl", "--page-size", "5")
        assert (status, err) == (EXIT_OK, "")
        assert len(_lines(tmp_path / "paged.jsonl")) == len(STUDY_UIDS)


def test_rich_tables_when_rich_is_installed() -> None:
    pytest.importorskip("rich")
    from aqido._cli import output as cli

    out = io.StringIO()
    cli.print_table(["modality", "studies"], [["CT", "3"]], out, title="t", numeric=["studies"])
    text = out.getvalue()
    assert "┃ modality ┃ studies ┃" in text
    assert "│ CT       │       3 │" in text


# --- on a terminal ---------------------------------------------------------------------------


def run_on_tty(*argv: str, without_rich: bool = False, timeout: float = 60) -> tuple[int, str]:
    """Run ``python -m aqido ARGV`` with stdin/stdout/stderr on a pseudo-terminal."""
    block = "import sys; sys.modules['rich'] = None\n" if without_rich else ""
    code = block + "import runpy; runpy.run_module('aqido', run_name='__main__', alter_sys=True)"
    env = {
        "PYTHONPATH": str(ROOT),
        "PATH": os.environ.get("PATH", ""),
        "TERM": "xterm",
        "COLUMNS": "160",
        "LINES": "40",
    }
    return run_on_pty([sys.executable, "-c", code, *argv], env=env, timeout=timeout)


def test_a_terminal_gets_a_table_by_default(archive: FakeArchive) -> None:
    status, text = run_on_tty("search", archive.url, "--limit", "2")
    assert status == EXIT_OK
    assert "2 study result(s)" in text
    assert "PatientName" in text
    assert "━" in text  # rich's table
    assert '"0020000D"' not in text  # not JSON
    status, text = run_on_tty("search", archive.url, "--limit", "2", without_rich=True)
    assert status == EXIT_OK
    assert "PatientName" in text
    assert "━" not in text


def test_crawl_progress_on_a_terminal(archive: FakeArchive, tmp_path: pathlib.Path) -> None:
    status, text = run_on_tty("crawl", archive.url, "--out", str(tmp_path / "a.jsonl"))
    assert status == EXIT_OK
    assert "req/s" in text  # the live progress line
    assert "retries" in text
    assert f"{len(STUDY_UIDS)}/{len(STUDY_UIDS)}" in text  # studies done / total
    status, text = run_on_tty(
        "crawl", archive.url, "--out", str(tmp_path / "b.jsonl"), without_rich=True
    )
    assert status == EXIT_OK
    assert f"\rstudies {len(STUDY_UIDS)}/{len(STUDY_UIDS)} · series 24 · instances 72" in text
    assert "━" not in text


def test_demo_serve_keeps_the_archive_up_until_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "aqido", "demo", "--serve", "--studies", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = first.split(" at ")[1].strip()
        status, out, _ = run("search", url)
        assert status == EXIT_OK
        assert len(out.splitlines()) == 7
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    assert process.returncode == 130
    assert "Traceback" not in stderr


@pytest.mark.anyio
async def test_demo_serve_does_not_hold_every_request_it_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A demo server left running kept a record of every request (about 1 kB each): its
    memory grew for as long as it was used."""
    import asyncio

    import anyio

    import aqido.testing
    from aqido._cli import commands
    from aqido.client import AsyncQidoRS

    started: list[FakeArchive] = []

    def demo_archive(studies: int, *, seed: int, **options: Any) -> FakeArchive:
        archive = FakeArchive(SyntheticArchive(seed=seed, studies=studies), **options)
        started.append(archive)
        return archive

    monkeypatch.setattr(aqido.testing, "demo_archive", demo_archive)
    monkeypatch.setattr(commands, "SERVE_FORGET_EVERY", 0.01, raising=False)
    args = build_parser().parse_args(["demo", "--serve", "--studies", "3"])
    serving = asyncio.create_task(commands.run_demo(args, io.StringIO(), io.StringIO(), False))
    try:
        with anyio.fail_after(10):
            while not started or started[0]._port is None:
                assert not serving.done(), serving
                await asyncio.sleep(0.01)
        async with AsyncQidoRS(started[0].url) as qido:
            await qido.search_many([{"PatientID": f"p{i}"} for i in range(50)])
            await asyncio.sleep(0.1)
            assert len(started[0].requests) < 50
    finally:
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving


def test_crawl_of_an_unreachable_server_is_exit_1(tmp_path: pathlib.Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/dicom-web"
    status, out, err = _crawl(url, tmp_path / "none.jsonl")
    assert status == EXIT_ERROR
    assert err.startswith("aqido: cannot reach the server: ")
    assert err.count("\n") == 1
    assert out == ""
    status, _, err = _crawl("ftp://example.org/x", tmp_path / "bad.jsonl")
    assert status == EXIT_USAGE
    assert not (tmp_path / "bad.jsonl").exists()


def test_crawl_of_an_unreachable_server_prints_one_line_in_a_real_process(
    tmp_path: pathlib.Path,
) -> None:
    """Through the real entry point, where no test harness captures the ``aqido`` logger."""
    url = f"http://127.0.0.1:{_closed_port()}/dicom-web"
    result = run_module("crawl", url, "--out", str(tmp_path / "none.jsonl"), "--retries", "0")
    assert result.returncode == EXIT_ERROR
    assert result.stderr.startswith("aqido: cannot reach the server: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""


def test_password_prompt_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    from aqido import cli

    asked: list[str] = []

    def fake_getpass(prompt: str = "Password: ") -> str:
        asked.append(prompt)
        return "typed-pw-42"

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    monkeypatch.setattr(cli, "_isatty", lambda stream: stream is sys.stdin)
    with FakeArchive(SYNTHETIC, basic_auth=("ann", "typed-pw-42")).run_in_thread() as locked:
        status, out, err = run("search", locked.url, "--user", "ann", "--limit", "1")
    assert status == EXIT_OK
    assert asked == ["password for ann: "]
    assert "typed-pw-42" not in out + err


def test_a_closed_stdout_drops_the_output_as_print_does(
    archive: FakeArchive, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `aqido ... >&-`: Python's sys.stdout is None; the first write was an AttributeError
    # traceback (after the crawl, its summary)
    monkeypatch.setattr(sys, "stdout", None)
    err = io.StringIO()
    status = main(["search", archive.url], stderr=err, environ={})
    assert (status, err.getvalue()) == (EXIT_OK, "")
    argv = ["crawl", archive.url, "--out", str(tmp_path / "c.jsonl"), "--no-progress"]
    status = main(argv, stderr=err, environ={})
    assert (status, err.getvalue()) == (EXIT_OK, "")
    assert len(_lines(tmp_path / "c.jsonl")) > 1


def test_end_of_input_at_the_password_prompt_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ctrl-D at getpass's prompt raises EOFError: it was a traceback, exit 1
    import getpass

    from aqido import cli

    def end_of_input(prompt: str = "Password: ") -> str:
        raise EOFError

    monkeypatch.setattr(getpass, "getpass", end_of_input)
    monkeypatch.setattr(cli, "_isatty", lambda stream: stream is sys.stdin)
    status, out, err = run("search", "http://127.0.0.1:9/dicom-web", "--user", "ann")
    assert (status, out) == (EXIT_USAGE, "")
    assert err == "aqido: error: --user needs a password: none was typed\n"


def test_csv_and_table_keep_values_not_readable_for_their_vr() -> None:
    # The typed value of "2024XXXX" is None (listed in .invalid): csv and the table showed an
    # empty cell, as if the server had sent no date.
    uid = "1.2.826.0.1.3680043.10.543.1"
    item = {
        "00080020": {"vr": "DA", "Value": ["2024XXXX"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00100020": {"vr": "LO", "Value": ["ID1", "ID2"]},
        "0020000D": {"vr": "UI", "Value": [uid]},
        "0020000E": {"vr": "UI", "Value": [uid + ".1"]},
        "00080018": {"vr": "UI", "Value": [uid + ".1.1"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
    }
    with FakeArchive([item]).run_in_thread() as archive:
        status, out, _ = run("search", archive.url, "--format", "csv")
        assert status == EXIT_OK
        (row,) = csv.DictReader(io.StringIO(out))
        assert (row["StudyDate"], row["PatientID"]) == ("2024XXXX", "ID1\\ID2")
        assert row["PatientName"] == "Doe^Jane"  # readable values keep their typed form
        status, out, _ = run("search", archive.url, "--format", "table")
    assert status == EXIT_OK
    assert re.search(r"Doe\^Jane +ID1\\ID2 +2024XXXX +CT ", out), out

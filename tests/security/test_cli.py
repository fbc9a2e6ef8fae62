"""Security tests for the command line: hostile servers, terminals, command lines, checkpoints.

Issue 15, one test per item.  Hostile data comes from real servers on
127.0.0.1: :class:`~aqido.testing.FakeArchive` serving crafted DICOM JSON,
and :class:`RawServer` (below) for byte-exact answers an aiohttp server
would not send (an ESC in the reason phrase, an error body with control
characters).  The CLI runs through its ``main`` (streams and environment
passed in), in a real process where the stream's encoding matters, and on a
pseudo-terminal where rich draws for a real terminal.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aqido import cli
from aqido.checkpoint import CrawlCheckpoint
from aqido.cli import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, main
from aqido.client import AsyncQidoRS
from aqido.errors import CheckpointError, QidoError
from aqido.query import HierarchicalQuery, QueryLevel
from aqido.terminal import encodable, printable
from aqido.testing import FakeArchive, SyntheticArchive
from tests.terminal import run_on_pty

ROOT = pathlib.Path(__file__).resolve().parents[2]

#: Bytes no terminal may receive from server data: C0 but none of the table's own, DEL, C1.
_RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]")

HOSTILE_NAMES = [
    "Doe^[/]",  # rich's closing tag with nothing open: a MarkupError on today's code
    "[link=https://evil.example/]Click^Me[/link]",  # a rich hyperlink
    "Evil\x1b[2J\x1b]0;pwned\x07\nFORGED^ROW",  # clear screen, window title, a forged row
    "C1\x9b31m^Del\x7f\u202eRTL",  # CSI as one C1 byte, DEL, a bidi override
    "Ré^中文",  # plain non-ASCII: kept (escaped only where the encoding lacks it)
]


def _instance(index: int, name: str) -> dict[str, Any]:
    uid = f"1.2.826.0.1.3680043.10.543.{index}"
    return {
        "00080020": {"vr": "DA", "Value": ["20240101"]},
        "00081030": {"vr": "LO", "Value": [f"desc {index}\x1b[31m[bold]red[/bold]"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
        "00100020": {"vr": "LO", "Value": [f"ID{index}\r\x1b[1A"]},
        "0020000D": {"vr": "UI", "Value": [uid]},
        "0020000E": {"vr": "UI", "Value": [uid + ".1"]},
        "00080018": {"vr": "UI", "Value": [uid + ".1.1"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
    }


HOSTILE = [_instance(i, name) for i, name in enumerate(HOSTILE_NAMES, start=1)]


@pytest.fixture(scope="module")
def hostile() -> Iterator[FakeArchive]:
    with FakeArchive(HOSTILE).run_in_thread() as running:
        yield running


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err, environ=env or {})
    return status, out.getvalue(), err.getvalue()


def _env(**extra: str) -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", ""), **extra}


def _assert_safe_display(text: str) -> None:
    """No control character from the data, every hostile name on one line of its own row."""
    assert not _RAW_CONTROL.search(text), repr(text)
    assert "\\x1b" in text  # the ESC is shown, escaped
    for line in text.splitlines():
        assert not line.startswith("FORGED")
    evil = [line for line in text.splitlines() if "Evil" in line]
    assert len(evil) == 1
    assert "FORGED^ROW" in evil[0]


# --- terminal output ---------------------------------------------------------------------------


def test_plain_table_escapes_control_characters_and_data_formats_stay_exact(
    hostile: FakeArchive,
) -> None:
    status, out, err = run(
        "search", hostile.url, "--format", "table", "--include", "StudyDescription"
    )
    assert (status, err) == (EXIT_OK, "")
    _assert_safe_display(out)
    assert "Evil\\x1b[2J\\x1b]0;pwned\\x07\\nFORGED^ROW" in out
    assert "C1\\x9b31m^Del\\x7f\\u202eRTL" in out
    assert "Ré^中文" in out  # a UTF-8 stream keeps what it can show
    # json, jsonl and csv are data: exactly what the server sent
    status, out, _ = run("search", hostile.url, "--format", "json")
    names = [item["00100010"]["Value"][0]["Alphabetic"] for item in json.loads(out)]
    assert (status, names) == (EXIT_OK, HOSTILE_NAMES)
    status, out, _ = run("search", hostile.url, "--format", "jsonl")
    names = [json.loads(line)["00100010"]["Value"][0]["Alphabetic"] for line in out.splitlines()]
    assert (status, names) == (EXIT_OK, HOSTILE_NAMES)
    status, out, _ = run("search", hostile.url, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert (status, [row["PatientName"] for row in rows]) == (EXIT_OK, HOSTILE_NAMES)


def test_rich_table_shows_markup_as_text(
    hostile: FakeArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("rich")
    monkeypatch.setattr(cli, "_isatty", lambda stream: True)  # rich, as on a terminal
    monkeypatch.setenv("COLUMNS", "400")  # wide enough for every cell on one line
    status, out, err = run("search", hostile.url, "--include", "StudyDescription")
    assert (status, err) == (EXIT_OK, "")  # `Doe^[/]` is no MarkupError
    assert "┃" in out  # rich drew the table
    text = " ".join(out.split())
    assert "Doe^[/]" in text
    assert "[link=https://evil.example/]Click^Me[/link]" in text  # markup shown, not applied
    assert "[bold]red[/bold]" in text
    _assert_safe_display(out)


def test_a_real_terminal_gets_no_escape_sequences_or_links_from_data(
    hostile: FakeArchive,
) -> None:
    pytest.importorskip("rich")
    status, text = run_on_tty("search", hostile.url, "--include", "StudyDescription")
    assert status == EXIT_OK, text
    assert "Traceback" not in text
    assert "\x1b]8;" not in text  # no OSC 8 hyperlink
    assert "\x1b]0;" not in text  # no window title
    assert "\x1b[2J" not in text
    assert "\x1b[1A" not in text
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f]", text)
    assert "pwned" in text
    assert "\\x1b" in text


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_data_formats_on_a_real_terminal_get_no_control_characters(
    hostile: FakeArchive, fmt: str
) -> None:
    # CSV wrote the server's ESC sequences raw to the terminal, JSON its C1 CSI, DEL and
    # bidi override; a file or a pipe still gets the exact data (the test above)
    status, text = run_on_tty("search", hostile.url, "--format", fmt)
    assert status == EXIT_OK, text
    assert not re.search("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\u202e]", text), repr(text)
    if fmt == "csv":  # escaped as the table escapes them: one line per row
        assert "Evil\\x1b[2J\\x1b]0;pwned\\x07\\nFORGED^ROW" in text
        assert "C1\\x9b31m^Del\\x7f\\u202eRTL" in text
        assert not any(line.startswith("FORGED") for line in text.splitlines())
    else:  # \u escapes: still the exact data
        body = text.replace("\r\n", "\n")
        items = json.loads(body) if fmt == "json" else [json.loads(x) for x in body.splitlines()]
        assert [i["00100010"]["Value"][0]["Alphabetic"] for i in items] == HOSTILE_NAMES
        assert "C1\\u009b31m^Del\\u007f\\u202eRTL" in text


def _nested_study(depth: int) -> bytes:
    """A response of one study holding an SQ item in an SQ item... ``depth`` levels deep."""
    item = '{"00100020":{"vr":"LO","Value":["leaf"]}}'
    for _ in range(depth):
        item = '{"00081115":{"vr":"SQ","Value":[' + item + "]}}"
    study = '{"0020000D":{"vr":"UI","Value":["1.2.3"]},' + item[1:]
    return _response("200 OK", f"[{study}]".encode(), "application/dicom+json")


def _depth(value: Any) -> int:
    """How many SQ levels deep ``value``'s item goes (without recursion)."""
    levels = 0
    while "00081115" in value:
        value = value["00081115"]["Value"][0]
        levels += 1
    return levels


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_an_item_nested_as_deep_as_decoding_allows_is_written(fmt: str) -> None:
    # json.dumps recursed: a RecursionError (a traceback) for 340 levels the decoder accepts
    orjson = pytest.importorskip("orjson")  # the decoder that takes them (json.loads: 1,000)
    with RawServer(_nested_study(340)) as server:
        status, out, err = run("search", server.url, "--format", fmt)
    assert (status, err) == (EXIT_OK, "")
    (item,) = orjson.loads(out) if fmt == "json" else [orjson.loads(out)]
    assert item["0020000D"]["Value"] == ["1.2.3"]
    assert _depth(item) == 340


class RawServer:
    """A loopback HTTP server answering each request with raw bytes, then closing.

    For answers a well-behaved server framework would refuse to send (control
    characters in the reason phrase).  ``response``: the bytes for every
    request, or a function of the request path.  Serves from a thread until closed.
    """

    def __init__(self, response: bytes | Callable[[str], bytes]) -> None:
        self.response = response
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/dicom-web"
        self.served = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                target = data.split(b" ", 2)[1].decode("latin-1") if b" " in data else ""
                response = self.response
                conn.sendall(response if isinstance(response, bytes) else response(target))
                self.served += 1

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sock.close()


def _response(status: str, body: bytes, content_type: str = "text/plain") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


HOSTILE_BODY = b"\x1b]0;owned\x07\x1b[2J[red]boom[/red]\x9b2J\r\nFORGED line\x7f"


@pytest.mark.parametrize(
    "response",
    [
        _response("500 Internal Server Error", HOSTILE_BODY),
        _response("400 Bad\x1b[2J Request", HOSTILE_BODY),
        _response("200 OK", b"[{" + HOSTILE_BODY, "application/dicom+json"),
    ],
    ids=["5xx-body", "reason-phrase", "bad-json-body"],
)
def test_error_excerpts_on_stderr_are_escaped(response: bytes) -> None:
    with RawServer(response) as server:
        status, out, err = run("search", server.url, "--retries", "0")
    assert status == EXIT_ERROR
    assert out == ""
    assert err.count("\n") == 1
    assert err.endswith("\n")
    assert err.startswith("aqido: ")
    assert not _RAW_CONTROL.search(err[:-1]), repr(err)
    assert "\\x1b" in err or "\\x9b" in err or "[2J" not in err


def test_crawl_failures_on_stderr_are_escaped(tmp_path: pathlib.Path) -> None:
    """Series listings fail with a hostile reason and body: each failure line shows them escaped."""
    uids = ["1.2.3", "1.2.4", "1.2.6"]
    studies = json.dumps([{"0020000D": {"vr": "UI", "Value": [uid]}} for uid in uids]).encode()

    def answer(target: str) -> bytes:
        if target.split("?")[0].endswith("/studies"):
            return _response("200 OK", studies, "application/dicom+json")
        return _response("503 Service\x1b]0;t\x07 Unavailable", HOSTILE_BODY)

    with RawServer(answer) as server:
        status, _out, err = run(
            "crawl", server.url, "--out", str(tmp_path / "c.jsonl"), "--retries", "0"
        )
    assert status == EXIT_INCOMPLETE, err
    lines = err.splitlines()
    assert sum(line.startswith("aqido: could not fetch ") for line in lines) == len(uids)
    assert all(line.startswith("aqido: ") for line in lines)  # no forged line
    assert not _RAW_CONTROL.search(err.replace("\n", "")), repr(err)
    assert "\\x1b]0;owned\\x07" in err  # the body excerpt, shown escaped
    with RawServer(answer) as server:  # --debug: the log lines are escaped too
        status, _, err = run(
            "crawl", server.url, "--out", str(tmp_path / "d.jsonl"), "--retries", "0", "--debug"
        )
    assert status == EXIT_INCOMPLETE
    assert "WARNING aqido" in err
    assert all(line.startswith(("aqido: ", "DEBUG ", "WARNING ")) for line in err.splitlines())
    assert not _RAW_CONTROL.search(err.replace("\n", "")), repr(err)


def test_a_shard_s_nested_failures_on_stderr_are_escaped_line_by_line(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard's CrawlIncompleteError: only aqido's line breaks make lines, the server's escaped."""
    pytest.importorskip("pyarrow")
    from aqido._cli import parquet
    from aqido.errors import CrawlIncompleteError, ServerError, TransportError

    forged = "\n  - FORGED\x1b[2J\r\x1b]0;owned\x07\u2028  - FORGED"
    url = "http://127.0.0.1:9/dicom-web"
    shard = CrawlIncompleteError(
        [
            (f"/studies/1.2.3/series{forged}", ServerError(503, url, HOSTILE_BODY)),
            ("/studies/1.2.4/series", TransportError(f"reset{forged}", url=url)),
        ],
        counts={"STUDY": 2},
    )
    failures = [
        (f"{url} date-1: /studies{forged}", shard),
        (f"{url} (planning its shards): /studies", TransportError(f"refused{forged}", url=url)),
    ]

    def fail(*args: object) -> None:
        raise CrawlIncompleteError(failures)

    monkeypatch.setattr(parquet, "_in_process", fail)
    status, _, err = run("crawl", url, "--out", str(tmp_path), "--format", "parquet")
    assert status == EXIT_INCOMPLETE
    assert not _RAW_CONTROL.search(err.replace("\n", "")), repr(err)
    assert "\u2028" not in err
    lines = err.splitlines()
    # The shard's line, its two missed parts indented below it, the archive's one line: no other.
    assert len(lines) == 4, lines
    assert lines[0] == (  # the query's whitespace collapsed, as in the error's own lines
        f"could not fetch: {url} date-1: /studies - FORGED\\x1b[2J \\x1b]0;owned\\x07 - FORGED: "
        "crawl incomplete: 2 part(s) could not be fetched (fetched 2 study)"
    )
    assert lines[1].startswith("    - /studies/1.2.3/series - FORGED\\x1b[2J")
    assert "\\x1b]0;owned\\x07" in lines[1]  # the server's body, shown escaped
    assert lines[2] == "    - /studies/1.2.4/series: TransportError: reset"  # its first line
    assert lines[3].startswith(f"could not fetch: {url} (planning its shards): /studies: refused")
    assert "refused\\n  - FORGED\\x1b[2J\\r\\x1b]0;owned\\x07\\u2028" in lines[3]


def test_a_shard_s_nested_failures_on_an_ascii_stderr_are_escaped_not_a_crash(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The missed parts' lines were written with ``writelines``, past the stream's escaping."""
    pytest.importorskip("pyarrow")
    from aqido._cli import parquet
    from aqido.errors import CrawlIncompleteError, ServerError

    url = "http://127.0.0.1:9/dicom-web"
    missed = [("/studies/1.2.3/series", ServerError(503, url, "\u00dcberlastet \u4e2d"))]
    shard = CrawlIncompleteError(missed, counts={"STUDY": 2})

    def fail(*args: object) -> None:
        raise CrawlIncompleteError([(f"{url} date-1: /studies", shard)])

    monkeypatch.setattr(parquet, "_in_process", fail)
    err = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    argv = ["crawl", url, "--out", str(tmp_path), "--format", "parquet"]
    status = main(argv, stdout=io.StringIO(), stderr=err, environ={})
    err.flush()
    assert status == EXIT_INCOMPLETE
    lines = err.buffer.getvalue().decode("ascii").splitlines()  # type: ignore[attr-defined]
    assert lines[1].startswith("    - /studies/1.2.3/series: ServerError: HTTP 503")
    assert "\\xdcberlastet \\u4e2d" in lines[1]


# --- a terminal that cannot show everything ---------------------------------------------------


def test_an_ascii_stdout_never_crashes_and_json_stays_exact(
    hostile: FakeArchive, tmp_path: pathlib.Path
) -> None:
    env = _env(PYTHONIOENCODING="ascii")
    outputs: dict[str, str] = {}
    for fmt in ("table", "json", "jsonl", "csv"):
        result = subprocess.run(
            [sys.executable, "-m", "aqido", "search", hostile.url, "--format", fmt],
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert result.returncode == EXIT_OK, result.stderr.decode("ascii", "replace")
        assert result.stderr == b""
        outputs[fmt] = result.stdout.decode("ascii")  # pure ASCII: decodes
    assert "R\\xe9^\\u4e2d\\u6587" in outputs["table"]  # visible, not '?'
    assert not _RAW_CONTROL.search(outputs["table"])
    names = [i["00100010"]["Value"][0]["Alphabetic"] for i in json.loads(outputs["json"])]
    assert names == HOSTILE_NAMES  # \u escapes: the exact data
    lines = outputs["jsonl"].splitlines()
    assert [json.loads(x)["00100010"]["Value"][0]["Alphabetic"] for x in lines] == HOSTILE_NAMES
    assert "R\\xe9^\\u4e2d\\u6587" in outputs["csv"]
    # a crawl: the summary table and the file (always UTF-8)
    out_file = tmp_path / "ascii.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "aqido", "crawl", hostile.url, "--out", str(out_file)],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert b"studies written" in result.stdout
    assert len(list(CrawlCheckpoint.read_studies(out_file))) == len(HOSTILE)
    # an error line with non-ASCII characters (a hostile server) on an ASCII stderr
    with RawServer(_response("500 Erreur", "échec 中".encode())) as server:
        result = subprocess.run(
            [sys.executable, "-m", "aqido", "search", server.url, "--retries", "0"],
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
    assert result.returncode == EXIT_ERROR
    assert b"Traceback" not in result.stderr
    assert result.stderr.count(b"\n") == 1


def test_printable_escapes_every_control_character() -> None:
    assert printable("a\x1b[2Jb\nc\td\r\x00\x7f\x85\u2028\u202e") == (
        "a\\x1b[2Jb\\nc\\td\\r\\x00\\x7f\\x85\\u2028\\u202e"
    )
    assert printable("Doe^John 山田 [b]x[/b] \\ é") == "Doe^John 山田 [b]x[/b] \\ é"
    assert encodable("é中\ud800", "ascii") == "\\xe9\\u4e2d\\ud800"
    assert encodable("é中", "utf-8") == "é中"


@given(st.text())
def test_printable_output_is_one_line_without_control_characters(text: str) -> None:
    shown = printable(text)
    assert not _RAW_CONTROL.search(shown)
    assert "\n" not in shown
    assert "\r" not in shown
    assert "\t" not in shown
    assert len(shown.splitlines()) <= 1
    assert not any(unicodedata.category(c) == "Cf" for c in shown)
    if not any(_escaped(c) for c in text):
        assert shown == text


def _escaped(char: str) -> bool:
    """Whether :func:`printable` must escape ``char``: a control, a line break or a format one."""
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


def test_printable_escapes_every_format_character() -> None:
    """Zero-width characters, bidi marks and tags are invisible: two values would look alike."""
    formats = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"]
    assert all("\\" in printable(c) for c in formats)
    assert printable("Doe\u200b^John\u200e\u200f\ufeff\u2060\xad\U000e0041") == (
        "Doe\\u200b^John\\u200e\\u200f\\ufeff\\u2060\\xad\\U000e0041"
    )


def test_a_table_shows_zero_width_and_bidi_marks_escaped(tmp_path: pathlib.Path) -> None:
    spoof = _instance(1, "Doe\u200b^Jo\u200ehn\ufeff")
    with FakeArchive([spoof]).run_in_thread() as archive:
        status, out, _ = run("search", archive.url, "--format", "table")
        assert status == EXIT_OK
        assert "Doe\\u200b^Jo\\u200ehn\\ufeff" in out
        assert not any(unicodedata.category(c) == "Cf" for c in out)
        status, out, _ = run("search", archive.url, "--format", "jsonl")  # data: exact
    assert json.loads(out)["00100010"]["Value"][0]["Alphabetic"] == "Doe\u200b^Jo\u200ehn\ufeff"


# --- the command line's own input ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0", "-1", "1e400"])
def test_timeouts_must_be_finite_and_positive(hostile: FakeArchive, value: str) -> None:
    before = len(hostile.requests)
    status, out, err = run("search", hostile.url, f"--timeout={value}")
    assert status == EXIT_USAGE
    assert out == ""
    assert err.startswith("aqido: error: ")
    assert err.count("\n") == 1
    assert "--timeout" in err
    assert len(hostile.requests) == before


SECRET = "s3cr3t-VALUE-42"


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--token", f"{SECRET}\r\nX-Injected: 1"], {}),
        (["--token", f"{SECRET}\n"], {}),
        ([], {"AQIDO_TOKEN": f"{SECRET}\rX: y"}),
        (["--header", f"Authorization: Bearer {SECRET}\r\nX-Injected: 1"], {}),
        (["--header", f"X-Key: {SECRET}\x00"], {}),
        (["--header", f"X-Key: {SECRET}\x1b"], {}),
        (["--header", f"X Key\n: {SECRET}"], {}),
        (["--user", "ann", "--password", f"{SECRET}\n"], {}),
        (["--user", "ann"], {"AQIDO_PASSWORD": f"{SECRET}\r\n"}),
        (["--user", "ann:x", "--password", SECRET], {}),
    ],
    ids=[
        "token-crlf",
        "token-lf",
        "env-token-cr",
        "header-crlf",
        "header-nul",
        "header-esc",
        "header-name",
        "password-lf",
        "env-password-crlf",
        "user-colon",
    ],
)
def test_control_characters_in_headers_and_credentials_are_refused(
    hostile: FakeArchive, argv: list[str], env: dict[str, str]
) -> None:
    before = len(hostile.requests)
    status, out, err = run("search", hostile.url, *argv, env=env)
    assert status == EXIT_USAGE
    assert out == ""
    assert err.startswith("aqido: error: ")
    assert err.count("\n") == 1
    assert SECRET not in err
    assert len(hostile.requests) == before  # nothing was sent


@pytest.mark.parametrize(
    "template",
    [
        "http://ann:{pw}@{host}/dicom-web",
        "https://ann:{pw}@{host}/dicom-web",
        "ann:{pw}@{host}/dicom-web",
        "//ann:{pw}@{host}/dicom-web",
        "http://{pw}@{host}/dicom-web",
        "http:/ann:{pw}@{host}/dicom-web",  # malformed: no host, once echoed in the error
        "http//ann:{pw}@{host}/dicom-web",
    ],
)
@pytest.mark.parametrize("command", ["search", "crawl", "probe"])
def test_userinfo_in_urls_is_refused_without_echo(
    hostile: FakeArchive, tmp_path: pathlib.Path, template: str, command: str
) -> None:
    url = template.format(pw=SECRET, host=f"127.0.0.1:{hostile.port}")
    before = len(hostile.requests)
    extra = ["--out", str(tmp_path / "x.jsonl")] if command == "crawl" else []
    status, out, err = run(command, url, *extra)
    assert status == EXIT_USAGE
    assert err.startswith("aqido: error: ")
    assert err.count("\n") == 1
    assert "credentials" in err
    assert SECRET not in out + err
    assert len(hostile.requests) == before
    assert not (tmp_path / "x.jsonl").exists()


# --- checkpoint files ---------------------------------------------------------------------------

SYNTHETIC = SyntheticArchive(seed=4, studies=6, series_per_study=1, instances_per_series=1)
QUERY = HierarchicalQuery()


async def _crawl(url: str, checkpoint: CrawlCheckpoint | pathlib.Path) -> int:
    async with AsyncQidoRS(url, retries=0) as client:
        return len([s async for s in client.crawl(QUERY, checkpoint=checkpoint)])


@pytest.mark.anyio
async def test_checkpoint_records_the_server_without_credentials(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "c.jsonl"
    async with FakeArchive(SYNTHETIC, basic_auth=("ann", SECRET)) as archive:
        url = archive.url.replace("http://", f"http://ann:{SECRET}@")
        async with AsyncQidoRS(url + "/", retries=0) as client:
            assert len([s async for s in client.crawl(QUERY, checkpoint=path)]) == 6
        header = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        assert header["server"] == archive.url  # no userinfo, no trailing slash
    assert SECRET not in path.read_text(encoding="utf-8")
    assert "ann" not in header["server"]


async def _crawl_partial(url: str, path: pathlib.Path) -> int:
    async with AsyncQidoRS(url, retries=0) as client:
        crawl = client.crawl(QUERY, checkpoint=path, partial=True)
        return len([s async for s in crawl])


def test_resuming_against_another_server_is_refused_unless_forced(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "c.jsonl"
    other = SyntheticArchive(seed=9, studies=3, series_per_study=1, instances_per_series=1)
    first_archive, second_archive = FakeArchive(SYNTHETIC), FakeArchive(other)
    with first_archive.run_in_thread() as first, second_archive.run_in_thread() as second:
        first.fail("/studies/", "500")  # the listing works, every study fails: resume later
        assert asyncio.run(_crawl_partial(first.url, path)) == 0
        before = path.read_bytes()
        with pytest.raises(
            CheckpointError, match=r"holds a crawl of http://127\.0\.0\.1:"
        ) as raised:
            asyncio.run(_crawl(second.url, path))
        assert isinstance(raised.value, QidoError)
        assert isinstance(raised.value, ValueError)
        assert "force=True" in str(raised.value)
        assert second.url in str(raised.value)
        assert path.read_bytes() == before  # untouched
        assert [r.path for r in second.requests] == []  # and nothing asked of the other server
        assert asyncio.run(_crawl(second.url, CrawlCheckpoint(path, force=True))) == 3
        # the CLI: exit 2 with the hint, --force resumes
        first.clear_faults()
        status, _, err = run("crawl", first.url, "--out", str(path), "--resume")
        assert status == EXIT_OK, err  # the server the file records
        bad = tmp_path / "d.jsonl"
        assert run("crawl", first.url, "--out", str(bad))[0] == EXIT_OK
        status, _, err = run("crawl", second.url, "--out", str(bad), "--resume")
        assert status == EXIT_USAGE
        assert err.count("\n") == 1
        assert "--force" in err
        status, _, err = run("crawl", second.url, "--out", str(bad), "--resume", "--force")
        assert status == EXIT_OK, err


def test_an_old_checkpoint_without_a_server_needs_force(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "old.jsonl"
    path.write_text('{"aqido_crawl":1,"query":"/studies","depth":"INSTANCE"}\n', encoding="utf-8")
    with FakeArchive(SYNTHETIC).run_in_thread() as archive:
        with pytest.raises(CheckpointError, match="records no server"):
            asyncio.run(_crawl(archive.url, path))
        status, _, err = run("crawl", archive.url, "--out", str(path), "--resume")
        assert status == EXIT_USAGE
        assert "--force" in err
        assert asyncio.run(_crawl(archive.url, CrawlCheckpoint(path, force=True))) == 6


def _good_file(tmp_path: pathlib.Path) -> tuple[pathlib.Path, list[bytes], str]:
    path = tmp_path / "good.jsonl"
    with FakeArchive(SYNTHETIC).run_in_thread() as archive:
        status, _, err = run("crawl", archive.url, "--out", str(path))
        assert (status, err) == (EXIT_OK, "")
        url = archive.url
    return path, path.read_bytes().splitlines(keepends=True), url


def test_a_bad_line_is_a_checkpoint_error_naming_it(tmp_path: pathlib.Path) -> None:
    path, lines, url = _good_file(tmp_path)
    assert len(lines) == 1 + 6 + 1  # header, studies, end
    surrogate = b'{"study": {"00081030": {"vr": "LO", "Value": ["\\ud800"]}}}\n'
    for bad in (b"{not json\n", b"[1, 2]\n", b'{"study": 7}\n', b"\xff\xfe\n", b"\n", surrogate):
        damaged = [*lines[:3], bad, *lines[3:]]
        path.write_bytes(b"".join(damaged))
        for call in (
            lambda: CrawlCheckpoint.read_records(path),
            lambda: list(CrawlCheckpoint.read_studies(path)),
            lambda: CrawlCheckpoint(path).open(QUERY, QueryLevel.INSTANCE, server=url),
        ):
            with pytest.raises(CheckpointError, match=r"good\.jsonl, line 4: ") as raised:
                call()
            assert raised.value.line == 4
        assert path.read_bytes() == b"".join(damaged)  # nothing truncated
        status, _, err = run("crawl", url, "--out", str(path), "--resume", "--force")
        assert status == EXIT_USAGE
        assert "line 4" in err
        assert err.count("\n") == 1
    # a cut-short last line is still dropped (a killed run), and only that one
    path.write_bytes(b"".join(lines[:5]) + lines[5][:20])
    assert len(list(CrawlCheckpoint.read_studies(path))) == 4


_STRICT_HEADER = b'{"aqido_crawl":1,"query":"/studies","depth":"INSTANCE","server":"http://h"}\n'


def _study_line(value: bytes, uid: bytes = b"1.2") -> bytes:
    return (
        b'{"StudyInstanceUID":"'
        + uid
        + b'","study":{"00081160":{"vr":"FD","Value":['
        + value
        + b"]}}}\n"
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b'"\\ud800"', "a lone surrogate: not UTF-8 text"),  # an escape, as before
        (b'"a\\udc00"', "a lone surrogate: not UTF-8 text"),
        (b'"\xed\xa0\x80"', "not UTF-8 text"),  # an encoded surrogate: was read as "\ud800"
        (b"NaN", "NaN is not valid JSON"),  # were read as floats: aqido never writes them
        (b"Infinity", "Infinity is not valid JSON"),
        (b"-Infinity", "-Infinity is not valid JSON"),
        (b"1e400", "number out of range: 1e400"),  # was read as inf
        (b"1" + b"0" * 400, "number out of range: 1" + "0" * 39),  # was read as an int
        (b"9" * 4301, "number out of range: " + "9" * 40),  # was Python's int() limit, in its words
    ],
)
def test_a_line_is_read_as_strictly_as_a_response_body(
    tmp_path: pathlib.Path, value: bytes, problem: str
) -> None:
    path = tmp_path / "strict.jsonl"
    path.write_bytes(_STRICT_HEADER + _study_line(value))
    checkpoint = CrawlCheckpoint(path)
    for call in (
        lambda: CrawlCheckpoint.read_records(path),
        lambda: checkpoint.open(QUERY, QueryLevel.INSTANCE, server="http://h"),
    ):
        with pytest.raises(CheckpointError) as raised:
            call()
        assert raised.value.line == 2
        assert str(raised.value).startswith(f"{path}, line 2: not a JSON record ({problem}")
    checkpoint.close()
    path.write_bytes(_study_line(value))  # on the first line: not a checkpoint, as before
    with pytest.raises(CheckpointError, match=r"line 1: not an aqido crawl checkpoint: not a JSON"):
        CrawlCheckpoint.read_records(path)


def test_a_strictly_read_line_keeps_what_a_response_keeps(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "strict.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"  # a byte order mark (an editor's) is read past, as before
        + _STRICT_HEADER
        + _study_line(b'"\\ud83d\\ude00"')  # a surrogate pair
        # an integer beyond 64 bits: a float, as in a response
        + _study_line(b"1" + b"0" * 25, uid=b"1.3")
        + _study_line(b"1e-400, 1.5e300, 18446744073709551615", uid=b"1.4")
    )
    records = CrawlCheckpoint.read_records(path)
    assert records[0]["server"] == "http://h"
    values = [record["study"]["00081160"]["Value"] for record in records[1:]]
    assert values == [["\U0001f600"], [1e25], [0.0, 1.5e300, 2**64 - 1]]
    assert type(values[1][0]) is float
    assert type(values[2][2]) is int


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["0020000D", "study", "series", "instances", "end", "aqido_crawl"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "study",
                    "series",
                    "instances",
                    "end",
                    "complete",
                    "StudyInstanceUID",
                    "0020000D",
                    "Value",
                    "vr",
                    "aqido_crawl",
                    "query",
                    "depth",
                    "server",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


def _crafted_line() -> st.SearchStrategy[bytes]:
    as_json = _JSON.map(lambda v: json.dumps(v).encode() + b"\n")
    deep = st.integers(min_value=900, max_value=200_000).map(lambda n: b"[" * n + b"]" * n + b"\n")
    deep_object = st.integers(min_value=900, max_value=5_000).map(
        lambda n: b'{"study":' + b'{"a":' * n + b"1" + b"}" * n + b"}\n"
    )
    huge = st.integers(min_value=4_301, max_value=100_000).map(
        lambda n: b'{"StudyInstanceUID": "1", "study": {}, "series": ' + b"9" * n + b"}\n"
    )
    raw = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"") + b"\n")
    return st.one_of(as_json, deep, deep_object, huge, raw)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lines=st.lists(_crafted_line(), min_size=1, max_size=3), position=st.integers(0, 8))
def test_crafted_lines_only_ever_raise_checkpoint_error(
    tmp_path: pathlib.Path, lines: list[bytes], position: int
) -> None:
    path = tmp_path / "crafted.jsonl"
    header = b'{"aqido_crawl":1,"query":"/studies","depth":"INSTANCE","server":"http://h"}\n'
    study = json.dumps(
        {"StudyInstanceUID": "1.2", "study": {"0020000D": {"vr": "UI", "Value": ["1.2"]}}}
    ).encode()
    body = [header, study + b"\n", study + b"\n"]
    body[min(position, len(body)) : min(position, len(body))] = lines
    path.write_bytes(b"".join(body))
    for call in (
        lambda: CrawlCheckpoint.read_records(path),
        lambda: list(CrawlCheckpoint.read_studies(path)),
    ):
        try:
            call()
        except CheckpointError as exc:
            line = exc.line
            assert line is not None
    checkpoint = CrawlCheckpoint(path)
    try:
        checkpoint.open(QUERY, QueryLevel.INSTANCE, server="http://h")
    except CheckpointError:
        pass
    finally:
        checkpoint.close()


def test_a_second_writer_fails_at_once(tmp_path: pathlib.Path) -> None:
    path, _, url = _good_file(tmp_path)
    first = CrawlCheckpoint(path)
    first.open(QUERY, QueryLevel.INSTANCE, server=url)
    try:
        second = CrawlCheckpoint(path)
        started = time.monotonic()
        with pytest.raises(CheckpointError, match="in use by another crawl"):
            second.open(QUERY, QueryLevel.INSTANCE, server=url)
        assert time.monotonic() - started < 30  # at once, not after some timeout
        before = path.read_bytes()
        with FakeArchive(SYNTHETIC).run_in_thread() as archive:
            for flags in (["--resume", "--force"], ["--overwrite"]):
                status, _out, err = run("crawl", archive.url, "--out", str(path), *flags)
                assert status == EXIT_ERROR
                assert err.startswith("aqido: error: ")
                assert err.count("\n") == 1
                assert "in use by another crawl" in err
                assert path.read_bytes() == before  # neither appended to nor replaced
    finally:
        first.close()
    second = CrawlCheckpoint(path)  # released: the next writer gets it
    second.open(QUERY, QueryLevel.INSTANCE, server=url)
    second.close()


# --- on a terminal -------------------------------------------------------------------------------


def run_on_tty(
    *argv: str, timeout: float = 60, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``python -m aqido ARGV`` with stdin/stdout/stderr on a pseudo-terminal."""
    return run_on_pty(
        [sys.executable, "-m", "aqido", *argv],
        env=_env(TERM="xterm-256color", COLUMNS="200", LINES="40", **(env or {})),
        timeout=timeout,
    )

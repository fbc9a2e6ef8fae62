"""The exception hierarchy: shape, messages, credential redaction."""

from __future__ import annotations

import typing

import pytest

from aqido import errors
from aqido.errors import (
    FAILURE_LINE_LENGTH,
    LISTED_FAILURES,
    BadRequestError,
    CrawlFailure,
    CrawlIncompleteError,
    HTTPStatusError,
    InvalidQueryError,
    InvalidResponseError,
    NotFoundError,
    PayloadTooLargeError,
    QidoError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    TransportError,
    UnauthorizedError,
    error_for_status,
    excerpt,
    redact_url,
)
from aqido.query import HierarchicalQuery, QueryLevel, RelationalQuery


def test_every_error_is_a_qido_error() -> None:
    for cls in (
        InvalidQueryError,
        TransportError,
        RequestTimeoutError,
        HTTPStatusError,
        BadRequestError,
        UnauthorizedError,
        NotFoundError,
        PayloadTooLargeError,
        RateLimitedError,
        ServerError,
        InvalidResponseError,
        CrawlIncompleteError,
    ):
        assert issubclass(cls, QidoError), cls


def test_invalid_query_error_is_a_value_error() -> None:
    assert issubclass(InvalidQueryError, ValueError)
    assert not issubclass(HTTPStatusError, ValueError)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, UnauthorizedError),
        (403, UnauthorizedError),
        (404, NotFoundError),
        (413, PayloadTooLargeError),
        (429, RateLimitedError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (599, ServerError),
        (406, HTTPStatusError),
        (414, HTTPStatusError),
    ],
)
def test_error_for_status(status: int, cls: type[HTTPStatusError]) -> None:
    assert error_for_status(status) is cls


def test_http_status_error_carries_context_without_credentials() -> None:
    err = UnauthorizedError(
        401,
        "http://alice:s3cret@127.0.0.1:8042/dicom-web/studies?PatientID=1",
        b'{"HttpError": "Unauthorized"}\n\n   trailing',
        reason="Unauthorized",
    )
    assert err.status == 401
    assert err.url == "http://127.0.0.1:8042/dicom-web/studies?PatientID=1"
    assert err.body_excerpt == '{"HttpError": "Unauthorized"} trailing'
    assert "s3cret" not in str(err)
    assert "alice" not in str(err)
    assert "401 Unauthorized" in str(err)


def test_http_status_error_message_escapes_the_servers_control_characters() -> None:
    """A REPL or ``--debug`` traceback prints ``str(error)`` raw: ESC must not reach it."""
    body = b"<html>\x1b]0;owned\x07\x1b[2J\xc2\x9b31m\xe2\x80\xae\xe2\x80\x8bboom</html>"
    err = ServerError(500, "http://h/studies", body, reason="Internal Server Error")
    assert "\x1b" not in str(err)
    assert "\u202e" not in str(err)
    assert "\u200b" not in str(err)
    shown = "'<html>\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202e\\u200bboom</html>'"
    assert str(err).endswith(f": {shown}")
    assert err.body_excerpt == body.decode()  # the attribute keeps the exact text


def test_redact_url_keeps_urls_without_userinfo_intact() -> None:
    url = "https://pacs.example/dicom-web/studies?PatientName=Doe^J*"
    assert redact_url(url) == url
    assert redact_url("https://u:p@h:1/x?y=1#z") == "https://h:1/x?y=1#z"
    assert redact_url("https://token@h/x") == "https://h/x"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("http://user:S3crt@[::1/dicom-web", "http://[::1/dicom-web"),
        ("http://user:S3crt@\u2100/dicom-web", "http://\u2100/dicom-web"),
        ("http://us@r:S3@crt@[::1/x@y", "http://[::1/x@y"),
        ("//user:S3crt@[::1", "//[::1"),
    ],
)
def test_redact_url_cuts_the_userinfo_of_a_url_that_does_not_parse(url: str, redacted: str) -> None:
    """``urlsplit`` raising ValueError once gave the URL back whole (found by review)."""
    assert redact_url(url) == redacted
    assert "S3" not in str(errors.HTTPStatusError(500, url))


@pytest.mark.parametrize(
    "password", ["se#cret", "se?cret", "se/cret", "se@cret", "a#b?c/d@e", "p@ss/word", "1#se"]
)
def test_redact_url_drops_a_password_holding_a_url_delimiter(password: str) -> None:
    """A '#', '?' or '/' in the password ended the netloc, so it was given back whole (review)."""
    url = f"https://user:{password}@host.example/dicom-web?x=1"
    assert redact_url(url) == "https://host.example/dicom-web?x=1"
    assert password not in str(errors.HTTPStatusError(500, url))


def test_redact_url_keeps_an_at_sign_in_a_path_or_query() -> None:
    for url in ("https://pacs:8042/studies/a@b?m=c@d", "https://pacs/x?m=a@b", "http://h/x#a@b"):
        assert redact_url(url) == url
    assert redact_url("https://u:p@pacs/studies?m=a@b") == "https://pacs/studies?m=a@b"


def test_excerpt_is_short_and_printable() -> None:
    assert excerpt(None) == ""
    assert excerpt(b"\xff\xfeabc") == "\ufffd\ufffdabc"
    long = excerpt("x" * 1000)
    assert len(long) == errors.EXCERPT_LENGTH
    assert long.endswith("…")


def test_transport_error_chains_and_redacts() -> None:
    cause = ConnectionResetError("reset by peer")

    def fail() -> None:
        try:
            raise cause
        except OSError as exc:
            raise RequestTimeoutError("timed out", url="http://u:p@h/x") from exc

    with pytest.raises(TransportError) as info:
        fail()
    assert info.value.__cause__ is cause
    assert info.value.url == "http://h/x"
    assert "p@" not in str(info.value)


def test_invalid_response_error_message_names_url_and_excerpt() -> None:
    err = InvalidResponseError(
        "not a JSON array", url="http://h/studies", status=200, body="<html>"
    )
    assert "not a JSON array" in str(err)
    assert "HTTP 200 from http://h/studies" in str(err)
    assert err.body_excerpt == "<html>"


def test_crawl_incomplete_error_lists_failures() -> None:
    failures = [(f"/studies/1.{i}/series", ServerError(503, "http://h/x")) for i in range(25)]
    err = CrawlIncompleteError(failures, counts={"STUDY": 10, "SERIES": 3})
    text = str(err)
    assert "25 part(s) could not be fetched" in text
    assert "10 study" in text
    assert "/studies/1.0/series" in text
    assert "and 5 more" in text
    assert len(err.failures) == 25


def test_crawl_incomplete_error_stats_is_typed_as_the_crawl_stats() -> None:
    """``.stats`` is documented as the crawl's ``CrawlStats``: typed so, not as ``object``."""
    from aqido.stats import CrawlStats

    hints = typing.get_type_hints(CrawlIncompleteError.__init__, None, {"CrawlStats": CrawlStats})
    assert hints["stats"] == CrawlStats | None
    stats = CrawlStats()
    assert CrawlIncompleteError([], stats=stats).stats is stats


UIDS = [f"1.2.826.0.1.3680043.8.498.{i}" for i in range(50)]


def _shard_error(shard: int) -> CrawlIncompleteError:
    """A Dask shard's crawl error: 21 failures of 50-UID queries, each a 1,700-character line."""
    query = HierarchicalQuery(StudyInstanceUID=UIDS)
    url = f"http://h/dicom-web{query}"
    return CrawlIncompleteError(
        [(query, ServerError(503, url, b"busy " * 100)) for _ in range(21)],
        counts={"STUDY": shard},
    )


def test_crawl_incomplete_error_message_is_bounded() -> None:
    series = RelationalQuery(StudyInstanceUID=UIDS, query_level=QueryLevel.SERIES)
    failures = [(f"shard date-{i:04d}: {series}", _shard_error(i)) for i in range(22)]
    failures += [(series, ServerError(503, f"http://h/dicom-web{series}", b"x" * 500))] * 3
    error = CrawlIncompleteError(failures, counts={"STUDY": 10, "SERIES": 3})
    text = str(error)
    lines = text.split("\n")
    # The header, 20 failures and the count of the others, each at most 300 characters:
    # at most 22 x 301 = 6,622 characters, whatever the queries and the nested errors
    # (unbounded, this one was 1.3 million; distributed gives up at 10,000).
    assert len(lines) == 1 + LISTED_FAILURES + 1
    assert all(len(line) <= FAILURE_LINE_LENGTH for line in lines), max(map(len, lines))
    assert len(text) <= 22 * (FAILURE_LINE_LENGTH + 1)
    assert (
        lines[0] == "crawl incomplete: 25 part(s) could not be fetched (fetched 10 study, 3 series)"
    )
    assert lines[-1] == "  ... and 5 more"
    # Each line: the query's start, the error's type and its message's first line.
    first = lines[1]
    assert first.startswith(f"  - shard date-0000: /series?StudyInstanceUID={UIDS[0]},")
    cut = len(f"shard date-0000: {series}") - 150
    assert (
        f"… ({cut:,} more characters): CrawlIncompleteError: crawl incomplete: 21 part(s) "
        "could not be fetched" in first
    )
    assert first.endswith("(fetched 0 study)")
    # The failures stay complete and unchanged: the same queries and error objects.
    assert error.failures == tuple(CrawlFailure(query, exc) for query, exc in failures)
    assert all(got.error is exc for got, (_, exc) in zip(error.failures, failures, strict=True))
    assert len(str(error.failures[0].error).splitlines()) == 22
    assert str(error.failures[0]).startswith(f"shard date-0000: {series}: CrawlIncompleteError")


def test_a_long_one_line_failure_is_cut_with_an_ellipsis() -> None:
    query = HierarchicalQuery(StudyInstanceUID=UIDS)
    url = f"http://h/dicom-web{query}"  # the message holds this 1,500-character URL
    error = CrawlIncompleteError([(query, ServerError(503, url, b"busy"))])
    line = str(error).split("\n")[1]
    assert len(line) == FAILURE_LINE_LENGTH
    assert line.startswith(f"  - /studies?StudyInstanceUID={UIDS[0]},")
    assert ": ServerError: HTTP 503 for http://h/dicom-web/studies?" in line
    assert line.endswith("…")
    short = CrawlIncompleteError([("/studies/1.2/series", ServerError(503, "http://h/x"))])
    assert str(short).split("\n")[1] == (
        "  - /studies/1.2/series: ServerError: HTTP 503 for http://h/x"
    )


def test_a_failure_query_keeps_its_start_and_says_how_much_is_left_out() -> None:
    # One helper cuts a failure's query for every one-line report: the lines of a
    # CrawlIncompleteError's message and the CLI's "could not fetch" lines.
    query = HierarchicalQuery(StudyInstanceUID=UIDS)
    text = str(query)
    assert len(text) > 1000
    cut = errors._failure_query(query)
    assert cut == f"{text[:150]}… ({len(text) - 150:,} more characters)"
    assert errors._failure_query("/studies/1.2/series") == "/studies/1.2/series"
    # Cut only where that makes it shorter: a 155-character path of two UIDs stays whole.
    assert errors._failure_query("x" * 172) == "x" * 172
    assert errors._failure_query("x" * 173) == "x" * 150 + "… (23 more characters)"
    instances = f"/studies/{'1' * 64}/series/{'2' * 64}/instances"
    assert errors._failure_query(instances) == instances
    # One line: whitespace runs (a line break a value brought) collapse to one space.
    assert errors._failure_query("a\n\r\tb  c") == "a b c"
    line = str(CrawlIncompleteError([(query, ServerError(503, "http://h/x"))])).split("\n")[1]
    assert line == f"  - {cut}: ServerError: HTTP 503 for http://h/x"


def test_distributed_keeps_a_crawl_incomplete_error_as_itself() -> None:
    # distributed replaces an exception whose message passes 10,000 characters with
    # type(exc)("Long error message", text), which this class cannot take: a plain Exception.
    utils = pytest.importorskip("distributed.utils")
    query = HierarchicalQuery(StudyInstanceUID=UIDS)
    error = CrawlIncompleteError([(f"shard {i}: {query}", _shard_error(i)) for i in range(25)])
    assert utils.truncate_exception(error) is error


def test_errors_module_is_a_leaf() -> None:
    """No aqido import at run time; ``if TYPE_CHECKING:`` (annotations only) may name one."""
    import ast
    import pathlib

    tree = ast.parse(pathlib.Path(errors.__file__).read_text())
    for block in ast.walk(tree):
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING":
            block.body = []  # never run: no import cycle, whatever it imports
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("aqido"), node.module
        if isinstance(node, ast.Import):
            assert all(not a.name.startswith("aqido") for a in node.names)


def test_without_secret_headers_drops_every_secret_name_in_any_case_and_keeps_the_rest() -> None:
    received = [
        ("Retry-After", "7"),
        ("SET-COOKIE", "a=1"),
        ("Warning", '299 pacs "busy"'),
        ("set-cookie2", "b=2"),
        ("Authentication-Info", 'nextnonce="n"'),
        ("warning", '299 pacs "slow"'),  # a repeated name keeps both values
        ("PROXY-authentication-INFO", 'rspauth="r"'),
        ("Set-Cookie-Policy", "kept"),  # a secret's name as a prefix is another header
    ]
    assert errors._without_secret_headers(received) == [
        ("Retry-After", "7"),
        ("Warning", '299 pacs "busy"'),
        ("warning", '299 pacs "slow"'),
        ("Set-Cookie-Policy", "kept"),
    ]
    assert errors._without_secret_headers(iter(received[:1])) == [("Retry-After", "7")]
    assert errors._without_secret_headers([]) == []
    for name in errors.SECRET_RESPONSE_HEADERS:
        assert errors._without_secret_headers([(name.upper(), "x"), (name.title(), "y")]) == []

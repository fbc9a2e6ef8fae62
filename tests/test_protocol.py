"""The sans-I/O protocol layer: pure functions, no event loop, no network."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from aqido.errors import (
    BadRequestError,
    HTTPStatusError,
    InvalidResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
)
from aqido.protocol import (
    ACCEPT,
    QidoWarning,
    header_values,
    join_url,
    parse_response,
    parse_retry_after,
    parse_warnings,
)

STUDY = b'[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]'
JSON = {"Content-Type": "application/dicom+json"}
URL = "http://user:secret@pacs.example:8042/dicom-web/studies?PatientID=X"


# --- URL joining -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base",
    [
        "http://h:8042/dicom-web",
        "http://h:8042/dicom-web/",
        "http://h:8042/dicom-web//",
    ],
)
@pytest.mark.parametrize("path", ["/studies", "studies"])
def test_join_url_never_doubles_slashes(base: str, path: str) -> None:
    assert join_url(base, path) == "http://h:8042/dicom-web/studies"


def test_join_url_root_base_and_query_string_kept_verbatim() -> None:
    assert join_url("http://h/", "/studies", "PatientName=Doe^J*") == (
        "http://h/studies?PatientName=Doe^J*"
    )
    assert join_url("http://h", "/studies/1.2/series", "") == "http://h/studies/1.2/series"
    assert join_url("http://h", "/studies", "?limit=2") == "http://h/studies?limit=2"


def test_accept_header_prefers_dicom_json_and_allows_plain_json() -> None:
    assert ACCEPT == "application/dicom+json, application/json"


# --- successful and empty responses ------------------------------------------------------------


def test_200_with_items() -> None:
    response = parse_response(200, JSON, STUDY, url=URL)
    assert response.items == [{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]
    assert response.status == 200
    assert response.warnings == ()
    assert not response.truncated
    assert "secret" not in response.url


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (204, {}, b""),
        (204, {"Content-Type": "text/html"}, b""),
        (200, JSON, b"[]"),
        (200, JSON, b"  [ ]\n"),
        (200, {**JSON, "Content-Length": "0"}, b""),
        (200, {"Content-Type": "text/html", "Content-Length": "0"}, b""),
        (200, {"Content-Type": "application/octet-stream", "Content-Length": "0"}, b""),
    ],
)
def test_every_kind_of_no_results_is_an_empty_list(
    status: int, headers: dict[str, str], body: bytes
) -> None:
    assert parse_response(status, headers, body).items == []


@pytest.mark.parametrize(
    ("headers", "body"),
    [(JSON, b""), ({}, b""), (JSON, b"\n\t "), ({**JSON, "Content-Length": "3"}, b"\n\t ")],
)
def test_an_empty_200_body_that_does_not_say_so_is_an_invalid_response(
    headers: dict[str, str], body: bytes
) -> None:
    with pytest.raises(InvalidResponseError, match="empty body") as info:
        parse_response(200, headers, body, url=URL)
    assert info.value.status == 200


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom+json",
        "application/json",
        "application/json; charset=utf-8",
        "Application/DICOM+JSON; charset=UTF-8",
        "application/dicom+json;transfer-syntax=*",
    ],
)
def test_json_content_types_are_accepted_with_parameters(content_type: str) -> None:
    assert len(parse_response(200, {"Content-Type": content_type}, STUDY).items) == 1


def test_missing_content_type_is_read_as_json() -> None:
    assert len(parse_response(200, {}, STUDY).items) == 1


def test_a_huge_content_type_is_cut_in_the_message() -> None:
    headers = {"Content-Type": "text/\x1b[31m" + "x" * 8000}
    with pytest.raises(InvalidResponseError, match=r"content type 'text/\\x1b\[31mxxx.*…'") as info:
        parse_response(200, headers, b"hello", url="http://h/studies")
    assert len(str(info.value)) < 300


def test_206_is_success_with_truncation() -> None:
    response = parse_response(206, JSON, STUDY)
    assert len(response.items) == 1
    assert response.truncated


def test_utf8_bom_and_non_ascii() -> None:
    body = '[{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "山田^太郎"}]}}]'.encode()
    response = parse_response(200, JSON, b"\xef\xbb\xbf" + body)
    assert response.items[0]["00100010"]["Value"][0]["Alphabetic"] == "山田^太郎"


def test_single_dataset_object_is_wrapped() -> None:
    body = b'{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}'
    assert parse_response(200, JSON, body).items == [{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]


def test_multidict_headers_and_pairs_are_supported() -> None:
    headers = CIMultiDict([("content-type", "application/dicom+json"), ("X-A", "1")])
    response = parse_response(200, headers, STUDY)
    assert response.headers["content-type"] == "application/dicom+json"
    pairs = [("Content-Type", "application/json"), ("Warning", '299 h "a"')]
    assert parse_response(200, pairs, STUDY).warnings[0].text == "a"


# --- invalid bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "fragment"),
    [
        (JSON, b"[{", "not JSON"),
        (JSON, b"not json at all", "not JSON"),
        (JSON, b'{"HttpError": "Bad"}', "not an array"),
        (JSON, b'"text"', "not an array"),
        (JSON, b"42", "not an array"),
        (JSON, b'[{"0020000D": {}}, 3]', "item 1"),
        (JSON, b"[null]", "item 0"),
        ({"Content-Type": "text/html; charset=utf-8"}, b"<html><body>Login</body></html>", "HTML"),
        (
            {"Content-Type": 'multipart/related; type="application/dicom+xml"; boundary=x'},
            b"--x\r\nContent-Type: application/dicom+xml\r\n\r\n<NativeDicomModel/>\r\n--x--",
            "multipart",
        ),
        ({"Content-Type": "text/plain"}, b"Bad request", "text/plain"),
        ({}, b"<!DOCTYPE html><html></html>", "markup"),
    ],
)
def test_bodies_that_are_not_dicom_json_raise_invalid_response(
    headers: dict[str, str], body: bytes, fragment: str
) -> None:
    with pytest.raises(InvalidResponseError, match=fragment) as info:
        parse_response(200, headers, body, url=URL)
    error = info.value
    assert error.status == 200
    assert error.url == "http://pacs.example:8042/dicom-web/studies?PatientID=X"
    assert "secret" not in str(error)
    assert error.body_excerpt


def test_invalid_json_error_is_chained_to_the_decoder_error() -> None:
    with pytest.raises(InvalidResponseError) as info:
        parse_response(200, JSON, b"[1,")
    assert isinstance(info.value.__cause__, ValueError)


def test_huge_body_excerpt_is_short() -> None:
    body = b"<html>" + b"x" * 1_000_000 + b"</html>"
    with pytest.raises(InvalidResponseError) as info:
        parse_response(200, {"Content-Type": "text/html"}, body)
    assert len(str(info.value)) < 600


# --- status errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, UnauthorizedError),
        (403, UnauthorizedError),
        (404, NotFoundError),
        (429, RateLimitedError),
        (500, ServerError),
        (503, ServerError),
        (302, HTTPStatusError),
        (418, HTTPStatusError),
    ],
)
def test_status_errors(status: int, cls: type[HTTPStatusError]) -> None:
    body = b'{"HttpError": "Bad Request", "Message": "limit=abc is not an integer"}'
    headers = CIMultiDict([("Retry-After", "3"), ("X-Trace", "a"), ("X-Trace", "b")])
    with pytest.raises(cls) as info:
        parse_response(status, headers, body, url=URL)
    error = info.value
    assert type(error) is cls
    assert error.status == status
    assert error.url == "http://pacs.example:8042/dicom-web/studies?PatientID=X"
    assert "secret" not in str(error)
    assert "limit=abc" in error.body_excerpt
    assert error.headers["Retry-After"] == "3"
    assert error.headers["X-Trace"] == "a, b"


def test_status_error_reason_phrase() -> None:
    with pytest.raises(ServerError, match=r"HTTP 503 Service Unavailable for http://h/studies"):
        parse_response(503, {}, b"", url="http://h/studies")


# --- Warning headers ---------------------------------------------------------------------------


def test_dcm4chee_truncation_warning_count() -> None:
    (warning,) = parse_warnings(
        ['299 host:8080 "There are 42 additional results that can be requested"']
    )
    assert warning == QidoWarning(
        code=299,
        agent="host:8080",
        text="There are 42 additional results that can be requested",
        raw='299 host:8080 "There are 42 additional results that can be requested"',
    )
    assert warning.is_truncation
    assert warning.additional_results == 42


@pytest.mark.parametrize(
    "value",
    [
        "299 {+service}: There are 7 additional results that can be requested",
        "299 {+service} There are 7 additional results that can be requested",
        '299 {+SERVICE}: "There are 7 additional results that can be requested"',
        'Warning: 299 http://h/dicom-web "There are 7 additional results that can be requested"',
        'Warning: Warning: 299 h:1 "There are 7 additional results that can be requested"',
        "warning:299 h There are 7 additional results that can be requested",
        '299 "There are 7 additional results that can be requested"',
        '299 h "There are 7 additional results that can be requested" '
        '"Wed, 21 Oct 2015 07:28:00 GMT"',
    ],
)
def test_warning_variants_all_yield_the_count(value: str) -> None:
    (warning,) = parse_warnings([value])
    assert warning.code == 299
    assert warning.text.startswith("There are 7")
    assert warning.text.endswith("requested")
    assert warning.is_truncation
    assert warning.additional_results == 7


def test_warning_agent_is_kept() -> None:
    (a,) = parse_warnings(['299 {+service} "x"'])
    (b,) = parse_warnings(['Warning: 299 http://h:1/dicom-web "x"'])
    assert a.agent == "{+service}"
    assert b.agent == "http://h:1/dicom-web"


def test_old_truncation_wording_and_azure_v1_without_count() -> None:
    old = parse_warnings(
        [
            '299 h "The number of results exceeded the maximum supported by the server. '
            'Additional results can be requested."'
        ]
    )
    azure = parse_warnings(["299 {+service}: There are additional results that can be requested."])
    for (warning,) in (old, azure):
        assert warning.is_truncation
        assert warning.additional_results is None


def test_a_long_run_of_digits_in_a_warning_is_read_in_linear_time() -> None:
    # Each digit of the run began a search of the count pattern that ran to the run's end:
    # one 8 KB header (aiohttp's limit) took over a second, ten of them 40 s of a search,
    # with the event loop blocked.  A run of 200,000 digits is read in one pass now; the old
    # quadratic search would run for hours (no timed assertion: the test would hang).
    header = f'299 h "more results {"9" * 200_000} and no count"'
    (warning,) = parse_warnings([header])
    assert warning.is_truncation
    assert warning.additional_results is None
    (counted,) = parse_warnings([f'299 h "x{"9" * 4000}1 additional results"'])
    assert counted.additional_results == int("9" * 4000 + "1")


def test_a_count_too_long_for_int_is_no_count_not_a_crash() -> None:
    header = f'299 h "There are {"9" * 5000} additional results"'
    (warning,) = parse_warnings([header])
    assert warning.is_truncation
    assert warning.additional_results is None
    response = parse_response(200, CIMultiDict([("Warning", header)]), STUDY)
    assert response.truncated
    assert response.additional_results is None


FUZZY = "The fuzzymatching parameter is not supported. Only literal matching has been performed."
TRUNC = "There are 5 additional results that can be requested"


def test_two_warnings_comma_joined_in_one_header() -> None:
    warnings = parse_warnings([f'299 h:1 "{FUZZY}", 299 h:1 "{TRUNC}"'])
    assert [w.text for w in warnings] == [FUZZY, TRUNC]
    assert not warnings[0].is_truncation
    assert warnings[1].additional_results == 5


def test_two_warnings_unquoted_comma_joined() -> None:
    warnings = parse_warnings([f"299 {{+service}}: {FUZZY},299 {{+service}}: {TRUNC}"])
    assert [w.text for w in warnings] == [FUZZY, TRUNC]


def test_two_warnings_as_repeated_header_lines() -> None:
    headers = CIMultiDict([("Warning", f'299 h "{FUZZY}"'), ("Warning", f'299 h "{TRUNC}"')])
    response = parse_response(200, headers, STUDY)
    assert [w.text for w in response.warnings] == [FUZZY, TRUNC]
    assert response.truncated
    assert response.additional_results == 5


def test_commas_inside_warning_text_do_not_split() -> None:
    text = "The following attributes are not supported for matching: 00081030, 00100030"
    (quoted,) = parse_warnings([f'299 h "{text}"'])
    (unquoted,) = parse_warnings([f"299 h {text}"])
    assert quoted.text == text
    assert unquoted.text == text
    assert not quoted.is_truncation


def test_escaped_quotes_in_warning_text() -> None:
    (warning,) = parse_warnings([r'299 h "say \"hi\", 299 not a new one"'])
    assert warning.text == 'say "hi", 299 not a new one'


def test_free_text_warning_without_code() -> None:
    (warning,) = parse_warnings(['"There are 3 additional results that can be requested"'])
    assert warning.code is None
    assert warning.is_truncation
    assert warning.additional_results == 3


def test_non_299_warning_is_not_truncation() -> None:
    (warning,) = parse_warnings(['199 h "there are 3 additional results"'])
    assert warning.code == 199
    assert not warning.is_truncation


def test_header_values_from_all_header_shapes() -> None:
    multi = CIMultiDict([("Warning", "a"), ("warning", "b"), ("X", "c")])
    assert header_values(multi, "WARNING") == ["a", "b"]
    assert header_values({"Warning": "a"}, "warning") == ["a"]
    assert header_values([("warning", "a"), ("WARNING", "b")], "Warning") == ["a", "b"]
    assert header_values({}, "Warning") == []


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80), st.lists(st.text(max_size=40), max_size=3))
def test_warning_parser_never_crashes(value: str, more: list[str]) -> None:
    for warning in parse_warnings([value, *more]):
        assert isinstance(warning.text, str)
        assert warning.additional_results is None or warning.additional_results >= 0


# --- Retry-After -------------------------------------------------------------------------------

NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("Wednesday, 21-Oct-15 07:28:10 GMT", 10.0),
        ("Wed Oct 21 07:28:05 2015", 5.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("inf", None),
        # delay-seconds past a double: it was unreadable (None), so retried at once
        ("9" * 400, float("inf")),
        ("1e400", float("inf")),
        # a date past year 9999 (datetime's last) was unreadable (None): retried at once
        ("Wed, 21 Oct 10000 07:28:00 GMT", float("inf")),
        ("Fri, 31 Dec 99999 23:59:59 GMT", float("inf")),
        ("Wed, 21 Oct 99999999999999999999 07:28:00 GMT", float("inf")),  # OverflowError (review)
        ("Wed, 31 Feb 2015 07:28:00 GMT", None),  # no such day
        ("Wed, 21 Oct 2015 25:28:00 GMT", None),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_retry_after_date_against_the_real_clock_is_never_negative() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_aiohttp_style_headers_read_the_same_as_pairs() -> None:
    """The multidict fast path (aiohttp's headers) agrees with the generic one."""
    from multidict import CIMultiDict, CIMultiDictProxy

    pairs = [
        ("content-type", "Application/DICOM+JSON; charset=utf-8"),
        ("Warning", '299 h "There are 3 additional results that can be requested"'),
        ("warning", '299 h "second"'),
        ("Content-Length", "2"),
    ]
    body = b"[{}]"
    generic = parse_response(200, pairs, body, url="http://h/studies")
    fast = parse_response(200, CIMultiDictProxy(CIMultiDict(pairs)), body, url="http://h/studies")
    assert fast == generic
    assert fast.additional_results == 3
    assert len(fast.warnings) == 2
    none = CIMultiDictProxy(CIMultiDict([("Content-Type", "application/dicom+json")]))
    assert parse_response(200, none, body).warnings == ()
    html = CIMultiDictProxy(CIMultiDict([("CONTENT-TYPE", "text/html")]))
    with pytest.raises(InvalidResponseError, match="HTML page"):
        parse_response(200, html, b"<html></html>")


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("There are 1,234 additional results that can be requested", 1234),
        ("There are 1.234 additional results", 1234),
        ("There are 1'234 additional results", 1234),
        ("There are 1\u00a0234\u00a0567 additional results", 1234567),
        ("There are 1234 additional results", 1234),
        ("There are 12,34 additional results", None),  # no thousands grouping: no count
        ("2,1234 additional results", None),
    ],
)
def test_a_count_with_thousands_separators_is_read_whole(text: str, count: int | None) -> None:
    # "1,234 additional results" was read as 234: paging stopped a thousand short and the
    # shortfall check compared against the wrong total
    (warning,) = parse_warnings([f'299 pacs "{text}"'])
    assert warning.is_truncation
    assert warning.additional_results == count

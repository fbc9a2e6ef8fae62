"""Every exception aqido defines pickles and copies as itself.

Exceptions cross process boundaries (a Dask worker's back to the client, a
``multiprocessing`` or ``ProcessPoolExecutor`` child's back to its parent): one
that does not survive ``pickle`` arrives as an unrelated error, or none.  The
classes are found by introspection, so a new one fails
``test_every_exception_class_has_cases`` until it has a row in ``CASES``.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import multiprocessing
import pickle
import pkgutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import attrs
import pytest

import aqido
from aqido import QidoRS, errors
from aqido._cli.common import UsageError
from aqido._dataset import _ItemError
from aqido._json import LoneSurrogateError
from aqido.errors import (
    BadRequestError,
    CheckpointError,
    ClientClosedError,
    CrawlFailure,
    CrawlIncompleteError,
    HTTPStatusError,
    InvalidQueryError,
    InvalidResponseError,
    NotFoundError,
    PayloadTooLargeError,
    ProxyConfigError,
    QidoError,
    QueryTypeError,
    RateLimitedError,
    RedirectError,
    RequestTimeoutError,
    ResponseTooLargeError,
    ResultsTruncatedError,
    ServerError,
    TLSError,
    TransportError,
    UnanswerableQueryError,
    UnauthorizedError,
    UnknownFieldError,
)
from aqido.profile import _ImpossibleValue
from aqido.query import HierarchicalQuery, QueryLevel, RelationalQuery
from aqido.stats import CrawlStats
from aqido.testing import FakeArchive, SyntheticArchive
from aqido.testing._emulation import BadRequest, InvalidValue
from aqido.testing.orthanc import OrthancError, OrthancUnavailableError, SeedError
from aqido.testing.tinypacs import StowError, TinyPacsError, TinyPacsUnavailableError


def _exception_classes() -> Iterator[type[BaseException]]:
    """Every exception class defined in an aqido module (all of them imported)."""
    for info in pkgutil.walk_packages(aqido.__path__, "aqido."):
        if info.name.rsplit(".", 1)[-1] == "__main__":  # runs the command line
            continue
        try:
            module = importlib.import_module(info.name)
        except ModuleNotFoundError as exc:  # an optional dependency this environment lacks
            if (exc.name or "").split(".")[0] == "aqido":
                raise
            continue
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                yield value


CLASSES = sorted(set(_exception_classes()), key=lambda cls: (cls.__module__, cls.__qualname__))

SECRET = "s3cret-pa55word"
#: a URL with credentials: the exceptions keep it without them, and so must their pickles
URL = f"https://alice:{SECRET}@pacs.example:8443/dicom-web/studies?PatientID=P%5E1&limit=10"
#: longer than an excerpt: its tail is in no exception, nor in any pickle of one
TAIL = "TAIL-BEYOND-THE-EXCERPT"
BODY = b'{"error":  "boom",\n\t"detail": "\xc3\xa9\x1b[2J"} ' + b"x " * 150 + TAIL.encode()
HEADERS = {"Retry-After": "3", "Content-Type": "text/html; charset=utf-8", "X-Trace": "a b"}

STUDY = HierarchicalQuery(StudyInstanceUID="1.2.826.0.1.3680043.8.498.1")
SERIES = HierarchicalQuery(
    query_level=QueryLevel.SERIES, StudyInstanceUID="1.2.826.0.1.3680043.8.498.1", Modality="CT"
)


def _http(cls: type[HTTPStatusError], status: int) -> list[BaseException]:
    return [
        cls(status, URL, BODY, reason="Some Reason", headers=HEADERS),
        cls(status, "http://h/studies"),
        cls(status, "http://h/studies", "  plain   text  ", reason="", headers=None),
    ]


#: A query with 50 UIDs (1,500 characters).
LONG = RelationalQuery(
    StudyInstanceUID=[f"1.2.826.0.1.3680043.8.498.{i}" for i in range(50)],
    query_level=QueryLevel.SERIES,
)


def _stats() -> CrawlStats:
    """A CrawlStats as a crawl leaves it: counters, failures, times, concurrency history."""
    stats = CrawlStats()
    stats.requests, stats.retries, stats.pages, stats.splits = 40, 3, 44, 2
    stats.items.update(STUDY=5, SERIES=9, INSTANCE=31)
    stats.studies_done, stats.studies_skipped = 4, 1
    stats.failures += [
        CrawlFailure(SERIES, ServerError(503, URL, BODY, reason="Service Unavailable")),
        CrawlFailure(STUDY, RequestTimeoutError("timed out after 30 s", url=URL)),
    ]
    stats.started, stats.finished = 1000.25, 1012.5
    stats.concurrency_limit = 6
    stats.concurrency_history += [(0.0, 4), (2.5, 6)]
    return stats


def _incomplete() -> list[BaseException]:
    stats = _stats()
    return [
        CrawlIncompleteError(stats.failures, stats.counts(), stats=stats),
        CrawlIncompleteError(
            [(f"/studies/1.{i}/series", NotFoundError(404, URL)) for i in range(25)],
            {"STUDY": 10},
            results=({"0020000D": {"vr": "UI", "Value": ["1.2"]}},),
        ),
        CrawlIncompleteError([]),
        CrawlIncompleteError(
            [("shard date-0001", CrawlIncompleteError(stats.failures, stats.counts()))]
        ),
        CrawlIncompleteError(  # a message cut short: long queries, nested errors
            [
                (
                    f"shard date-{i:04d}: {LONG}",
                    CrawlIncompleteError([(LONG, NotFoundError(404, f"{URL}{LONG}"))] * 21),
                )
                for i in range(25)
            ]
        ),
    ]


#: Representative instances of every class, built with all their constructor's arguments.
CASES: dict[type[BaseException], Callable[[], list[BaseException]]] = {
    QidoError: lambda: [QidoError("something failed"), QidoError()],
    InvalidQueryError: lambda: [InvalidQueryError("StudyDate: 2024-13-01 is not a DA")],
    UnanswerableQueryError: lambda: [
        UnanswerableQueryError(["PatientName: no wildcards", "Modality: not returned"]),
        UnanswerableQueryError(iter(["one reason"]), query=SERIES),
        UnanswerableQueryError([], query="/studies?x=1"),
    ],
    QueryTypeError: lambda: [QueryTypeError("StudyInstanceUID: a list where one UID goes")],
    UnknownFieldError: lambda: [
        UnknownFieldError("unknown field 'PatientNmae'", field="PatientNmae", suggestion="PN"),
        UnknownFieldError("unknown field 'Foo'", field="Foo"),
    ],
    ClientClosedError: lambda: [ClientClosedError("the client is closed")],
    TransportError: lambda: [
        TransportError("connection refused", url=URL),
        TransportError("connection reset"),
    ],
    RequestTimeoutError: lambda: [RequestTimeoutError("timed out after 30 s", url=URL)],
    TLSError: lambda: [TLSError("certificate verify failed", url=URL)],
    ProxyConfigError: lambda: [ProxyConfigError("the proxy in HTTPS_PROXY is a 'socks5' URL")],
    HTTPStatusError: lambda: _http(HTTPStatusError, 406),
    BadRequestError: lambda: _http(BadRequestError, 400),
    UnauthorizedError: lambda: _http(UnauthorizedError, 401),
    NotFoundError: lambda: _http(NotFoundError, 404),
    PayloadTooLargeError: lambda: _http(PayloadTooLargeError, 413),
    RateLimitedError: lambda: _http(RateLimitedError, 429),
    ServerError: lambda: _http(ServerError, 503),
    InvalidResponseError: lambda: [
        InvalidResponseError("not a JSON array", url=URL, status=200, body=BODY),
        InvalidResponseError("item 3: tag 00100010 has no 'vr'", url=URL),
        InvalidResponseError("item 3: tag 00100010 has no 'vr'"),
    ],
    ResponseTooLargeError: lambda: [
        ResponseTooLargeError("more than 1000 bytes", url=URL, status=200, body=b"[{")
    ],
    RedirectError: lambda: [RedirectError("redirect loop", url=URL, status=302)],
    ResultsTruncatedError: lambda: [
        ResultsTruncatedError("cannot split further", url=URL, status=200, body="[]")
    ],
    CrawlIncompleteError: _incomplete,
    CheckpointError: lambda: [
        CheckpointError("damaged line", path="/tmp/ck.jsonl", line=3),
        CheckpointError("another crawl's checkpoint", path=errors.__file__),
    ],
    # the other modules' exceptions: plain messages
    _ItemError: lambda: [_ItemError("tag 00100010: element has no 'vr'")],
    LoneSurrogateError: lambda: [LoneSurrogateError("lone surrogate in a JSON string")],
    _ImpossibleValue: lambda: [_ImpossibleValue("max_results must be a positive number, not -3")],
    UsageError: lambda: [UsageError("--resume needs --out")],
    BadRequest: lambda: [BadRequest("unknown attribute: 'Foo'")],
    InvalidValue: lambda: [InvalidValue("StudyDate: bad range")],
    OrthancError: lambda: [OrthancError("failed")],
    OrthancUnavailableError: lambda: [OrthancUnavailableError("no Orthanc binary\nlog tail")],
    SeedError: lambda: [SeedError("uploaded 3, found 2")],
    TinyPacsError: lambda: [TinyPacsError("failed")],
    TinyPacsUnavailableError: lambda: [TinyPacsUnavailableError("tiny_pacs did not start")],
    StowError: lambda: [StowError("stored 1 of 2 instances")],
}

ROUND_TRIPS: dict[str, Callable[[BaseException], BaseException]] = {
    **{
        f"pickle-{protocol}": lambda e, p=protocol: pickle.loads(pickle.dumps(e, protocol=p))
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1)
    },
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
}


def assert_same(got: Any, want: Any, where: str = "error") -> None:
    """``got`` is ``want`` rebuilt: the same type and, recursively, the same state.

    Exceptions (and ``CrawlStats``, ``eq=False``) compare by identity, so they are
    compared by their args and attributes instead.
    """
    assert type(got) is type(want), where
    if isinstance(want, BaseException):
        assert got.args == want.args, where
        assert str(got) == str(want), where
        assert repr(got) == repr(want), where
        assert vars(got).keys() == vars(want).keys(), where
        for name, value in vars(want).items():
            assert_same(getattr(got, name), value, f"{where}.{name}")
    elif attrs.has(type(want)):
        for field in attrs.fields(type(want)):
            name = field.name
            assert_same(getattr(got, name), getattr(want, name), f"{where}.{name}")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for i, (one, other) in enumerate(zip(got, want, strict=True)):
            assert_same(one, other, f"{where}[{i}]")
    elif isinstance(want, dict):
        assert list(got) == list(want), where
        for key, value in want.items():
            assert_same(got[key], value, f"{where}[{key!r}]")
    else:
        assert got == want, where


def test_every_exception_class_has_cases() -> None:
    assert errors.QidoError in CLASSES
    assert len(CLASSES) >= len(errors.__all__) - 5  # the functions and CrawlFailure aside
    missing = [f"{cls.__module__}.{cls.__qualname__}" for cls in CLASSES if cls not in CASES]
    assert not missing, f"add representative instances of {missing} to CASES"
    for cls, make in CASES.items():
        built = make()
        assert built, cls
        assert all(type(error) is cls for error in built), cls


@pytest.mark.parametrize("trip", ROUND_TRIPS)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__qualname__)
def test_an_exception_survives_the_round_trip(cls: type[BaseException], trip: str) -> None:
    for error in CASES[cls]():
        assert_same(ROUND_TRIPS[trip](error), error)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__qualname__)
def test_a_pickle_holds_no_more_than_the_exception_exposes(cls: type[BaseException]) -> None:
    """No credentials of the URL it was given, no body beyond its excerpt."""
    for error in CASES[cls]():
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            data = pickle.dumps(error, protocol=protocol)
            assert SECRET.encode() not in data
            assert TAIL.encode() not in data
            assert b"alice" not in data


def test_the_rebuilt_attributes_are_the_exposed_ones() -> None:
    (error, *_) = CASES[ServerError]()
    assert isinstance(error, ServerError)
    again = pickle.loads(pickle.dumps(error))
    assert again.status == 503
    assert again.url == "https://pacs.example:8443/dicom-web/studies?PatientID=P%5E1&limit=10"
    assert again.body_excerpt == error.body_excerpt
    assert again.body_excerpt.endswith("…")
    assert again.reason == "Some Reason"
    assert again.headers == HEADERS
    assert isinstance(again, HTTPStatusError)
    assert isinstance(again, QidoError)


def test_a_crawl_incomplete_error_keeps_its_failures_and_stats() -> None:
    error = CASES[CrawlIncompleteError]()[0]
    assert isinstance(error, CrawlIncompleteError)
    for trip in ROUND_TRIPS.values():
        again = trip(error)
        assert isinstance(again, CrawlIncompleteError)
        assert [type(f) for f in again.failures] == [CrawlFailure, CrawlFailure]
        (series, series_error), (study, study_error) = again.failures
        assert series == SERIES
        assert study == STUDY
        assert isinstance(series_error, ServerError)
        assert series_error.status == 503
        assert isinstance(study_error, RequestTimeoutError)
        assert again.counts == {"STUDY": 5, "SERIES": 9, "INSTANCE": 31}
        stats = again.stats
        assert isinstance(stats, CrawlStats)
        assert stats.requests == 40
        assert stats.elapsed == 12.25
        assert stats.concurrency_history == [(0.0, 4), (2.5, 6)]
        assert stats.counts() == again.counts
        assert not stats.complete
        if trip is not copy.copy:  # one object, as before: the stats' failures are the error's
            assert stats.failures[0].error is series_error


def test_the_error_of_a_real_crawl_survives_pickling() -> None:
    """A crawl with a failing study: the CrawlIncompleteError it raises, with its CrawlStats."""
    synthetic = SyntheticArchive(seed=5, studies=3, series_per_study=2, instances_per_series=1)
    broken = synthetic.studies[1].study_instance_uid
    with FakeArchive(synthetic).run_in_thread() as archive:
        archive.fail(f"/studies/{broken}/series", "500")
        with QidoRS(archive.url, retries=0) as client, pytest.raises(CrawlIncompleteError) as info:
            list(client.crawl())
    error = info.value
    assert isinstance(error.stats, CrawlStats)
    assert error.stats.failures
    for trip in ROUND_TRIPS.values():
        again = trip(error)
        assert_same(again, error)
        (failure,) = again.failures
        assert isinstance(failure.error, ServerError)
        assert failure.error.status == 500
        assert f"/studies/{broken}/series" in str(failure.error.url)
        assert isinstance(again.stats, CrawlStats)
        assert again.stats.counts() == error.stats.counts() == again.counts
        assert again.stats.finished == error.stats.finished


def test_a_relational_query_in_a_failure_survives() -> None:
    query = RelationalQuery(query_level=QueryLevel.SERIES, Modality="MR")
    error = CrawlIncompleteError([(query, NotFoundError(404, URL))])
    again = pickle.loads(pickle.dumps(error))
    assert_same(again, error)
    assert again.failures[0].query == query


def _raise(error: BaseException) -> None:
    raise error


def test_an_error_raised_in_a_child_process_arrives_as_itself() -> None:
    error = NotFoundError(404, URL, b"no such study", reason="Not Found", headers=HEADERS)
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        future = pool.submit(_raise, error)
        with pytest.raises(NotFoundError) as info:
            future.result(timeout=120)
    assert_same(info.value, error)

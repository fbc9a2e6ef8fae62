"""The crawl's fast paths (from profiling the benchmarks) keep their exact behaviour.

- children are attached to a study/series by a shallow copy, not ``attrs.evolve``:
  the result must be the object ``evolve`` would build;
- an unpaged query is sent as it is (no rebuilt copy);
- concurrency tokens are taken without an extra event-loop turn when free, and
  are always given back (success, HTTP error, cancellation);
- the lone-surrogate check of query text is a regex now.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

from aqido._slots import Slots
from aqido.client import AsyncQidoRS
from aqido.crawl import iter_pages
from aqido.errors import InvalidQueryError, ServerError
from aqido.protocol import QidoResponse
from aqido.query import HierarchicalQuery, QueryLevel, RelationalQuery
from aqido.results import Series, Study, parse_results
from aqido.testing import FakeArchive, SyntheticArchive

SYNTH = SyntheticArchive(seed=3, studies=6, series_per_study=2, instances_per_series=3)


def _study_json(n: int) -> dict[str, Any]:
    return {
        "0020000D": {"vr": "UI", "Value": [f"1.2.3.{n}"]},
        "00080020": {"vr": "DA", "Value": ["20240131"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00201206": {"vr": "IS", "Value": [2]},
    }


def test_with_series_builds_what_evolve_builds() -> None:
    (study,) = parse_results([_study_json(1)], QueryLevel.STUDY)
    assert study.PatientName is not None  # one field already converted (cached) ...
    series = parse_results(
        [{"0020000E": {"vr": "UI", "Value": [f"1.2.3.1.{k}"]}} for k in range(2)],
        QueryLevel.SERIES,
    )
    fast = study.with_series(iter(series))
    slow = attrs.evolve(study, series=tuple(series))
    assert type(fast) is Study
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert fast.series == tuple(series)
    assert isinstance(fast.series, tuple)
    assert fast.to_json() == slow.to_json() == study.to_json()
    for field in attrs.fields(Study):  # ... and the others still convert on first use
        assert getattr(fast, field.name) == getattr(slow, field.name)
    assert study.series == ()  # the original is untouched
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.StudyDate = None  # type: ignore[misc]


@pytest.mark.anyio
async def test_crawl_results_equal_trees_built_with_evolve() -> None:
    async with FakeArchive(SYNTH) as archive, AsyncQidoRS(archive.url, retries=0) as qido:
        crawled = {s.StudyInstanceUID: s async for s in qido.crawl()}
        expected = {}
        for study in await qido.search(HierarchicalQuery()):
            uid = study.StudyInstanceUID
            series_list = await qido.search(
                HierarchicalQuery(query_level=QueryLevel.SERIES, StudyInstanceUID=uid)
            )
            children = []
            for series in series_list:
                instances = await qido.search(
                    HierarchicalQuery(
                        query_level=QueryLevel.INSTANCE,
                        StudyInstanceUID=uid,
                        SeriesInstanceUID=series.SeriesInstanceUID,
                    )
                )
                children.append(attrs.evolve(series, instances=tuple(instances)))
            expected[uid] = attrs.evolve(study, series=tuple(children))
    assert crawled.keys() == expected.keys()
    for uid, study in crawled.items():
        other = expected[uid]
        assert {s.SeriesInstanceUID: s for s in study.series} == {
            s.SeriesInstanceUID: s for s in other.series
        }
        assert attrs.evolve(study, series=()) == attrs.evolve(other, series=())
        assert all(isinstance(s, Series) and len(s.instances) == 3 for s in study.series)


@pytest.mark.anyio
async def test_an_unpaged_query_is_sent_as_it_is() -> None:
    sent: list[Any] = []

    async def fetch(query: Any, limiter: Slots | None) -> QidoResponse:
        sent.append(query)
        return QidoResponse(200, "http://h/studies", {}, [_study_json(1)], ())

    query = HierarchicalQuery(PatientID="X", offset=4)
    pages = [page async for page in iter_pages(fetch, query)]
    assert len(pages) == 1
    assert sent == [query]
    assert sent[0] is query


@pytest.mark.anyio
async def test_concurrency_tokens_come_back_after_success_errors_and_cancellation() -> None:
    async with (
        FakeArchive(SYNTH, latency=0.05) as archive,
        AsyncQidoRS(archive.url, retries=0, max_concurrency=2) as qido,
    ):
        await qido.search(HierarchicalQuery())
        limiter = qido._limiter
        assert limiter is not None
        assert isinstance(limiter, Slots)
        assert limiter.available == limiter.total

        archive.fail("studies", "500", times=1)
        with pytest.raises(ServerError):
            await qido.search(HierarchicalQuery())
        assert limiter.available == limiter.total

        # Three searches for two tokens: one waits in line; cancel all mid-flight.
        with anyio.move_on_after(0.02):
            async with anyio.create_task_group() as group:
                for _ in range(3):
                    group.start_soon(qido.search, HierarchicalQuery())
        assert limiter.available == limiter.total
        assert limiter.waiting == 0

        # And a crawl (per-crawl limiter + client limiter) still finishes and cleans up.
        # The server finishes the abandoned requests (its handlers are not cancelled by the
        # client going away); wait for that, or they would count towards the crawl's peak.
        for _ in range(1000):  # at most ~10 s
            if not archive._in_flight:
                break
            await anyio.sleep(0.01)
        assert archive._in_flight == 0
        archive.reset_stats()
        crawled = [s async for s in qido.crawl(max_concurrency=1)]
        assert len(crawled) == len(SYNTH.studies)
        assert limiter.available == limiter.total
        assert archive.peak_concurrency == 1


def test_lone_surrogates_are_still_refused_in_non_ascii_text() -> None:
    assert HierarchicalQuery(PatientName="Müller^Jürgen").PatientName == "Müller^Jürgen"
    assert HierarchicalQuery(PatientName="山田^太郎*").PatientName == "山田^太郎*"
    for bad in ("M\udcfcller", "山田\ud800"):
        with pytest.raises(InvalidQueryError, match="surrogate"):
            HierarchicalQuery(PatientName=bad)


# --- trusted child queries (issue 18) --------------------------------------------------------

PARENTS = [
    HierarchicalQuery(),
    HierarchicalQuery(extra_params={"vendor": ["a", "b"]}),
    HierarchicalQuery(permissive_uid=True),
    HierarchicalQuery(
        query_level=QueryLevel.SERIES, StudyInstanceUID="1.2.3", extra_params={"x": "1"}
    ),
]


@pytest.mark.parametrize("parent", PARENTS)
def test_child_queries_are_the_queries_evolve_builds(parent: HierarchicalQuery) -> None:
    from aqido._trusted import _child_query

    if parent.query_level is QueryLevel.STUDY:
        level, uids = QueryLevel.SERIES, {"StudyInstanceUID": "1.2.840.10008.5"}
    else:
        level, uids = QueryLevel.INSTANCE, {"SeriesInstanceUID": "1.2.3.4.0"}
    fast = _child_query(parent, level, **uids)
    slow = attrs.evolve(parent, query_level=level, **uids)
    assert type(fast) is type(slow)
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert fast.relative_url() == slow.relative_url()
    assert repr(fast) == repr(slow)
    for field in attrs.fields(HierarchicalQuery):
        assert getattr(fast, field.name) == getattr(slow, field.name)
        assert type(getattr(fast, field.name)) is type(getattr(slow, field.name))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.limit = 3  # type: ignore[misc]
    assert parent == attrs.evolve(parent)  # the parent is untouched


@pytest.mark.parametrize(
    ("permissive", "uid"),
    [
        (False, "1.2.3\x00"),  # padding: normalised by the full constructor
        (False, "1.2.3 "),
        (True, "abc.01 "),
    ],
)
def test_child_query_uids_that_need_normalising_are_normalised(permissive: bool, uid: str) -> None:
    from aqido._trusted import _child_query

    parent = HierarchicalQuery(permissive_uid=permissive)
    fast = _child_query(parent, QueryLevel.SERIES, StudyInstanceUID=uid)
    assert fast == attrs.evolve(parent, query_level=QueryLevel.SERIES, StudyInstanceUID=uid)
    assert fast.StudyInstanceUID == uid.rstrip("\x00 ")


@pytest.mark.parametrize(
    ("permissive", "uid"),
    [
        (False, "1.02.3"),  # leading zero: strict only
        (False, "1.2.3,1.2.4"),  # a list cannot go in the path
        (True, "1.2.3,1.2.4"),
        (False, "1.2.*"),
        (True, "a/b"),
        (True, ".."),
        (False, ""),
    ],
)
def test_child_query_refuses_what_the_constructor_refuses(permissive: bool, uid: str) -> None:
    from aqido._trusted import _child_query

    parent = HierarchicalQuery(permissive_uid=permissive)
    with pytest.raises(InvalidQueryError) as slow:
        attrs.evolve(parent, query_level=QueryLevel.SERIES, StudyInstanceUID=uid)
    with pytest.raises(InvalidQueryError) as fast:
        _child_query(parent, QueryLevel.SERIES, StudyInstanceUID=uid)
    assert str(fast.value) == str(slow.value)


def test_derived_pages_equal_evolved_pages() -> None:
    from aqido._trusted import _derive

    query = HierarchicalQuery(PatientID="X*", include_fields=["PatientBirthDate"], limit=3)
    fast = _derive(query, limit=10, offset=20)
    assert fast == attrs.evolve(query, limit=10, offset=20)
    assert fast.query_string() == attrs.evolve(query, limit=10, offset=20).query_string()


def test_user_built_queries_keep_every_check() -> None:
    from aqido.errors import UnknownFieldError

    with pytest.raises(UnknownFieldError):
        HierarchicalQuery(StudyInstanceUIDs="1.2.3")  # type: ignore[call-arg]
    with pytest.raises(InvalidQueryError):
        HierarchicalQuery(query_level=QueryLevel.SERIES, StudyInstanceUID="1.02")
    with pytest.raises(InvalidQueryError):
        attrs.evolve(HierarchicalQuery(), limit=-1)


@pytest.mark.anyio
async def test_a_crawl_records_a_study_uid_no_query_can_carry() -> None:
    """A UID the server returns that fails the check goes the slow path and is recorded."""
    from aqido.stats import CrawlStats

    bad = {"0020000D": {"vr": "UI", "Value": ["1.02.3"]}}  # leading zero: not a UID
    good = _study_json(7)  # announces 2 series, served below
    series = [{"0020000E": {"vr": "UI", "Value": [f"1.2.3.7.{k}"]}} for k in (1, 2)]
    items = {"/studies": [bad, good], "/studies/1.2.3.7/series": series}

    async def fetch(query: Any, _limiter: Any) -> QidoResponse:
        from aqido.protocol import parse_response

        body = items.get(query.uri_base(), [])
        import json

        return parse_response(
            200 if body else 204,
            {"Content-Type": "application/dicom+json"},
            json.dumps(body).encode() if body else b"",
            url="http://h" + query.relative_url(),
        )

    from aqido.client import _structure
    from aqido.crawl import crawl

    stats = CrawlStats()
    found = [
        s.StudyInstanceUID
        async for s in crawl(
            fetch,
            _structure,
            HierarchicalQuery(),
            depth=QueryLevel.SERIES,
            window=4,
            stats=stats,
            partial=True,
        )
    ]
    assert found == ["1.2.3.7"]
    assert len(stats.failures) == 1
    assert "1.02.3" in str(stats.failures[0])


# --- the crawl's task group (issue 18: plain asyncio tasks) ---------------------------------


@pytest.mark.anyio
async def test_cancelling_a_first_error_group_cancels_and_awaits_its_tasks() -> None:
    import asyncio

    from aqido.crawl import FirstErrorGroup

    started: list[int] = []
    finished: list[int] = []

    async def sleeper(n: int) -> None:
        started.append(n)
        try:
            await anyio.sleep_forever()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            finished.append(n)

    before = asyncio.all_tasks()
    with anyio.move_on_after(0.05) as scope:
        async with FirstErrorGroup() as group:
            for n in range(5):
                group.start_soon(sleeper, n)
    assert scope.cancelled_caught
    assert sorted(started) == sorted(finished) == list(range(5))
    assert asyncio.all_tasks() == before


@pytest.mark.anyio
async def test_a_bug_in_a_first_error_group_is_raised_as_is_and_cancels_the_rest() -> None:
    from aqido.crawl import FirstErrorGroup

    cancelled: list[bool] = []

    async def waits() -> None:
        try:
            await anyio.sleep_forever()
        except BaseException:
            cancelled.append(True)
            raise

    async def fails(error: BaseException) -> None:
        await anyio.sleep(0.01)
        raise error

    async def run() -> None:
        async with FirstErrorGroup() as group:
            group.start_soon(waits)
            group.start_soon(fails, KeyError("bug"))
            group.start_soon(fails, ServerError(500, "http://h/x"))

    with pytest.raises(KeyError):
        await run()
    assert cancelled == [True]


@pytest.mark.anyio
async def test_a_first_error_group_waits_for_tasks_started_by_tasks() -> None:
    from aqido.crawl import FirstErrorGroup

    done: list[int] = []

    async def leaf(n: int) -> None:
        await anyio.sleep(0.01)
        done.append(n)

    async with FirstErrorGroup() as group:

        async def parent() -> None:
            await anyio.lowlevel.checkpoint()
            for n in range(3):
                group.start_soon(leaf, n)

        group.start_soon(parent)
    assert sorted(done) == [0, 1, 2]


# --- the answer checks' inline fast paths give what the general code gives ---------------


def _instance_item(study: Any, series: Any, sop: str = "1.2.3.4") -> dict[str, Any]:
    return {
        "0020000D": {"vr": "UI", "Value": [study]},
        "0020000E": {"vr": "UI", "Value": [series]},
        "00080018": {"vr": "UI", "Value": [sop]},
    }


@pytest.mark.parametrize(
    ("study", "series", "refused"),
    [
        ("1.2", "1.2.3", False),  # the wanted UIDs: the fast path
        ("1.2\x00", "1.2.3 ", False),  # padded: the general path strips it
        ("1.9", "1.2.3", True),  # another study
        ("1.2", "1.2.9", True),  # another series
        ("1.2", "1.2.9\x00", True),  # another series, padded
        (12, "1.2.3", False),  # not a string: no UID to compare, the item's own checks speak
    ],
)
def test_check_parents_refuses_exactly_the_answers_of_another_parent(
    study: Any, series: Any, refused: bool
) -> None:
    from aqido._paging import check_parents
    from aqido.errors import InvalidResponseError

    query = HierarchicalQuery(
        query_level=QueryLevel.INSTANCE, StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3"
    )
    response = QidoResponse(
        200, "u", {}, [_instance_item("1.2", "1.2.3"), _instance_item(study, series)]
    )
    if refused:
        with pytest.raises(InvalidResponseError, match="another"):
            check_parents(query, response)
    else:
        check_parents(query, response)


@pytest.mark.parametrize(
    ("study", "refused"),
    [("1.3", False), ("1.2", False), ("1.4", True)],
)
def test_check_parents_takes_a_list_of_parents_and_no_parent(study: str, refused: bool) -> None:
    # /instances?StudyInstanceUID=1.2,1.3: an item of either study is its answer; without
    # a parent UID (/series, /instances) there is nothing to compare
    from aqido._paging import check_parents
    from aqido.errors import InvalidResponseError

    response = QidoResponse(200, "u", {}, [_instance_item(study, "1.2.3")])
    listed = RelationalQuery(query_level=QueryLevel.INSTANCE, StudyInstanceUID=["1.2", "1.3"])
    for level in (QueryLevel.SERIES, QueryLevel.INSTANCE):
        query = RelationalQuery(query_level=level)
        check_parents(query, response)
    if refused:
        with pytest.raises(InvalidResponseError, match="another study"):
            check_parents(listed, response)
    else:
        check_parents(listed, response)


@pytest.mark.parametrize(
    ("element", "identity"),
    [
        ({"vr": "UI", "Value": ["1.2.3"]}, "1.2.3"),
        ({"vr": "UI", "Value": ["1.2.3\x00"]}, "1.2.3"),
        ({"vr": "UI", "Value": []}, None),
        ({"vr": "UI", "Value": [7]}, None),
        ({"vr": "UI"}, None),
        ("1.2.3", None),
    ],
)
def test_uid_of_is_the_first_uid_or_the_whole_item(element: Any, identity: str | None) -> None:
    import json

    from aqido._paging import uid_of

    item = {"0020000E": element, "00080060": {"vr": "CS", "Value": ["CT"]}}
    expected = identity if identity is not None else json.dumps(item, sort_keys=True, default=str)
    assert uid_of(item, "0020000E") == expected


def test_uid_of_an_item_nested_as_deep_as_decoding_allows() -> None:
    # An item without a UID is identified by its JSON text: json.dumps raised a raw
    # RecursionError for one nesting 330 levels of SQ (orjson accepts 341), in every paging.
    from aqido._json import decode_json
    from aqido._paging import uid_of

    text = '{"00100020": {"vr": "LO", "Value": ["x"]}}'
    expected = '{"00100020": {"Value": ["x"], "vr": "LO"}}'  # json.dumps': keys sorted
    for _ in range(340):
        text = '{"00400275": {"vr": "SQ", "Value": [' + text + "]}}"
        expected = '{"00400275": {"Value": [' + expected + '], "vr": "SQ"}}'
    [item] = decode_json(f"[{text}]".encode())
    identity = uid_of(item, "0020000E")
    assert identity == expected
    assert uid_of(decode_json(f"[{text}]".encode())[0], "0020000E") == identity

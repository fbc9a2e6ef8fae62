"""QidoRS, the blocking client: against the in-process fake archive, from threads and loops."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import inspect
import io
import signal
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal

from aqido import QueryLevel
from aqido.blocking import QidoRS
from aqido.client import AsyncQidoRS, SearchResults
from aqido.errors import ClientClosedError, InvalidResponseError, ServerError
from aqido.progress import CrawlProgress, TqdmProgress, track
from aqido.results import Instance, Series, Study
from aqido.testing import FakeArchive, SyntheticArchive

SYNTH = SyntheticArchive(seed=3, studies=6, series_per_study=2, instances_per_series=3)


@pytest.fixture(scope="module")
def archive() -> Iterator[FakeArchive]:
    with FakeArchive(SYNTH).run_in_thread() as running:
        yield running


@pytest.fixture
def client(archive: FakeArchive) -> Iterator[QidoRS]:
    with QidoRS(archive.url, max_concurrency=4) as qido:
        yield qido


def other_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name != "FakeArchive"}


def study_uids() -> list[str]:
    return sorted(s.study_instance_uid for s in SYNTH.studies)


def test_search_and_the_dicomweb_names(client: QidoRS) -> None:
    first = SYNTH.studies[0]
    results = client.search({"StudyInstanceUID": first.study_instance_uid})
    assert isinstance(results, SearchResults)
    assert [r.StudyInstanceUID for r in results] == [first.study_instance_uid]
    assert sorted(s.StudyInstanceUID for s in client.search_for_studies()) == study_uids()
    series = client.search_for_series(first.study_instance_uid)
    assert sorted(s.SeriesInstanceUID for s in series) == sorted(
        s.series_instance_uid for s in first.series
    )
    instances = client.search_for_instances(
        first.study_instance_uid, first.series[0].series_instance_uid, limit=2
    )
    assert len(instances) == 2
    assert all(isinstance(i, Instance) for i in instances)
    raw = client.search_raw({"StudyInstanceUID": first.study_instance_uid})
    assert len(raw.items) == 1
    (tree,) = client.find_studies(
        {"query_level": "INSTANCE", "StudyInstanceUID": first.study_instance_uid}
    )
    assert len(tree.series) == len(first.series)


def test_errors_are_the_async_clients(archive: FakeArchive) -> None:
    with QidoRS(archive.url, retries=0) as client:
        archive.fail("StudyDescription=boom", "500")
        try:
            with pytest.raises(ServerError):
                client.search({"StudyDescription": "boom"})
            with pytest.raises(ServerError):
                list(client.iter_search({"StudyDescription": "boom"}))
        finally:
            archive.clear_faults()


def test_iter_search_is_a_plain_lazy_iterator(client: QidoRS, archive: FakeArchive) -> None:
    archive.reset_stats()
    results = client.iter_search({"query_level": "INSTANCE"}, page_size=5)
    assert not archive.requests  # nothing is sent before the first next()
    uids = [i.SOPInstanceUID for i in results]
    assert sorted(uids) == sorted(i.sop_instance_uid for i in SYNTH.instances)
    assert len(archive.requests) == len(SYNTH.instances) // 5 + 1


def test_search_many_and_iter_search_many(client: QidoRS) -> None:
    queries = [
        {"query_level": "SERIES", "StudyInstanceUID": s.study_instance_uid} for s in SYNTH.studies
    ]
    results = client.search_many(queries, max_concurrency=3)
    assert [len(r) for r in results] == [len(s.series) for s in SYNTH.studies]
    for result, study in zip(results, SYNTH.studies, strict=True):
        assert {s.StudyInstanceUID for s in result} == {study.study_instance_uid}
    pairs = list(client.iter_search_many(iter(queries)))
    assert sorted(q.StudyInstanceUID for q, _ in pairs) == study_uids()
    assert all(len(r) == 2 for _, r in pairs)


def test_crawl(client: QidoRS) -> None:
    studies = list(client.crawl())
    assert sorted(s.StudyInstanceUID for s in studies) == study_uids()
    assert all(isinstance(s, Study) and len(s.series) == 2 for s in studies)
    assert all(len(se.instances) == 3 for s in studies for se in s.series)
    shallow = list(client.crawl(depth=QueryLevel.SERIES, max_concurrency=2, page_size=2))
    assert all(isinstance(se, Series) and not se.instances for s in shallow for se in s.series)


class Recorder(CrawlProgress):
    def __init__(self) -> None:
        self.events: list[str] = []

    def study_done(self, study: Study) -> None:
        self.events.append("study")

    def series_done(self, series: Series) -> None:
        self.events.append("series")

    def instance_done(self, instance: Instance) -> None:
        self.events.append("instance")

    def close(self) -> None:
        self.events.append("close")


def test_crawl_progress_hook(client: QidoRS) -> None:
    hook = Recorder()
    studies = list(client.crawl(progress=hook))
    assert len(studies) == len(SYNTH.studies)
    assert hook.events.count("study") == len(SYNTH.studies)
    assert hook.events.count("series") == len(SYNTH.series)
    assert hook.events.count("instance") == len(SYNTH.instances)
    assert hook.events[:4] == ["instance"] * 3 + ["series"]  # children before parents
    assert hook.events[-1] == "close"

    # The crawl reports what it handed over (as its checkpoint writes it), on the client's
    # loop: the studies the consumer got, not one fetched ahead (the count ran a few ahead).
    # Leaving early still closes the hook.
    early = Recorder()
    for _ in client.crawl(progress=early):
        break
    assert early.events.count("study") == 1
    assert early.events[-1] == "close"


def test_a_crawl_left_early_checkpoints_exactly_the_studies_handed_over(
    archive: FakeArchive, tmp_path: Any
) -> None:
    # The studies fetched ahead of the consumer were written to the checkpoint (and counted)
    # though never handed over: resuming skipped them, so they were lost.
    from aqido import CrawlCheckpoint, CrawlStats

    path = tmp_path / "crawl.jsonl"
    got: list[str] = []
    stats = CrawlStats()
    with QidoRS(archive.url, max_concurrency=4) as client:
        for study in client.crawl(checkpoint=path, stats=stats):
            got.append(str(study.StudyInstanceUID))
            if len(got) == 2:
                break
        assert stats.studies_done == 2
        assert sorted(str(s.StudyInstanceUID) for s in CrawlCheckpoint.read_studies(path)) == (
            sorted(got)
        )
        got += [str(s.StudyInstanceUID) for s in client.crawl(checkpoint=path)]
    assert sorted(got) == study_uids()


def test_tqdm_progress_bar(client: QidoRS, monkeypatch: pytest.MonkeyPatch) -> None:
    import tqdm

    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)  # no monitor thread
    out = io.StringIO()
    bar = TqdmProgress(file=out, mininterval=0)
    assert len(list(client.crawl(progress=bar))) == len(SYNTH.studies)
    text = out.getvalue()
    assert f"{len(SYNTH.studies)}study" in text
    assert f"instances={len(SYNTH.instances)}" in text
    with pytest.raises(TypeError, match="progress"):
        list(client.crawl(progress="yes"))  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_track_wraps_an_async_crawl(archive: FakeArchive) -> None:
    hook = Recorder()
    async with AsyncQidoRS(archive.url) as client:
        studies = [s async for s in track(client.crawl(), progress=hook)]
    assert len(studies) == len(SYNTH.studies)
    assert hook.events.count("instance") == len(SYNTH.instances)
    assert hook.events[-1] == "close"

    class PlainIterator:  # an async iterator that is not an async generator
        def __init__(self) -> None:
            self.left = iter(studies)

        def __aiter__(self) -> PlainIterator:
            return self

        async def __anext__(self) -> Study:
            try:
                return next(self.left)
            except StopIteration:
                raise StopAsyncIteration from None

    again = Recorder()
    assert [s async for s in track(PlainIterator(), progress=again)] == studies
    assert again.events == hook.events


@pytest.mark.anyio
async def test_works_inside_a_running_event_loop(archive: FakeArchive) -> None:
    asyncio.get_running_loop()  # as in a Jupyter cell: a loop is running in this thread
    with QidoRS(archive.url) as client:
        assert sorted(s.StudyInstanceUID for s in client.search({})) == study_uids()
        assert len(list(client.crawl())) == len(SYNTH.studies)


def test_many_threads_share_one_client(client: QidoRS, archive: FakeArchive) -> None:
    def work(index: int) -> tuple[str, int, int]:
        study = SYNTH.studies[index % len(SYNTH.studies)]
        found = client.search({"StudyInstanceUID": study.study_instance_uid})
        instances = client.iter_search(
            {"query_level": "INSTANCE", "StudyInstanceUID": study.study_instance_uid},
            page_size=2,
        )
        return found[0].StudyInstanceUID or "", len(list(instances)), index

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(24)))
    for uid, count, index in results:
        study = SYNTH.studies[index % len(SYNTH.studies)]
        assert uid == study.study_instance_uid
        assert count == len(study.instances)
    assert not client._runner.tasks


def test_early_closed_iterators_close_their_async_generator(client: QidoRS) -> None:
    state: list[str] = []

    async def numbers() -> AsyncGenerator[int, None]:
        try:
            for n in range(1000):
                await asyncio.sleep(0)
                yield n
        finally:
            state.append("closed")

    it = client._iterate(numbers)
    assert [next(it), next(it)] == [0, 1]
    it.close()
    assert state == ["closed"]
    assert not client._runner.tasks

    for _ in client.iter_search({"query_level": "INSTANCE"}, page_size=1):
        break
    for _ in client.crawl():
        break
    assert not client._runner.tasks


def test_an_abandoned_iterator_collected_on_the_loop_thread_does_not_hang_it(
    archive: FakeArchive,
) -> None:
    # An iterator in a reference cycle is freed by the garbage collector, on whichever
    # thread allocates: on the loop thread, its cleanup used to wait there for its own
    # producer, which could then never run (every later call hung).
    client = QidoRS(archive.url)

    class Holder:
        def __init__(self) -> None:
            self.me = self
            self.studies = client.iter_search({}, page_size=1)
            self.first = next(self.studies)

    Holder()
    assert len(client._runner.tasks) == 1  # its producer, waiting for the next read

    async def collect() -> int:
        return gc.collect()

    outcome: list[object] = []
    caller = threading.Thread(target=lambda: outcome.append(client._runner.call(collect)))
    caller.start()
    caller.join(10)
    assert not caller.is_alive(), "the loop thread is stuck (the client cannot be closed)"
    assert outcome[0] > 0
    wait_for(lambda: not client._runner.tasks)
    assert len(client.search({})) == len(SYNTH.studies)
    client.close()


def test_an_iterator_raises_the_producers_error(client: QidoRS) -> None:
    async def failing() -> AsyncGenerator[int, None]:
        yield 1
        raise InvalidResponseError("boom")

    it = client._iterate(failing)
    assert next(it) == 1
    with pytest.raises(InvalidResponseError, match="boom"):
        next(it)
    assert not client._runner.tasks


def test_close_is_idempotent_and_final(archive: FakeArchive) -> None:
    before = other_threads()
    client = QidoRS(archive.url)
    assert other_threads() == before  # the loop thread starts on first use
    client.search({})
    assert len(other_threads()) == len(before) + 1
    client.close()
    client.close()
    assert client.closed
    assert other_threads() == before
    with pytest.raises(RuntimeError, match="closed"):
        client.search({})
    with pytest.raises(RuntimeError, match="closed"), client:
        pass


def test_close_from_another_thread_cancels_running_work() -> None:
    with FakeArchive(SYNTH, latency=30).run_in_thread() as slow:
        before = other_threads()
        client = QidoRS(slow.url, retries=0)
        errors: list[BaseException] = []

        def search() -> None:
            try:
                client.search({})
            except BaseException as exc:  # the cancelled call raises in its thread
                errors.append(exc)

        worker = threading.Thread(target=search)
        worker.start()
        wait_for(lambda: slow._in_flight > 0)
        client.close()
        worker.join(10)
        assert not worker.is_alive()
        assert len(errors) == 1
        assert isinstance(errors[0], RuntimeError)
        assert "closed while" in str(errors[0])
        assert other_threads() == before


def test_a_call_that_races_close_raises_client_closed_error(
    archive: FakeArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A call that passed the closed check when close() stopped the loop used to get
    # anyio's RuntimeError("This portal is not running") instead of ClientClosedError.
    client = QidoRS(archive.url)
    client.search({})
    start_task_soon = BlockingPortal.start_task_soon

    def preempted(portal: BlockingPortal, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "racing-caller":
            time.sleep(0.3)  # the caller is preempted here; close() runs meanwhile
        return start_task_soon(portal, *args, **kwargs)

    monkeypatch.setattr(BlockingPortal, "start_task_soon", preempted)
    errors: list[BaseException] = []

    def search() -> None:
        try:
            client.search({})
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=search, name="racing-caller")
    caller.start()
    time.sleep(0.1)
    client.close()
    caller.join(10)
    assert not caller.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], ClientClosedError)


def test_an_iterator_whose_producer_close_cancelled_raises_client_closed_error(
    archive: FakeArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    # close() cancels the producer and the consumer's pending read one after the other;
    # when the read ended first (the producer's stream closed), the iterator used to
    # raise concurrent.futures.CancelledError instead of ClientClosedError.
    client = QidoRS(archive.url)

    async def one_then_wait() -> AsyncGenerator[int, None]:
        yield 1
        await asyncio.sleep(30)
        yield 2  # pragma: no cover - cancelled

    it = client._iterate(one_then_wait)
    assert next(it) == 1
    (pump,) = client._runner.tasks
    outcome: list[object] = []

    def rest() -> None:
        try:
            outcome.append(list(it))
        except BaseException as exc:
            outcome.append(exc)

    consumer = threading.Thread(target=rest)
    consumer.start()
    wait_for(lambda: len(client._runner.tasks) == 2)  # the consumer's read is pending
    cancel = concurrent.futures.Future.cancel

    def pump_first(future: concurrent.futures.Future[Any]) -> bool:
        if future is not pump[0]:  # close() got to the producer first, and the read ended
            cancel(pump[0])
            wait_for(future.done)
        return cancel(future)

    monkeypatch.setattr(concurrent.futures.Future, "cancel", pump_first)
    client.close()
    consumer.join(10)
    assert not consumer.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], ClientClosedError)


def test_a_second_close_returns_only_once_the_first_has_closed(
    archive: FakeArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: a close() while another thread's close() was still closing returned
    # at once, the loop thread still running and the session still open.
    before = other_threads()
    client = QidoRS(archive.url)
    client.search({})
    closing = threading.Event()
    real_close = client.async_client.close

    async def slow_close() -> None:
        closing.set()
        await asyncio.sleep(0.5)
        await real_close()

    monkeypatch.setattr(client.async_client, "close", slow_close)
    first = threading.Thread(target=client.close)
    first.start()
    assert closing.wait(10)
    client.close()
    assert client.async_client.closed
    assert other_threads() - {first} == before  # the loop thread has been joined
    first.join(10)
    assert not first.is_alive()


def test_close_from_the_loop_thread_still_stops_it(archive: FakeArchive) -> None:
    # close() from a progress hook runs on the client's loop thread: it used to mark the
    # client closed and return, leaving the loop thread, an open session, and an
    # interpreter exit that hung (the portal's cleanup at shutdown).
    before = other_threads()
    client = QidoRS(archive.url)
    runner = client._runner

    class CloseAfterOne(CrawlProgress):
        def study_done(self, study: Study) -> None:
            client.close()

    try:
        with pytest.raises(ClientClosedError):
            for _ in client.crawl(progress=CloseAfterOne()):
                pass
        wait_for(lambda: other_threads() == before)
        assert client.async_client.closed
    finally:
        if runner.portal is not None and runner.cm is not None and other_threads() != before:
            runner.portal.call(runner.portal.stop, True)  # not to hang the test run's exit
            runner.cm.__exit__(None, None, None)


def test_no_threads_leak(archive: FakeArchive) -> None:
    before = other_threads()
    for _ in range(3):
        with QidoRS(archive.url) as client:
            client.search({})
            list(client.crawl())
            for _ in client.iter_search({}):
                break
    assert other_threads() == before


def test_a_forgotten_client_is_closed_when_collected(archive: FakeArchive) -> None:
    before = other_threads()
    client = QidoRS(archive.url)
    client.search({})
    runner = client._runner
    del client
    gc.collect()
    assert runner.closed
    assert other_threads() == before


def test_calling_from_its_own_loop_thread_is_an_error(client: QidoRS) -> None:
    async def reenter() -> None:
        client.search({})

    with pytest.raises(RuntimeError, match="own event loop"):
        client._runner.call(reenter)


def wait_for(condition: object, limit: float = 10.0) -> None:
    """Poll ``condition()`` (bounded); fail the test if it never holds."""
    assert callable(condition)
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


@pytest.mark.parametrize("how", ["search", "iter_search", "crawl"])
def test_ctrl_c_cancels_the_work_in_flight(how: str) -> None:
    slow_archive = FakeArchive(SYNTH, latency=30)
    with slow_archive.run_in_thread() as slow, QidoRS(slow.url, retries=0) as client:
        main = threading.get_ident()

        def interrupt() -> None:
            wait_for(lambda: slow._in_flight > 0)
            signal.pthread_kill(main, signal.SIGINT)

        helper = threading.Thread(target=interrupt)
        helper.start()
        try:
            calls = {
                "search": lambda: client.search({}),
                "iter_search": lambda: list(client.iter_search({}, page_size=2)),
                "crawl": lambda: list(client.crawl()),
            }
            with pytest.raises(KeyboardInterrupt):
                calls[how]()
        finally:
            helper.join(10)
        assert not client._runner.tasks  # every task of the call has finished
        slow.latency = 0
        assert len(client.search({})) == len(SYNTH.studies)  # still usable


def test_same_methods_and_options_as_the_async_client() -> None:
    public = {
        name
        for name, member in inspect.getmembers(AsyncQidoRS)
        if not name.startswith("_") and callable(member) and name != "close"
    }
    for name in public:
        sync = inspect.signature(getattr(QidoRS, name))
        async_ = inspect.signature(getattr(AsyncQidoRS, name))
        assert set(sync.parameters) == set(async_.parameters), name
        for param in async_.parameters.values():
            assert sync.parameters[param.name].default == param.default, (name, param.name)
            assert sync.parameters[param.name].kind == param.kind, (name, param.name)
    # One definition of the options: the blocking client takes the async client's arguments.
    assert inspect.signature(QidoRS) == inspect.signature(AsyncQidoRS)


@pytest.mark.parametrize(
    ("name", "returns"),
    [
        ("iter_search", "Iterator[Any]"),
        ("iter_search_many", "Iterator[tuple[BaseQuery, SearchResults[Any]]]"),
        ("crawl", "Iterator[Study]"),
        ("search", "SearchResults[Any]"),
    ],
)
def test_help_shows_what_the_blocking_methods_return(name: str, returns: str) -> None:
    """``help(QidoRS.crawl)``: the async method's arguments, returning a plain iterator."""
    method = getattr(QidoRS, name)
    assert inspect.signature(method).return_annotation == returns
    assert method.__annotations__["return"] == returns
    own = inspect.signature(getattr(AsyncQidoRS, name))
    assert inspect.signature(method).parameters == own.parameters
    assert getattr(AsyncQidoRS, name).__annotations__["return"] == own.return_annotation


def test_a_session_cannot_be_shared_with_the_blocking_client() -> None:
    import asyncio

    import aiohttp

    async def attempt() -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(TypeError, match="session"):
                QidoRS("http://127.0.0.1:9/dicom-web", session=session)

    asyncio.run(attempt())


def test_ctrl_c_while_closing_still_stops_the_loop(archive: FakeArchive) -> None:
    # Found by review: Ctrl-C while close() waited for a running crawl (its progress hook
    # blocking the loop) left the loop thread and the session; every later close() then
    # waited for ever for a closing nobody was doing.
    before = other_threads()
    client = QidoRS(archive.url)
    in_hook = threading.Event()

    class SlowHook(CrawlProgress):
        def study_done(self, study: Study) -> None:
            in_hook.set()
            time.sleep(1.0)  # blocks the loop: close() waits for the crawl to end

    def crawl() -> None:
        with pytest.raises(ClientClosedError):
            list(client.crawl(progress=SlowHook()))

    consumer = threading.Thread(target=crawl)
    consumer.start()
    assert in_hook.wait(10)
    main = threading.get_ident()
    timer = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            client.close()
    finally:
        timer.join(10)
    second = threading.Thread(target=client.close)
    second.start()
    second.join(10)
    assert not second.is_alive()  # it used to wait for ever
    consumer.join(10)
    assert not consumer.is_alive()
    wait_for(lambda: other_threads() == before)  # the loop thread has stopped
    assert client.async_client.closed


def test_a_forked_child_gets_client_closed_error_not_a_hang(archive: FakeArchive) -> None:
    # Found by review: after os.fork() the child's copy of a used client waited for ever
    # for the parent's loop thread: a call, close(), and the child's exit (the finalizer).
    import os
    import warnings

    client = QidoRS(archive.url)
    assert len(client.search({})) == len(SYNTH.studies)
    pages = client.iter_search({}, page_size=1)
    next(pages)
    studies = client.crawl()
    next(studies)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (3.12)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: its exit code says what went wrong
        code = 0
        try:
            for step, call in enumerate(
                [lambda: client.search({}), lambda: list(pages), lambda: list(studies)], 1
            ):
                try:
                    call()
                    code = code or 10 + step
                except ClientClosedError as exc:
                    if "os.fork()" not in str(exc):
                        code = code or 20 + step
            client.close()
            client._finalizer()  # what the child's exit runs
            code = code or (0 if client.closed else 30)
        except BaseException:
            code = 40
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(client.search({})) == len(SYNTH.studies)  # the parent's client still works
    pages.close()
    studies.close()
    client.close()

"""Benchmark: a full hierarchical crawl (studies → series → instances), aqido against the rest.

Every contender walks the same archive the same way, one request per level:
``/studies``, then ``/studies/{s}/series`` for every study, then
``/studies/{s}/series/{se}/instances`` for every series, and counts what it
found.  The contenders:

- ``aqido c=N``: ``AsyncQidoRS(url, max_concurrency=N).crawl()``, consuming the
  typed ``Study`` trees as they are yielded;
- ``aqido auto``: the same with ``max_concurrency="auto"`` (the adaptive limit,
  ceiling 64); its limit history is kept in :data:`AUTO_LIMITS`;
- ``bare aiohttp c=N``: the floor for an asyncio client, a plain
  ``aiohttp.ClientSession`` (connection pool N) + ``asyncio.gather`` + an
  ``asyncio.Semaphore(N)`` + ``json.loads``: no typed results, no retries, no
  error mapping;
- ``dicomweb-client sequential``: ``DICOMwebClient.search_for_*`` in loops;
- ``dicomweb-client threads=N``: the same calls on a ``ThreadPoolExecutor`` of
  N threads (one ``DICOMwebClient``, hence one ``requests.Session``, per thread);
- ``dicomtrolley sequential``: ``QidoRS(requests.Session(), url).find_studies``
  with ``HierarchicalQuery`` at each level (what dicomtrolley users write).

Each function returns the counts it found; the runner checks them against
the archive.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs

Counts = tuple[int, int, int]


@attrs.frozen
class Contender:
    """One crawl implementation: a name, its concurrency, and ``run(url) -> counts``.

    ``sequential`` contenders are latency-bound (one request at a time), so the
    runner repeats them less often at high latency.
    """

    name: str
    family: str
    concurrency: int
    run: Callable[[str], Counts]
    sequential: bool = False


def _uid(item: dict[str, Any], key: str) -> str:
    value: str = item[key]["Value"][0]
    return value


STUDY_UID, SERIES_UID = "0020000D", "0020000E"


# --- aqido --------------------------------------------------------------------------------


def aqido_available() -> bool:
    """Whether ``aqido.client.AsyncQidoRS`` exists in this checkout."""
    try:
        from aqido.client import AsyncQidoRS  # noqa: F401
    except ImportError:
        return False
    return True


#: The ceiling of ``aqido auto`` (``max_concurrency_limit``, the client's default).
AUTO_CEILING = 64
#: The limit history of the last ``aqido auto`` crawl per URL: ``[(seconds, limit), ...]``.
AUTO_LIMITS: dict[str, list[tuple[float, int]]] = {}


async def _aqido_crawl(url: str, concurrency: int | str, page_size: int | None = None) -> Counts:
    from aqido.client import AsyncQidoRS
    from aqido.stats import CrawlStats

    studies = series = instances = 0
    stats = CrawlStats()
    auto = concurrency == "auto"
    async with AsyncQidoRS(url, max_concurrency=concurrency) as client:  # type: ignore[arg-type]
        crawl = client.crawl(
            max_concurrency=None if auto else concurrency,  # type: ignore[arg-type]
            page_size=page_size,
            stats=stats,
        )
        async for study in crawl:
            studies += 1
            series += len(study.series)
            instances += sum(len(se.instances) for se in study.series)
    if auto:
        AUTO_LIMITS[url] = list(stats.concurrency_history)
    return studies, series, instances


def aqido_crawl(url: str, concurrency: int | str) -> Counts:
    """aqido's ``crawl()`` at ``max_concurrency=concurrency`` (an int or ``"auto"``)."""
    return asyncio.run(_aqido_crawl(url, concurrency))


# --- bare aiohttp -------------------------------------------------------------------------


async def _bare_crawl(url: str, concurrency: int) -> Counts:
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    headers = {"Accept": "application/dicom+json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(path: str) -> list[dict[str, Any]]:
            async with gate:
                for attempt in (1, 2):
                    try:
                        async with session.get(url + path, headers=headers) as response:
                            response.raise_for_status()
                            if response.status == 204:
                                return []
                            items: list[dict[str, Any]] = json.loads(await response.read())
                            return items
                    except aiohttp.ServerDisconnectedError:
                        # Orthanc closes keep-alive connections after 1 s idle; a loop meant
                        # for it must re-send once, as aqido (and aiohttp, mostly) does.
                        if attempt == 2:
                            raise
            raise AssertionError("unreachable")

        async def study_tree(study: dict[str, Any]) -> Counts:
            uid = _uid(study, STUDY_UID)
            series = await get(f"/studies/{uid}/series")
            instances = await asyncio.gather(
                *(get(f"/studies/{uid}/series/{_uid(se, SERIES_UID)}/instances") for se in series)
            )
            return 1, len(series), sum(len(i) for i in instances)

        studies = await get("/studies")
        trees = await asyncio.gather(*(study_tree(s) for s in studies))
    return len(trees), sum(t[1] for t in trees), sum(t[2] for t in trees)


def bare_aiohttp_crawl(url: str, concurrency: int) -> Counts:
    """aiohttp + asyncio.gather + json.loads, at most ``concurrency`` requests in flight."""
    return asyncio.run(_bare_crawl(url, concurrency))


# --- dicomweb-client ----------------------------------------------------------------------


def dicomweb_client_available() -> bool:
    """Whether dicomweb-client is installed."""
    try:
        import dicomweb_client  # noqa: F401
    except ImportError:
        return False
    return True


def _dwc(url: str) -> Any:
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url)


def dicomweb_client_sequential(url: str) -> Counts:
    """``DICOMwebClient.search_for_*`` in nested loops, one request at a time."""
    client = _dwc(url)
    try:
        studies = client.search_for_studies()
        n_series = n_instances = 0
        for study in studies:
            study_uid = _uid(study, STUDY_UID)
            series = client.search_for_series(study_instance_uid=study_uid)
            n_series += len(series)
            for se in series:
                n_instances += len(
                    client.search_for_instances(
                        study_instance_uid=study_uid, series_instance_uid=_uid(se, SERIES_UID)
                    )
                )
        return len(studies), n_series, n_instances
    finally:
        client._session.close()


def dicomweb_client_threads(url: str, threads: int) -> Counts:
    """The same calls on a thread pool: all series searches, then all instance searches."""
    local = threading.local()
    clients: list[Any] = []
    lock = threading.Lock()

    def client() -> Any:
        found = getattr(local, "client", None)
        if found is None:
            found = local.client = _dwc(url)
            with lock:
                clients.append(found)
        return found

    def series_of(study_uid: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = client().search_for_series(study_instance_uid=study_uid)
        return result

    def instances_of(uids: tuple[str, str]) -> int:
        return len(
            client().search_for_instances(study_instance_uid=uids[0], series_instance_uid=uids[1])
        )

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            studies = pool.submit(lambda: client().search_for_studies()).result()
            study_uids = [_uid(s, STUDY_UID) for s in studies]
            series_lists = list(pool.map(series_of, study_uids))
            pairs = [
                (study_uid, _uid(se, SERIES_UID))
                for study_uid, series in zip(study_uids, series_lists, strict=True)
                for se in series
            ]
            n_instances = sum(pool.map(instances_of, pairs))
        return len(studies), len(pairs), n_instances
    finally:
        for c in clients:
            c._session.close()


# --- dicomtrolley -------------------------------------------------------------------------


def dicomtrolley_available() -> bool:
    """Whether dicomtrolley (and requests) are installed."""
    try:
        import dicomtrolley.qido_rs  # noqa: F401
        import requests  # noqa: F401
    except ImportError:
        return False
    return True


def dicomtrolley_sequential(url: str) -> Counts:
    """dicomtrolley's ``QidoRS.find_studies`` with a ``HierarchicalQuery`` per level."""
    import requests
    from dicomtrolley.core import QueryLevels
    from dicomtrolley.qido_rs import HierarchicalQuery, QidoRS

    with requests.Session() as session, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qido = QidoRS(session, url)
        studies = qido.find_studies(HierarchicalQuery())
        n_series = n_instances = 0
        for study in studies:
            found = qido.find_studies(
                HierarchicalQuery(StudyInstanceUID=study.uid, query_level=QueryLevels.SERIES)
            )
            series = [se for st in found for se in st.series]
            n_series += len(series)
            for se in series:
                found = qido.find_studies(
                    HierarchicalQuery(
                        StudyInstanceUID=study.uid,
                        SeriesInstanceUID=se.uid,
                        query_level=QueryLevels.INSTANCE,
                    )
                )
                n_instances += sum(len(s.instances) for st in found for s in st.series)
        return len(studies), n_series, n_instances


# --- the line-up --------------------------------------------------------------------------


def contenders(
    concurrencies: list[int], reference: int, *, with_aqido: bool = True, auto: bool = True
) -> tuple[list[Contender], list[str]]:
    """The contenders to run (in this order) and notes about any that are missing."""
    notes: list[str] = []
    out: list[Contender] = []
    if with_aqido and aqido_available():
        for c in concurrencies:
            out.append(
                Contender(f"aqido c={c}", "aqido", c, functools.partial(aqido_crawl, concurrency=c))
            )
        if auto:
            out.append(
                Contender(
                    "aqido auto",
                    "aqido auto",
                    AUTO_CEILING,
                    functools.partial(aqido_crawl, concurrency="auto"),
                )
            )
    else:
        notes.append("aqido.client is not on this branch yet: aqido rows are PENDING")
    for c in concurrencies:
        out.append(
            Contender(
                f"bare aiohttp c={c}",
                "bare aiohttp",
                c,
                functools.partial(bare_aiohttp_crawl, concurrency=c),
            )
        )
    if dicomweb_client_available():
        out.append(
            Contender(
                "dicomweb-client sequential",
                "dicomweb-client sequential",
                1,
                dicomweb_client_sequential,
                sequential=True,
            )
        )
        out.append(
            Contender(
                f"dicomweb-client threads={reference}",
                "dicomweb-client threads",
                reference,
                functools.partial(dicomweb_client_threads, threads=reference),
            )
        )
    else:
        notes.append("dicomweb-client is not installed: its rows are skipped")
    if dicomtrolley_available():
        out.append(
            Contender(
                "dicomtrolley sequential",
                "dicomtrolley sequential",
                1,
                dicomtrolley_sequential,
                sequential=True,
            )
        )
    else:
        notes.append("dicomtrolley is not installed: its row is skipped")
    return out, notes


def timed(contender: Contender, url: str) -> tuple[float, float, Counts]:
    """Run one crawl; return (wall seconds, CPU seconds of this process, all threads; counts).

    A full garbage collection comes first, untimed: one run's garbage is not charged to
    the next contender (a full collection of this process takes 30-45 ms, a tenth of a
    crawl, and otherwise lands on whichever run crosses the collector's threshold).
    """
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    counts = contender.run(url)
    return time.perf_counter() - start, time.process_time() - cpu, counts

"""Sharded crawls on a Dask cluster, written as Parquet: :func:`crawl_to_parquet`.

Needs the ``dask`` extra (``dask[dataframe]``, ``distributed``, ``pyarrow``).
Each archive's study query is planned into disjoint shards
(:mod:`aqido._shards`: date ranges sized from counts, plus UID lists for
undated studies); each shard is one Dask task that crawls it resumably (its
own checkpoint) and writes one Parquet part.  The parts of all archives form
one Hive-partitioned dataset (``archive=...`` directories), returned as a
``dask.dataframe.DataFrame`` over this call's parts only (not those of other
archives an earlier call wrote into the same ``out``).

What holds:

* **Exactly the single-process result.**  The shards are disjoint and cover
  every matching study; a part is written only when its shard's crawl was
  complete.
* **Re-runs skip finished shards** (their part exists) and resume the others
  from their checkpoints; the plan itself is kept in the output directory.
* **Failures.**  A shard task that fails (an incomplete crawl, a worker that
  died) is retried by Dask (``task_retries``); one that still fails is reported by
  name in a :class:`~aqido.errors.CrawlIncompleteError` after every other
  shard has finished, its query in ``failures`` with the worker's own
  exception (aqido's exceptions pickle: the shard crawl's
  ``CrawlIncompleteError`` arrives as itself, its failures, URLs and statuses
  included).  So is an archive whose planning failed (its study listing):
  the other archives are crawled.
* **One limit per archive across the cluster.**  Each archive's requests in
  flight stay within ``max_concurrency`` on the whole cluster: every shard
  crawl runs with ``shard_concurrency`` requests in flight and holds one lease
  of a ``distributed.Semaphore`` named after the archive and its number of
  leases, ``max_concurrency // shard_concurrency`` (calls of one number share
  it; a call with another number has its own: a Semaphore's leases are fixed
  when the scheduler first makes it).
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from aqido._arrow import describe_nulled, disjoint_failure
from aqido._shards import Shard, ShardReport, archive_dirname, part_path, plan, run_shard
from aqido.errors import CrawlFailure, CrawlIncompleteError, InvalidQueryError, QidoError
from aqido.query import BaseQuery, HierarchicalQuery, QueryLevel, ensure_query_type
from aqido.tables import level_option

if TYPE_CHECKING:  # pragma: no cover
    import dask.dataframe
    import distributed

__all__ = ["crawl_to_parquet"]


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "aqido.dask needs dask.distributed: install it with `pip install 'aqido[dask]'`"
        ) from exc
    return distributed


def _plan_task(
    url: str,
    query: BaseQuery,
    out: str,
    shards: int,
    client_options: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Dask task: the plan of one archive (listed once, then re-read from the output)."""

    async def run() -> list[Shard]:
        return await plan(url, query, out=Path(out), shards=shards, client_options=client_options)

    return [shard.to_json() for shard in anyio.run(run)]


def _shard_task(
    url: str,
    shard: dict[str, Any],
    out: str,
    depth: str,
    client_options: Mapping[str, Any],
    semaphore: str | None,
    leases: int,
) -> ShardReport:
    """Dask task: crawl one shard into its Parquet part, holding a lease of the archive's limit."""

    async def run() -> ShardReport:
        return await run_shard(
            url,
            Shard.from_json(shard),
            out=Path(out),
            depth=QueryLevel(depth),
            client_options=client_options,
        )

    lease: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if semaphore is not None:
        distributed = _import_distributed()
        lease = distributed.Semaphore(max_leases=leases, name=semaphore)
    with lease:
        return anyio.run(run)


def _qido(exc: Exception) -> QidoError:
    """A task's exception as a QidoError: aqido's as they are, others by type and message.

    aqido's exceptions pickle, so a worker's arrives as itself (class, URL, status...);
    anything else (a worker's ``KeyError``, distributed's own errors) is wrapped.
    """
    return exc if isinstance(exc, QidoError) else QidoError(f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _dask_client(client: distributed.Client | None, workers: int | None) -> Iterator[Any]:
    """The given client, else a local cluster of ``workers`` processes for this call."""
    if client is not None:
        yield client
        return
    distributed = _import_distributed()
    with (
        distributed.LocalCluster(
            n_workers=workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as local,
    ):
        yield local


def crawl_to_parquet(
    urls: str | Sequence[str],
    query: Any = None,
    *,
    out: str | os.PathLike[str],
    depth: QueryLevel | str = QueryLevel.INSTANCE,
    shards: int | None = None,
    client: distributed.Client | None = None,
    workers: int | None = None,
    max_concurrency: int = 8,
    shard_concurrency: int | None = None,
    task_retries: int = 2,
    on_shard: Callable[[str, ShardReport], Any] | None = None,
    **client_options: Any,
) -> dask.dataframe.DataFrame:
    """Crawl one or several archives on a Dask cluster; return the results as a Dask DataFrame.

    Arguments:
        urls: the QIDO-RS service root of each archive (one string, or several).
        query: the study-level query selecting the studies (default: all), the
            same for every archive.
        out: the output directory (created); one ``archive=...`` sub-directory
            per archive, holding its plan, checkpoints and Parquet parts.  A
            relative path is this process's (the workers are sent it absolute).
        depth: ``"study"``, ``"series"`` or ``"instance"``: one row per ...
        shards: shards per archive (default: four per worker).
        client: a ``distributed.Client``; default: a ``LocalCluster`` of
            ``workers`` processes (default: one per CPU) for this call.
        max_concurrency: requests in flight per archive, on the whole cluster.
        shard_concurrency: requests in flight per shard crawl (default:
            ``max_concurrency`` when there is one archive and one worker, else
            ``max(1, max_concurrency // 2)``).
        task_retries: Dask retries of a failed shard task.
        on_shard: called as ``on_shard(url, report)`` each time a shard finishes
            (progress displays); ``report.nulled``: the values its part holds as
            null, not readable as one value of their column's type, per column.
        client_options: passed to every :class:`~aqido.client.AsyncQidoRS`
            (``auth``, ``timeout``, ``retries``...); they travel to the workers,
            so use picklable values.

    Values the parts hold as null because they were not readable as one value
    of their column's type are summed per column over the shards and named in
    one ``UserWarning``.  Raises :class:`~aqido.errors.CrawlIncompleteError`
    naming the shards that failed after their retries, the archives whose
    planning failed (the others' parts are written) and those whose parts hold a
    study twice (re-dated between two shards' crawls: it would be two rows), ``ImportError``
    without the ``dask`` extra, and ``ValueError`` before anything runs for a ``depth``
    that is not a level, and ``shards``, ``max_concurrency`` or ``shard_concurrency`` that
    is not a positive int.
    """
    # Every argument is checked before dask is imported (and so before any cluster starts).
    level = level_option("depth", depth)
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise ValueError("crawl_to_parquet needs at least one archive URL")
    if len({archive_dirname(u) for u in url_list}) != len(url_list):
        raise ValueError("two URLs name the same archive directory; give each archive once")
    base = HierarchicalQuery() if query is None else ensure_query_type(query)
    root = Path(out).absolute()  # the workers' own working directory is not this process's
    if (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or max_concurrency < 1
    ):
        raise ValueError(f"max_concurrency must be a positive int, not {max_concurrency!r}")
    for name, count in (("shards", shards), ("shard_concurrency", shard_concurrency)):
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise ValueError(f"{name} must be a positive int, not {count!r}")
    import dask.dataframe as dd

    root.mkdir(parents=True, exist_ok=True)

    with _dask_client(client, workers) as dask_client:
        n_workers = max(1, len(dask_client.scheduler_info().get("workers", {})))
        per_shard = shard_concurrency or (
            max_concurrency if n_workers == 1 else max(1, max_concurrency // 2)
        )
        per_shard = min(per_shard, max_concurrency)
        leases = max(1, max_concurrency // per_shard)
        options = {**client_options, "max_concurrency": per_shard}
        count = shards or 4 * n_workers
        plans = {
            url: dask_client.submit(
                _plan_task, url, base, str(root), count, options, pure=False, retries=task_retries
            )
            for url in url_list
        }
        futures: dict[Any, tuple[str, Shard]] = {}
        # a task key is the scheduler's, shared by every call on a cluster: this call's own,
        # or another call's shard of the same name (another ``out``, depth or query) would
        # stand for it, its part written elsewhere or at another depth
        call = uuid.uuid4().hex[:12]
        failures: list[CrawlFailure] = []
        failed: set[str] = set()  # the archives with a failure: their parts are not complete
        nulled: dict[str, int] = {}
        for url, planned in plans.items():
            semaphore = f"aqido-{archive_dirname(url)}-{leases}"  # one name, one max_leases
            try:
                records = planned.result()
            except InvalidQueryError:  # a usage error (another crawl's directory): stop
                raise
            except Exception as exc:  # noqa: BLE001 - this archive is missing; the others go on
                failures.append(
                    CrawlFailure(
                        f"{archive_dirname(url)} (planning its shards): {base}", _qido(exc)
                    )
                )
                failed.add(url)
                continue
            for record in records:
                shard = Shard.from_json(record)
                future = dask_client.submit(
                    _shard_task,
                    url,
                    record,
                    str(root),
                    level.value,
                    options,
                    semaphore,
                    leases,
                    key=f"aqido-shard-{archive_dirname(url)}-{shard.name}-{call}",
                    pure=False,
                    retries=task_retries,
                )
                futures[future] = (url, shard)
        distributed = _import_distributed()
        for future in distributed.as_completed(list(futures)):
            url, shard = futures[future]
            try:
                report = future.result()
            except Exception as exc:  # noqa: BLE001 - every task failure is reported by name
                failures.append(
                    CrawlFailure(f"{archive_dirname(url)}/{shard.name}: {shard.query}", _qido(exc))
                )
                failed.add(url)
                continue
            for name, lost in report.nulled:
                nulled[name] = nulled.get(name, 0) + lost
            if on_shard is not None:
                on_shard(url, report)
    # this call's parts only: not another archive's, nor a stale part, that `out` also holds
    parts = sorted(str(part_path(root, url, shard)) for url, shard in futures.values())
    for url in url_list:  # a study in two parts of an archive would count twice
        own = [str(part_path(root, url, s)) for u, s in futures.values() if u == url]
        if url not in failed and (overlap := disjoint_failure(archive_dirname(url), own)):
            failures.append(overlap)
    if nulled:
        warnings.warn(f"crawl_to_parquet: {describe_nulled(nulled)}", UserWarning, stacklevel=2)
    if failures:
        raise CrawlIncompleteError(failures)
    frame: dask.dataframe.DataFrame = dd.read_parquet(parts, dataset={"partitioning": "hive"})
    return frame

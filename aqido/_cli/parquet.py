"""``aqido crawl URL [URL ...] --out DIR --format parquet``: sharded crawls into Parquet parts.

In one process by default (the shards of each archive crawled one after the
other, each with the client's ``--concurrency``), or on a Dask cluster with
``--workers N`` (a local cluster of N processes) or ``--scheduler ADDRESS``
(:func:`aqido.dask.crawl_to_parquet`).  Either way the output directory has
the layout of :mod:`aqido._shards`, re-running skips finished shards and
resumes the others, and one progress display (a line per finished shard on
stderr) reports the run.
"""

from __future__ import annotations

import argparse
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from aqido._arrow import describe_nulled
from aqido._cli.common import cut_url
from aqido.errors import CrawlIncompleteError, QidoError, _failure_query
from aqido.query import BaseQuery, QueryLevel
from aqido.terminal import printable


class _Display:
    """The one progress display: a line per finished shard, then a summary.

    Both count the values written as null, not readable as one value of their
    column's type, per column (when there are any).
    """

    def __init__(self, err: IO[str], total: int | None) -> None:
        self.err = err
        self.total = total
        self.done = 0
        self.rows = 0
        self.nulled: dict[str, int] = {}
        self.started = time.monotonic()

    def shard(self, url: str, report: Any) -> None:
        self.done += 1
        of = f"/{self.total}" if self.total else ""
        if report.skipped:
            what = "already written"
        else:
            self.rows += report.rows
            what = f"{_count(report.studies, 'study', 'studies')}, {_count(report.rows, 'row')}"
            if report.nulled:
                what += f"; {describe_nulled(dict(report.nulled))}"
                for name, count in report.nulled:
                    self.nulled[name] = self.nulled.get(name, 0) + count
        self.err.write(
            f"shard {self.done}{of} ({shard_label(report.name)}) of {printable(url)}: {what}\n"
        )
        self.err.flush()

    def summary(self, out: IO[str], directory: Path) -> None:
        elapsed = time.monotonic() - self.started
        nulled = f"; {describe_nulled(self.nulled)}" if self.nulled else ""
        out.write(
            f"parquet: {_count(self.done, 'shard')}, {_count(self.rows, 'new row')} in "
            f"{elapsed:.1f} s, "
            f"under {printable(directory)}{nulled}\n"
        )


def _count(count: int, noun: str, plural: str = "") -> str:
    """``1 shard``, ``2 shards``: a count and its noun, in the plural unless it is one."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def shard_label(name: str) -> str:
    """A shard's name as a shard's line shows it: the study dates it holds, in words.

    ``date-20100101-20101231`` is ``study dates 2010-01-01 to 2010-12-31``, an open
    end ``date-20100101-`` ``study dates from 2010-01-01``, ``date--`` (no range: the
    whole query) ``every study date``; ``undated-<digest>`` is ``undated studies
    <digest>``.  Any other name (a plan written by another aqido) is shown escaped, as it is.
    """
    match = re.fullmatch(r"date-(\d{8})?-(\d{8})?", name)
    if match is None:
        undated = re.fullmatch(r"undated-([0-9a-f]+)", name)
        return f"undated studies {undated.group(1)}" if undated else printable(name)
    low, high = (f"{d[:4]}-{d[4:6]}-{d[6:]}" if d else "" for d in match.groups())
    if low and high:
        return f"study date {low}" if low == high else f"study dates {low} to {high}"
    if low or high:
        return f"study dates from {low}" if low else f"study dates up to {high}"
    return "every study date"


def _message_lines(error: BaseException) -> list[str]:
    """A shard's error as the lines to show, each escaped for the terminal.

    A :class:`CrawlIncompleteError` (a shard's crawl that missed parts) is split
    at its message's line breaks: aqido's own, between its header and its
    failures' lines, in which every server-sent part has its whitespace
    collapsed.  Any other message stays one line, its line breaks escaped: they
    are the server's, and shown as breaks they would forge lines.
    """
    text = str(error)
    if isinstance(error, CrawlIncompleteError):
        return [printable(piece) for piece in text.split("\n")]
    return [cut_url(printable(text), error)]  # its URL cut as the query is


def run_parquet(
    args: argparse.Namespace,
    urls: Sequence[str],
    query: BaseQuery,
    options: Mapping[str, Any],
    out: IO[str],
    err: IO[str],
) -> int:
    """Run the sharded crawl the arguments describe; return the exit status (0, 1 or 3)."""
    from aqido._cli.common import EXIT_INCOMPLETE, EXIT_OK, UsageError
    from aqido._shards import archive_dirname

    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise UsageError("--format parquet needs pyarrow: pip install 'aqido[parquet]'") from None
    directory = Path(args.out)
    try:  # pyarrow takes paths as UTF-8: a name that is not (bytes from argv) fails at the end
        str(directory).encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(
            f"--out {printable(directory)}: parquet output needs a directory name in UTF-8"
        ) from None
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--out {printable(directory)} is a file; parquet output is a directory")
    names = [archive_dirname(url) for url in urls]
    if len(set(names)) != len(names):
        raise UsageError("two URLs name the same archive directory; give each archive once")
    depth = QueryLevel(args.depth.upper())
    display = _Display(err, None)
    try:
        if args.workers or args.scheduler:
            _on_dask(args, urls, query, options, directory, depth, display)
        else:
            _in_process(args, urls, query, options, directory, depth, display)
    except CrawlIncompleteError as error:
        display.summary(out, directory)
        for failure in error.failures:  # the query cut as in a CrawlIncompleteError's message
            shown = printable(_failure_query(failure.query))
            first, *more = _message_lines(failure.error)
            err.write(f"could not fetch: {shown}: {first}\n")
            err.writelines(f"  {line}\n" for line in more)
        return EXIT_INCOMPLETE
    display.summary(out, directory)
    return EXIT_OK


def _on_dask(
    args: argparse.Namespace,
    urls: Sequence[str],
    query: BaseQuery,
    options: Mapping[str, Any],
    directory: Path,
    depth: QueryLevel,
    display: _Display,
) -> None:
    from aqido._cli.common import UsageError

    try:
        import distributed

        from aqido.dask import crawl_to_parquet
    except ImportError:
        raise UsageError("--workers/--scheduler need Dask: pip install 'aqido[dask]'") from None
    client_options = dict(options)
    max_concurrency = client_options.pop("max_concurrency")
    if max_concurrency == "auto":  # crawl_to_parquet shares a number among the workers
        raise UsageError("--concurrency auto is not available with --workers or --scheduler")
    if client_options.get("ssl") not in (None, True, False):  # an SSLContext: not picklable
        if args.cert:
            raise UsageError(
                "--cert/--key cannot be sent to Dask workers; crawl in one process (no "
                "--workers or --scheduler)"
            )
        # --cacert: the workers load the bundle themselves, from the same path
        client_options["ssl"] = str(Path(args.cacert).resolve())
    common: dict[str, Any] = {
        "out": directory,
        "depth": depth,
        "shards": args.shards,
        "max_concurrency": max_concurrency,
        "on_shard": display.shard,
        **client_options,
    }
    with warnings.catch_warnings():  # the display names the nulled values, shard by shard
        warnings.filterwarnings("ignore", "crawl_to_parquet: ", UserWarning)
        if args.scheduler:
            connect: Any = distributed.Client  # untyped library
            try:
                client = connect(args.scheduler)
            except ValueError as exc:  # not an address: no port, no such protocol (UnicodeError)
                raise UsageError(f"--scheduler: not a scheduler address ({exc})") from None
            with client:
                crawl_to_parquet(list(urls), query, client=client, **common)
        else:
            crawl_to_parquet(list(urls), query, workers=args.workers, **common)


def _in_process(
    args: argparse.Namespace,
    urls: Sequence[str],
    query: BaseQuery,
    options: Mapping[str, Any],
    directory: Path,
    depth: QueryLevel,
    display: _Display,
) -> None:
    import anyio

    from aqido._arrow import disjoint_failure
    from aqido._shards import part_path, plan, run_shard
    from aqido.errors import CrawlFailure, InvalidQueryError

    async def run() -> None:
        failures: list[CrawlFailure] = []
        for url in urls:
            try:
                shards = await plan(
                    url, query, out=directory, shards=args.shards or 1, client_options=options
                )
            except InvalidQueryError:  # a usage error (another crawl's directory): stop
                raise
            except QidoError as error:  # this archive is missing; the others are crawled
                failures.append(CrawlFailure(f"{url} (planning its shards): {query}", error))
                continue
            complete = True
            for shard in shards:
                try:
                    report = await run_shard(
                        url, shard, out=directory, depth=depth, client_options=options
                    )
                except QidoError as error:
                    failures.append(CrawlFailure(f"{url} {shard.name}: {shard.query}", error))
                    complete = False
                    continue
                display.shard(url, report)
            parts = [part_path(directory, url, shard) for shard in shards]
            if complete and (overlap := disjoint_failure(url, parts)):  # a study counted twice
                failures.append(overlap)
        if failures:
            raise CrawlIncompleteError(failures)

    anyio.run(run)

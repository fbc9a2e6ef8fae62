"""The commands: ``search``, ``probe``, ``crawl`` (with its live progress display) and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Callable,
    Mapping,
)
from contextlib import (
    AsyncExitStack,
    aclosing,
    asynccontextmanager,
)
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aqido._cli.args import check_url, query_from_args
from aqido._cli.common import (
    EXIT_INCOMPLETE,
    EXIT_OK,
    UsageError,
    failure_error,
    isatty,
)
from aqido._cli.output import have_rich, json_line, print_table, write_results
from aqido.errors import _failure_query
from aqido.progress import CrawlProgress
from aqido.query import BaseQuery, HierarchicalQuery, QueryLevel
from aqido.terminal import printable, unicode_safe

if TYPE_CHECKING:  # pragma: no cover
    from aqido.checkpoint import CrawlCheckpoint
    from aqido.client import AsyncQidoRS
    from aqido.results import Study
    from aqido.stats import CrawlStats


@asynccontextmanager
async def _open_client(url: str, **options: Any) -> AsyncIterator[AsyncQidoRS]:
    """An open client for ``url``: ``options`` are the client's keyword arguments
    (:func:`client_options`); an option the client refuses is a usage error."""
    from aqido.client import AsyncQidoRS

    try:
        client = AsyncQidoRS(url, **options)
    except (ValueError, OSError) as exc:  # a bad option, an unreadable --profile FILE
        raise UsageError(f"{exc}") from exc
    async with client:
        yield client


# --- search --------------------------------------------------------------------------------


async def run_search(
    args: argparse.Namespace, options: Mapping[str, Any], out: IO[str], is_tty: bool
) -> int:
    query = query_from_args(args)
    fmt = args.format or ("table" if is_tty else "jsonl")
    ascii = not unicode_safe(getattr(out, "encoding", None))
    results: list[Any] = []
    count = 0
    async with _open_client(args.url, **options) as client:
        async for result in client.iter_search(query, page_size=args.page_size):
            count += 1
            if fmt == "jsonl":  # stream: a big result never sits in memory
                out.write(json_line(result.to_json(), ascii=ascii, terminal=is_tty))
            else:
                results.append(result)
            if args.limit is not None and count >= args.limit:
                break
    if fmt != "jsonl":
        write_results(
            results,
            fmt,
            out,
            level=query.query_level,
            includes=query.include_fields,
            rich_ok=is_tty,
            terminal=is_tty,
        )
    return EXIT_OK


# --- probe ---------------------------------------------------------------------------------


async def run_probe(
    args: argparse.Namespace, options: Mapping[str, Any], out: IO[str], is_tty: bool
) -> int:
    from aqido.probe import MAX_IN_FLIGHT, probe_report
    from aqido.profile import ServerProfile

    # --concurrency auto: the probe's own few at a time (the client's adaptive limit caps them)
    wanted = args.concurrency
    in_flight = MAX_IN_FLIGHT if wanted == "auto" else min(MAX_IN_FLIGHT, wanted)
    async with _open_client(args.url, **options) as client:
        report = await probe_report(client, max_in_flight=in_flight)
        url = client.url
    ctx = report.context
    names = {uid: name for uid, name in ((ctx.a, "{A}"), (ctx.b, "{B}")) if uid} if ctx else {}

    def cell(text: str) -> str:  # print_table escapes it, and gives it to rich as Text
        for uid, name in names.items():
            text = text.replace(uid, name)
        return text

    rows = [[f.capability, cell(f.finding), cell(f.request)] for f in report.findings]
    print_table(
        ["capability", "finding", "request"],
        rows,
        out,
        title=f"aqido probe {url} ({report.requests} requests)",
        rich_ok=is_tty,
    )
    if names:
        legend = ", ".join(f"{name} = {printable(uid)}" for uid, name in names.items())
        out.write(f"studies: {legend}\n")
    standard = ServerProfile.standard()
    differs = [
        field
        for field, value in report.profile.to_dict().items()
        if field not in ("name", "notes") and value != getattr(standard, field)
    ]
    out.write(
        "differs from the standard in: " + (", ".join(differs) if differs else "nothing") + "\n"
    )
    for note in report.profile.notes:
        out.write(f"note: {printable(note)}\n")
    if args.json:
        _write_profile(args.json, report.profile.to_json() + "\n")
        out.write(f"profile written to {args.json}\n")
    return EXIT_OK


def _write_profile(path: str, text: str) -> None:
    """Write ``--json FILE`` whole or not at all (a failed write keeps the file there was).

    The file :meth:`ServerProfile.save <aqido.profile.ServerProfile.save>` writes, through
    a temporary file renamed into place (a symlink's target, not the link); a failure names
    the file and the OS error.  What is not a regular file (``/dev/stdout``, a FIFO) is
    written to as it is.
    """
    from aqido._files import os_error, write_whole

    try:
        if os.path.exists(path) and not os.path.isfile(path):
            with open(path, "w", encoding="utf-8") as file:
                file.write(text)
        else:
            write_whole(os.path.realpath(path), text.encode("utf-8"))
    except OSError as exc:
        raise OSError(exc.errno, f"could not write the profile: {os_error(exc)}", path) from exc


# --- crawl ---------------------------------------------------------------------------------


class _Progress(CrawlProgress):
    """The live progress display: rich on a terminal, a plain status line without rich.

    A :class:`~aqido.progress.CrawlProgress` like any other: the crawl calls
    ``update`` on every change of its statistics; the display redraws at most
    every 1/8 s (rich, which also animates on its own) or 1/2 s (plain).
    """

    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.stats: CrawlStats | None = None
        self._rich: Any = None
        self._task: Any = None
        self._plain_shown = False
        self._drawn = 0.0

    def start(self) -> None:
        if not self.enabled:
            return
        if have_rich():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._rich = Progress(
                SpinnerColumn(),
                TextColumn("[bold]studies"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                refresh_per_second=8,
            )
            self._rich.start()
            self._task = self._rich.add_task("crawl", total=None, stats="")

    def update(self, stats: CrawlStats) -> None:
        self.stats = stats
        now = time.monotonic()
        if now - self._drawn >= (0.125 if self._rich is not None else 0.5):
            self._drawn = now
            self.refresh()

    def refresh(self) -> None:
        if not self.enabled or self.stats is None:
            return
        done, listed = _studies_done(self.stats), self.stats.items["STUDY"]
        if self._rich is not None:
            stats = status_line(self.stats).split(" · ", 1)[1]
            self._rich.update(self._task, completed=done, total=max(listed, done), stats=stats)
        else:
            self.stream.write("\r" + status_line(self.stats) + " ")
            self.stream.flush()
            self._plain_shown = True

    def close(self) -> None:
        if not self.enabled:
            return
        self.refresh()
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self._plain_shown:
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False  # closed: later calls do nothing


def _studies_done(stats: CrawlStats) -> int:
    return stats.studies_done + stats.studies_skipped


def status_line(stats: CrawlStats) -> str:
    """One status line: ``studies 12/40 · series 36 · instances 72 · 85 req/s · ...``.

    Studies done (including those already in a resumed file) of those listed so
    far; series and instances fetched; requests per second; the client's limit
    on requests in flight (it moves with ``--concurrency auto``); retries
    (transient failures retried); errors (parts that failed for good).
    """
    rate = stats.requests / max(stats.elapsed, 1e-9)
    errors = len(stats.failures)
    limit = "" if stats.concurrency_limit is None else f" · limit {stats.concurrency_limit}"
    return (
        f"studies {_studies_done(stats)}/{stats.items['STUDY']} · "
        f"series {stats.items['SERIES']} · instances {stats.items['INSTANCE']} · "
        f"{rate:.0f} req/s{limit} · {stats.retries} retr{'y' if stats.retries == 1 else 'ies'} · "
        f"{errors} error{'' if errors == 1 else 's'}"
    )


def _prepare_out(
    checkpoint: CrawlCheckpoint,
    query: BaseQuery,
    depth: QueryLevel,
    server: str,
    *,
    resume: bool,
    overwrite: bool,
    err: IO[str],
) -> None:
    """Check --out/--resume/--overwrite before crawling (one-line usage errors).

    Another run holding the file's lock, or a file that cannot be written (a
    full disk, a read-only filesystem), is a CheckpointError (exit 1); a file
    of another crawl or server, or a damaged one, is a usage error (exit 2).
    The lock is held (the checkpoint left open, the caller closes it) for the
    crawl that follows.
    """
    from aqido.errors import CheckpointError

    path = checkpoint.path
    exists = path.is_file() and path.stat().st_size > 0  # not a file: refused by lock()
    if exists and not resume and not overwrite:
        raise UsageError(
            f"{path} exists: add --resume to continue that crawl, or --overwrite to replace it"
        )
    cut = False
    if exists and resume:
        with path.open("rb") as file:
            file.seek(-1, os.SEEK_END)
            cut = file.read(1) != b"\n"
    try:
        checkpoint.lock()  # a second writer fails here, before anything is touched
        if exists and not resume:
            path.unlink()  # --overwrite, under the lock
        checkpoint.open(query, depth, server=server)  # validates header, server, every line
    except CheckpointError as exc:
        if isinstance(exc.__cause__, OSError):  # its lock held by another run, a full disk...
            raise
        raise UsageError(str(exc)) from None
    if cut:
        err.write(f"aqido: {path}: dropped an incomplete last line (an interrupted write)\n")


async def run_crawl(
    url: str,
    query: BaseQuery,
    *,
    depth: QueryLevel,
    out_path: Path | None,
    resume: bool,
    overwrite: bool,
    force: bool = False,
    progress: bool,
    client_options: Mapping[str, Any],
    out: IO[str],
    err: IO[str],
    rich_ok: bool,
    on_study: Callable[[Study], None] | None = None,
    page_size: int | None = None,
) -> tuple[int, CrawlStats]:
    """Crawl with the library's complete crawl (``partial=True``), into a checkpoint file.

    A part that fails for good is recorded and the crawl goes on; each is
    named on stderr at the end (exit 3), in one line: its query's first 150
    characters (and how many more), its error.  If nothing at all could be listed
    (unreachable server, 401), that error is raised instead (exit 1).
    """
    from aqido.checkpoint import CrawlCheckpoint
    from aqido.stats import CrawlStats

    if query.query_level is not QueryLevel.STUDY:  # pragma: no cover - the parser ensures it
        raise UsageError("crawl starts from a study-level query")
    server = check_url(url)  # before any file is touched
    stats = CrawlStats()
    display = _Progress(err, progress)
    checkpoint = None if out_path is None else CrawlCheckpoint(out_path, force=force)
    async with AsyncExitStack() as stack:
        if checkpoint is not None:  # closed (its lock released) however the crawl ends
            stack.callback(checkpoint.close)
            _prepare_out(
                checkpoint, query, depth, server, resume=resume, overwrite=overwrite, err=err
            )
        client = await stack.enter_async_context(_open_client(url, **client_options))
        display.start()
        try:
            crawl = client.crawl(
                query,
                depth=depth,
                page_size=page_size,
                partial=True,
                stats=stats,
                checkpoint=checkpoint,
                progress=display,
            )
            async with aclosing(crawl) as studies:
                async for study in studies:
                    if on_study is not None:
                        on_study(study)
        finally:
            display.close()  # also when the crawl never started (the crawl closes it too)
    if stats.failures and not stats.items["STUDY"]:
        raise stats.failures[0].error  # nothing listed at all: not a partial crawl
    _print_summary(stats, out, out_path=out_path, rich_ok=rich_ok)
    if stats.failures:
        for failure in stats.failures:  # the query cut as in a CrawlIncompleteError's message
            shown = printable(_failure_query(failure.query))
            err.write(f"aqido: could not fetch {shown}: {failure_error(failure.error)}\n")
        err.write(
            f"aqido: crawl incomplete: {len(stats.failures)} part(s) could not be fetched"
            + (
                "; run the same command with --resume to fetch what is missing\n"
                if out_path is not None
                else "\n"
            )
        )
        return EXIT_INCOMPLETE, stats
    return EXIT_OK, stats


def _print_summary(
    stats: CrawlStats, out: IO[str], *, out_path: Path | None, rich_ok: bool
) -> None:
    elapsed = stats.elapsed
    rows = [
        ["studies written" if out_path else "studies", str(stats.studies_done)],
        ["series", str(stats.items["SERIES"])],
        ["instances", str(stats.items["INSTANCE"])],
    ]
    if stats.studies_skipped:
        rows.insert(1, ["studies already in the file", str(stats.studies_skipped)])
    rows += [
        ["requests", f"{stats.requests} ({stats.requests / max(elapsed, 1e-9):.0f}/s)"],
        ["retries", str(stats.retries)],
    ]
    if stats.splits:
        rows.append(["queries split (server caps)", str(stats.splits)])
    if stats.failures:
        rows.append(["parts that failed", str(len(stats.failures))])
    if stats.warning_count:  # each distinct one was printed on stderr, escaped
        from aqido.stats import MAX_WARNINGS

        distinct = len(stats.warnings)
        more = "+" if distinct == MAX_WARNINGS else ""
        rows.append(["server warnings", f"{stats.warning_count} ({distinct}{more} distinct)"])
    rows.append(["elapsed", f"{elapsed:.2f} s"])
    if out_path is not None:
        rows.append(["output", str(out_path)])
    print_table(["crawl", ""], rows, out, rich_ok=rich_ok)


# --- demo ----------------------------------------------------------------------------------


#: The crawl depths, shallowest first (``--depth``).
_LEVELS = ("study", "series", "instance")
#: How often ``aqido demo --serve`` forgets the requests it has served: nobody reads them
#: there, and a server left running held every one (about 1 kB a request, without end).
SERVE_FORGET_EVERY = 10.0


async def run_demo(args: argparse.Namespace, out: IO[str], err: IO[str], is_tty: bool) -> int:
    from aqido.testing import Faults, demo_archive

    faults = (
        Faults(rate=args.fault_rate, kinds=("503", "429"), seed=args.seed)
        if args.fault_rate
        else None
    )
    by_modality: Counter[str] = Counter()
    series_by_modality: Counter[str] = Counter()
    instances_by_modality: Counter[str] = Counter()

    def tally(study: Study) -> None:
        for modality in set(study.ModalitiesInStudy):
            by_modality[modality] += 1
        for series in study.series:
            series_by_modality[series.Modality or "?"] += 1
            instances_by_modality[series.Modality or "?"] += len(series.instances)

    if args.serve:
        async with demo_archive(args.studies, seed=args.seed) as archive:
            out.write(
                f"aqido demo: {args.studies} synthetic studies at {archive.url}\n"
                f"try: aqido search {archive.url} --PatientName 'Doe^J*'\n"
                "Ctrl-C stops it.\n"
            )
            out.flush()
            while True:  # until cancelled (Ctrl-C)
                await asyncio.sleep(SERVE_FORGET_EVERY)
                archive.reset_stats()
    demo = demo_archive(args.studies, seed=args.seed, latency=args.latency, faults=faults)
    async with demo as archive:
        out.write(
            f"aqido demo: an in-process archive with {args.studies} synthetic studies at "
            f"{archive.url}\n"
        )
        out.flush()
        status, _ = await run_crawl(
            archive.url,
            HierarchicalQuery(),
            depth=QueryLevel(args.depth.upper()),
            out_path=Path(args.out) if args.out else None,
            resume=args.resume,
            overwrite=args.overwrite,
            force=True,  # the demo archive is the same at every run, on a new port
            progress=args.progress and isatty(err),
            client_options={"timeout": 30.0, "retries": 4, "max_concurrency": args.concurrency},
            out=out,
            err=err,
            rich_ok=is_tty,
            on_study=tally,
        )
    # a column per level crawled: at --depth study, no series were listed to count
    headings = ["modality", "studies", "series", "instances"][: 2 + _LEVELS.index(args.depth)]
    rows = [
        [
            modality,
            str(by_modality[modality]),
            str(series_by_modality[modality]),
            str(instances_by_modality[modality]),
        ][: len(headings)]
        for modality in sorted(by_modality.keys() | series_by_modality.keys())
    ]
    print_table(
        headings,
        rows,
        out,
        title="what the crawl found",
        rich_ok=is_tty,
        numeric=("studies", "series", "instances"),
    )
    out.write(
        "Next: `aqido search URL --PatientName 'DOE*'` or `aqido crawl URL --out studies.jsonl` "
        "against your own archive.\n"
    )
    if is_tty and not have_rich():
        out.write("Tip: pip install 'aqido[cli]' for rich tables and a live progress bar.\n")
    return status

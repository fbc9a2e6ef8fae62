"""The ``aqido`` command line: search a QIDO-RS archive, crawl it to JSON Lines, or try the demo.

Commands::

    aqido search URL [query options] [--level study|series|instance] [--relational]
                     [--limit N] [--format table|json|jsonl|csv]
    aqido crawl URL [query options] [--depth series|instance] [--concurrency N]
                    --out FILE.jsonl [--resume [--force]]
    aqido demo [--studies N] [--out FILE.jsonl]
    aqido probe URL [--json FILE]

Exit status: 0 success; 1 the server could not be reached, or answered with an
error; 2 a usage error (bad option, invalid UID or date: one line on stderr);
3 a crawl that could not fetch everything (each missing study is named; run the
same command with ``--resume`` to fetch just those); 130 interrupted.

Credentials come from ``--user`` (password from ``--password``, ``AQIDO_PASSWORD``
or a prompt), ``--token`` or ``AQIDO_TOKEN``, and ``--header``; they are never
printed (a URL with ``user:password@`` is refused, as are control characters in
credentials and headers).  Errors are one line without a traceback unless
``--debug`` is given (before or after the command).  Whatever the server sends is shown through
:func:`aqido.terminal.printable` (control characters escaped, never read as rich
markup) and in the terminal's encoding; ``json``, ``jsonl`` and ``csv`` keep it exact
in a file or pipe (on a terminal JSON writes control characters as ``\\u`` escapes and
CSV's cells are escaped as the table's).

The output looks best with ``pip install 'aqido[cli]'`` (rich tables and a live
progress bar); without rich the same information is printed as plain text.
This module is not imported by ``import aqido``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import io
import logging
import os
import signal
import sys
from collections.abc import (
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import (
    contextmanager,
    redirect_stdout,
    suppress,
)
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from aqido._cli.args import (
    INSECURE_WARNING,
    build_parser,
    check_url,
    client_options,
    query_from_args,
    reject_userinfo,
)
from aqido._cli.commands import run_crawl, run_demo, run_probe, run_search
from aqido._cli.common import (
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    FORMATS,
    UsageError,
    one_line,
)
from aqido._cli.common import isatty as _isatty
from aqido._cli.output import format_value, write_results
from aqido.errors import (
    InvalidQueryError,
    ProxyConfigError,
    QidoError,
    TransportError,
)
from aqido.query import QueryLevel
from aqido.stats import MAX_WARNINGS
from aqido.terminal import SafeStream, printable

_T = TypeVar("_T")

__all__ = [
    "EXIT_ERROR",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "FORMATS",
    "UsageError",
    "build_parser",
    "format_value",
    "main",
    "query_from_args",
    "write_results",
]

# --- entry point ---------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the ``aqido`` command line and return its exit status (the console script's entry).

    ``stdout``, ``stderr`` and ``environ`` default to the process's (tests pass their own).
    """
    # Every write is safe for the streams' encodings (an ASCII terminal gets \xe9 escapes).
    out = cast(IO[str], SafeStream(_open_stream(stdout, sys.stdout)))
    err = cast(IO[str], SafeStream(_open_stream(stderr, sys.stderr)))
    env = os.environ if environ is None else environ
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv, out, err, env)
    except UsageError as exc:
        if debug:
            raise
        err.write(f"aqido: error: {printable(exc)}\n")
        return EXIT_USAGE
    except InvalidQueryError as exc:
        if debug:
            raise
        err.write(f"aqido: error: {one_line(exc)}\n")
        return EXIT_USAGE
    except ProxyConfigError as exc:  # the environment's proxy: unusable, or refused its password
        if debug:
            raise
        err.write(f"aqido: error: {one_line(exc)}\n")
        return EXIT_USAGE
    except QidoError as exc:
        if debug:
            raise
        what = "cannot reach the server" if isinstance(exc, TransportError) else "error"
        err.write(f"aqido: {what}: {one_line(exc)}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("\naqido: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `aqido search ... | head`: the reader has had enough
        # The process's stdout goes to /dev/null (its flush at exit would fail again);
        # a stream the caller gave is theirs, and the process's stdout is left alone.
        if stdout is None and sys.stdout is not None:
            with suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(devnull, sys.stdout.fileno())
                finally:
                    os.close(devnull)
        return EXIT_OK
    except OSError as exc:  # the output file: permissions, disk full
        if debug:
            raise
        err.write(f"aqido: error: {printable(exc)}\n")
        return EXIT_ERROR


class _Dropped(io.TextIOBase):
    """A text stream that drops what is written: a standard stream the process started
    without (``aqido ... >&-``: Python's ``sys.stdout`` is ``None``, and ``print`` drops)."""

    def write(self, text: str) -> int:
        return len(text)


def _open_stream(given: IO[str] | None, process: IO[str] | None) -> IO[str]:
    """``given``, else the process's stream, else (closed) one that drops what is written."""
    if given is not None:
        return given
    return process if process is not None else cast(IO[str], _Dropped())


class SafeFormatter(logging.Formatter):
    """A log formatter whose message lines go through :func:`aqido.terminal.printable`."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


def _run(work: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(work)``, where Ctrl-C cancels ``work`` and then raises KeyboardInterrupt.

    Python 3.11's asyncio.run does this itself; on 3.10 a KeyboardInterrupt
    would instead surface inside some task (an anyio task group would wrap it
    in an exception group, with a traceback).  Cancelling the main task lets
    every ``finally`` run, so the crawl file is closed after its last complete line.
    """
    interrupted = False

    async def cancellable() -> _T:
        nonlocal interrupted
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None

        def on_interrupt() -> None:
            nonlocal interrupted
            interrupted = True
            task.cancel()

        try:
            loop.add_signal_handler(signal.SIGINT, on_interrupt)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, not the main thread
            return await work
        try:
            return await work
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        return asyncio.run(cancellable())
    except asyncio.CancelledError:  # the cancellation on_interrupt asked for, at the top
        if interrupted:
            raise KeyboardInterrupt from None
        raise


def _main(argv: Sequence[str] | None, out: IO[str], err: IO[str], env: Mapping[str, str]) -> int:
    parser = build_parser()
    try:
        with redirect_stdout(out):  # --help and --version print
            args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version
        return int(exit_.code or 0)
    if args.debug:  # aqido's own log lines (one per request, retries) on stderr
        logger = logging.getLogger("aqido")
        handler = logging.StreamHandler(err)
        handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
        previous = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        try:
            return _dispatch(args, out, err, env)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(previous)
    return _dispatch(args, out, err, env)


def _dispatch(args: argparse.Namespace, out: IO[str], err: IO[str], env: Mapping[str, str]) -> int:
    if _loop_running():  # asyncio.run raised a bare RuntimeError, its coroutine never awaited
        raise UsageError(
            "main() runs its own event loop, and this thread already runs one (a notebook "
            "cell, an async function): run the command in a shell (`!aqido ...` in a "
            "notebook), or use QidoRS or AsyncQidoRS"
        )
    is_tty = _isatty(out)
    if args.command == "demo":
        if args.resume and not args.out:
            raise UsageError("--resume needs --out")
        return _run(run_demo(args, out, err, is_tty))
    ask = getpass.getpass if _isatty(sys.stdin) else None
    if args.command == "crawl":
        urls = args.urls
        args.url = urls[0]
        for url in urls[1:]:
            reject_userinfo(url)
        if args.format == "jsonl":
            if len(urls) > 1:
                raise UsageError("several URLs need --format parquet (one JSONL file per archive)")
            if args.workers or args.scheduler or args.shards:
                raise UsageError("--workers, --scheduler and --shards need --format parquet")
        elif args.overwrite or args.force:  # a parquet directory is always resumed
            raise UsageError(
                "--overwrite and --force are for --format jsonl: a parquet --out is resumed "
                "(finished shards are kept); give a new directory to crawl again"
            )
        elif args.page_size:  # its shards' crawls do not page: refused, not ignored
            raise UsageError("--page-size is for --format jsonl, not parquet")
    options = client_options(args, env, ask)
    if args.insecure:
        err.write(INSECURE_WARNING)
        err.flush()
    if args.debug:  # the debug handler on "aqido" already prints every record, escaped
        return _dispatch_client(args, options, out, err, is_tty)
    with _log_warnings(err):
        return _dispatch_client(args, options, out, err, is_tty)


def _loop_running() -> bool:
    """Whether this thread runs an event loop now (``main`` called from async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _FirstOfEach(logging.Filter):
    """Lets through the first record of each server warning (by its text), the first 100.

    A server may send the same ``Warning`` with every response of a crawl: it is
    printed once (the crawl's summary counts them all).  The cap is
    ``aqido.stats.MAX_WARNINGS``, as for ``CrawlStats.warnings``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[object] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        text = args[-1] if isinstance(args, tuple) and args else record.getMessage()
        if text in self.seen or len(self.seen) >= MAX_WARNINGS:
            return False
        self.seen.add(text)
        return True


@contextmanager
def _log_warnings(err: IO[str]) -> Iterator[None]:
    """Print on stderr, escaped: the client's "not the standard's answer" warnings
    (``--profile``), and each distinct ``Warning`` header of the server's once."""
    plan_logger = logging.getLogger("aqido.plan")
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(SafeFormatter("aqido: warning: %(message)s"))
    server_logger = logging.getLogger("aqido.server")
    server_handler = logging.StreamHandler(err)
    server_handler.setLevel(logging.WARNING)
    server_handler.setFormatter(SafeFormatter("aqido: %(message)s"))
    server_handler.addFilter(_FirstOfEach())
    plan_logger.addHandler(handler)
    server_logger.addHandler(server_handler)
    try:
        yield
    finally:
        plan_logger.removeHandler(handler)
        server_logger.removeHandler(server_handler)


def _dispatch_client(
    args: argparse.Namespace,
    options: dict[str, Any],
    out: IO[str],
    err: IO[str],
    is_tty: bool,
) -> int:
    if args.command == "search":
        return _run(run_search(args, options, out, is_tty))
    if args.command == "probe":
        return _run(run_probe(args, options, out, is_tty))
    query = query_from_args(args)
    if args.format == "parquet":
        if args.workers and args.scheduler:
            raise UsageError("give --workers or --scheduler, not both")
        from aqido._cli.parquet import run_parquet

        return run_parquet(args, [check_url(u) for u in args.urls], query, options, out, err)
    status, _ = _run(
        run_crawl(
            args.url,
            query,
            depth=QueryLevel(args.depth.upper()),
            out_path=Path(args.out),
            resume=args.resume,
            overwrite=args.overwrite,
            force=args.force,
            progress=args.progress and _isatty(err),
            client_options=options,
            out=out,
            err=err,
            rich_ok=is_tty,
            page_size=args.page_size,
        )
    )
    return status

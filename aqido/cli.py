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
``--debug`` is given.  Whatever the server sends is shown through
:func:`aqido.terminal.printable` (control characters escaped, never read as rich
markup) and in the terminal's encoding; ``json``, ``jsonl`` and ``csv`` keep it exact.

The output looks best with ``pip install 'aqido[cli]'`` (rich tables and a live
progress bar); without rich the same information is printed as plain text.
This module is not imported by ``import aqido``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as _dt
import getpass
import io
import json
import logging
import math
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import (
    AsyncExitStack,
    aclosing,
    asynccontextmanager,
    contextmanager,
    redirect_stdout,
    suppress,
)
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

from aqido import __version__
from aqido.errors import (
    InvalidQueryError,
    QidoError,
    TransportError,
)
from aqido.progress import CrawlProgress
from aqido.query import ATTRIBUTE_FIELDS, BaseQuery, HierarchicalQuery, QueryLevel, RelationalQuery
from aqido.terminal import SafeStream, printable, unicode_safe

if TYPE_CHECKING:  # pragma: no cover
    from aqido.checkpoint import CrawlCheckpoint
    from aqido.client import AsyncQidoRS
    from aqido.results import Dataset, Study
    from aqido.stats import CrawlStats


_T = TypeVar("_T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130

FORMATS = ("table", "json", "jsonl", "csv")

#: Columns of the table format, by level (included fields are added after them).
TABLE_COLUMNS: dict[QueryLevel, tuple[str, ...]] = {
    QueryLevel.STUDY: (
        "PatientName",
        "PatientID",
        "StudyDate",
        "ModalitiesInStudy",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "StudyInstanceUID",
    ),
    QueryLevel.SERIES: (
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
        "SeriesInstanceUID",
    ),
    QueryLevel.INSTANCE: ("InstanceNumber", "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID"),
}
_SHORT_HEADINGS = {
    "NumberOfStudyRelatedSeries": "Series",
    "NumberOfStudyRelatedInstances": "Instances",
    "NumberOfSeriesRelatedInstances": "Instances",
    "ModalitiesInStudy": "Modalities",
}


class UsageError(Exception):
    """A bad command line: reported in one line, exit status 2."""


# --- argument parsing ----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, reported by :func:`main`)."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _date(text: str) -> _dt.date:
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        with suppress(ValueError):
            return _dt.datetime.strptime(text, fmt).date()
    raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD or YYYYMMDD): {text!r}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _seconds(text: str) -> float:
    """A timeout: a finite number of seconds above 0 (``inf``, ``nan``, 0 and less are refused)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text!r}")
    return value


def _query_options(parser: argparse.ArgumentParser, *, search: bool) -> None:
    group = parser.add_argument_group("query")
    if search:
        group.add_argument(
            "--level",
            choices=["study", "series", "instance"],
            default="study",
            help="what to search for (default: study)",
        )
        group.add_argument(
            "--relational",
            action="store_true",
            help="a relational query (/series, /instances, /studies/{uid}/instances): "
            "series or instances without naming their parents",
        )
    group.add_argument("--study", "--StudyInstanceUID", dest="StudyInstanceUID", metavar="UID")
    if search:
        group.add_argument(
            "--series", "--SeriesInstanceUID", dest="SeriesInstanceUID", metavar="UID"
        )
        group.add_argument("--sop", "--SOPInstanceUID", dest="SOPInstanceUID", metavar="UID")
    for name, example in (
        ("PatientName", "'DOE^J*'"),
        ("PatientID", "ID"),
        ("AccessionNumber", "NUMBER"),
        ("ModalitiesInStudy", "CT,MR"),
        ("StudyDescription", "TEXT"),
    ):
        group.add_argument(f"--{name}", metavar=example.strip("'"))
    if search:
        group.add_argument("--Modality", metavar="CT")
        group.add_argument("--SeriesDescription", metavar="TEXT")
    group.add_argument(
        "--date-from", type=_date, metavar="DATE", help="studies on or after DATE (YYYY-MM-DD)"
    )
    group.add_argument(
        "--date-to", type=_date, metavar="DATE", help="studies on or before DATE (YYYY-MM-DD)"
    )
    group.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEYWORD=VALUE",
        help="any other attribute (keyword or 8-hex-digit tag); repeatable",
    )
    group.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="FIELD",
        help="also return FIELD (keyword, tag or 'all'); repeatable",
    )
    group.add_argument("--fuzzy", action="store_true", help="ask for fuzzy person-name matching")
    group.add_argument(
        "--permissive-uids",
        action="store_true",
        help="accept UIDs that are not valid DICOM UIDs (leading zeros, letters): 1-128 "
        "letters, digits, '.', '-', '_' or '~', in the options and in the server's answers",
    )
    group.add_argument(
        "--page-size",
        type=_positive,
        metavar="N",
        help="page the results with limit/offset, N at a time (default: one request, paged "
        "only when the server says it truncated the answer)",
    )


def _connection_options(parser: argparse.ArgumentParser, *, concurrency: int) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--user",
        metavar="NAME",
        help="basic auth user (password: --password, AQIDO_PASSWORD, or a prompt)",
    )
    group.add_argument(
        "--password", metavar="SECRET", help="basic auth password (prefer AQIDO_PASSWORD)"
    )
    group.add_argument("--token", metavar="TOKEN", help="bearer token (default: $AQIDO_TOKEN)")
    group.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra request header; repeatable",
    )
    group.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="per-request timeout (default: 60)",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="retries of a failed request (default: 3)",
    )
    group.add_argument(
        "--concurrency",
        type=_positive,
        default=concurrency,
        metavar="N",
        help=f"requests in flight at once (default: {concurrency})",
    )
    group.add_argument(
        "--server-limit",
        type=_positive,
        metavar="N",
        help="the server's cap on results per response, if known (default: found by one "
        "follow-up request when an answer is as large as a cap would leave it)",
    )
    group.add_argument(
        "--profile",
        metavar="auto|FILE",
        help="the server's profile: 'auto' probes it first, FILE is one saved by "
        "'aqido probe --json'; answers then follow the standard where the server does not",
    )
    group.add_argument(
        "--strict-matching",
        action="store_true",
        help="with --profile: fail (exit 2) on a query the server cannot answer as the "
        "standard does, instead of warning",
    )
    _tls_and_size_options(group)


# --- TLS and response size (issue 15) ---

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _byte_size(text: str) -> int:
    """``512M``, ``1G``, ``1.5GiB`` or a number of bytes (binary units) -> bytes."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    value = float(match.group(1)) * _SIZE_UNITS[match.group(2)] if match else 0.0
    if not match or value < 1 or value > 2**62:
        raise argparse.ArgumentTypeError(f"not a size (e.g. 512M, 1G or bytes): {text!r}")
    return int(value)


def _tls_and_size_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--max-response-size",
        type=_byte_size,
        default=256 * 1024**2,
        metavar="SIZE",
        help="largest response accepted, after decompression, e.g. 512M or 1G (default: 256M)",
    )
    group.add_argument("--cacert", metavar="FILE", help="trust the CAs in this PEM bundle")
    group.add_argument("--cert", metavar="FILE", help="client certificate (PEM) for mutual TLS")
    group.add_argument("--key", metavar="FILE", help="the client certificate's key (PEM)")
    group.add_argument(
        "--insecure", action="store_true", help="do not verify TLS certificates (test servers!)"
    )


def _ssl_from_args(args: argparse.Namespace) -> Any:
    """The client's ``ssl=`` for --cacert, --cert, --key and --insecure (None: the default)."""
    import ssl

    if args.key and not args.cert:
        raise UsageError("--key needs --cert")
    if args.insecure and args.cacert:
        raise UsageError("--insecure and --cacert contradict each other")
    if not (args.cacert or args.cert or args.insecure):
        return None
    if args.insecure and not args.cert:
        return False
    try:
        context = ssl.create_default_context(cafile=args.cacert)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--cacert {args.cacert}: cannot load it ({exc})") from None
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        if args.cert:
            context.load_cert_chain(args.cert, args.key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--cert/--key: cannot load the client certificate ({exc})") from None
    return context


_INSECURE_WARNING = (
    "aqido: warning: --insecure: TLS certificates are not verified; anyone on the network "
    "path can read and change this traffic\n"
)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def build_parser() -> argparse.ArgumentParser:
    """The ``aqido`` argument parser (its errors raise :class:`UsageError`)."""
    parser = _Parser(
        prog="aqido",
        description="Search and crawl DICOMweb (QIDO-RS) archives.",
        epilog="Exit status: 0 ok, 1 server/network error, 2 usage error, "
        "3 crawl incomplete, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"aqido {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    search = commands.add_parser(
        "search",
        help="run one search and print the results",
        description="Run one QIDO-RS search (every page of it) and print the results: "
        "a table on a terminal, JSON Lines when piped.",
    )
    search.add_argument("url", metavar="URL", help="the QIDO-RS service root")
    _query_options(search, search=True)
    output = search.add_argument_group("output")
    output.add_argument("--limit", type=_positive, metavar="N", help="at most N results")
    output.add_argument(
        "--format",
        choices=FORMATS,
        help="output format (default: table on a terminal, jsonl otherwise)",
    )
    _connection_options(search, concurrency=4)
    _common_options(search)

    crawl = commands.add_parser(
        "crawl",
        help="crawl studies → series → instances into a JSON Lines file",
        description="Crawl every matching study with its series (and instances) into "
        "FILE.jsonl, one complete study per line, with a live progress bar. "
        "--resume continues an interrupted crawl: no duplicates, no gaps.",
    )
    crawl.add_argument(
        "urls",
        metavar="URL",
        nargs="+",
        help="the QIDO-RS service root (several only with --format parquet)",
    )
    _query_options(crawl, search=False)
    _crawl_options(crawl, out_required=True)
    scale = crawl.add_argument_group("parquet and Dask")
    scale.add_argument(
        "--format",
        choices=["jsonl", "parquet"],
        default="jsonl",
        help="jsonl: one line per study in FILE.jsonl (default); parquet: typed columns, one "
        "Parquet part per shard under the directory --out, one row per --depth item",
    )
    scale.add_argument(
        "--shards",
        type=_positive,
        metavar="N",
        help="with parquet: shards per archive, date ranges sized from counts (default: 1 in "
        "one process, 4 per Dask worker)",
    )
    scale.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="with parquet: run the shards on a local Dask cluster of N processes",
    )
    scale.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="with parquet: run the shards on this Dask scheduler (tcp://host:8786)",
    )
    _connection_options(crawl, concurrency=8)
    _common_options(crawl)

    probe = commands.add_parser(
        "probe",
        help="measure how an archive behaves: a server profile",
        description="Measure how a QIDO-RS archive answers where archives differ from the "
        "standard (matching, lists, ranges, paging, caps, statuses) with at most 60 small "
        "read-only requests, and print each finding with the request that showed it.",
    )
    probe.add_argument("url", metavar="URL", help="the QIDO-RS service root")
    probe.add_argument(
        "--json",
        metavar="FILE",
        help="write the profile as JSON to FILE (load it with ServerProfile.load)",
    )
    _connection_options(probe, concurrency=4)
    _common_options(probe)

    demo = commands.add_parser(
        "demo",
        help="crawl aqido's built-in demo archive (no server needed)",
        description="Start aqido's in-process demo archive (synthetic studies, on "
        "127.0.0.1, with a few injected transient failures), crawl it with progress, "
        "and print a summary.",
    )
    demo.add_argument("--studies", type=_positive, default=200, help="studies (default: 200)")
    demo.add_argument("--seed", type=int, default=1, help="synthetic data seed (default: 1)")
    demo.add_argument(
        "--fault-rate",
        type=_non_negative,
        default=0.02,
        metavar="P",
        help="share of requests answered 503/429 to show retries (default: 0.02)",
    )
    demo.add_argument(
        "--latency",
        type=_non_negative,
        default=0.002,
        metavar="SECONDS",
        help="server latency per request (default: 0.002)",
    )
    _crawl_options(demo, out_required=False)
    demo.add_argument(
        "--serve",
        action="store_true",
        help="do not crawl: keep the demo archive running (until Ctrl-C) to try "
        "`aqido search` and your own code against it",
    )
    demo.add_argument(
        "--concurrency",
        type=_positive,
        default=8,
        metavar="N",
        help="requests in flight at once (default: 8)",
    )
    _common_options(demo)
    return parser


def _crawl_options(parser: argparse.ArgumentParser, *, out_required: bool) -> None:
    group = parser.add_argument_group("crawl")
    group.add_argument(
        "--depth",
        choices=["study", "series", "instance"] if out_required else ["series", "instance"],
        default="instance",
        help="how deep to crawl (default: instance)",
    )
    group.add_argument(
        "--out",
        required=out_required,
        metavar="FILE.jsonl" if not out_required else "PATH",
        help="write one line per complete study here (a directory with --format parquet)",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted crawl in --out (skips the studies already there)",
    )
    group.add_argument(
        "--overwrite", action="store_true", help="replace --out if it exists (default: refuse)"
    )
    if out_required:  # the demo's archive is the same at every run, whatever its port
        group.add_argument(
            "--force",
            action="store_true",
            help="--resume even if --out records another server (or none: an older aqido's "
            "file); only for the same archive at a new address",
        )
    group.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no live progress display"
    )


# --- queries ------------------------------------------------------------------------------

#: Query fields that have their own option (``--PatientName``...): the query model's list.
_NAMED = ATTRIBUTE_FIELDS


def query_from_args(args: argparse.Namespace) -> BaseQuery:
    """The query the options describe; raises InvalidQueryError or UsageError when it is wrong."""
    fields: dict[str, Any] = {
        name: getattr(args, name) for name in _NAMED if getattr(args, name, None) is not None
    }
    filters: dict[str, str] = {}
    for item in args.filter:
        keyword, sep, value = item.partition("=")
        if not sep or not keyword.strip():
            raise UsageError(f"--filter wants KEYWORD=VALUE, not {item!r}")
        filters[keyword.strip()] = value
    includes = [part for item in args.include for part in item.split(",") if part]
    level = QueryLevel(getattr(args, "level", "study").upper())
    cls = RelationalQuery if getattr(args, "relational", False) else HierarchicalQuery
    return cls(
        query_level=level,
        min_study_date=args.date_from,
        max_study_date=args.date_to,
        include_fields=includes,
        filters=filters,
        fuzzymatching=args.fuzzy,
        permissive_uid=getattr(args, "permissive_uids", False),
        **fields,
    )


#: Control characters (C0 but HTAB, DEL, C1): never allowed in a header value or credential.
_CONTROL = frozenset(chr(c) for c in (*range(0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0)))
#: The characters of an HTTP header name (RFC 9110 ``token``).
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _unsafe_secret(value: str) -> bool:
    """Whether a credential or header value holds a control character (CR/LF would inject
    headers; a tab is harmless in a header but not in a credential) or a lone surrogate."""
    return any(c in _CONTROL or c == "\t" or "\ud800" <= c <= "\udfff" for c in value)


def _credentials(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    ask_password: Callable[[str], str] | None,
) -> tuple[str, str] | str | None:
    token = args.token or environ.get("AQIDO_TOKEN")
    user = args.user
    if user and args.token:
        raise UsageError("give --user or --token, not both")
    if user:
        if ":" in user or _unsafe_secret(user):
            raise UsageError("--user must not contain ':' or control characters")
        password = args.password or environ.get("AQIDO_PASSWORD")
        if password is None:
            if ask_password is None:
                raise UsageError(
                    "--user needs a password: --password, AQIDO_PASSWORD, or run in a terminal "
                    "to be asked"
                )
            password = ask_password(f"password for {user}: ")
        if _unsafe_secret(password):
            raise UsageError(
                "the password holds a control character (a line break?); it is not shown here"
            )
        return (user, password)
    if args.password:
        raise UsageError("--password needs --user")
    if token and _unsafe_secret(token):
        raise UsageError(
            "the token (--token or AQIDO_TOKEN) holds a control character (a line break?); "
            "it is not shown here"
        )
    return token or None


def _headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition(":")
        name, value = name.strip(), value.strip(" \t")
        if not sep or not name or any(c not in _TOKEN_CHARS for c in name):
            raise UsageError("--header wants 'NAME: VALUE' (the value is not shown here)")
        if any(c in _CONTROL or "\ud800" <= c <= "\udfff" for c in value):
            raise UsageError(
                f"--header {name}: the value holds a control character (a line break?); "
                "it is not shown here"
            )
        headers[name] = value
    return headers


# --- output ---------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A result value as text for tables and CSV: '' for empty, ISO dates, ``\\`` between values."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        if value and not isinstance(value[0], str | int | float) and hasattr(value[0], "keys"):
            return f"[{len(value)} item{'s' if len(value) != 1 else ''}]"
        return "\\".join(format_value(v) for v in value)
    if isinstance(value, _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, float) and hasattr(value, "text"):
        return str(value.text)
    return str(value)


def _columns(results: Sequence[Dataset], level: QueryLevel, includes: Iterable[str]) -> list[str]:
    columns = list(TABLE_COLUMNS[level])
    wanted = [name for name in includes if name.lower() != "all"]
    seen = set(columns)
    for name in wanted:
        keyword = _keyword(name)
        if keyword not in seen:
            columns.append(keyword)
            seen.add(keyword)
    if any(name.lower() == "all" for name in includes):
        for result in results:
            for keyword in result:
                if keyword not in seen:
                    columns.append(keyword)
                    seen.add(keyword)
    return columns


def _keyword(name: str) -> str:
    from aqido import dictionary

    try:
        return dictionary.resolve(name)[1] or name
    except (KeyError, ValueError):
        return name


def _all_keywords(results: Sequence[Dataset]) -> list[str]:
    keywords: dict[str, None] = {}
    for result in results:
        for keyword in result:
            keywords.setdefault(keyword, None)
    return list(keywords)


def write_results(
    results: Sequence[Dataset],
    fmt: str,
    out: IO[str],
    *,
    level: QueryLevel = QueryLevel.STUDY,
    includes: Iterable[str] = (),
    rich_ok: bool = True,
) -> None:
    """Write search results to ``out`` as ``table``, ``json``, ``jsonl`` or ``csv``.

    json/jsonl are the DICOM JSON objects exactly as received; csv has one
    column per keyword returned (values as in :func:`format_value`); the table
    shows the usual columns of the level plus the included fields, every value
    passed through :func:`aqido.terminal.printable` (control characters escaped,
    never read as rich markup).  On a stream whose encoding cannot hold every
    character (``PYTHONIOENCODING=ascii``), JSON escapes them (``\\u00e9``: the
    data stay exact) and the table and csv write them as ``\\xe9``.
    """
    ascii = not unicode_safe(getattr(out, "encoding", None))
    out = _safe(out)
    if fmt == "jsonl":
        for result in results:
            out.write(_json_line(result.to_json(), ascii=ascii))
    elif fmt == "json":
        json.dump([r.to_json() for r in results], out, ensure_ascii=ascii, indent=2)
        out.write("\n")
    elif fmt == "csv":
        keywords = _all_keywords(results)
        writer = csv.writer(out, lineterminator="\n")
        # Python < 3.12 leaves a lone CR unquoted, which readers take for a line end
        quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(keywords)
        for result in results:
            row = [format_value(result.get(k)) for k in keywords]
            (quoted if any("\r" in cell for cell in row) else writer).writerow(row)
    elif fmt == "table":
        columns = _columns(results, level, includes)
        rows = [[printable(format_value(r.get(c))) for c in columns] for r in results]
        headings = [_SHORT_HEADINGS.get(c, c) for c in columns]
        _print_table(
            headings,
            rows,
            out,
            title=f"{len(rows)} {level.name.lower()} result(s)",
            rich_ok=rich_ok,
            numeric=("Series", "Instances", "SeriesNumber", "InstanceNumber"),
        )
    else:  # pragma: no cover - argparse restricts the choices
        raise UsageError(f"unknown format {fmt!r}")


def _safe(out: IO[str]) -> IO[str]:
    """``out`` wrapped in a :class:`~aqido.terminal.SafeStream` (unless it is one)."""
    return out if isinstance(out, SafeStream) else cast(IO[str], SafeStream(out))


def _json_line(item: Any, *, ascii: bool = False) -> str:
    return json.dumps(item, ensure_ascii=ascii, separators=(",", ":")) + "\n"


def _have_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _print_table(
    headings: Sequence[str],
    rows: Sequence[Sequence[str]],
    out: IO[str],
    *,
    title: str = "",
    rich_ok: bool = True,
    numeric: Iterable[str] = (),
) -> None:
    """A table: rich's on a terminal when rich is installed, aligned plain text otherwise.

    Every heading and cell goes through :func:`aqido.terminal.printable` (one
    line each, no control character) and reaches rich as a ``Text``, never as
    markup; what the stream's encoding lacks is written as ``\\xe9`` escapes.
    """
    right = set(numeric)
    out = _safe(out)
    safe_rows = [[printable(cell) for cell in row] for row in rows]
    if rich_ok and _have_rich():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(printable(title)) if title else None, title_justify="left")
        for heading in headings:
            table.add_column(
                Text(printable(heading)),
                justify="right" if heading in right else "left",
                overflow="fold",
            )
        for row in safe_rows:
            table.add_row(*(Text(cell) for cell in row))
        Console(file=out, soft_wrap=False).print(table)
        return
    rows = safe_rows
    headings = [printable(heading) for heading in headings]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headings)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if heading in right else cell.ljust(width)
            for cell, width, heading in zip(cells, widths, headings, strict=True)
        ]
        return "  ".join(parts).rstrip() + "\n"

    if title:
        out.write(title + "\n")
    out.write(line(headings))
    out.write(line(["-" * w for w in widths]))
    for row in rows:
        out.write(line(row))


# --- the client -----------------------------------------------------------------------------


@asynccontextmanager
async def _open_client(url: str, **options: Any) -> AsyncIterator[AsyncQidoRS]:
    """An open client for ``url``: ``options`` are the client's keyword arguments
    (:func:`_client_options`); an option the client refuses is a usage error."""
    from aqido.client import AsyncQidoRS

    try:
        client = AsyncQidoRS(url, **options)
    except (ValueError, OSError) as exc:  # a bad option, an unreadable --profile FILE
        raise UsageError(f"{exc}") from exc
    async with client:
        yield client


def _check_url(url: str) -> str:
    """The client's form of ``url``; UsageError unless it can be a QIDO-RS service root."""
    from aqido.client import AsyncQidoRS

    try:
        return AsyncQidoRS(url).url  # validates; opens nothing until first used
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _reject_userinfo(url: str) -> None:
    """Refuse a URL with ``user:password@`` (with or without a scheme) without echoing it.

    Credentials in a URL end up in shell history, process lists and logs; the
    command line takes them from ``--user``/``AQIDO_PASSWORD`` or ``--token`` only.
    """
    rest = (url.split("://", 1)[1] if "://" in url else url).lstrip("/")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        raise UsageError(
            "the URL must not hold credentials (user:password@host); give them with --user "
            "and AQIDO_PASSWORD, or --token (the URL is not shown here)"
        )


def _client_options(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    ask_password: Callable[[str], str] | None,
) -> dict[str, Any]:
    _reject_userinfo(args.url)
    if args.retries < 0:
        raise UsageError(f"--retries must not be negative, not {args.retries}")
    # The AsyncQidoRS keyword arguments the options give: the one place they are mapped.
    return {
        "auth": _credentials(args, environ, ask_password),
        "headers": _headers(args.header),
        "timeout": args.timeout or None,
        "retries": args.retries,
        "max_concurrency": args.concurrency,
        "server_limit": args.server_limit,
        "profile": getattr(args, "profile", None),
        "strict_matching": getattr(args, "strict_matching", False),
        "permissive_uid": getattr(args, "permissive_uids", False),
        "max_response_bytes": args.max_response_size,
        "ssl": _ssl_from_args(args),
    }


# --- search --------------------------------------------------------------------------------


async def _run_search(
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
                out.write(_json_line(result.to_json(), ascii=ascii))
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
        )
    return EXIT_OK


# --- probe ---------------------------------------------------------------------------------


def _server_text(text: str) -> str:
    """Text that came from a server, made safe to print: control characters escaped.

    Every server-provided string the probe table shows passes through here (to be
    pointed at the CLI's shared escaping function when it exists).
    """
    return "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


async def _run_probe(
    args: argparse.Namespace, options: Mapping[str, Any], out: IO[str], is_tty: bool
) -> int:
    from aqido.probe import MAX_IN_FLIGHT, probe_report
    from aqido.profile import ServerProfile

    async with _open_client(args.url, **options) as client:
        report = await probe_report(client, max_in_flight=min(MAX_IN_FLIGHT, args.concurrency))
        url = client.url
    ctx = report.context
    names = {uid: name for uid, name in ((ctx.a, "{A}"), (ctx.b, "{B}")) if uid} if ctx else {}
    use_rich = is_tty and _have_rich()

    def cell(text: str) -> str:
        for uid, name in names.items():
            text = text.replace(uid, name)
        shown = _server_text(text)
        if use_rich:
            from rich.markup import escape

            shown = escape(shown)
        return shown

    rows = [[f.capability, cell(f.finding), cell(f.request)] for f in report.findings]
    _print_table(
        ["capability", "finding", "request"],
        rows,
        out,
        title=f"aqido probe {_server_text(url)} ({report.requests} requests)",
        rich_ok=is_tty,
    )
    if names:
        legend = ", ".join(f"{name} = {_server_text(uid)}" for uid, name in names.items())
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
        out.write(f"note: {_server_text(note)}\n")
    if args.json:
        report.profile.save(args.json)
        out.write(f"profile written to {args.json}\n")
    return EXIT_OK


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
        if _have_rich():
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
    far; series and instances fetched; requests per second; retries (transient
    failures retried); errors (parts that failed for good).
    """
    rate = stats.requests / max(stats.elapsed, 1e-9)
    errors = len(stats.failures)
    return (
        f"studies {_studies_done(stats)}/{stats.items['STUDY']} · "
        f"series {stats.items['SERIES']} · instances {stats.items['INSTANCE']} · "
        f"{rate:.0f} req/s · {stats.retries} retr{'y' if stats.retries == 1 else 'ies'} · "
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

    Another run holding the file's lock is a CheckpointError (exit 1); a file
    of another crawl or server, or a damaged one, is a usage error (exit 2).
    The lock is held (the checkpoint left open, the caller closes it) for the
    crawl that follows.
    """
    from aqido.errors import CheckpointError

    path = checkpoint.path
    exists = path.exists() and path.stat().st_size > 0
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
        checkpoint._acquire()  # a second writer fails here, before anything is touched
        if exists and not resume:
            path.unlink()  # --overwrite, under the lock
        checkpoint.open(query, depth, server=server)  # validates header, server, every line
    except CheckpointError as exc:
        if isinstance(exc.__cause__, TimeoutError):  # the lock: another run writes the file
            raise
        raise UsageError(str(exc)) from None
    if cut:
        err.write(f"aqido: {path}: dropped an incomplete last line (an interrupted write)\n")


async def _run_crawl(
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
    named on stderr at the end (exit 3).  If nothing at all could be listed
    (unreachable server, 401), that error is raised instead (exit 1).
    """
    from aqido.checkpoint import CrawlCheckpoint
    from aqido.stats import CrawlStats

    if query.query_level is not QueryLevel.STUDY:  # pragma: no cover - the parser ensures it
        raise UsageError("crawl starts from a study-level query")
    server = _check_url(url)  # before any file is touched
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
        for failure in stats.failures:
            err.write(
                f"aqido: could not fetch {printable(failure.query)}: {_one_line(failure.error)}\n"
            )
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
    rows.append(["elapsed", f"{elapsed:.2f} s"])
    if out_path is not None:
        rows.append(["output", str(out_path)])
    _print_table(["crawl", ""], rows, out, rich_ok=rich_ok)


# --- demo ----------------------------------------------------------------------------------


async def _run_demo(args: argparse.Namespace, out: IO[str], err: IO[str], is_tty: bool) -> int:
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
            await asyncio.Event().wait()  # until cancelled (Ctrl-C)
    demo = demo_archive(args.studies, seed=args.seed, latency=args.latency, faults=faults)
    async with demo as archive:
        out.write(
            f"aqido demo: an in-process archive with {args.studies} synthetic studies at "
            f"{archive.url}\n"
        )
        out.flush()
        status, _ = await _run_crawl(
            archive.url,
            HierarchicalQuery(),
            depth=QueryLevel(args.depth.upper()),
            out_path=Path(args.out) if args.out else None,
            resume=args.resume,
            overwrite=args.overwrite,
            force=True,  # the demo archive is the same at every run, on a new port
            progress=args.progress and _isatty(err),
            client_options={"timeout": 30.0, "retries": 4, "max_concurrency": args.concurrency},
            out=out,
            err=err,
            rich_ok=is_tty,
            on_study=tally,
        )
    rows = [
        [
            modality,
            str(by_modality[modality]),
            str(series_by_modality[modality]),
            str(instances_by_modality[modality]),
        ]
        for modality in sorted(series_by_modality)
    ]
    _print_table(
        ["modality", "studies", "series", "instances"],
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
    if is_tty and not _have_rich():
        out.write("Tip: pip install 'aqido[cli]' for rich tables and a live progress bar.\n")
    return status


# --- entry point ---------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    """An error as one safe line: whitespace collapsed, control characters escaped."""
    text = " ".join(str(error).split())
    if isinstance(error, TransportError):
        cause = error.__cause__
        reason = " ".join(str(cause).split()) if cause is not None else ""
        text = f"{text} ({reason})" if reason and reason not in text else text
    return printable(text or type(error).__name__)


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
    out = cast(IO[str], SafeStream(stdout if stdout is not None else sys.stdout))
    err = cast(IO[str], SafeStream(stderr if stderr is not None else sys.stderr))
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
        err.write(f"aqido: error: {_one_line(exc)}\n")
        return EXIT_USAGE
    except QidoError as exc:
        if debug:
            raise
        what = "cannot reach the server" if isinstance(exc, TransportError) else "error"
        err.write(f"aqido: {what}: {_one_line(exc)}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("\naqido: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `aqido search ... | head`: the reader has had enough
        with suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # the output file: permissions, disk full
        if debug:
            raise
        err.write(f"aqido: error: {printable(exc)}\n")
        return EXIT_ERROR


class _SafeFormatter(logging.Formatter):
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
        handler.setFormatter(_SafeFormatter("%(levelname)s %(name)s: %(message)s"))
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
    is_tty = _isatty(out)
    if args.command == "demo":
        if args.resume and not args.out:
            raise UsageError("--resume needs --out")
        return _run(_run_demo(args, out, err, is_tty))
    ask = getpass.getpass if _isatty(sys.stdin) else None
    if args.command == "crawl":
        urls = args.urls
        args.url = urls[0]
        for url in urls[1:]:
            _reject_userinfo(url)
        if args.format == "jsonl":
            if len(urls) > 1:
                raise UsageError("several URLs need --format parquet (one JSONL file per archive)")
            if args.workers or args.scheduler or args.shards:
                raise UsageError("--workers, --scheduler and --shards need --format parquet")
    options = _client_options(args, env, ask)
    if args.insecure:
        err.write(_INSECURE_WARNING)
        err.flush()
    with _plan_warnings(err):
        return _dispatch_client(args, options, out, err, is_tty)


@contextmanager
def _plan_warnings(err: IO[str]) -> Iterator[None]:
    """Print the client's "not the standard's answer" warnings (``--profile``) on stderr."""
    import logging

    plan_logger = logging.getLogger("aqido.plan")
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_SafeFormatter("aqido: warning: %(message)s"))
    plan_logger.addHandler(handler)
    try:
        yield
    finally:
        plan_logger.removeHandler(handler)


def _dispatch_client(
    args: argparse.Namespace,
    options: dict[str, Any],
    out: IO[str],
    err: IO[str],
    is_tty: bool,
) -> int:
    if args.command == "search":
        return _run(_run_search(args, options, out, is_tty))
    if args.command == "probe":
        return _run(_run_probe(args, options, out, is_tty))
    query = query_from_args(args)
    if args.format == "parquet":
        if args.workers and args.scheduler:
            raise UsageError("give --workers or --scheduler, not both")
        from aqido._cli_parquet import run_parquet

        return run_parquet(args, [_check_url(u) for u in args.urls], query, options, out, err)
    status, _ = _run(
        _run_crawl(
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


def _isatty(stream: IO[str] | io.TextIOBase | Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False

"""The ``aqido`` argument parser, and the query and client options its arguments give.

Every client option is mapped to :class:`~aqido.client.AsyncQidoRS`'s keyword
arguments in one place, :func:`client_options`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import (
    Callable,
    Mapping,
    Sequence,
)
from typing import Any

from aqido import __version__
from aqido._cli import values
from aqido._cli.common import FORMATS, UsageError
from aqido.query import ATTRIBUTE_FIELDS, BaseQuery, HierarchicalQuery, QueryLevel, RelationalQuery

# --- argument parsing ----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, reported by :func:`main`)."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


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
        "--date-from",
        type=values.date,
        metavar="DATE",
        help="studies on or after DATE (YYYY-MM-DD)",
    )
    group.add_argument(
        "--date-to", type=values.date, metavar="DATE", help="studies on or before DATE (YYYY-MM-DD)"
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
        type=values.positive,
        metavar="N",
        help="page the results with limit/offset, N at a time (default: one request, paged "
        "only when the server says it truncated the answer)"
        + ("" if search else "; not with --format parquet"),
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
        type=values.seconds,
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
        type=values.concurrency,
        default=concurrency,
        metavar="N|auto",
        help=f"requests in flight at once, or 'auto' to adapt to the server (default: "
        f"{concurrency})",
    )
    group.add_argument(
        "--server-limit",
        type=values.positive,
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


def _tls_and_size_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--max-response-size",
        type=values.byte_size,
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


INSECURE_WARNING = (
    "aqido: warning: --insecure: TLS certificates are not verified; anyone on the network "
    "path can read and change this traffic\n"
)


def _common_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: not given after the command, it leaves the --debug given before it
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and debug logs (also accepted before the command)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``aqido`` argument parser (its errors raise :class:`UsageError`)."""
    parser = _Parser(
        prog="aqido",
        description="Search and crawl DICOMweb (QIDO-RS) archives.",
        epilog="Exit status: 0 ok, 1 server/network error, 2 usage error, "
        "3 crawl incomplete, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"aqido {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
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
    output.add_argument("--limit", type=values.positive, metavar="N", help="at most N results")
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
        type=values.positive,
        metavar="N",
        help="with parquet: shards per archive, date ranges sized from counts (default: 1 in "
        "one process, 4 per Dask worker)",
    )
    scale.add_argument(
        "--workers",
        type=values.positive,
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
        "standard (matching, lists, ranges, paging, caps, statuses) with at most 66 small "
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
    demo.add_argument(
        "--studies",
        type=values.demo_studies,
        default=200,
        metavar="N",
        help=f"synthetic studies, 1 to {values.MAX_DEMO_STUDIES:,} (default: 200)",
    )
    demo.add_argument("--seed", type=int, default=1, help="synthetic data seed (default: 1)")
    demo.add_argument(
        "--fault-rate",
        type=values.probability,
        default=0.02,
        metavar="P",
        help="share of requests answered 503/429 to show retries, 0 to 1 (default: 0.02)",
    )
    demo.add_argument(
        "--latency",
        type=values.latency,
        default=0.002,
        metavar="SECONDS",
        help="server latency per request, at most 10 (default: 0.002)",
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
        type=values.concurrency,
        default=8,
        metavar="N|auto",
        help="requests in flight at once, or 'auto' (default: 8)",
    )
    _common_options(demo)
    return parser


def _crawl_options(parser: argparse.ArgumentParser, *, out_required: bool) -> None:
    group = parser.add_argument_group("crawl")
    # out_required: crawl's options, which has --format parquet; else the demo's, which has not
    group.add_argument(
        "--depth",
        choices=["study", "series", "instance"],
        default="instance",
        help="how deep to crawl (default: instance)",
    )
    group.add_argument(
        "--out",
        required=out_required,
        metavar="FILE.jsonl" if not out_required else "PATH",
        help="write one line per complete study here"
        + (" (a directory with --format parquet)" if out_required else ""),
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted crawl in --out (skips the studies already there)",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it exists (default: refuse"
        + ("; not with --format parquet, which resumes)" if out_required else ")"),
    )
    if out_required:  # the demo's archive is the same at every run, whatever its port
        group.add_argument(
            "--force",
            action="store_true",
            help="--resume even if --out records another server (or none: an older aqido's "
            "file); only for the same archive at a new address (not with --format parquet)",
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
        keyword = keyword.strip()
        if filters.get(keyword, value) != value:  # the last one would win, unseen
            raise UsageError(
                f"--filter {keyword} is given twice ({filters[keyword]!r} and {value!r}): "
                "give it once (a list is one value: KEYWORD=A,B)"
            )
        filters[keyword] = value
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
            try:
                password = ask_password(f"password for {user}: ")
            except EOFError:  # Ctrl-D at the prompt
                raise UsageError("--user needs a password: none was typed") from None
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


def check_url(url: str) -> str:
    """The client's form of ``url``; UsageError unless it can be a QIDO-RS service root."""
    from aqido.client import AsyncQidoRS

    try:
        return AsyncQidoRS(url).url  # validates; opens nothing until first used
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def reject_userinfo(url: str) -> None:
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


def client_options(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    ask_password: Callable[[str], str] | None,
) -> dict[str, Any]:
    reject_userinfo(args.url)
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

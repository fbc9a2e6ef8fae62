"""Result output of ``aqido search``: tables (rich or plain) and data formats (json, jsonl, csv).

Tables are display: server text goes through :func:`aqido.terminal.printable`.
JSON, JSON Lines and CSV are data and keep it exact, but on a terminal: there JSON
writes a control or format character as a ``\\u`` escape (the same JSON value) and
CSV's cells go through :func:`~aqido.terminal.printable` too (CSV has no escape).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import re
from collections.abc import (
    Iterable,
    Sequence,
)
from typing import IO, TYPE_CHECKING, Any, cast

from aqido._cli.common import SHORT_HEADINGS, TABLE_COLUMNS, UsageError, isatty
from aqido._json import dumps
from aqido.query import QueryLevel
from aqido.terminal import _UNSAFE, SafeStream, printable, unicode_safe
from aqido.values import is_empty

if TYPE_CHECKING:  # pragma: no cover
    from aqido.results import Dataset


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


def cell_text(result: Dataset, name: str) -> str:
    """``result``'s value of ``name`` as a table or CSV cell: :func:`format_value` of the
    typed value, or, where that would drop a value the server sent (one not readable for
    its VR, such as a StudyDate of ``2024XXXX``, or of another type than the attribute's),
    the values exactly as received, ``\\`` between them."""
    value = result.get(name)
    try:
        element = result.element(name)
    except (KeyError, ValueError):  # not in the result (or not a name): nothing was dropped
        return format_value(value)
    sent = [raw for raw in element.values if not is_empty(raw)]
    typed = value if isinstance(value, tuple) else (value,)
    if element.vr == "SQ" or len(sent) <= sum(item is not None for item in typed):
        return format_value(value)
    return "\\".join(_raw_text(raw) for raw in element.values)


def _raw_text(raw: Any) -> str:
    """One JSON value as received, as text (a PN object as its ``=``-joined groups)."""
    if raw is None:
        return ""
    if isinstance(raw, dict):
        groups = (raw.get(group) for group in ("Alphabetic", "Ideographic", "Phonetic"))
        return "=".join("" if g is None else str(g) for g in groups).rstrip("=")
    return str(raw)


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
    terminal: bool | None = None,
) -> None:
    """Write search results to ``out`` as ``table``, ``json``, ``jsonl`` or ``csv``.

    json/jsonl are the DICOM JSON objects exactly as received; csv has one
    column per keyword returned (values as in :func:`cell_text`: a value not
    readable for its VR is written as received, never dropped); the table
    shows the usual columns of the level plus the included fields, every value
    passed through :func:`aqido.terminal.printable` (control characters escaped,
    never read as rich markup).  On a stream whose encoding cannot hold every
    character (``PYTHONIOENCODING=ascii``), JSON escapes them (``\\u00e9``: the
    data stay exact) and the table and csv write them as ``\\xe9``.

    ``terminal`` (default: whether ``out`` is one): no control character the server
    sent reaches it raw.  JSON writes the C1 controls, DEL and format characters as
    ``\\u009b`` escapes (still the exact data: JSON escapes the C0 controls anyway);
    CSV passes every cell and heading through :func:`~aqido.terminal.printable`, as
    the table does (CSV has no escape syntax: write to a file for exact CSV).
    """
    ascii = not unicode_safe(getattr(out, "encoding", None))
    display = isatty(out) if terminal is None else terminal
    out = _safe(out)
    if fmt == "jsonl":
        for result in results:
            out.write(json_line(result.to_json(), ascii=ascii, terminal=display))
    elif fmt == "json":
        items = [_json_text(r.to_json(), ascii=ascii, indent=2) for r in results]
        # json.dump's layout of the list (indent=2), an item at a time
        text = "[\n  " + ",\n  ".join(i.replace("\n", "\n  ") for i in items) + "\n]"
        out.write((_terminal_json(text) if display else text) if items else "[]")
        out.write("\n")
    elif fmt == "csv":
        keywords = _all_keywords(results)
        writer = csv.writer(out, lineterminator="\n")
        # Python < 3.12 leaves a lone CR unquoted, which readers take for a line end
        quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
        shown = printable if display else str  # a terminal gets no control character
        writer.writerow([shown(k) for k in keywords])
        for result in results:
            row = [shown(cell_text(result, k)) for k in keywords]
            (quoted if any("\r" in cell for cell in row) else writer).writerow(row)
    elif fmt == "table":
        columns = _columns(results, level, includes)
        rows = [[printable(cell_text(r, c)) for c in columns] for r in results]
        headings = [SHORT_HEADINGS.get(c, c) for c in columns]
        print_table(
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


def json_line(item: Any, *, ascii: bool = False, terminal: bool = False) -> str:
    """``item`` as one line of JSON Lines (compact); ``terminal``: as :func:`write_results`."""
    text = _json_text(item, ascii=ascii)
    return (_terminal_json(text) if terminal else text) + "\n"


def _json_text(item: Any, *, ascii: bool, indent: int | None = None) -> str:
    """``json.dumps(item)``, compact or indented, of an item nested as deep as decoding allows.

    ``json.dumps`` recurses: an item of SQ in SQ... 341 levels deep (which the decoders
    accept) is a ``RecursionError`` there, and is written by :func:`aqido._json.dumps`
    instead (the same value, with its default separators, not indented).
    """
    try:
        compact = (",", ":") if indent is None else None
        return json.dumps(item, ensure_ascii=ascii, indent=indent, separators=compact)
    except RecursionError:
        return dumps(item, ensure_ascii=ascii)


def _json_escape(match: re.Match[str]) -> str:
    char = match.group()
    if char < " ":  # JSON escapes the C0 controls in strings: this is a layout line break
        return char
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON writes a character beyond the BMP
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _terminal_json(text: str) -> str:
    """JSON ``text`` with each character :func:`~aqido.terminal.printable` escapes as a
    ``\\u`` escape: the same JSON value, with nothing a terminal would act on."""
    return _UNSAFE.sub(_json_escape, text)


def have_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def print_table(
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
    if rich_ok and have_rich():
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
        out.write(printable(title) + "\n")
    out.write(line(headings))
    out.write(line(["-" * w for w in widths]))
    for row in rows:
        out.write(line(row))

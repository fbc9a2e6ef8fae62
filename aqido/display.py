"""Rich display of results in notebooks: compact HTML tables and study cards.

Jupyter calls ``_repr_html_``: a ``Dataset``, ``Instance`` or ``Series``
shows as a small table (a series with its instances), a ``Study`` as a card
with its series, and a list of results (``html_table``) as one row per
result.  Every value is HTML-escaped (a hostile ``PatientName`` such as
``<script>`` shows as text) and has its control and format characters (ESC,
bidi overrides, zero-width characters) shown as escapes, as the command line
shows them (:func:`aqido.terminal.printable`); long values are cut to
``max_chars`` (the value, up to :data:`MAX_TITLE` characters, in the cell's
tooltip), and tables stop after ``max_rows`` rows with a "… N more" line.

``short_repr`` is the plain ``repr`` of ``Study``/``Series``/``Instance``:
the few attributes that identify a result, and how many children it has;
``dataset_repr`` that of any other ``Dataset``: its first attributes.  Each
value in them is cut to :data:`MAX_REPR` characters, so a ``repr`` stays short
whatever the server sent.

Pure string building: no third-party imports.
"""

from __future__ import annotations

import datetime
import html
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from aqido.terminal import printable
from aqido.values import DSFloat, PersonName

if TYPE_CHECKING:  # pragma: no cover
    from aqido._dataset import Dataset


#: Attributes left out of compact tables (still in the mapping API and ``to_records``).
HIDDEN = frozenset(
    {"SpecificCharacterSet", "RetrieveURL", "InstanceAvailability", "TimezoneOffsetFromUTC"}
)

#: Longest tooltip of a cut cell, and longest value in a plain ``repr``, in characters.
MAX_TITLE, MAX_REPR = 1000, 80
#: Most columns ``html_table`` shows when not given ``columns`` (results with thousands of
#: distinct private tags would make a table of rows × thousands of cells).
MAX_COLUMNS = 100

_STYLE = (
    "<style>"
    ".aqido table{border-collapse:collapse;font-size:90%}"
    ".aqido th,.aqido td{padding:2px 6px;text-align:left;vertical-align:top}"
    ".aqido .aqido-head{margin:2px 0 4px 0}"
    ".aqido .aqido-muted{color:#888}"
    "</style>"
)

#: The identifying attributes shown by ``short_repr`` and card headings, per class name.
_KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "Study": ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "ModalitiesInStudy"),
    "Series": ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription"),
    "Instance": ("SOPInstanceUID", "InstanceNumber", "SOPClassUID"),
}

_SERIES_COLUMNS = (
    "SeriesNumber",
    "Modality",
    "SeriesDescription",
    "NumberOfSeriesRelatedInstances",
    "SeriesInstanceUID",
)
_INSTANCE_COLUMNS = ("InstanceNumber", "SOPClassUID", "Rows", "Columns", "SOPInstanceUID")


def _text(value: Any) -> str:
    """A value as display text (not escaped)."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        return "\\".join(_text(v) for v in value)
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, DSFloat):
        return value.text
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Mapping):  # a sequence item (a Dataset)
        return f"({len(value)} attributes)"
    return str(value)


def _cut(text: str, max_chars: int) -> str:
    """``text``, or its start and ``…`` when it is longer than ``max_chars``."""
    return text if len(text) <= max_chars else text[: max(1, max_chars - 1)] + "…"


def _shown(value: Any) -> str:
    """A value as display text, control and format characters escaped (not HTML-escaped)."""
    return printable(_text(value))


def _cell(value: Any, max_chars: int, tag: str = "td") -> str:
    text = _shown(value)
    if len(text) > max_chars:
        title = html.escape(_cut(text, MAX_TITLE))
        return f'<{tag} title="{title}">{html.escape(_cut(text, max_chars))}</{tag}>'
    return f"<{tag}>{html.escape(text)}</{tag}>"


def _columns_of(results: Sequence[Dataset]) -> list[str]:
    seen: dict[str, None] = {}
    for ds in results:
        for name in ds:
            if name not in HIDDEN and ds.element(name).vr != "SQ":
                seen[name] = None
    return list(seen)


def _children(ds: Dataset) -> tuple[str, Sequence[Dataset]] | None:
    """``("series", study.series)`` for a Study, ``("instances", ...)`` for a Series, else None.

    By the models' child fields, so that this module needs none of the result
    modules (which import it for ``repr`` and ``_repr_html_``).
    """
    for field in ("series", "instances"):
        if hasattr(type(ds), field):
            return field, getattr(ds, field)
    return None


def html_table(
    results: Iterable[Dataset],
    *,
    columns: Sequence[str] | None = None,
    max_rows: int = 50,
    max_chars: int = 64,
    _wrap: bool = True,
) -> str:
    """Return an HTML table with one row per result (Jupyter shows it as is).

    ``columns``: the attributes to show (default: every returned attribute but
    sequences and the ones in :data:`HIDDEN`, the first :data:`MAX_COLUMNS` of
    them; the caption says how many more).  When results have children
    attached (a crawl's studies), a ``series``/``instances`` column counts them.
    """
    items = list(results)
    names = list(columns) if columns is not None else _columns_of(items[:max_rows])
    hidden = max(0, len(names) - MAX_COLUMNS) if columns is None else 0
    names = names[: len(names) - hidden]
    extra = sorted({c[0] for ds in items if (c := _children(ds)) is not None and c[1]})
    head = "".join(_cell(name, max_chars, "th") for name in (*names, *extra))
    rows = []
    for ds in items[:max_rows]:
        cells = [_cell(ds.get(name), max_chars) for name in names]
        children = _children(ds)
        for kind in extra:
            count = len(children[1]) if children is not None and children[0] == kind else None
            cells.append(_cell(count, max_chars))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    if len(items) > max_rows:
        span = max(1, len(names) + len(extra))
        rows.append(
            f'<tr><td colspan="{span}" class="aqido-muted">… {len(items) - max_rows} more</td></tr>'
        )
    caption = f"{len(items)} result{'' if len(items) == 1 else 's'}"
    if hidden:
        caption += f", {hidden} more columns not shown (pick them with columns=[...])"
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    if not _wrap:
        return table
    return f'<div class="aqido">{_STYLE}<div class="aqido-muted">{caption}</div>{table}</div>'


def _kv_table(ds: Dataset, max_chars: int, max_rows: int) -> str:
    rows = []
    for name in itertools.islice(ds, max_rows):
        elem = ds.element(name)
        value: Any = f"({len(ds[name])} items)" if elem.vr == "SQ" else ds[name]
        rows.append(f"<tr>{_cell(name, max_chars, 'th')}{_cell(value, max_chars)}</tr>")
    if len(ds) > max_rows:
        more = len(ds) - max_rows
        rows.append(f'<tr><td colspan="2" class="aqido-muted">… {more} more</td></tr>')
    return f"<table><tbody>{''.join(rows)}</tbody></table>"


def _heading(ds: Dataset) -> str:
    fields = _KEY_FIELDS.get(type(ds).__name__, ())
    parts = [_shown(ds.get(name)) for name in fields if not name.endswith("InstanceUID")]
    shown = " · ".join(html.escape(_cut(p, MAX_REPR)) for p in parts if p)
    return f"<b>{html.escape(type(ds).__name__)}</b> {shown}"


def dataset_html(ds: Dataset, *, max_rows: int = 50, max_chars: int = 64) -> str:
    """Return the HTML for one result: a ``Study`` card with its series, a ``Series`` with
    its instances, or an attribute table for any other ``Dataset``."""
    table = _kv_table(ds, max_chars, max_rows)
    found = _children(ds)
    if found is None:
        return f'<div class="aqido">{_STYLE}{table}</div>'
    kind, children = found
    columns = _SERIES_COLUMNS if kind == "series" else _INSTANCE_COLUMNS
    parts = [
        f'<div class="aqido">{_STYLE}<div class="aqido-head">{_heading(ds)}</div>',
        f"<details><summary>{len(ds)} attributes</summary>{table}</details>",
    ]
    if children:
        inner = html_table(
            children, columns=columns, max_rows=max_rows, max_chars=max_chars, _wrap=False
        )
        parts.append(f"<div>{len(children)} {html.escape(kind)}:</div>{inner}")
    else:
        parts.append(f'<div class="aqido-muted">no {kind} attached</div>')
    parts.append("</div>")
    return "".join(parts)


def short_repr(ds: Dataset) -> str:
    """The plain ``repr`` of a ``Study``/``Series``/``Instance``: identifying attributes only."""
    name = type(ds).__name__
    shown = []
    for field in _KEY_FIELDS.get(name, ()):
        value = getattr(ds, field, None)
        if value is None or value == ():
            continue
        if isinstance(value, PersonName):
            value = str(value)
        shown.append(f"{field}={value_repr(value)}")
    children = _children(ds)
    if children is not None and children[1]:
        shown.append(f"<{len(children[1])} {children[0]}>")
    return f"{name}({', '.join(shown)})"


def value_repr(value: Any, max_chars: int = MAX_REPR, _depth: int = 0) -> str:
    """``repr(value)`` cut to ``max_chars`` characters (``…`` marks the cut).

    A tuple is written item by item until it is long enough to be cut, so that
    a sequence of thousands of values (or of nested datasets) costs no more
    than the few shown; a sequence item (a ``Dataset``) is written by
    :func:`dataset_repr`, down to :data:`_REPR_LEVELS` levels of nesting (no
    deeper level would fit: a response may nest hundreds).
    """
    if type(value) is not tuple:
        item = cast("Dataset", value)
        if isinstance(value, Mapping) and hasattr(value, "element") and _children(item) is None:
            return _cut(dataset_repr(item, _depth + 1), max_chars)  # a sequence item
        return _cut(repr(value), max_chars)
    parts: list[str] = []
    size = 1
    for item in value:
        if size > max_chars:
            parts.append("…")
            break
        parts.append(value_repr(item, max_chars, _depth))
        size += len(parts[-1]) + 2
    inner = ", ".join(parts) + ("," if len(value) == 1 else "")
    return _cut(f"({inner})", max_chars)


#: Most levels of nested datasets a ``repr`` writes out (deeper ones show as ``Dataset(…)``).
_REPR_LEVELS = 3


def dataset_repr(ds: Dataset, _depth: int = 0) -> str:
    """The plain ``repr`` of a ``Dataset``: its first six attributes, each value cut."""
    if _depth > _REPR_LEVELS:
        return f"{type(ds).__name__}(…)"
    shown = ", ".join(
        f"{name}={value_repr(ds[name], MAX_REPR, _depth)}" for name in itertools.islice(ds, 6)
    )
    return f"{type(ds).__name__}({shown}{', ...' if len(ds) > 6 else ''})"

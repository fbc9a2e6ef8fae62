"""Results as Apache Arrow tables and Parquet files, with typed columns (pure, bar file writes).

pyarrow is optional (the ``parquet`` extra) and imported on first use only.

Schema
------
One row per result at ``level`` (``"study"``, ``"series"`` or ``"instance"``);
a crawl's trees flatten as :func:`aqido.to_records` flattens them, each row
carrying its parents' attributes (a study without series still gives one row,
deeper columns null).  The columns are, by default, the **default return
attributes** of every level down to ``level`` (the typed fields of ``Study``,
``Series`` and ``Instance``, sequences left out), in that order, so that every
part of a sharded crawl has the same schema; ``columns=`` picks others
(keywords or tags; not a sequence, nor one twice: ``ValueError``).  Where a
keyword exists at several levels (``RetrieveURL``, ``InstanceAvailability``,
``SpecificCharacterSet``, ``TimezoneOffsetFromUTC``: :data:`aqido.tables.OWN_LEVEL`),
the row's own level wins: an instance row's ``RetrieveURL`` is the instance's, null when the
instance has none, never its study's.

Column types come from the data dictionary's VR of each keyword:

===================================  ===========================================
VR                                   Arrow type
===================================  ===========================================
DA                                   ``date32``
TM                                   ``time64[us]``
DT                                   ``timestamp[us]``: the local time as written
IS, SL, SS, SV, UL, US, UV           ``int64``
DS, FL, FD                           ``float64``
PN                                   ``string`` (the DICOM form, ``Doe^John``)
every other VR                       ``string``
===================================  ===========================================

An attribute the dictionary allows several values for (VM other than 1, such
as ``ModalitiesInStudy``) is a ``list<...>`` of that type.  A value that cannot
be read for its VR is null (the raw text stays in the JSON output and in
``Dataset.invalid``), and so is one of another type than its column's (a
``StudyDate`` sent as ``LO``, or as a sequence).  A single-valued attribute that came with
several (non-empty) values keeps them all: in a ``string`` column joined with
``\\`` as DICOM writes several values (``Head\\Neck``; an empty one among
them keeps its place, ``Head\\\\Neck``), in any other column
null (no one value is kept while the others are dropped, also when only one
of them is readable).  A number the column's type cannot hold (an IS beyond
``int64``, a UV above 2**63 - 1, an integer beyond 2**53 in a ``float64``
column, which it would round) is null, and so is an element given as a
``BulkDataURI`` or ``InlineBinary`` (its value is not in the answer as text:
the URI or the base64 would pass for the value), and a string holding a lone
surrogate (only a study built by hand holds one), which has no UTF-8 form.

Dates and times are local times as the server wrote them, never converted:
DA and TM columns, and DT values without a UTC offset (``20240101120000``),
in the zone the ``TimezoneOffsetFromUTC`` of their level names when the
server gave one (aqido does not apply it).  A DT value with an offset
(``20240101120000+0100``) is an instant, not a local time: it is null in
its ``timestamp[us]`` column (and counted, below) rather than converted to
UTC beside local times that are not (which would make one column mean two
things).  :func:`aqido.to_dataframe` and :func:`aqido.to_records` keep such
values (aware ``datetime``, a UTC column of a DataFrame).

Nulled values are counted
-------------------------
Each of those nulls (in a list column, a cell with a null item) is a value the
server sent that the table does not hold, so none is silent: they are counted
per column and reported where the output is.  :func:`to_arrow` issues one
``UserWarning`` (``to_arrow: 3 values null, not readable as one value of their
column's type: StudyDate 2, Rows 1``); :func:`write_parquet` returns the
counts and stores them in the file's key-value metadata under
:data:`NULLED_KEY` (a JSON object, ``{}`` when none were nulled);
a sharded crawl reports them per shard (``ShardReport.nulled``),
``crawl_to_parquet`` warns of their sum, and ``aqido crawl --format parquet``
names them in each shard's line and in its summary.
"""

from __future__ import annotations

import datetime
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from aqido import dictionary
from aqido._files import commit, temporary_for
from aqido.query import QueryLevel
from aqido.tables import UNREADABLE, level_index, unique_columns
from aqido.values import BulkDataURI, InlineBinary

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow

    from aqido._dataset import Dataset
    from aqido.errors import CrawlFailure

_LEVEL_NAMES: tuple[Literal["study"], Literal["series"], Literal["instance"]] = (
    "study",
    "series",
    "instance",
)
_INT_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV", "US or SS"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_INT64 = -(2**63)  # the least int64; the greatest is -_INT64 - 1
_EXACT = 2**53  # every integer of at most this magnitude is exactly a float64
#: The key of a Parquet file's key-value metadata holding its nulled values per column (JSON).
NULLED_KEY = "aqido.nulled_values"


def _import_pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as exc:
        raise ImportError(
            "Arrow and Parquet output need pyarrow: install it with `pip install 'aqido[parquet]'`"
        ) from exc
    return pyarrow


def default_columns(level: str | QueryLevel) -> list[str]:
    """The default columns at ``level``: the typed fields of each level down to it, no SQ."""
    from aqido.results import Instance, Series, Study

    out: dict[str, None] = {}
    for cls in (Study, Series, Instance)[: level_index(level) + 1]:
        for name, key, _, _ in cls._typed:
            if dictionary.vr_for(int(key, 16)) != "SQ":
                out[name] = None
    return list(out)


def _arrow_type(pa: Any, name: str) -> Any:
    try:
        tag, _ = dictionary.resolve(name)
    except ValueError:
        return pa.string()
    vr = dictionary.vr_for(tag) or "UN"
    if vr == "DA":
        one = pa.date32()
    elif vr == "TM":
        one = pa.time64("us")
    elif vr == "DT":
        one = pa.timestamp("us")
    elif vr in _INT_VRS:
        one = pa.int64()
    elif vr in _FLOAT_VRS:
        one = pa.float64()
    else:
        one = pa.string()
    vm = dictionary.vm_for(tag)
    return pa.list_(one) if vm is not None and vm != "1" else one


def arrow_schema(
    level: str | QueryLevel = "instance", columns: Sequence[str | int] | None = None
) -> pyarrow.Schema:
    """The Arrow schema :func:`to_arrow` gives at ``level`` (see the module docstring)."""
    pa = _import_pyarrow()
    names = _names(level, columns)
    schema: pyarrow.Schema = pa.schema([pa.field(name, _arrow_type(pa, name)) for name in names])
    return schema


def _names(level: str | QueryLevel, columns: Sequence[str | int] | None) -> list[str]:
    level_index(level)  # a bad level fails here, before any row, with columns given or not
    if columns is None:
        return default_columns(level)
    names = []
    for column in columns:
        tag, _ = dictionary.resolve(column)
        if dictionary.vr_for(tag) == "SQ":  # to_records leaves sequences out: always null
            raise ValueError(f"{column!r} is a sequence (SQ); Arrow output has no column for it")
        names.append(dictionary.name_for(tag))
    return unique_columns(columns, names)


class _Lost:
    """The marker of a value the results hold that its column cannot hold: a null, counted."""

    def __repr__(self) -> str:
        return "<lost>"


_LOST: Any = _Lost()


def _cell(value: Any, type_: Any, pa: Any) -> Any:
    """One record value as what pyarrow takes for ``type_``; ``_LOST`` when a value does not fit.

    ``None`` (no value) stays ``None``; a list column's cell is a list whose
    items may be ``_LOST``.
    """
    if value is None:
        return None
    if value is UNREADABLE or isinstance(value, BulkDataURI | InlineBinary):
        return _LOST  # unreadable; a value by reference, or base64: not the value as text
    if pa.types.is_list(type_):
        values = value if isinstance(value, tuple) else (value,)
        return [_cell(v, type_.value_type, pa) for v in values]
    if isinstance(value, tuple):  # a single-valued column given several values
        present = [v for v in value if v is not None]
        if len(present) == 1:
            return _cell(present[0], type_, pa)
        if pa.types.is_string(type_):  # all of them, as DICOM writes them: A\B, A\\B
            cells = ["" if v is None else _cell(v, type_, pa) for v in value]  # empty in place
            return _LOST if any(c is _LOST for c in cells) else "\\".join(cells)
        return _LOST  # a number or a date: there is no one value to keep, and none is dropped
    if pa.types.is_string(type_):
        if isinstance(value, datetime.date | datetime.time):
            return value.isoformat()
        return str(value)
    if pa.types.is_int64(type_):  # an integer int64 cannot hold (IS "1" * 20, a UV) is null
        ok = isinstance(value, int) and not isinstance(value, bool) and _INT64 <= value < -_INT64
        return value if ok else _LOST
    if pa.types.is_float64(type_):  # an integer float64 would round (beyond 2**53) is null
        if not isinstance(value, int | float):
            return _LOST
        if not isinstance(value, float) and not -_EXACT <= value <= _EXACT:
            return _LOST  # (1e309 written out would not even be a float)
        return float(value)
    if pa.types.is_timestamp(type_):  # a local time as written; one with an offset is not
        local = isinstance(value, datetime.datetime) and value.utcoffset() is None
        return value if local else _LOST
    if pa.types.is_date32(type_):
        ok = isinstance(value, datetime.date) and not isinstance(value, datetime.datetime)
        return value if ok else _LOST
    if pa.types.is_time64(type_):
        return value.replace(tzinfo=None) if isinstance(value, datetime.time) else _LOST
    return _LOST  # pragma: no cover - every type above is handled


def _cells(values: Iterable[Any], type_: Any, pa: Any) -> tuple[list[Any], int]:
    """A column's cells for pyarrow, and how many lost a value (a null, or a null list item)."""
    out: list[Any] = []
    lost = 0
    for value in values:
        cell = _cell(value, type_, pa)
        if cell is _LOST:
            cell = None
            lost += 1
        elif type(cell) is list and any(c is _LOST for c in cell):
            cell = [None if c is _LOST else c for c in cell]
            lost += 1
        out.append(cell)
    return out, lost


def _utf8_only(cells: list[Any]) -> tuple[list[Any], int]:
    """String cells with null for each string that has no UTF-8 form, and how many were lost.

    A string holding a lone surrogate (``"\\ud800"``, which only a study built
    by hand holds: a server's answer with one is refused) cannot be written;
    in a list column it is a null item, its cell counted.
    """
    out: list[Any] = []
    lost = 0
    for cell in cells:
        if type(cell) is list:
            items = [None if _no_utf8(item) else item for item in cell]
            lost += items != cell
            out.append(items)
        elif _no_utf8(cell):
            out.append(None)
            lost += 1
        else:
            out.append(cell)
    return out, lost


def _no_utf8(value: Any) -> bool:
    """Whether ``value`` is a string without a UTF-8 form (one holding a lone surrogate)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _table(
    items: Sequence[Dataset], level: str, schema: Any, pa: Any
) -> tuple[Any, dict[str, int]]:
    """The table of ``items`` at ``level`` with ``schema``, and its nulled values per column.

    A column without any is left out of the counts.
    """
    from aqido.tables import _records

    records = _records(
        items, level=_LEVEL_NAMES[level_index(level)], columns=schema.names, unreadable=True
    )
    arrays = []
    nulled: dict[str, int] = {}
    for field in schema:
        cells, lost = _cells((row[field.name] for row in records), field.type, pa)
        try:
            arrays.append(pa.array(cells, type=field.type))
        except UnicodeEncodeError:  # a lone surrogate (a study built by hand): no UTF-8 form
            cells, more = _utf8_only(cells)
            arrays.append(pa.array(cells, type=field.type))
            lost += more
        if lost:
            nulled[field.name] = lost
    return pa.Table.from_arrays(arrays, schema=schema), nulled


def describe_nulled(nulled: Mapping[str, int]) -> str:
    """Nulled values per column as one phrase, for warnings and the CLI's lines.

    ``3 values null, not readable as one value of their column's type: StudyDate 2, Rows 1``.
    """
    total = sum(nulled.values())
    each = ", ".join(f"{name} {count}" for name, count in nulled.items())
    values = "value" if total == 1 else "values"
    return f"{total} {values} null, not readable as one value of their column's type: {each}"


def to_arrow(
    results: Iterable[Dataset],
    *,
    level: str | QueryLevel | None = None,
    columns: Sequence[str | int] | None = None,
) -> pyarrow.Table:
    """Results (a search's, or a crawl's studies) as a typed ``pyarrow.Table``.

    ``level``: one row per study, series or instance (default: the deepest
    level present, as :func:`aqido.to_records`).  ``columns``: keywords or tags
    (default: every level's default return attributes, a fixed schema).  See
    the module docstring for the schema.  Values the results hold that are
    null in the table (not readable as one value of its type) are counted: one
    ``UserWarning`` names each column and its count.
    """
    from aqido.tables import _deepest

    pa = _import_pyarrow()
    items = list(results)
    if level is None:
        level = ("study", "series", "instance")[_deepest(items)]
    table, nulled = _table(items, level, arrow_schema(level, columns), pa)
    if nulled:
        warnings.warn(f"to_arrow: {describe_nulled(nulled)}", UserWarning, stacklevel=2)
    result: pyarrow.Table = table
    return result


class Written(NamedTuple):
    """What :func:`write_parquet` wrote: its rows, and the values nulled per column."""

    rows: int
    nulled: dict[str, int]


def write_parquet(
    batches: Iterable[Iterable[Dataset]],
    path: str | os.PathLike[str],
    *,
    level: str | QueryLevel,
    columns: Sequence[str | int] | None = None,
) -> Written:
    """Write results to one Parquet file, a batch (e.g. a few hundred studies) at a time.

    Memory holds one batch, not the whole file.  Writes to a temporary file
    of its own next to ``path`` (``.<name>.<random>.tmp``: hidden, so dataset
    readers skip it; removed on failure), syncs it to disk and renames it into
    place at the end (:mod:`aqido._files`), so a file at ``path`` is always
    complete, also when two writers race for it (a Dask task run twice) and
    after a power loss.  Returns the number of rows written (an empty
    file with the schema when there are none) and the values nulled per
    column, which the file's key-value metadata holds too (:data:`NULLED_KEY`,
    a JSON object, ``{}`` when none was).
    """
    pa = _import_pyarrow()
    import pyarrow.parquet as pq

    schema = arrow_schema(level, columns)
    rows = 0
    nulled: dict[str, int] = {}
    with temporary_for(path) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in batches:
                table, lost = _table(list(batch), level, schema, pa)
                for name, count in lost.items():
                    nulled[name] = nulled.get(name, 0) + count
                if table.num_rows:
                    writer.write_table(table)
                    rows += table.num_rows
            if not rows:
                writer.write_table(pa.Table.from_pylist([], schema=schema))
            ordered = {name: nulled[name] for name in schema.names if name in nulled}
            writer.add_key_value_metadata({NULLED_KEY: json.dumps(ordered)})
        commit(tmp, path)
    return Written(rows, ordered)


def disjoint_failure(label: str, parts: Sequence[str | os.PathLike[str]]) -> CrawlFailure | None:
    """A :class:`~aqido.errors.CrawlFailure` naming the studies more than one of ``parts`` hold.

    ``parts``: every part of one archive's sharded crawl (``label`` names it), which
    must be disjoint.  A study in two of them was re-dated between the crawls of two
    shards (the first found it at its old date, the second at its new one), or one
    part is from an earlier run: the output would count it twice.  ``None`` when
    they are disjoint.  Reads one column of each part (its distinct values).
    """
    import pyarrow.parquet as pq

    from aqido.errors import CrawlFailure, InvalidResponseError

    seen: dict[str, list[str]] = {}
    for part in parts:
        column = pq.read_table(part, columns=["StudyInstanceUID"]).column(0)
        for uid in column.unique().to_pylist():
            if uid is not None:
                seen.setdefault(uid, []).append(os.path.basename(part))
    shared = {uid: found for uid, found in seen.items() if len(found) > 1}
    if not shared:
        return None
    shown = "; ".join(f"{uid!r} in {', '.join(found)}" for uid, found in list(shared.items())[:3])
    count = "1 study is" if len(shared) == 1 else f"{len(shared)} studies are"
    error = InvalidResponseError(
        f"{count} in more than one part ({shown}"
        f"{'; ...' if len(shared) > 3 else ''}): re-dated while the shards were crawled, or a "
        "part kept from an earlier run; delete those parts and their checkpoints, and run again"
    )
    return CrawlFailure(f"{label} (its parts together)", error)

"""Results as tables: flat records (``to_records``) and pandas DataFrames (``to_dataframe``).

For notebooks and scripts that want rows and columns rather than objects.

Rules
-----
* **Columns are keywords** (``"PatientName"``), or tag keys (``"00091001"``)
  for private and unknown tags; in the order first seen.  ``columns=`` picks
  and orders them (keywords or tags; a column no result has is all ``None``;
  one named twice, even as a keyword and its tag, is a ``ValueError``).
* **Values are plain Python**: ``str``, ``int``, ``float``,
  ``datetime.date``/``time``/``datetime``, ``None`` for empty or unreadable
  values.  Person names become their DICOM string (``"Doe^John"``), Decimal
  Strings plain ``float``, AT values their tag key.  Sequences (SQ) are left out
  unless ``sequences="keep"`` (then a tuple of records, one per item).
* **Multi-valued attributes** are tuples (``multivalue="tuple"``, the
  default), or one string joined by ``separator`` (``multivalue="join"``,
  default ``"\\\\"``, DICOM's own).  A column that is multi-valued in any row is
  a tuple in every row (a single ``"CT"`` becomes ``("CT",)``), and so is
  every column whose keyword the dictionary allows several values
  (``ModalitiesInStudy``, ``ImageType``: VM other than 1), so a column never
  mixes both.
* **Trees flatten.**  A crawl's studies (``Study.series``, each with
  ``Series.instances``) give one row per instance (``level="instance"``), per
  series or per study; by default the deepest level present.  Each row carries
  its parents' attributes **unprefixed** (DICOM keywords name one attribute
  at one level: ``StudyDate``, ``Modality``, ``SOPInstanceUID`` do not
  clash).  **A row's own level wins**: the keywords that describe each level's
  result rather than an entity its children share (:data:`OWN_LEVEL`:
  ``RetrieveURL``, ``InstanceAvailability``, ``SpecificCharacterSet``,
  ``TimezoneOffsetFromUTC``...) come from the row's own level only, never from
  a parent: an instance without a ``RetrieveURL`` has ``None`` there, not its
  study's URL.  ``prefix_parents=True`` names the parents' columns
  ``"study.StudyDate"``, ``"series.Modality"`` instead, keeping every level's
  value (``"study.RetrieveURL"`` too).  A study without series (or a series
  without instances) at a deeper ``level`` still gives one row, with the
  deeper columns missing, so no result is dropped; its own attributes are a
  parent's there (prefixed with ``prefix_parents=True``; its :data:`OWN_LEVEL`
  keywords left out without).

pandas is optional (the ``pandas`` extra) and imported by ``to_dataframe``
only.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from aqido import dictionary
from aqido._elements import _El
from aqido.errors import excerpt
from aqido.query import QueryLevel
from aqido.values import DSFloat, PersonName, Tag, is_empty

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from aqido.results import Dataset


Level = Literal["study", "series", "instance"]
_LEVELS: dict[str, int] = {"study": 0, "series": 1, "instance": 2}
_LEVEL_NAMES = {level.name.lower(): level for level in QueryLevel}
_PREFIXES = ("study.", "series.", "")

#: Keywords that describe a result at its own level (how it is encoded, where and whether it
#: can be retrieved, its timezone) rather than an entity its children share: a row takes
#: them from its own level only, never from a parent (``None`` when its level lacks them).
OWN_LEVEL = frozenset(
    {
        "SpecificCharacterSet",
        "RetrieveURL",
        "RetrieveAETitle",
        "RetrieveLocationUID",
        "InstanceAvailability",
        "TimezoneOffsetFromUTC",
        "QueryRetrieveLevel",
        "StorageMediaFileSetID",
        "StorageMediaFileSetUID",
    }
)


class _Unreadable:
    """The marker of a value that could not be read for its VR (see ``_records``)."""

    def __repr__(self) -> str:
        return "<unreadable>"


#: Stands for an unreadable value (``Dataset.invalid``) where ``_records(unreadable=True)``
#: is asked to tell it from an empty one (``None``): :mod:`aqido._arrow` counts them.
UNREADABLE: Any = _Unreadable()


def _plain(value: Any, sequences: bool) -> Any:
    """One Python value from the mapping API, as a plain value for a record."""
    if value is None:
        return None
    if isinstance(value, PersonName):
        return str(value) or None
    if isinstance(value, DSFloat):
        return float(value)
    if isinstance(value, Tag):
        return value.key
    if isinstance(value, bool):  # pragma: no cover - DICOM JSON values are never booleans
        return value
    return value  # str, int, float, date/time; a BulkDataURI / InlineBinary is a str subclass


def _marked(value: Any, elem: _El | Mapping[str, Any]) -> Any:
    """``value`` with every value of ``elem`` that is not empty but was not read as UNREADABLE.

    An element's values keep their places (a tuple), or are ``None`` when none was read.
    """
    if value is not None and type(value) is not tuple:
        return value  # one value, read
    raw = elem.Value if type(elem) is _El else elem.get("Value")
    if not raw:
        return value
    if value is None:
        return UNREADABLE if any(not is_empty(v) for v in raw) else None
    return tuple(
        UNREADABLE if v is None and not is_empty(r) else v for v, r in zip(value, raw, strict=False)
    )


def _record(ds: Dataset, sequences: bool, unreadable: bool = False) -> dict[str, Any]:
    """The plain record of one dataset's own elements (no children).

    ``unreadable``: values that could not be read are :data:`UNREADABLE`, not ``None``.
    """
    from aqido._dataset import name_for_key
    from aqido._elements import _is_sequence

    out: dict[str, Any] = {}
    for key, elem in ds._raw.items():
        name = name_for_key(key)
        if _is_sequence(elem):
            if sequences:
                out[name] = tuple(_record(item, True) for item in ds[key])
            elif unreadable and elem.get("Value"):  # items where a column takes values
                out[name] = UNREADABLE  # (a StudyDate sent as SQ): counted, not silently null
            continue
        value = ds[key]
        if unreadable:
            value = _marked(value, elem)
        if type(value) is tuple:
            out[name] = tuple(_plain(v, sequences) for v in value)
        else:
            out[name] = _plain(value, sequences)
    return out


def bad_option(name: str, value: object, allowed: str) -> ValueError:
    """The error for an option ``name`` outside ``allowed``: the value's repr, escaped and cut."""
    return ValueError(f"{name} must be {allowed}, not {excerpt(repr(value), 60)}")


def level_option(name: str, value: object) -> QueryLevel:
    """Option ``name``'s ``value`` (a level's name, any case, or a QueryLevel) as a QueryLevel.

    Anything else is a ValueError naming the levels (``lower()``, not ``upper()``:
    ``"ſtudy".upper()`` is ``"STUDY"``).
    """
    if isinstance(value, QueryLevel):
        return value
    level = _LEVEL_NAMES.get(value.lower()) if isinstance(value, str) else None
    if level is None:
        raise bad_option(name, value, "'study', 'series' or 'instance' (or a QueryLevel)")
    return level


def level_index(level: str | QueryLevel) -> int:
    """``level`` (a name, any case, or a QueryLevel) as 0, 1 or 2; a ValueError naming them."""
    return _LEVELS[level_option("level", level).name.lower()]


def _level_of(ds: Dataset) -> int:
    from aqido.results import Instance, Series, Study

    if isinstance(ds, Study):
        return 0
    if isinstance(ds, Series):
        return 1
    if isinstance(ds, Instance):
        return 2
    return -1  # a plain Dataset: flattened as itself


def _deepest(results: Sequence[Dataset]) -> int:
    from aqido.results import Series, Study

    deepest = 0
    for ds in results:
        level = _level_of(ds)
        if level < 0:
            continue
        deepest = max(deepest, level)
        if isinstance(ds, Study) and ds.series:
            deepest = max(deepest, 1)
            if any(s.instances for s in ds.series):
                return 2
        elif isinstance(ds, Series) and ds.instances:
            return 2
    return deepest


def _rows(
    ds: Dataset,
    target: int,
    parent: dict[str, Any],
    prefix: bool,
    sequences: bool,
    unreadable: bool,
) -> Iterable[dict[str, Any]]:
    """Rows for one result (and its attached children, down to ``target``)."""
    from aqido.results import Series, Study

    level = _level_of(ds)
    own = _record(ds, sequences, unreadable)
    children: Sequence[Dataset] = ()
    if level < target:
        if isinstance(ds, Study):
            children = ds.series
        elif isinstance(ds, Series):
            children = ds.instances
    if not children and not 0 <= level < target:
        yield {**parent, **own}  # a row of this level (or a plain Dataset): all its own
        return
    if prefix:
        carried = {**parent, **{_PREFIXES[level] + k: v for k, v in own.items()}}
    else:  # a parent's RetrieveURL (and the like) is not its children's
        carried = {**parent, **{k: v for k, v in own.items() if k not in OWN_LEVEL}}
    if not children:  # a study without series, a series without instances: its row
        yield carried
        return
    for child in children:
        yield from _rows(child, target, carried, prefix, sequences, unreadable)


def to_records(
    results: Iterable[Dataset],
    *,
    level: Level | QueryLevel | None = None,
    columns: Sequence[str | int] | None = None,
    multivalue: Literal["tuple", "join"] = "tuple",
    separator: str = "\\",
    prefix_parents: bool = False,
    sequences: Literal["drop", "keep"] = "drop",
) -> list[dict[str, Any]]:
    """Flatten results into a list of dicts keyed by keyword, with plain Python values.

    ``results``: ``Study``/``Series``/``Instance`` objects (or any
    ``Dataset``), e.g. a search result or a crawl's studies.  ``level``:
    ``"study"``, ``"series"`` or ``"instance"`` (or a ``QueryLevel``): one row
    per result at that level, children flattened with their parents'
    attributes carried along; default: the deepest level present.  See the
    module docstring for the value, multi-value and naming rules.
    """
    return _records(
        results,
        level=level,
        columns=columns,
        multivalue=multivalue,
        separator=separator,
        prefix_parents=prefix_parents,
        sequences=sequences,
    )


def _records(
    results: Iterable[Dataset],
    *,
    level: Level | QueryLevel | None = None,
    columns: Sequence[str | int] | None = None,
    multivalue: Literal["tuple", "join"] = "tuple",
    separator: str = "\\",
    prefix_parents: bool = False,
    sequences: Literal["drop", "keep"] = "drop",
    unreadable: bool = False,
) -> list[dict[str, Any]]:
    """:func:`to_records`; ``unreadable=True`` marks values that could not be read (UNREADABLE)."""
    if multivalue not in ("tuple", "join"):
        raise bad_option("multivalue", multivalue, "'tuple' or 'join'")
    if sequences not in ("drop", "keep"):
        raise bad_option("sequences", sequences, "'drop' or 'keep'")
    target = None if level is None else level_index(level)
    names = None if columns is None else unique_columns(columns, [_column_name(c) for c in columns])
    items = list(results)
    if target is None:
        target = _deepest(items)
    rows: list[dict[str, Any]] = []
    for ds in items:
        rows.extend(_rows(ds, target, {}, prefix_parents, sequences == "keep", unreadable))

    multi = {key for row in rows for key, value in row.items() if isinstance(value, tuple)}
    if names is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        names = list(seen)
    multi.update(name for name in names if _multi_valued(name))
    out: list[dict[str, Any]] = []
    for row in rows:
        record: dict[str, Any] = {}
        for name in names:
            value = row.get(name)
            if name in multi and value is not None and not isinstance(value, tuple):
                value = (value,)
            if multivalue == "join" and isinstance(value, tuple) and _joinable(value):
                value = separator.join("" if v is None else _text(v) for v in value)
            record[name] = value
        out.append(record)
    return out


def _multi_valued(name: str) -> bool:
    """Whether the dictionary allows several values for a column's keyword (VM other than 1)."""
    try:
        tag, _ = dictionary.resolve(name.rpartition(".")[2])
    except ValueError:
        return False
    vm = dictionary.vm_for(tag)
    return vm is not None and vm != "1"


def _joinable(value: tuple[Any, ...]) -> bool:
    return not any(isinstance(v, Mapping) for v in value)


def _text(value: Any) -> str:
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def unique_columns(columns: Sequence[str | int], names: Sequence[str]) -> list[str]:
    """``names`` (one per column given), or a ValueError naming two columns for one attribute.

    A table has one column of a name: the same keyword twice, or a keyword and its
    tag (``"PatientName"``, ``"00100010"``), would be two columns of one name (pandas,
    Arrow) or one (records), whichever the output.
    """
    first: dict[str, str | int] = {}
    for column, name in zip(columns, names, strict=True):
        if name in first:
            earlier, this = excerpt(repr(first[name]), 60), excerpt(repr(column), 60)
            twice = (
                f"{this} twice"
                if first[name] == column
                else f"{earlier} and {this}, both the column {excerpt(repr(name), 80)}"
            )
            raise ValueError(f"columns lists {twice}: list each column once")
        first[name] = column
    return list(names)


def _column_name(column: str | int) -> str:
    """A column named by keyword, tag key or int tag → the name records use."""
    if isinstance(column, str) and "." in column:
        head, _, tail = column.partition(".")
        return f"{head}.{_column_name(tail)}"
    return dictionary.name_for(dictionary.resolve(column)[0])


# --------------------------------------------------------------------------- pandas

_INT_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV", "US or SS"})
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
#: Every integer of at most this magnitude is exactly a float64; a greater one may be rounded.
_EXACT_FLOAT_INT = 2**53
_DATE_VRS = frozenset({"DA", "DT"})
_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UI", "UR", "UT", "AT"}
)


def _import_pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(
            "to_dataframe needs pandas: install it with `pip install 'aqido[pandas]'`"
        ) from exc
    return pandas


def _vr_of_column(name: str) -> str | None:
    try:
        tag, _ = dictionary.resolve(name.rpartition(".")[2])
    except ValueError:
        return None
    return dictionary.vr_for(tag)


def _kind(values: list[Any], name: str, tuples: bool = True) -> str:
    """The dtype family of a column: date, datetime, int, float, string or object.

    A column without any value gets the one its values would have: ``datetime``
    for a DT keyword, ``object`` for a multi-valued one (tuples; ``string`` when
    not ``tuples``: joined), else its VR's.
    """
    present = [v for v in values if v is not None]
    if not present:
        vr = _vr_of_column(name)
        if _multi_valued(name):  # tuples, or strings joined
            return "object" if tuples else "string"
        if vr == "DT":
            return "datetime"
        if vr in _DATE_VRS:
            return "date"
        if vr in _INT_VRS:
            return "int"
        if vr in _FLOAT_VRS:
            return "float"
        if vr in _STRING_VRS:
            return "string"
        return "object"
    types = {type(v) for v in present}
    if types <= {str}:
        return "string"
    if types <= {int}:
        return "int"
    if types <= {int, float}:  # float64 unless it would round an integer (beyond 2**53)
        exact = all(-_EXACT_FLOAT_INT <= v <= _EXACT_FLOAT_INT for v in present if type(v) is int)
        return "float" if exact else "object"
    if types <= {datetime.date}:
        return "date"
    if types <= {datetime.datetime}:
        return "datetime"
    return "object"


def _column(pd: Any, values: list[Any], kind: str) -> Any:
    import numpy

    if kind == "string":
        try:
            return pd.array(values, dtype="string")
        except UnicodeEncodeError:  # a lone surrogate (a study built by hand): kept as it is
            return pd.Series(values, dtype=object)
    if kind == "int":
        nullable = any(v is None for v in values)
        present = [v for v in values if v is not None]
        if present and not _INT64_MIN <= min(present) <= max(present) <= _INT64_MAX:
            if min(present) < 0 or max(present) > _UINT64_MAX:  # no integer dtype holds all
                return pd.Series(values, dtype=object)
            if nullable:  # a UV beyond int64
                return pd.array(values, dtype="UInt64")
            return numpy.array(values, dtype=numpy.uint64)  # pd.array(dtype="uint64") wraps
        return pd.array(values, dtype="Int64" if nullable else "int64")
    if kind == "float":
        return pd.array([float("nan") if v is None else float(v) for v in values], dtype="float64")
    if kind == "date":  # built in numpy: second resolution holds years 1 to 9999
        seconds = numpy.array(
            [
                numpy.datetime64("NaT", "s") if v is None else numpy.datetime64(v, "s")
                for v in values
            ],
            dtype="datetime64[s]",
        )
        return pd.array(seconds)
    if kind == "datetime":
        aware = {v.utcoffset() is not None for v in values if v is not None}
        if len(aware) > 1:  # naive and aware mixed: no single dtype
            return pd.Series(values, dtype=object)
        utc = aware == {True}
        try:
            micros = numpy.array(
                [
                    numpy.datetime64("NaT", "us")
                    if v is None
                    else numpy.datetime64(
                        v.astimezone(datetime.timezone.utc).replace(tzinfo=None) if utc else v,
                        "us",
                    )
                    for v in values
                ],
                dtype="datetime64[us]",
            )
        except OverflowError:  # in UTC before year 1 or after 9999 (00010101+0100): as read
            return pd.Series(values, dtype=object)
        series = pd.Series(micros)
        return series.dt.tz_localize("UTC") if utc else series
    return pd.Series(values, dtype=object)


def to_dataframe(
    results: Iterable[Dataset],
    *,
    level: Level | QueryLevel | None = None,
    columns: Sequence[str | int] | None = None,
    multivalue: Literal["tuple", "join"] = "tuple",
    separator: str = "\\",
    prefix_parents: bool = False,
    sequences: Literal["drop", "keep"] = "drop",
) -> pandas.DataFrame:
    """Return the results as a pandas DataFrame, one row per record of :func:`to_records`.

    Same arguments as :func:`to_records`.  Column dtypes:

    * DA and DT → ``datetime64`` (DA at second resolution, so dates from year 1
      to 9999 fit; DT at microseconds: naive local times as written, or, when
      every value carries a UTC offset, ``datetime64[us, UTC]``; a DT column
      mixing both is ``object``, each value as read, so that no offset is
      applied to some values of a column and not to others; so is a column
      with a value that is before year 1 or after 9999 in UTC, such as
      ``00010101000000+0100``);
    * integers (IS, US, UL, counts) → ``int64``, or ``Int64`` (nullable) when a
      value is missing; ``uint64``/``UInt64`` when a value (a UV) is beyond
      ``int64`` and none is negative, else ``object`` when no integer dtype holds them all;
    * DS, FL, FD → ``float64`` (``NaN`` when missing), and so is a column
      mixing integers and floats (a private tag sent as SV and as FD), unless
      an integer is beyond 2**53, which ``float64`` would round: then ``object``,
      each value as read;
    * strings, UIDs and person names → ``string`` (``pd.NA`` when missing), or
      ``object`` when a string holds a lone surrogate (only a study built by
      hand holds one), which pandas' ``string`` dtype cannot hold;
    * anything else (TM times, multi-valued columns as tuples, mixed values)
      → ``object``.

    A column with no value at all gets the dtype its values would have: its
    keyword's VR's (``datetime64[us]`` for DT), ``object`` for a multi-valued
    keyword (tuples; ``string`` with ``multivalue="join"``).  Raises
    ``ImportError`` (naming the ``pandas`` extra) when pandas is not installed.
    """
    pd = _import_pandas()
    records = to_records(
        results,
        level=level,
        columns=columns,
        multivalue=multivalue,
        separator=separator,
        prefix_parents=prefix_parents,
        sequences=sequences,
    )
    if columns is not None:
        names = [_column_name(c) for c in columns]
    else:
        names = list(records[0]) if records else []
    data: dict[str, Any] = {}
    for name in names:
        values = [record.get(name) for record in records]
        data[name] = _column(pd, values, _kind(values, name, multivalue == "tuple"))
    frame: pandas.DataFrame = pd.DataFrame(data, columns=names, index=pd.RangeIndex(len(records)))
    return frame

"""Sharded crawls: a query cut into disjoint shards, each a resumable crawl writing a Parquet part.

The plan is pure (:func:`plan_shards`); :func:`plan` lists the studies once
to size it, and :func:`run_shard` crawls one shard.  Both work the same in
one process (``aqido crawl --format parquet``) and on a Dask cluster
(:mod:`aqido.dask`), where each shard is one task.

Shards
------
From one complete listing of the matching studies (the crawl's own listing,
so silent caps and overflowing answers are split as a crawl splits them):

* **date ranges** sized from the counts per ``StudyDate``: consecutive days
  grouped so that each shard holds about the same number of studies, a day
  never split.  The ranges are contiguous and disjoint: the first is open
  below, the last open above, and each ends the day before the next begins,
  so a date nobody saw at planning time still falls in exactly one shard;
* the studies **without a StudyDate** (no date range matches an empty value)
  as lists of StudyInstanceUIDs, at most :data:`UIDS_PER_SHARD` per shard;
  unless the date part is one shard without any date range (one shard asked
  for, a query without dates), which lists them itself.

Each shard records how many studies the listing put in it: its part holds
only the studies that belong in it (:meth:`Shard.holds`), and a crawl that
finds fewer is a failure of the shard rather than a smaller part.

Layout of an output directory (one sub-directory per archive, Hive style)::

    OUT/archive=<host>_<port>_<path>/_plan.json            the shards (re-used by re-runs)
    OUT/archive=<...>/_plan.json.lock                      while a run plans them
    OUT/archive=<...>/_checkpoints/<shard>.jsonl           each shard's crawl checkpoint
    OUT/archive=<...>/part-<shard>.parquet                 each finished shard's rows

Only the parts are Parquet; what is not starts with ``_`` (and a file being
written with ``.``), which dataset readers (pyarrow, pandas, Dask, Spark)
skip, so ``OUT`` reads as one dataset.  A directory of an older aqido
(``plan.json``, ``checkpoints/``) is renamed to this layout on first use.

A part is written only when its shard's crawl finished complete, so
re-running skips shards whose part exists and resumes the others from their
checkpoints.  Parts and the plan are written whole (:mod:`aqido._files`): each
writer through a hidden temporary file of its own, renamed into place, so two
writers of one directory (two runs, a Dask task run twice) never rename each
other's half-written file.  One run at a time plans an archive's shards
(holding ``_plan.json.lock``): a run that finds another planning them is a
:class:`~aqido.errors.CheckpointError` of that archive, rather than shards of
its own that would overlap the other's parts.  A part that exists but is not
Parquet, or holds other columns than the run writes (another ``depth``), is
a :class:`~aqido.errors.CheckpointError` of that shard, not skipped; so is a
part, plan or checkpoint that cannot be written (a full disk, a read-only
filesystem: the message names the file and the OS error).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from aqido import dictionary
from aqido._files import note_released, os_error, take_lock, write_failed, write_whole
from aqido.checkpoint import CrawlCheckpoint, _file_lock, checkpoint_server
from aqido.errors import (
    CheckpointError,
    CrawlIncompleteError,
    InvalidQueryError,
    InvalidResponseError,
)
from aqido.partition import date_bounds
from aqido.query import BaseQuery, HierarchicalQuery, QueryLevel
from aqido.values import format_da

#: The most StudyInstanceUIDs one shard of undated studies lists (URL length).
UIDS_PER_SHARD = 50
#: Studies handed to the Parquet writer at a time (memory holds one batch).
BATCH = 500
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,99}")  # what plan_shards names: one file name


@attrs.frozen
class Shard:
    """One disjoint part of a sharded crawl: a name (for files and reports) and its study query.

    ``studies``: how many studies the planning listing put in it (``None`` in
    an older aqido's plan); its crawl must find at least as many.
    """

    name: str
    query: HierarchicalQuery
    studies: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record of the shard (plan files, task arguments)."""
        record: dict[str, Any] = {"name": self.name, "query": _query_record(self.query)}
        if self.studies is not None:
            record["studies"] = self.studies
        return record

    def holds(self, uid: str, date: _dt.date | None) -> bool:
        """Whether a study (its StudyInstanceUID and StudyDate) belongs in this shard (pure).

        A server that does not match the shard's StudyDate range or UID list
        answers with studies of other shards (or, matching an empty date in a
        range, with undated ones): they are another shard's rows, not this one's.
        """
        if self.query.StudyInstanceUID and uid not in self.query.StudyInstanceUID.split(","):
            return False
        low, high = self.query.min_study_date, self.query.max_study_date
        if low is None and high is None:
            return True
        if date is None:
            return False
        return (low is None or low <= date) and (high is None or date <= high)

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> Shard:
        """The shard :meth:`to_json` describes; ``ValueError`` for a name unfit for file names."""
        name = record["name"]
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a shard name (letters, digits, '.' and '-')")
        studies = record.get("studies")
        if studies is not None and (type(studies) is not int or studies < 0):
            raise ValueError(f"a shard's 'studies' must be a count, not {studies!r}")
        return cls(name=name, query=_query_from_record(record["query"]), studies=studies)


def _query_record(query: HierarchicalQuery) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for field in attrs.fields(HierarchicalQuery):
        value = getattr(query, field.name)
        if value == field.default:
            continue
        if isinstance(value, QueryLevel):
            value = value.name
        elif isinstance(value, _dt.date):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = _as_lists(value)
        record[field.name] = value
    return record


def _as_lists(value: Any) -> Any:
    """Tuples (nested ones too: ``extra_params``' values) as the lists JSON reads them back as.

    So that a plan's query read back from its file compares equal to the query's record.
    """
    return [_as_lists(v) for v in value] if isinstance(value, tuple | list) else value


def _query_from_record(record: Mapping[str, Any]) -> HierarchicalQuery:
    kwargs = dict(record)
    for key in ("min_study_date", "max_study_date"):
        if key in kwargs:
            kwargs[key] = _dt.date.fromisoformat(kwargs[key])
    if "filters" in kwargs:
        kwargs["filters"] = tuple(tuple(pair) for pair in kwargs["filters"])
    if "extra_params" in kwargs:  # ((name, (value, ...)), ...): pairs are tuples, not lists
        kwargs["extra_params"] = tuple(
            (name, tuple(values) if isinstance(values, list) else values)
            for name, values in kwargs["extra_params"]
        )
    return HierarchicalQuery(**kwargs)


def archive_dirname(url: str) -> str:
    """The output sub-directory of one archive: ``archive=<host>_<port>_<path>``.

    ``ValueError`` for a URL that does not parse, quoting it without its
    credentials as the client does (yarl's own error quotes the password).
    """
    from aqido.client import _parse_service_url

    parsed = _parse_service_url(url)
    port = parsed.explicit_port or parsed.port
    parts = [parsed.host or "archive", str(port) if port else "", parsed.path.strip("/")]
    label = _UNSAFE.sub("_", "_".join(p for p in parts if p)).strip("_")
    return f"archive={label}"


def _without_dates(query: BaseQuery) -> HierarchicalQuery:
    """``query`` with its StudyDate range removed (the shards put their own)."""
    if not isinstance(query, HierarchicalQuery):
        raise InvalidQueryError("a sharded crawl starts from a study-level HierarchicalQuery")
    filters = tuple(pair for pair in query.filters if pair[0] not in ("StudyDate", "00080020"))
    return attrs.evolve(query, min_study_date=None, max_study_date=None, filters=filters)


def plan_shards(
    query: BaseQuery,
    studies: Iterable[tuple[str, _dt.date | None]],
    *,
    shards: int,
) -> list[Shard]:
    """Split ``query`` into about ``shards`` disjoint shards, given its studies (pure).

    ``studies``: ``(StudyInstanceUID, StudyDate or None)`` of every matching
    study.  See the module docstring.  ``query``'s own date range bounds the
    outermost shards (they are open only where it is).  With no dated study,
    the date part is one shard with the query's own range.  Every study is in
    exactly one shard: a date shard without any range is the whole query, so
    then no undated shard repeats its undated studies.  An undated study whose
    UID a query cannot hold (``1.02.3`` without ``permissive_uid``, or one with a
    comma, which a UID list would split into others), or a study
    dated outside the query's own range, is an
    :class:`~aqido.errors.InvalidResponseError`: the listing's fault, not the query's.
    """
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards must be a positive int, not {shards!r}")
    bounds = date_bounds(query)
    if bounds is None:
        raise InvalidQueryError(f"{query}: its StudyDate is not a plain date or range")
    low, high = bounds
    base = _without_dates(query)
    per_day: dict[_dt.date, int] = {}
    undated: list[str] = []
    for uid, date in studies:
        if date is None:
            undated.append(uid)
        elif (low is not None and date < low) or (high is not None and date > high):
            raise InvalidResponseError(  # no shard holds it (and the ranges would be inverted)
                f"the study listing holds {uid!r} of StudyDate {format_da(date)}, outside the "
                f"query's range {_day(low)}-{_day(high)}: the server matched it on another "
                "value, or does not match StudyDate ranges as QIDO-RS does"
            )
        else:
            per_day[date] = per_day.get(date, 0) + 1
    days = sorted(per_day)
    total = sum(per_day.values())
    groups: list[list[_dt.date]] = []
    if days:
        target = total / min(shards, len(days))
        running = 0
        for day in days:
            if not groups or (running >= target * len(groups) and len(groups) < shards):
                groups.append([])
            groups[-1].append(day)
            running += per_day[day]
    out: list[Shard] = []
    starts: list[_dt.date | None] = [group[0] for group in groups] or [None]
    counts = [sum(per_day[day] for day in group) for group in groups] or [0]
    if len(starts) == 1 and low is None and high is None:  # one shard with no date range:
        counts[0] += len(undated)  # it lists every study, the undated ones too
        undated = []  # (in undated shards as well, they would be there twice)
    for index, start in enumerate(starts):
        following = starts[index + 1] if index + 1 < len(starts) else None
        first = low if index == 0 else start
        last = high if following is None else following - _dt.timedelta(days=1)
        name = f"date-{_day(first)}-{_day(last)}"
        query = attrs.evolve(base, min_study_date=first, max_study_date=last)
        out.append(Shard(name, query, studies=counts[index]))
    for index in range(0, len(undated), UIDS_PER_SHARD):
        chunk = sorted(undated[index : index + UIDS_PER_SHARD])
        digest = hashlib.sha256(",".join(chunk).encode()).hexdigest()[:12]
        try:
            query = attrs.evolve(base, StudyInstanceUID=",".join(chunk))
        except InvalidQueryError as exc:  # the server's UID, not the query: not a usage error
            raise InvalidResponseError(
                f"a study without a StudyDate cannot be asked for by its StudyInstanceUID: {exc}"
            ) from None
        listed = query.StudyInstanceUID.split(",")
        for uid in chunk:  # "9.9,1.2.4" would ask for 1.2.4, another shard's study, instead
            if uid not in listed:
                raise InvalidResponseError(
                    f"a study without a StudyDate cannot be asked for by its "
                    f"StudyInstanceUID {uid!r}: a list of UIDs would not hold it as one UID"
                )
        out.append(Shard(f"undated-{digest}", query, studies=len(chunk)))
    return out


def _day(day: _dt.date | None) -> str:
    return format_da(day) if day is not None else ""


# --- running (I/O) ------------------------------------------------------------------------


def plan_path(out: Path, url: str) -> Path:
    """Where the plan of ``url``'s shards is kept under ``out``."""
    return out / archive_dirname(url) / "_plan.json"


def part_path(out: Path, url: str, shard: Shard) -> Path:
    """The Parquet part of one shard."""
    return out / archive_dirname(url) / f"part-{shard.name}.parquet"


def checkpoint_path(out: Path, url: str, shard: Shard) -> Path:
    """The crawl checkpoint of one shard."""
    return out / archive_dirname(url) / "_checkpoints" / f"{shard.name}.jsonl"


def _adopt_older_layout(directory: Path) -> None:
    """Rename an older aqido's ``plan.json`` and ``checkpoints/`` to this layout's names.

    Planned again instead, the shards could differ from the parts already
    written, and a study be in two parts.
    """
    for old, new in (("checkpoints", "_checkpoints"), ("plan.json", "_plan.json")):
        if (directory / old).exists() and not (directory / new).exists():
            os.replace(directory / old, directory / new)


async def plan(
    url: str,
    query: BaseQuery,
    *,
    out: Path,
    shards: int,
    client_options: Mapping[str, Any],
) -> list[Shard]:
    """The shards of ``url``: read from ``out`` when planned before, else listed and planned.

    A plan written by an earlier run is re-used as is, so that re-running
    after a failure or a kill finds the same shards (and their parts and
    checkpoints); it must have been made for the same query and archive (the
    plan records the service root, as a checkpoint does: two URLs can share
    an ``archive=`` directory name, ``/a/b`` and ``/a_b``).
    """
    from aqido.client import AsyncQidoRS

    path = plan_path(out, url)
    _adopt_older_layout(path.parent)
    record = {
        "query": _query_record(_as_hierarchical(query)),
        "server": checkpoint_server(url),
        "shards": shards,
    }
    if path.exists():
        return _saved_plan(path, record)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(path.parent, exc, "create the directory") from exc
    lock = _plan_lock(path)
    try:
        if path.exists():  # planned by another run since
            return _saved_plan(path, record)
        studies: list[tuple[str, _dt.date | None]] = []
        async with AsyncQidoRS(url, **client_options) as client:
            async for study in client.crawl(query, depth=QueryLevel.STUDY):
                studies.append((str(study.StudyInstanceUID), study.StudyDate))
        planned = plan_shards(query, studies, shards=shards)
        record["plan"] = [s.to_json() for s in planned]
        try:
            write_whole(path, json.dumps(record, indent=1).encode("utf-8"))
        except OSError as exc:  # a full disk, a read-only filesystem...
            raise write_failed(path, exc, "write the shard plan") from exc
    finally:
        # Removed while held once the plan is there: a run that takes it later (or a new
        # one) finds the plan, so the directory holds the plan alone, as before planning.
        note_released(lock)  # before the unlink: a lock taken after it is another's record
        if path.exists():
            with contextlib.suppress(OSError):  # Windows: filelock removes it on release
                os.unlink(lock.lock_file)
        lock.release()
    return planned


def _plan_lock(path: Path) -> Any:
    """Take the lock of planning into ``path`` (``_plan.json.lock``, never waited for).

    Two first runs into one directory would each plan shards of their own (of
    another ``shards``, or of a listing that changed), overwrite each other's
    plan and write parts that overlap: a study in two parts.  Another run
    holding it is a :class:`~aqido.errors.CheckpointError` (saying whether it is
    a planning in this process), as is an OSError taking it (naming the lock file).
    """
    lock = _file_lock(path)
    take_lock(
        lock,
        path,
        here=f"being planned by another crawl in this process, which holds its lock "
        f"{lock.lock_file}: one still listing the archive's studies (another "
        "crawl_to_parquet call, thread or task of this process planning into this directory); "
        "wait for it to finish or cancel it (its lock is released as its planning ends), "
        "then run again to re-use its plan, or use another output directory",
        elsewhere=f"being planned by another crawl (another aqido run holds its lock "
        f"{lock.lock_file}); wait for it to finish, then run again to re-use its plan, or "
        "use another output directory",
    )
    return lock


def _saved_plan(path: Path, record: Mapping[str, Any]) -> list[Shard]:
    """The shards of the plan at ``path``, which must be ``record``'s query's and archive's."""
    saved, shards_saved = _read_plan(path)
    if saved.get("query") != record["query"]:
        raise InvalidQueryError(
            f"{path} holds the plan of another query; use another output directory"
        )
    if saved.get("server", record["server"]) != record["server"]:  # none: an older aqido's
        raise InvalidQueryError(
            f"{path} holds the plan of another archive ({saved.get('server')}), not "
            f"{record['server']}; use another output directory"
        )
    return shards_saved


def _read_plan(path: Path) -> tuple[dict[str, Any], list[Shard]]:
    """A plan file's record and shards; CheckpointError if it is not a plan aqido wrote.

    A plan that cannot be read (an I/O error, no permission) is a CheckpointError
    naming it and the OS error, as a checkpoint that cannot be read is.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"could not read it: {os_error(exc)}", path=path) from exc
    try:
        saved = json.loads(data)
        if not isinstance(saved, dict) or not isinstance(saved.get("plan"), list):
            raise ValueError("not a JSON object with a 'plan' list")
        shards = [Shard.from_json(record) for record in saved["plan"]]
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise CheckpointError(
            f"not a shard plan ({type(exc).__name__}: {exc}); remove the output directory's "
            "plan, parts and checkpoints to plan again",
            path=path,
        ) from None
    if not shards:
        raise CheckpointError("a shard plan without shards", path=path)
    return saved, shards


def _as_hierarchical(query: BaseQuery) -> HierarchicalQuery:
    if not isinstance(query, HierarchicalQuery) or query.query_level is not QueryLevel.STUDY:
        raise InvalidQueryError("a sharded crawl starts from a study-level HierarchicalQuery")
    return query


@attrs.frozen
class ShardReport:
    """What running one shard did: its part file and how many studies and rows it holds.

    ``nulled``: the values its part holds as null, not readable as one value of
    their column's type, as ``(column, count)`` pairs (none for a skipped shard).
    """

    name: str
    path: str
    studies: int
    rows: int
    skipped: bool
    nulled: tuple[tuple[str, int], ...] = ()


async def run_shard(
    url: str,
    shard: Shard,
    *,
    out: Path,
    depth: QueryLevel,
    client_options: Mapping[str, Any],
) -> ShardReport:
    """Crawl one shard into its checkpoint, then write its Parquet part (skipped if it exists).

    The crawl raises :class:`~aqido.errors.CrawlIncompleteError` if anything
    is missing (then no part is written, and a re-run resumes from the
    checkpoint).
    """
    from aqido._arrow import write_parquet
    from aqido.client import AsyncQidoRS

    part = part_path(out, url, shard)
    level = depth.name.lower()
    columns = part_columns(level, shard.query)
    if part.exists():
        _check_part(part, level, columns)
        return ShardReport(shard.name, str(part), -1, -1, skipped=True)
    checkpoint = checkpoint_path(out, url, shard)
    try:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(checkpoint.parent, exc, "create the directory") from exc
    async with AsyncQidoRS(url, **client_options) as client:
        async for _ in client.crawl(shard.query, depth=depth, checkpoint=checkpoint):
            pass
    counted: list[int] = [0]
    try:
        studies = _batches(shard, _read(checkpoint), counted)
        written = write_parquet(studies, part, level=level, columns=columns)
    except OSError as exc:  # a full disk, a read-only filesystem...: no part left
        raise write_failed(part, exc, "write the Parquet part") from exc
    nulled = tuple(written.nulled.items())
    return ShardReport(shard.name, str(part), counted[0], written.rows, False, nulled)


def _read(checkpoint: Path) -> Iterator[Any]:
    """A checkpoint's studies; a failure to read it a CheckpointError naming it, not the part."""
    try:
        yield from CrawlCheckpoint.read_studies(checkpoint)
    except OSError as exc:
        raise CheckpointError(f"could not read it: {os_error(exc)}", path=checkpoint) from exc


def part_columns(level: str, query: HierarchicalQuery) -> list[str]:
    """The columns of a shard's part: the default ones at ``level``, then the query's includes.

    An attribute the query asks for with ``include_fields`` (``--include``) is
    fetched, so its part holds it too: a column per keyword or tag, in the
    query's order, after the default ones (:func:`aqido._arrow.default_columns`).
    Not a sequence, nor an attribute inside one (they have no column), and
    ``all`` names no attribute, so it adds none.
    """
    from aqido._arrow import default_columns

    names = default_columns(level)
    for field in query.include_fields:
        if field == "all" or "." in field:
            continue
        tag, _ = dictionary.resolve(field)
        name = dictionary.name_for(tag)
        if dictionary.vr_for(tag) != "SQ" and name not in names:
            names.append(name)
    return names


def _check_part(part: Path, level: str, columns: Sequence[str]) -> None:
    """Refuse to keep a part that is not Parquet, or has other columns than this run writes.

    A part of a run at another ``--depth`` or with other ``--include`` fields
    (or of an aqido whose schema differed) would otherwise be kept as
    finished, its rows mixed with this run's.  Raises
    :class:`~aqido.errors.CheckpointError` naming the file.
    """
    import pyarrow
    import pyarrow.parquet as pq

    from aqido._arrow import arrow_schema

    try:
        schema = pq.read_schema(part)
    except (OSError, pyarrow.ArrowException) as exc:
        raise CheckpointError(
            f"not a readable Parquet part ({type(exc).__name__}); delete it to write it "
            "again from its checkpoint",
            path=part,
        ) from None
    if _columns(schema) != _columns(arrow_schema(level, columns)):
        raise CheckpointError(
            f"a part with other columns than a crawl at depth {level.upper()} writes "
            "(another depth or --include, or an older aqido); use another output directory",
            path=part,
        )


def _columns(schema: Any) -> list[tuple[str, str]]:
    """Each column's name and type, a list's by its value type (Parquet renames the item)."""
    import pyarrow

    return [
        (f.name, f"list<{f.type.value_type}>" if pyarrow.types.is_list(f.type) else str(f.type))
        for f in schema
    ]


def _batches(shard: Shard, studies: Iterator[Any], counted: list[int]) -> Iterator[Sequence[Any]]:
    """The shard's studies in batches, counted; other shards' studies left out (``Shard.holds``).

    Raises :class:`~aqido.errors.CrawlIncompleteError` after the last batch
    (so no part is written) when there are fewer studies than the planning
    listing put in the shard: a server that does not match its StudyDate
    range (``20240101-20240131`` taken for a literal value finds nothing).
    """
    batch: list[Any] = []
    for study in studies:
        if not shard.holds(str(study.StudyInstanceUID), study.StudyDate):
            continue
        batch.append(study)
        counted[0] += 1
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
    if shard.studies is not None and counted[0] < shard.studies:
        error = InvalidResponseError(
            f"the shard's crawl found {counted[0]} of the {shard.studies} studies the planning "
            "listing put in it: the server does not match its StudyDate range or UID list as "
            "QIDO-RS does, or studies were deleted since (plan again into a new directory)"
        )
        raise CrawlIncompleteError([(shard.query, error)], {"STUDY": counted[0]})

"""Crawl files: a study → series → instance crawl as JSON Lines, one study per line.

A crawl file is what ``aqido crawl --out FILE.jsonl`` writes, and what
:func:`read_studies` reads back.  Each line is one *complete* study::

    {"StudyInstanceUID": "1.2...", "study": {<DICOM JSON>},
     "series": [{"series": {<DICOM JSON>}, "instances": [{<DICOM JSON>}, ...]}, ...]}

(``"instances"`` only at instance depth.)  A line is written, in one piece and
flushed, only once the study's whole subtree has been fetched, so after an
interruption the file holds complete studies plus, at worst, one truncated last
line.  :func:`scan` finds the completed studies and the length of the valid
prefix; :class:`CrawlWriter` cuts a truncated tail off before appending.  That
is how ``aqido crawl --resume`` continues a crawl with no duplicates and no gaps.

A small JSON *state* file next to it (``FILE.jsonl.state``) records what was
crawled (URL without credentials, query, depth), so a resume with a different
query is refused instead of silently mixing two crawls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from aqido.errors import QidoError
from aqido.query import QueryLevel
from aqido.results import Instance, Series, Study, structure

__all__ = [
    "CrawlFileError",
    "CrawlState",
    "CrawlWriter",
    "ScanResult",
    "dumps_line",
    "read_studies",
    "scan",
    "state_path",
    "study_from_record",
    "study_record",
]

FORMAT_VERSION = 1


class CrawlFileError(QidoError):
    """A crawl file or its state cannot be used (corrupt line, different crawl)."""


def study_record(study: Study) -> dict[str, Any]:
    """The crawl-file record of ``study`` and the series/instances attached to it."""
    series: list[dict[str, Any]] = []
    for one in study.series:
        entry: dict[str, Any] = {"series": one.to_json()}
        if one.instances:
            entry["instances"] = [instance.to_json() for instance in one.instances]
        series.append(entry)
    return {
        "StudyInstanceUID": study.StudyInstanceUID,
        "study": study.to_json(),
        "series": series,
    }


def study_from_record(record: dict[str, Any]) -> Study:
    """Rebuild the :class:`~aqido.results.Study` (with its series and instances) of a record."""
    children: list[Series] = []
    for entry in record.get("series", []):
        [series] = structure([entry["series"]], QueryLevel.SERIES)
        assert isinstance(series, Series)
        instances = structure(entry.get("instances", []), QueryLevel.INSTANCE)
        assert all(isinstance(i, Instance) for i in instances)
        children.append(attrs.evolve(series, instances=tuple(instances)))
    [study] = structure([record["study"]], QueryLevel.STUDY)
    assert isinstance(study, Study)
    return attrs.evolve(study, series=tuple(children))


def dumps_line(record: dict[str, Any]) -> bytes:
    """One JSON line (UTF-8, no spaces, ends with a newline) for ``record``."""
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


@attrs.frozen
class ScanResult:
    """What a crawl file holds: its completed studies and the valid prefix.

    Attributes:
        done: StudyInstanceUIDs of the complete study lines.
        valid_bytes: length of the prefix made of complete lines.
        dropped_tail: whether a truncated last line (an interrupted write) follows it.
    """

    done: frozenset[str]
    valid_bytes: int
    dropped_tail: bool


def scan(path: str | os.PathLike[str]) -> ScanResult:
    """Read a crawl file: the completed studies and where its complete lines end.

    A last line without its newline, or that is not valid JSON, is an
    interrupted write: it is reported (``dropped_tail``) and not counted.  A bad
    line anywhere else means the file is not an intact crawl file:
    :class:`CrawlFileError`.  A missing file is an empty crawl.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return ScanResult(frozenset(), 0, False)
    done: set[str] = set()
    position = 0
    line_number = 0
    while position < len(data):
        end = data.find(b"\n", position)
        line_number += 1
        if end < 0:  # no newline: the write of the last line was cut short
            return ScanResult(frozenset(done), position, True)
        try:
            record = json.loads(data[position:end])
            uid = record["StudyInstanceUID"]
            if not isinstance(uid, str) or not isinstance(record["study"], dict):
                raise TypeError(uid)
        except (ValueError, KeyError, TypeError) as exc:
            if end == len(data) - 1:  # a garbled last line: also an interrupted write
                return ScanResult(frozenset(done), position, True)
            raise CrawlFileError(
                f"{path}: line {line_number} is not a crawl-file study record; "
                "it was not written by `aqido crawl`, or was modified"
            ) from exc
        done.add(uid)
        position = end + 1
    return ScanResult(frozenset(done), position, False)


def read_studies(path: str | os.PathLike[str]) -> Iterator[Study]:
    """Yield the complete studies of a crawl file (a truncated last line is skipped)."""
    with Path(path).open("rb") as lines:
        for line in lines:
            if not line.endswith(b"\n"):
                return
            yield study_from_record(json.loads(line))


def state_path(path: str | os.PathLike[str]) -> Path:
    """Where the state of the crawl written to ``path`` is kept: ``path`` + ``.state``."""
    return Path(f"{os.fspath(path)}.state")


@attrs.frozen(kw_only=True)
class CrawlState:
    """What a crawl file is a crawl of: checked before resuming it.

    Attributes:
        url: the service root, without credentials.
        query: the study query's relative URL (``/studies?...``).
        depth: ``"STUDY"``, ``"SERIES"`` or ``"INSTANCE"``.
    """

    url: str
    query: str
    depth: str

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state next to the crawl file ``path``."""
        record = {"format": FORMAT_VERSION, **attrs.asdict(self)}
        state_path(path).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CrawlState | None:
        """The state saved next to ``path``, or ``None`` if there is none."""
        try:
            record = json.loads(state_path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise CrawlFileError(f"{state_path(path)} is not a crawl state file") from exc
        if not isinstance(record, dict) or record.get("format") != FORMAT_VERSION:
            raise CrawlFileError(f"{state_path(path)} is not a crawl state file (format 1)")
        try:
            return cls(url=record["url"], query=record["query"], depth=record["depth"])
        except KeyError as exc:
            raise CrawlFileError(f"{state_path(path)} lacks {exc}") from exc

    def differences(self, other: CrawlState) -> list[str]:
        """What differs between this crawl and ``other``, as ``"name: a != b"`` strings."""
        return [
            f"{field.name}: {getattr(self, field.name)!r} != {getattr(other, field.name)!r}"
            for field in attrs.fields(CrawlState)
            if getattr(self, field.name) != getattr(other, field.name)
        ]


class CrawlWriter:
    """Appends complete study lines to a crawl file, each in one write, flushed.

    ``CrawlWriter(path, keep_bytes=n)`` truncates the file to its first ``n``
    bytes (the valid prefix from :func:`scan`) and appends after it;
    ``keep_bytes=0`` starts a new file.  Use it as a context manager.
    """

    def __init__(self, path: str | os.PathLike[str], *, keep_bytes: int = 0) -> None:
        self.path = Path(path)
        mode = "r+b" if keep_bytes and self.path.exists() else "wb"
        self._file = self.path.open(mode)
        self._file.truncate(keep_bytes if mode == "r+b" else 0)
        self._file.seek(0, os.SEEK_END)
        self.written = 0

    def write(self, study: Study) -> None:
        """Append ``study`` (with its subtree) as one line and flush it to the OS."""
        self._file.write(dumps_line(study_record(study)))
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        """Flush to disk and close (idempotent)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> CrawlWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

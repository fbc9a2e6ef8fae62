"""``CrawlCheckpoint``: a crawl's results in a JSONL file that a later run can resume.

The file is the crawl's output *and* its state.  One JSON object per line:

- a header, written once when the file is created::

      {"aqido_crawl": 1, "query": "/studies?StudyDate=20240101-", "depth": "INSTANCE"}

- one line per study, written only when the study's whole subtree has been
  fetched (so a study in the file is always complete)::

      {"StudyInstanceUID": "1.2...", "study": {<DICOM JSON>},
       "series": [{"series": {<DICOM JSON>}, "instances": [{<DICOM JSON>}, ...]}, ...]}

  (``"series": []`` at depth STUDY; ``"instances": []`` at depth SERIES; the
  same study line as the ``aqido crawl`` CLI's files, whose readers also
  accept a missing ``"instances"``);

- an end record each time a run finishes (not when it is killed)::

      {"end": {"complete": true, "studies": 2040, "failures": []}}

  with ``"failures"`` as ``[{"query": "/studies/1.2/series", "error": "ServerError: ..."}]``.

Resuming (opening an existing file) reads every complete line, drops a last
line cut short by a kill, checks that the header names the same query and
depth, and returns the StudyInstanceUIDs already written: the crawl lists the
studies again and skips those, so the file ends up with exactly the studies of
a clean run, each once.  If the last end record says ``complete``, there is
nothing left to do.  Lines are flushed as they are written (``fsync=True``
also syncs them to disk, for power loss rather than a killed process).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from aqido.errors import CrawlFailure
from aqido.query import BaseQuery, QueryLevel

#: The format version written in the header (``"aqido_crawl": 1``).
CHECKPOINT_VERSION = 1
_STUDY_UID = "0020000D"


def _study_uid(study_json: dict[str, Any]) -> str | None:
    element = study_json.get(_STUDY_UID)
    values = element.get("Value") if isinstance(element, dict) else None
    if values and isinstance(values[0], str):
        return values[0].rstrip("\x00 ")
    return None


class CrawlCheckpoint:
    """A JSONL crawl output file that records progress and lets a crawl resume.

    Use it through ``client.crawl(query, checkpoint="out.jsonl")`` (a path or
    a ``CrawlCheckpoint``); run the same call again after an interruption to
    finish the crawl.  :meth:`read_studies` loads the file back as ``Study``
    objects with their series and instances attached.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.done: set[str] = set()
        self.finished_complete = False
        self._file: IO[str] | None = None

    def __repr__(self) -> str:
        return f"CrawlCheckpoint({str(self.path)!r}, done={len(self.done)})"

    # --- reading ------------------------------------------------------------------------

    @staticmethod
    def _records(path: Path) -> tuple[list[dict[str, Any]], int]:
        """Every complete JSON line, and the byte length of the good prefix of the file."""
        records: list[dict[str, Any]] = []
        good = 0
        with path.open("rb") as file:
            for raw in file:
                if not raw.endswith(b"\n"):
                    break  # cut short by a kill: dropped
                try:
                    record = json.loads(raw)
                except ValueError:
                    break
                if not isinstance(record, dict):
                    break
                records.append(record)
                good += len(raw)
        return records, good

    @classmethod
    def read_records(cls, path: str | os.PathLike[str]) -> list[dict[str, Any]]:
        """Every complete record (header, study lines, end records) of a checkpoint file."""
        return cls._records(Path(path))[0]

    @classmethod
    def read_studies(cls, path: str | os.PathLike[str]) -> Iterator[Any]:
        """Yield the studies of a checkpoint file as ``Study`` objects, subtrees attached."""
        import attrs

        from aqido.results import Instance, Series, Study

        for record in cls._records(Path(path))[0]:
            if "study" not in record:
                continue
            series = []
            for entry in record.get("series", ()):
                instances = [Instance.from_json(i) for i in entry.get("instances", ())]
                series.append(attrs.evolve(Series.from_json(entry["series"]), instances=instances))
            yield attrs.evolve(Study.from_json(record["study"]), series=series)

    # --- writing (used by the crawl) ----------------------------------------------------

    def open(self, query: BaseQuery, depth: QueryLevel) -> set[str]:
        """Open for appending (creating the file and its header if needed).

        Returns the StudyInstanceUIDs already written.  Raises ``ValueError``
        if the file belongs to a crawl of another query or depth.
        """
        header = {"aqido_crawl": CHECKPOINT_VERSION, "query": str(query), "depth": depth.name}
        self.done = set()
        self.finished_complete = False
        records: list[dict[str, Any]] = []
        good = 0
        if self.path.exists() and self.path.stat().st_size > 0:
            records, good = self._records(self.path)
            if not records:
                data = self.path.read_bytes()
                if not self._line(header).encode("utf-8").startswith(data):
                    raise ValueError(f"{self.path} is not an aqido crawl checkpoint")
                # else: this crawl was killed while writing its header; start again
        if records:
            if records[0].get("aqido_crawl") is None:
                raise ValueError(f"{self.path} is not an aqido crawl checkpoint")
            first = records[0]
            if first.get("query") != header["query"] or first.get("depth") != header["depth"]:
                raise ValueError(
                    f"{self.path} holds a crawl of {first.get('query')!r} at depth "
                    f"{first.get('depth')}, not {header['query']!r} at {header['depth']}; "
                    "use another file to start a new crawl"
                )
            for record in records:
                if "study" in record:
                    uid = record.get("StudyInstanceUID") or _study_uid(record["study"])
                    if uid:
                        self.done.add(uid)
                if "end" in record:
                    self.finished_complete = bool(record["end"].get("complete"))
            with self.path.open("r+b") as file:
                file.truncate(good)
            self._file = self.path.open("a", encoding="utf-8")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")
            self._write(header)
        return set(self.done)

    @staticmethod
    def _line(record: dict[str, Any]) -> str:
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"

    def _write(self, record: dict[str, Any]) -> None:
        assert self._file is not None, "open() the checkpoint first"
        self._file.write(self._line(record))
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def write_study(self, study: Any) -> None:
        """Append one complete study (with ``.series`` and their ``.instances``)."""
        self._write(
            {
                "StudyInstanceUID": str(study.StudyInstanceUID),
                "study": study.to_json(),
                "series": [
                    {"series": s.to_json(), "instances": [i.to_json() for i in s.instances]}
                    for s in study.series
                ],
            }
        )
        self.done.add(str(study.StudyInstanceUID))

    def write_end(self, studies: int, failures: list[CrawlFailure]) -> None:
        """Append an end record for this run."""
        self._write(
            {
                "end": {
                    "complete": not failures,
                    "studies": studies,
                    "failures": [
                        {"query": str(f.query), "error": f"{type(f.error).__name__}: {f.error}"}
                        for f in failures
                    ],
                }
            }
        )

    def close(self) -> None:
        """Close the file (idempotent)."""
        file, self._file = self._file, None
        if file is not None:
            file.close()

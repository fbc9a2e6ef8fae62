"""What every part of the command line shares: exit statuses, the usage error, columns."""

from __future__ import annotations

import io
from typing import IO, Any

from aqido.errors import TransportError
from aqido.query import QueryLevel
from aqido.terminal import printable

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
SHORT_HEADINGS = {
    "NumberOfStudyRelatedSeries": "Series",
    "NumberOfStudyRelatedInstances": "Instances",
    "NumberOfSeriesRelatedInstances": "Instances",
    "ModalitiesInStudy": "Modalities",
}


class UsageError(Exception):
    """A bad command line: reported in one line, exit status 2."""


def isatty(stream: IO[str] | io.TextIOBase | Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def one_line(error: BaseException) -> str:
    """An error as one safe line: whitespace collapsed, control characters escaped."""
    text = " ".join(str(error).split())
    if isinstance(error, TransportError):
        cause = error.__cause__
        reason = " ".join(str(cause).split()) if cause is not None else ""
        text = f"{text} ({reason})" if reason and reason not in text else text
    return printable(text or type(error).__name__)

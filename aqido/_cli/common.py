"""What every part of the command line shares: exit statuses, the usage error, columns."""

from __future__ import annotations

import io
from typing import IO, Any

from aqido.errors import TransportError, _failure_query
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


def failure_error(error: BaseException) -> str:
    """An error in a crawl's ``could not fetch`` line: :func:`one_line`, its URL cut."""
    return cut_url(one_line(error), error)


def cut_url(shown: str, error: BaseException) -> str:
    """``shown`` (``error``'s message, escaped) with ``error.url`` cut as a failure's query is.

    A ``could not fetch`` line names the failed query already, and an error's
    message repeats its URL: with a 50-UID query, thousands of characters.
    There the URL keeps its first 150 characters and says how many more it
    had; the status, reason and body excerpt stay whole.
    """
    url = getattr(error, "url", None)
    if url:
        whole = printable(str(url))
        cut = printable(_failure_query(url))
        if len(cut) < len(whole):
            return shown.replace(whole, cut)
    return shown

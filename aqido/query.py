"""Immutable, validated QIDO-RS queries: a search turned into a path and parameters.

Pure: no I/O happens here.
"""

from __future__ import annotations

import enum

__all__ = ["QueryLevel"]


class QueryLevel(str, enum.Enum):
    """The information-model level a query searches: study, series or instance."""

    STUDY = "STUDY"
    SERIES = "SERIES"
    INSTANCE = "INSTANCE"

    def __str__(self) -> str:
        return self.value

"""The crawl's only writer of :class:`~aqido.stats.CrawlStats` (and its progress hook)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aqido.errors import CrawlFailure
from aqido.progress import CrawlProgress, report
from aqido.stats import MAX_WARNINGS, CrawlStats

if TYPE_CHECKING:  # pragma: no cover
    from aqido.protocol import QidoWarning

__all__ = ["Recorder"]


class Recorder:
    """The crawl's side of its :class:`~aqido.stats.CrawlStats` and progress hook.

    Every update of the statistics goes through here, and the progress hook
    (a :class:`~aqido.progress.CrawlProgress`) hears about each change
    (``update``) and each completed study; the crawl is the only writer.
    """

    def __init__(self, stats: CrawlStats, progress: CrawlProgress | None = None) -> None:
        self.stats = stats
        self.progress = progress
        self._warned: set[QidoWarning] = set()  # those in stats.warnings

    def changed(self) -> None:
        if self.progress is not None:
            self.progress.update(self.stats)

    def start(self) -> None:
        """Reset every counter: one ``CrawlStats`` describes one crawl (the latest)."""
        stats = self.stats
        stats.requests = stats.retries = stats.pages = stats.splits = 0
        stats.items = {"STUDY": 0, "SERIES": 0, "INSTANCE": 0}
        stats.studies_done = stats.studies_skipped = 0
        stats.failures = []
        stats.started = time.monotonic()
        stats.finished = None
        stats.concurrency_limit = None
        stats.concurrency_history = []
        stats.warnings = []
        stats.warning_count = 0
        self._warned = set()
        self.changed()

    def finish(self) -> None:
        self.stats.finished = time.monotonic()
        self.changed()

    def request(self) -> None:
        self.stats.requests += 1

    def limit(self, limit: int) -> None:
        """The client's concurrency limit, seen around a request: kept when it changed."""
        stats = self.stats
        if limit != stats.concurrency_limit:
            stats.concurrency_limit = limit
            stats.concurrency_history.append((stats.elapsed, limit))

    def retry(self, _error: object = None, _delay: float = 0.0) -> None:
        self.stats.retries += 1
        self.changed()

    def page(self) -> None:
        self.stats.pages += 1

    def warned(self, warnings: tuple[QidoWarning, ...]) -> None:
        """A response's ``Warning`` headers: counted, and kept once each (the first 100).

        Not a truncation warning: the crawl acts on those itself (it pages or splits).
        """
        stats = self.stats
        for warning in warnings:
            if warning.is_truncation:
                continue
            stats.warning_count += 1
            if warning not in self._warned and len(stats.warnings) < MAX_WARNINGS:
                self._warned.add(warning)
                stats.warnings.append(warning)

    def items(self, level: str, new_items: int) -> None:
        items = self.stats.items
        items[level] = items.get(level, 0) + new_items
        self.changed()

    def split(self) -> None:
        self.stats.splits += 1

    def study_done(self, study: Any) -> None:
        self.stats.studies_done += 1
        if self.progress is not None:
            report(self.progress, study)
        self.changed()

    def failed(self, query: object, error: BaseException) -> None:
        self.stats.failures.append(CrawlFailure(query, error))
        self.changed()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()

"""``CrawlStats``: live accounting of a bulk crawl, for progress bars and reports.

A crawl updates one :class:`CrawlStats` as it goes (pass your own with
``client.crawl(..., stats=stats)`` and read it whenever you like, e.g. from a
progress-bar refresh, or give ``on_progress``), and the same object holds the
final numbers afterwards.  Only plain counters are touched, from the crawl's
event loop; reading them from another thread gives a consistent-enough view
for display.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs

from aqido.errors import CrawlFailure


def _levels() -> dict[str, int]:
    return {"STUDY": 0, "SERIES": 0, "INSTANCE": 0}


@attrs.define(kw_only=True, eq=False)
class CrawlStats:
    """What a crawl has done so far (live during the crawl, final after it).

    Pass one to ``client.crawl(..., stats=stats)``; a crawl resets it when it
    starts, so reusing one for the next crawl is fine.

    Attributes:
        requests: logical requests sent (each may take several attempts).
        retries: attempts repeated after a transient failure (5xx, 429, connection
            errors, truncated bodies), per the client's :class:`~aqido.retry.Retry`.
        pages: responses received (every page of every part).
        splits: queries split into smaller ones because they looked truncated.
        items: results fetched per level (``"STUDY"``, ``"SERIES"``, ``"INSTANCE"``),
            each counted once (duplicates from overlapping pages or parts are not).
        studies_done: studies whose whole subtree was fetched (and handed out).
        studies_skipped: studies found already complete in a checkpoint file (resume).
        failures: :class:`~aqido.errors.CrawlFailure` ``(query, error)`` for every
            part that failed for good.
        started, finished: ``time.monotonic()`` at the start and end (``None`` while
            not started / still running).
        on_progress: called with this object after each change (keep it cheap).
    """

    requests: int = 0
    retries: int = 0
    pages: int = 0
    splits: int = 0
    items: dict[str, int] = attrs.field(factory=_levels)
    studies_done: int = 0
    studies_skipped: int = 0
    failures: list[CrawlFailure] = attrs.field(factory=list)
    started: float | None = None
    finished: float | None = None
    on_progress: Callable[[CrawlStats], Any] | None = attrs.field(default=None, repr=False)

    @property
    def elapsed(self) -> float:
        """Seconds since the crawl started (until it finished); 0 before it starts."""
        if self.started is None:
            return 0.0
        end = self.finished if self.finished is not None else time.monotonic()
        return end - self.started

    @property
    def complete(self) -> bool:
        """Whether the crawl has finished with nothing missing."""
        return self.finished is not None and not self.failures

    @property
    def running(self) -> bool:
        """Whether the crawl has started and not finished yet."""
        return self.started is not None and self.finished is None

    def counts(self) -> dict[str, int]:
        """Items fetched per level, leaving out levels with none (for messages)."""
        return {level: n for level, n in self.items.items() if n}

    def summary(self) -> str:
        """One line for logs and progress bars."""
        parts = [
            f"{self.studies_done} studies done",
            f"{self.items['SERIES']} series",
            f"{self.items['INSTANCE']} instances",
            f"{self.requests} requests",
            f"{self.retries} retries",
            f"{self.splits} splits",
        ]
        if self.studies_skipped:
            parts.append(f"{self.studies_skipped} resumed")
        if self.failures:
            parts.append(f"{len(self.failures)} failed")
        return ", ".join(parts) + f" in {self.elapsed:.1f} s"

    # --- updates (called by the crawl) ---------------------------------------------------

    def _changed(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self)

    def _start(self) -> None:
        """Reset every counter: one ``CrawlStats`` describes one crawl (the latest)."""
        self.requests = self.retries = self.pages = self.splits = 0
        self.items = _levels()
        self.studies_done = self.studies_skipped = 0
        self.failures = []
        self.started = time.monotonic()
        self.finished = None
        self._changed()

    def _finish(self) -> None:
        self.finished = time.monotonic()
        self._changed()

    def _request(self) -> None:
        self.requests += 1

    def _retry(self, _error: object = None, _delay: float = 0.0) -> None:
        self.retries += 1
        self._changed()

    def _page(self) -> None:
        self.pages += 1

    def _items(self, level: str, new_items: int) -> None:
        self.items[level] = self.items.get(level, 0) + new_items
        self._changed()

    def _split(self) -> None:
        self.splits += 1

    def _study_done(self) -> None:
        self.studies_done += 1
        self._changed()

    def _failed(self, query: object, error: BaseException) -> None:
        self.failures.append(CrawlFailure(query, error))
        self._changed()

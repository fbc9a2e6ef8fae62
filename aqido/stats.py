"""``CrawlStats``: live accounting of a bulk crawl, for progress bars and reports.

A crawl updates one :class:`CrawlStats` as it goes (pass your own with
``client.crawl(..., stats=stats)`` and read it whenever you like, or give
``client.crawl(..., progress=...)`` a :class:`~aqido.progress.CrawlProgress`,
whose ``update(stats)`` is called after each change), and the same object
holds the final numbers afterwards.  Only the crawl writes to it (plain
counters, from the crawl's event loop); reading them from another thread
gives a consistent-enough view for display.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import attrs

from aqido.errors import CrawlFailure

if TYPE_CHECKING:  # pragma: no cover
    from aqido.protocol import QidoWarning

#: How many distinct warnings :attr:`CrawlStats.warnings` keeps: a server may word one per
#: request (its URL in the text), and a crawl sends a million; ``warning_count`` counts all.
MAX_WARNINGS = 100


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
        concurrency_limit: the client's limit on requests in flight, as last seen
            (it moves with ``max_concurrency="auto"``; ``None`` before the first request).
        concurrency_history: ``(seconds since the start, limit)`` for every change of
            ``concurrency_limit`` during the crawl, the first entry included.
        warnings: the distinct ``Warning`` headers the server sent during the crawl
            (:class:`~aqido.protocol.QidoWarning`, each once, in the order first seen;
            the first 100 kept), such as PS3.18's "fuzzymatching not supported"; not
            the truncation warnings, which the crawl acts on itself (it pages or splits,
            and reports what it could not fetch).  Each one is also logged, with its
            URL, as it arrives (logger ``aqido.server``).
        warning_count: every such warning received (one per warning, per response).
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
    concurrency_limit: int | None = None
    concurrency_history: list[tuple[float, int]] = attrs.field(factory=list)
    warnings: list[QidoWarning] = attrs.field(factory=list)
    warning_count: int = 0
    finished: float | None = None

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
        if self.warning_count:
            parts.append(f"{self.warning_count} server warnings")
        return ", ".join(parts) + f" in {self.elapsed:.1f} s"

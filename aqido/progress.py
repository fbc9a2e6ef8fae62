"""Progress reporting for crawls: one hook API, and a tqdm progress bar.

:class:`CrawlProgress` is the one progress mechanism: the library's crawls
(``AsyncQidoRS.crawl(progress=...)``, ``QidoRS.crawl(progress=...)``), the
notebooks' bars and the ``aqido`` command's live display all use it.  A crawl
calls ``update(stats)`` after every change of its
:class:`~aqido.stats.CrawlStats` (requests, items, retries, failures...),
``study_done``, ``series_done`` and ``instance_done`` as results complete (a
study after its series, a series after its instances) and ``close`` once at
the end, however the crawl ends.  Subclass it to feed your own display, log
or metrics; every method is a no-op by default.

Off by default in library code.  Turn it on with ``progress=True`` on
``crawl`` (a :class:`TqdmProgress`), give your own ``CrawlProgress``, or wrap
any async iterator of studies with :func:`track`::

    async for study in track(client.crawl(query), progress=True):
        ...

``progress=True`` is :class:`TqdmProgress`: a tqdm bar counting studies (with
series and instance counts), a widget in Jupyter when ipywidgets is
installed, text on stderr otherwise.  tqdm is optional (``pip install
'aqido[progress]'``) and imported only when a bar is made.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from aqido.results import Instance, Series, Study
    from aqido.stats import CrawlStats

__all__ = ["CrawlProgress", "TqdmProgress", "make_progress", "report", "track"]


class CrawlProgress:
    """Callbacks a crawl calls as it completes work; override the ones you need."""

    def update(self, stats: CrawlStats) -> None:
        """The crawl's counters changed (called often: keep it cheap)."""

    def study_done(self, study: Study) -> None:
        """A study is complete (its series, and their instances, reported before it)."""

    def series_done(self, series: Series) -> None:
        """A series is complete (its instances reported before it)."""

    def instance_done(self, instance: Instance) -> None:
        """An instance was listed."""

    def close(self) -> None:
        """The crawl ended (finished, failed, cancelled or left early)."""


def _tqdm_class() -> Any:
    """tqdm's notebook widget inside a Jupyter kernel with ipywidgets, its text bar otherwise."""
    try:
        from tqdm.std import tqdm
    except ImportError as exc:
        raise ImportError(
            "progress bars need tqdm: install it with `pip install 'aqido[progress]'`"
        ) from exc
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    in_kernel = shell is not None and "IPKernelApp" in getattr(shell, "config", {})
    if in_kernel and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm
    return tqdm


class TqdmProgress(CrawlProgress):
    """A tqdm progress bar counting studies, with series and instances as a postfix.

    ``total``: the number of studies when known (a percentage and an ETA are
    shown then); ``**options`` go to ``tqdm`` (``desc``, ``file``,
    ``leave``, ``disable``...).
    """

    def __init__(self, total: int | None = None, **options: Any) -> None:
        options.setdefault("desc", "crawl")
        options.setdefault("unit", "study")
        self.series = 0
        self.instances = 0
        self.bar = _tqdm_class()(total=total, **options)

    def study_done(self, study: Study) -> None:
        self.bar.set_postfix(series=self.series, instances=self.instances, refresh=False)
        self.bar.update(1)

    def series_done(self, series: Series) -> None:
        self.series += 1

    def instance_done(self, instance: Instance) -> None:
        self.instances += 1

    def close(self) -> None:
        self.bar.close()


def make_progress(progress: bool | CrawlProgress | None) -> CrawlProgress | None:
    """What a ``progress=`` argument means: ``None``/``False`` none, ``True`` a
    :class:`TqdmProgress`, a :class:`CrawlProgress` itself."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return TqdmProgress()
    if isinstance(progress, CrawlProgress):
        return progress
    raise TypeError(f"progress must be a bool or a CrawlProgress, not {type(progress).__name__}")


def report(progress: CrawlProgress, study: Study) -> None:
    """Report one finished study of a crawl, children first."""
    for series in study.series:
        for instance in series.instances:
            progress.instance_done(instance)
        progress.series_done(series)
    progress.study_done(study)


async def track(
    studies: AsyncIterator[Study], progress: bool | CrawlProgress | None = True
) -> AsyncGenerator[Study, None]:
    """Yield the studies of an async crawl, reporting each to ``progress`` as it arrives.

    The hook is closed, and the crawl (when it is an async generator) too,
    however the loop ends.
    """
    hook = make_progress(progress)
    closing: AbstractAsyncContextManager[Any] = (
        aclosing(studies) if isinstance(studies, AsyncGenerator) else nullcontext()
    )
    try:
        async with closing:
            async for study in studies:
                if hook is not None:
                    report(hook, study)
                yield study
    finally:
        if hook is not None:
            hook.close()

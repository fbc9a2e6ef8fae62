"""aqido's demo archive: synthetic studies served in-process, for ``aqido demo`` and the examples.

``demo_archive()`` is a :class:`~aqido.testing.FakeArchive` (not yet started)
serving a deterministic :class:`~aqido.testing.SyntheticArchive`;
``archive_url(url)`` lets a script run against a real archive when given its
URL and against the demo archive otherwise::

    async with archive_url(os.environ.get("AQIDO_URL")) as url:
        async with AsyncQidoRS(url) as client:
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aqido.testing.archive import FakeArchive
from aqido.testing.synthetic import SyntheticArchive

#: The seed of the demo content (the same studies, names and UIDs everywhere).
DEMO_SEED = 1


def demo_archive(
    studies: int = 200,
    *,
    seed: int = DEMO_SEED,
    series_per_study: int = 3,
    instances_per_series: int = 4,
    **options: Any,
) -> FakeArchive:
    """A FakeArchive with ``studies`` synthetic studies (start it with ``async with``).

    ``options`` are :class:`FakeArchive` options (``latency``, ``faults``, ...).
    """
    content = SyntheticArchive(
        seed=seed,
        studies=studies,
        series_per_study=series_per_study,
        instances_per_series=instances_per_series,
    )
    return FakeArchive(content, **options)


@asynccontextmanager
async def archive_url(
    url: str | None = None, *, studies: int = 50, **options: Any
) -> AsyncIterator[str]:
    """Yield ``url``; without one (``None`` or ``""``), run the demo archive and yield its URL.

    The demo archive (``studies`` synthetic studies, ``options`` as for
    :func:`demo_archive`) stops when the block ends.
    """
    if url:
        yield url
        return
    async with demo_archive(studies, **options) as archive:
        yield archive.url

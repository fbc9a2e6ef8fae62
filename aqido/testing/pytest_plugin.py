"""pytest fixtures for code that talks QIDO-RS: a running :class:`FakeArchive` per test.

Installed with aqido, this plugin is registered automatically (entry point
``pytest11: aqido``).  Fixtures:

``qido_synthetic`` (session)
    The :class:`~aqido.testing.synthetic.SyntheticArchive` behind ``qido_archive``
    (seed 42, 20 studies x 3 series x 2 instances): compute expected answers from it.
``qido_archive``
    A running ``FakeArchive`` serving ``qido_synthetic``; ``qido_archive.url``
    is the service root (``http://127.0.0.1:PORT/dicom-web``).
``make_qido_archive``
    A factory: ``make_qido_archive(content=None, **options)`` starts a
    ``FakeArchive`` with any options (``empty_status=200``, ``faults=...``,
    ``basic_auth=...``); ``content=None`` serves ``qido_synthetic``.  Every
    archive is stopped at the end of the test.

The archives run on their own event loop in a background thread, so the
fixtures are plain synchronous fixtures: they work in sync tests, in
``@pytest.mark.anyio`` tests and under pytest-asyncio alike, and need no
async-fixture support.  (Inside one async test you can also write
``async with FakeArchive(...) as archive:``.)

This module is imported by pytest at start-up wherever aqido is installed, so
it imports nothing heavy until a fixture is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from aqido.testing.archive import FakeArchive
    from aqido.testing.synthetic import SyntheticArchive


@pytest.fixture(scope="session")
def qido_synthetic() -> SyntheticArchive:
    """The synthetic content of ``qido_archive``: seed 42, 20 studies x 3 series x 2 instances."""
    from aqido.testing.synthetic import SyntheticArchive

    return SyntheticArchive(seed=42, studies=20, series_per_study=3, instances_per_series=2)


@pytest.fixture
def make_qido_archive(
    qido_synthetic: SyntheticArchive,
) -> Iterator[Callable[..., FakeArchive]]:
    """Factory: ``make_qido_archive(content=None, **options)`` → a running ``FakeArchive``."""
    from aqido.testing.archive import FakeArchive

    with contextlib.ExitStack() as stack:

        def make(content: Any = None, **options: Any) -> FakeArchive:
            archive = FakeArchive(qido_synthetic if content is None else content, **options)
            return stack.enter_context(archive.run_in_thread())

        yield make


@pytest.fixture
def qido_archive(make_qido_archive: Callable[..., FakeArchive]) -> FakeArchive:
    """A running ``FakeArchive`` serving ``qido_synthetic`` with default options."""
    return make_qido_archive()

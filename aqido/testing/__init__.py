"""Test helpers for code that talks QIDO-RS: a fake archive and synthetic data.

Nothing here is imported by ``import aqido``.  The pieces:

- :mod:`aqido.testing.synthetic`: a deterministic synthetic archive generator
  (``SyntheticArchive``) with DICOM JSON and pydicom output, so tests compute
  expected answers from the seed.
- :mod:`aqido.testing.archive`: ``FakeArchive``, an in-process QIDO-RS server
  (aiohttp.web on 127.0.0.1) that behaves like the servers in the wild.
- :mod:`aqido.testing.demo`: the demo archive of ``aqido demo`` and the
  examples (``demo_archive``, ``archive_url``).
- :mod:`aqido.testing.pytest_plugin`: the ``qido_archive`` and
  ``make_qido_archive`` pytest fixtures (registered as the ``aqido`` plugin).

Names are resolved lazily, so ``import aqido.testing`` does not import aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aqido._lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from aqido.testing.archive import FakeArchive as FakeArchive
    from aqido.testing.archive import Fault as Fault
    from aqido.testing.archive import Faults as Faults
    from aqido.testing.archive import ServedRequest as ServedRequest
    from aqido.testing.demo import archive_url as archive_url
    from aqido.testing.demo import demo_archive as demo_archive
    from aqido.testing.synthetic import SyntheticArchive as SyntheticArchive
    from aqido.testing.synthetic import generate_uid as generate_uid

_LAZY: dict[str, str] = {
    "FakeArchive": "aqido.testing.archive",
    "Fault": "aqido.testing.archive",
    "Faults": "aqido.testing.archive",
    "ServedRequest": "aqido.testing.archive",
    "SyntheticArchive": "aqido.testing.synthetic",
    "archive_url": "aqido.testing.demo",
    "demo_archive": "aqido.testing.demo",
    "generate_uid": "aqido.testing.synthetic",
}

__all__ = [
    "FakeArchive",
    "Fault",
    "Faults",
    "ServedRequest",
    "SyntheticArchive",
    "archive_url",
    "demo_archive",
    "generate_uid",
]


if not TYPE_CHECKING:
    # Hidden from type checkers: they see the names imported above, and a module
    # __getattr__ would make any other name (a misspelled one) an unchecked Any.
    __getattr__, __dir__ = lazy_exports("aqido.testing", globals(), _LAZY, __all__)

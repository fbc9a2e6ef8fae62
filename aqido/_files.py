"""Output files written whole or not at all: a temporary file of one's own, renamed into place.

Used by the writers of a sharded crawl's directory (:mod:`aqido._shards`):
the plan here, the Parquet parts in :func:`aqido._arrow.write_parquet`.
Each writer gets its own temporary file (``tempfile.mkstemp``), so two runs,
processes or Dask tasks writing the same file at once never rename each
other's half-written file into place.  It is in the target's directory (so
the rename is atomic) and hidden (``.<name>.<random>.tmp``: dataset readers
skip it), and removed when the write fails.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def temporary_for(path: str | os.PathLike[str]) -> Iterator[str]:
    """A new, empty temporary file of this writer's own next to ``path``; removed on failure.

    The caller writes it and renames it onto ``path`` before the block ends.
    """
    head, name = os.path.split(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=head or os.curdir)
    os.close(fd)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_whole(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file of its own, renamed into place."""
    with temporary_for(path) as tmp:
        with open(tmp, "wb") as file:
            file.write(data)
        os.replace(tmp, path)

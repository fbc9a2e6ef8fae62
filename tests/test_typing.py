"""What type checkers see of aqido: checked by running mypy on a snippet (skipped without it)."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Subclasses of every context manager of aqido that returns itself: ``with X() as x``
#: must type ``x`` as the subclass (``Self``), not as aqido's class (its own methods lost).
SUBCLASSES_ENTERED = textwrap.dedent(
    """
    from typing_extensions import assert_type

    from aqido import AsyncQidoRS, QidoRS
    from aqido._tasks import FirstErrorGroup
    from aqido.testing import FakeArchive
    from aqido.testing.orthanc import OrthancServer
    from aqido.testing.tinypacs import TinyPacsServer


    class MyArchive(FakeArchive): ...
    class MyOrthanc(OrthancServer): ...
    class MyTinyPacs(TinyPacsServer): ...
    class MyGroup(FirstErrorGroup): ...
    class MyAsync(AsyncQidoRS): ...
    class MyBlocking(QidoRS): ...


    async def entered(archive: MyArchive, group: MyGroup, client: MyAsync) -> None:
        async with archive as a, group as g, client as c:
            assert_type(a, MyArchive)
            assert_type(g, MyGroup)
            assert_type(c, MyAsync)


    def entered_sync(orthanc: MyOrthanc, tiny: MyTinyPacs, blocking: MyBlocking) -> None:
        with orthanc as o, tiny as t, blocking as b:
            assert_type(o, MyOrthanc)
            assert_type(t, MyTinyPacs)
            assert_type(b, MyBlocking)
    """
)


def test_a_subclass_entered_as_a_context_manager_keeps_its_type(tmp_path: pathlib.Path) -> None:
    api = pytest.importorskip("mypy.api")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SUBCLASSES_ENTERED, encoding="utf-8")
    out, err, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),  # strict, Python 3.10 (typing_extensions' Self)
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-error-summary",
            str(snippet),
        ]
    )
    assert status == 0, out + err  # mypy's errors: "Expression is of type FakeArchive..."
    assert (out, err) == ("", "")

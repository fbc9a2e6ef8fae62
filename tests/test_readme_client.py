"""The README's client and crawling sections: every Python code block runs as-is.

A run of ``# ...`` comment lines right after a block's last ``asyncio.run(...)``
or ``print(...)`` line shows what the block prints; it is checked.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(title)
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _blocks() -> list[str]:
    sections = _section("## The client") + _section("## Crawling")
    return re.findall(r"```python\n(.*?)```", sections, flags=re.DOTALL)


def _shown_output(block: str) -> list[str]:
    lines = block.rstrip("\n").splitlines()
    shown: list[str] = []
    while lines and lines[-1].startswith("# "):
        shown.insert(0, lines.pop()[2:])
    return shown


def test_the_sections_have_code() -> None:
    assert len(_blocks()) >= 4
    assert all(_shown_output(block) for block in _blocks())


@pytest.mark.parametrize("block", _blocks())
def test_readme_client_block_runs(block: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
    assert out.getvalue().splitlines() == _shown_output(block)

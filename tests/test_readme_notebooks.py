"""The README's "Notebooks and scripts" section: every Python code block runs as-is.

A run of ``# ...`` comment lines at the end of a block shows what it prints; it is checked.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import re
import threading

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Notebooks and scripts")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def _shown_output(block: str) -> list[str]:
    lines = block.rstrip("\n").splitlines()
    shown: list[str] = []
    while lines and lines[-1].startswith("# "):
        shown.insert(0, lines.pop()[2:])
    return shown


def test_the_section_has_code() -> None:
    assert len(_blocks()) >= 2
    assert all(_shown_output(block) for block in _blocks())


@pytest.mark.parametrize("block", _blocks())
def test_readme_notebooks_block_runs(block: str) -> None:
    before = set(threading.enumerate())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
    assert out.getvalue().splitlines() == _shown_output(block)
    assert set(threading.enumerate()) <= before  # the blocking client left no thread behind

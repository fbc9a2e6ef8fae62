"""The README's query section: every Python code block runs as-is."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _query_section_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("## The query model")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_the_query_section_has_code() -> None:
    assert len(_query_section_blocks()) >= 3


@pytest.mark.parametrize("block", _query_section_blocks())
def test_readme_query_block_runs(block: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
    # A comment right after a print() line shows what it prints: check it.
    lines = block.splitlines()
    shown = []
    for i, line in enumerate(lines[1:], start=1):
        if line.startswith("# ") and "print(" in lines[i - 1]:
            shown.append(line[2:])
    assert out.getvalue().splitlines() == shown

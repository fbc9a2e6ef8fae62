"""The README's results section: every Python code block runs as-is."""

from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _results_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Results")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", _results_section(), flags=re.DOTALL)


def test_the_results_section_has_code_and_benchmark_numbers() -> None:
    assert _blocks()
    section = _results_section()
    assert "python benchmarks/parse.py" in section
    assert "json.loads" in section
    assert "pydicom Dataset.from_json" in section


@pytest.mark.parametrize("block", _blocks())
def test_readme_results_block_runs(block: str) -> None:
    exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})

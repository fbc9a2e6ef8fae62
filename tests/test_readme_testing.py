"""The README's aqido.testing section: its pytest example passes under the plugin.

(tests/test_docs.py runs every README block as a script; this runs the first one as tests.)
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
ROOT = README.parent


def _blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Testing your code")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_the_section_has_a_pytest_example_and_a_script() -> None:
    blocks = _blocks()
    assert len(blocks) == 2
    assert "def test_" in blocks[0]
    assert "asyncio.run(main())" in blocks[1]


def test_the_example_tests_pass_with_the_plugin(tmp_path: pathlib.Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "def pytest_configure(config):\n"
        "    if not config.pluginmanager.has_plugin('aqido'):\n"
        "        import aqido.testing.pytest_plugin as plugin\n"
        "        config.pluginmanager.register(plugin, 'aqido')\n"
    )
    (tmp_path / "test_example.py").write_text(_blocks()[0])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout

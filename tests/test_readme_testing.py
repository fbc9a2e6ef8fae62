"""The docs' aqido.testing page: its pytest example passes under the plugin.

(tests/test_docs.py runs every docs block as a script; this runs the pytest one as tests.)
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "testing.md"


def _blocks() -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_the_section_has_a_pytest_example_and_a_script() -> None:
    blocks = _blocks()
    assert "def test_" in blocks[0]
    assert any("asyncio.run(main())" in block for block in blocks[1:])


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

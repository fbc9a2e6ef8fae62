"""The aqido pytest plugin: light to import, fixtures work in sync and anyio tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Registers the plugin unless the installed entry point already did (nox installs aqido).
CONFTEST = """
def pytest_configure(config):
    config.addinivalue_line("markers", "anyio: (declared for runs with -p no:anyio)")
    if not config.pluginmanager.has_plugin("aqido"):
        import aqido.testing.pytest_plugin as plugin
        config.pluginmanager.register(plugin, "aqido")
"""

USER_TESTS = """
import json
import urllib.request

import aiohttp
import pytest

from aqido.testing import Faults


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def test_sync(qido_archive, qido_synthetic):
    status, body = fetch(qido_archive.url + "/studies")
    assert status == 200
    uids = [s["0020000D"]["Value"][0] for s in json.loads(body)]
    assert uids == [s.study_instance_uid for s in qido_synthetic.studies]
    assert len(qido_archive.requests) == 1


@pytest.mark.anyio
async def test_async(qido_archive, qido_synthetic):
    study = qido_synthetic.studies[3]
    url = f"{qido_archive.url}/studies/{study.study_instance_uid}/series"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert len(await response.json(content_type=None)) == 3


def test_factory(make_qido_archive):
    empty = make_qido_archive([], empty_status=200)
    assert fetch(empty.url + "/studies") == (200, b"[]")
    faulty = make_qido_archive(faults=Faults(rate=1.0, kinds=["503"]))
    with pytest.raises(urllib.error.HTTPError) as info:
        fetch(faulty.url + "/studies")
    assert info.value.code == 503
    info.value.close()
    assert empty.port != faulty.port
"""


def run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_fixtures_in_a_user_test_suite(tmp_path: Path) -> None:
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_fixtures_without_the_anyio_plugin(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, "-p", "no:anyio", "-k", "not async")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_plugin_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, aqido.testing.pytest_plugin; "
        "print(','.join(m for m in ('aiohttp', 'pydicom', 'pandas', 'yarl') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == ""

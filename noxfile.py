"""Developer tasks: ``nox`` runs what CI runs (lint, typecheck, tests, integration, docs).

Sessions:
    lint         ruff check + ruff format --check
    typecheck    mypy --strict on aqido/
    tests        unit and in-process tests, on every Python 3.10-3.13 found here
    integration  tests against real servers on 127.0.0.1: Orthanc + DICOMweb (installed
                 from Debian packages when missing, as root) and tiny_pacs (pip-installed
                 into its own virtualenv, ~/.cache/aqido/tinypacs-venv); this session asks
                 the launchers to install (AQIDO_INSTALL_SERVERS=1)
    docs         the docs site: mkdocs build --strict (warnings are errors), no network
    bench        benchmarks against dicomweb-client, dicomtrolley and bare aiohttp
                 (not a default session; `nox -s bench -- --tiny` for a smoke run,
                 `-- --orthanc` to add a real Orthanc, `-- --help` for the options)
"""

from __future__ import annotations

import glob
import os
import shutil

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests", "integration", "docs"]
nox.options.reuse_existing_virtualenvs = True

SUPPORTED = ("3.10", "3.11", "3.12", "3.13")


def _add_pyenv_interpreters() -> None:
    """Put pyenv-installed interpreters on PATH (pyenv shims only expose the active one)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    bins = [
        path
        for version in SUPPORTED
        for path in sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin")))[-1:]
    ]
    if bins:
        os.environ["PATH"] = os.pathsep.join([*bins, os.environ.get("PATH", "")])


_add_pyenv_interpreters()
# Run the suite on every supported interpreter this machine has; 3.11 is the baseline.
PYTHONS = [v for v in SUPPORTED if shutil.which(f"python{v}")] or ["3.11"]

TEST_EXTRAS = ".[test,fast,cli,notebook]"


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("mypy>=1.10", "pandas-stubs", "types-requests", "-e", TEST_EXTRAS)
    session.run("mypy", "--strict", "aqido")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Unit tests and tests against in-process servers (no external services)."""
    session.install("-e", TEST_EXTRAS)
    session.run(
        "pytest",
        "-m",
        "not integration",
        *session.posargs,
        env={"AQIDO_HYPOTHESIS_PROFILE": "ci"},
    )


@nox.session(python="3.11")
def integration(session: nox.Session) -> None:
    """Tests against live Orthanc and tiny_pacs servers (fails loudly if one cannot start)."""
    session.install("-e", TEST_EXTRAS)
    session.run(
        "pytest",
        "-m",
        "integration",
        *session.posargs,
        env={
            "AQIDO_INSTALL_SERVERS": "1",  # the launchers install only when asked to
            "AQIDO_REQUIRE_ORTHANC": "1",
            "AQIDO_REQUIRE_TINYPACS": "1",
        },
    )


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the docs site with warnings as errors (``mkdocs build --strict``); no network."""
    session.install("-e", ".[docs]")
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        os.path.join(session.create_tmp(), "site"),
        *session.posargs,
        env={"NO_MKDOCS_2_WARNING": "1"},
    )


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with the alternatives (tables, JSON and a chart)."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)

"""Shared pytest configuration: async tests run on asyncio (aiohttp needs it)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# CI runs the property tests derandomized (the same examples every run, so a red CI is
# reproducible and never a roll of the dice) and without the timing-based health check that a
# loaded 2-core machine can trip; developers' runs explore new random examples each time.
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("AQIDO_HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp only runs on asyncio, so every ``@pytest.mark.anyio`` test does too."""
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _python_handles_ctrl_c() -> Iterator[None]:
    """Python's own Ctrl-C handler on SIGINT, even if the test run was started with it ignored.

    A process started with SIGINT ignored (``nohup``, a background job of a non-interactive
    shell, some CI runners) keeps it ignored: Python then never raises KeyboardInterrupt, and
    test_blocking's Ctrl-C tests wait out their 30 s archive and fail. A handled signal is reset
    to the default on exec, so subprocesses the tests start get Python's usual handler too.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session", autouse=True)
def _loopback_is_never_proxied() -> Iterator[None]:
    """The test servers live on 127.0.0.1: keep a developer's or CI's proxy away from them.

    aqido itself never proxies loopback (aqido._proxies.env_proxy); this is for the
    third-party clients some tests use (requests, dicomweb-client), which honour
    ``HTTP_PROXY`` for 127.0.0.1 unless ``NO_PROXY`` names it.
    """
    saved = {name: os.environ.get(name) for name in ("NO_PROXY", "no_proxy")}
    for name, value in saved.items():
        hosts = [h for h in (value or "").split(",") if h.strip()]
        os.environ[name] = ",".join([*hosts, "127.0.0.1", "localhost", "::1"])
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

"""Shared pytest configuration: async tests run on asyncio (aiohttp needs it)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp only runs on asyncio, so every ``@pytest.mark.anyio`` test does too."""
    return "asyncio"

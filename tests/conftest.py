"""Shared test configuration: aiohttp needs the asyncio backend."""

from __future__ import annotations

import pytest

pytest_plugins: list[str] = []


@pytest.fixture
def anyio_backend() -> str:
    """Run every async test on asyncio (aiohttp is asyncio-only)."""
    return "asyncio"

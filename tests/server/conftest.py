"""Fixtures for the local server's tests: a running server and a logged-in session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from nomad_bulk.server import LocalServer, ServerConfig, running_server

from .helpers import Api


@pytest.fixture
def server_config() -> ServerConfig:
    """The configuration of the ``server`` fixture (override per module)."""
    return ServerConfig()


@pytest.fixture
async def server(server_config: ServerConfig) -> AsyncIterator[LocalServer]:
    """A fresh local server per test."""
    async with running_server(server_config) as srv:
        yield srv


@pytest.fixture
async def api(server: LocalServer) -> AsyncIterator[Api]:
    """A session with test1 and test2 logged in."""
    async with aiohttp.ClientSession() as session:
        client = Api(server, session)
        await client.login("test1")
        await client.login("test2")
        yield client

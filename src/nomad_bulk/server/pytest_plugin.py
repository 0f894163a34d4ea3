"""pytest fixtures around the local server; enable with
``pytest_plugins = ["nomad_bulk.server.pytest_plugin"]`` in a ``conftest.py``.

Override ``nomad_server_config`` in a test module (or parametrize it) to change
the server; every test gets a fresh server on a free 127.0.0.1 port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .config import ServerConfig
from .runner import LocalServer, running_server

__all__ = ["nomad_server", "nomad_server_config"]


@pytest.fixture
def nomad_server_config() -> ServerConfig:
    """The configuration of ``nomad_server`` (1.3 semantics, instant processing)."""
    return ServerConfig()


@pytest.fixture
async def nomad_server(nomad_server_config: ServerConfig) -> AsyncIterator[LocalServer]:
    """A running local NOMAD server; ``.url``, ``.state``, ``.restart()``."""
    async with running_server(nomad_server_config) as server:
        yield server

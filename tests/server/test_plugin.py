"""The pytest plugin's fixtures give a running server."""

from __future__ import annotations

import aiohttp
import pytest

from nomad_bulk.server import LocalServer, ServerConfig

pytest_plugins = ["nomad_bulk.server.pytest_plugin"]
pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("nomad_server_config", [ServerConfig(api_version="2.0")])
async def test_nomad_server_fixture(nomad_server: LocalServer) -> None:
    """nomad_server is listening on 127.0.0.1 with the configured API version."""
    assert nomad_server.url.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as session, session.get(f"{nomad_server.url}/info") as resp:
        assert (await resp.json())["version"] == "2.0.0"
    assert nomad_server.state.request_count == 1
    assert nomad_server.state.route_counts["GET /info"] == 1

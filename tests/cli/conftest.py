"""Fixtures for CLI tests: a local server running in a background thread.

``main()`` runs its own event loop, so the server lives in another thread (an
anyio blocking portal); ``ThreadServer.call`` reads its state on that thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from nomad_bulk.server import LocalServer, ServerConfig, running_server

T = TypeVar("T")


class ThreadServer:
    """A running local server and the portal to its event loop."""

    def __init__(self, portal: BlockingPortal, server: LocalServer) -> None:
        self.portal = portal
        self.server = server
        self.url = server.url

    def call(self, fn: Callable[[LocalServer], T]) -> T:
        """Run ``fn(server)`` on the server's thread and return its result."""

        async def run() -> T:
            return fn(self.server)

        return self.portal.call(run)


@pytest.fixture
def thread_server(request: pytest.FixtureRequest) -> Iterator[ThreadServer]:
    """A local server on 127.0.0.1 in a background thread (config via indirect param)."""
    config: ServerConfig = getattr(request, "param", None) or ServerConfig()
    with start_blocking_portal(backend="asyncio") as portal:
        cm = running_server(config)
        server = portal.call(cm.__aenter__)
        try:
            yield ThreadServer(portal, server)
        finally:
            portal.call(cm.__aexit__, None, None, None)


@pytest.fixture
def nomad_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Credentials of test1 in the environment, and a working dir without a .env file."""
    monkeypatch.setenv("NOMAD_USERNAME", "test1")
    monkeypatch.setenv("NOMAD_PASSWORD", "password")
    monkeypatch.delenv("NOMAD_TOKEN", raising=False)
    monkeypatch.delenv("NOMAD_URL", raising=False)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    return monkeypatch

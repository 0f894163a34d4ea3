"""Fixtures for the tutorial-compatible functions: a local server and a clean environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_bulk import compat
from nomad_bulk.server import LocalServer, ServerConfig
from nomad_bulk.sync import running_server

_NOMAD_VARS = ("NOMAD_URL", "NOMAD_USERNAME", "NOMAD_PASSWORD", "NOMAD_TOKEN")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No NOMAD_* variables (restored afterwards, even if the code under test sets them),
    and the working directory is a fresh folder."""
    for name in _NOMAD_VARS:
        # setenv first so that undo also removes a value the test itself sets.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def server(clean_env: Path, request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    """A fresh local NOMAD server (API 1.3 unless parametrized) on its own event-loop thread;
    compat's cache and redirections are cleared afterwards."""
    api_version = getattr(request, "param", "1.3")
    with running_server(ServerConfig(api_version=api_version)) as srv:
        try:
            yield srv
        finally:
            compat.close()
            for alias in ("prod", "staging", "test"):
                compat.redirect_deployment(alias, None)


@pytest.fixture
def as_test1(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> LocalServer:
    """Credentials of user test1 in the environment and NOMAD_URL pointing at the local server."""
    monkeypatch.setenv("NOMAD_USERNAME", "test1")
    monkeypatch.setenv("NOMAD_PASSWORD", "password")
    monkeypatch.setenv("NOMAD_URL", server.url)
    return server

"""Fixtures for running the examples: paths, and a local server the subprocesses can reach."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_bulk.server import LocalServer, ServerConfig
from nomad_bulk.sync import running_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def examples() -> Path:
    """The repository's examples folder."""
    return EXAMPLES


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A local NOMAD server on its own thread, reachable from subprocesses on 127.0.0.1."""
    with running_server(ServerConfig()) as srv:
        yield srv


@pytest.fixture
def script_env(tmp_path: Path) -> dict[str, str]:
    """The environment of an example run: test1's credentials, nothing else of NOMAD's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    env.update(NOMAD_USERNAME="test1", NOMAD_PASSWORD="password", PYTHONUNBUFFERED="1")
    env["HOME"] = str(tmp_path)  # no stray ~/.env or tool config from the developer's home
    return env

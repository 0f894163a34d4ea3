"""Fixtures for the blocking API: a local server served from its own thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_bulk.config import Secret, Settings
from nomad_bulk.samples import make_samples
from nomad_bulk.server import LocalServer, ServerConfig
from nomad_bulk.sync import running_server


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A fresh local NOMAD server on its own event-loop thread, so blocking calls can reach it."""
    with running_server(ServerConfig()) as srv:
        yield srv


@pytest.fixture
def settings(server: LocalServer) -> Settings:
    """Settings for user test1 on the local server, with quick retries."""
    return Settings(
        url=server.url, username="test1", password=Secret("password"), retry_max_time=5.0
    )


@pytest.fixture
def calc_zips(tmp_path: Path) -> list[Path]:
    """Three FHI-aims-like calculations in the tutorial's ``DFT-N/<id>.zip`` layout."""
    folders = make_samples(tmp_path / "calcs", 3, layout="ready-zip")
    return [next(folder.glob("*.zip")) for folder in folders]

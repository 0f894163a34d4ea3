"""Fixtures for engine tests: fast options and settings for the local server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from nomad_bulk.config import Secret, Settings
from nomad_bulk.engine import PollPolicy, RunOptions
from nomad_bulk.server import LocalServer

#: Polling for a server that processes in milliseconds.
FAST_POLL = PollPolicy(initial=0.005, max_wait=0.05, min_step=0.002, jitter=0.002)


@pytest.fixture
def fast() -> Callable[..., RunOptions]:
    """RunOptions with tiny poll delays and no rate limit; keywords override."""

    def make(**kw: Any) -> RunOptions:
        values: dict[str, Any] = {
            "poll": FAST_POLL,
            "requests_per_second": None,
            "processing_timeout": 30.0,
        }
        values.update(kw)
        return RunOptions(**values)

    return make


@pytest.fixture
def login() -> Callable[..., Settings]:
    """Settings for a user of a running local server (default test1)."""

    def make(server: LocalServer, user: str = "test1", **kw: Any) -> Settings:
        return Settings(
            url=server.url, username=user, password=Secret("password"), retry_max_time=20, **kw
        )

    return make

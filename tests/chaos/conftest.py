"""Fixtures of the chaos tests: fast engine options, credentials, a server in a thread.

The thread server comes from the CLI tests (``tests/cli/conftest.py``): the CLI and the
engine subprocesses need a server whose event loop is not the test's. Fast engine options
come from the engine tests (``tests/engine/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cli.conftest import ThreadServer, nomad_env, thread_server
from engine.conftest import FAST_POLL, fast
from nomad_bulk.config import Settings
from nomad_bulk.server import LocalServer

__all__ = ["FAST_POLL", "ThreadServer", "fast", "login", "nomad_env", "thread_server"]


@pytest.fixture
def login() -> Callable[..., Settings]:
    """Settings for a user of a running local server, with short client retry waits."""

    def make(server: LocalServer | ThreadServer, user: str = "test1", **kw: Any) -> Settings:
        values: dict[str, Any] = {
            "retry_initial_wait": 0.01,
            "retry_max_wait": 0.1,
            "retry_max_time": 30.0,
        }
        values.update(kw)
        return Settings(url=server.url, username=user, password="password", **values)

    return make

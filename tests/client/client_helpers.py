"""Helpers for the client tests: a local server per test and a fast client."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypedDict

from nomad_bulk.client import NomadClient, RetryPolicy
from nomad_bulk.config import Secret, Settings
from nomad_bulk.server import LocalServer, ServerConfig, running_server

#: Retries without real waiting, so fault tests stay fast.
FAST_RETRY = RetryPolicy(
    max_attempts=4, max_time=10.0, initial_wait=0.001, max_wait=0.005, jitter=0.0
)


class Poll(TypedDict):
    """Keyword arguments of wait_for_process."""

    initial_wait: float
    max_wait: float
    timeout: float


#: Poll arguments for wait_for_process in tests.
FAST_POLL = Poll(initial_wait=0.005, max_wait=0.02, timeout=20.0)

AIMS_OUT = "  Invoking FHI-aims ...\n  Version 240507\n  Have a nice day.\n"


def make_zip(path: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write a zip with the given members and return its path."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    path.write_bytes(buffer.getvalue())
    return path


def calc_zip(path: Path, n: int = 1, *, extra: Mapping[str, str] | None = None) -> Path:
    """A zip with ``n`` FHI-aims calculations in folders calc<i>/."""
    files: dict[str, str | bytes] = {}
    for i in range(n):
        files[f"calc{i:03d}/aims.out"] = AIMS_OUT + f"run {i}\n"
        files[f"calc{i:03d}/control.in"] = "xc pbe\n"
    files.update(extra or {})
    return make_zip(path, files)


def settings_for(srv: LocalServer, **changes: Any) -> Settings:
    """Settings for user test1 on the local server."""
    values: dict[str, Any] = {"url": srv.url, "username": "test1", "password": Secret("password")}
    values.update(changes)
    return Settings(**values)


@asynccontextmanager
async def serve(**config: Any) -> AsyncIterator[LocalServer]:
    """Run a local server with this configuration."""
    async with running_server(ServerConfig(**config)) as srv:
        yield srv


@asynccontextmanager
async def connect(
    srv: LocalServer, *, retry: RetryPolicy = FAST_RETRY, **kwargs: Any
) -> AsyncIterator[NomadClient]:
    """An open client for test1 on ``srv``; ``kwargs`` go to Settings or the client."""
    client_keys = {"session", "request_gate", "on_response"}
    client_kwargs = {k: v for k, v in kwargs.items() if k in client_keys}
    settings_kwargs = {k: v for k, v in kwargs.items() if k not in client_keys}
    async with NomadClient(
        settings_for(srv, **settings_kwargs), retry=retry, **client_kwargs
    ) as nomad:
        yield nomad

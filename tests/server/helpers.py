"""Helpers for the server tests: zip builders and a plain-HTTP NOMAD session."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from typing import Any

import aiohttp
import anyio

from nomad_bulk.server import LocalServer

AIMS = "  Invoking FHI-aims ...\n  Version 240507\n"


def make_zip(files: Mapping[str, str | bytes]) -> bytes:
    """A zip archive holding ``files`` (path → content)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buffer.getvalue()


def calc_zip(n: int = 2, *, prefix: str = "calc") -> bytes:
    """A zip with ``n`` FHI-aims calculation folders."""
    files: dict[str, str | bytes] = {}
    for i in range(n):
        files[f"{prefix}{i}/aims.out"] = AIMS
        files[f"{prefix}{i}/control.in"] = "xc pbe\n"
    return make_zip(files)


class Api:
    """A plain aiohttp session against the server, as an existing NOMAD client uses it."""

    def __init__(self, server: LocalServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.url = server.url
        self.tokens: dict[str, str] = {}

    async def login(self, username: str = "test1", password: str = "password") -> str:
        """Log in with the form POST and remember the token."""
        async with self.session.post(
            f"{self.url}/auth/token",
            data={"grant_type": "password", "username": username, "password": password},
        ) as resp:
            assert resp.status == 200, await resp.text()
            token = str((await resp.json())["access_token"])
        self.tokens[username] = token
        return token

    def headers(self, user: str | None = "test1", **extra: str) -> dict[str, str]:
        """Authorization header of a logged-in user (plus extras)."""
        headers = dict(extra)
        if user is not None:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        return headers

    async def call(
        self, method: str, path: str, *, user: str | None = "test1", **kwargs: Any
    ) -> tuple[int, Any]:
        """Send a request and return (status, JSON or text)."""
        headers = {**self.headers(user), **kwargs.pop("headers", {})}
        async with self.session.request(
            method, f"{self.url}{path}", headers=headers, **kwargs
        ) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def upload(
        self,
        body: bytes | None = None,
        *,
        user: str = "test1",
        file_name: str | None = "calc.zip",
        wait: bool = True,
        **params: Any,
    ) -> dict[str, Any]:
        """Create an upload from a raw body; wait for processing unless told not to."""
        query = {k: str(v) for k, v in params.items()}
        if file_name is not None:
            query["file_name"] = file_name
        status, data = await self.call(
            "POST",
            "/uploads",
            user=user,
            params=query,
            data=calc_zip() if body is None else body,
            headers={"Accept": "application/json"},
        )
        assert status == 200, data
        if wait:
            await self.idle(data["upload_id"])
            status, data = await self.call("GET", f"/uploads/{data['upload_id']}", user=user)
            assert status == 200, data
        return dict(data)

    async def idle(self, upload_id: str, limit: float = 10) -> None:
        """Wait until the server runs nothing on the upload."""
        with anyio.fail_after(limit):
            await self.server.state.wait_idle(upload_id)

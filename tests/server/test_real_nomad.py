"""Contract checks run against the local 2.0 server and, opt-in, against real NOMAD 2.0.

Set ``NOMAD_BULK_REAL_URL`` to the API base of a running real NOMAD (see
``shared/real-nomad``) to run the ``real`` cases too; otherwise they are skipped.
The same assertions pass on both, which is the point.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import pytest

from nomad_bulk.server import ServerConfig, running_server

from .helpers import AIMS, make_zip

pytestmark = pytest.mark.anyio

REAL_URL = os.environ.get("NOMAD_BULK_REAL_URL")


@dataclass
class Target:
    """A NOMAD API base URL and a session with test1/test2 tokens."""

    url: str
    session: aiohttp.ClientSession
    tokens: dict[str, str]

    async def call(self, method: str, path: str, user: str | None = "test1", **kw: Any) -> Any:
        """(status, body) of one request."""
        headers = dict(kw.pop("headers", {}))
        if user:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        async with self.session.request(method, self.url + path, headers=headers, **kw) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def idle(self, upload_id: str) -> dict[str, Any]:
        """Poll until nothing runs on the upload; the last upload data (None once deleted)."""
        with anyio.fail_after(120):
            while True:
                status, body = await self.call("GET", f"/uploads/{upload_id}")
                if status == 404:
                    return {}
                if not body["data"]["process_running"]:
                    return dict(body["data"])
                await anyio.sleep(0.1)


@pytest.fixture(
    params=[
        "local",
        pytest.param("real", marks=pytest.mark.real_nomad),
    ]
)
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    """The local server in 2.0 mode, or the real NOMAD named by NOMAD_BULK_REAL_URL."""
    async with aiohttp.ClientSession() as session:
        if request.param == "real":
            if not REAL_URL:
                pytest.skip("NOMAD_BULK_REAL_URL is not set")
            yield await _login(REAL_URL.rstrip("/"), session)
        else:
            async with running_server(ServerConfig(api_version="2.0")) as srv:
                yield await _login(srv.url, session)


async def _login(url: str, session: aiohttp.ClientSession) -> Target:
    tokens = {}
    for user in ("test1", "test2"):
        async with session.post(
            f"{url}/auth/token",
            data={"grant_type": "password", "username": user, "password": "password"},
        ) as resp:
            assert resp.status == 200
            tokens[user] = (await resp.json())["access_token"]
    return Target(url, session, tokens)


async def test_auth_contract(target: Target) -> None:
    """Token shape, GET removed, grant_type required, bad password, anonymous and bad token."""
    status, body = await target.call(
        "POST",
        "/auth/token",
        user=None,
        data={"grant_type": "password", "username": "test1", "password": "password"},
    )
    assert status == 200 and body["token_type"] == "Bearer" and body["expires_in"] > 0
    assert await target.call(
        "GET", "/auth/token", user=None, params={"username": "test1", "password": "password"}
    ) == (405, {"detail": "Method Not Allowed"})
    status, body = await target.call(
        "POST", "/auth/token", user=None, data={"username": "test1", "password": "password"}
    )
    assert status == 422 and body["detail"][0]["loc"] == ["body", "grant_type"]
    assert await target.call(
        "POST",
        "/auth/token",
        user=None,
        data={"grant_type": "password", "username": "test1", "password": "wrong"},
    ) == (401, {"detail": "Incorrect username or password"})
    assert await target.call("GET", "/uploads", user=None) == (
        401,
        {"detail": "Authentication required."},
    )
    headers = {"Authorization": "Bearer not-a-token"}
    assert await target.call("GET", "/uploads", user=None, headers=headers) == (
        401,
        {"detail": "Could not validate credentials. The given token is invalid."},
    )
    status, body = await target.call("GET", "/auth/app_token", params={"expires_in": "0"})
    assert status == 422 and body["detail"][0]["type"] == "greater_than"


async def test_upload_lifecycle_contract(target: Target) -> None:
    """Upload, entries, edit errors, publish preconditions and delete answer alike."""
    status, body = await target.call(
        "POST",
        "/uploads",
        params={"file_name": "calc.zip"},
        data=make_zip({"calc/aims.out": AIMS}),
        headers={"Accept": "application/json"},
    )
    assert status == 200
    assert body["data"]["process_status"] == "PENDING"
    assert body["data"]["current_process"] == "_process_upload"
    assert body["data"]["upload_name"] == "calc.zip"
    upload_id = body["upload_id"]
    data = await target.idle(upload_id)
    assert data["process_status"] == "SUCCESS"
    assert data["last_status_message"] == "Process completed successfully"
    assert data["entries"] == 1 and data["upload_create_time"].endswith("Z")
    status, entries = await target.call("GET", f"/uploads/{upload_id}/entries")
    assert entries["processing_successful"] == 1
    assert entries["data"][0]["parser_name"] == "electronicparsers:fhiaims_parser_entry_point"
    assert await target.call("GET", f"/uploads/{upload_id}", user="test2") == (
        403,
        {"detail": "You do not have access to the specified upload."},
    )
    assert await target.call("GET", f"/uploads/{upload_id}", user=None) == (
        401,
        {"detail": "You need to log in to access the specified upload."},
    )
    for metadata, msg in (
        ({}, "No fields to update specified"),
        ({"coauthors": ["nobody-at-all"]}, "User reference not found: `nobody-at-all`"),
        ({"license": "x"}, "Admin rights required"),
        ({"embargo_length": 40}, "Value should be between 0 and 36"),
        ({"references": ["notaurl"]}, "Please enter a valid URL ..."),
    ):
        status, body = await target.call(
            "POST", f"/uploads/{upload_id}/edit", json={"metadata": metadata}
        )
        assert status == 422 and body["detail"][0]["msg"] == msg
    status, body = await target.call(
        "POST", "/uploads/nope/edit", json={"metadata": {"upload_name": "x"}}
    )
    assert (status, body["detail"][0]["msg"]) == (422, "No matching upload found")
    assert await target.call(
        "POST", f"/uploads/{upload_id}/action/publish", params={"embargo_length": "40"}
    ) == (400, {"detail": "Invalid embargo_length. Must be between 0 and 36 months."})
    status, body = await target.call(
        "POST", f"/uploads/{upload_id}/edit", json={"metadata": {"upload_name": "renamed"}}
    )
    assert status == 200
    data = await target.idle(upload_id)
    assert data["upload_name"] == "renamed" and data["current_process"] == "_edit_metadata"
    status, body = await target.call("POST", f"/uploads/{upload_id}/action/publish")
    assert status == 200
    data = await target.idle(upload_id)
    assert data["published"] is True
    assert await target.call("POST", f"/uploads/{upload_id}/action/publish") == (
        400,
        {"detail": "Upload already published."},
    )
    assert await target.call("DELETE", f"/uploads/{upload_id}") == (
        403,
        {"detail": "Upload is already published, only admins can perform this operation."},
    )


async def test_bad_archive_and_delete_contract(target: Target) -> None:
    """A corrupt .zip ends FAILURE with NOMAD's error; publishing it is refused; delete → 404."""
    status, body = await target.call(
        "POST",
        "/uploads",
        params={"file_name": "bad.zip"},
        data=b"garbage",
        headers={"Accept": "application/json"},
    )
    upload_id = body["upload_id"]
    data = await target.idle(upload_id)
    assert data["process_status"] == "FAILURE"
    assert data["errors"] == ["ValueError: Bad archive."]
    assert data["last_status_message"] == "Process _process_upload failed: ValueError: Bad archive."
    assert await target.call("POST", f"/uploads/{upload_id}/action/publish") == (
        400,
        {"detail": "Cannot publish an upload that failed processing."},
    )
    status, body = await target.call("DELETE", f"/uploads/{upload_id}")
    assert status == 200
    await target.idle(upload_id)
    assert await target.call("GET", f"/uploads/{upload_id}") == (
        404,
        {"detail": "The specified upload_id was not found."},
    )


async def test_pagination_and_dataset_contract(target: Target) -> None:
    """Pagination errors and the datasets slash redirect answer alike."""
    assert await target.call("GET", "/uploads", params={"page": "99"}) == (
        400,
        {"detail": "Page out of range requested."},
    )
    status, body = await target.call("GET", "/uploads", params={"page_size": "0", "page": "1"})
    assert status == 422 and body["detail"][0]["type"] == "invalid_pagination"
    status, body = await target.call("GET", "/uploads", params={"order_by": "x"})
    assert status == 422 and body["detail"][0]["type"] == "invalid_order_by"
    status, body = await target.call("GET", "/uploads", params={"page": "2", "page_offset": "1"})
    assert status == 422 and body["detail"][0]["type"] == "multiple_pagination_criteria"
    async with target.session.get(f"{target.url}/datasets/", allow_redirects=False) as resp:
        assert resp.status == 307 and resp.headers["Location"].endswith("/datasets")
    name = f"contract-{os.getpid()}-{id(target)}"
    status, ds = await target.call("POST", "/datasets", json={"dataset_name": name})
    assert status == 200
    status, body = await target.call("POST", "/datasets", json={"dataset_name": name})
    assert status == 400 and body["detail"].startswith("The chosen dataset name is already taken.")
    assert await target.call("DELETE", f"/datasets/{ds['dataset_id']}", user="test2") == (
        403,
        {"detail": "The dataset can only be edited by the user who created the dataset."},
    )
    assert await target.call("GET", "/datasets/nope") == (
        404,
        {"detail": "The dataset with the given id does not exist."},
    )
    assert (await target.call("DELETE", f"/datasets/{ds['dataset_id']}"))[0] == 200

"""Every JSON answer validates against NOMAD's real OpenAPI schemas (1.3.14 and 2.0.0)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema  # type: ignore[import-untyped]
import pytest

from nomad_bulk.server import ServerConfig, running_server

from .helpers import AIMS, Api, make_zip

pytestmark = pytest.mark.anyio


def _contract_dir() -> Path:
    """NOMAD's OpenAPI schemas: NOMAD_BULK_CONTRACT_DIR, else the shared/ folder beside the repo."""
    given = os.environ.get("NOMAD_BULK_CONTRACT_DIR")
    repo = Path(__file__).resolve().parents[2]
    for candidate in (given, repo.parent / "shared" / "contract", "/work/shared/contract"):
        if candidate and Path(candidate, "nomad-openapi-v1.json").is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "NOMAD's OpenAPI schemas were not found: set NOMAD_BULK_CONTRACT_DIR to the folder "
        "holding nomad-openapi-v1.json and nomad-openapi-v1-1.3.14.json"
    )


CONTRACT = _contract_dir()
SCHEMA_FILES = {"1.3": "nomad-openapi-v1-1.3.14.json", "2.0": "nomad-openapi-v1.json"}


@cache
def _doc(version: str) -> dict[str, Any]:
    return dict(json.loads((CONTRACT / SCHEMA_FILES[version]).read_text()))


def _validate(version: str, method: str, template: str, status: int, body: Any) -> None:
    doc = _doc(version)
    responses = doc["paths"][template][method.lower()]["responses"]
    spec = responses.get(str(status)) or responses.get("default")
    assert spec is not None, f"{method} {template} has no documented {status} answer"
    schema = spec.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return
    root = {**doc, **schema}
    jsonschema.Draft202012Validator(root).validate(body)


def _matches(template: str, path: str) -> bool:
    want, have = template.split("/"), path.split("/")
    if want[-1] == "{path}":
        return len(have) >= len(want) - 1 and _matches(
            "/".join(want[:-1]), "/".join(have[: len(want) - 1])
        )
    return len(want) == len(have) and all(
        w == h or (w.startswith("{") and w.endswith("}") and h)
        for w, h in zip(want, have, strict=True)
    )


def _template(version: str, path: str) -> str:
    paths = _doc(version)["paths"]
    if path in paths:
        return path
    for template in paths:
        if _matches(template, path):
            return str(template)
    raise AssertionError(f"no schema path for {path}")


class RecordingApi(Api):
    """An Api that keeps every JSON answer for schema checks."""

    def __init__(self, *args: Any, version: str) -> None:
        super().__init__(*args)
        self.version = version
        self.seen: list[tuple[str, str, int, Any]] = []

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """Send and record."""
        status, body = await super().call(method, path, **kwargs)
        if isinstance(body, (dict, list)):
            clean = path.split("?")[0]
            self.seen.append((method, _template(self.version, clean), status, body))
        return status, body


async def _scenario(api: RecordingApi) -> None:
    v2 = api.version == "2.0"
    ds_path = "/datasets" if v2 else "/datasets/"
    await api.call("GET", "/info", user=None)
    await api.call(
        "POST",
        "/auth/token",
        user=None,
        data={"grant_type": "password", "username": "test1", "password": "password"},
    )
    await api.call("POST", "/auth/token", user=None, data={"username": "x", "password": "y"})
    if not v2:
        await api.call(
            "GET", "/auth/token", user=None, params={"username": "test1", "password": "password"}
        )
    await api.call("GET", "/auth/app_token", params={"expires_in": "60"})
    await api.call("GET", "/auth/app_token")
    await api.call("GET", "/users/me")
    await api.call("GET", "/users", user=None, params={"prefix": "te"})
    await api.call("GET", "/users/68878af7-6845-46c0-b2c1-250d4d8eb470", user=None)
    body = make_zip(
        {"a/aims.out": AIMS, "b/vasprun.xml": "<x/>", "c/aims.out": AIMS + "NOMAD_BULK_FAIL_ENTRY"}
    )
    _, created = await api.call(
        "POST",
        "/uploads",
        params={"file_name": "x.zip", "upload_name": "schema"},
        data=body,
        headers={"Accept": "application/json"},
    )
    upload_id = created["upload_id"]
    await api.idle(upload_id)
    await api.call("POST", "/uploads", params={"embargo_length": "99"}, data=b"")
    await api.call("GET", "/uploads", params={"page_size": "1"})
    await api.call("GET", "/uploads", params={"page": "9"})
    await api.call("GET", "/uploads", params={"is_published": "maybe"})
    await api.call("GET", f"/uploads/{upload_id}")
    await api.call("GET", "/uploads/unknown")
    await api.call("GET", f"/uploads/{upload_id}/entries", params={"page_size": "2"})
    _, entries = await api.call("GET", f"/uploads/{upload_id}/entries")
    entry_id = entries["data"][0]["entry_id"]
    await api.call("GET", f"/uploads/{upload_id}/entries/{entry_id}")
    await api.call("GET", f"/uploads/{upload_id}/rawdir/", params={"include_entry_info": "true"})
    await api.call("GET", f"/uploads/{upload_id}/rawdir/a/aims.out")
    await api.call("GET", f"/uploads/{upload_id}/rawdir/nothing")
    _, ds = await api.call("POST", ds_path, json={"dataset_name": "d"})
    await api.call("POST", ds_path, json={"dataset_name": "d"})
    await api.call("GET", ds_path, params={"dataset_name": "d"})
    await api.call("GET", f"/datasets/{ds['dataset_id']}")
    await api.call(
        "POST",
        f"/uploads/{upload_id}/edit",
        json={"metadata": {"upload_name": "n", "datasets": "d", "comment": "c"}},
    )
    await api.idle(upload_id)
    await api.call("POST", f"/uploads/{upload_id}/action/publish")
    await api.idle(upload_id)
    await api.call("POST", f"/uploads/{upload_id}/action/publish")
    await api.call("GET", f"/entries/{entry_id}")
    await api.call("GET", f"/entries/{entry_id}/archive")
    await api.call("GET", "/entries/unknown")
    await api.call(
        "POST", "/entries/query", json={"owner": "visible", "query": {"upload_id": upload_id}}
    )
    await api.call("GET", "/entries", params={"owner": "visible", "upload_id": upload_id})
    _, other = await api.call(
        "POST",
        "/uploads",
        data=make_zip({"z/aims.out": AIMS}),
        params={"file_name": "z.zip"},
        headers={"Accept": "application/json"},
    )
    await api.idle(other["upload_id"])
    await api.call("DELETE", f"/uploads/{other['upload_id']}")
    await api.idle(other["upload_id"])
    await api.call("DELETE", f"/datasets/{ds['dataset_id']}")
    await api.call("DELETE", "/datasets/unknown")


ENDPOINTS = [
    ("GET", "/info"),
    ("POST", "/auth/token"),
    ("GET", "/auth/app_token"),
    ("GET", "/users/me"),
    ("GET", "/users"),
    ("GET", "/users/{user_id}"),
    ("POST", "/uploads"),
    ("GET", "/uploads"),
    ("GET", "/uploads/{upload_id}"),
    ("DELETE", "/uploads/{upload_id}"),
    ("GET", "/uploads/{upload_id}/entries"),
    ("GET", "/uploads/{upload_id}/entries/{entry_id}"),
    ("GET", "/uploads/{upload_id}/rawdir/{path}"),
    ("POST", "/uploads/{upload_id}/edit"),
    ("POST", "/uploads/{upload_id}/action/publish"),
    ("GET", "/entries/{entry_id}"),
    ("GET", "/entries/{entry_id}/archive"),
    ("POST", "/entries/query"),
    ("GET", "/entries"),
    ("POST", "/datasets"),
    ("GET", "/datasets"),
    ("GET", "/datasets/{dataset_id}"),
    ("DELETE", "/datasets/{dataset_id}"),
]


@pytest.mark.parametrize("version", ["1.3", "2.0"])
@pytest.mark.parametrize(("method", "endpoint"), ENDPOINTS)
async def test_answers_match_openapi_schema(version: str, method: str, endpoint: str) -> None:
    """Each answer of this endpoint (success and errors) validates against the real schema."""
    if endpoint in ("/datasets",) and version == "1.3":
        endpoint = "/datasets/"
    async with running_server(ServerConfig(api_version=version)) as srv:
        async with aiohttp.ClientSession() as session:
            api = RecordingApi(srv, session, version=version)
            await api.login("test1")
            await api.login("test2")
            await _scenario(api)
    seen = [(s, b) for m, t, s, b in api.seen if (m, t) == (method, endpoint)]
    assert seen, f"the scenario never called {method} {endpoint}"
    for status, body in seen:
        _validate(version, method, endpoint, status, body)

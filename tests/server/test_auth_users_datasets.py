"""Auth tokens, users and datasets, in both API generations."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from nomad_bulk.server import ServerConfig

from .helpers import Api

pytestmark = pytest.mark.anyio

V2 = ServerConfig(api_version="2.0")


def _payload(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


async def test_v13_token_forms(api: Api) -> None:
    """1.3: POST (with or without grant_type) and GET give {access_token, token_type}."""
    status, data = await api.call(
        "POST", "/auth/token", user=None, data={"username": "test1", "password": "password"}
    )
    assert (
        status == 200
        and data["token_type"] == "bearer"
        and set(data)
        == {
            "access_token",
            "token_type",
        }
    )
    assert _payload(data["access_token"])["exp"] > 0
    status, data = await api.call(
        "GET", "/auth/token", user=None, params={"username": "test1", "password": "password"}
    )
    assert status == 200 and data["access_token"]
    status, data = await api.call(
        "POST",
        "/auth/token",
        user=None,
        data={"grant_type": "password", "username": "test1@example.org", "password": "password"},
    )
    assert status == 200, "e-mail works as username"


async def test_bad_credentials(api: Api) -> None:
    """Wrong password is 401 'Incorrect username or password'; missing fields are 422."""
    assert await api.call(
        "POST", "/auth/token", user=None, data={"username": "test1", "password": "nope"}
    ) == (401, {"detail": "Incorrect username or password"})
    status, data = await api.call("POST", "/auth/token", user=None, data={"username": "test1"})
    assert status == 422 and data["detail"][0]["loc"] == ["body", "password"]


@pytest.mark.parametrize("server_config", [V2])
async def test_v2_token_shape_and_get_removed(api: Api) -> None:
    """2.0: OIDC token set with expires_in; grant_type required; GET → 405."""
    status, data = await api.call(
        "POST",
        "/auth/token",
        user=None,
        data={"grant_type": "password", "username": "test1", "password": "password"},
    )
    assert status == 200
    assert data["token_type"] == "Bearer" and data["expires_in"] == 3600
    assert {"refresh_token", "id_token", "refresh_expires_in", "scope"} <= set(data)
    status, data = await api.call(
        "POST", "/auth/token", user=None, data={"username": "test1", "password": "password"}
    )
    assert status == 422
    assert data["detail"][0]["loc"] == ["body", "grant_type"]
    assert await api.call(
        "GET", "/auth/token", user=None, params={"username": "test1", "password": "password"}
    ) == (405, {"detail": "Method Not Allowed"})
    assert await api.call("GET", "/uploads", user=None) == (
        401,
        {"detail": "Authentication required."},
    )


async def test_invalid_and_missing_tokens(api: Api) -> None:
    """A forged token is 401 even where auth is optional; no token on /uploads is 401."""
    headers = {"Authorization": "Bearer abc.def.ghi"}
    for path in ("/uploads", "/users/me", "/datasets/"):
        status, data = await api.call("GET", path, user=None, headers=headers)
        assert (status, data) == (
            401,
            {"detail": "Could not validate credentials. The given token is invalid."},
        )
    assert await api.call("GET", "/users/me", user=None) == (
        401,
        {"detail": "Authorization required."},
    )


@pytest.mark.parametrize("server_config", [ServerConfig(token_lifetime=0.0)])
async def test_expired_token_is_refused(api: Api) -> None:
    """A token past its exp claim is refused with 401 and the Bearer challenge."""
    async with api.session.get(f"{api.url}/users/me", headers=api.headers()) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert await resp.json() == {
            "detail": "Could not validate credentials. The given token is invalid."
        }


async def test_app_token(api: Api) -> None:
    """An app token ({user, exp}) works as bearer; expires_in out of range is 422."""
    status, data = await api.call("GET", "/auth/app_token", params={"expires_in": "600"})
    assert status == 200
    app_token = data["app_token"]
    assert set(_payload(app_token)) == {"user", "exp"}
    status, me = await api.call(
        "GET", "/users/me", user=None, headers={"Authorization": f"Bearer {app_token}"}
    )
    assert status == 200 and me["username"] == "test1"
    for value in ("0", "2592001"):
        status, _ = await api.call("GET", "/auth/app_token", params={"expires_in": value})
        assert status == 422
    assert (await api.call("GET", "/auth/app_token"))[0] == 422
    assert (await api.call("GET", "/auth/app_token", user=None, params={"expires_in": "5"}))[
        0
    ] == 401


async def test_users(api: Api) -> None:
    """/users/me is the full account; /users filters by prefix/email/username and hides e-mails."""
    status, me = await api.call("GET", "/users/me")
    assert status == 200
    assert me["user_id"] == "68878af7-6845-46c0-b2c1-250d4d8eb470"
    assert me["email"] == "test1@example.org" and me["is_admin"] is False
    _, data = await api.call("GET", "/users", user=None, params={"email": "test2@example.org"})
    assert [u["username"] for u in data["data"]] == ["test2"]
    assert "email" not in data["data"][0]
    _, data = await api.call("GET", "/users", user=None, params={"prefix": "coau"})
    assert [u["username"] for u in data["data"]] == ["coauthor1", "coauthor2", "coauthor3"]
    _, data = await api.call("GET", "/users", user=None, params={"username": ["test1", "zzz"]})
    assert [u["username"] for u in data["data"]] == ["test1"]
    status, one = await api.call("GET", f"/users/{me['user_id']}", user=None)
    assert status == 200 and one["username"] == "test1" and "email" not in one
    assert (await api.call("GET", "/users/unknown", user=None))[0] == 404


async def test_datasets_v13(api: Api) -> None:
    """1.3 datasets at /datasets/: create, duplicate 400, get, list filters, delete rules, 307."""
    status, created = await api.call("POST", "/datasets/", json={"dataset_name": "ds"})
    assert status == 200
    dataset_id = created["dataset_id"]
    assert len(dataset_id) == 22 and created["data"]["dataset_type"] == "owned"
    status, dup = await api.call("POST", "/datasets/", json={"dataset_name": "ds"})
    assert status == 400 and dup["detail"].startswith("The chosen dataset name is already taken.")
    assert (await api.call("POST", "/datasets/", user="test2", json={"dataset_name": "ds"}))[
        0
    ] == 200
    status, got = await api.call("GET", f"/datasets/{dataset_id}", user=None)
    assert status == 200 and got["data"]["dataset_name"] == "ds"
    _, listed = await api.call(
        "GET", "/datasets/", params={"dataset_name": "ds", "user_id": got["data"]["user_id"]}
    )
    assert [d["dataset_id"] for d in listed["data"]] == [dataset_id]
    _, listed = await api.call("GET", "/datasets/", params={"prefix": "D"})
    assert listed["pagination"]["total"] == 2
    assert await api.call("GET", "/datasets/nope") == (
        404,
        {"detail": "The dataset with the given id does not exist."},
    )
    assert await api.call("DELETE", f"/datasets/{dataset_id}", user="test2") == (
        401,
        {"detail": "The dataset can only be edited by the user who created the dataset."},
    )
    assert await api.call("DELETE", "/datasets/nope") == (
        404,
        {"detail": "Dataset not found. The given id does not match any dataset."},
    )
    assert (await api.call("DELETE", f"/datasets/{dataset_id}"))[0] == 200
    assert api.server.state.get_dataset(dataset_id) is None
    async with api.session.get(f"{api.url}/datasets", allow_redirects=False) as resp:
        assert resp.status == 307
        assert resp.headers["Location"].endswith("/datasets/")
    status, _ = await api.call("POST", "/datasets/", json={})
    assert status == 422


@pytest.mark.parametrize("server_config", [V2])
async def test_datasets_v2_without_slash(api: Api) -> None:
    """2.0 datasets live at /datasets; /datasets/ is a 307; deleting others' is 403."""
    status, created = await api.call("POST", "/datasets", json={"dataset_name": "ds"})
    assert status == 200 and created["data"]["dataset_create_time"].endswith("Z")
    async with api.session.get(f"{api.url}/datasets/", allow_redirects=False) as resp:
        assert resp.status == 307
        assert resp.headers["Location"].endswith("/datasets")
    status, _ = await api.call("GET", "/datasets/")  # redirect followed
    assert status == 200
    assert (await api.call("DELETE", f"/datasets/{created['dataset_id']}", user="test2"))[0] == 403


async def test_info(api: Api) -> None:
    """/info names the version and the parsers."""
    status, data = await api.call("GET", "/info", user=None)
    assert status == 200
    assert data["version"] == "1.3.14"
    assert "parsers/fhi-aims" in data["parsers"]

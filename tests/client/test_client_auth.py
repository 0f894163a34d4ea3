"""Token lifecycle against the local server: login, renewal, 401 replay, app tokens."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import anyio
import pytest
from client_helpers import FAST_POLL, FAST_RETRY, calc_zip, connect, serve

from nomad_bulk.client import NomadClient
from nomad_bulk.client._auth import jwt_expiry
from nomad_bulk.config import Secret, Settings
from nomad_bulk.errors import AuthError
from nomad_bulk.server import FaultPlan

pytestmark = pytest.mark.anyio


def _jwt(payload: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(payload)}.c2ln"


def test_jwt_expiry_is_read_without_verification() -> None:
    """exp comes from the payload; non-JWTs (personal access tokens) have none."""
    assert jwt_expiry(_jwt({"exp": 1234.5, "sub": "x"})) == 1234.5
    assert jwt_expiry(_jwt({"sub": "x"})) is None
    assert jwt_expiry("nomad_pat_abcdef") is None
    assert jwt_expiry("a.!!!.c") is None


async def test_login_uses_post_with_grant_type(api_version: str) -> None:
    """The client logs in once with POST /auth/token and reuses the token."""
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        await nomad.me()
        await nomad.list_uploads()
        await nomad.count_uploads()
    assert srv.state.route_counts["POST /auth/token"] == 1
    assert srv.state.route_counts["GET /auth/token"] == 0


async def test_token_expiry_mid_run_is_renewed_in_time(api_version: str, tmp_path: Path) -> None:
    """With short-lived tokens a long wait keeps working: renewed before exp, no 401."""
    archive = calc_zip(tmp_path / "t.zip")
    async with (
        serve(api_version=api_version, token_lifetime=0.4, processing_time=1.2) as srv,
        connect(srv) as nomad,
    ):
        upload = await nomad.create_upload(archive)
        with anyio.fail_after(15):
            done = await nomad.wait_for_process(
                upload.upload_id, initial_wait=0.05, max_wait=0.1, timeout=15
            )
        assert done.succeeded
        assert nomad.stats.count(401) == 0
    assert srv.state.route_counts["POST /auth/token"] >= 3


async def test_early_expiry_triggers_one_relogin_and_replay(
    api_version: str, tmp_path: Path
) -> None:
    """Tokens refused before their exp (early-expiry fault): re-login once, replay, go on."""
    archive = calc_zip(tmp_path / "e.zip")
    plan = FaultPlan(token_max_age=0.2)
    async with (
        serve(api_version=api_version, faults=plan, processing_time=0.8) as srv,
        connect(srv) as nomad,
    ):
        upload = await nomad.create_upload(archive)
        with anyio.fail_after(15):
            done = await nomad.wait_for_process(
                upload.upload_id, initial_wait=0.05, max_wait=0.1, timeout=15
            )
        assert done.succeeded
        assert nomad.stats.relogins >= 1
        assert nomad.stats.relogins == nomad.stats.count(401)
    assert srv.state.fault_counts["token_expired"] == nomad.stats.relogins


async def test_invalid_given_token_falls_back_to_login_once() -> None:
    """A rejected given token is replaced by one login, shared by concurrent requests."""
    async with serve() as srv:
        settings = Settings(
            url=srv.url,
            token=Secret(_jwt({"sub": "x"})),
            username="test1",
            password=Secret("password"),
        )
        async with NomadClient(settings, retry=FAST_RETRY) as nomad:
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(nomad.me)
            assert (await nomad.me()).username == "test1"
    assert srv.state.route_counts["POST /auth/token"] == 1


async def test_invalid_token_without_password_is_an_auth_error() -> None:
    """Without a password a refused token cannot be renewed: AuthError, no retries."""
    async with serve() as srv:
        settings = Settings(url=srv.url, token=Secret(_jwt({"sub": "x"})))
        async with NomadClient(settings, retry=FAST_RETRY) as nomad:
            with pytest.raises(AuthError) as caught:
                await nomad.me()
            assert nomad.stats.requests == 1
    assert caught.value.status == 401 and "validate credentials" in str(caught.value)


async def test_app_token_is_minted_for_long_runs(api_version: str) -> None:
    """With app_token_lifetime the client swaps its login for an app token once."""
    async with (
        serve(api_version=api_version) as srv,
        connect(srv, app_token_lifetime=3 * 86400) as nomad,
    ):
        for _ in range(3):
            assert (await nomad.me()).username == "test1"
    assert srv.state.route_counts["GET /auth/app_token"] == 1
    assert srv.state.route_counts["POST /auth/token"] == 1


async def test_app_token_survives_early_expiry_of_logins(tmp_path: Path) -> None:
    """An app token is not affected by login-token expiry: no 401 during a long wait."""
    archive = calc_zip(tmp_path / "a.zip")
    plan = FaultPlan(token_max_age=0.2)
    async with (
        serve(faults=plan, processing_time=0.6) as srv,
        connect(srv, app_token_lifetime=3600) as nomad,
    ):
        upload = await nomad.create_upload(archive)
        done = await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
        assert done.succeeded and nomad.stats.count(401) == 0
    assert srv.state.route_counts["POST /auth/token"] == 1

"""Every error class the client raises, provoked against the local server."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import aiohttp
import anyio
import pytest
from client_helpers import FAST_POLL, FAST_RETRY, calc_zip, connect, serve

from nomad_bulk.client import NomadClient, ResponseInfo, RetryPolicy
from nomad_bulk.config import Secret, Settings
from nomad_bulk.errors import (
    AlreadyPublishedError,
    ApiError,
    AuthError,
    BadRequestError,
    BusyError,
    ConfigError,
    NotFoundError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    TooLargeError,
    TransportError,
    UploadLimitError,
    ValidationError,
)
from nomad_bulk.server import FaultPlan, FaultRule, UserSpec

pytestmark = pytest.mark.anyio


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_not_found(api_version: str) -> None:
    """Unknown uploads, entries and datasets raise NotFoundError with NOMAD's message."""
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        with pytest.raises(NotFoundError) as caught:
            await nomad.get_upload("doesnotexist0000000000")
        assert caught.value.status == 404 and caught.value.server_message
        assert caught.value.method == "GET" and "/uploads/" in (caught.value.url or "")
        with pytest.raises(NotFoundError):
            await nomad.get_entry("x" * 28)
        with pytest.raises(NotFoundError):
            await nomad.get_dataset("doesnotexist0000000000")
        with pytest.raises(NotFoundError):
            await nomad.delete_dataset("doesnotexist0000000000")


async def test_bad_password_is_an_auth_error_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused login raises AuthError; the password shows nowhere."""
    secret = "s3cr3t-Pa55-xyz"
    users = (UserSpec("alice", "right-one", "alice@example.org"),)
    caplog.set_level(logging.DEBUG, logger="nomad_bulk")
    async with serve(users=users) as srv:
        settings = Settings(url=srv.url, username="alice", password=Secret(secret))
        async with NomadClient(settings, retry=FAST_RETRY) as nomad:
            with pytest.raises(AuthError) as caught:
                await nomad.me()
            assert secret not in repr(nomad) and secret not in repr(nomad.settings)
    assert caught.value.status == 401 and "alice" in str(caught.value)
    assert secret not in str(caught.value) and secret not in repr(caught.value.__dict__)
    assert secret not in caplog.text


async def test_tokens_never_appear_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    """A bearer token is kept out of exception texts, reprs and log records."""
    caplog.set_level(logging.DEBUG, logger="nomad_bulk")
    plan = FaultPlan(rules=(FaultRule(route="/users/me", status=500),))
    async with serve(faults=plan) as srv:
        async with connect(srv) as first:
            token = (await first.create_app_token(600)).get()
        settings = Settings(url=srv.url, token=Secret(token))
        async with NomadClient(settings, retry=FAST_RETRY) as nomad:
            with pytest.raises(ServerError) as caught:
                await nomad.me()
            text = repr(nomad) + str(caught.value) + repr(caught.value.__dict__)
    assert token not in text and token not in caplog.text


async def test_missing_credentials_is_a_config_error() -> None:
    """A call that needs a login fails before sending when no credentials are set."""
    async with serve() as srv:
        async with NomadClient(Settings(url=srv.url), retry=FAST_RETRY) as nomad:
            assert (await nomad.info()).version  # anonymous calls still work
            with pytest.raises(ConfigError, match="NOMAD_USERNAME"):
                await nomad.list_uploads()
        assert srv.state.route_counts["GET /uploads"] == 0


async def test_credentials_over_plain_http_to_a_remote_host_are_refused() -> None:
    """Opening a client refuses http:// to a non-loopback host before any connection."""
    settings = Settings(url="http://nomad.example.org/api/v1", username="u", password=Secret("p"))
    with pytest.raises(ConfigError, match="plain http"):
        async with NomadClient(settings):
            pass  # pragma: no cover - never reached
    allowed = settings.with_(allow_insecure_http=True)
    async with NomadClient(allowed) as nomad:
        assert nomad.settings.allow_insecure_http


async def test_upload_limit(api_version: str, tmp_path: Path) -> None:
    """Past the unpublished-upload limit NOMAD's 400 becomes UploadLimitError."""
    archive = calc_zip(tmp_path / "l.zip")
    async with serve(api_version=api_version, upload_limit=1) as srv, connect(srv) as nomad:
        await nomad.create_upload(archive, upload_name="first")
        with pytest.raises(UploadLimitError) as caught:
            await nomad.create_upload(archive, upload_name="second")
        assert caught.value.status == 400 and "Limit" in (caught.value.server_message or "")
    assert [u.upload_name for u in srv.state.uploads()] == ["first"]


async def test_bad_embargo_is_a_bad_request(tmp_path: Path) -> None:
    """An out-of-range embargo gets NOMAD's 400 as BadRequestError; nothing is created."""
    archive = calc_zip(tmp_path / "e.zip")
    async with serve() as srv, connect(srv) as nomad:
        with pytest.raises(BadRequestError, match="embargo_length"):
            await nomad.create_upload(archive, embargo_length=40)
    assert srv.state.uploads() == []


async def test_validation_error_names_the_field(api_version: str, tmp_path: Path) -> None:
    """An edit naming an unknown coauthor raises ValidationError with its location."""
    archive = calc_zip(tmp_path / "v.zip")
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        upload = await nomad.create_upload(archive)
        await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
        with pytest.raises(ValidationError) as caught:
            await nomad.edit_upload(upload.upload_id, coauthors=["nobody@nowhere.example"])
        assert caught.value.status == 422
        assert ("metadata", "coauthors") in caught.value.locations
        assert "nobody@nowhere.example" in str(caught.value)


async def test_already_published(api_version: str, tmp_path: Path) -> None:
    """Publishing twice raises AlreadyPublishedError."""
    archive = calc_zip(tmp_path / "p.zip")
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        upload = await nomad.create_upload(archive)
        await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
        await nomad.publish_upload(upload.upload_id)
        await nomad.wait_published(upload.upload_id, **FAST_POLL)
        with pytest.raises(AlreadyPublishedError):
            await nomad.publish_upload(upload.upload_id)
        with pytest.raises(ApiError):
            await nomad.delete_upload(upload.upload_id)
    assert srv.state.uploads()[0].published


async def test_busy_while_processing_in_2_0(tmp_path: Path) -> None:
    """2.0 refuses an edit while processing runs: BusyError says to wait."""
    archive = calc_zip(tmp_path / "b.zip")
    async with serve(api_version="2.0", processing_time=30) as srv, connect(srv) as nomad:
        upload = await nomad.create_upload(archive)
        with pytest.raises(BusyError, match="wait"):
            await nomad.edit_upload(upload.upload_id, comment="too early")
        with pytest.raises(BusyError):
            await nomad.publish_upload(upload.upload_id)


async def test_too_large_from_an_html_proxy_page(tmp_path: Path) -> None:
    """A proxy's HTML 413 page becomes TooLargeError with the page's title as message."""
    big = tmp_path / "big.zip"
    big.write_bytes(b"\0" * 4096)
    async with serve(max_upload_size=1000) as srv, connect(srv) as nomad:
        with pytest.raises(TooLargeError) as caught:
            await nomad.create_upload(big)
    assert caught.value.status == 413
    assert caught.value.server_message == "413 Request Entity Too Large"
    assert "<html>" not in str(caught.value)
    assert srv.state.uploads() == []


async def test_rate_limited_after_retries(api_version: str) -> None:
    """A 429 that never ends raises RateLimitedError with Retry-After, after max_attempts."""
    plan = FaultPlan(rules=(FaultRule(route="/uploads", status=429, retry_after=0.0),))
    async with serve(api_version=api_version, faults=plan) as srv, connect(srv) as nomad:
        with pytest.raises(RateLimitedError) as caught:
            await nomad.list_uploads()
        assert caught.value.retry_after == 0.0
        assert nomad.stats.count(429) == FAST_RETRY.max_attempts
        assert nomad.stats.retries == FAST_RETRY.max_attempts - 1
    assert srv.state.fault_counts["status:429"] == FAST_RETRY.max_attempts


async def test_server_error_after_retries() -> None:
    """A persistent 500 raises ServerError with NOMAD's reason after max_attempts tries."""
    plan = FaultPlan(rules=(FaultRule(route="/uploads/{upload_id}", status=500),))
    async with serve(faults=plan) as srv, connect(srv) as nomad:
        with pytest.raises(ServerError) as caught:
            await nomad.get_upload("any")
        assert caught.value.status == 500
        assert nomad.stats.count(500) == FAST_RETRY.max_attempts


async def test_connection_refused_is_a_transport_error() -> None:
    """Nothing listening: TransportError (from aiohttp's error), retried, never aiohttp's own."""
    seen: list[ResponseInfo] = []
    settings = Settings(url=f"http://127.0.0.1:{free_port()}/api/v1")
    async with NomadClient(settings, retry=FAST_RETRY, on_response=seen.append) as nomad:
        with pytest.raises(TransportError) as caught:
            await nomad.info()
        assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)
        assert not isinstance(caught.value, aiohttp.ClientError)
        assert nomad.stats.transport_errors == FAST_RETRY.max_attempts
    assert [(i.status, i.error) for i in seen] == [(None, "ClientConnectorError")] * 4


async def test_connection_refused_on_create_is_not_outcome_unknown(tmp_path: Path) -> None:
    """A create that never connected raises TransportError, not OutcomeUnknownError."""
    archive = calc_zip(tmp_path / "c.zip")
    settings = Settings(url=f"http://127.0.0.1:{free_port()}/api/v1", token=Secret("t"))
    async with NomadClient(settings, retry=FAST_RETRY) as nomad:
        with pytest.raises(TransportError) as caught:
            await nomad.create_upload(archive, upload_name="never")
        assert type(caught.value) is TransportError
        assert nomad.stats.transport_errors == FAST_RETRY.max_attempts


async def test_read_timeout_is_a_request_timeout_error() -> None:
    """A server slower than read_timeout raises RequestTimeoutError, also a TimeoutError."""
    once = RetryPolicy(max_attempts=2, max_time=5, initial_wait=0.001, max_wait=0.001, jitter=0)
    async with serve(latency=2.0) as srv, connect(srv, read_timeout=0.1, retry=once) as nomad:
        with anyio.fail_after(10), pytest.raises(RequestTimeoutError) as caught:
            await nomad.info()
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, TransportError)
    assert nomad.stats.transport_errors == 2

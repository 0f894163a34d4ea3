"""Opening, closing, sessions, settings and connection limits of NomadClient."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
from client_helpers import connect, serve, settings_for

from nomad_bulk.client import ClientState, NomadClient
from nomad_bulk.config import Settings
from nomad_bulk.errors import ConfigError

pytestmark = pytest.mark.anyio


async def test_a_closed_client_cannot_be_reopened() -> None:
    """The state enum refuses a second open and calls after close."""
    async with serve() as srv:
        nomad = NomadClient(settings_for(srv))
        assert nomad.state is ClientState.UNOPENED
        with pytest.raises(RuntimeError, match="not open"):
            await nomad.info()
        async with nomad:
            assert nomad.state.name == "OPENED"
            with pytest.raises(RuntimeError, match="already open"):
                await nomad.__aenter__()
        assert nomad.state.name == "CLOSED"
        with pytest.raises(RuntimeError, match="closed"):
            await nomad.info()
        with pytest.raises(RuntimeError, match="reopen"):
            async with nomad:
                pass  # pragma: no cover - never reached


async def test_a_passed_in_session_is_used_and_left_open() -> None:
    """A caller's session carries the requests and is not closed by the client."""
    async with serve() as srv, aiohttp.ClientSession() as session:
        async with connect(srv, session=session) as nomad:
            assert (await nomad.me()).username == "test1"
        assert not session.closed
        async with session.get(f"{srv.url}/info") as response:
            assert response.status == 200
    assert srv.state.route_counts["GET /info"] == 1


async def test_own_session_is_closed_and_limited() -> None:
    """The client's own session has the configured pool limit and no total timeout."""
    async with serve() as srv:
        nomad = NomadClient(settings_for(srv, max_connections=3, connect_timeout=7, read_timeout=9))
        async with nomad:
            session = nomad._http.session
            assert session.connector is not None and session.connector.limit == 3
            assert session.timeout.total is None
            assert (session.timeout.sock_connect, session.timeout.sock_read) == (7, 9)
        assert session.closed


async def test_settings_come_from_the_environment_when_not_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without settings the client resolves them from NOMAD_* variables at construction."""
    monkeypatch.chdir(tmp_path)
    async with serve() as srv:
        monkeypatch.setenv("NOMAD_URL", srv.url)
        monkeypatch.setenv("NOMAD_USERNAME", "test1")
        monkeypatch.setenv("NOMAD_PASSWORD", "password")
        monkeypatch.delenv("NOMAD_TOKEN", raising=False)
        async with NomadClient() as nomad:
            assert nomad.settings.url == srv.url
            assert (await nomad.me()).username == "test1"
        assert "password" not in repr(nomad)


def test_a_missing_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    """A ca_bundle that cannot be loaded is refused when the client is built."""
    settings = Settings(url="https://nomad.example.org/api/v1", ca_bundle=tmp_path / "none.pem")
    with pytest.raises(ConfigError, match="CA bundle"):
        NomadClient(settings)


async def test_redirects_are_followed_on_the_same_origin(api_version: str) -> None:
    """The other spelling of /datasets answers 307; the funnel follows it once."""
    other = "/datasets/" if api_version == "2.0" else "/datasets"
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        data = await nomad._http.send("GET", other)
        assert data["data"] == []
        assert nomad.stats.redirects == 1 and nomad.stats.count(307) == 1
        created = await nomad._http.send(
            "POST", other, json_body={"dataset_name": "via-redirect"}, auth="required"
        )
        assert created["data"]["dataset_name"] == "via-redirect"
    assert [d.dataset_name for d in srv.state.datasets()] == ["via-redirect"]


def test_tls_is_verified_and_a_ca_bundle_is_used(tmp_path: Path) -> None:
    """TLS verification is on by default; a CA bundle builds a verifying context."""
    default = NomadClient(Settings(url="https://nomad.example.org/api/v1"))
    assert default._http._ssl is True
    bundle = Path(ssl.get_default_verify_paths().openssl_cafile)
    if not bundle.is_file():
        pytest.skip("no system CA bundle to load")
    custom = NomadClient(Settings(url="https://nomad.example.org/api/v1", ca_bundle=bundle))
    context = custom._http._ssl
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    insecure = NomadClient(Settings(url="https://nomad.example.org/api/v1", verify_tls=False))
    assert insecure._http._ssl is False


async def test_hooks_apply_only_inside_their_block() -> None:
    """Gates and observers added with hooks() see the block's requests and no others."""
    from client_helpers import connect as _connect
    from client_helpers import serve as _serve

    construction: list[int | None] = []
    gated: list[int] = []
    seen: list[int | None] = []

    async def gate() -> None:
        gated.append(1)

    async with (
        _serve() as srv,
        _connect(srv, on_response=lambda info: construction.append(info.status)) as nomad,
    ):
        await nomad.me()
        with nomad.hooks(request_gate=gate, on_response=lambda i: seen.append(i.status)):
            await nomad.info(refresh=True)
            await nomad.get_user("68878af7-6845-46c0-b2c1-250d4d8eb470")
        inside = (len(gated), len(seen))
        await nomad.info(refresh=True)
    assert inside == (2, 2)
    assert (len(gated), len(seen)) == (2, 2)
    assert seen == [200, 200]
    assert len(construction) >= 4

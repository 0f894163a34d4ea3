"""State survives restarts with a data_dir; processing in flight is resumed."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from nomad_bulk.server import ServerConfig, running_server

from .helpers import Api, calc_zip

pytestmark = pytest.mark.anyio


async def test_restart_keeps_uploads_datasets_tokens_and_port(tmp_path: Path) -> None:
    """After restart the same URL serves the same uploads, datasets and accepts old tokens."""
    config = ServerConfig(data_dir=tmp_path / "data")
    async with running_server(config) as srv, aiohttp.ClientSession() as session:
        api = Api(srv, session)
        await api.login()
        data = await api.upload(calc_zip(2), upload_name="kept")
        _, ds = await api.call("POST", "/datasets/", json={"dataset_name": "kept-ds"})
        url = srv.url
        await srv.restart()
        assert srv.url == url
        status, again = await api.call("GET", f"/uploads/{data['upload_id']}")
        assert status == 200
        assert again["data"]["upload_name"] == "kept" and again["data"]["entries"] == 2
        assert (await api.call("GET", f"/datasets/{ds['dataset_id']}"))[0] == 200
        async with session.get(
            f"{url}/uploads/{data['upload_id']}/raw/calc0/control.in", headers=api.headers()
        ) as resp:
            assert await resp.read() == b"xc pbe\n"
    async with running_server(config) as srv2:
        assert [u.upload_name for u in srv2.state.uploads()] == ["kept"]


async def test_processing_in_flight_resumes_after_restart(tmp_path: Path) -> None:
    """An upload still processing when the server stops is processed after the restart."""
    config = ServerConfig(data_dir=tmp_path, processing_time=0.2)
    async with running_server(config) as srv, aiohttp.ClientSession() as session:
        api = Api(srv, session)
        await api.login()
        data = await api.upload(calc_zip(1), wait=False)
        await api.call(
            "POST",
            f"/uploads/{data['upload_id']}/edit",
            json={"metadata": {"upload_name": "queued"}},
        )
        await srv.restart()
        record = srv.state.get_upload(data["upload_id"])
        assert record is not None and record.process_running
        await api.idle(data["upload_id"])
        assert record.process_status == "SUCCESS" and len(record.entries) == 1
        assert record.upload_name == "queued"


async def test_restart_without_data_dir_starts_empty() -> None:
    """Without a data_dir a restart begins with an empty state (like an in-memory NOMAD)."""
    async with running_server() as srv, aiohttp.ClientSession() as session:
        api = Api(srv, session)
        await api.login()
        await api.upload(calc_zip(1))
        await srv.restart()
        assert srv.state.uploads() == []
        assert (await api.call("GET", "/users/me"))[0] == 401
        await api.login()
        assert (await api.call("GET", "/uploads"))[1]["pagination"]["total"] == 0

"""The tutorial's workflow with plain HTTP calls, as an existing NOMAD client makes them."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import aiohttp
import anyio
import pytest

from nomad_bulk.server import ServerConfig, running_server

pytestmark = pytest.mark.anyio

AIMS = "  Invoking FHI-aims ...\n"


def _calc(i: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"DFT-{i}/aims.out", AIMS)
        zf.writestr(f"DFT-{i}/control.in", "xc pbe\n")
        zf.writestr(f"DFT-{i}/geometry.in", "atom 0 0 0 H\n")
    return buffer.getvalue()


async def _poll(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    with anyio.fail_after(10):
        while True:
            async with session.get(url, headers=headers) as resp:
                if resp.status == 404:
                    return None
                body = await resp.json()
            if not body["data"]["process_running"]:
                return body["data"]
            await anyio.sleep(0.01)


@pytest.mark.parametrize("version", ["1.3", "2.0"])
async def test_tutorial_flow_with_plain_http(version: str) -> None:
    """upload → status → entries → dataset → edit → publish → entries → delete, unchanged client."""
    config = ServerConfig(api_version=version, processing_time=0.02, time_per_entry=0.01)
    async with running_server(config) as srv, aiohttp.ClientSession() as session:
        base = srv.url
        if version == "1.3":  # the tutorial's utility library logs in with GET
            async with session.get(
                f"{base}/auth/token", params={"username": "test1", "password": "password"}
            ) as resp:
                token = (await resp.json())["access_token"]
        else:
            async with session.post(
                f"{base}/auth/token",
                data={"grant_type": "password", "username": "test1", "password": "password"},
            ) as resp:
                token = (await resp.json())["access_token"]
        auth = {"Authorization": f"Bearer {token}"}

        upload_ids = []
        for i in range(3):
            async with session.post(
                f"{base}/uploads",
                params={"file_name": f"DFT-{i}.zip"},
                data=_calc(i),
                headers={**auth, "Accept": "application/json"},
            ) as resp:
                assert resp.status == 200
                upload_ids.append((await resp.json())["upload_id"])
        for upload_id in upload_ids:
            upload = await _poll(session, f"{base}/uploads/{upload_id}", auth)
            assert upload["process_status"] == "SUCCESS" and upload["entries"] == 1

        entry_ids = []
        for upload_id in upload_ids:
            async with session.get(f"{base}/uploads/{upload_id}/entries", headers=auth) as resp:
                entries = await resp.json()
            assert entries["processing_failed"] == 0
            entry_ids += [e["entry_id"] for e in entries["data"]]
        assert len(entry_ids) == 3

        datasets = f"{base}/datasets/" if version == "1.3" else f"{base}/datasets"
        async with session.post(
            datasets, json={"dataset_name": "Example Dataset - DPG Tutorial 2025"}, headers=auth
        ) as resp:
            assert resp.status == 200
            dataset_id = (await resp.json())["dataset_id"]

        for i, upload_id in enumerate(upload_ids):
            metadata = {
                "metadata": {
                    "upload_name": f"Test Upload - DFT-{i}",
                    "references": ["https://doi.org/xx.xxxx/xxxxxx"],
                    "datasets": dataset_id,
                    "embargo_length": 0,
                    "coauthors": ["coauthor1@example.org"],
                    "comment": "This is a test upload...",
                }
            }
            async with session.post(
                f"{base}/uploads/{upload_id}/edit", json=metadata, headers=auth
            ) as resp:
                assert resp.status == 200, await resp.text()
            upload = await _poll(session, f"{base}/uploads/{upload_id}", auth)
            assert upload["upload_name"] == f"Test Upload - DFT-{i}"
            assert upload["process_status"] == "SUCCESS"

        async with session.post(
            f"{base}/entries/query",
            json={"owner": "visible", "query": {"datasets.dataset_id": dataset_id}},
            headers=auth,
        ) as resp:
            assert (await resp.json())["pagination"]["total"] == 3

        for upload_id in upload_ids[:2]:
            async with session.post(
                f"{base}/uploads/{upload_id}/action/publish", headers=auth
            ) as resp:
                assert resp.status == 200
            upload = await _poll(session, f"{base}/uploads/{upload_id}", auth)
            assert upload["published"] is True

        async with session.get(f"{base}/entries/{entry_ids[0]}") as resp:
            assert resp.status == 200, "published entries are public"

        async with session.delete(f"{base}/uploads/{upload_ids[2]}", headers=auth) as resp:
            assert resp.status == 200
        assert await _poll(session, f"{base}/uploads/{upload_ids[2]}", auth) is None

        records = srv.state.uploads()
        assert [r.published for r in records] == [True, True]
        assert all(r.entries[0].datasets == [dataset_id] for r in records)

"""Entries, raw files and archives: listings with sizes, downloads, queries."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from nomad_bulk.server import ServerConfig

from .helpers import AIMS, Api, make_zip

pytestmark = pytest.mark.anyio

BODY = make_zip(
    {
        "a/aims.out": AIMS,
        "a/control.in": "xc pbe\n",
        "b/sub/aims.out": AIMS,
        "b/readme.txt": "hello world",
    }
)


async def test_upload_entries_listing(api: Api) -> None:
    """Entries are paginated by mainfile with processing counts and the upload block."""
    data = await api.upload(BODY)
    upload_id = data["upload_id"]
    status, page = await api.call("GET", f"/uploads/{upload_id}/entries", params={"page_size": "1"})
    assert status == 200
    assert page["processing_successful"] == 2 and page["processing_failed"] == 0
    assert page["upload"]["upload_id"] == upload_id
    assert page["pagination"]["total"] == 2 and page["pagination"]["next_page_after_value"] == "0"
    entry = page["data"][0]
    assert entry["mainfile"] == "a/aims.out" and entry["parser_name"] == "parsers/fhi-aims"
    assert entry["entry_metadata"]["processed"] is True
    status, one = await api.call("GET", f"/uploads/{upload_id}/entries/{entry['entry_id']}")
    assert status == 200 and one["data"]["mainfile"] == "a/aims.out"
    assert await api.call("GET", f"/uploads/{upload_id}/entries/nope") == (
        404,
        {"detail": "An entry by that id could not be found in the specified upload."},
    )
    _, desc = await api.call(
        "GET", f"/uploads/{upload_id}/entries", params={"order": "desc", "order_by": "mainfile"}
    )
    assert [e["mainfile"] for e in desc["data"]] == ["b/sub/aims.out", "a/aims.out"]


async def test_rawdir_listing_with_sizes_and_entry_info(api: Api) -> None:
    """rawdir lists directories with recursive sizes and files with entry info on request."""
    data = await api.upload(BODY)
    upload_id = data["upload_id"]
    status, root = await api.call("GET", f"/uploads/{upload_id}/rawdir/")
    assert status == 200 and root["access"] == "unpublished"
    content = {c["name"]: c for c in root["directory_metadata"]["content"]}
    assert content["a"]["size"] == len(AIMS) + len("xc pbe\n")
    assert content["b"]["size"] == len(AIMS) + len("hello world")
    assert root["directory_metadata"]["size"] == sum(c["size"] for c in content.values())
    _, a = await api.call(
        "GET", f"/uploads/{upload_id}/rawdir/a", params={"include_entry_info": "true"}
    )
    files = {c["name"]: c for c in a["directory_metadata"]["content"]}
    assert (
        files["aims.out"]["parser_name"] == "parsers/fhi-aims" and "entry_id" in files["aims.out"]
    )
    assert "entry_id" not in files["control.in"]
    _, f = await api.call("GET", f"/uploads/{upload_id}/rawdir/a/control.in")
    assert f["file_metadata"] == {"name": "control.in", "size": 7}
    assert await api.call("GET", f"/uploads/{upload_id}/rawdir/zzz") == (
        404,
        {"detail": "Not found. Invalid path?"},
    )
    assert (await api.call("GET", f"/uploads/{upload_id}/rawdir/", user="test2"))[0] == 401


async def test_raw_file_download_and_zip(api: Api) -> None:
    """raw/{path} streams a file; a directory needs compress=true and comes as a zip."""
    data = await api.upload(BODY)
    upload_id = data["upload_id"]
    async with api.session.get(
        f"{api.url}/uploads/{upload_id}/raw/b/readme.txt", headers=api.headers()
    ) as resp:
        assert resp.status == 200 and await resp.read() == b"hello world"
    async with api.session.get(
        f"{api.url}/uploads/{upload_id}/raw/b/readme.txt?offset=6&length=3", headers=api.headers()
    ) as resp:
        assert await resp.read() == b"wor"
    assert await api.call("GET", f"/uploads/{upload_id}/raw/b") == (
        400,
        {"detail": "Path is a directory, `compress` must be set to true"},
    )
    async with api.session.get(
        f"{api.url}/uploads/{upload_id}/raw/?compress=true", headers=api.headers()
    ) as resp:
        assert resp.status == 200
        names = zipfile.ZipFile(io.BytesIO(await resp.read())).namelist()
    assert sorted(names) == ["a/aims.out", "a/control.in", "b/readme.txt", "b/sub/aims.out"]
    assert (await api.call("GET", f"/uploads/{upload_id}/raw/nope"))[0] == 404


async def test_entry_endpoints(api: Api) -> None:
    """/entries/{id}, /raw (zip with manifest), /archive and /archive/download."""
    data = await api.upload(BODY)
    record = api.server.state.uploads()[0]
    entry_id = record.entries[0].entry_id
    status, entry = await api.call("GET", f"/entries/{entry_id}")
    assert status == 200 and entry["data"]["mainfile"] == "a/aims.out"
    assert entry["data"]["upload_id"] == data["upload_id"]
    assert (await api.call("GET", f"/entries/{entry_id}", user="test2"))[0] == 404
    async with api.session.get(f"{api.url}/entries/{entry_id}/raw", headers=api.headers()) as resp:
        assert resp.status == 200
        assert 'filename="raw_files.zip"' in resp.headers["Content-Disposition"]
        archive = zipfile.ZipFile(io.BytesIO(await resp.read()))
    upload_id = data["upload_id"]
    assert sorted(archive.namelist()) == sorted(
        [f"{upload_id}/a/aims.out", f"{upload_id}/a/control.in", "manifest.json"]
    )
    assert json.loads(archive.read("manifest.json"))[0]["entry_id"] == entry_id
    status, arch = await api.call("GET", f"/entries/{entry_id}/archive")
    assert status == 200 and arch["data"]["archive"]["metadata"]["entry_id"] == entry_id
    async with api.session.get(
        f"{api.url}/entries/{entry_id}/archive/download", headers=api.headers()
    ) as resp:
        assert resp.status == 200
        assert f'filename="{entry_id}.json"' in resp.headers["Content-Disposition"]
        assert (await resp.json())["metadata"]["mainfile"] == "a/aims.out"
    assert await api.call("GET", "/entries/nope/archive") == (
        404,
        {"detail": "The entry does not exist or is not visible to you."},
    )


async def test_entries_query_by_owner_upload_and_dataset(api: Api) -> None:
    """POST /entries/query filters by upload_id and datasets.dataset_id; owner defaults public."""
    data = await api.upload(BODY)
    upload_id = data["upload_id"]
    _, ds = await api.call("POST", "/datasets/", json={"dataset_name": "q"})
    await api.call(
        "POST",
        f"/uploads/{upload_id}/edit",
        json={"entries": {"a/aims.out": {"datasets": ds["dataset_id"]}}, "entries_key": "mainfile"},
    )
    await api.idle(upload_id)
    _, public = await api.call("POST", "/entries/query", json={"query": {"upload_id": upload_id}})
    assert public["pagination"]["total"] == 0
    _, mine = await api.call(
        "POST", "/entries/query", json={"owner": "user", "query": {"upload_id": upload_id}}
    )
    assert mine["pagination"]["total"] == 2
    _, in_ds = await api.call(
        "POST",
        "/entries/query",
        json={"owner": "visible", "query": {"datasets.dataset_id": ds["dataset_id"]}},
    )
    assert [e["mainfile"] for e in in_ds["data"]] == ["a/aims.out"]
    _, paged = await api.call(
        "POST",
        "/entries/query",
        json={
            "owner": "visible",
            "query": {"upload_id": upload_id},
            "pagination": {"page_size": 1},
        },
    )
    nxt = paged["pagination"]["next_page_after_value"]
    _, second = await api.call(
        "POST",
        "/entries/query",
        json={
            "owner": "visible",
            "query": {"upload_id": upload_id},
            "pagination": {"page_size": 1, "page_after_value": nxt},
        },
    )
    assert second["data"][0]["entry_id"] != paged["data"][0]["entry_id"]
    assert (await api.call("POST", "/entries/query", user=None, json={"owner": "user"}))[0] == 401
    status, _ = await api.call(
        "GET", "/entries", params={"owner": "visible", "upload_id": upload_id}
    )
    assert status == 200


@pytest.mark.parametrize("server_config", [ServerConfig(api_version="2.0")])
async def test_v2_entry_shapes(api: Api) -> None:
    """2.0: parser names of the plugin era, no entry current_process, Z timestamps."""
    data = await api.upload(BODY)
    _, page = await api.call("GET", f"/uploads/{data['upload_id']}/entries")
    entry = page["data"][0]
    assert entry["parser_name"] == "electronicparsers:fhiaims_parser_entry_point"
    assert "current_process" not in entry
    assert entry["entry_create_time"].endswith("Z")
    assert data["data"]["upload_create_time"].endswith("Z")
    async with api.session.get(
        f"{api.url}/entries/{entry['entry_id']}/archive/download", headers=api.headers()
    ) as resp:
        assert f"{entry['entry_id']}.archive.json" in resp.headers["Content-Disposition"]

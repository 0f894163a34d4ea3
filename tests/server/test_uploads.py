"""Uploads: creation (raw and multipart), the Accept rule, listing, pagination, limits."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from nomad_bulk.server import ServerConfig, entry_id_for

from .helpers import AIMS, Api, calc_zip, make_zip

pytestmark = pytest.mark.anyio


async def test_raw_upload_is_processed_into_entries(api: Api) -> None:
    """A raw zip body with file_name is extracted and each mainfile becomes an entry."""
    data = await api.upload(calc_zip(3), upload_name="three")
    assert data["data"]["process_status"] == "SUCCESS"
    assert data["data"]["last_status_message"] == "Process process_upload completed successfully"
    assert data["data"]["entries"] == 3
    assert data["data"]["upload_name"] == "three"
    record = api.server.state.uploads()[0]
    assert [e.mainfile for e in record.entries] == [f"calc{i}/aims.out" for i in range(3)]
    assert all(e.process_status == "SUCCESS" for e in record.entries)


async def test_post_answer_shows_pending_process(api: Api) -> None:
    """The POST answer already shows the scheduled process (no stale-status race)."""
    status, data = await api.call(
        "POST",
        "/uploads",
        params={"file_name": "a.zip"},
        data=calc_zip(1),
        headers={"Accept": "application/json"},
    )
    assert status == 200
    assert data["data"]["process_status"] == "PENDING"
    assert data["data"]["process_running"] is True
    assert data["data"]["current_process"] == "process_upload"
    assert data["data"]["last_status_message"] == "Pending: process_upload"
    assert data["data"]["entries"] == 0
    await api.idle(data["upload_id"])


async def test_ids_follow_nomad_formulas(api: Api) -> None:
    """upload_id is 22 url-safe characters; entry_id is NOMAD's SHA-512 formula."""
    data = await api.upload(calc_zip(1))
    upload_id = data["upload_id"]
    assert len(upload_id) == 22
    base64.urlsafe_b64decode(upload_id + "==")
    digest = hashlib.sha512(f"{upload_id}calc0/aims.out".encode()).digest()
    expected = base64.b64encode(digest, altchars=b"-_").decode()[:28]
    assert entry_id_for(upload_id, "calc0/aims.out") == expected
    _, entries = await api.call("GET", f"/uploads/{upload_id}/entries")
    assert entries["data"][0]["entry_id"] == expected


async def test_non_json_accept_gets_thank_you_text(api: Api) -> None:
    """Any Accept other than exactly application/json gets NOMAD's plain-text thanks."""
    for accept in ("*/*", "application/json, text/plain"):
        async with api.session.post(
            f"{api.url}/uploads?file_name=a.zip",
            data=calc_zip(1),
            headers=api.headers(Accept=accept),
        ) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/plain"
            assert "Thanks for uploading your data to nomad." in await resp.text()
    assert len(api.server.state.uploads()) == 2


async def test_multipart_upload_names_upload_after_file(api: Api) -> None:
    """A multipart upload with one file gets that file's name as upload_name."""
    form = aiohttp.FormData()
    form.add_field("file", calc_zip(2), filename="my calcs.zip")
    status, data = await api.call(
        "POST", "/uploads", data=form, headers={"Accept": "application/json"}
    )
    assert status == 200, data
    assert data["data"]["upload_name"] == "my calcs.zip"
    await api.idle(data["upload_id"])
    assert len(api.server.state.uploads()[0].entries) == 2


async def test_multipart_bad_file_name_is_refused(api: Api) -> None:
    """A multipart file named '..' is refused with 400 and creates nothing."""
    form = aiohttp.FormData()
    form.add_field("file", b"x", filename="..")
    status, data = await api.call(
        "POST", "/uploads", data=form, headers={"Accept": "application/json"}
    )
    assert (status, data) == (400, {"detail": "Bad file name provided."})
    assert api.server.state.uploads() == []


async def test_raw_zip_without_file_name_is_sniffed(api: Api) -> None:
    """Without file_name a zip body is recognised by content and extracted; upload_name null."""
    data = await api.upload(calc_zip(1), file_name=None)
    assert "upload_name" not in data["data"]
    assert data["data"]["entries"] == 1


async def test_raw_non_archive_without_file_name_is_refused(api: Api) -> None:
    """Without file_name a body that is no zip or tar gets NOMAD's 400 and no upload."""
    status, data = await api.call(
        "POST", "/uploads", data=b"plain text", headers={"Accept": "application/json"}
    )
    assert status == 400
    assert data["detail"] == (
        "No file name provided, and the file does not look like a zip or tar file."
    )
    assert api.server.state.uploads() == []


async def test_zip_with_non_archive_name_is_stored_unextracted(api: Api) -> None:
    """A zip sent with a file_name lacking an archive suffix is stored as one plain file."""
    data = await api.upload(calc_zip(1), file_name="calc.bin")
    assert data["data"]["entries"] == 0
    _, listing = await api.call("GET", f"/uploads/{data['upload_id']}/rawdir/")
    assert [c["name"] for c in listing["directory_metadata"]["content"]] == ["calc.bin"]


async def test_nested_archive_is_not_extracted(api: Api) -> None:
    """Like NOMAD, only the uploaded archive is extracted; an inner zip stays a file."""
    inner = calc_zip(1)
    data = await api.upload(make_zip({"outer/inner.zip": inner, "top/aims.out": AIMS}))
    assert data["data"]["entries"] == 1
    _, listing = await api.call("GET", f"/uploads/{data['upload_id']}/rawdir/outer")
    content = listing["directory_metadata"]["content"]
    assert content == [{"name": "inner.zip", "is_file": True, "size": len(inner)}]


async def test_empty_body_creates_ready_upload(api: Api) -> None:
    """A zero-length body creates an upload with no files that stays READY."""
    status, data = await api.call(
        "POST",
        "/uploads",
        params={"upload_name": "empty"},
        data=b"",
        headers={"Accept": "application/json"},
    )
    assert status == 200
    assert data["data"]["process_status"] == "READY"
    assert data["data"]["process_running"] is False
    assert api.server.state.uploads()[0].upload_name == "empty"


async def test_form_urlencoded_body_creates_empty_upload(api: Api) -> None:
    """A body sent as form-urlencoded is swallowed: an empty READY upload (NOMAD pitfall)."""
    status, data = await api.call(
        "POST",
        "/uploads",
        params={"file_name": "a.zip"},
        data=calc_zip(1),
        headers={
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert status == 200
    assert data["data"]["process_status"] == "READY"
    assert api.server.state.uploads()[0].entries == []


async def test_corrupt_zip_ends_in_failure(api: Api) -> None:
    """A body named .zip that is no zip is accepted, and processing ends FAILURE."""
    data = await api.upload(b"not a zip at all", file_name="broken.zip")
    assert data["data"]["process_status"] == "FAILURE"
    assert data["data"]["errors"] == [
        "AssertionError: Cannot extract file. Bad file format or file extension?"
    ]
    assert data["data"]["last_status_message"].startswith("Process process_upload failed: ")


async def test_truncated_zip_ends_in_failure(api: Api) -> None:
    """A zip cut short ends FAILURE and the server keeps serving."""
    body = calc_zip(3)
    data = await api.upload(body[: len(body) // 2], file_name="cut.zip")
    assert data["data"]["process_status"] == "FAILURE"
    status, _ = await api.call("GET", "/uploads")
    assert status == 200


async def test_marker_files_fail_entries_or_uploads(api: Api) -> None:
    """NOMAD_BULK_FAIL_ENTRY fails one entry (upload SUCCESS); _UPLOAD fails the upload."""
    body = make_zip({"a/aims.out": AIMS, "b/aims.out": AIMS + "NOMAD_BULK_FAIL_ENTRY\n"})
    data = await api.upload(body)
    assert data["data"]["process_status"] == "SUCCESS"
    _, entries = await api.call("GET", f"/uploads/{data['upload_id']}/entries")
    assert (entries["processing_successful"], entries["processing_failed"]) == (1, 1)
    failed = [e for e in entries["data"] if e["process_status"] == "FAILURE"]
    assert failed[0]["mainfile"] == "b/aims.out" and failed[0]["errors"]
    bad = await api.upload(make_zip({"a/aims.out": AIMS, "x.txt": "NOMAD_BULK_FAIL_UPLOAD"}))
    assert bad["data"]["process_status"] == "FAILURE"


async def test_three_codes_are_matched(api: Api) -> None:
    """FHI-aims by content, VASP by name and Quantum ESPRESSO by content become entries."""
    body = make_zip(
        {
            "aims/run.log": AIMS,
            "vasp/vasprun.xml": "<modeling/>",
            "qe/out.txt": "     Program PWSCF v.7.2 starts on 1Jan2024\n",
            "other/readme.txt": "nothing",
            "aims/.hidden": AIMS,
        }
    )
    data = await api.upload(body)
    entries = {e.mainfile: e.parser_name for e in api.server.state.uploads()[0].entries}
    assert entries == {
        "aims/run.log": "parsers/fhi-aims",
        "qe/out.txt": "parsers/quantumespresso",
        "vasp/vasprun.xml": "parsers/vasp",
    }
    assert data["data"]["entries"] == 3


async def test_embargo_out_of_range_is_refused(api: Api) -> None:
    """embargo_length outside 0–36 gets NOMAD's 400 and no upload."""
    status, data = await api.call(
        "POST",
        "/uploads",
        params={"embargo_length": "37", "file_name": "a.zip"},
        data=calc_zip(1),
        headers={"Accept": "application/json"},
    )
    assert (status, data) == (400, {"detail": "`embargo_length` must be between 0 and 36 months."})
    assert api.server.state.uploads() == []


async def test_upload_requires_auth(api: Api) -> None:
    """POST /uploads without a token is 401 and creates nothing."""
    status, data = await api.call("POST", "/uploads", user=None, data=calc_zip(1))
    assert status == 401
    assert data == {"detail": "Authorization required."}
    assert api.server.state.uploads() == []


@pytest.mark.parametrize("server_config", [ServerConfig(upload_limit=2)])
async def test_unpublished_upload_limit(api: Api) -> None:
    """The (limit+1)th unpublished upload is refused; admins are exempt; publishing frees one."""
    first = await api.upload(calc_zip(1))
    await api.upload(calc_zip(1))
    status, data = await api.call("POST", "/uploads", data=calc_zip(1))
    assert (status, data) == (400, {"detail": "Limit of unpublished uploads exceeded for user."})
    await api.login("admin")
    for _ in range(3):
        await api.upload(calc_zip(1), user="admin")
    status, _ = await api.call("POST", f"/uploads/{first['upload_id']}/action/publish")
    assert status == 200
    await api.idle(first["upload_id"])
    await api.upload(calc_zip(1))
    mine = [u for u in api.server.state.uploads() if u.main_author == first["data"]["main_author"]]
    assert len(mine) == 3 and sum(u.published for u in mine) == 1


@pytest.mark.parametrize("server_config", [ServerConfig(max_upload_size=1000)])
async def test_oversize_body_gets_413_without_upload(api: Api) -> None:
    """A body over max_upload_size is answered 413 (HTML, like the proxy) and nothing is created."""
    async with api.session.post(
        f"{api.url}/uploads?file_name=a.zip",
        data=b"x" * 5000,
        headers=api.headers(Accept="application/json"),
    ) as resp:
        assert resp.status == 413
        assert "413 Request Entity Too Large" in await resp.text()
    assert api.server.state.uploads() == []
    status, _ = await api.call("GET", "/uploads")
    assert status == 200


@pytest.mark.parametrize("server_config", [ServerConfig(max_upload_size=1000)])
async def test_oversize_chunked_body_gets_413(api: Api) -> None:
    """A chunked body (no Content-Length) is cut off at the limit with 413."""

    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 500

    async with api.session.post(
        f"{api.url}/uploads?file_name=a.zip",
        data=body(),
        headers=api.headers(Accept="application/json"),
    ) as resp:
        assert resp.status == 413
    assert api.server.state.uploads() == []


async def test_get_upload_access_rules(api: Api) -> None:
    """Unknown ids are 404; other users' unpublished uploads are 401 (1.3); anonymous 401."""
    data = await api.upload(calc_zip(1))
    upload_id = data["upload_id"]
    assert await api.call("GET", "/uploads/nope") == (
        404,
        {"detail": "The specified upload_id was not found."},
    )
    assert await api.call("GET", f"/uploads/{upload_id}", user="test2") == (
        401,
        {"detail": "You do not have access to the specified upload."},
    )
    assert await api.call("GET", f"/uploads/{upload_id}", user=None) == (
        401,
        {"detail": "You need to log in to access the specified upload."},
    )


async def test_list_filters(api: Api) -> None:
    """GET /uploads filters by id, exact name, is_published, is_processing and roles."""
    a = await api.upload(calc_zip(1), upload_name="alpha")
    b = await api.upload(calc_zip(1), upload_name="beta")
    await api.call(
        "POST",
        f"/uploads/{b['upload_id']}/edit",
        json={"metadata": {"coauthors": ["test2"]}},
    )
    await api.idle(b["upload_id"])
    await api.call("POST", f"/uploads/{a['upload_id']}/action/publish")
    await api.idle(a["upload_id"])

    async def names(user: str = "test1", **params: str) -> list[str]:
        status, data = await api.call("GET", "/uploads", user=user, params=params)
        assert status == 200, data
        return sorted(u["upload_name"] for u in data["data"])

    assert await names(upload_name="alpha") == ["alpha"]
    assert await names(upload_name="alph") == []
    assert await names(upload_id=b["upload_id"]) == ["beta"]
    assert await names(is_published="true") == ["alpha"]
    assert await names(is_published="false") == ["beta"]
    assert await names(is_processing="false") == ["alpha", "beta"]
    assert await names(is_processing="true") == []
    assert await names("test2") == ["beta"]
    assert await names("test2", roles="main_author") == []
    assert await names("test2", roles="coauthor") == ["beta"]
    status, data = await api.call("GET", "/uploads", params={"is_published": "maybe"})
    assert status == 422
    assert data["detail"][0]["loc"] == ["query", "is_published"]
    status, data = await api.call("GET", "/uploads", params={"order_by": "nonsense"})
    assert status == 422 and data["detail"][0]["loc"] == ["query"]
    assert data["detail"][0]["type"] == "invalid_order_by"
    assert (await api.call("GET", "/uploads", user=None))[0] == 401


async def test_pagination_edge_cases(api: Api) -> None:
    """Pages, page_after_value chains, page_size=0 totals and out-of-range pages."""
    for i in range(5):
        await api.upload(calc_zip(1), upload_name=f"u{i}", wait=False)
    for record in api.server.state.uploads():
        await api.idle(record.upload_id)
    status, data = await api.call("GET", "/uploads", params={"page_size": "0"})
    assert status == 200
    assert data["data"] == [] and data["pagination"]["total"] == 5
    status, data = await api.call("GET", "/uploads", params={"page_size": "2"})
    pag = data["pagination"]
    assert [u["upload_name"] for u in data["data"]] == ["u0", "u1"]
    assert pag["next_page_after_value"] == "1" and pag["page"] == 1
    assert "page_after_value" not in pag and "next_page_url" in pag
    names = [u["upload_name"] for u in data["data"]]
    after = pag["next_page_after_value"]
    while after is not None:
        _, data = await api.call(
            "GET", "/uploads", params={"page_size": "2", "page_after_value": after}
        )
        names += [u["upload_name"] for u in data["data"]]
        after = data["pagination"].get("next_page_after_value")
    assert names == [f"u{i}" for i in range(5)]
    _, data = await api.call("GET", "/uploads", params={"page_size": "2", "page": "3"})
    assert [u["upload_name"] for u in data["data"]] == ["u4"]
    assert data["pagination"]["page_after_value"] == "3"
    assert "next_page_after_value" not in data["pagination"]
    assert data["pagination"]["prev_page_url"].endswith("page=2")
    assert await api.call("GET", "/uploads", params={"page_size": "2", "page": "4"}) == (
        400,
        {"detail": "Page out of range requested."},
    )
    _, data = await api.call(
        "GET", "/uploads", params={"page_size": "2", "order": "desc", "order_by": "upload_name"}
    )
    assert [u["upload_name"] for u in data["data"]] == ["u4", "u3"]
    status, data = await api.call("GET", "/uploads", params={"page_size": "0", "page": "1"})
    assert status == 422
    assert data["detail"][0]["msg"] == "Cannot specify page when page_size is set to 0"
    status, data = await api.call("GET", "/uploads", params={"page": "2", "page_offset": "1"})
    assert status == 422
    assert data["detail"][0]["type"] == "multiple_pagination_criteria"
    status, data = await api.call("GET", "/uploads", params={"page_size": "-1"})
    assert status == 422


async def test_page_past_end_of_empty_list_is_first_page(api: Api) -> None:
    """With no uploads, page 1 is fine and page 2 is out of range."""
    status, data = await api.call("GET", "/uploads")
    assert status == 200 and data["pagination"]["total"] == 0 and data["data"] == []
    assert (await api.call("GET", "/uploads", params={"page": "2"}))[0] == 400


async def test_delete_upload(api: Api) -> None:
    """Delete: main author only (coauthor 401), then the upload is 404 and its files gone."""
    data = await api.upload(calc_zip(1))
    upload_id = data["upload_id"]
    await api.call(
        "POST", f"/uploads/{upload_id}/edit", json={"metadata": {"coauthors": ["test2"]}}
    )
    await api.idle(upload_id)
    assert await api.call("DELETE", f"/uploads/{upload_id}", user="test2") == (
        401,
        {"detail": "Only main author has permissions for this operation."},
    )
    status, answer = await api.call("DELETE", f"/uploads/{upload_id}")
    assert status == 200
    assert answer["data"]["current_process"] == "delete_upload"
    assert answer["data"]["process_status"] == "PENDING"
    await api.idle(upload_id)
    assert (await api.call("GET", f"/uploads/{upload_id}"))[0] == 404
    assert (await api.call("DELETE", f"/uploads/{upload_id}"))[0] == 404
    assert api.server.state.uploads() == []
    assert not api.server.state.upload_dir(upload_id).exists()


async def test_published_upload_cannot_be_deleted(api: Api) -> None:
    """Deleting a published upload is refused for its author."""
    data = await api.upload(calc_zip(1))
    await api.call("POST", f"/uploads/{data['upload_id']}/action/publish")
    await api.idle(data["upload_id"])
    assert await api.call("DELETE", f"/uploads/{data['upload_id']}") == (
        401,
        {"detail": "Upload is already published, only admins can perform this operation."},
    )

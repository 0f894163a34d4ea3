"""Edit validation (§5.5), publish preconditions (§5.6) and process scheduling (1.3 vs 2.0)."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_bulk.server import ServerConfig

from .helpers import AIMS, Api, calc_zip, make_zip

pytestmark = pytest.mark.anyio

V2 = ServerConfig(api_version="2.0")
TEST2 = "a03af8b6-3aa7-428a-b3b1-4a6317e576b6"


async def _edit(
    api: Api, upload_id: str, body: dict[str, Any], user: str = "test1"
) -> tuple[int, Any]:
    return await api.call("POST", f"/uploads/{upload_id}/edit", user=user, json=body)


async def test_edit_applies_upload_and_entry_metadata(api: Api) -> None:
    """An edit sets name/coauthors on the upload and comment/references/datasets on entries."""
    data = await api.upload(calc_zip(2))
    upload_id = data["upload_id"]
    _, dataset = await api.call("POST", "/datasets/", json={"dataset_name": "mine"})
    status, answer = await _edit(
        api,
        upload_id,
        {
            "metadata": {
                "upload_name": "renamed",
                "coauthors": ["test2@example.org"],
                "reviewers": "coauthor1",
                "comment": "hello",
                "references": ["https://example.org/paper"],
                "datasets": "mine",
            }
        },
    )
    assert status == 200
    assert answer["data"]["current_process"] == "edit_upload_metadata"
    assert answer["data"]["process_status"] == "PENDING"
    await api.idle(upload_id)
    record = api.server.state.get_upload(upload_id)
    assert record is not None
    assert record.upload_name == "renamed"
    assert record.coauthors == [TEST2]
    assert len(record.reviewers) == 1
    assert record.process_status == "SUCCESS"
    assert record.last_status_message == "Process edit_upload_metadata completed successfully"
    for entry in record.entries:
        assert entry.comment == "hello"
        assert entry.references == ["https://example.org/paper"]
        assert entry.datasets == [dataset["dataset_id"]]
    _, entries = await api.call("GET", f"/uploads/{upload_id}/entries")
    meta = entries["data"][0]["entry_metadata"]
    assert meta["datasets"][0]["dataset_name"] == "mine"
    assert meta["comment"] == "hello"


async def test_user_refs_by_id_username_and_email(api: Api) -> None:
    """Coauthors may be given by user_id, username or e-mail; the main author is dropped."""
    data = await api.upload(calc_zip(1))
    upload_id = data["upload_id"]
    main = data["data"]["main_author"]
    for ref in (TEST2, "test2", "test2@example.org"):
        status, _ = await _edit(api, upload_id, {"metadata": {"coauthors": [ref, main]}})
        assert status == 200
        await api.idle(upload_id)
        record = api.server.state.get_upload(upload_id)
        assert record is not None and record.coauthors == [TEST2]


async def test_list_operations(api: Api) -> None:
    """add/remove/set operations on coauthors; datasets are added, never replaced."""
    data = await api.upload(calc_zip(1))
    upload_id = data["upload_id"]
    await _edit(api, upload_id, {"metadata": {"coauthors": {"add": ["test2", "coauthor1"]}}})
    await api.idle(upload_id)
    await _edit(api, upload_id, {"metadata": {"coauthors": {"remove": ["test2"]}}})
    await api.idle(upload_id)
    record = api.server.state.get_upload(upload_id)
    assert record is not None and [
        api.server.state.users[u].username for u in record.coauthors
    ] == ["coauthor1"]
    _, a = await api.call("POST", "/datasets/", json={"dataset_name": "a"})
    _, b = await api.call("POST", "/datasets/", json={"dataset_name": "b"})
    await _edit(api, upload_id, {"metadata": {"datasets": a["dataset_id"]}})
    await api.idle(upload_id)
    await _edit(api, upload_id, {"metadata": {"datasets": [b["dataset_id"]]}})
    await api.idle(upload_id)
    assert record.entries[0].datasets == [a["dataset_id"], b["dataset_id"]]
    await _edit(api, upload_id, {"metadata": {"datasets": {"remove": [a["dataset_id"]]}}})
    await api.idle(upload_id)
    assert record.entries[0].datasets == [b["dataset_id"]]


@pytest.mark.parametrize(
    ("metadata", "loc", "msg"),
    [
        ({}, ["metadata"], "No fields to update specified"),
        (
            {"coauthors": ["nobody"]},
            ["metadata", "coauthors"],
            "User reference not found: `nobody`",
        ),
        ({"datasets": ["nods"]}, ["metadata", "datasets"], "Dataset reference not found: `nods`"),
        ({"license": "x"}, ["metadata", "license"], "Admin rights required"),
        (
            {"embargo_length": 40},
            ["metadata", "embargo_length"],
            "Value should be between 0 and 36",
        ),
        ({"references": ["notaurl"]}, ["metadata", "references"], "Please enter a valid URL ..."),
        (
            {"datasets": {"set": ["x"]}},
            ["metadata", "datasets"],
            "Only `add` and `remove` operations permitted for datasets",
        ),
    ],
)
async def test_edit_validation_errors(
    api: Api, metadata: dict[str, Any], loc: list[str], msg: str
) -> None:
    """Invalid edits get 422 with NOMAD's loc and message, and change nothing."""
    data = await api.upload(calc_zip(1), upload_name="keep")
    status, answer = await _edit(api, data["upload_id"], {"metadata": metadata})
    assert status == 422
    assert {"loc": loc, "msg": msg, "type": "value_error"} in answer["detail"]
    record = api.server.state.get_upload(data["upload_id"])
    assert record is not None and record.upload_name == "keep" and not record.jobs


async def test_unknown_quantity_also_reports_no_fields(api: Api) -> None:
    """Only unknown quantities: 'Unknown quantity' and 'No fields to update specified'."""
    data = await api.upload(calc_zip(1))
    status, answer = await _edit(api, data["upload_id"], {"metadata": {"foo": 1}})
    assert status == 422
    assert [e["msg"] for e in answer["detail"]] == [
        "Unknown quantity",
        "No fields to update specified",
    ]


async def test_entry_level_edit_and_upload_level_refusal(api: Api) -> None:
    """Per-entry edits by mainfile work; upload-level quantities per entry are refused."""
    data = await api.upload(calc_zip(2))
    upload_id = data["upload_id"]
    status, answer = await _edit(
        api,
        upload_id,
        {"entries": {"calc0/aims.out": {"upload_name": "y"}}, "entries_key": "mainfile"},
    )
    assert status == 422
    assert answer["detail"][0]["msg"] == "Quantity can only be edited on the upload level"
    status, _ = await _edit(
        api,
        upload_id,
        {"entries": {"calc1/aims.out": {"comment": "only me"}}, "entries_key": "mainfile"},
    )
    assert status == 200
    await api.idle(upload_id)
    record = api.server.state.get_upload(upload_id)
    assert record is not None
    assert [e.comment for e in record.entries] == [None, "only me"]


async def test_edit_of_unknown_or_foreign_upload_is_422(api: Api) -> None:
    """Unknown upload → 422 loc upload_id; no write access → 422 AuthLevel message."""
    assert await _edit(api, "nope", {"metadata": {"upload_name": "x"}}) == (
        422,
        {
            "detail": [
                {"loc": ["upload_id"], "msg": "No matching upload found", "type": "value_error"}
            ]
        },
    )
    data = await api.upload(calc_zip(1))
    status, answer = await _edit(
        api, data["upload_id"], {"metadata": {"upload_name": "x"}}, "test2"
    )
    assert status == 422
    assert answer["detail"][0]["loc"] == ["metadata", "upload_name"]
    assert answer["detail"][0]["msg"] == (
        f"AuthLevel.coauthor access required for upload {data['upload_id']}"
    )


async def test_foreign_dataset_is_refused(api: Api) -> None:
    """A dataset of another user cannot be used by id (and not found by name)."""
    data = await api.upload(calc_zip(1))
    _, other = await api.call("POST", "/datasets/", user="test2", json={"dataset_name": "theirs"})
    status, answer = await _edit(
        api, data["upload_id"], {"metadata": {"datasets": other["dataset_id"]}}
    )
    assert status == 422
    assert answer["detail"][0]["msg"] == f"Dataset `{other['dataset_id']}` does not belong to you"
    status, answer = await _edit(api, data["upload_id"], {"metadata": {"datasets": "theirs"}})
    assert answer["detail"][0]["msg"] == "Dataset reference not found: `theirs`"


async def test_verify_only_changes_nothing(api: Api) -> None:
    """verify_only validates and answers 200 without scheduling anything."""
    data = await api.upload(calc_zip(1), upload_name="same")
    status, answer = await _edit(
        api, data["upload_id"], {"metadata": {"upload_name": "other"}, "verify_only": True}
    )
    assert status == 200 and answer["data"]["upload_name"] == "same"
    record = api.server.state.get_upload(data["upload_id"])
    assert record is not None and record.upload_name == "same" and record.jobs == []


async def test_publish_preconditions(api: Api) -> None:
    """Publish: failed → 400, no entries → 400, bad embargo → 400, twice → 400, stranger 401."""
    failed = await api.upload(b"junk", file_name="x.zip")
    assert await api.call("POST", f"/uploads/{failed['upload_id']}/action/publish") == (
        400,
        {"detail": "Cannot publish an upload that failed processing."},
    )
    empty = await api.upload(make_zip({"readme.txt": "no mainfile"}))
    assert await api.call("POST", f"/uploads/{empty['upload_id']}/action/publish") == (
        400,
        {"detail": "Cannot publish an upload without any resulting entries."},
    )
    good = await api.upload(calc_zip(1))
    upload_id = good["upload_id"]
    assert (await api.call("POST", f"/uploads/{upload_id}/action/publish", user="test2"))[0] == 401
    assert await api.call(
        "POST", f"/uploads/{upload_id}/action/publish", params={"embargo_length": "37"}
    ) == (400, {"detail": "Invalid embargo_length. Must be between 0 and 36 months."})
    status, answer = await api.call(
        "POST", f"/uploads/{upload_id}/action/publish", params={"embargo_length": "12"}
    )
    assert status == 200
    assert answer["data"]["current_process"] == "publish_upload"
    assert answer["data"]["published"] is False and answer["data"]["process_running"] is True
    await api.idle(upload_id)
    record = api.server.state.get_upload(upload_id)
    assert record is not None and record.published and record.embargo_length == 12
    assert await api.call("POST", f"/uploads/{upload_id}/action/publish") == (
        400,
        {"detail": "Upload already published."},
    )


async def test_upload_with_only_failed_entries_can_be_published(api: Api) -> None:
    """Entries in FAILURE count as processed for the publish precondition (like NOMAD)."""
    data = await api.upload(make_zip({"a/aims.out": AIMS + "NOMAD_BULK_FAIL_ENTRY"}))
    status, _ = await api.call("POST", f"/uploads/{data['upload_id']}/action/publish")
    assert status == 200


async def test_coauthor_may_publish_and_see(api: Api) -> None:
    """A coauthor can read and publish the upload."""
    data = await api.upload(calc_zip(1))
    upload_id = data["upload_id"]
    await _edit(api, upload_id, {"metadata": {"coauthors": ["test2"]}})
    await api.idle(upload_id)
    assert (await api.call("GET", f"/uploads/{upload_id}", user="test2"))[0] == 200
    assert (await api.call("POST", f"/uploads/{upload_id}/action/publish", user="test2"))[0] == 200


async def test_publish_directly(api: Api) -> None:
    """publish_directly publishes at the end of the first processing when entries exist."""
    data = await api.upload(calc_zip(1), publish_directly="true")
    assert data["data"]["published"] is True and "publish_time" in data["data"]
    empty = await api.upload(make_zip({"x.txt": "nothing"}), publish_directly="true")
    assert empty["data"]["published"] is False


@pytest.mark.parametrize("server_config", [ServerConfig(processing_time=0.2)])
async def test_v13_queues_edit_behind_processing(api: Api) -> None:
    """1.3: an edit during processing is queued (200, current_process unchanged) and runs after."""
    data = await api.upload(calc_zip(1), wait=False)
    upload_id = data["upload_id"]
    status, answer = await _edit(api, upload_id, {"metadata": {"upload_name": "later"}})
    assert status == 200
    assert answer["data"]["current_process"] == "process_upload"
    assert answer["data"]["process_running"] is True
    assert await api.call("POST", f"/uploads/{upload_id}/action/publish") == (
        400,
        {"detail": "The upload is currently being processed, operation not allowed."},
    )
    await api.idle(upload_id)
    record = api.server.state.get_upload(upload_id)
    assert record is not None and record.upload_name == "later"
    assert record.current_process == "edit_upload_metadata"
    assert record.process_status == "SUCCESS"


@pytest.mark.parametrize("server_config", [ServerConfig(processing_time=0.2)])
async def test_v13_queued_edit_dropped_when_processing_fails(api: Api) -> None:
    """1.3: a queued edit is discarded when the processing before it fails."""
    data = await api.upload(b"junk", file_name="bad.zip", wait=False)
    upload_id = data["upload_id"]
    assert (await _edit(api, upload_id, {"metadata": {"upload_name": "never"}}))[0] == 200
    await api.idle(upload_id)
    record = api.server.state.get_upload(upload_id)
    assert record is not None and record.upload_name != "never"
    assert record.process_status == "FAILURE" and record.current_process == "process_upload"


@pytest.mark.parametrize("server_config", [ServerConfig(publish_time=0.3)])
async def test_v13_blocking_publish_refuses_edit_and_delete(api: Api) -> None:
    """1.3: while publishing (blocking) an edit is 400 and a delete is 400."""
    data = await api.upload(calc_zip(1))
    upload_id = data["upload_id"]
    assert (await api.call("POST", f"/uploads/{upload_id}/action/publish"))[0] == 200
    assert await _edit(api, upload_id, {"metadata": {"upload_name": "x"}}) == (
        400,
        {"detail": f"Upload {upload_id} is blocked by another process"},
    )
    assert await api.call("DELETE", f"/uploads/{upload_id}") == (
        400,
        {"detail": "The upload is still being processed."},
    )
    await api.idle(upload_id)


@pytest.mark.parametrize("server_config", [ServerConfig(processing_time=0.2)])
async def test_v13_delete_is_queued_behind_processing(api: Api) -> None:
    """1.3: a delete during processing waits for it and then removes the upload."""
    data = await api.upload(calc_zip(1), wait=False)
    upload_id = data["upload_id"]
    assert (await api.call("DELETE", f"/uploads/{upload_id}"))[0] == 200
    await api.idle(upload_id)
    assert api.server.state.uploads() == []


@pytest.mark.parametrize("server_config", [ServerConfig(api_version="2.0", processing_time=0.2)])
async def test_v2_refuses_edit_while_processing(api: Api) -> None:
    """2.0: an edit during processing is refused with 400 (no queue)."""
    data = await api.upload(calc_zip(1), wait=False)
    upload_id = data["upload_id"]
    assert await _edit(api, upload_id, {"metadata": {"upload_name": "x"}}) == (
        400,
        {"detail": "Upload is currently blocked by another process"},
    )
    await api.idle(upload_id)
    record = api.server.state.get_upload(upload_id)
    assert record is not None and record.upload_name != "x"


@pytest.mark.parametrize("server_config", [V2])
async def test_v2_edit_publish_delete_wait_by_default(api: Api) -> None:
    """2.0: edit/publish/delete return after the process finished (wait_for_processing)."""
    data = await api.upload(calc_zip(1))
    upload_id = data["upload_id"]
    status, answer = await _edit(api, upload_id, {"metadata": {"upload_name": "done"}})
    assert status == 200
    assert answer["data"]["process_status"] == "SUCCESS"
    assert answer["data"]["current_process"] == "_edit_metadata"
    assert answer["data"]["upload_name"] == "done"
    status, answer = await api.call("POST", f"/uploads/{upload_id}/action/publish")
    assert answer["data"]["published"] is True
    assert answer["data"]["current_process"] == "_publish_upload"
    other = await api.upload(calc_zip(1))
    status, answer = await api.call(
        "POST",
        f"/uploads/{other['upload_id']}/edit",
        params={"wait_for_processing": "false"},
        json={"metadata": {"upload_name": "x"}},
    )
    assert answer["data"]["process_running"] is True
    await api.idle(other["upload_id"])
    assert (await api.call("DELETE", f"/uploads/{other['upload_id']}"))[0] == 200
    assert api.server.state.get_upload(other["upload_id"]) is None


@pytest.mark.parametrize("server_config", [ServerConfig(api_version="2.0", processing_time=5.0)])
async def test_v2_delete_preempts_processing(api: Api) -> None:
    """2.0: delete terminates a running processing and removes the upload."""
    data = await api.upload(calc_zip(1), wait=False)
    status, _ = await api.call("DELETE", f"/uploads/{data['upload_id']}")
    assert status == 200
    assert api.server.state.uploads() == []


@pytest.mark.parametrize("server_config", [V2])
async def test_v2_permission_errors_are_403(api: Api) -> None:
    """2.0 answers 403 where 1.3 answers 401 (logged in but not allowed)."""
    data = await api.upload(calc_zip(1))
    upload_id = data["upload_id"]
    assert await api.call("GET", f"/uploads/{upload_id}", user="test2") == (
        403,
        {"detail": "You do not have access to the specified upload."},
    )
    assert (await api.call("POST", f"/uploads/{upload_id}/action/publish", user="test2"))[0] == 403
    assert (await api.call("DELETE", f"/uploads/{upload_id}", user="test2"))[0] == 403
    assert (await api.call("GET", f"/uploads/{upload_id}", user=None))[0] == 401

"""The client's methods against the local server, in both API dialects."""

from __future__ import annotations

import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from client_helpers import FAST_POLL, calc_zip, connect, make_zip, serve

from nomad_bulk.client import NomadClient, ServerInfo
from nomad_bulk.config import Secret, Settings
from nomad_bulk.errors import NotFoundError, ProcessingError, ProcessingTimeoutError
from nomad_bulk.models import ProcessStatus

pytestmark = pytest.mark.anyio

T = TypeVar("T")

TEST1 = "68878af7-6845-46c0-b2c1-250d4d8eb470"
TEST2 = "a03af8b6-3aa7-428a-b3b1-4a6317e576b6"
AIMS_BAD = "  Invoking FHI-aims ...\nNOMAD_BULK_FAIL_ENTRY\n"


async def test_tutorial_flow_end_to_end(api_version: str, tmp_path: Path) -> None:
    """Upload, process, dataset, edit, publish: every step lands on the server."""
    archive = calc_zip(tmp_path / "calcs.zip", 2)
    progress: list[tuple[int, int]] = []
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        with anyio.fail_after(20):
            upload = await nomad.create_upload(
                archive,
                upload_name="flow-1",
                on_progress=lambda sent, total: progress.append((sent, total)),
            )
            assert upload.upload_id and upload.upload_name == "flow-1"
            assert progress[-1] == (archive.stat().st_size, archive.stat().st_size)
            upload = await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
            assert upload.process_status is ProcessStatus.SUCCESS and upload.entries == 2
            entries = await nomad.get_entries(upload.upload_id)
            assert sorted(str(e.mainfile) for e in entries) == [
                "calc000/aims.out",
                "calc001/aims.out",
            ]
            assert all(e.process_status is ProcessStatus.SUCCESS for e in entries)

            dataset = await nomad.create_dataset("flow-dataset")
            assert await nomad.find_dataset("flow-dataset") == dataset
            edited = await nomad.edit_upload(
                upload.upload_id,
                upload_name="flow-renamed",
                datasets=[dataset.dataset_id],
                coauthors=["test2@example.org"],
                references=["https://example.org/paper"],
                comment="tutorial calculations",
            )
            assert edited.upload_id == upload.upload_id
            upload = await nomad.wait_for_process(
                upload.upload_id, process="edit_upload_metadata", **FAST_POLL
            )
            assert upload.upload_name == "flow-renamed"
            assert upload.coauthors == (TEST2,)
            entry = await nomad.get_entry(entries[0].entry_id)
            assert entry.comment == "tutorial calculations"
            assert entry.dataset_ids == (dataset.dataset_id,)
            assert entry.references == ("https://example.org/paper",)

            await nomad.publish_upload(upload.upload_id)
            upload = await nomad.wait_published(upload.upload_id, **FAST_POLL)
            assert upload.published and upload.publish_time is not None

        (record,) = srv.state.uploads()
        assert record.published and record.upload_name == "flow-renamed"
        assert record.coauthors == [TEST2]
        assert all(dataset.dataset_id in e.datasets for e in record.entries)


async def test_info_tells_the_dialect(api_version: str) -> None:
    """info() reports the server version and the dialect it implies."""
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        info = await nomad.info()
    assert isinstance(info, ServerInfo)
    assert info.api_version == api_version
    assert info.version.startswith(api_version.split(".")[0] + ".")


async def test_users_me_get_search_and_resolve(api_version: str) -> None:
    """Accounts are found by id, username, e-mail and prefix; unknown ones are named."""
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        me = await nomad.me()
        assert me.user_id == TEST1 and me.username == "test1"
        assert (await nomad.get_user(TEST2)).username == "test2"
        found = await nomad.search_users("coauthor")
        assert {u.username for u in found} == {"coauthor1", "coauthor2", "coauthor3"}
        resolved = await nomad.resolve_users(["test2", "coauthor1@example.org", TEST1])
        assert resolved["test2"].user_id == TEST2
        assert resolved["coauthor1@example.org"].username == "coauthor1"
        assert resolved[TEST1].username == "test1"
        with pytest.raises(NotFoundError, match=r"nobody@example\.org") as caught:
            await nomad.resolve_users(["test2", "nobody@example.org", "ghost"])
        assert "ghost" in str(caught.value) and "'test2'" not in str(caught.value)


async def test_pagination_never_truncates(api_version: str, tmp_path: Path) -> None:
    """Lists of uploads, entries, datasets, raw files and search results pass NOMAD's page of 10."""
    many = calc_zip(tmp_path / "many.zip", 23)
    small = calc_zip(tmp_path / "small.zip", 1)
    async with serve(api_version=api_version, upload_limit=50) as srv, connect(srv) as nomad:
        with anyio.fail_after(20):
            big = await nomad.create_upload(many, upload_name="many")
            for i in range(11):
                await nomad.create_upload(small, upload_name=f"small-{i}")
            for i in range(12):
                await nomad.create_dataset(f"ds-{i:02d}")
            await nomad.wait_for_process(big.upload_id, **FAST_POLL)

            uploads = await nomad.list_uploads(page_size=5)
            assert len({u.upload_id for u in uploads}) == 12
            assert len(await nomad.list_uploads()) == 12
            assert await nomad.count_uploads() == 12
            assert await nomad.count_uploads(upload_name="many") == 1
            assert await nomad.count_uploads(is_published=False, roles="main_author") == 12
            assert await nomad.count_uploads(is_published=True) == 0
            first_three = [u async for u, _ in zip_count(nomad.iter_uploads(page_size=2), 3)]
            assert len({u.upload_id for u in first_three}) == 3

            streamed = [e.entry_id async for e in nomad.iter_entries(big.upload_id, page_size=4)]
            assert len(set(streamed)) == 23
            entries = await nomad.get_entries(big.upload_id, page_size=10)
            assert len({e.entry_id for e in entries}) == 23
            assert len(await nomad.get_entries(big.upload_id)) == 23

            hits = await nomad.query_entries({"upload_id": big.upload_id}, page_size=7)
            assert len({e.entry_id for e in hits}) == 23
            before = srv.state.route_counts["POST /entries/query"]
            first = await nomad.query_entries({"upload_id": big.upload_id}, page_size=7, limit=9)
            assert [e.entry_id for e in first] == [e.entry_id for e in hits[:9]]
            assert srv.state.route_counts["POST /entries/query"] - before == 2  # pages stop early

            listing = await nomad.list_raw_directory(big.upload_id)
            assert len(listing.content) == 23
            assert all(not f.is_file for f in listing.content)
            folder = await nomad.list_raw_directory(big.upload_id, "calc005")
            mainfile = next(f for f in folder.content if f.name == "aims.out")
            assert mainfile.is_file and mainfile.entry_id

            datasets = await nomad.list_datasets(user_id=TEST1, page_size=5)
            assert len({d.dataset_id for d in datasets}) == 12
            assert len(await nomad.list_datasets(prefix="ds-1")) == 2
            assert len(await nomad.list_datasets(user_id=TEST1, page_size=5, limit=7)) == 7
    assert len(srv.state.uploads()) == 12


async def zip_count(stream: AsyncIterator[T], n: int) -> AsyncIterator[tuple[T, int]]:
    """The first ``n`` items of an async iterator, numbered."""
    i = 0
    async for item in stream:
        if i >= n:
            return
        yield item, i
        i += 1


async def test_datasets_create_get_list_delete(api_version: str) -> None:
    """Datasets are created, read, found by owner and name, and deleted."""
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        created = await nomad.create_dataset("life-cycle")
        assert (await nomad.get_dataset(created.dataset_id)).dataset_name == "life-cycle"
        assert created.user_id == TEST1
        assert [d.dataset_id for d in await nomad.list_datasets(dataset_name="life-cycle")] == [
            created.dataset_id
        ]
        assert await nomad.find_dataset("life-cycle", user_id=TEST2) is None
        assert await nomad.find_dataset("absent") is None
        await nomad.delete_dataset(created.dataset_id)
        with pytest.raises(NotFoundError):
            await nomad.get_dataset(created.dataset_id)
    assert srv.state.datasets() == []


async def test_find_uploads_matches_the_exact_name(api_version: str, tmp_path: Path) -> None:
    """find_uploads returns every upload with exactly that name, including odd names."""
    archive = calc_zip(tmp_path / "a.zip")
    odd = '{"value": "x"} & friends/1'
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        first = await nomad.create_upload(archive, upload_name="twin")
        second = await nomad.create_upload(archive, upload_name="twin")
        await nomad.create_upload(archive, upload_name="twin-2")
        strange = await nomad.create_upload(archive, upload_name=odd)
        twins = await nomad.find_uploads("twin")
        assert {u.upload_id for u in twins} == {first.upload_id, second.upload_id}
        assert [u.upload_id for u in await nomad.find_uploads(odd)] == [strange.upload_id]
        assert await nomad.find_uploads("absent") == []


async def test_upload_defaults_to_the_file_name(api_version: str, tmp_path: Path) -> None:
    """Without upload_name NOMAD names the upload after file_name; embargo is passed on."""
    archive = calc_zip(tmp_path / "named.zip")
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        upload = await nomad.create_upload(archive, embargo_length=12)
        assert upload.upload_name == "named.zip"
        other = await nomad.create_upload(archive, file_name="renamed.zip")
        assert other.upload_name == "renamed.zip"
        await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
    record = next(u for u in srv.state.uploads() if u.upload_id == upload.upload_id)
    assert record.embargo_length == 12


async def test_publish_directly(api_version: str, tmp_path: Path) -> None:
    """publish_directly publishes at the end of processing; wait_published sees it."""
    archive = calc_zip(tmp_path / "direct.zip")
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        upload = await nomad.create_upload(archive, publish_directly=True)
        upload = await nomad.wait_published(upload.upload_id, **FAST_POLL)
        assert upload.published
    assert srv.state.uploads()[0].published


async def test_delete_upload_waits_until_gone(api_version: str, tmp_path: Path) -> None:
    """delete_upload returns once the upload is gone from the server."""
    archive = calc_zip(tmp_path / "gone.zip")
    async with serve(api_version=api_version, delete_time=0.05) as srv, connect(srv) as nomad:
        upload = await nomad.create_upload(archive)
        await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
        with anyio.fail_after(10):
            await nomad.delete_upload(upload.upload_id, timeout=10)
        with pytest.raises(NotFoundError):
            await nomad.get_upload(upload.upload_id)
    assert srv.state.uploads() == []


async def test_downloads_stream_to_disk(api_version: str, tmp_path: Path) -> None:
    """An entry's raw zip and archive JSON are written to disk (folder or file target)."""
    archive = calc_zip(tmp_path / "dl.zip")
    out = tmp_path / "out"
    out.mkdir()
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        upload = await nomad.create_upload(archive)
        await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
        (entry,) = await nomad.get_entries(upload.upload_id)
        raw = await nomad.download_entry_raw(entry.entry_id, out)
        assert raw == out / f"{entry.entry_id}.zip"
        with zipfile.ZipFile(raw) as zipped:
            assert any(name.endswith("calc000/aims.out") for name in zipped.namelist())
        doc = await nomad.download_entry_archive(entry.entry_id, out / "archive.json")
        assert doc == out / "archive.json"
        assert json.loads(doc.read_text())
        with pytest.raises(NotFoundError):
            await nomad.download_entry_raw("nope" * 7, out / "missing.zip")
    assert {p.name for p in out.iterdir()} == {"archive.json", f"{entry.entry_id}.zip"}


async def test_app_token_works_as_credentials(api_version: str) -> None:
    """A minted app token is a Secret that authenticates a second client alone."""
    async with serve(api_version=api_version) as srv:
        async with connect(srv) as nomad:
            token = await nomad.create_app_token(3600)
        assert isinstance(token, Secret) and token.get() not in repr(token)
        async with NomadClient(Settings(url=srv.url, token=token)) as other:
            assert (await other.me()).username == "test1"


async def test_edit_verify_only_changes_nothing(api_version: str, tmp_path: Path) -> None:
    """verify_only validates the edit without applying it."""
    archive = calc_zip(tmp_path / "v.zip")
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        upload = await nomad.create_upload(archive, upload_name="before")
        await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
        await nomad.edit_upload(upload.upload_id, upload_name="after", verify_only=True)
        upload = await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
        assert upload.upload_name == "before"
    assert srv.state.uploads()[0].upload_name == "before"


async def test_processing_failure_raises_with_nomads_errors(
    api_version: str, tmp_path: Path
) -> None:
    """A corrupt archive ends in ProcessingError carrying NOMAD's errors, or a failed Upload."""
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 this is not really a zip")
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        upload = await nomad.create_upload(broken)
        with pytest.raises(ProcessingError) as caught:
            await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
        assert caught.value.upload_id == upload.upload_id and caught.value.errors
        failed = await nomad.wait_for_process(upload.upload_id, raise_on_failure=False, **FAST_POLL)
        assert failed.failed and failed.errors == caught.value.errors
    assert srv.state.uploads()[0].process_status == "FAILURE"


async def test_entry_failure_is_reported_per_entry(api_version: str, tmp_path: Path) -> None:
    """A failing entry leaves the upload SUCCESS and shows its own status and errors."""
    archive = calc_zip(
        tmp_path / "e.zip",
        1,
        extra={"bad/aims.out": AIMS_BAD},
    )
    async with serve(api_version=api_version) as srv, connect(srv) as nomad:
        upload = await nomad.create_upload(archive)
        upload = await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
        assert upload.process_status is ProcessStatus.SUCCESS
        entries = {e.mainfile: e for e in await nomad.get_entries(upload.upload_id)}
        assert entries["bad/aims.out"].failed and entries["bad/aims.out"].errors
        assert not entries["calc000/aims.out"].failed


async def test_entries_of_a_large_upload_come_in_one_page(tmp_path: Path) -> None:
    """The default page of an upload's entries holds 1000: 150 entries take one request,
    100 per page take two, and both give every entry once."""
    archive = calc_zip(tmp_path / "many.zip", 150)
    route = "GET /uploads/{upload_id}/entries"
    async with serve() as srv, connect(srv) as nomad:
        with anyio.fail_after(20):
            upload = await nomad.create_upload(archive)
            await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
            entries = await nomad.get_entries(upload.upload_id)
            assert srv.state.route_counts[route] == 1
            paged = await nomad.get_entries(upload.upload_id, page_size=100)
            assert srv.state.route_counts[route] == 3
    assert len({e.entry_id for e in entries}) == 150
    assert [e.entry_id for e in paged] == [e.entry_id for e in entries]
    assert {e.entry_id for e in entries} == {e.entry_id for e in srv.state.uploads()[0].entries}


async def test_wait_for_process_deadline(api_version: str, tmp_path: Path) -> None:
    """A process that outlives the timeout raises ProcessingTimeoutError (a TimeoutError)."""
    archive = calc_zip(tmp_path / "slow.zip")
    async with serve(api_version=api_version, processing_time=30) as srv, connect(srv) as nomad:
        upload = await nomad.create_upload(archive)
        with pytest.raises(ProcessingTimeoutError) as caught:
            await nomad.wait_for_process(
                upload.upload_id, timeout=0.05, initial_wait=0.01, max_wait=0.02
            )
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.upload_id == upload.upload_id
        assert srv.state.uploads()[0].process_running


async def test_queued_edit_is_waited_for_by_process_name(tmp_path: Path) -> None:
    """1.3 queues an edit behind processing; waiting for the edit's process sees it applied."""
    archive = calc_zip(tmp_path / "q.zip")
    async with serve(api_version="1.3", processing_time=0.2) as srv, connect(srv) as nomad:
        upload = await nomad.create_upload(archive, upload_name="queued")
        queued = await nomad.edit_upload(upload.upload_id, comment="queued edit")
        assert queued.process_running
        done = await nomad.wait_for_process(upload.upload_id, process="_edit_metadata", **FAST_POLL)
        assert done.current_process == "edit_upload_metadata"
        assert done.process_status is ProcessStatus.SUCCESS
    assert srv.state.uploads()[0].entries[0].comment == "queued edit"


async def test_two_uploads_from_one_file_are_independent(tmp_path: Path) -> None:
    """The same file can be sent twice; each call streams it anew and creates one upload."""
    archive = make_zip(tmp_path / "x.zip", {"c/aims.out": "  Invoking FHI-aims ...\n"})
    async with serve() as srv, connect(srv) as nomad:
        a = await nomad.create_upload(archive, upload_name="a")
        b = await nomad.create_upload(archive, upload_name="b")
    assert a.upload_id != b.upload_id
    assert sorted(str(u.upload_name) for u in srv.state.uploads()) == ["a", "b"]

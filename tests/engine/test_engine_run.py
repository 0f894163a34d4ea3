"""End-to-end runs of the engine against the local NOMAD server (real sockets)."""

from __future__ import annotations

import json
import stat
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from nomad_bulk.client import NomadClient
from nomad_bulk.config import Secret, Settings
from nomad_bulk.engine import (
    GroupFailed,
    ItemStatus,
    Notice,
    PlanReady,
    RunFinished,
    RunOptions,
    Stage,
    StageChanged,
    run_upload,
)
from nomad_bulk.errors import AuthError, ConfigError, JournalError
from nomad_bulk.journal import Journal, default_journal_path
from nomad_bulk.samples import make_samples
from nomad_bulk.server import FaultPlan, FaultRule, LocalServer, ServerConfig, running_server

pytestmark = pytest.mark.anyio

TEST1 = "68878af7-6845-46c0-b2c1-250d4d8eb470"
Fast = Callable[..., RunOptions]
Login = Callable[..., Settings]


def mine(server: LocalServer, user: str = TEST1) -> list[Any]:
    return [u for u in server.state.uploads() if u.main_author == user]


def assert_one_upload_per_name(server: LocalServer) -> None:
    names = Counter(u.upload_name for u in mine(server))
    assert names and max(names.values()) == 1, names


async def test_per_calculation_200_folders_published_in_a_dataset(
    tmp_path: Path, fast: Fast, login: Login
) -> None:
    """200 folders, one upload each: all published, in the dataset, with coauthor and comment."""
    make_samples(tmp_path, 200)
    config = ServerConfig(upload_limit=10)
    async with running_server(config) as srv:
        options = fast(
            per_upload=True,
            publish=True,
            dataset="bulk 200",
            coauthors=("coauthor1@example.org",),
            comment="calculations of water",
            references=("https://doi.org/10.1000/xyz",),
        )
        with anyio.fail_after(60):
            report = await run_upload(tmp_path, settings=login(srv), options=options)
        assert report.ok and report.counts["published"] == 200
        uploads = mine(srv)
        assert len(uploads) == 200 and all(u.published for u in uploads)
        assert_one_upload_per_name(srv)
        [dataset] = srv.state.datasets()
        assert dataset.dataset_name == "bulk 200" and report.dataset_id == dataset.dataset_id
        coauthor = srv.state.user_by_name("coauthor1")
        assert coauthor is not None
        for upload in uploads:
            assert upload.coauthors == [coauthor.user_id]
            [entry] = upload.entries
            assert entry.datasets == [dataset.dataset_id]
            assert entry.comment == "calculations of water"
            assert entry.references == ["https://doi.org/10.1000/xyz"]
        assert srv.state.status_counts[400] == 0
    by_key = {item.key: item for item in report.items}
    upload_of = {u.upload_id: u for u in uploads}
    for n in (1, 77, 200):
        item = by_key[f"DFT-{n}"]
        record = upload_of[item.upload_id or ""]
        assert [e.entry_id for e in record.entries] == list(item.entry_ids)
        assert record.entries[0].mainfile == f"DFT-{n}/aims.out"


async def test_packed_200_folders(tmp_path: Path, fast: Fast, login: Login) -> None:
    """200 folders packed 50 per upload: 4 uploads, every calculation mapped to its entry."""
    make_samples(tmp_path, 200)
    async with running_server() as srv:
        options = fast(per_upload=False, max_per_upload=50, publish=True, dataset="packed")
        with anyio.fail_after(60):
            report = await run_upload(tmp_path, settings=login(srv), options=options)
        uploads = mine(srv)
    assert report.ok and report.counts["published"] == 200
    assert len(uploads) == 4 and all(u.published and len(u.entries) == 50 for u in uploads)
    entries = {e.entry_id: (u.upload_id, e.mainfile) for u in uploads for e in u.entries}
    for item in report.items:
        [entry_id] = item.entry_ids
        assert entries[entry_id] == (item.upload_id, f"{item.key}/aims.out")
    manifest = json.loads((report.manifest_path or Path()).read_text())
    assert len(manifest["upload_ids"]) == 200 and len(manifest["entry_ids"]) == 200
    assert manifest["dataset_id"] == report.dataset_id


async def test_tutorial_ready_zip_layout(tmp_path: Path, fast: Fast, login: Login) -> None:
    """DFT-n/<id>.zip folders are uploaded as they are; PIDs.json has the tutorial's keys."""
    make_samples(tmp_path, 3, layout="ready-zip")
    async with running_server() as srv:
        with anyio.fail_after(30):
            report = await run_upload(
                tmp_path, settings=login(srv), options=fast(per_upload=True, dataset="tutorial")
            )
        uploads = mine(srv)
    assert report.ok and report.counts["done"] == 3
    assert sorted(e.mainfile for u in uploads for e in u.entries) == ["aims.out"] * 3
    assert not any(u.published for u in uploads)
    data = json.loads((report.manifest_path or Path()).read_text())
    assert sorted(data["upload_ids"]) == ["DFT-1", "DFT-2", "DFT-3"]
    assert all(len(ids) == 1 for ids in data["entry_ids"].values())
    assert data["dataset_id"] and data["items"]["DFT-1"]["sha256"]
    path = report.manifest_path or Path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_upload_limit_of_three_is_respected(tmp_path: Path, fast: Fast, login: Login) -> None:
    """With NOMAD's limit at 3 and one upload already held, 12 uploads go through without a 400."""
    make_samples(tmp_path / "data", 12)
    (tmp_path / "held.zip").write_bytes(b"not a zip but it holds a slot")
    async with running_server(ServerConfig(upload_limit=3)) as srv:
        settings = login(srv)
        async with NomadClient(settings) as nomad:
            await nomad.create_upload(tmp_path / "held.zip", upload_name="held elsewhere")
        events: list[Any] = []
        options = fast(per_upload=True, publish=True, upload_limit=3)
        with anyio.fail_after(60):
            report = await run_upload(
                tmp_path / "data", settings=settings, options=options, observers=[events.append]
            )
        assert report.ok and report.counts["published"] == 12
        assert srv.state.status_counts[400] == 0
        assert srv.state.route_counts["POST /uploads"] == 13
    [plan] = [e.plan for e in events if isinstance(e, PlanReady)]
    assert (plan.held_uploads, plan.free_slots) == (1, 2)


async def test_without_publish_slots_run_out_clearly(
    tmp_path: Path, fast: Fast, login: Login
) -> None:
    """Without --publish only the free slots are used; the rest is pending with an explanation."""
    make_samples(tmp_path, 7)
    async with running_server(ServerConfig(upload_limit=3)) as srv:
        options = fast(per_upload=True, upload_limit=3)
        with anyio.fail_after(30):
            report = await run_upload(tmp_path, settings=login(srv), options=options)
        assert srv.state.status_counts[400] == 0 and len(mine(srv)) == 3
        assert report.counts["done"] == 3 and report.counts["pending"] == 4
        assert not report.ok
        assert any("--publish" in n for n in report.notices)
        assert any("only 3 of the 7" in n for n in report.plan.notices)

        # Publishing in a second run frees the slots and finishes the rest.
        options = fast(per_upload=True, upload_limit=3, publish=True)
        with anyio.fail_after(30):
            again = await run_upload(tmp_path, settings=login(srv), options=options)
        assert again.ok and again.counts["published"] == 7
        assert len(mine(srv)) == 7 and srv.state.status_counts[400] == 0
        assert_one_upload_per_name(srv)


async def test_processing_and_entry_failures_are_reported_and_never_published(
    tmp_path: Path, fast: Fast, login: Login
) -> None:
    """An upload failure and an entry failure carry NOMAD's message; neither is published."""
    make_samples(tmp_path, 6, fail_entry={2}, fail_upload={4})
    events: list[Any] = []
    async with running_server() as srv:
        options = fast(per_upload=True, publish=True, keep_failed=True)
        with anyio.fail_after(30):
            report = await run_upload(
                tmp_path, settings=login(srv), options=options, observers=[events.append]
            )
        uploads = {u.upload_name: u for u in mine(srv)}
    items = {i.key: i for i in report.items}
    assert report.counts == {**report.counts, "published": 4, "failed": 2}
    entry_failed, upload_failed = items["DFT-2"], items["DFT-4"]
    assert entry_failed.status is ItemStatus.FAILED and entry_failed.stage == "verifying"
    assert "ParserError" in (entry_failed.message or "")
    assert upload_failed.stage == "processing" and "NOMAD_BULK_FAIL_UPLOAD" in (
        upload_failed.message or ""
    )
    for item in (entry_failed, upload_failed):
        server_upload = uploads[item.upload_name]
        assert not server_upload.published  # kept for a look, never published
    assert uploads[upload_failed.upload_name].errors
    failures = [e for e in events if isinstance(e, GroupFailed)]
    assert sorted(f.items[0] for f in failures) == ["DFT-2", "DFT-4"]


async def test_failed_uploads_are_deleted_and_retried(
    tmp_path: Path, fast: Fast, login: Login
) -> None:
    """By default a failed upload is deleted (freeing its slot) and a re-run tries it again."""
    folders = make_samples(tmp_path, 3, fail_upload={2})
    async with running_server() as srv:
        with anyio.fail_after(30):
            first = await run_upload(tmp_path, settings=login(srv), options=fast(per_upload=True))
        assert first.counts["failed"] == 1 and len(mine(srv)) == 2
        (folders[1] / "broken.txt").unlink()  # the user fixes the folder
        with anyio.fail_after(30):
            second = await run_upload(tmp_path, settings=login(srv), options=fast(per_upload=True))
        assert second.ok and second.counts["done"] == 3
        assert len(mine(srv)) == 3 and not any(u.process_status == "FAILURE" for u in mine(srv))


async def test_packed_entry_failure_isolates_the_culprit(
    tmp_path: Path, fast: Fast, login: Login
) -> None:
    """A failed entry keeps a packed upload from publishing; a re-run uploads the culprit alone."""
    make_samples(tmp_path, 10, fail_entry={3})
    async with running_server() as srv:
        options = fast(per_upload=False, publish=True)
        with anyio.fail_after(30):
            first = await run_upload(tmp_path, settings=login(srv), options=options)
        assert first.counts["failed"] == 10 and not any(u.published for u in mine(srv))
        culprit = {i.key: i for i in first.items}["DFT-3"]
        assert "failed" in (culprit.message or "")
        assert "other calculations" in ({i.key: i for i in first.items}["DFT-1"].message or "")
        with anyio.fail_after(30):
            second = await run_upload(tmp_path, settings=login(srv), options=options)
        published = [u for u in mine(srv) if u.published]
    assert second.counts["published"] == 9 and second.counts["failed"] == 1
    assert sorted(len(u.entries) for u in published) == [9]
    assert [i.key for i in second.failed] == ["DFT-3"]


async def test_dry_run_uploads_nothing(tmp_path: Path, fast: Fast, login: Login) -> None:
    """A dry run checks the server, plans, writes no journal and sends no upload."""
    make_samples(tmp_path, 5, empty={5})
    async with running_server() as srv:
        options = fast(per_upload=True, dry_run=True, dataset="not yet", publish=True)
        with anyio.fail_after(30):
            report = await run_upload(tmp_path, settings=login(srv), options=options)
        assert srv.state.uploads() == [] and srv.state.datasets() == []
        methods = {route.split()[0] for route in srv.state.route_counts}
    assert methods <= {"GET", "POST"} and srv.state.route_counts["POST /uploads"] == 0
    assert report.dry_run and report.counts["planned"] == 4 and report.counts["skipped"] == 1
    plan = report.plan
    assert (plan.groups_new, plan.free_slots, plan.dataset_id) == (4, 10, None)
    assert "will be created" in plan.describe()
    assert not default_journal_path(tmp_path).exists()


async def test_dry_run_without_credentials_plans_offline(tmp_path: Path, fast: Fast) -> None:
    """Without credentials a dry run still plans, noting that the server was not checked."""
    make_samples(tmp_path, 2)
    report = await run_upload(
        tmp_path, settings=Settings(url="http://127.0.0.1:9/api/v1"), options=fast(dry_run=True)
    )
    assert report.counts["planned"] == 2 and not report.plan.server_checked
    assert any("not checked" in n for n in report.notices)


async def test_unknown_coauthor_stops_before_the_first_byte(
    tmp_path: Path, fast: Fast, login: Login
) -> None:
    """A coauthor without an account is a ConfigError raised before anything is uploaded."""
    make_samples(tmp_path, 2)
    async with running_server() as srv:
        options = fast(coauthors=("nobody@example.org",))
        with pytest.raises(ConfigError, match=r"nobody@example\.org"):
            await run_upload(tmp_path, settings=login(srv), options=options)
        assert srv.state.uploads() == []


async def test_wrong_password_is_one_auth_error(tmp_path: Path, fast: Fast) -> None:
    """Bad credentials raise AuthError itself (not an exception group) and upload nothing."""
    make_samples(tmp_path, 2)
    async with running_server() as srv:
        settings = Settings(url=srv.url, username="test1", password=Secret("wrong"))
        with pytest.raises(AuthError) as info:
            await run_upload(tmp_path, settings=settings, options=fast())
        assert srv.state.uploads() == []
    assert "wrong" not in str(info.value)


async def test_journal_refuses_another_deployment(tmp_path: Path, fast: Fast, login: Login) -> None:
    """The same root cannot be uploaded to a second server with the same journal."""
    make_samples(tmp_path, 1)
    async with running_server() as first, running_server() as second:
        await run_upload(tmp_path, settings=login(first), options=fast())
        with pytest.raises(JournalError, match="deployment"):
            await run_upload(tmp_path, settings=login(second), options=fast())
        assert second.state.uploads() == []
        other = tmp_path / "other-journal.sqlite"
        report = await run_upload(
            tmp_path, settings=login(second), options=fast(), journal_path=other
        )
        assert report.ok and len(second.state.uploads()) == 1


async def test_rerun_skips_done_work_and_applies_new_metadata(
    tmp_path: Path, fast: Fast, login: Login
) -> None:
    """A second identical run sends no upload; a changed comment is applied to the uploads."""
    make_samples(tmp_path, 4)
    async with running_server() as srv:
        options = fast(per_upload=True, publish=True)
        await run_upload(tmp_path, settings=login(srv), options=options)
        posts = srv.state.route_counts["POST /uploads"]
        again = await run_upload(tmp_path, settings=login(srv), options=options)
        assert again.plan.groups_done == 4 and again.plan.groups_to_run == 0
        assert srv.state.route_counts["POST /uploads"] == posts
        changed = await run_upload(
            tmp_path, settings=login(srv), options=fast(per_upload=True, publish=True, comment="v2")
        )
        assert changed.ok and srv.state.route_counts["POST /uploads"] == posts
        assert all(u.entries[0].comment == "v2" and u.published for u in mine(srv))


async def test_resume_from_an_intent_adopts_the_upload_and_deletes_twins(
    tmp_path: Path, fast: Fast, login: Login
) -> None:
    """An intent without upload id is reconciled by name: one upload kept, its twin deleted."""
    make_samples(tmp_path, 2)
    journal_path = tmp_path / "journal.sqlite"
    async with running_server() as srv:
        settings = login(srv)
        await run_upload(
            tmp_path, settings=settings, options=fast(per_upload=True), journal_path=journal_path
        )
        journal = Journal.open(journal_path)
        record = next(iter(journal.iter_groups()))
        # As if the answer to the POST had been lost: intent written, no upload id.
        journal._conn.execute(
            "UPDATE groups SET stage = 'posting', upload_id = NULL WHERE seq = ?", (record.seq,)
        )
        journal.close()
        async with NomadClient(settings) as nomad:
            twin = await nomad.create_upload(
                tmp_path / "DFT-1" / "aims.out", upload_name=record.upload_name
            )
        events: list[Any] = []
        with anyio.fail_after(30):
            report = await run_upload(
                tmp_path,
                settings=settings,
                options=fast(per_upload=True, publish=True),
                journal_path=journal_path,
                observers=[events.append],
            )
        named = [u for u in mine(srv) if u.upload_name == record.upload_name]
    assert report.ok and len(named) == 1 and named[0].upload_id != twin.upload_id
    assert named[0].upload_id == record.upload_id and named[0].published
    assert any(isinstance(e, Notice) and "duplicate" in e.message for e in events)


async def test_runs_against_the_20_dialect(tmp_path: Path, fast: Fast, login: Login) -> None:
    """The same run works against a server speaking NOMAD 2.0."""
    make_samples(tmp_path, 8, code="mixed")
    async with running_server(ServerConfig(api_version="2.0")) as srv:
        options = fast(per_upload=False, max_per_upload=3, publish=True, dataset="v2")
        with anyio.fail_after(30):
            report = await run_upload(tmp_path, settings=login(srv), options=options)
        assert report.ok and report.counts["published"] == 8
        assert len(mine(srv)) == 3 and srv.state.datasets()[0].dataset_name == "v2"


async def test_events_and_a_broken_observer(tmp_path: Path, fast: Fast, login: Login) -> None:
    """Stages arrive in order per upload; an observer that raises does not stop the run."""
    make_samples(tmp_path, 3)
    events: list[Any] = []

    def broken(event: object) -> None:
        raise RuntimeError("observer bug")

    async with running_server() as srv:
        report = await run_upload(
            tmp_path,
            settings=login(srv),
            options=fast(per_upload=True, publish=True, dataset="d"),
            observers=[broken, events.append],
        )
    assert report.ok
    stages = [e.stage for e in events if isinstance(e, StageChanged) and e.items == ("DFT-1",)]
    wanted = [Stage.PACKING, Stage.UPLOADING, Stage.VERIFYING, Stage.EDITING, Stage.PUBLISHING]
    assert [s for s in stages if s in wanted] == wanted and stages[-1] is Stage.DONE
    assert isinstance(events[-1], RunFinished) and events[-1].report is not None


async def test_confirm_can_cancel(tmp_path: Path, fast: Fast, login: Login) -> None:
    """When confirm answers False, nothing is sent and the report says cancelled."""
    make_samples(tmp_path, 2)
    seen: list[int] = []

    async def no(plan: Any) -> bool:
        seen.append(plan.groups_to_run)
        return False

    async with running_server() as srv:
        report = await run_upload(
            tmp_path, settings=login(srv), options=fast(publish=True), confirm=no
        )
        assert srv.state.uploads() == []
    assert report.cancelled and not report.ok and seen == [1]


async def test_survives_server_pressure(tmp_path: Path, fast: Fast, login: Login) -> None:
    """A burst of 503s with Retry-After is retried and throttled; the run still completes."""
    make_samples(tmp_path, 6)
    faults = FaultPlan(
        rules=(
            FaultRule(
                kind="error",
                method="GET",
                route="/uploads/{upload_id}",
                status=503,
                times=6,
                retry_after=0.01,
                skip=2,
            ),
        )
    )
    events: list[Any] = []
    async with running_server(ServerConfig(faults=faults)) as srv:
        with anyio.fail_after(60):
            report = await run_upload(
                tmp_path,
                settings=login(srv, retry_initial_wait=0.01, retry_max_wait=0.05),
                options=fast(per_upload=True, publish=True),
                observers=[events.append],
            )
        assert srv.state.fault_counts.get("error", 0) == 6
    assert report.ok
    assert any(type(e).__name__ == "Throttled" for e in events)

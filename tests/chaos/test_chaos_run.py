"""A seeded mix of faults against the local server, then the server's state is audited.

The mix: 5xx on 20 % of GETs, a 5xx *after* the upload was created on 10 % of
creates, connections dropped mid-body on 5 % of creates, 429 and 503 bursts with
Retry-After, lost answers to edits, publishes, deletes and the dataset's creation,
tokens refused after two seconds, a server restart mid-run (state kept in its
data_dir), processing FAILURE for 5 % of uploads and failed entries in others,
plus folders that fail on purpose. After the run, and after a re-run once the
server is healthy again, the server's own state must show exactly one upload per
group, every good one processed, in the dataset and published, nothing bad
published, every failure reported with NOMAD's message, and a manifest that
matches the server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from nomad_bulk.config import Settings
from nomad_bulk.engine import GroupFailed, RunOptions, RunReport, StageChanged, run_upload
from nomad_bulk.engine.events import Stage
from nomad_bulk.samples import make_samples
from nomad_bulk.server import FaultPlan, FaultRule, LocalServer, ServerConfig, running_server

from .invariants import TEST1, Audit, audit, keys_of, label_of, read_manifest, view

pytestmark = pytest.mark.anyio

Fast = Callable[..., RunOptions]
Login = Callable[..., Settings]

FOLDERS = 40
#: Folders that fail whatever the server's luck: a failed entry, a failed upload.
FAIL_ENTRY = frozenset({3, 22})
FAIL_UPLOAD = frozenset({7, 31})
#: NOMAD's own words for each way of failing (the local server speaks them).
ENTRY_MESSAGE = "ParserError: The mainfile could not be parsed."
UPLOAD_MESSAGE = "RuntimeError: Processing failed on request (NOMAD_BULK_FAIL_UPLOAD)."
INJECTED_MESSAGE = "RuntimeError: Injected processing failure."
#: A packed upload is published whole or not at all: its good calculations say why.
SHARED_FAILURE = "other calculations in the same upload failed"
DATASET = "chaos"
COMMENT = "survived the chaos"


def chaos_plan(seed: int) -> FaultPlan:
    """Every fault of issue 6 at once; the first matching rule that fires wins.

    The shares make the chaos; one-shot rules make sure each kind happens at least
    once however few uploads a run makes.
    """
    lost = {"kind": "after", "status": 502}
    post = {"method": "POST", "route": "/uploads"}
    return FaultPlan(
        rules=(
            FaultRule(kind="drop", skip=1, times=1, drop_after_bytes=200, **post),  # type: ignore[arg-type]
            FaultRule(kind="drop", share=0.05, drop_after_bytes=200, **post),  # type: ignore[arg-type]
            FaultRule(skip=3, times=1, **lost, **post),  # type: ignore[arg-type]
            FaultRule(share=0.1, **lost, **post),  # type: ignore[arg-type]
            FaultRule(method="POST", route="/uploads/*/edit", share=0.1, **lost),  # type: ignore[arg-type]
            FaultRule(method="POST", route="/uploads/*/action/publish", share=0.1, **lost),  # type: ignore[arg-type]
            FaultRule(method="DELETE", route="/uploads/*", share=0.1, **lost),  # type: ignore[arg-type]
            FaultRule(kind="after", method="POST", route="/datasets*", status=504, times=1),
            FaultRule(status=429, retry_after=0.05, skip=20, times=8),
            FaultRule(status=503, retry_after=0.05, skip=45, times=8, body="html"),
            FaultRule(method="GET", share=0.2, status=500),
        ),
        token_max_age=0.4,
        upload_failure_rate=0.05,
        entry_failure_rate=0.03,
        seed=seed,
    )


class Restarter:
    """Restarts the server once the run has made ``after`` uploads; sums the fault counts."""

    def __init__(self, server: LocalServer, after: int) -> None:
        self.server = server
        self.after = after
        self.faults: dict[str, int] = {}
        self.requests = 0
        self.restarted = False
        self._uploading = anyio.Event()
        self._seen = 0

    def observe(self, event: object) -> None:
        """Engine observer: count uploads that reached processing."""
        if isinstance(event, StageChanged) and event.stage is Stage.PROCESSING:
            self._seen += 1
            if self._seen >= self.after:
                self._uploading.set()

    def _collect(self) -> None:
        state = self.server.state
        for kind, count in state.fault_counts.items():
            self.faults[kind] = self.faults.get(kind, 0) + count
        self.requests += state.request_count

    async def run(self) -> None:
        """Wait for the moment, then restart (the engine keeps running meanwhile)."""
        await self._uploading.wait()
        self._collect()
        await self.server.restart()
        self.restarted = True

    def totals(self) -> tuple[dict[str, int], int]:
        """Faults injected and requests answered over both server lifetimes."""
        state = self.server.state
        faults = dict(self.faults)
        for kind, count in state.fault_counts.items():
            faults[kind] = faults.get(kind, 0) + count
        return faults, self.requests + state.request_count


def check_failures(report: RunReport, state: Any, *, healthy: bool) -> None:
    """Every failed item carries NOMAD's own message; marked folders failed as they should.

    Under faults a marked folder may fail for another reason first (an injected
    processing failure, say); on a healthy server it fails for its own.
    """
    items = {item.key: item for item in report.items}
    for numbers, own in ((FAIL_ENTRY, ENTRY_MESSAGE), (FAIL_UPLOAD, UPLOAD_MESSAGE)):
        for n in numbers:
            item = items[f"DFT-{n}"]
            assert item.status.value == "failed", item
            assert own in (item.message or "") or not healthy, item
    nomad_words = (ENTRY_MESSAGE, UPLOAD_MESSAGE, INJECTED_MESSAGE)
    for item in report.failed:
        upload = next((u for u in state.of(TEST1) if u.upload_id == item.upload_id), None)
        if upload is not None and item.stage in ("processing", "verifying"):
            # Kept on the server: the report quotes the server's own error.
            texts = [*upload.errors, *(e for x in upload.entries for e in x.errors)]
            assert any(t in (item.message or "") for t in texts), (item.message, item.stage, texts)
        elif item.stage in ("processing", "verifying"):
            message = item.message or ""
            assert any(w in message for w in (*nomad_words, SHARED_FAILURE)), item


@pytest.mark.parametrize(
    ("api_version", "per_upload"),
    [("1.3", True), ("2.0", False)],
    ids=["1.3-per-calculation", "2.0-packed"],
)
async def test_seeded_chaos_then_recovery(
    tmp_path: Path, fast: Fast, login: Login, api_version: str, per_upload: bool
) -> None:
    """Under every fault at once nothing is duplicated, lost or wrongly published; a re-run on a
    healthy server finishes every good folder exactly once."""
    root = tmp_path / "data"
    make_samples(
        root, FOLDERS, fail_entry=FAIL_ENTRY, fail_upload=FAIL_UPLOAD, code="mixed", seed=6
    )
    config = ServerConfig(
        api_version=api_version,
        processing_time=0.02,
        upload_limit=10,
        token_lifetime=2.0,
        data_dir=tmp_path / "server",
        faults=chaos_plan(seed=6),
        seed=6,
    )
    options = fast(
        per_upload=per_upload,
        max_per_upload=4,
        publish=True,
        dataset=DATASET,
        comment=COMMENT,
        transfers=4,
    )
    events: list[Any] = []
    async with running_server(config) as srv:
        restarter = Restarter(srv, after=(FOLDERS if per_upload else FOLDERS // 4) // 3)
        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                tg.start_soon(restarter.run)
                report = await run_upload(
                    root,
                    settings=login(srv),
                    options=options,
                    observers=[events.append, restarter.observe],
                )
                tg.cancel_scope.cancel()
        faults, requests = restarter.totals()
        state = view(srv)
        manifest = read_manifest(report.manifest_path or Path())

        assert restarter.restarted
        # Every kind of fault really happened.
        for kind in ("drop", "after", "status:500", "status:502", "status:429", "status:503"):
            assert faults.get(kind, 0) > 0, (kind, faults)
        assert faults.get("token_expired", 0) > 0 and requests > 80, (faults, requests)

        found: Audit = audit(state, manifest, publish=True, dataset_name=DATASET, comment=COMMENT)
        found.assert_clean()
        check_failures(report, state, healthy=False)
        assert not report.pending
        assert len(report.items) == FOLDERS and manifest["summary"]["failed"] == len(report.failed)
        failed_keys = [k for e in events if isinstance(e, GroupFailed) for k in e.items]
        assert sorted(failed_keys) == sorted(i.key for i in report.failed)

        # The server heals; the same run again finishes every good folder.
        srv.config = replace(srv.config, faults=FaultPlan())
        await srv.restart()
        with anyio.fail_after(60):
            again = await run_upload(root, settings=login(srv), options=options)
        state = view(srv)
        manifest = read_manifest(again.manifest_path or Path())
    audit(state, manifest, publish=True, dataset_name=DATASET, comment=COMMENT).assert_clean()
    check_failures(again, state, healthy=True)
    bad = {f"DFT-{n}" for n in FAIL_ENTRY | FAIL_UPLOAD}
    assert keys_of(i.key for i in again.failed) == keys_of(bad)
    assert keys_of(again.upload_ids) == keys_of(
        f"DFT-{n}" for n in range(1, FOLDERS + 1) if f"DFT-{n}" not in bad
    )
    uploads = state.of(TEST1)
    # Exactly one upload per group, all published; the bad ones were deleted.
    groups = {str(i.upload_name) for i in again.items if i.status.value == "published"}
    assert sorted(str(u.upload_name) for u in uploads) == sorted(groups)
    assert all(u.published for u in uploads)
    if per_upload:
        assert sorted(label_of(u.upload_name) for u in uploads) == sorted(again.upload_ids)
    # No calculation was uploaded twice across both runs.
    assert len({e.mainfile for u in uploads for e in u.entries}) == FOLDERS - len(bad)


async def test_packed_upload_failure_does_not_hold_back_its_neighbours(
    tmp_path: Path, fast: Fast, login: Login
) -> None:
    """When NOMAD fails a whole packed upload, a re-run uploads its calculations one by one, so
    only the culprit stays failed and its neighbours are published."""
    make_samples(tmp_path, 8, fail_upload={2})
    options = fast(per_upload=False, max_per_upload=4, publish=True)
    async with running_server(ServerConfig(processing_time=0.01)) as srv:
        with anyio.fail_after(30):
            first = await run_upload(tmp_path, settings=login(srv), options=options)
            second = await run_upload(tmp_path, settings=login(srv), options=options)
        state = view(srv)
    culprit_group = {i.group for i in first.items if i.key == "DFT-2"}
    assert first.counts["failed"] == 4 and {i.group for i in first.failed} == culprit_group
    assert [i.key for i in second.failed] == ["DFT-2"], second.summary()
    assert UPLOAD_MESSAGE in (second.failed[0].message or "")
    assert second.counts["published"] == 7
    manifest = read_manifest(second.manifest_path or Path())
    audit(state, manifest, publish=True).assert_clean()

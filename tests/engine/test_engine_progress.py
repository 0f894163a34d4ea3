"""Progress observers, the engine's public surface, and the limits as seen from events."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

import nomad_bulk.engine as engine
from nomad_bulk.config import Settings
from nomad_bulk.engine import (
    BytesSent,
    GroupFailed,
    Notice,
    PlanReady,
    RunFinished,
    RunOptions,
    Stage,
    StageChanged,
    run_upload,
)
from nomad_bulk.engine.plan import Plan
from nomad_bulk.progress import LogProgress, ProgressState, TqdmProgress
from nomad_bulk.samples import make_samples
from nomad_bulk.server import ServerConfig, running_server


def plan(items: int = 4, size: int = 1000) -> Plan:
    return Plan(
        root=Path("/data"),
        url="http://127.0.0.1:1/api/v1",
        journal_path=None,
        publish=True,
        per_upload=True,
        max_upload_size=10,
        max_per_upload=None,
        calculations=items,
        skipped=(),
        groups_total=items,
        groups_done=0,
        groups_new=items,
        groups_resumed=0,
        groups_retried=0,
        items_to_run=items,
        bytes_to_send=size,
    )


def events() -> list[Any]:
    return [
        PlanReady(plan()),
        StageChanged("g1", ("a",), Stage.PACKING, size=250),
        StageChanged("g1", ("a",), Stage.UPLOADING),
        BytesSent("g1", 100, 200),
        BytesSent("g1", 200, 200),
        StageChanged("g1", ("a",), Stage.PROCESSING, "U1"),
        StageChanged("g2", ("b", "c"), Stage.PROCESSING, "U2"),
        StageChanged("g1", ("a",), Stage.DONE, "U1"),
        GroupFailed("g2", ("b", "c"), Stage.VERIFYING, "entry failed: ParserError"),
        Notice("something to read"),
    ]


def test_progress_state_counts() -> None:
    """Bytes, finished and failed calculations and the bytes total follow the events."""
    state = ProgressState()
    for event in events()[:6]:
        state.update(event)
    assert state.bytes_sent == 200 and state.bytes_total == 1000 - 250 + 200
    assert state.stage_counts() == {Stage.PROCESSING: 1}
    for event in events()[6:]:
        state.update(event)
    assert (state.items_done, state.items_failed) == (1, 2)
    assert "3/4 calculations finished; 2 failed" in state.line()


def test_log_progress_throttles_but_reports_failures(caplog: pytest.LogCaptureFixture) -> None:
    """Routine lines come at most once per interval; failures and notices always."""
    now = [0.0]
    progress = LogProgress(interval=30.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="nomad_bulk.progress"):
        for event in events():
            progress(event)
        progress(RunFinished(report=SimpleNamespace(dry_run=False)))  # type: ignore[arg-type]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("plan: 4 uploads to run")
    routine = [m for m in messages if "calculations finished" in m and "finished:" not in m]
    assert len(routine) == 1
    assert any(m.startswith("failed: b, c: entry failed") for m in messages)
    assert "something to read" in messages and messages[-1].startswith("finished:")


def test_tqdm_progress_renders_and_closes(capsys: pytest.CaptureFixture[str]) -> None:
    """Visible bars show bytes and calculations, print failures, and close at the end."""
    progress = TqdmProgress(disable=False)
    for event in events():
        progress(event)
    progress(RunFinished(report=None))  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "sent" in err and "done" in err and "failed: b, c" in err
    assert progress._items is None


def test_disabled_tqdm_progress_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """With bars off (not a terminal), nothing is printed at all."""
    progress = TqdmProgress(disable=True)
    for event in events():
        progress(event)
    assert capsys.readouterr().err == ""
    assert progress.state.items_failed == 2


def test_the_engine_never_imports_tqdm() -> None:
    """Importing and using the engine leaves tqdm unimported (only progress.py uses it)."""
    code = "import sys, nomad_bulk.engine, nomad_bulk.journal; print('tqdm' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_engine_exports_are_sorted_and_resolve() -> None:
    """The engine's __all__ has no duplicates and every name in it exists."""
    assert len(set(engine.__all__)) == len(engine.__all__)
    assert all(hasattr(engine, name) for name in engine.__all__)
    assert {"run_upload", "RunOptions", "RunReport", "Plan", "Observer"} <= set(engine.__all__)


@pytest.mark.anyio
async def test_transfers_and_slots_are_separate_limits(
    tmp_path: Path, fast: Callable[..., RunOptions], login: Callable[..., Settings]
) -> None:
    """At most `transfers` bodies are in flight and at most `upload_limit` uploads are held."""
    make_samples(tmp_path, 16, extra_bytes=200_000)
    in_flight: set[str] = set()
    held: set[str] = set()
    peaks = {"transfers": 0, "held": 0}

    def watch(event: object) -> None:
        if not isinstance(event, StageChanged | GroupFailed):
            return
        stage = event.stage
        if stage is Stage.UPLOADING:
            in_flight.add(event.group)
            held.add(event.group)
        else:
            in_flight.discard(event.group)
        if stage in (Stage.DONE, Stage.FAILED) or isinstance(event, GroupFailed):
            held.discard(event.group)
        peaks["transfers"] = max(peaks["transfers"], len(in_flight))
        peaks["held"] = max(peaks["held"], len(held))

    config = ServerConfig(latency=0.01, processing_time=0.05, upload_limit=5)
    async with running_server(config) as srv:
        options = fast(per_upload=True, publish=True, transfers=2, upload_limit=5)
        with anyio.fail_after(60):
            report = await run_upload(
                tmp_path, settings=login(srv), options=options, observers=[watch]
            )
        assert srv.state.status_counts[400] == 0
    assert report.ok
    assert 1 <= peaks["transfers"] <= 2
    assert 2 <= peaks["held"] <= 5

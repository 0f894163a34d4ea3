"""The blocking run_upload: the engine's run, from scripts, threads and running loops."""

from __future__ import annotations

import asyncio
import inspect
import threading
from pathlib import Path

import pytest

from nomad_bulk import sync
from nomad_bulk.config import Settings
from nomad_bulk.engine import Plan, RunOptions
from nomad_bulk.engine import run_upload as engine_run_upload
from nomad_bulk.progress import TqdmProgress
from nomad_bulk.samples import make_samples
from nomad_bulk.server import LocalServer
from nomad_bulk.sync import NomadClient, run_upload


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Six generated calculation folders."""
    make_samples(tmp_path / "calcs", 6)
    return tmp_path / "calcs"


def test_parameters_mirror_the_engines_run_upload() -> None:
    """Same parameter names, kinds and order as nomad_bulk.engine.run_upload."""
    ours = inspect.signature(run_upload).parameters.values()
    theirs = inspect.signature(engine_run_upload).parameters.values()
    assert [(p.name, p.kind) for p in ours] == [(p.name, p.kind) for p in theirs]


def test_public_names_are_pinned() -> None:
    """sync's __all__ is sorted and lists its public names."""
    assert sync.__all__ == sorted(sync.__all__)
    assert set(sync.__all__) == {"NomadClient", "SyncNomadClient", "run_upload", "running_server"}
    assert sync.SyncNomadClient is sync.NomadClient


def test_blocking_run_from_a_script(
    root: Path, settings: Settings, server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain call uploads, describes and publishes everything; no bars without a terminal."""
    report = run_upload(root, settings=settings, options=RunOptions(dataset="sync", publish=True))
    assert report.ok and len(report.published) == 6
    uploads = server.state.uploads()
    assert uploads and all(u.published for u in uploads)
    assert sum(len(u.entries) for u in uploads) == 6
    (dataset,) = server.state.datasets()
    assert report.dataset_id == dataset.dataset_id
    assert report.manifest_path is not None and report.manifest_path.is_file()
    assert "sent" not in capsys.readouterr().err  # tqdm stays off when stderr is no terminal


@pytest.mark.anyio
async def test_blocking_run_from_inside_a_running_event_loop(
    root: Path, settings: Settings, server: LocalServer
) -> None:
    """Called from a coroutine (a Jupyter cell that does not await), the run still works."""
    assert asyncio.get_running_loop().is_running()
    report = run_upload(root, settings=settings, observers=())
    assert report.ok and len(report.upload_ids) == 6
    assert sum(len(u.entries) for u in server.state.uploads()) == 6


def test_run_on_a_blocking_clients_loop_from_a_thread(
    root: Path, settings: Settings, server: LocalServer
) -> None:
    """With client=, the run uses that client's loop thread and session, from any thread."""
    outcome: list[object] = []
    with NomadClient(settings) as nomad:
        before = nomad.stats.requests
        thread = threading.Thread(
            target=lambda: outcome.append(run_upload(root, client=nomad, observers=()))
        )
        thread.start()
        thread.join()
        used = nomad.stats.requests - before
    (report,) = outcome
    assert getattr(report, "ok", False)
    assert used > 0  # the engine's requests went through this client
    assert sum(len(u.entries) for u in server.state.uploads()) == 6


def test_a_plain_confirm_function_can_decline(
    root: Path, settings: Settings, server: LocalServer
) -> None:
    """confirm may be an ordinary function; answering False sends nothing."""
    asked: list[Plan] = []

    def decline(plan: Plan) -> bool:
        asked.append(plan)
        return False

    report = run_upload(root, settings=settings, confirm=decline, observers=())
    assert report.cancelled and not report.ok
    assert len(asked) == 1 and asked[0].calculations == 6
    assert server.state.uploads() == []


def test_default_progress_suits_a_terminal_or_batch_job() -> None:
    """Outside a notebook the default bar uses tqdm's own TTY detection (off in batch logs)."""
    assert not sync._in_notebook()
    (progress,) = sync._default_observers()
    assert isinstance(progress, TqdmProgress)
    assert progress._disable is None

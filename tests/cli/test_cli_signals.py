"""A real `python -m nomad_bulk upload` process killed mid-run, then run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from nomad_bulk.samples import make_samples
from nomad_bulk.server import ServerConfig

from .conftest import ThreadServer

FOLDERS = 24
SLOW = ServerConfig(processing_time=0.15, latency=0.005)


def command(root: Path, server: ThreadServer) -> list[str]:
    return [
        sys.executable, "-m", "nomad_bulk", "upload", str(root), "--url", server.url,
        "--per-calculation", "--publish", "--dataset", "signals", "--no-progress",
        "--rate", "0", "--poll-initial", "0.02", "--poll-max", "0.1",
    ]  # fmt: skip


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    env.update(NOMAD_USERNAME="test1", NOMAD_PASSWORD="password", PYTHONUNBUFFERED="1")
    return env


def wait_for_uploads(server: ThreadServer, proc: subprocess.Popen[str], count: int) -> None:
    deadline = time.monotonic() + 60
    while server.call(lambda s: len(s.state.uploads())) < count:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "the run made no uploads"
        time.sleep(0.01)


@pytest.mark.parametrize("thread_server", [SLOW], indirect=True)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_interrupted_run_resumes_without_duplicates(
    tmp_path: Path, thread_server: ThreadServer, sig: signal.Signals
) -> None:
    """After a kill mid-run, a re-run ends with one upload per group and a full manifest."""
    root = tmp_path / "data"
    make_samples(root, FOLDERS)
    cmd = command(root, thread_server)
    proc = subprocess.Popen(
        cmd,
        env=environment(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_uploads(thread_server, proc, 6)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    manifest_path = root / ".nomad-bulk" / "PIDs.json"
    if sig == signal.SIGINT:
        assert proc.returncode == 130, (out, err)
        assert "run the same command again" in err
        # The interrupted run still wrote what it had, from its shielded clean-up.
        partial = json.loads(manifest_path.read_text())
        assert partial["summary"]["pending"] > 0
    else:
        assert proc.returncode == -signal.SIGKILL
    published = thread_server.call(lambda s: sum(u.published for u in s.state.uploads()))
    assert published < FOLDERS

    status = subprocess.run(
        [sys.executable, "-m", "nomad_bulk", "status", str(root), "--json"],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["calculations"] == FOLDERS

    rerun = subprocess.run(
        cmd,
        env=environment(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rerun.returncode == 0, (rerun.stdout, rerun.stderr)

    uploads = thread_server.call(lambda s: list(s.state.uploads()))
    names = Counter(u.upload_name for u in uploads)
    assert len(names) == FOLDERS and set(names.values()) == {1}, names
    assert all(u.published for u in uploads)
    manifest = json.loads(manifest_path.read_text())
    assert sorted(manifest["upload_ids"]) == sorted(f"DFT-{n}" for n in range(1, FOLDERS + 1))
    assert sorted(manifest["upload_ids"].values()) == sorted(u.upload_id for u in uploads)
    entries = {e.entry_id for u in uploads for e in u.entries}
    assert {i for ids in manifest["entry_ids"].values() for i in ids} == entries
    assert manifest["summary"]["published"] == FOLDERS

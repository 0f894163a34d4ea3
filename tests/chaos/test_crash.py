"""`python -m nomad_bulk upload` SIGKILLed at seeded moments, re-run each time.

Each trial runs the same command against a fresh server, kills it a few times at
random points of its progress (measured in requests the server answered, or
early in the start-up), and finally lets it finish. The server must then hold
exactly what one uninterrupted run leaves: the same groups, entries and metadata,
no duplicate and no upload that the manifest does not list.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import start_blocking_portal

from nomad_bulk.client import NomadClient
from nomad_bulk.config import Settings
from nomad_bulk.samples import make_samples
from nomad_bulk.server import ServerConfig, running_server

from .conftest import ThreadServer
from .invariants import TEST1, ServerView, audit, fingerprint, read_manifest, view

FOLDERS = 12
TRIALS = 3
KILLS = 2
COAUTHOR = "coauthor1@example.org"
COAUTHOR_ID = "coauthor1"
#: A small unpublished-upload limit: killed runs leave uploads holding slots.
CONFIG = ServerConfig(processing_time=0.05, latency=0.002, upload_limit=4)


def command(root: Path, url: str) -> list[str]:
    return [
        sys.executable, "-m", "nomad_bulk", "upload", str(root), "--url", url,
        "--per-calculation", "--publish", "--dataset", "crash", "--comment", "kill -9",
        "--coauthor", COAUTHOR, "--upload-limit", "4", "--no-progress", "--rate", "0",
        "--poll-initial", "0.01", "--poll-max", "0.05",
    ]  # fmt: skip


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    env.update(NOMAD_USERNAME="test1", NOMAD_PASSWORD="password", PYTHONUNBUFFERED="1")
    return env


@contextmanager
def servers() -> Iterator[Any]:
    """Start local servers on one background event loop; all stop at the end."""
    with start_blocking_portal(backend="asyncio") as portal:
        exits: list[Any] = []

        def start(config: ServerConfig) -> ThreadServer:
            cm = running_server(config)
            server = portal.call(cm.__aenter__)
            exits.append(cm)
            return ThreadServer(portal, server)

        try:
            yield start
        finally:
            for cm in reversed(exits):
                portal.call(cm.__aexit__, None, None, None)


def requests_of(server: ThreadServer) -> int:
    return server.call(lambda s: s.state.request_count)


def run_to_end(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=environment(), cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def run_and_kill(
    cmd: list[str], cwd: Path, server: ThreadServer, rng: random.Random, budget: int
) -> str:
    """Start the command and SIGKILL it at a seeded moment; say when (or that it finished)."""
    early = rng.random() < 0.25
    threshold = requests_of(server) + rng.randint(1, budget)
    delay = rng.uniform(0.0, 0.6)
    proc = subprocess.Popen(
        cmd, env=environment(), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    started = time.monotonic()
    try:
        while proc.poll() is None:
            now = time.monotonic()
            assert now - started < 60, "the run neither finished nor reached the kill point"
            if (early and now - started >= delay) or (
                not early and requests_of(server) >= threshold
            ):
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return f"killed at {now - started:.2f} s" if early else f"killed at {threshold}"
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == 0, proc.returncode
    return "finished"


def test_sigkill_at_random_moments_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    """After SIGKILLs at seeded moments and a final re-run, the server holds exactly what an
    uninterrupted run leaves: same groups, entries and metadata, no duplicate, no orphan."""
    with servers() as start:
        reference_server = start(CONFIG)
        root = tmp_path / "reference"
        make_samples(root, FOLDERS, code="mixed")
        done = run_to_end(command(root, reference_server.url), tmp_path)
        assert done.returncode == 0, done.stderr
        reference: ServerView = reference_server.call(view)
        expected = fingerprint(reference)
        budget = requests_of(reference_server)
        assert len(expected) == FOLDERS and budget > FOLDERS * 5

        log: list[str] = []
        for trial in range(TRIALS):
            rng = random.Random(f"crash-{trial}")
            server = start(CONFIG)
            root = tmp_path / f"trial-{trial}"
            make_samples(root, FOLDERS, code="mixed")
            cmd = command(root, server.url)
            for _ in range(KILLS):
                outcome = run_and_kill(cmd, tmp_path, server, rng, budget)
                log.append(f"trial {trial}: {outcome}")
                if outcome == "finished":
                    break
            final = run_to_end(cmd, tmp_path)
            assert final.returncode == 0, (log, final.stdout, final.stderr)
            state: ServerView = server.call(view)
            assert fingerprint(state) == expected, log
            manifest = read_manifest(root / ".nomad-bulk" / "PIDs.json")
            coauthor = state_user_id(server, COAUTHOR_ID)
            found = audit(
                state,
                manifest,
                publish=True,
                dataset_name="crash",
                comment="kill -9",
                coauthors=[coauthor],
            )
            found.assert_clean()
            assert manifest["summary"]["published"] == FOLDERS
    assert sum("killed" in line for line in log) >= TRIALS, log


def state_user_id(server: ThreadServer, username: str) -> str:
    user = server.call(lambda s: s.state.user_by_name(username))
    assert user is not None
    return user.user_id


@pytest.mark.anyio
async def test_a_client_killed_mid_request_is_no_server_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that dies while sending a request body leaves no traceback on the server
    (no 'Error handling request'), is counted as 499, and the server keeps serving."""
    async with running_server() as srv:
        token, _ = srv.state.signer.access_token(TEST1, "test1", 60.0)
        host, port = "127.0.0.1", srv.port
        stream = await anyio.connect_tcp(host, port)
        head = (
            f"POST /api/v1/uploads/any/edit HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n"
            '{"metadata": {"comment": "cut off'
        )
        with anyio.fail_after(10):
            await stream.send(head.encode())
            await stream.aclose()  # killed before the rest of the body
            # No event to await: the server notices the dead client on its own.
            while srv.state.status_counts[499] == 0:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        async with NomadClient(Settings(url=srv.url)) as nomad:
            assert (await nomad.info()).version

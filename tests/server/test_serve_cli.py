"""``nomad-bulk serve``: prints its URL and users, serves, stops on SIGTERM, refuses remote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from nomad_bulk.cli import main


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nomad_bulk", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_serve_prints_url_and_users_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The first line is 'NOMAD API at <url>' with the bound port; users follow; SIGTERM ends it."""
    plan = tmp_path / "faults.json"
    plan.write_text(json.dumps({"latency": 0.001}))
    proc = _start(
        "--user",
        "alice:-:alice@example.org",
        "--api-version",
        "2.0",
        "--faults",
        f"@{plan}",
        env={"NOMAD_BULK_SERVE_PASSWORD": "s3cret-pass"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("NOMAD API at http://127.0.0.1:")
        url = first.removeprefix("NOMAD API at ")
        assert url.endswith("/api/v1") and ":0/" not in url
        users = proc.stdout.readline()
        assert "alice" in users and "test1" in users and "s3cret" not in users
        with urllib.request.urlopen(f"{url}/info", timeout=10) as resp:  # noqa: S310
            assert json.load(resp)["version"] == "2.0.0"
        body = b"grant_type=password&username=alice&password=s3cret-pass"
        with urllib.request.urlopen(f"{url}/auth/token", data=body, timeout=10) as resp:  # noqa: S310
            assert "access_token" in json.load(resp)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "s3cret" not in err


def test_serve_refuses_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    """A non-loopback --host without --allow-remote exits 2 with a clear message."""
    assert main(["serve", "--host", "0.0.0.0"]) == 2  # noqa: S104
    assert "--allow-remote" in capsys.readouterr().err


def test_serve_rejects_bad_user_and_fault_specs(capsys: pytest.CaptureFixture[str]) -> None:
    """Malformed --user or --faults exit 2 before anything binds."""
    assert main(["serve", "--port", "0", "--user", "nopassword"]) == 2
    assert main(["serve", "--port", "0", "--faults", '{"bogus": 1}']) == 2
    err = capsys.readouterr().err
    assert "NAME:PASSWORD" in err and "unknown fault plan keys" in err

"""The command line in-process: upload, status, download, demo; exit codes and messages."""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import pytest

from nomad_bulk.cli import build_parser, main
from nomad_bulk.samples import make_samples
from nomad_bulk.server import ServerConfig

from .conftest import ThreadServer

FAST = ["--no-progress", "--rate", "0", "--poll-initial", "0.01", "--poll-max", "0.05"]


def upload_args(root: Path, server: ThreadServer, *extra: str) -> list[str]:
    return ["upload", str(root), "--url", server.url, *FAST, *extra]


def test_upload_status_and_manifest(
    tmp_path: Path,
    thread_server: ThreadServer,
    nomad_env: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`upload --publish` exits 0 and prints a summary; `status --json` reads the journal."""
    make_samples(tmp_path, 5)
    code = main(
        upload_args(
            tmp_path,
            thread_server,
            "--per-calculation",
            "--publish",
            "--dataset",
            "cli",
            "--coauthor",
            "coauthor2@example.org",
            "--comment",
            "from the CLI",
        )
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "5 calculations: 5 published" in out and "PIDs.json" in out
    uploads = thread_server.call(lambda s: s.state.uploads())
    assert len(uploads) == 5 and all(u.published for u in uploads)

    assert main(["status", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["published"] == 5 and data["publish"] is True
    assert data["dataset_name"] == "cli" and data["failed"] == []
    assert main(["status", str(tmp_path)]) == 0
    assert "5 published" in capsys.readouterr().out


def test_failed_items_exit_3_with_nomads_message(
    tmp_path: Path,
    thread_server: ThreadServer,
    nomad_env: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run with a failed calculation exits 3 and prints NOMAD's message for it."""
    make_samples(tmp_path, 3, fail_upload={2})
    assert main(upload_args(tmp_path, thread_server, "--per-calculation")) == 3
    out = capsys.readouterr().out
    assert "FAILED DFT-2" in out and "NOMAD_BULK_FAIL_UPLOAD" in out
    assert main(["status", str(tmp_path)]) == 0
    assert "FAILED DFT-2" in capsys.readouterr().out


def test_dry_run_prints_the_plan(
    tmp_path: Path,
    thread_server: ThreadServer,
    nomad_env: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--dry-run` prints the plan, exits 0 and uploads nothing."""
    make_samples(tmp_path, 4, empty={1})
    assert main(upload_args(tmp_path, thread_server, "--dry-run", "--dataset", "later")) == 0
    out = capsys.readouterr().out
    assert "Found:       4 calculations; 1 not uploaded" in out
    assert "later (will be created)" in out and "not uploaded: DFT-1" in out
    assert thread_server.call(lambda s: s.state.uploads()) == []


def test_publishing_on_prod_needs_yes_without_a_terminal(
    tmp_path: Path, nomad_env: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a terminal, `--publish` on prod is refused (exit 2) unless --yes is given."""
    make_samples(tmp_path, 1)
    code = main(["upload", str(tmp_path), "--url", "prod", "--publish", "--no-progress"])
    assert code == 2
    assert "--yes" in capsys.readouterr().err


def test_missing_credentials_fail_fast(
    tmp_path: Path,
    thread_server: ThreadServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With no credentials and --non-interactive, the command exits 1 naming what to set."""
    for name in ("NOMAD_USERNAME", "NOMAD_PASSWORD", "NOMAD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    make_samples(tmp_path / "data", 1)
    code = main(upload_args(tmp_path / "data", thread_server, "--non-interactive"))
    err = capsys.readouterr().err
    assert code == 1 and "ConfigError" in err and "NOMAD_PASSWORD" in err


def test_env_file_and_token_file(
    tmp_path: Path,
    thread_server: ThreadServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Credentials come from a .env file; an unreadable --token-file is a clear error."""
    for name in ("NOMAD_USERNAME", "NOMAD_PASSWORD", "NOMAD_TOKEN", "NOMAD_URL"):
        monkeypatch.delenv(name, raising=False)
    env = tmp_path / "creds.env"
    env.write_text(
        f'NOMAD_USERNAME="test2"\nNOMAD_PASSWORD="password"\nNOMAD_URL={thread_server.url}\n'
    )
    make_samples(tmp_path / "data", 2)
    code = main(["upload", str(tmp_path / "data"), "--env-file", str(env), *FAST])
    assert code == 0, capsys.readouterr()
    authors = thread_server.call(lambda s: {u.main_author for u in s.state.uploads()})
    assert authors == {"a03af8b6-3aa7-428a-b3b1-4a6317e576b6"}
    code = main(upload_args(tmp_path / "data", thread_server, "--token-file", str(tmp_path / "x")))
    assert code == 1 and "token file" in capsys.readouterr().err


def test_password_is_never_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """There is no --password flag: argparse rejects it as a usage error."""
    assert main(["upload", ".", "--password", "secret"]) == 2
    assert "--password" in capsys.readouterr().err


def test_help_names_the_environment_variables() -> None:
    """Each connection flag's help names its environment variable."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["upload"].format_help()
    for name in ("NOMAD_URL", "NOMAD_USERNAME", "NOMAD_PASSWORD", "NOMAD_TOKEN"):
        assert name in text


def test_journal_of_another_server_is_refused(
    tmp_path: Path,
    thread_server: ThreadServer,
    nomad_env: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Pointing a finished root at another deployment exits 1 with a JournalError."""
    make_samples(tmp_path, 1)
    assert main(upload_args(tmp_path, thread_server)) == 0
    capsys.readouterr()
    other = thread_server.url.replace("127.0.0.1", "localhost")
    code = main(["upload", str(tmp_path), "--url", other, *FAST])
    err = capsys.readouterr().err
    assert code == 1 and "JournalError" in err and "--journal" in err


def test_download_a_manifest_and_extract(
    tmp_path: Path,
    thread_server: ThreadServer,
    nomad_env: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`download --manifest --extract` writes every entry's files below its calculation key."""
    make_samples(tmp_path / "data", 2)
    assert main(upload_args(tmp_path / "data", thread_server, "--per-calculation")) == 0
    capsys.readouterr()
    manifest = tmp_path / "data" / ".nomad-bulk" / "PIDs.json"
    dest = tmp_path / "out"
    code = main(
        [
            "download",
            "--manifest",
            str(manifest),
            "--dest",
            str(dest),
            "--extract",
            "--url",
            thread_server.url,
        ]
    )
    assert code == 0, capsys.readouterr()
    aims = dest / "DFT-2" / "DFT-2" / "aims.out"
    assert aims.read_text() == (tmp_path / "data" / "DFT-2" / "aims.out").read_text()
    assert not list(dest.rglob("*.zip"))


def test_safe_extract_refuses_zip_slip(tmp_path: Path) -> None:
    """A member escaping the target folder is refused; nothing is written outside."""
    from nomad_bulk.cli.download import safe_extract
    from nomad_bulk.errors import PackingError

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("up/ok.txt", "fine")
        zf.writestr("up/../../escaped.txt", "bad")
    with pytest.raises(PackingError, match="escape"):
        safe_extract(evil, tmp_path / "dest", strip=1)
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize("thread_server", [ServerConfig(upload_limit=2)], indirect=True)
def test_upload_limit_flag(
    tmp_path: Path,
    thread_server: ThreadServer,
    nomad_env: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --publish and a limit of 2, two uploads are made and the rest is explained."""
    make_samples(tmp_path, 4)
    code = main(upload_args(tmp_path, thread_server, "--per-calculation", "--upload-limit", "2"))
    out = capsys.readouterr().out
    assert code == 3 and "2 pending" in out and "--publish" in out
    assert thread_server.call(lambda s: s.state.status_counts[400]) == 0


def test_demo_runs_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`demo` serves, uploads, publishes and tells where the manifest is."""
    target = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--folders",
                "4",
                "--dir",
                str(target),
                "--no-progress",
                "--processing-time",
                "0.01",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    manifest = target / ".nomad-bulk" / "PIDs.json"
    assert str(manifest) in out
    data = json.loads(manifest.read_text())
    assert len(data["entry_ids"]) == 4 and data["dataset_id"] and data["summary"]["published"] == 4
    assert main(["demo", "--dir", str(target)]) == 1  # not empty any more

"""Security: no secret anywhere, no credentials over plain http to other hosts, no zip-slip,
owner-only files, and a local server that stays on the loopback interface."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import sqlite3
import stat
import traceback
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from nomad_bulk.cli import EXIT_ERROR, EXIT_FAILED_ITEMS, EXIT_OK, EXIT_USAGE, main
from nomad_bulk.cli.download import safe_extract
from nomad_bulk.client import NomadClient
from nomad_bulk.config import Secret, Settings
from nomad_bulk.errors import AuthError, ConfigError, PackingError
from nomad_bulk.samples import make_samples
from nomad_bulk.server import DEFAULT_USERS, ServerConfig, UserSpec

from .conftest import ThreadServer

PASSWORD = "Sesame-7d1f-Pa55w0rd"
#: An account whose password appears nowhere else in the project.
ALICE = UserSpec("alice", PASSWORD, "alice@example.org", first_name="Alice")
SERVER = ServerConfig(users=(*DEFAULT_USERS, ALICE), processing_time=0.01)
#: Any JSON web token (header.payload.signature, base64url of '{"…').
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}")
FAST = ["--no-progress", "--rate", "0", "--poll-initial", "0.01", "--poll-max", "0.05"]
#: The same, with progress as log lines (stderr is not a terminal), for the log grep.
LOGGED = FAST[1:]


def texts_of_run(root: Path, manifest: Path) -> Iterator[tuple[str, str]]:
    """Every persistent trace of a run: journal bytes (with WAL), dumped rows, manifest."""
    folder = manifest.parent
    for path in sorted(folder.iterdir()):
        if path.is_file():
            yield str(path), path.read_bytes().decode("latin-1")
    journal = folder / "journal.sqlite"
    with sqlite3.connect(journal) as conn:
        yield "journal rows", "\n".join(conn.iterdump())


def log_texts(records: list[logging.LogRecord]) -> Iterator[tuple[str, str]]:
    """Each log record as rendered, with its raw arguments and any exception text."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in records:
        yield f"log {record.name}", formatter.format(record)
        yield f"log args {record.name}", repr(record.args) + repr(record.msg)
        if record.exc_info:
            yield f"log exc {record.name}", "".join(traceback.format_exception(*record.exc_info))


def assert_clean(places: Iterator[tuple[str, str]], *secrets: str) -> int:
    """No secret and no token-looking string in any place; return how many were read."""
    count = 0
    for where, text in places:
        count += 1
        for secret in secrets:
            assert secret not in text, f"secret found in {where}"
        assert not JWT.search(text), f"a token found in {where}: {JWT.search(text)}"
        assert "Bearer ey" not in text, f"an Authorization header found in {where}"
    return count


@pytest.mark.parametrize("thread_server", [SERVER], indirect=True)
def test_no_secret_in_logs_journal_manifest_reprs_or_errors(
    tmp_path: Path,
    thread_server: ThreadServer,
    nomad_env: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A whole debug-logged upload by password, then one by token: the password, every token
    NOMAD handed out and the given token appear in no log line, output, journal, manifest,
    repr or exception text."""
    caplog.set_level(logging.DEBUG)
    nomad_env.setenv("NOMAD_USERNAME", "alice")
    nomad_env.setenv("NOMAD_PASSWORD", PASSWORD)
    first = tmp_path / "by-password"
    make_samples(first, 3, fail_upload={3})
    args = ["-vv", "upload", str(first), "--url", thread_server.url, *LOGGED]
    assert main([*args, "--per-calculation", "--publish", "--dataset", "s"]) == EXIT_FAILED_ITEMS

    async def mint() -> str:
        settings = Settings(url=thread_server.url, username="alice", password=PASSWORD)
        async with NomadClient(settings) as nomad:
            return (await nomad.create_app_token(3600)).get()

    token = anyio.run(mint, backend="asyncio")
    token_file = tmp_path / "token"
    token_file.write_text(token)
    nomad_env.delenv("NOMAD_USERNAME")
    nomad_env.delenv("NOMAD_PASSWORD")
    second = tmp_path / "by-token"
    make_samples(second, 2)
    args = ["-vv", "upload", str(second), "--url", thread_server.url, *LOGGED]
    assert main([*args, "--token-file", str(token_file), "--publish"]) == EXIT_OK
    out, err = capsys.readouterr()

    places: list[tuple[str, str]] = [("stdout", out), ("stderr", err)]
    places += log_texts(caplog.records)
    for root in (first, second):
        places += texts_of_run(root, root / ".nomad-bulk" / "PIDs.json")
    settings = Settings(url=thread_server.url, username="alice", password=PASSWORD, token=token)
    client = NomadClient(settings)
    places += [
        ("repr settings", repr(settings) + str(settings)),
        ("repr secret", repr(settings.password) + str(settings.token) + f"{settings.token}"),
        ("repr client", repr(client)),
        ("repr token manager", repr(client._http.auth)),
    ]
    with pytest.raises(TypeError):
        pickle.dumps(settings.password)

    async def wrong_password() -> None:
        bad = Settings(url=thread_server.url, username="alice", password=PASSWORD + "x")
        async with NomadClient(bad) as nomad:
            await nomad.me()

    with pytest.raises(AuthError) as refused:
        anyio.run(wrong_password, backend="asyncio")
    with pytest.raises(ConfigError) as insecure:
        Settings(url="http://nomad.example.invalid/api/v1", token=token).check_transport_security()
    for name, exc in (("refused login", refused.value), ("insecure", insecure.value)):
        text = "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.args)
        places.append((f"exception {name}", text))
    read = assert_clean(iter(places), PASSWORD, PASSWORD + "x", token)
    assert read > 20
    debug = {r.name for r in caplog.records if r.levelno == logging.DEBUG}
    assert "nomad_bulk.client" in debug
    assert "nomad_bulk.progress" in {r.name for r in caplog.records}
    # The password and the token were really used: the runs went through.
    manifest = json.loads((second / ".nomad-bulk" / "PIDs.json").read_text())
    assert manifest["summary"]["published"] == 2


@pytest.mark.parametrize(
    "url",
    [
        "http://nomad.example.invalid/api/v1",
        "http://192.0.2.10/nomad-oasis/api/v1",
        "http://[2001:db8::1]/api/v1",
    ],
)
def test_credentials_refused_over_plain_http_to_other_hosts(
    tmp_path: Path, nomad_env: Any, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """Plain http to a host that is not this machine: exit 1 before any connection, saying
    to use https or --allow-insecure-http."""
    make_samples(tmp_path / "data", 1)
    code = main(["upload", str(tmp_path / "data"), "--url", url, *FAST])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert "ConfigError: refusing to send credentials over plain http" in err
    assert "use https://" in err and "--allow-insecure-http" in err
    assert not (tmp_path / "data" / ".nomad-bulk").exists()


@pytest.mark.parametrize(
    ("here", "elsewhere"),
    [
        ("http://127.0.0.1:8000/api/v1", "http://10.0.0.1:8000/api/v1"),
        ("http://localhost:8000/api/v1", "http://nomad.lan:8000/api/v1"),
        ("http://[::1]:8000/api/v1", "http://[fd00::1]:8000/api/v1"),
    ],
)
def test_plain_http_is_fine_on_this_machine_only(here: str, elsewhere: str) -> None:
    """Loopback addresses may use plain http (the local server, an SSH tunnel); a private
    network address may not without allow_insecure_http."""
    Settings(url=here, username="u", password="p").check_transport_security()
    with pytest.raises(ConfigError, match="plain http"):
        Settings(url=elsewhere, username="u", password="p").check_transport_security()
    Settings(
        url=elsewhere, username="u", password="p", allow_insecure_http=True
    ).check_transport_security()


def _zip(path: Path, members: list[tuple[str, bytes, int | None]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.create_system = 3
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize(
    "member",
    [
        "upload-id/../../escaped.txt",
        "upload-id/../escaped.txt",
        "/tmp/escaped-absolute.txt",
        "upload-id\\..\\..\\escaped.txt",
        "C:/escaped.txt",
    ],
    ids=["dotdot", "dotdot-after-strip", "absolute", "backslashes", "drive"],
)
def test_zip_slip_members_are_refused(tmp_path: Path, member: str) -> None:
    """A member that would land outside the destination is refused; nothing is written
    outside it."""
    dest = tmp_path / "inside" / "dest"
    evil = _zip(tmp_path / "evil.zip", [("upload-id/ok.txt", b"fine", None), (member, b"x", None)])
    before = set(tmp_path.rglob("*"))
    with pytest.raises(PackingError, match="would escape"):
        safe_extract(evil, dest, strip=1)
    after = set(tmp_path.rglob("*")) - before
    assert all(p == dest or dest in p.parents or p in dest.parents for p in after), after
    assert not Path("/tmp/escaped-absolute.txt").exists()


def test_zip_links_and_links_in_the_destination_are_not_followed(tmp_path: Path) -> None:
    """Symbolic-link members are skipped, and a link already inside the destination is not
    written through to its target outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    link_zip = _zip(
        tmp_path / "link.zip",
        [("up/link", str(outside / "target").encode(), stat.S_IFLNK | 0o777)],
    )
    assert safe_extract(link_zip, dest, strip=1) == []
    assert not (dest / "link").exists() and not list(outside.iterdir())
    through = _zip(tmp_path / "through.zip", [("up/sub/planted.txt", b"x", None)])
    with pytest.raises(PackingError, match="would escape"):
        safe_extract(through, dest, strip=1)
    assert not list(outside.iterdir())


@pytest.mark.parametrize("thread_server", [SERVER], indirect=True)
def test_download_refuses_folders_outside_the_destination(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest whose calculation keys climb out of --dest: those entries fail (exit 3)
    and nothing is written outside; the honest entries are downloaded."""
    root = tmp_path / "data"
    make_samples(root, 2)
    assert main(["upload", str(root), "--url", thread_server.url, *FAST, "--per-calculation"]) == 0
    manifest = json.loads((root / ".nomad-bulk" / "PIDs.json").read_text())
    ids = manifest["entry_ids"]
    evil = tmp_path / "evil.json"
    evil.write_text(
        json.dumps(
            {"entry_ids": {"../../climbed": ids["DFT-1"], "/abs": ids["DFT-1"], "ok": ids["DFT-2"]}}
        )
    )
    dest = tmp_path / "box" / "dest"
    before = set(tmp_path.rglob("*"))
    code = main(
        ["download", "--manifest", str(evil), "--dest", str(dest), "--extract",
         "--url", thread_server.url]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == EXIT_FAILED_ITEMS, (out, err)
    assert "unsafe folder name '../../climbed'" in err and "unsafe folder name '/abs'" in err
    new = set(tmp_path.rglob("*")) - before
    assert new and all(p == dest or dest in p.parents or p == dest.parent for p in new), new
    assert (dest / "ok" / "DFT-2" / "aims.out").exists()


@pytest.mark.parametrize("thread_server", [SERVER], indirect=True)
def test_journal_manifest_and_spool_are_private(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even under umask 0: journal, its side files and the manifest are 0600, and every
    folder the run creates for them (default or given paths) is 0700."""
    root = tmp_path / "data"
    make_samples(root, 2)
    old = os.umask(0)
    try:
        base = ["upload", str(root), "--url", thread_server.url, *FAST, "--per-calculation"]
        assert main(base) == EXIT_OK
        custom = [
            "--journal", str(tmp_path / "j" / "k" / "journal.sqlite"),
            "--manifest", str(tmp_path / "m" / "n" / "PIDs.json"),
            "--spool-dir", str(tmp_path / "s" / "t"),
        ]  # fmt: skip
        assert main([*base, *custom]) == EXIT_OK
    finally:
        os.umask(old)
    capsys.readouterr()
    state = root / ".nomad-bulk"
    folders = [state, state / "spool", tmp_path / "j", tmp_path / "j" / "k", tmp_path / "m"]
    folders += [tmp_path / "m" / "n", tmp_path / "s", tmp_path / "s" / "t", tmp_path / "s" / "t"]
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    files = [p for p in state.iterdir() if p.is_file()]
    files += [tmp_path / "m" / "n" / "PIDs.json", *(tmp_path / "j" / "k").iterdir()]
    assert {p.name for p in files} >= {"journal.sqlite", "PIDs.json"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "192.0.2.1", "nomad.example.org"],  # noqa: S104
)
def test_serve_binds_loopback_only_unless_allowed(
    host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`nomad-bulk serve` refuses any non-loopback address (exit 2) unless --allow-remote."""
    assert main(["serve", "--host", host, "--port", "0"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"refusing to bind non-loopback host {host!r}" in err and "--allow-remote" in err


def test_serve_accepts_loopback_hosts() -> None:
    """Loopback spellings are accepted without --allow-remote (checked without binding)."""
    from nomad_bulk.cli.serve import _is_loopback

    assert all(_is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(_is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org"))  # noqa: S104


def test_secret_type_never_shows_itself() -> None:
    """Secret hides its value in repr, str, format and pickling; only get() reveals it."""
    secret = Secret(PASSWORD)
    assert PASSWORD not in repr(secret) + str(secret) + f"{secret}" + f"{secret!r:>40}"
    assert secret.get() == PASSWORD
    with pytest.raises(TypeError):
        pickle.dumps(secret)

"""The bad-input catalogue: each case gives a clear message (naming the thing and what to
do), the documented exit code (0 done, 1 error, 3 failed items), and loses nothing: the
journal, the manifest and the server agree, and a re-run after the fix finishes the rest.

Unreadable files: the tests run as root in CI, where ``chmod 000`` changes nothing, so
the CLI runs in a child process without the capabilities that let root ignore file
permissions (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``), and the read truly fails.
A full disk is a child process with a file size limit (``RLIMIT_FSIZE``, ``SIGXFSZ``
ignored), so that writes fail with ``EFBIG`` as they would with ``ENOSPC``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from nomad_bulk.cli import EXIT_ERROR, EXIT_FAILED_ITEMS, EXIT_OK, main
from nomad_bulk.client import NomadClient
from nomad_bulk.config import Settings
from nomad_bulk.engine import PlanReady, RunOptions, run_upload
from nomad_bulk.journal import Journal, default_journal_path
from nomad_bulk.samples import make_samples
from nomad_bulk.server import FaultPlan, FaultRule, ServerConfig, running_server
from nomad_bulk.server.auth import TokenSigner

from .conftest import ThreadServer
from .invariants import TEST1, audit, read_manifest, view

FAST = ["--no-progress", "--rate", "0", "--poll-initial", "0.01", "--poll-max", "0.05"]

#: Run the CLI in a child that drops root's power to ignore file permissions.
NO_DAC = (
    "import ctypes, os, sys\n"
    "if os.geteuid() == 0:\n"
    "    libc = ctypes.CDLL(None, use_errno=True)\n"
    "    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH\n"
    "        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP\n"
    "            sys.exit(77)  # not allowed here: the test is skipped\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'nomad_bulk', *sys.argv[1:]])\n"
)
#: Run the CLI in a child whose files cannot grow beyond ``argv[1]`` bytes.
FILE_LIMIT = (
    "import os, resource, signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'nomad_bulk', *sys.argv[2:]])\n"
)


def cli(root: Path, server: ThreadServer | str, *extra: str) -> list[str]:
    url = server if isinstance(server, str) else server.url
    return ["upload", str(root), "--url", url, *FAST, *extra]


def run_cli(
    capsys: pytest.CaptureFixture[str], root: Path, server: ThreadServer | str, *extra: str
) -> tuple[int, str, str]:
    code = main(cli(root, server, *extra))
    out, err = capsys.readouterr()
    return code, out, err


def child(prelude: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    env.update(NOMAD_USERNAME="test1", NOMAD_PASSWORD="password")
    return subprocess.run(
        [sys.executable, "-c", prelude, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def server_uploads(server: ThreadServer) -> list[Any]:
    return server.call(lambda s: view(s).of(TEST1))


def assert_no_loss(server: ThreadServer, root: Path, keys: set[str], *, publish: bool) -> None:
    """The manifest lists every folder; it and the server agree; nothing is duplicated."""
    manifest = read_manifest(default_journal_path(root).parent / "PIDs.json")
    assert set(manifest["items"]) == keys
    audit(server.call(view), manifest, publish=publish).assert_clean()


def assert_nothing_started(server: ThreadServer, root: Path) -> None:
    """The server holds no upload and the journal (if any) sent nothing."""
    assert server_uploads(server) == []
    path = default_journal_path(root)
    if path.exists():
        journal = Journal.open(path, create=False)
        try:
            assert all(not g.has_upload for g in journal.iter_groups())
        finally:
            journal.close()


def keys(*numbers: int) -> set[str]:
    return {f"DFT-{n}" for n in numbers}


# -- the root ---------------------------------------------------------------------------


def test_root_missing(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any
) -> None:
    """A root that does not exist: exit 1, the path named, nothing written anywhere."""
    code, _, err = run_cli(capsys, tmp_path / "nowhere", thread_server)
    assert code == EXIT_ERROR
    assert "ConfigError" in err and f"{tmp_path / 'nowhere'} is not a folder" in err
    assert "give the folder holding the calculations" in err
    assert not (tmp_path / "nowhere").exists()
    assert_nothing_started(thread_server, tmp_path / "nowhere")


def test_root_empty(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any
) -> None:
    """An empty root: exit 0 (nothing to do), and the summary says no calculation was found
    there and what counts as one."""
    root = tmp_path / "empty"
    root.mkdir()
    code, out, _ = run_cli(capsys, root, thread_server)
    assert code == EXIT_OK
    assert f"No calculation folder found under {root}" in out and "Check the path" in out
    assert_nothing_started(thread_server, root)
    code, out, _ = run_cli(capsys, root, thread_server, "--pattern", "batch-*")
    assert "matching --pattern 'batch-*'" in out and "and the pattern" in out


# -- unreadable and odd files ---------------------------------------------------------------


def test_unreadable_file(tmp_path: Path, thread_server: ThreadServer) -> None:
    """A file the run cannot read fails its folder (exit 3) with the file and 'Fix its
    permissions' named; the others are uploaded; after the fix a re-run adds it once."""
    root = tmp_path / "data"
    make_samples(root, 3)
    secret = root / "DFT-2" / "control.in"
    secret.chmod(0)
    args = cli(root, thread_server, "--per-calculation", "--publish")
    first = child(NO_DAC, *args, cwd=tmp_path)
    if first.returncode == 77:
        pytest.skip("root here cannot drop CAP_DAC_OVERRIDE, so no file is unreadable")
    assert first.returncode == EXIT_FAILED_ITEMS, (first.stdout, first.stderr)
    assert f"FAILED DFT-2: cannot be uploaded as it is: {secret}" in first.stdout
    assert "Permission denied" in first.stdout and "Fix its permissions" in first.stdout
    assert_no_loss(thread_server, root, keys(1, 2, 3), publish=True)
    assert len(server_uploads(thread_server)) == 2

    secret.chmod(0o644)
    second = child(NO_DAC, *args, cwd=tmp_path)
    assert second.returncode == EXIT_OK, (second.stdout, second.stderr)
    assert_no_loss(thread_server, root, keys(1, 2, 3), publish=True)
    assert len(server_uploads(thread_server)) == 3


def test_fifo_symlink_loop_and_escaping_link(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any
) -> None:
    """A FIFO, a link loop and a link out of the root each fail their folder (exit 3) with
    the path and the remedy named; the link's target outside is never uploaded."""
    root = tmp_path / "data"
    make_samples(root, 4)
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("not part of any calculation\n")
    os.mkfifo(root / "DFT-1" / "pipe.out")
    (root / "DFT-2" / "loop").symlink_to("loop")
    (root / "DFT-3" / "escape.txt").symlink_to(outside)
    code, out, _ = run_cli(capsys, root, thread_server, "--per-calculation", "--publish")
    assert code == EXIT_FAILED_ITEMS
    assert "FAILED DFT-1" in out and "not a regular file (a FIFO, socket or device)" in out
    assert "Remove it from the folder" in out
    assert "FAILED DFT-2" in out and "symbolic link loop" in out and "Remove or fix" in out
    assert "FAILED DFT-3" in out and f"symbolic link to {outside}, outside the root" in out
    assert "Copy the target into the folder" in out
    assert_no_loss(thread_server, root, keys(1, 2, 3, 4), publish=True)
    [upload] = server_uploads(thread_server)
    assert [e.mainfile for e in upload.entries] == ["DFT-4/aims.out"]


@pytest.mark.anyio
async def test_file_vanishing_between_discovery_and_packing(
    tmp_path: Path, fast: Callable[..., RunOptions], login: Callable[..., Settings]
) -> None:
    """A file removed after planning fails its upload at packing with the file named; the
    re-run plans the folder afresh and uploads it once."""
    make_samples(tmp_path, 3)
    victim = tmp_path / "DFT-2" / "geometry.in"

    def remove_after_planning(event: object) -> None:
        if isinstance(event, PlanReady) and victim.exists():
            victim.unlink()

    async with running_server() as srv:
        settings = login(srv)
        options = fast(per_upload=True, publish=True)
        with anyio.fail_after(60):
            first = await run_upload(
                tmp_path, settings=settings, options=options, observers=[remove_after_planning]
            )
            [failed] = first.failed
            assert failed.key == "DFT-2" and failed.stage == "packing"
            assert str(victim) in (failed.message or "")
            assert "changed since discovery" in (failed.message or "")
            second = await run_upload(tmp_path, settings=settings, options=options)
        assert second.ok and second.counts["published"] == 3
        manifest = read_manifest(second.manifest_path or Path())
        audit(view(srv), manifest, publish=True).assert_clean()
        assert len(view(srv).of(TEST1)) == 3


# -- size and archives ------------------------------------------------------------------------


@pytest.mark.parametrize("thread_server", [ServerConfig(max_upload_size=20_000)], indirect=True)
def test_calculation_above_the_size_limits(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any
) -> None:
    """Above --max-upload-size a folder is not sent and says what to raise; above the
    server's limit NOMAD's proxy answers 413 and the folder fails with that; exit 3 both."""
    root = tmp_path / "data"
    make_samples(root, 2)
    make_samples(root, 1, start=3, extra_bytes=40_000)
    code, out, _ = run_cli(
        capsys, root, thread_server, "--per-calculation", "--max-upload-size", "30K"
    )
    assert code == EXIT_FAILED_ITEMS
    assert "FAILED DFT-3: too large:" in out and "exceeds the upload size limit of 30.0 KiB" in out
    assert "raise --max-upload-size (NOMAD accepts at most 32 GiB)" in out
    assert_no_loss(thread_server, root, keys(1, 2, 3), publish=False)

    code, out, _ = run_cli(capsys, root, thread_server, "--per-calculation")
    assert code == EXIT_FAILED_ITEMS
    assert "FAILED DFT-3: NOMAD refused the upload: 413 Request Entity Too Large" in out
    assert "lower --max-upload-size" in out and "split the folder" in out
    assert_no_loss(thread_server, root, keys(1, 2, 3), publish=False)
    assert len(server_uploads(thread_server)) == 2


def test_zip_that_is_not_a_zip(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any
) -> None:
    """A ready .zip that is no zip fails its folder before anything is sent (exit 3)."""
    root = tmp_path / "data"
    make_samples(root, 2, layout="ready-zip")
    [broken] = (root / "DFT-1").glob("*.zip")
    broken.write_bytes(b"PK but not really a zip archive")
    code, out, _ = run_cli(capsys, root, thread_server, "--publish")
    assert code == EXIT_FAILED_ITEMS
    assert f"FAILED DFT-1: cannot be uploaded as it is: {broken}: not a readable zip" in out
    assert "replace it with a valid zip or remove it" in out
    assert_no_loss(thread_server, root, keys(1, 2), publish=True)
    assert len(server_uploads(thread_server)) == 1


# -- credentials and URLs ---------------------------------------------------------------------


def test_wrong_password(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any
) -> None:
    """A wrong password: exit 1 naming the user and the variables to fix; never echoed."""
    nomad_env.setenv("NOMAD_PASSWORD", "not-the-password-42")
    make_samples(tmp_path, 2)
    code, out, err = run_cli(capsys, tmp_path, thread_server)
    assert code == EXIT_ERROR
    assert "AuthError" in err and "refused the login of user 'test1'" in err
    assert "Incorrect username or password" in err and "NOMAD_PASSWORD" in err
    assert "not-the-password-42" not in out + err
    assert_nothing_started(thread_server, tmp_path)


@pytest.mark.parametrize("kind", ["expired", "revoked"])
def test_expired_or_revoked_token(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any, kind: str
) -> None:
    """A token NOMAD refuses: exit 1, NOMAD's reason, and how to get a working credential."""
    nomad_env.delenv("NOMAD_USERNAME")
    nomad_env.delenv("NOMAD_PASSWORD")
    if kind == "expired":
        token = thread_server.call(lambda s: s.state.signer.app_token(TEST1, -60.0))
        reason = "Expired token."
    else:  # signed by another deployment's secret, or revoked by a secret rotation
        token = TokenSigner(b"another deployment's secret").app_token(TEST1, 3600.0)
        reason = "The given token is invalid."
    token_file = tmp_path / "token.txt"
    token_file.write_text(token)
    make_samples(tmp_path / "data", 1)
    code, out, err = run_cli(
        capsys, tmp_path / "data", thread_server, "--token-file", str(token_file)
    )
    assert code == EXIT_ERROR
    assert "AuthError" in err and reason in err
    assert "get a new one (NOMAD_TOKEN, --token-file)" in err
    assert token not in out + err
    assert_nothing_started(thread_server, tmp_path / "data")


def test_wrong_url_connection_refused(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any
) -> None:
    """Nothing listening: exit 1 'could not connect … check the NOMAD URL'; the corrected
    command then works with the same root (the journal was not bound to the wrong URL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    make_samples(tmp_path, 2)
    code, _, err = run_cli(capsys, tmp_path, f"http://127.0.0.1:{port}/api/v1")
    assert code == EXIT_ERROR
    assert "TransportError" in err and f"127.0.0.1:{port}/api/v1/info could not connect" in err
    assert "check the NOMAD URL and the network" in err
    assert_nothing_started(thread_server, tmp_path)
    code, _, err = run_cli(capsys, tmp_path, thread_server)
    assert code == EXIT_OK, err
    assert_no_loss(thread_server, tmp_path, keys(1, 2), publish=False)


def test_wrong_url_dns_failure(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any
) -> None:
    """A host that cannot exist (reserved .invalid TLD): exit 1 naming it; nothing sent."""
    make_samples(tmp_path, 1)
    code, _, err = run_cli(capsys, tmp_path, "https://nomad-bulk-test.invalid/api/v1")
    assert code == EXIT_ERROR
    assert "TransportError" in err and "https://nomad-bulk-test.invalid/api/v1/info" in err
    assert "could not connect" in err and "check the NOMAD URL" in err
    assert_nothing_started(thread_server, tmp_path)


@pytest.mark.parametrize(
    ("thread_server", "said"),
    [
        (
            ServerConfig(faults=FaultPlan(rules=(FaultRule(status=200, body="html"),))),
            "is the URL a NOMAD API (…/api/v1)?",
        ),
        (
            ServerConfig(faults=FaultPlan(rules=(FaultRule(status=502, body="html"),))),
            "non-JSON 502 answer (from a proxy or gateway?): 502 Bad Gateway",
        ),
    ],
    indirect=["thread_server"],
    ids=["web-page", "proxy-error"],
)
def test_wrong_url_html_page(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any, said: str
) -> None:
    """An HTML page instead of NOMAD's JSON (a web page, a proxy's error page): exit 1 with
    the URL to check; nothing uploaded."""
    make_samples(tmp_path, 1)
    code, _, err = run_cli(capsys, tmp_path, thread_server)
    assert code == EXIT_ERROR
    assert "ServerError" in err and said in err and f"{thread_server.url}/info" in err
    assert_nothing_started(thread_server, tmp_path)


# -- metadata ---------------------------------------------------------------------------------


def test_dataset_name_owned_by_someone_else(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any
) -> None:
    """Dataset names are unique per user in NOMAD: another user's dataset of the same name
    is left alone and the run makes (and reports) its own."""

    async def theirs() -> str:
        settings = Settings(url=thread_server.url, username="test2", password="password")
        async with NomadClient(settings) as nomad:
            return (await nomad.create_dataset("shared name")).dataset_id

    other_id = anyio.run(theirs, backend="asyncio")
    make_samples(tmp_path, 2)
    code, out, _ = run_cli(capsys, tmp_path, thread_server, "--dataset", "shared name")
    assert code == EXIT_OK
    datasets = thread_server.call(lambda s: view(s).datasets)
    [mine] = [d for d in datasets if d.user_id == TEST1]
    assert mine.dataset_name == "shared name" and f"Dataset id: {mine.dataset_id}" in out
    assert other_id not in out
    entries = [e for u in server_uploads(thread_server) for e in u.entries]
    assert entries and all(e.datasets == [mine.dataset_id] for e in entries)
    manifest = read_manifest(default_journal_path(tmp_path).parent / "PIDs.json")
    assert manifest["dataset_id"] == mine.dataset_id
    audit(thread_server.call(view), manifest, publish=False, dataset_name="shared name")


def test_unknown_coauthor(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any
) -> None:
    """A coauthor without an account stops the run before the first byte (exit 1)."""
    make_samples(tmp_path, 2)
    code, _, err = run_cli(
        capsys, tmp_path, thread_server, "--coauthor", "coauthor1@example.org",
        "--coauthor", "nobody@example.org",
    )  # fmt: skip
    assert code == EXIT_ERROR
    assert "ConfigError" in err and "'nobody@example.org'" in err
    assert "every coauthor needs a NOMAD account" in err and "coauthor1" not in err
    assert_nothing_started(thread_server, tmp_path)


# -- journals ---------------------------------------------------------------------------------


def test_journal_of_another_deployment_or_root(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any
) -> None:
    """A journal that sent uploads to one deployment or belongs to another root is refused
    (exit 1) with both named and `--journal` suggested; nothing reaches the other side."""
    root = tmp_path / "data"
    make_samples(root, 2)
    assert run_cli(capsys, root, thread_server)[0] == EXIT_OK
    other = thread_server.url.replace("127.0.0.1", "localhost")
    code, _, err = run_cli(capsys, root, other)
    assert code == EXIT_ERROR and "JournalError" in err
    assert f"belongs to the deployment {thread_server.url}, not {other}" in err
    assert "--journal" in err
    assert len(server_uploads(thread_server)) == 1

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    code, _, err = run_cli(capsys, copy, thread_server)
    assert code == EXIT_ERROR and "JournalError" in err
    assert f"belongs to the root {root}, not {copy}" in err and "--journal" in err
    assert len(server_uploads(thread_server)) == 1
    fresh = tmp_path / "copy-journal.sqlite"
    code, _, err = run_cli(capsys, copy, thread_server, "--journal", str(fresh))
    assert code == EXIT_OK, err
    assert len(server_uploads(thread_server)) == 2


# -- full disks -------------------------------------------------------------------------------


def test_spool_disk_full(tmp_path: Path, thread_server: ThreadServer) -> None:
    """Zips that cannot be written fail their folders (exit 3) saying to free space; the
    journal stays consistent and a re-run with space uploads everything once."""
    root = tmp_path / "data"
    make_samples(root, 3, extra_bytes=1_000_000)
    args = cli(root, thread_server, "--per-calculation", "--publish")
    # Zips of 1 MB cannot be written; the journal of three folders fits easily.
    first = child(FILE_LIMIT, "600000", *args, cwd=tmp_path)
    assert first.returncode == EXIT_FAILED_ITEMS, (first.stdout, first.stderr)
    assert first.stdout.count("No space left to write the upload zip in") == 3
    assert "Free disk space or choose another spool directory" in first.stdout
    assert server_uploads(thread_server) == []
    assert_no_loss(thread_server, root, keys(1, 2, 3), publish=True)
    assert not list((default_journal_path(root).parent / "spool").iterdir())

    second = child(FILE_LIMIT, str(2**40), *args, cwd=tmp_path)
    assert second.returncode == EXIT_OK, (second.stdout, second.stderr)
    assert_no_loss(thread_server, root, keys(1, 2, 3), publish=True)


def test_journal_disk_full_mid_run_loses_nothing(
    tmp_path: Path, thread_server: ThreadServer
) -> None:
    """When the journal itself cannot be written the run stops (exit 1) saying the disk is
    full and that the journal is kept; the re-run finishes with no duplicate."""
    root = tmp_path / "data"
    make_samples(root, 30)
    args = cli(root, thread_server, "--per-calculation", "--publish")
    first = child(FILE_LIMIT, "240000", *args, cwd=tmp_path)
    assert first.returncode == EXIT_ERROR, (first.stdout, first.stderr)
    assert "JournalError: cannot write the journal" in first.stderr
    assert "the disk is full" in first.stderr and "run the same command again" in first.stderr
    assert "Traceback" not in first.stderr

    second = child(FILE_LIMIT, str(2**40), *args, cwd=tmp_path)
    assert second.returncode == EXIT_OK, (second.stdout, second.stderr)
    assert_no_loss(thread_server, root, {f"DFT-{n}" for n in range(1, 31)}, publish=True)
    names = Counter(u.upload_name for u in server_uploads(thread_server))
    assert len(names) == 30 and set(names.values()) == {1}


# -- NOMAD's upload limit ---------------------------------------------------------------------


@pytest.mark.parametrize("thread_server", [ServerConfig(upload_limit=3)], indirect=True)
def test_upload_limit_already_used_up(
    tmp_path: Path, thread_server: ThreadServer, nomad_env: Any, capsys: Any
) -> None:
    """With every unpublished slot held by the user's other uploads, nothing is sent (no 400
    from NOMAD), exit 3, and the message says what to publish or delete."""

    async def hold_all() -> None:
        settings = Settings(url=thread_server.url, username="test1", password="password")
        async with NomadClient(settings) as nomad:
            for n in range(3):
                path = tmp_path / f"held-{n}.txt"
                path.write_text("an upload made elsewhere\n")
                await nomad.create_upload(path, upload_name=f"held elsewhere {n}")

    anyio.run(hold_all, backend="asyncio")
    root = tmp_path / "data"
    make_samples(root, 3)
    code, out, _ = run_cli(
        capsys, root, thread_server, "--per-calculation", "--publish", "--upload-limit", "3"
    )
    assert code == EXIT_FAILED_ITEMS
    assert "3 calculations: 3 pending" in out
    assert "3 uploads were not started: no upload slot was left" in out
    assert "You held 3 unpublished uploads before this run started" in out
    assert "Publish or delete some of the unpublished uploads you hold" in out
    assert "Re-run with --publish" not in out
    assert thread_server.call(lambda s: s.state.status_counts[400]) == 0
    assert len(server_uploads(thread_server)) == 3
    assert_no_loss_pending(root)


def assert_no_loss_pending(root: Path) -> None:
    manifest = read_manifest(default_journal_path(root).parent / "PIDs.json")
    assert {k: v["status"] for k, v in manifest["items"].items()} == dict.fromkeys(
        keys(1, 2, 3), "pending"
    )


def test_fault_rule_html_body_is_validated() -> None:
    """An HTML page may carry a 2xx status (a web page where the API was expected); NOMAD's
    JSON errors may not, and unknown bodies are refused."""
    assert FaultRule(status=200, body="html").status == 200
    with pytest.raises(ValueError, match="200-599 with body='html'"):
        FaultRule(status=200)
    with pytest.raises(ValueError, match="fault body"):
        FaultRule(body="xml")
    plan = FaultPlan.from_dict({"rules": [{"status": 502, "body": "html"}]})
    assert plan.rules[0].body == "html" and FaultPlan.from_dict(plan.to_dict()) == plan

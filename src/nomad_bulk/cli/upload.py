"""``nomad-bulk upload ROOT``: the bulk upload, resumable (see ``run_upload``).

Credentials, in order: ``--token-file``, then ``NOMAD_TOKEN`` /
``NOMAD_USERNAME`` + ``NOMAD_PASSWORD`` from the environment, then a ``.env``
file in the current directory, then (only on a terminal, and not with
``--non-interactive``) a prompt. Passwords are never taken from the command line.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.to_thread

from ..config import Settings, resolve_url
from ..engine import Plan, PollPolicy, RunOptions, RunReport, run_upload
from ..engine.events import Observer
from ..engine.options import MAX_EMBARGO, GiB, parse_size
from ..errors import ConfigError
from . import EXIT_ERROR, EXIT_FAILED_ITEMS, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

__all__ = [
    "HELP",
    "add_arguments",
    "add_connection_arguments",
    "options_from_args",
    "run",
    "settings_from_args",
]

HELP = "upload every calculation folder under ROOT to NOMAD (resumable)"


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _embargo(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of months") from None
    if not 0 <= value <= MAX_EMBARGO:
        raise argparse.ArgumentTypeError(f"the embargo must be 0 to {MAX_EMBARGO} months")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("the rate cannot be negative")
    return value


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that say where NOMAD is and who we are."""
    group = parser.add_argument_group("NOMAD and credentials")
    group.add_argument(
        "--url",
        metavar="URL",
        help="prod, staging, test (the default) or a full API URL such as "
        "https://host/nomad-oasis/api/v1 [env: NOMAD_URL]",
    )
    group.add_argument(
        "--username",
        metavar="NAME",
        help="NOMAD username or e-mail; the password comes from NOMAD_PASSWORD, .env or a "
        "prompt, never from the command line [env: NOMAD_USERNAME]",
    )
    group.add_argument(
        "--token-file",
        metavar="PATH",
        type=Path,
        help="read a NOMAD access or app token from this file [env: NOMAD_TOKEN holds the "
        "token itself]",
    )
    group.add_argument(
        "--env-file",
        metavar="PATH",
        type=Path,
        help="read NOMAD_URL/NOMAD_USERNAME/NOMAD_PASSWORD/NOMAD_TOKEN from this .env file "
        "(default: ./.env if present)",
    )
    group.add_argument(
        "--non-interactive",
        action="store_true",
        help="never prompt: fail at once when credentials or a confirmation are missing "
        "(batch jobs)",
    )
    group.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow sending credentials over plain http to a host that is not this machine",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the flags of ``nomad-bulk upload``."""
    parser.add_argument("root", metavar="ROOT", type=Path, help="folder holding the calculations")
    add_connection_arguments(parser)
    what = parser.add_argument_group("what to upload")
    what.add_argument(
        "--pattern",
        metavar="GLOB",
        help="only folders whose path below ROOT matches (e.g. 'batch-*/**'; ** spans folders)",
    )
    mode = what.add_mutually_exclusive_group()
    mode.add_argument(
        "--per-calculation",
        dest="per_upload",
        action="store_true",
        default=False,
        help="one upload per calculation folder, as the NOMAD tutorial does",
    )
    mode.add_argument(
        "--packed",
        dest="per_upload",
        action="store_false",
        help="many calculations per upload, each in its own folder (the default)",
    )
    what.add_argument(
        "--max-upload-size",
        metavar="SIZE",
        type=_size,
        default=10 * GiB,
        help="largest upload, e.g. 10G (default) or 500M; NOMAD accepts at most 32G",
    )
    what.add_argument(
        "--max-per-upload",
        metavar="N",
        type=_positive_int,
        help="at most N calculations per packed upload",
    )
    what.add_argument(
        "--allow-empty",
        action="store_true",
        help="upload folders without a recognisable mainfile too",
    )
    meta = parser.add_argument_group("metadata and publishing")
    meta.add_argument(
        "--dataset",
        metavar="NAME",
        help="put every entry into this dataset (found by name among yours, or created)",
    )
    meta.add_argument(
        "--coauthor",
        metavar="EMAIL",
        action="append",
        default=[],
        help="coauthor by e-mail or username (repeat for several); checked before uploading",
    )
    meta.add_argument(
        "--reference",
        metavar="URL",
        action="append",
        default=[],
        help="reference URL such as a DOI link (repeat for several)",
    )
    meta.add_argument("--comment", metavar="TEXT", help="comment for every entry")
    meta.add_argument(
        "--embargo",
        metavar="MONTHS",
        type=_embargo,
        default=0,
        help="embargo in months, 0 to 36 (default 0)",
    )
    meta.add_argument(
        "--publish",
        action="store_true",
        help="publish each upload once it is processed, verified and described "
        "(permanent and public on prod and staging)",
    )
    meta.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask before publishing on prod or staging (batch jobs)",
    )
    meta.add_argument(
        "--keep-failed",
        action="store_true",
        help="keep uploads that failed on the server (default: delete them, freeing their slot)",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--transfers",
        metavar="N",
        type=_positive_int,
        default=4,
        help="concurrent transfers (default 4)",
    )
    limits.add_argument(
        "--upload-limit",
        metavar="N",
        type=_positive_int,
        default=10,
        help="NOMAD's limit of unpublished uploads per user (default 10)",
    )
    limits.add_argument(
        "--rate",
        metavar="N",
        type=_rate,
        default=10.0,
        help="at most N requests per second to NOMAD (default 10; 0 = unlimited)",
    )
    limits.add_argument(
        "--processing-timeout",
        metavar="SECONDS",
        type=float,
        default=3600.0,
        help="give up waiting for one server process after this long (default 3600)",
    )
    limits.add_argument(
        "--poll-initial",
        metavar="SECONDS",
        type=float,
        default=0.5,
        help="first wait before polling a server process when nothing is known yet "
        "(default 0.5; later waits follow the durations seen)",
    )
    limits.add_argument(
        "--poll-max",
        metavar="SECONDS",
        type=float,
        default=15.0,
        help="longest wait between two polls (default 15)",
    )
    limits.add_argument(
        "--spool-dir",
        metavar="PATH",
        type=Path,
        help="where zips are built (default: next to the journal)",
    )
    limits.add_argument(
        "--spool-max",
        metavar="SIZE",
        type=_size,
        help="most bytes of built zips on disk at once (default: from free space)",
    )
    run_group = parser.add_argument_group("run")
    run_group.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything and print the plan; upload nothing",
    )
    run_group.add_argument(
        "--journal",
        metavar="PATH",
        type=Path,
        help="the run's journal (default: ROOT/.nomad-bulk/journal.sqlite)",
    )
    run_group.add_argument(
        "--manifest",
        metavar="PATH",
        type=Path,
        help="where to write PIDs.json (default: next to the journal)",
    )
    run_group.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars or progress log lines",
    )


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from exc
    if not token:
        raise ConfigError(f"the token file {path} is empty")
    return token


def _interactive(args: argparse.Namespace) -> bool:
    return not getattr(args, "non_interactive", False) and sys.stdin.isatty()


def settings_from_args(
    args: argparse.Namespace, *, need_credentials: bool = True, **overrides: Any
) -> Settings:
    """Settings from flags, environment and ``.env``; prompt on a terminal if allowed."""
    token = _read_token(args.token_file) if getattr(args, "token_file", None) else None
    env_file = getattr(args, "env_file", None)
    settings = Settings.from_env(
        dotenv=env_file if env_file is not None else True,
        url=resolve_url(args.url) if getattr(args, "url", None) else None,
        username=getattr(args, "username", None),
        token=token,
        allow_insecure_http=bool(getattr(args, "allow_insecure_http", False)) or None,
        **overrides,
    )
    if settings.has_credentials or not need_credentials:
        return settings
    if not _interactive(args):
        raise ConfigError(
            "no NOMAD credentials: set NOMAD_USERNAME and NOMAD_PASSWORD (environment or "
            ".env), or NOMAD_TOKEN, or pass --token-file PATH"
        )
    username = settings.username or input("NOMAD username: ").strip()
    password = getpass.getpass(f"NOMAD password for {username}: ")
    return settings.with_(username=username, password=password)


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """The engine options matching the flags."""
    return RunOptions(
        pattern=args.pattern,
        per_upload=args.per_upload,
        max_upload_size=args.max_upload_size,
        max_per_upload=args.max_per_upload,
        transfers=args.transfers,
        upload_limit=args.upload_limit,
        requests_per_second=args.rate or None,
        dataset=args.dataset,
        coauthors=tuple(args.coauthor),
        references=tuple(args.reference),
        comment=args.comment,
        embargo=args.embargo,
        publish=args.publish,
        allow_empty=args.allow_empty,
        keep_failed=args.keep_failed,
        dry_run=args.dry_run,
        spool_dir=args.spool_dir,
        spool_max_bytes=args.spool_max,
        processing_timeout=args.processing_timeout,
        poll=_poll(args.poll_initial, args.poll_max),
    )


def _poll(initial: float, max_wait: float) -> PollPolicy:
    try:
        return PollPolicy(initial=initial, max_wait=max_wait, min_step=min(0.01, initial))
    except ValueError as exc:
        raise ConfigError(f"--poll-initial/--poll-max: {exc}") from exc


def progress_observers(no_progress: bool, stream: TextIO | None = None) -> list[Observer]:
    """Bars on a terminal, throttled log lines otherwise, nothing with ``--no-progress``."""
    if no_progress:
        return []
    from ..progress import LogProgress, TqdmProgress

    out = stream if stream is not None else sys.stderr
    if out.isatty():
        return [TqdmProgress()]
    import logging

    logging.getLogger("nomad_bulk.progress").setLevel(logging.INFO)
    return [LogProgress()]


def _ask(question: str) -> bool:
    answer = input(question).strip().lower()
    return answer in ("y", "yes")


async def _confirm_publish(plan: Plan) -> bool:
    print(plan.describe(), file=sys.stderr)
    question = (
        f"Publish up to {plan.groups_to_run} uploads on {plan.url}? Publishing there is "
        "public and permanent. [y/N] "
    )
    return await anyio.to_thread.run_sync(_ask, question)


def print_report(report: RunReport, *, out: TextIO | None = None) -> None:
    """Print the run's summary."""
    stream = out if out is not None else sys.stdout
    print(report.summary(), file=stream)


def exit_code(report: RunReport) -> int:
    """0 when everything is done, 3 when something failed or was left for a re-run."""
    if report.dry_run or report.ok:
        return EXIT_OK
    return EXIT_FAILED_ITEMS


def run(args: argparse.Namespace) -> int:
    """Run ``nomad-bulk upload``."""
    options = options_from_args(args)
    settings = settings_from_args(args, need_credentials=not options.dry_run)
    confirm = None
    if options.publish and settings.is_public_deployment and not args.yes and not options.dry_run:
        if not _interactive(args):
            print(
                f"Refusing to publish on {settings.url} without confirmation: publishing there "
                "is public and permanent. Pass --yes to confirm in a batch job.",
                file=sys.stderr,
            )
            return EXIT_USAGE
        confirm = _confirm_publish
    journal = args.journal
    manifest = args.manifest
    runner = partial(
        run_upload,
        args.root,
        settings=settings,
        options=options,
        observers=progress_observers(args.no_progress or options.dry_run),
        journal_path=journal,
        manifest_path=manifest,
        confirm=confirm,
    )
    try:
        report = anyio.run(runner, backend="asyncio")
    except KeyboardInterrupt:
        print(
            "Interrupted. The journal is consistent: run the same command again to resume.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if report.dry_run:
        print(report.plan.describe())
        return EXIT_OK
    if report.cancelled:
        print("Cancelled: nothing was sent.", file=sys.stderr)
        return EXIT_ERROR
    print_report(report)
    return exit_code(report)

"""``nomad-bulk demo``: the whole pipeline offline, against a local server in this process.

Starts the local NOMAD server on 127.0.0.1, writes N small FHI-aims-like
calculation folders, uploads them with a dataset and ``--publish``, and prints
where the manifest is. Needs no network and no account.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread

from ..config import Secret, Settings
from ..engine import Observer, PollPolicy, RunOptions, RunReport, run_upload
from ..errors import ConfigError
from ..samples import make_samples
from . import EXIT_INTERRUPTED
from .upload import exit_code, progress_observers

__all__ = ["HELP", "add_arguments", "demo", "run"]

HELP = "run the whole pipeline offline against a local server (no account needed)"

DEMO_USER = "test1"
DEMO_PASSWORD = "password"  # the local server's documented test account  # noqa: S105
DEMO_DATASET = "nomad-bulk demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the flags of ``nomad-bulk demo``."""
    parser.add_argument(
        "--folders", metavar="N", type=int, default=20, help="calculation folders (default 20)"
    )
    parser.add_argument(
        "--dir",
        metavar="DIR",
        type=Path,
        help="an empty or new folder for the sample data (default: a new temporary folder)",
    )
    parser.add_argument(
        "--per-calculation",
        action="store_true",
        help="one upload per folder, as the NOMAD tutorial does (default: packed uploads)",
    )
    parser.add_argument(
        "--processing-time",
        metavar="SECONDS",
        type=float,
        default=0.2,
        help="how long the local server 'processes' an upload (default 0.2)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or lines")


def _prepare(folder: Path | None, count: int) -> Path:
    if folder is None:
        root = Path(tempfile.mkdtemp(prefix="nomad-bulk-demo-"))
    else:
        root = folder.expanduser().resolve()
        if root.exists() and any(root.iterdir()):
            raise ConfigError(f"{root} is not empty; give a new or empty folder with --dir")
        root.mkdir(parents=True, exist_ok=True)
    make_samples(root, count)
    return root


async def demo(
    root: Path,
    *,
    per_upload: bool = False,
    processing_time: float = 0.2,
    observers: Sequence[Observer] = (),
) -> RunReport:
    """Serve a local NOMAD, upload ``root`` with a dataset, publish, and return the report."""
    from ..server import ServerConfig, running_server

    config = ServerConfig(processing_time=processing_time, time_per_entry=0.005)
    async with running_server(config) as server:
        settings = Settings(url=server.url, username=DEMO_USER, password=Secret(DEMO_PASSWORD))
        options = RunOptions(
            per_upload=per_upload,
            dataset=DEMO_DATASET,
            coauthors=("coauthor1@example.org",),
            comment="Uploaded by the nomad-bulk demo",
            publish=True,
            requests_per_second=None,
            poll=PollPolicy(initial=0.05, max_wait=1.0),
        )
        return await run_upload(
            root,
            settings=settings,
            options=options,
            observers=observers,
        )


def run(args: argparse.Namespace) -> int:
    """Run ``nomad-bulk demo``."""
    if args.folders < 1:
        raise ConfigError("--folders must be at least 1")
    root = _prepare(args.dir, args.folders)
    print(f"Sample data: {args.folders} calculation folders in {root}", file=sys.stderr)
    observers = progress_observers(args.no_progress)
    try:
        report = anyio.run(
            partial(
                demo,
                root,
                per_upload=args.per_calculation,
                processing_time=args.processing_time,
                observers=observers,
            ),
            backend="asyncio",
        )
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(report.summary())
    print(
        f"\nDone: {len(report.published)} calculations published on a local NOMAD that "
        f"has now stopped.\nThe ids are in the manifest: {report.manifest_path}\n"
        f"Try `nomad-bulk status {root}`; for the real thing, `nomad-bulk upload {root} "
        "--url test --dataset NAME`."
    )
    return exit_code(report)

"""Upload a folder of calculations with the engine, from Python (async API).

    python examples/bulk_upload.py                          # offline: 40 generated folders,
                                                            # a local server in-process
    python examples/bulk_upload.py ~/calcs --url test --dataset "My project"
    python examples/bulk_upload.py ~/calcs --url test --publish

Each folder below ROOT holding files (or a ready ``.zip``) is one calculation; the
calculations are packed into a few uploads, processed, checked, put in the dataset
and, with ``--publish``, published. Progress shows as bars in a terminal. The run is
journaled under ``ROOT/.nomad-bulk/``: interrupt it (Ctrl-C) and run the same command
again to resume; nothing is uploaded twice. The manifest ``PIDs.json`` lands next to
the journal. Credentials for ``--url`` come from the environment or a ``.env`` file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import anyio

from nomad_bulk.config import Settings
from nomad_bulk.engine import RunOptions, RunReport, run_upload
from nomad_bulk.progress import TqdmProgress
from nomad_bulk.samples import make_samples
from nomad_bulk.server import running_server


async def upload(args: argparse.Namespace) -> RunReport:
    """Run the engine once: offline against a local server, or against ``--url``."""
    async with AsyncExitStack() as stack:
        if args.url is None:
            server = await stack.enter_async_context(running_server())
            settings = Settings(url=server.url, username="test1", password="password")
        else:
            settings = Settings.from_env(url=args.url)  # NOMAD_* variables, then .env
        root = args.root
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            make_samples(root, args.folders)  # small FHI-aims calculations

        return await run_upload(
            root,
            settings=settings,
            options=RunOptions(
                dataset=args.dataset,
                publish=args.publish,
                max_per_upload=args.max_per_upload,
                transfers=4,
            ),
            observers=[TqdmProgress()],
        )


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run, print the summary; exit 0 when everything is done."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, help="folder of calculation folders")
    parser.add_argument("--url", help="prod, staging, test or an API URL (default: local server)")
    parser.add_argument("--dataset", default="nomad-bulk example", help="dataset name")
    parser.add_argument("--publish", action="store_true", help="publish every upload")
    parser.add_argument("--max-per-upload", type=int, default=10, help="calculations per upload")
    parser.add_argument("--folders", type=int, default=40, help="generated folders (offline)")
    args = parser.parse_args(argv)
    if args.publish and args.url and Settings(url=args.url).is_public_deployment:
        parser.error("this example does not publish on prod or staging; use nomad-bulk upload")

    report = anyio.run(upload, args, backend="asyncio")
    print(report.summary())
    for item in report.failed:
        print(f"failed: {item.key}: {item.message}", file=sys.stderr)
    return 0 if report.ok else 3


if __name__ == "__main__":
    sys.exit(main())

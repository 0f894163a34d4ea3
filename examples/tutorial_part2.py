"""The NOMAD tutorial's part 2 ("Using NOMAD's API for Project Management") with nomad-bulk.

The tutorial rebuilds three DFT calculations as ``DFT-N/<entry_id>.zip``, uploads each
one, polls until it is processed, collects the upload and entry ids, creates a dataset,
puts the uploads in it, publishes them and keeps the ids in ``PIDs.json``. Here that is
one ``run_upload`` call, which also survives interruption (run it again to resume).

    python examples/tutorial_part2.py                  # offline: a local NOMAD server in-process
    python examples/tutorial_part2.py --url test       # NOMAD's test deployment
    python examples/tutorial_part2.py --url http://127.0.0.1:8000/api/v1 --publish

Without ``--url`` everything runs offline against a local server started here, as user
``test1``, and publishes. With ``--url``, credentials come from the environment or a
``.env`` file (``NOMAD_USERNAME``/``NOMAD_PASSWORD`` or ``NOMAD_TOKEN``) and nothing is
published unless ``--publish`` is given; on prod or staging you are asked first.
The calculations are generated (FHI-aims-like files) instead of downloaded from prod.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

from nomad_bulk.config import Settings
from nomad_bulk.engine import Plan, RunOptions
from nomad_bulk.samples import make_samples
from nomad_bulk.sync import run_upload, running_server


def ask_before_publishing(plan: Plan) -> bool:
    """Publishing on prod or staging is public and permanent: ask first."""
    answer = input(f"Publish {plan.items_to_run} calculations on {plan.url}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def main(argv: list[str] | None = None) -> int:
    """Run the tutorial's part 2; exit code 0 when every calculation is done."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="prod, staging, test or an API URL (default: local server)")
    parser.add_argument("--root", type=Path, help="folder for DFT-1..3 (default: a temporary one)")
    parser.add_argument("--dataset", default="Example Dataset - DPG Tutorial 2025 - nomad-bulk")
    parser.add_argument("--publish", action="store_true", help="publish (always on offline)")
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        if args.url is None:
            server = stack.enter_context(running_server())
            settings = Settings(url=server.url, username="test1", password="password")
        else:
            settings = Settings.from_env(url=args.url)
        root = args.root or Path(stack.enter_context(tempfile.TemporaryDirectory()))

        # -- the tutorial's part 2 --------------------------------------------------------
        make_samples(root, 3, layout="ready-zip")  # DFT-1..3/<id>.zip, the tutorial's layout
        report = run_upload(
            root,
            settings=settings,
            options=RunOptions(
                per_upload=True,  # one upload per calculation, as the tutorial does
                dataset=args.dataset,  # found by name, or created
                comment="NOMAD tutorial part 2, uploaded with nomad-bulk",
                publish=args.publish or args.url is None,
            ),
            manifest_path=root / "PIDs.json",
            confirm=ask_before_publishing if settings.is_public_deployment else None,
        )
        pids = json.loads((root / "PIDs.json").read_text())
        # ----------------------------------------------------------------------------------

        print(report.summary())
        print(json.dumps({key: pids[key] for key in ("upload_ids", "entry_ids", "dataset_id")}))
        return 0 if report.ok else 3


if __name__ == "__main__":
    sys.exit(main())

"""Run every benchmark one after the other (they share two cores badly) and list the results.

    .venv/bin/python benchmarks/run_all.py            # default sizes: about 15 minutes
    .venv/bin/python benchmarks/run_all.py --quick    # CI sizes: under a minute

Each benchmark prints its own summary lines and writes its JSON to
``benchmarks/results/`` (``*-quick.json`` for the quick sizes). The exit status
is non-zero if a benchmark failed to run; missed targets are reported, not failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Script and the extra arguments of its default and quick runs.
BENCHMARKS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("pipeline.py", (), ("--quick",)),
    ("scale.py", (), ("--quick",)),
    ("client_overhead.py", (), ("--quick",)),
    ("transfer.py", ("--repeat", "3"), ("--quick",)),
    ("packing.py", (), ("--quick",)),
    (
        "pipeline_engine.py",
        (),
        ("--quick", "--folders", "10", "--processing-time", "0.1", "--plan-folders", "300"),
    ),
    ("server_load.py", (), ("--quick",)),
    ("chaos.py", (), ("--quick",)),
)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks in turn; return 1 if any of them failed to run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI sizes")
    parser.add_argument("--only", nargs="+", help="script names to run, e.g. pipeline.py")
    args = parser.parse_args(argv)
    failed: list[str] = []
    for script, full, quick in BENCHMARKS:
        if args.only and script not in args.only:
            continue
        extra = quick if args.quick else full
        command = [sys.executable, str(HERE / script), *extra]
        print(f"== {script} {' '.join(extra)} (load {os.getloadavg()[0]:.2f})", flush=True)
        start = time.monotonic()
        done = subprocess.run(command, check=False)
        print(f"== {script}: exit {done.returncode} after {time.monotonic() - start:.1f} s")
        if done.returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

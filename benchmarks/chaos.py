"""Chaos benchmark: a large upload through every fault at once, then SIGKILLs at random.

Two phases, against the local NOMAD server in its own process (state in a data_dir):

1. **Faults.** N folders (default 300, one upload each, a dataset, a comment,
   ``--publish``) first on a healthy server (the fault-free time), then on a server
   with the seeded fault mix of ``tests/chaos``: 5xx on 20 % of GETs, a 502 after the
   upload was created on 10 % of creates and lost answers on 10 % of edits, publishes
   and deletes, connections dropped mid-body on 5 % of creates, 429 and 503 bursts with
   Retry-After, tokens refused after a few seconds, a server restart a third of the way
   through, processing FAILURE on 5 % of uploads and failed entries on 3 % of entries,
   plus folders that fail on purpose. The same command is re-run (under the same
   faults) until every good folder is published. Reported: faults injected by kind,
   requests and retries, duplicates, lost folders, wrongly published uploads, orphans
   (all must be 0), time against the fault-free run, and the adaptive throttling's
   lowest and highest request rate and transfer concurrency.
2. **Crashes.** ``python -m nomad_bulk upload`` of M folders (default 20) SIGKILLed at
   seeded random moments (at least 20 trials, one or two kills each), re-run until it
   finishes; each trial's server state must equal that of an uninterrupted run.

Usage::

    .venv/bin/python benchmarks/chaos.py            # N = 300, 20 crash trials (~3 min)
    .venv/bin/python benchmarks/chaos.py --quick    # CI size (~25 s)

Results go to ``benchmarks/results/chaos[-quick].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from _server import ServerProcess

from nomad_bulk.client import NomadClient
from nomad_bulk.config import Settings
from nomad_bulk.engine import (
    PollPolicy,
    RunOptions,
    RunReport,
    Stage,
    StageChanged,
    Throttled,
    run_upload,
)
from nomad_bulk.samples import make_samples
from nomad_bulk.server import FaultPlan, FaultRule

RESULTS = Path(__file__).resolve().parent / "results"
_NAME = re.compile(r"^(?P<label>.*) \[nomad-bulk [0-9a-f]{12}\]$")
POLL = PollPolicy(initial=0.02, max_wait=0.2, min_step=0.005, jitter=0.01)
DATASET = "chaos benchmark"
COMMENT = "survived the chaos benchmark"


def chaos_plan(seed: int, token_age: float, folders: int) -> FaultPlan:
    """The fault mix of tests/chaos/test_chaos_run.py; bursts placed by the run's size."""
    lost = {"kind": "after", "status": 502, "share": 0.1}
    post = {"method": "POST", "route": "/uploads"}
    return FaultPlan(
        rules=(
            FaultRule(kind="drop", share=0.05, drop_after_bytes=200, **post),  # type: ignore[arg-type]
            FaultRule(**post, **lost),  # type: ignore[arg-type]
            FaultRule(method="POST", route="/uploads/*/edit", **lost),  # type: ignore[arg-type]
            FaultRule(method="POST", route="/uploads/*/action/publish", **lost),  # type: ignore[arg-type]
            FaultRule(method="DELETE", route="/uploads/*", **lost),  # type: ignore[arg-type]
            FaultRule(kind="after", method="POST", route="/datasets*", status=504, times=1),
            # Bursts; the counts start again after the restart, so each may fire twice.
            FaultRule(status=429, retry_after=0.2, skip=folders, times=10),
            FaultRule(status=503, retry_after=0.2, skip=3 * folders, times=10, body="html"),
            FaultRule(status=503, skip=5 * folders, times=10, body="html"),
            FaultRule(method="GET", share=0.2, status=500),
        ),
        token_max_age=token_age,
        upload_failure_rate=0.05,
        entry_failure_rate=0.03,
        seed=seed,
    )


def label(upload_name: str | None) -> str:
    match = _NAME.match(upload_name or "")
    return match.group("label") if match else str(upload_name)


def add(total: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value


class Restart:
    """Restarts the server once ``after`` uploads reached processing; keeps the counts."""

    def __init__(self, server: ServerProcess, after: int) -> None:
        self.server = server
        self.after = after
        self.event: anyio.Event | None = None  # made on the run's event loop
        self.seen = 0
        self.before: dict[str, Any] | None = None

    def observe(self, event: object) -> None:
        if isinstance(event, StageChanged) and event.stage is Stage.PROCESSING:
            self.seen += 1
            if self.seen >= self.after and self.event is not None:
                self.event.set()

    async def run(self) -> None:
        self.event = anyio.Event()
        await self.event.wait()
        self.before = await anyio.to_thread.run_sync(self.server.stats)
        await anyio.to_thread.run_sync(self.server.restart)


async def one_run(
    url: str, root: Path, options: RunOptions, *, restart: Restart | None = None
) -> tuple[RunReport, float, dict[str, Any], list[tuple[float, Throttled]]]:
    """One engine run with its own client (for its statistics) and AIMD history."""
    settings = Settings(
        url=url,
        username="test1",
        password="password",
        retry_initial_wait=0.05,
        retry_max_wait=1.0,
        retry_max_time=60.0,
    )
    history: list[tuple[float, Throttled]] = []
    started = time.monotonic()

    def record(event: object) -> None:
        if isinstance(event, Throttled):
            history.append((time.monotonic() - started, event))

    observers: list[Any] = [record] + ([restart.observe] if restart else [])
    async with NomadClient(settings) as nomad:
        async with anyio.create_task_group() as tg:
            if restart is not None:
                tg.start_soon(restart.run)
            report = await run_upload(root, client=nomad, options=options, observers=observers)
            tg.cancel_scope.cancel()
        stats = nomad.stats
        client = {
            "requests": stats.requests,
            "retries": stats.retries,
            "relogins": stats.relogins,
            "transport_errors": stats.transport_errors,
            "by_status": {str(k): v for k, v in sorted(stats.by_status.items())},
        }
    return report, time.monotonic() - started, client, history


def audit(
    summary: dict[str, Any], manifest: dict[str, Any], good: set[str], bad: set[str]
) -> dict[str, Any]:
    """Duplicates, lost, wrongly published, orphans and mismatches, from the server's state."""
    uploads = summary["uploads"]
    names = Counter(u["upload_name"] for u in uploads)
    by_id = {u["upload_id"]: u for u in uploads}
    items = manifest["items"]
    referenced = {i["upload_id"] for i in items.values() if i.get("upload_id")}
    wrongly = [
        u["upload_name"]
        for u in uploads
        if u["published"] and (u["process_status"] != "SUCCESS" or u["failed_entries"])
    ]
    lost = sorted(k for k in good if items.get(k, {}).get("status") != "published")
    mismatches = []
    for key, item in items.items():
        upload = by_id.get(item.get("upload_id") or "")
        if item["status"] == "published":
            if upload is None or not upload["published"]:
                mismatches.append(f"{key}: manifest says published, server disagrees")
            elif upload["entries_in_dataset"] != upload["entries"]:
                mismatches.append(f"{key}: entries outside the dataset")
            elif upload["upload_name"] != item["upload_name"]:
                mismatches.append(f"{key}: another upload name on the server")
    bad_published = sorted(k for k in bad if items.get(k, {}).get("status") == "published")
    return {
        "duplicates": sum(c - 1 for c in names.values() if c > 1),
        "lost": len(lost),
        "lost_keys": lost[:20],
        "wrongly_published": len(wrongly) + len(bad_published),
        "orphans": sum(1 for u in uploads if u["upload_id"] not in referenced),
        "mismatches": mismatches[:20],
        "uploads_on_server": len(uploads),
        "published_on_server": sum(u["published"] for u in uploads),
    }


def aimd(
    history: list[tuple[float, Throttled]], rate: float | None, transfers: int
) -> dict[str, Any]:
    rates = [e.requests_per_second for _, e in history]
    finite = [r for r in rates if r is not None]
    counts = [e.transfers for _, e in history] or [transfers]
    return {
        "configured_rate": rate,
        "configured_transfers": transfers,
        "min_rate": round(min(finite), 2) if finite else rate,
        "max_rate": None if (rate is None and (not finite or None in rates)) else max(finite),
        "min_transfers": min(counts),
        "max_transfers": max([*counts, transfers]),
        "cuts": sum(e.reason.startswith("server pressure") for _, e in history),
        "recoveries": sum(e.reason == "server recovered" for _, e in history),
        "history": [
            [
                round(t, 2),
                e.reason,
                None if e.requests_per_second is None else round(e.requests_per_second, 2),
                e.transfers,
            ]
            for t, e in history[:200]
        ],
    }


def faults_phase(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n = args.folders
    rng = random.Random(args.seed)
    numbers = list(range(1, n + 1))
    fail_entry = set(rng.sample(numbers, max(1, n // 50)))
    fail_upload = set(rng.sample([k for k in numbers if k not in fail_entry], max(1, n // 50)))
    bad = {f"DFT-{k}" for k in fail_entry | fail_upload}
    good = {f"DFT-{k}" for k in numbers} - bad
    options = RunOptions(
        per_upload=True,
        publish=True,
        dataset=DATASET,
        comment=COMMENT,
        transfers=args.transfers,
        requests_per_second=args.rate,
        poll=POLL,
        processing_timeout=120.0,
    )
    common = {
        "processing_time": args.processing_time,
        "latency": args.latency,
        "upload_limit": args.slots,
        "seed": args.seed,
    }
    results: dict[str, Any] = {}

    # Fault-free run of the same size, same options, same kind of server.
    root = tmp / "healthy"
    make_samples(root, n, fail_entry=fail_entry, fail_upload=fail_upload, code="mixed")
    with ServerProcess(**common, data_dir=tmp / "healthy-server") as server:
        report, seconds, client, history = anyio.run(one_run, server.url, root, options)
        summary = server.stats()
    manifest = json.loads((report.manifest_path or Path()).read_text())
    results["fault_free"] = {
        "seconds": round(seconds, 2),
        "server_requests": summary["requests"],
        "client": client,
        "counts": report.counts,
        "audit": audit(summary, manifest, good, bad),
        "aimd": aimd(history, args.rate, args.transfers),
    }

    # The same under every fault, then re-runs under the same faults until done.
    root = tmp / "chaos"
    make_samples(root, n, fail_entry=fail_entry, fail_upload=fail_upload, code="mixed")
    plan = chaos_plan(args.seed, args.token_age, n)
    faults: dict[str, int] = {}
    server_requests = 0
    runs = []
    with ServerProcess(**common, data_dir=tmp / "chaos-server", faults=plan) as server:
        restart = Restart(server, after=n // 3)
        report, seconds, client, history = anyio.run(
            lambda: one_run(server.url, root, options, restart=restart)
        )
        runs.append((report, seconds, client, history))
        if restart.before is not None:
            add(faults, restart.before["faults"])
            server_requests += restart.before["requests"]
        for _ in range(args.max_reruns):
            if not ({i.key for i in report.items if i.status.value != "published"} - bad):
                break
            report, seconds, client, history = anyio.run(one_run, server.url, root, options)
            runs.append((report, seconds, client, history))
        summary = server.stats()
    add(faults, summary["faults"])
    server_requests += summary["requests"]
    manifest = json.loads((report.manifest_path or Path()).read_text())
    first = runs[0]
    total_client: dict[str, int] = {}
    for run in runs:
        add(total_client, {k: v for k, v in run[2].items() if isinstance(v, int)})
    results["chaos"] = {
        "seconds_first_run": round(first[1], 2),
        "seconds_all_runs": round(sum(r[1] for r in runs), 2),
        "reruns": len(runs) - 1,
        "restarted": restart.before is not None,
        "faults": dict(sorted(faults.items())),
        "faults_total": sum(v for k, v in faults.items() if not k.startswith("status:")),
        "server_requests": server_requests,
        "client": total_client,
        "first_run_counts": first[0].counts,
        "final_counts": report.counts,
        "bad_folders": len(bad),
        "audit": audit(summary, manifest, good, bad),
        "aimd": aimd(first[3], args.rate, args.transfers),
        "aimd_reruns": [aimd(r[3], args.rate, args.transfers) for r in runs[1:]],
    }
    healthy = max(results["fault_free"]["seconds"], 1e-9)
    # The fair comparison: until the same end state (every good folder published).
    results["time_ratio"] = round(results["chaos"]["seconds_all_runs"] / healthy, 2)
    results["time_ratio_first_run"] = round(first[1] / healthy, 2)
    return results


def cli(root: Path, url: str) -> list[str]:
    return [
        sys.executable, "-m", "nomad_bulk", "upload", str(root), "--url", url,
        "--per-calculation", "--publish", "--dataset", "crash", "--comment", "kill -9",
        "--no-progress", "--rate", "0", "--poll-initial", "0.02", "--poll-max", "0.2",
    ]  # fmt: skip


def env() -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    values.update(NOMAD_USERNAME="test1", NOMAD_PASSWORD="password")
    return values


def crash_fingerprint(summary: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Label (minus the trial's prefix) → what the server holds under it."""
    result: dict[str, list[Any]] = {}
    for u in summary["uploads"]:
        name = label(u["upload_name"])
        if not name.startswith(prefix):
            continue
        facts = [u["published"], u["process_status"], u["entries"], u["failed_entries"],
                 u["entries_in_dataset"]]  # fmt: skip
        result.setdefault(name[len(prefix) :], []).append(facts)
    return result


def crash_phase(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    rng = random.Random(f"crash-{args.seed}")
    m = args.crash_folders
    trials: list[dict[str, Any]] = []
    with ServerProcess(
        processing_time=args.processing_time, latency=args.latency, upload_limit=args.slots
    ) as server:
        root = tmp / "crash-reference"
        make_samples(root, m, prefix="ref-", code="mixed")
        started = time.monotonic()
        done = subprocess.run(cli(root, server.url), env=env(), capture_output=True, text=True)
        reference_seconds = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"the reference run failed: {done.stderr[-2000:]}")
        expected = crash_fingerprint(server.stats(), "ref-")
        for trial in range(args.trials):
            prefix = f"t{trial}-"
            root = tmp / f"crash-{trial}"
            make_samples(root, m, prefix=prefix, code="mixed")
            kills: list[float | None] = []
            for _ in range(rng.choice((1, 2))):
                # From the interpreter's start to about the end of an uninterrupted run.
                delay = rng.uniform(0.05, 0.95 * reference_seconds)
                proc = subprocess.Popen(
                    cli(root, server.url), env=env(), stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    proc.wait(delay)
                    kills.append(None)  # finished before the kill
                    break
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills.append(round(delay, 3))
            reruns = 0
            while True:
                final = subprocess.run(
                    cli(root, server.url), env=env(), capture_output=True, text=True
                )
                reruns += 1
                if final.returncode == 0 or reruns >= 3:
                    break
            summary = server.stats()
            manifest = json.loads((root / ".nomad-bulk" / "PIDs.json").read_text())
            mine = [u for u in summary["uploads"] if label(u["upload_name"]).startswith(prefix)]
            referenced = {i["upload_id"] for i in manifest["items"].values() if i["upload_id"]}
            names = Counter(u["upload_name"] for u in mine)
            trials.append(
                {
                    "trial": trial,
                    "kills_at_seconds": [k for k in kills if k is not None],
                    "final_exit": final.returncode,
                    "final_runs": reruns,
                    "duplicates": sum(c - 1 for c in names.values() if c > 1),
                    "orphans": sum(1 for u in mine if u["upload_id"] not in referenced),
                    "matches_uninterrupted": crash_fingerprint(summary, prefix) == expected,
                }
            )
    return {
        "folders": m,
        "reference_seconds": round(reference_seconds, 2),
        "trials": len(trials),
        "sigkills": sum(len(t["kills_at_seconds"]) for t in trials),
        "all_match": all(t["matches_uninterrupted"] for t in trials),
        "duplicates": sum(t["duplicates"] for t in trials),
        "orphans": sum(t["orphans"] for t in trials),
        "failed_final_runs": sum(t["final_exit"] != 0 for t in trials),
        "details": trials,
    }


def show_rate(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    """Run both phases, print one line per figure, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI sizes")
    parser.add_argument("--folders", type=int, default=None, help="folders in the fault phase")
    parser.add_argument("--crash-folders", type=int, default=None)
    parser.add_argument("--trials", type=int, default=None, help="SIGKILL trials (>= 20)")
    parser.add_argument("--processing-time", type=float, default=0.05)
    parser.add_argument("--latency", type=float, default=0.002)
    parser.add_argument("--slots", type=int, default=10, help="NOMAD's unpublished-upload limit")
    parser.add_argument("--transfers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=None, help="requests/s (default: none)")
    parser.add_argument("--token-age", type=float, default=None, help="tokens refused after (s)")
    parser.add_argument("--max-reruns", type=int, default=5)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    args.folders = args.folders or (40 if args.quick else 300)
    args.crash_folders = args.crash_folders or (8 if args.quick else 20)
    args.trials = args.trials or (3 if args.quick else 20)
    args.token_age = args.token_age or (1.0 if args.quick else 3.0)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="nb-bench-chaos-") as tmp:
        faults = faults_phase(args, Path(tmp))
        crash = crash_phase(args, Path(tmp))
    chaos, healthy = faults["chaos"], faults["fault_free"]
    result = {
        "benchmark": "chaos",
        "quick": args.quick,
        "command": " ".join([".venv/bin/python", "benchmarks/chaos.py", *(argv or sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        **faults,
        "crash": crash,
    }
    a = chaos["audit"]
    kinds = ", ".join(f"{k} {v}" for k, v in chaos["faults"].items())
    client = chaos["client"]
    g = chaos["aimd"]
    print(f"chaos: {args.folders} folders, faults injected ({chaos['faults_total']}): {kinds}")
    print(
        f"chaos: requests {chaos['server_requests']} answered by the server; client "
        f"{client['requests']} attempts, {client['retries']} retries, {client['relogins']} "
        f"re-logins, {client['transport_errors']} without an answer"
    )
    print(
        f"chaos: duplicates = {a['duplicates']}, lost = {a['lost']}, wrongly published = "
        f"{a['wrongly_published']}, orphans = {a['orphans']}, mismatches = {len(a['mismatches'])}"
        f" (after 1 run + {chaos['reruns']} re-runs; {chaos['bad_folders']} folders bad on purpose)"
    )
    print(
        f"chaos: until every good folder is published {chaos['seconds_all_runs']} s vs "
        f"fault-free {healthy['seconds']} s (x{faults['time_ratio']}); first run alone "
        f"{chaos['seconds_first_run']} s (x{faults['time_ratio_first_run']}); server restarted "
        f"mid-run: {chaos['restarted']}"
    )
    print(
        f"chaos: AIMD request rate min {show_rate(g['min_rate'])} / max "
        f"{show_rate(g['max_rate'])} req/s, transfers min {g['min_transfers']} / max "
        f"{g['max_transfers']} ({g['cuts']} cuts, {g['recoveries']} recoveries)"
    )
    print(
        f"crash: {crash['trials']} trials of {crash['folders']} folders, {crash['sigkills']} "
        f"SIGKILLs: all ended like the uninterrupted run: {crash['all_match']}, duplicates = "
        f"{crash['duplicates']}, orphans = {crash['orphans']}, failed final runs = "
        f"{crash['failed_final_runs']}"
    )
    RESULTS.mkdir(exist_ok=True)
    out = args.output or RESULTS / ("chaos-quick.json" if args.quick else "chaos.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    clean = (
        a["duplicates"] == a["lost"] == a["wrongly_published"] == a["orphans"] == 0
        and not a["mismatches"]
        and crash["all_match"]
        and crash["duplicates"] == crash["orphans"] == 0
    )
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())

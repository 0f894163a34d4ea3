"""Planning at scale: plan, journal and manifest for 20,000 and 100,000 folders.

For each size, tiny calculation folders (an FHI-aims ``aims.out`` and a
``control.in``, 100 per ``batch-k/`` directory) are generated in tmpfs
(``/dev/shm`` when it exists; the files are then in memory, as a warm page cache
would hold them), and three fresh processes measure the engine's own code paths,
each reporting its wall time and its peak RSS (``ru_maxrss``; clean, one process
per step):

1. **plan**: :func:`nomad_bulk.packing.discover` + :func:`group_calculations`
   (one upload per folder, the most journal rows), nothing written;
2. **journal**: :func:`nomad_bulk.engine.plan.plan_into_journal`, the run's
   planning pass (discover, group and write every group and calculation row to
   the SQLite journal); the journal rows' own cost is (2) minus (1);
3. **manifest**: on that journal, every upload is taken through the durable
   transitions a run writes (intent, uploaded, verified with an entry id,
   described, publishing, published; timed separately, as they are spread over a
   run), then the report is built and ``PIDs.json`` written
   (:func:`build_items`, :func:`manifest_data`, :func:`write_manifest`).

Targets at 20,000 folders: journal (2) + manifest (3) under 10 s and every
peak RSS under 300 MiB; growth linear: the ratio 100k/20k of time and of memory
above the interpreter's baseline should be about 5.

    .venv/bin/python benchmarks/scale.py            # 20,000 and 100,000 (a few minutes)
    .venv/bin/python benchmarks/scale.py --quick    # 200 and 1,000 (CI smoke)

Writes ``benchmarks/results/scale.json`` (``scale-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_SECONDS = 10.0
TARGET_RSS_MIB = 300.0
TARGET_SIZE = 20_000
URL = "http://127.0.0.1:1/api/v1"


# -- data ---------------------------------------------------------------------------------


def generate(root: Path, count: int) -> None:
    """Write ``count`` tiny calculation folders, 100 per batch directory."""
    from nomad_bulk.samples import aims_out

    aims = aims_out(1).encode()
    control = b"xc  pbe\ncharge  0.0\n"
    batch = ""
    for n in range(count):
        if n % 100 == 0:
            batch = os.path.join(root, f"batch-{n // 100 + 1:05d}")
            os.makedirs(batch)
        folder = os.path.join(batch, f"DFT-{n + 1}")
        os.mkdir(folder)
        for name, data in (("aims.out", aims), ("control.in", control)):
            fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)


# -- the measured steps (each in a fresh process) ----------------------------------------


def _rss_mib() -> float:
    import resource

    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _identity(root: Path) -> Any:
    from nomad_bulk.engine import RunOptions
    from nomad_bulk.journal import RunIdentity

    options = RunOptions(per_upload=True)
    return RunIdentity(
        root=str(root),
        url=URL,
        per_upload=True,
        max_upload_size=options.max_upload_size,
        max_per_upload=None,
        pattern=None,
    )


def step_plan(root: Path) -> dict[str, Any]:
    """Discover and group, writing nothing."""
    from nomad_bulk.packing import discover, group_calculations

    baseline = _rss_mib()
    t0 = time.perf_counter()
    calculations = groups = 0

    def counted() -> Any:
        nonlocal calculations
        for calc in discover(root):
            calculations += 1
            yield calc

    for _ in group_calculations(counted(), per_upload=True, max_upload_size=10 * 1024**3):
        groups += 1
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "calculations": calculations,
        "groups": groups,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": _rss_mib(),
    }


def step_journal(root: Path, journal_path: Path) -> dict[str, Any]:
    """The run's planning pass into a journal file."""
    from nomad_bulk.engine import RunOptions
    from nomad_bulk.engine.plan import plan_into_journal
    from nomad_bulk.journal import Journal

    baseline = _rss_mib()
    t0 = time.perf_counter()
    journal = Journal.open(journal_path, identity=_identity(root))
    counts = plan_into_journal(journal, root, RunOptions(per_upload=True), commit=True)
    groups = sum(1 for _ in journal.iter_groups())
    journal.close()
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "calculations": counts.calculations,
        "groups": groups,
        "journal_mib": journal_path.stat().st_size / 2**20,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": _rss_mib(),
    }


def step_manifest(root: Path, journal_path: Path, manifest_path: Path) -> dict[str, Any]:
    """Take every upload through a run's transitions, then build the report and manifest."""
    import hashlib

    from nomad_bulk.engine import Metadata, Plan, RunReport, manifest_data, write_manifest
    from nomad_bulk.engine.report import build_items
    from nomad_bulk.journal import Journal

    baseline = _rss_mib()
    journal = Journal.open(journal_path, identity=_identity(root))
    metadata = Metadata(dataset_id="D" * 22)
    t0 = time.perf_counter()
    transitions = 0
    last = 0
    while True:
        batch = journal.groups_after(last, 256)
        if not batch:
            break
        for group in batch:
            last = group.seq
            records = journal.group_items(group.seq)
            digest = hashlib.sha256(group.key.encode()).hexdigest()
            upload_id = digest[:22]
            mainfiles = {i.key: tuple(i.calc.get("mainfiles") or ()) for i in records}
            journal.set_intent(
                group.seq,
                file_name=f"{group.key}.zip",
                sha256=digest,
                packed_size=group.size,
                mainfiles=mainfiles,
            )
            journal.set_uploaded(group.seq, upload_id)
            journal.set_verified(group.seq, {i.key: (digest[22:50],) for i in records})
            journal.set_described(group.seq, metadata.digest)
            journal.set_publishing(group.seq)
            journal.set_published(group.seq)
            transitions += 6
    transition_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    items = build_items(journal, publish=True, metadata=metadata)
    plan = Plan(
        root=root,
        url=URL,
        journal_path=journal_path,
        publish=True,
        per_upload=True,
        max_upload_size=10 * 1024**3,
        max_per_upload=None,
        calculations=len(items),
        skipped=(),
        groups_total=last,
        groups_done=0,
        groups_new=last,
        groups_resumed=0,
        groups_retried=0,
        items_to_run=len(items),
        bytes_to_send=0,
        dataset_name="benchmark",
        dataset_id=metadata.dataset_id,
    )
    report = RunReport(plan=plan, items=items, dataset_id=metadata.dataset_id)
    write_manifest(manifest_path, manifest_data(report))
    manifest_seconds = time.perf_counter() - t1
    journal.close()
    published = report.counts["published"]
    return {
        "transitions": transitions,
        "transition_seconds": transition_seconds,
        "transition_us_each": 1e6 * transition_seconds / max(1, transitions),
        "seconds": manifest_seconds,
        "published": published,
        "manifest_mib": manifest_path.stat().st_size / 2**20,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": _rss_mib(),
    }


def _child(argv: list[str]) -> int:
    step, *paths = argv
    args = [Path(p) for p in paths]
    if step == "plan":
        result = step_plan(args[0])
    elif step == "journal":
        result = step_journal(args[0], args[1])
    elif step == "manifest":
        result = step_manifest(args[0], args[1], args[2])
    else:
        raise SystemExit(f"unknown step {step!r}")
    print(json.dumps(result))
    return 0


def _run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"step {args[0]} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(size: int, data_dir: Path | None, work_dir: Path) -> dict[str, Any]:
    """Generate ``size`` folders and measure the three steps on them."""
    with tempfile.TemporaryDirectory(prefix="nb-scale-", dir=data_dir) as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        t0 = time.perf_counter()
        generate(root, size)
        generated = time.perf_counter() - t0
        journal = work_dir / f"journal-{size}.sqlite"
        manifest = work_dir / f"PIDs-{size}.json"
        plan = _run_child("plan", str(root))
        written = _run_child("journal", str(root), str(journal))
        final = _run_child("manifest", str(root), str(journal), str(manifest))
        for path in (journal, Path(f"{journal}-wal"), Path(f"{journal}-shm"), manifest):
            path.unlink(missing_ok=True)
    if plan["calculations"] != size or written["groups"] != size or final["published"] != size:
        raise RuntimeError(f"counts differ from {size}: {plan}, {written}, {final}")
    total = written["seconds"] + final["seconds"]
    peak = max(plan["peak_rss_mib"], written["peak_rss_mib"], final["peak_rss_mib"])
    baseline = min(plan["baseline_rss_mib"], written["baseline_rss_mib"], final["baseline_rss_mib"])
    return {
        "folders": size,
        "generate_seconds": round(generated, 2),
        "plan_seconds": round(plan["seconds"], 3),
        "journal_seconds": round(written["seconds"], 3),
        "journal_rows_seconds": round(written["seconds"] - plan["seconds"], 3),
        "manifest_seconds": round(final["seconds"], 3),
        "total_seconds": round(total, 3),
        "us_per_folder": round(1e6 * total / size, 1),
        "transition_seconds": round(final["transition_seconds"], 3),
        "transition_us_each": round(final["transition_us_each"], 1),
        "peak_rss_mib": {
            "plan": round(plan["peak_rss_mib"], 1),
            "journal": round(written["peak_rss_mib"], 1),
            "manifest": round(final["peak_rss_mib"], 1),
        },
        "max_peak_rss_mib": round(peak, 1),
        "baseline_rss_mib": round(baseline, 1),
        "rss_above_baseline_mib": round(peak - baseline, 1),
        "journal_mib": round(written["journal_mib"], 2),
        "manifest_mib": round(final["manifest_mib"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure every size, print one line per figure and write the JSON."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 and 1,000 folders (CI)")
    parser.add_argument("--sizes", type=int, nargs="+", help="folder counts (default 20000 100000)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where folders are generated (default /dev/shm if present, else the temp dir)",
    )
    parser.add_argument("--output", type=Path, help="JSON path")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([200, 1_000] if args.quick else [TARGET_SIZE, 100_000])
    data_dir = args.data_dir
    if data_dir is None and Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        data_dir = Path("/dev/shm")
    result: dict[str, Any] = {
        "benchmark": "scale",
        "quick": args.quick,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "data_dir": str(data_dir or tempfile.gettempdir()),
        "journal_dir": tempfile.gettempdir(),
        "mode": "one upload per folder",
        "targets": {"seconds_at_20000": TARGET_SECONDS, "peak_rss_mib_at_20000": TARGET_RSS_MIB},
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="nb-scale-work-") as work:
        for size in sizes:
            row = measure(size, data_dir, Path(work))
            result["sizes"].append(row)
            print(
                f"{size} folders: plan {row['plan_seconds']} s, plan+journal "
                f"{row['journal_seconds']} s (journal rows {row['journal_rows_seconds']} s), "
                f"manifest {row['manifest_seconds']} s; total {row['total_seconds']} s "
                f"({row['us_per_folder']} us/folder); peak RSS {row['max_peak_rss_mib']} MiB "
                f"(baseline {row['baseline_rss_mib']}); run transitions "
                f"{row['transition_us_each']} us each",
                flush=True,
            )
    rows = result["sizes"]
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        factor = large["folders"] / small["folders"]
        time_ratio = large["total_seconds"] / small["total_seconds"]
        memory_ratio = large["rss_above_baseline_mib"] / max(0.1, small["rss_above_baseline_mib"])
        result["growth"] = {
            "sizes": [small["folders"], large["folders"]],
            "linear_ratio": factor,
            "time_ratio": round(time_ratio, 2),
            "memory_above_baseline_ratio": round(memory_ratio, 2),
            "peak_rss_ratio": round(large["max_peak_rss_mib"] / small["max_peak_rss_mib"], 2),
        }
        print(
            f"growth {large['folders']}/{small['folders']} (linear = {factor:g}): time "
            f"x{time_ratio:.2f}, memory above baseline x{memory_ratio:.2f}"
        )
    at_target = next((r for r in rows if r["folders"] == TARGET_SIZE), None)
    if at_target is not None:
        met = {
            "seconds_at_20000": at_target["total_seconds"] < TARGET_SECONDS,
            "peak_rss_at_20000": at_target["max_peak_rss_mib"] < TARGET_RSS_MIB,
        }
        result["targets_met"] = met
        print(
            f"at 20,000: {at_target['total_seconds']} s (target < {TARGET_SECONDS:g} s), "
            f"peak RSS {at_target['max_peak_rss_mib']} MiB (target < {TARGET_RSS_MIB:g} MiB)"
        )
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out = args.output or RESULTS / ("scale-quick.json" if args.quick else "scale.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Smoke tests of the benchmarks: each runs at its CI size and writes its JSON.

Every benchmark script is copied with its helpers into a temporary directory
and run there as a subprocess, so the results land in that directory's
``results/`` and never overwrite the measured figures in ``benchmarks/results``.
Only the exit status and the JSON's shape are checked, never a timing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

#: script, extra arguments, results file, keys the JSON must hold. pipeline_engine's
#: --quick is shrunk further (its own quick size takes about 20 s on two cores).
CASES: list[tuple[str, tuple[str, ...], str, tuple[str, ...]]] = [
    (
        "pipeline.py",
        ("--quick",),
        "pipeline-quick.json",
        ("variants", "speedups", "targets_met", "ideal_seconds", "model", "all_ok"),
    ),
    (
        "scale.py",
        ("--quick",),
        "scale-quick.json",
        ("sizes", "growth", "targets"),
    ),
    (
        "client_overhead.py",
        ("--quick",),
        "client_overhead-quick.json",
        ("client_polls_per_s", "bare_polls_per_s", "ratio", "client_cpu_us_per_poll"),
    ),
    (
        "transfer.py",
        ("--quick",),
        "transfer-quick.json",
        ("client_mib_per_s", "aiohttp_mib_per_s", "ratio_client_vs_aiohttp", "client_peak_rss_mib"),
    ),
    (
        "packing.py",
        ("--quick",),
        "packing-quick.json",
        ("speedup", "pack_single_thread", "pack_threads", "discovery"),
    ),
    (
        "pipeline_engine.py",
        ("--quick", "--folders", "10", "--processing-time", "0.1", "--plan-folders", "300"),
        "pipeline_engine-quick.json",
        ("pipeline", "planning_memory"),
    ),
    (
        "server_load.py",
        ("--quick",),
        "server_load-quick.json",
        ("polls", "poll_seconds", "upload_throughput_mb_s", "rss_peak_mb"),
    ),
    (
        "chaos.py",
        ("--quick",),
        "chaos-quick.json",
        ("fault_free", "chaos", "time_ratio", "crash"),
    ),
]


def _run(tmp_path: Path, script: str, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    for source in BENCHMARKS.glob("*.py"):
        shutil.copy(source, tmp_path / source.name)
    return subprocess.run(
        [sys.executable, str(tmp_path / script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _check_pipeline(data: dict[str, Any], stdout: str) -> None:
    variants = data["variants"]
    assert set(variants) == {"a", "b", "c", "d"}
    folders = data["folders"]
    for key in ("c", "d"):
        run = variants[key]
        assert run["ok"] and run["published"] == folders
        assert run["entries_in_dataset"] == folders
        assert run["efficiency"] > 0 and run["requests_per_folder"] > 0
    assert variants["d"]["uploads"] < variants["c"]["uploads"] == folders
    for key in ("a", "b"):
        assert variants[key]["ok"] and variants[key]["extrapolated"]
        assert variants[key]["folders_measured"] < folders
    assert set(data["speedups"]) == {"c_over_a", "c_over_b", "d_over_a", "d_over_b"}
    assert "extrapolated" in stdout


def _check_scale(data: dict[str, Any], stdout: str) -> None:
    sizes = [row["folders"] for row in data["sizes"]]
    assert sizes == [200, 1000]
    for row in data["sizes"]:
        assert row["total_seconds"] > 0 and row["max_peak_rss_mib"] > 0
    assert data["growth"]["linear_ratio"] == 5


def _check_chaos(data: dict[str, Any], stdout: str) -> None:
    audit = data["chaos"]["audit"]
    assert data["chaos"]["faults_total"] > 0
    for key in ("duplicates", "lost", "wrongly_published"):
        assert audit[key] == 0, (key, audit)
    assert data["crash"]["duplicates"] == 0 and data["crash"]["all_match"]
    assert "duplicates = 0" in stdout


CHECKS = {"pipeline.py": _check_pipeline, "scale.py": _check_scale, "chaos.py": _check_chaos}


@pytest.mark.parametrize(("script", "args", "result", "keys"), CASES, ids=[c[0] for c in CASES])
def test_benchmark_runs_quick_and_writes_json(
    tmp_path: Path, script: str, args: tuple[str, ...], result: str, keys: tuple[str, ...]
) -> None:
    """The benchmark exits 0 at its CI size and writes its JSON with the documented keys
    (for pipeline and scale: every variant and size ran to the end)."""
    done = _run(tmp_path, script, args)
    assert done.returncode == 0, done.stdout + done.stderr
    data = _load(tmp_path / "results" / result)
    assert set(keys) <= set(data), sorted(data)
    assert done.stdout.strip(), "a benchmark prints one summary line per figure"
    check = CHECKS.get(script)
    if check is not None:
        check(data, done.stdout)

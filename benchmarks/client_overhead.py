"""Overhead of NomadClient: status polls per second against a bare aiohttp loop.

Starts the local server in a child process, creates one processed upload and
then, in this one process and with the same concurrency, polls
``GET /uploads/{id}`` for a fixed time with (a) ``NomadClient.get_upload`` and
(b) a bare aiohttp loop that sends the same request and parses the JSON.
Rounds alternate the order. Prints the median of the per-round ratios
client/bare (target >= 0.8) and the CPU time per poll of each, and writes
``benchmarks/results/client_overhead.json``.

    .venv/bin/python benchmarks/client_overhead.py [--seconds 1] [--rounds 12] [--concurrency 8]
    .venv/bin/python benchmarks/client_overhead.py --quick    # CI smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
from _server import ServerProcess

from nomad_bulk.client import NomadClient, RetryPolicy
from nomad_bulk.config import Secret, Settings

RESULTS = Path(__file__).parent / "results" / "client_overhead.json"


async def _loop_client(nomad: NomadClient, upload_id: str, seconds: float, workers: int) -> int:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await nomad.get_upload(upload_id)
            done += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done


async def _loop_bare(
    session: aiohttp.ClientSession, url: str, token: str, seconds: float, workers: int
) -> int:
    done = 0
    stop = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            async with session.get(url, headers=headers) as response:
                response.raise_for_status()
                await response.json()
            done += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done


async def run(seconds: float, rounds: int, workers: int) -> dict[str, Any]:
    """Measure both loops against one server and return the figures."""
    with ServerProcess() as server, tempfile.TemporaryDirectory() as tmp:
        settings = Settings(url=server.url, username="test1", password=Secret("password"))
        archive = Path(tmp) / "calc.zip"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zipped:
            zipped.writestr("calc/aims.out", "  Invoking FHI-aims ...\n")
        archive.write_bytes(buffer.getvalue())

        async with NomadClient(settings, retry=RetryPolicy(max_attempts=3)) as nomad:
            upload = await nomad.create_upload(archive, upload_name="overhead")
            await nomad.wait_for_process(upload.upload_id, initial_wait=0.01)
            token = nomad._http.auth  # the bare loop reuses the client's login
            current = await token.current()
            if current is None:
                raise RuntimeError("no token")
            bearer = current.value.get()
            url = f"{server.url}/uploads/{upload.upload_id}"
            connector = aiohttp.TCPConnector(limit=settings.max_connections)
            async with aiohttp.ClientSession(connector=connector) as session:
                await _loop_bare(session, url, bearer, 0.5, workers)  # warm-up
                await _loop_client(nomad, upload.upload_id, 0.5, workers)
                client_rates: list[float] = []
                bare_rates: list[float] = []
                client_cpu: list[float] = []
                bare_cpu: list[float] = []
                for i in range(rounds):
                    order = ("bare", "client") if i % 2 == 0 else ("client", "bare")
                    for which in order:
                        cpu = time.process_time()
                        if which == "bare":
                            n = await _loop_bare(session, url, bearer, seconds, workers)
                            bare_rates.append(n / seconds)
                            bare_cpu.append((time.process_time() - cpu) / max(n, 1))
                        else:
                            n = await _loop_client(nomad, upload.upload_id, seconds, workers)
                            client_rates.append(n / seconds)
                            client_cpu.append((time.process_time() - cpu) / max(n, 1))
            retries = nomad.stats.retries
    # Each round pairs the two loops back to back, so load from other processes
    # hits both alike; the median of the per-round ratios resists outliers.
    ratios = [c / b for c, b in zip(client_rates, bare_rates, strict=True)]
    ratio = statistics.median(ratios)
    return {
        "benchmark": "client_overhead",
        "what": "GET /uploads/{id} polls per second, same process, same concurrency",
        "seconds_per_round": seconds,
        "rounds": rounds,
        "concurrency": workers,
        "client_polls_per_s": round(statistics.fmean(client_rates), 1),
        "bare_polls_per_s": round(statistics.fmean(bare_rates), 1),
        "ratio": round(ratio, 3),
        "ratio_of_means": round(statistics.fmean(client_rates) / statistics.fmean(bare_rates), 3),
        "round_ratios": [round(r, 3) for r in ratios],
        "client_cpu_us_per_poll": round(statistics.median(client_cpu) * 1e6, 1),
        "bare_cpu_us_per_poll": round(statistics.median(bare_cpu) * 1e6, 1),
        "target_ratio": 0.8,
        "client_retries": retries,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each timed run")
    parser.add_argument("--rounds", type=int, default=12, help="alternating rounds per loop")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent pollers")
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke run: 2 rounds of 0.2 s, own JSON file"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 0.2, 2
    result = asyncio.run(run(args.seconds, args.rounds, args.concurrency))
    result["quick"] = args.quick
    out = RESULTS.with_name("client_overhead-quick.json") if args.quick else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"NomadClient {result['client_polls_per_s']:.0f} polls/s, "
        f"bare aiohttp {result['bare_polls_per_s']:.0f} polls/s, "
        f"median ratio {result['ratio']:.3f} (target >= 0.8); CPU per poll "
        f"{result['client_cpu_us_per_poll']:.0f} us vs {result['bare_cpu_us_per_poll']:.0f} us"
    )
    print(f"wrote {out}")
    # A quick run only smoke-tests: its few short rounds are noise, not a measurement.
    return 0 if args.quick or result["ratio"] >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())

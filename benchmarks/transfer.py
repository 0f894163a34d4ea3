"""Streamed upload of one large file: NomadClient vs bare aiohttp (and curl).

Starts the local server in a child process, writes one test file (default
2 GiB; ``--size`` in MiB, ``--quick`` = 64 MiB) and sends it as the raw body of
``POST /uploads`` three ways, each in a fresh process: ``NomadClient.create_upload``,
a bare aiohttp streamed POST (aiofiles generator) and ``curl -T`` if curl exists.
Reports throughput, the ratio client/aiohttp (target >= 0.8) and the client
process's peak RSS (target < 100 MiB, sampled with psutil), and writes
``benchmarks/results/transfer.json`` (``transfer-quick.json`` with ``--quick``).

The local server writes every body to disk, 256 KiB at a time through a worker
thread, and that is what bounds these transfers. ``--sink`` sends to a bare
aiohttp endpoint that reads and discards the body instead, which measures what
each sender can do when the receiver is not the bottleneck (results in
``transfer-sink.json``).

    .venv/bin/python benchmarks/transfer.py [--quick | --size MIB] [--repeat N] [--sink]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from _server import ServerProcess

RESULTS = Path(__file__).parent / "results" / "transfer.json"
MIB = 1024 * 1024
CHUNK = MIB


class PeakRss:
    """Samples this process's RSS from a thread every few milliseconds."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.baseline = int(self._process.memory_info().rss)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, int(self._process.memory_info().rss))
            self._stop.wait(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, int(self._process.memory_info().rss))


# -- workers (each runs in its own process) ------------------------------------------------


async def _send_with_client(url: str, path: Path, name: str) -> dict[str, Any]:
    from nomad_bulk.client import NomadClient, RetryPolicy
    from nomad_bulk.config import Secret, Settings

    settings = Settings(url=url, token=Secret(os.environ["NOMAD_BULK_BENCH_TOKEN"]))
    sent = 0

    def progress(done: int, total: int) -> None:
        nonlocal sent
        sent = done

    async with NomadClient(settings, retry=RetryPolicy.no_retries()) as nomad:
        with PeakRss() as rss:
            start = time.perf_counter()
            upload = await nomad.create_upload(
                path, file_name=name, upload_name=name, on_progress=progress
            )
            seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "upload_id": upload.upload_id,
        "bytes_reported": sent,
        "rss_baseline": rss.baseline,
        "rss_peak": rss.peak,
    }


async def _send_with_aiohttp(url: str, path: Path, name: str) -> dict[str, Any]:
    import aiofiles
    import aiofiles.os
    import aiohttp

    token = os.environ["NOMAD_BULK_BENCH_TOKEN"]
    size = (await aiofiles.os.stat(path)).st_size

    async def body() -> Any:
        async with aiofiles.open(path, "rb") as handle:
            while chunk := await handle.read(CHUNK):
                yield chunk

    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "Content-Type": "application/octet-stream",
        "Content-Length": str(size),
    }
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with PeakRss() as rss:
            start = time.perf_counter()
            async with session.post(
                f"{url}/uploads",
                params={"file_name": name, "upload_name": name},
                data=body(),
                headers=headers,
            ) as response:
                response.raise_for_status()
                data = await response.json()
            seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "upload_id": data["upload_id"],
        "rss_baseline": rss.baseline,
        "rss_peak": rss.peak,
    }


def worker(kind: str, url: str, path: Path, name: str) -> int:
    """Run one transfer in this process and print its figures as JSON."""
    runner = _send_with_client if kind == "client" else _send_with_aiohttp
    result = asyncio.run(runner(url, path, name))
    result["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))
    return 0


# -- the discarding endpoint (--sink) ------------------------------------------------------


def _sink_child(conn: Any) -> None:
    from aiohttp import web

    async def upload(request: web.Request) -> web.Response:
        async for _ in request.content.iter_any():
            pass
        upload_id = os.urandom(8).hex()
        name = request.query.get("upload_name", "")
        return web.json_response(
            {"upload_id": upload_id, "data": {"upload_id": upload_id, "upload_name": name}}
        )

    async def main() -> None:
        app = web.Application(client_max_size=1 << 40)
        app.router.add_post("/api/v1/uploads", upload)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        conn.send(f"http://127.0.0.1:{port}/api/v1")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        await runner.cleanup()

    asyncio.run(main())


class SinkProcess:
    """An endpoint that reads and discards upload bodies, in its own process."""

    def __init__(self) -> None:
        self._conn: Any = None
        self._proc: Any = None
        self.url = ""

    def __enter__(self) -> SinkProcess:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_sink_child, args=(child,), daemon=True)
        self._proc.start()
        if not self._conn.poll(60):
            raise RuntimeError("the sink did not start within 60 s")
        self.url = self._conn.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


# -- orchestration -------------------------------------------------------------------------


def _write_file(path: Path, size: int) -> None:
    block = os.urandom(CHUNK)  # incompressible, so no layer can cheat
    with path.open("wb") as handle:
        left = size
        while left > 0:
            handle.write(block[: min(left, CHUNK)])
            left -= CHUNK


def _login(url: str) -> str:
    from nomad_bulk.client import NomadClient
    from nomad_bulk.config import Secret, Settings

    async def get() -> str:
        settings = Settings(url=url, username="test1", password=Secret("password"))
        async with NomadClient(settings) as nomad:
            return (await nomad.create_app_token(86400)).get()

    return asyncio.run(get())


def _delete(url: str, token: str, upload_id: str) -> None:
    from nomad_bulk.client import NomadClient
    from nomad_bulk.config import Secret, Settings

    async def run() -> None:
        async with NomadClient(Settings(url=url, token=Secret(token))) as nomad:
            await nomad.wait_for_process(upload_id, raise_on_failure=False, initial_wait=0.05)
            await nomad.delete_upload(upload_id, timeout=600)

    asyncio.run(run())


def _run_worker(kind: str, url: str, path: Path, name: str, env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", kind, "--url", url, "--file", str(path)]
    command += ["--name", name]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _run_curl(url: str, path: Path, name: str, token: str, tmp: Path) -> dict[str, Any] | None:
    curl = shutil.which("curl")
    if curl is None:
        return None
    header_file = tmp / "auth.header"
    header_file.write_text(f"Authorization: Bearer {token}\n", encoding="utf-8")
    header_file.chmod(0o600)
    command = [
        curl,
        "-sS",
        "--fail",
        "-X",
        "POST",
        "-T",
        str(path),
        "-H",
        f"@{header_file}",  # the token never goes on the command line
        "-H",
        "Accept: application/json",
        "-H",
        "Content-Type: application/octet-stream",
        "-H",
        "Expect:",
        f"{url}/uploads?file_name={name}&upload_name={name}",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    header_file.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"curl failed: {done.stderr[-500:]}")
    return {"seconds": seconds, "upload_id": json.loads(done.stdout)["upload_id"]}


def run(size: int, repeat: int, *, sink: bool = False) -> dict[str, Any]:
    """Send the file with each method ``repeat`` times and collect the figures."""
    receiver: SinkProcess | ServerProcess = (
        SinkProcess() if sink else ServerProcess(max_upload_size=64 * 1024**3, upload_limit=1000)
    )
    with tempfile.TemporaryDirectory(prefix="nomad-bulk-transfer-") as tmp_name, receiver as server:
        tmp = Path(tmp_name)
        path = tmp / "payload.bin"
        _write_file(path, size)
        token = "sink-accepts-any-token" if sink else _login(server.url)
        load_before = [round(x, 2) for x in os.getloadavg()]
        env = {**os.environ, "NOMAD_BULK_BENCH_TOKEN": token}
        runs: dict[str, list[dict[str, Any]]] = {"client": [], "aiohttp": [], "curl": []}
        for i in range(repeat):
            for kind in ("client", "aiohttp", "curl"):
                name = f"{kind}-{i}.bin"
                if kind == "curl":
                    result = _run_curl(server.url, path, name, token, tmp)
                    if result is None:
                        continue
                else:
                    result = _run_worker(kind, server.url, path, name, env)
                result["mib_per_s"] = size / MIB / result["seconds"]
                runs[kind].append(result)
                if not sink:
                    _delete(server.url, token, result["upload_id"])
                print(f"{kind:8s} {result['mib_per_s']:8.1f} MiB/s", flush=True)
        load_after = [round(x, 2) for x in os.getloadavg()]

    def best(kind: str) -> float:
        return max(r["mib_per_s"] for r in runs[kind]) if runs[kind] else 0.0

    def median(kind: str) -> float:
        return statistics.median(r["mib_per_s"] for r in runs[kind]) if runs[kind] else 0.0

    peak = max(r["rss_peak"] for r in runs["client"])
    return {
        "benchmark": "transfer",
        "what": "one raw-body POST /uploads of a file streamed from disk, "
        + ("to an endpoint that discards it (--sink)" if sink else "to the local server"),
        "receiver": "sink" if sink else "local server",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "size_bytes": size,
        "repeat": repeat,
        "client_mib_per_s": round(median("client"), 1),
        "aiohttp_mib_per_s": round(median("aiohttp"), 1),
        "curl_mib_per_s": round(median("curl"), 1) if runs["curl"] else None,
        "ratio_client_vs_aiohttp": round(median("client") / median("aiohttp"), 3),
        "ratio_client_vs_curl": round(median("client") / median("curl"), 3)
        if runs["curl"]
        else None,
        "target_ratio": 0.8,
        "client_peak_rss_mib": round(peak / MIB, 1),
        "client_rss_baseline_mib": round(max(r["rss_baseline"] for r in runs["client"]) / MIB, 1),
        "client_ru_maxrss_mib": round(max(r["ru_maxrss"] for r in runs["client"]) / MIB, 1),
        "aiohttp_peak_rss_mib": round(max(r["rss_peak"] for r in runs["aiohttp"]) / MIB, 1),
        "target_peak_rss_mib": 100,
        "client_progress_complete": all(r.get("bytes_reported") == size for r in runs["client"]),
        "runs": {k: [round(r["mib_per_s"], 1) for r in v] for k, v in runs.items()},
        "best_mib_per_s": {k: round(best(k), 1) for k in runs},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark (or one worker) and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="file size in MiB (default 2048)")
    parser.add_argument("--quick", action="store_true", help="64 MiB instead of --size")
    parser.add_argument("--repeat", type=int, default=1, help="transfers per method")
    parser.add_argument(
        "--sink", action="store_true", help="send to an endpoint that discards the body"
    )
    parser.add_argument("--worker", choices=("client", "aiohttp"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.url, args.file, args.name)
    size = (64 if args.quick else args.size) * MIB
    result = run(size, max(1, args.repeat), sink=args.sink)
    result["quick"] = args.quick
    name = "transfer-sink" if args.sink else "transfer"
    out = RESULTS.with_name(f"{name}-quick.json" if args.quick else f"{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"{size // MIB} MiB: NomadClient {result['client_mib_per_s']} MiB/s, "
        f"aiohttp {result['aiohttp_mib_per_s']} MiB/s, curl {result['curl_mib_per_s']} MiB/s; "
        f"ratio {result['ratio_client_vs_aiohttp']} (target >= 0.8); "
        f"client peak RSS {result['client_peak_rss_mib']} MiB (target < 100)"
    )
    print(f"wrote {out}")
    # A quick run only smoke-tests: 64 MiB transfers are too short to measure a ratio.
    ok = result["ratio_client_vs_aiohttp"] >= 0.8 and result["client_peak_rss_mib"] < 100
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())

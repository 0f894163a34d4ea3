"""Load benchmark of the local server: many concurrent status polls and large uploads.

Starts ``nomad-bulk serve`` in a subprocess (so its memory can be measured with
psutil), then runs 1,000 concurrent ``GET /uploads/{id}`` polls and 50 concurrent
100 MB raw-body uploads. Prints summary lines and writes
``benchmarks/results/server_load.json``. ``--quick`` uses small sizes (and writes
``server_load-quick.json``).

    .venv/bin/python benchmarks/server_load.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]

RESULTS = Path(__file__).parent / "results" / "server_load.json"
MB = 1024 * 1024


class RssSampler:
    """Samples a process's RSS every few milliseconds and keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def rss(self) -> int:
        """Current RSS in bytes."""
        value = int(self.process.memory_info().rss)
        self.peak = max(self.peak, value)
        return value

    async def _run(self) -> None:
        while True:
            self.rss()
            await asyncio.sleep(0.02)

    def start(self) -> None:
        """Start sampling in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


async def _body(path: Path, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:  # noqa: ASYNC230 - the benchmark client, not the server
        while data := f.read(chunk):
            yield data


async def _wait_idle(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> str:
    while True:
        async with session.get(url, headers=headers) as resp:
            data = (await resp.json())["data"]
        if not data["process_running"]:
            return str(data["process_status"])
        await asyncio.sleep(0.05)


async def run(polls: int, uploads: int, upload_mb: int) -> dict[str, Any]:
    """Run the benchmark and return the figures."""
    tmp = Path(tempfile.mkdtemp(prefix="server-load-"))
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
        [
            sys.executable,
            "-m",
            "nomad_bulk",
            "serve",
            "--port",
            "0",
            "--processing-time",
            "0",
            "--data-dir",
            str(tmp / "data"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().removeprefix("NOMAD API at ")
        sampler = RssSampler(proc.pid)
        connector = aiohttp.TCPConnector(limit=max(polls, uploads) + 10)
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async with session.post(
                f"{url}/auth/token", data={"username": "admin", "password": "password"}
            ) as resp:
                token = (await resp.json())["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            async with session.post(
                f"{url}/uploads?file_name=small.txt",
                data=b"hello",
                headers={**auth, "Accept": "application/json"},
            ) as resp:
                upload_id = (await resp.json())["upload_id"]
            await _wait_idle(session, f"{url}/uploads/{upload_id}", auth)
            rss_before = sampler.rss()
            sampler.peak = rss_before
            sampler.start()

            async def poll() -> bool:
                try:
                    async with session.get(f"{url}/uploads/{upload_id}", headers=auth) as r:
                        await r.read()
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            started = time.perf_counter()
            poll_ok = await asyncio.gather(*(poll() for _ in range(polls)))
            poll_seconds = time.perf_counter() - started
            rss_after_polls = sampler.rss()

            payload = tmp / "payload.bin"
            block = os.urandom(MB)
            with open(payload, "wb") as f:  # noqa: ASYNC230 - setup, before any load
                for _ in range(upload_mb):
                    f.write(block)

            async def upload(i: int) -> bool:
                try:
                    async with session.post(
                        f"{url}/uploads",
                        params={"file_name": f"data{i}.bin", "upload_name": f"load-{i}"},
                        data=_body(payload),
                        headers={**auth, "Accept": "application/json"},
                    ) as r:
                        if r.status != 200:
                            return False
                        new_id = (await r.json())["upload_id"]
                    status = await _wait_idle(session, f"{url}/uploads/{new_id}", auth)
                    return status == "SUCCESS"
                except aiohttp.ClientError:
                    return False

            started = time.perf_counter()
            upload_ok = await asyncio.gather(*(upload(i) for i in range(uploads)))
            upload_seconds = time.perf_counter() - started
            await sampler.stop()
            rss_after = sampler.rss()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "polls": polls,
        "poll_errors": polls - sum(poll_ok),
        "poll_seconds": round(poll_seconds, 3),
        "uploads": uploads,
        "upload_mb": upload_mb,
        "upload_errors": uploads - sum(upload_ok),
        "upload_seconds": round(upload_seconds, 3),
        "upload_throughput_mb_s": round(uploads * upload_mb / upload_seconds, 1),
        "rss_before_mb": round(rss_before / MB, 1),
        "rss_after_polls_mb": round(rss_after_polls / MB, 1),
        "rss_after_mb": round(rss_after / MB, 1),
        "rss_peak_mb": round(sampler.peak / MB, 1),
    }


def main() -> None:
    """Parse options, run, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 polls, 5 uploads of 5 MB")
    parser.add_argument("--polls", type=int, default=None)
    parser.add_argument("--uploads", type=int, default=None)
    parser.add_argument("--upload-mb", type=int, default=None)
    args = parser.parse_args()
    polls = args.polls or (100 if args.quick else 1000)
    uploads = args.uploads or (5 if args.quick else 50)
    upload_mb = args.upload_mb or (5 if args.quick else 100)
    figures = asyncio.run(run(polls, uploads, upload_mb))
    figures["quick"] = args.quick
    print(
        f"polls: {figures['polls']} concurrent, errors={figures['poll_errors']}, "
        f"{figures['poll_seconds']} s"
    )
    print(
        f"uploads: {figures['uploads']} x {figures['upload_mb']} MB concurrent, "
        f"errors={figures['upload_errors']}, {figures['upload_seconds']} s "
        f"({figures['upload_throughput_mb_s']} MB/s)"
    )
    print(
        f"server RSS: before={figures['rss_before_mb']} MB, "
        f"after polls={figures['rss_after_polls_mb']} MB, after={figures['rss_after_mb']} MB, "
        f"peak={figures['rss_peak_mb']} MB"
    )
    out = RESULTS.with_name("server_load-quick.json") if args.quick else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()

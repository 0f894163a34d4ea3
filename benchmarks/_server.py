"""Run the local NOMAD server in a child process, so that benchmarks measure the client alone.

The child answers simple commands over a pipe: ``"stats"`` (request counters by route and
status, fault counters, and a summary of every upload with its creation and publish times),
``"restart"`` and ``"stop"``. Used as a context manager::

    with ServerProcess(processing_time=1.0, latency=0.02) as server:
        server.url; server.stats()
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.connection import Connection
from typing import Any

import anyio


def _epoch(value: Any) -> float | None:
    return None if value is None else float(value.timestamp())


def _summary(srv: Any) -> dict[str, Any]:
    state = srv.state
    uploads = [
        {
            "upload_id": u.upload_id,
            "upload_name": u.upload_name,
            "published": u.published,
            "process_status": u.process_status,
            "entries": len(u.entries),
            "failed_entries": sum(1 for e in u.entries if e.process_status == "FAILURE"),
            "entries_in_dataset": sum(1 for e in u.entries if e.datasets),
            # Wall-clock seconds (server clock = client clock on one machine): the slot
            # an upload holds runs from its creation to the end of its publishing.
            "created": _epoch(u.upload_create_time),
            # The last entry's end is (within a millisecond) the end of processing.
            "processed_at": max((_epoch(e.complete_time) or 0.0 for e in u.entries), default=None),
            "published_at": _epoch(u.publish_time),
        }
        for u in state.uploads()
    ]
    return {
        "requests": state.request_count,
        "by_route": dict(state.route_counts),
        "by_status": {str(k): v for k, v in state.status_counts.items()},
        "faults": dict(state.fault_counts),
        "uploads": uploads,
    }


def _child(conn: Connection, config_kwargs: dict[str, Any]) -> None:
    from nomad_bulk.server import ServerConfig, running_server

    async def main() -> None:
        async with running_server(ServerConfig(**config_kwargs)) as srv:
            conn.send(srv.url)
            while True:
                command = await anyio.to_thread.run_sync(conn.recv)
                if command == "stop":
                    break
                if command == "restart":
                    await srv.restart()
                    conn.send("ok")
                elif command == "stats":
                    conn.send(_summary(srv))

    anyio.run(main, backend="asyncio")


class ServerProcess:
    """A local NOMAD server running in its own process for the duration of a block."""

    def __init__(self, **config_kwargs: Any) -> None:
        self._kwargs = config_kwargs
        self._conn: Connection | None = None
        self._proc: Any = None
        self.url = ""

    def __enter__(self) -> ServerProcess:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child, self._kwargs), daemon=True)
        self._proc.start()
        self._conn = parent
        if not parent.poll(60):
            raise RuntimeError("the local server did not start within 60 s")
        self.url = parent.recv()
        return self

    @property
    def pid(self) -> int:
        """The server process's pid (for RSS measurements)."""
        return int(self._proc.pid)

    def stats(self) -> dict[str, Any]:
        """Request and fault counters and a summary of every upload on the server."""
        assert self._conn is not None
        self._conn.send("stats")
        result: dict[str, Any] = self._conn.recv()
        return result

    def restart(self) -> None:
        """Restart the server on the same port (state kept when a data_dir was given)."""
        assert self._conn is not None
        self._conn.send("restart")
        self._conn.recv()

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            try:
                self._conn.send("stop")
            except (BrokenPipeError, OSError):
                pass
        if self._proc is not None:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()

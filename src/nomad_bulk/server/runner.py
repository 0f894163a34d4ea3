"""Run the local server: :func:`running_server` and :class:`LocalServer`."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from .app import make_app
from .config import ServerConfig
from .state import ServerState

__all__ = ["LocalServer", "running_server"]


class LocalServer:
    """A started server: ``url``, ``state``, ``config`` and :meth:`restart`."""

    def __init__(self, config: ServerConfig, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._tmp: Path | None = None
        self._state: ServerState | None = None

    def __repr__(self) -> str:
        return f"LocalServer(url={self.url if self._runner else None!r})"

    @property
    def state(self) -> ServerState:
        """The running server's state (for assertions)."""
        if self._state is None:
            raise RuntimeError("the server is not running")
        return self._state

    @property
    def port(self) -> int:
        """The bound port."""
        return self._port

    @property
    def root_url(self) -> str:
        """``http://host:port`` without the API prefix."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:PORT/api/v1``."""
        return self.root_url + self.config.prefix

    def _root(self) -> Path:
        if self.config.data_dir is not None:
            return Path(self.config.data_dir)
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="nomad-bulk-server-"))
        return self._tmp

    async def start(self) -> None:
        """Load the state and start listening (port 0 picks a free port, kept on restart)."""
        if self._runner is not None:
            raise RuntimeError("the server is already running")
        root = self._root()
        if self.config.data_dir is None and self._tmp is not None:
            # Without a data_dir a (re)start begins empty, like an in-memory NOMAD.
            shutil.rmtree(root / "uploads", ignore_errors=True)
        state = ServerState(self.config, root)
        app = make_app(self.config, state)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        if self._port == 0:
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            for sock in sockets:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    self._port = int(sock.getsockname()[1])
                    break
        self._runner = runner
        self._state = state
        await state.start()

    async def stop(self) -> None:
        """Stop processing, save the state and close the listening socket."""
        runner, self._runner = self._runner, None
        if self._state is not None:
            await self._state.stop()
        if runner is not None:
            await runner.cleanup()

    async def restart(self) -> None:
        """Stop and start again on the same port (state reloaded from data_dir if set)."""
        await self.stop()
        await self.start()

    async def close(self) -> None:
        """Stop and remove the temporary directory (when no data_dir was given)."""
        await self.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


@asynccontextmanager
async def running_server(
    config: ServerConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[LocalServer]:
    """Run a local NOMAD server for the duration of the block (port 0: any free port)."""
    server = LocalServer(config or ServerConfig(), host=host, port=port)
    await server.start()
    try:
        yield server
    finally:
        await server.close()

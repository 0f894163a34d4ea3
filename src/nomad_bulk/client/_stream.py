"""Request bodies streamed from disk, and downloads streamed to disk.

Memory stays flat whatever the file size: one chunk is in flight at a time.
A :class:`FileBody` remembers how far each attempt got, so the request funnel
can tell "nothing of the body left this process" (safe to retry) from "the
whole body was sent and the answer was lost" (outcome unknown).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

import aiofiles
import aiofiles.os
from aiofiles.threadpool.binary import AsyncBufferedReader

__all__ = ["CHUNK_SIZE", "FileBody", "ProgressCallback"]

#: Bytes read from disk per step; large enough for throughput, small for memory.
#: 2 MiB costs about a fifth less CPU per byte sent than 1 MiB (fewer thread hops
#: and writes) for ~8 MiB more peak RSS; 4 MiB saves no more.
CHUNK_SIZE = 2 * 1024 * 1024

ProgressCallback = Callable[[int, int], None]


class FileBody:
    """A replayable request body: each :meth:`stream` call reads the file anew."""

    __slots__ = ("_on_progress", "chunk_size", "exhausted", "path", "sent", "size")

    def __init__(
        self,
        path: Path,
        size: int,
        *,
        on_progress: ProgressCallback | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.path = path
        self.size = size
        self.chunk_size = chunk_size
        self._on_progress = on_progress
        #: Bytes handed to the connection by the current attempt.
        self.sent = 0
        #: True once the current attempt handed the whole file to the connection.
        self.exhausted = False

    def reset(self) -> None:
        """Forget the progress of a previous attempt."""
        self.sent = 0
        self.exhausted = False

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[AsyncIterator[bytes]]:
        """Open the file for one attempt and give the chunk iterator for the request.

        The file is closed on exit even when the HTTP library abandoned the
        iterator half-way (an early error answer, a dropped connection).
        """
        self.reset()
        async with aiofiles.open(self.path, "rb") as handle:
            chunks = self._chunks(handle)
            try:
                yield chunks
            finally:
                # Still running inside a cancelled writer task: closing the file ends it.
                with contextlib.suppress(RuntimeError):
                    await chunks.aclose()

    async def _chunks(self, handle: AsyncBufferedReader) -> AsyncGenerator[bytes, None]:
        total = self.size
        handed = 0
        while handed < total:
            chunk = await handle.read(min(self.chunk_size, total - handed))
            if not chunk:
                break  # the file shrank while being read; the server sees a short body
            handed += len(chunk)
            # Set before the last chunk leaves: from then on the server may hold the
            # whole body, so a failure can no longer prove that nothing was created.
            self.exhausted = handed >= total
            yield chunk
            self.sent = handed
            if self._on_progress is not None:
                self._on_progress(handed, total)
        if total == 0:
            self.exhausted = True


async def remove_quietly(path: Path) -> None:
    """Delete a partial download, ignoring a file that is already gone."""
    with contextlib.suppress(FileNotFoundError):
        await aiofiles.os.remove(path)


async def replace_file(source: Path, target: Path) -> None:
    """Atomically move a finished download into place."""
    await aiofiles.os.replace(source, target)


def partial_path(target: Path) -> Path:
    """Sibling temporary name used while a download is in flight."""
    return target.with_name(f".{target.name}.{os.getpid()}.part")

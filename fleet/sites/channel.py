"""The agent's end of its channel: frames in on stdin, frames out on stdout.

Under sshd both are pipes or a socket, which the event loop watches, so a slow
reader on the far side holds up only the writer that waits for it. A regular
file (`fleet --headless agent < requests > replies`) cannot be watched; it is
read and written in a thread instead.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fleet.sites.protocol import MAX_FRAME, FrameReader, encode


class ChannelClosed(Exception):
    """The far side stopped reading (its end of stdout is gone)."""


class StdioChannel:
    def __init__(self, stdin_fd: int = 0, stdout_fd: int = 1):
        self._in_fd = stdin_fd
        self._out_fd = stdout_fd
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self.reader: FrameReader

    async def open(self) -> "StdioChannel":
        loop = asyncio.get_running_loop()
        # the stream's own buffer pauses the pipe at twice its limit, so a fast
        # sender never makes this process hold more than that plus one frame
        stream = asyncio.StreamReader(limit=64 * 1024)
        try:
            await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stream),
                os.fdopen(self._in_fd, "rb", buffering=0, closefd=False))
            read = stream.read
        except ValueError:  # a regular file
            async def read(n: int) -> bytes:
                return await asyncio.to_thread(os.read, self._in_fd, n)
        self.reader = FrameReader(read, MAX_FRAME)
        try:
            transport, protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin,
                os.fdopen(self._out_fd, "wb", buffering=0, closefd=False))
            self._writer = asyncio.StreamWriter(transport, protocol, None, loop)
        except ValueError:
            self._writer = None
        return self

    async def send(self, frame: dict[str, Any]) -> None:
        """Write one frame whole (frames from several tasks never interleave).
        ValueError for a frame over the limit; ChannelClosed when nobody reads."""
        line = encode(frame)
        async with self._lock:
            try:
                if self._writer is not None:
                    self._writer.write(line)
                    await self._writer.drain()
                else:
                    await asyncio.to_thread(_write_all, self._out_fd, line)
            except (ConnectionError, OSError) as err:
                raise ChannelClosed(str(err)) from err

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

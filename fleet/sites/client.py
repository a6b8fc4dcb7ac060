"""The console's end of a site agent's channel (fleet.sites.protocol).

Give it the channel's two directions (a subprocess's pipes, an SSH process's
stdout and stdin): `call` sends a request and waits for the reply with its id,
raising SiteError for an error reply; stream frames arrive on `events()`. Frames
from the agent are read within the same bounds as the agent reads requests: an
agent that sends something unreadable has broken the channel, and every waiting
call fails with ChannelLost instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator, Awaitable, Callable

from fleet.sites.protocol import (ERROR_KINDS, PROTOCOL, FrameReader, ProtocolError, ReadChunk,
                                  one_line, parse_frame)

Write = Callable[[bytes], Awaitable[None]]


class SiteError(Exception):
    """The agent refused a request (its error reply)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


class ChannelLost(Exception):
    """The agent ended, or sent what is not a frame of this protocol."""


_END = object()  # the events queue's last item


class SiteClient:
    def __init__(self, read: ReadChunk, write: Write, *, site: str):
        self.site = site
        self._frames = FrameReader(read)
        self._write = write
        self._lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._events: asyncio.Queue = asyncio.Queue()
        self._lost: ChannelLost | None = None
        self._reader: asyncio.Task | None = None

    def start(self) -> "SiteClient":
        self._reader = asyncio.ensure_future(self._read_frames())
        self._reader.set_name(f"fleet-site-{self.site}")
        return self

    async def hello(self, version: str) -> dict[str, Any]:
        """Check the agent serves this site and speaks this protocol."""
        return await self.call("hello", version=version, site=self.site, protocol=PROTOCOL)

    async def call(self, op: str, **fields: Any) -> Any:
        """The result of one request; SiteError if refused, ChannelLost if the
        channel ends first."""
        if self._lost is not None:
            raise self._lost
        self._next_id += 1
        request_id = self._next_id
        reply = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        line = json.dumps({"id": request_id, "op": op, **fields},
                          separators=(",", ":")).encode() + b"\n"
        try:
            async with self._lock:
                try:
                    await self._write(line)
                except (ConnectionError, OSError) as err:  # the agent is gone (killed)
                    # this call raises it itself: its reply must not hold it too
                    # (an exception never retrieved, logged when the reply is collected)
                    self._pending.pop(request_id, None)
                    self._end(ChannelLost(f"the channel to site {self.site} failed: {err}"))
                    raise self._lost from None
            return await reply
        finally:
            self._pending.pop(request_id, None)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The events of a `follow`, as they arrive; ends when the channel does
        (raising ChannelLost)."""
        while True:
            item = await self._events.get()
            if item is _END:
                self._events.put_nowait(_END)  # for any other reader
                raise self._lost or ChannelLost("the channel ended")
            if isinstance(item, SiteError):
                raise item
            yield item

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._end(ChannelLost("the client closed the channel"))

    # -- reading ---------------------------------------------------------------------

    async def _read_frames(self) -> None:
        try:
            while True:
                line = await self._frames.next()
                if line is None:
                    self._end(ChannelLost(f"the agent of site {self.site} ended"))
                    return
                self._take(parse_frame(line))
        except ProtocolError as err:
            self._end(ChannelLost(f"the agent of site {self.site} sent a bad frame: "
                                  f"{err.message}"))
        except (ConnectionError, OSError) as err:
            self._end(ChannelLost(f"the channel to site {self.site} failed: {err}"))
        except Exception as err:  # noqa: BLE001 - the transport's own (SSH connection lost)
            self._end(ChannelLost(f"the channel to site {self.site} failed: "
                                  f"{one_line(str(err)) or type(err).__name__}"))

    def _take(self, frame: dict[str, Any]) -> None:
        if "stream" in frame:
            if frame["stream"] != "events":
                return
            if isinstance(frame.get("event"), dict):
                self._events.put_nowait(frame["event"])
            else:  # an event the agent could not send: its reader must know
                self._events.put_nowait(_site_error(frame.get("error")))
            return
        request_id = frame.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            return  # an error about a line the agent could not read
        reply = self._pending.get(request_id)
        if reply is None or reply.done():
            return  # a call given up on
        if frame.get("ok") is True:
            reply.set_result(frame.get("result"))
        else:
            reply.set_exception(_site_error(frame.get("error")))

    def _end(self, lost: ChannelLost) -> None:
        if self._lost is None:
            self._lost = lost
            self._events.put_nowait(_END)
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(self._lost)


def _site_error(error: Any) -> SiteError:
    if not isinstance(error, dict):
        error = {}
    kind = error.get("kind") if error.get("kind") in ERROR_KINDS else "environment"
    return SiteError(kind, one_line(str(error.get("message") or "the agent gave no reason")))

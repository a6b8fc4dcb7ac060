"""The change feed: every event row, from this process or another, in id order.

Each state change writes an event row in the same transaction as the change,
so "what changed" is one ordered stream. The feed notices new rows by polling
`PRAGMA data_version` (it moves when another connection commits; cheap) and is
kicked at once after this process's own commits. Subscribers (the console's
panes, `events --follow`, `serve`'s output, the boot services' in-memory view)
read the same stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

from fleet.core.model import Event
from fleet.store.db import Store


class Lagging(Exception):
    """A bounded subscription's reader fell more than its limit behind: the
    events it held are dropped; it must read on from the store by cursor."""


class Subscription:
    def __init__(self, feed: "ChangeFeed", backlog_from: int | None,
                 limit: int | None = None):
        self._feed = feed
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._backlog_from = backlog_from
        self._start = feed.last_id
        self._limit = limit
        self.lagging = False

    def _put(self, event: Event | None) -> None:
        if self.lagging:
            return
        if event is not None and self._limit is not None and self._queue.qsize() >= self._limit:
            # a slow reader must not make this process grow without limit
            self.lagging = True
            self._feed._subscribers.discard(self)
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)
            return
        self._queue.put_nowait(event)

    async def __aiter__(self) -> AsyncIterator[Event]:
        if self._backlog_from is not None and self._backlog_from < self._start:
            after = self._backlog_from
            while after < self._start:
                batch = await self._feed.store.events.since(after, 500)
                batch = [e for e in batch if e.id <= self._start]
                if not batch:
                    break
                for event in batch:
                    yield event
                after = batch[-1].id
        while True:
            event = await self._queue.get()
            if event is None:
                if self.lagging:
                    raise Lagging(f"more than {self._limit} events waited for this reader")
                return
            yield event

    def get_nowait(self) -> list[Event]:
        """Drain what has arrived (for pollers such as a UI refresh tick)."""
        out = []
        while not self._queue.empty():
            event = self._queue.get_nowait()
            if event is None:
                break
            out.append(event)
        return out

    def close(self) -> None:
        self._feed._subscribers.discard(self)
        self._put(None)


class ChangeFeed:
    def __init__(self, store: Store, interval: float = 0.2):
        self.store = store
        self.interval = interval
        self.last_id = 0
        self._subscribers: set[Subscription] = set()
        self._kick = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._data_version: int | None = None
        store.on_commit(self.kick)

    async def start(self) -> None:
        self.last_id = await self.store.events.max_id()
        self._data_version = await self._read_data_version()
        self._task = asyncio.create_task(self._run(), name="fleet-change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sub in list(self._subscribers):
            sub.close()

    def kick(self) -> None:
        self._kick.set()

    def subscribe(self, after_id: int | None = None, limit: int | None = None
                  ) -> Subscription:
        """Events after `after_id` (replayed from the store), then live ones.
        None: only events from now on. `limit`: at most this many live events
        wait for the reader; past it the iteration raises Lagging."""
        sub = Subscription(self, after_id, limit)
        self._subscribers.add(sub)
        return sub

    async def poll(self) -> int:
        """Publish rows newer than the last one seen; returns how many."""
        published = 0
        while True:
            batch = await self.store.events.since(self.last_id, 1000)
            if not batch:
                return published
            for event in batch:
                self.last_id = event.id
                for sub in list(self._subscribers):
                    sub._put(event)
            published += len(batch)

    async def _read_data_version(self) -> int:
        row = await self.store.fetchone("PRAGMA data_version")
        return row[0]

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
            # cancellation that races with the kick, and stop() would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._kick.wait()
            kicked = self._kick.is_set()
            self._kick.clear()
            version = await self._read_data_version()
            if kicked or version != self._data_version:
                self._data_version = version
                await self.poll()

"""`ssh.command` events: every command fleet runs on a node over SSH, verbatim.

    api.commands.add(node, command, via=jump_or_None, job=id_or_None)
    await api.commands.flush()

Exec on 1000 nodes is 1000 commands: they are queued and written in batches
(one transaction each `interval`, and at flush) instead of one transaction per
command. Data: {"node", "command", "via", "job"}; never keys or passwords
(commands are the operator's own text). Liveness keepalives and shells are not
commands (shells have shell.opened).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger(__name__)


class CommandLog:
    def __init__(self, engine: "Engine", interval: float = 0.5):
        self.engine = engine
        self.interval = interval
        self._queue: list = []
        self._task: asyncio.Task | None = None

    def add(self, node: str, command: str, *, via: str | None = None,
            job: int | None = None) -> None:
        if self.engine.read_only:
            return
        shown = command if len(command) <= 200 else command[:200] + "..."
        self._queue.append(self.engine.event(
            "ssh.command", node, f"{node}" + (f" (via {via})" if via else "") + f": {shown}",
            node=node, command=command, via=via, job=job))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._later())

    def queue(self, event) -> None:
        """Any other event to write with the next batch (exec.started: one
        transaction fewer per run; it still precedes the run's ssh.command events)."""
        if self.engine.read_only:
            return
        self._queue.append(event)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(self.interval)
        try:
            await self.flush()
        except Exception:  # an audit write must not kill the caller's work
            log.exception("cannot record ssh.command events")

    async def flush(self, tx=None) -> None:
        """Write what is queued; inside `tx` when given (the caller's transaction).
        No lock: taking the queue is atomic, and a lock held while waiting for
        the store would deadlock against a caller already inside a transaction."""
        events, self._queue = self._queue, []
        if not events:
            return
        store = self.engine.store
        try:
            if tx is not None:
                await store.events.append_many(tx, events)
            else:
                async with store.transaction() as own:
                    await store.events.append_many(own, events)
        except BaseException:
            self._queue[:0] = events
            raise

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self.flush()

"""JobsAPI: the job runner as both faces call it (`engine.jobs`).

    await engine.jobs.submit(kind, inputs, attach=...) / register(kind, handler, group=...)
    await engine.jobs.list() / get(id) / logs(id) / wait(id) / cancel(id) / retry(id)

Each area registers its own kinds when the engine builds its facade (builds:
fleet.build.api; exec and post_boot: fleet.access.api). The first call
recovers jobs a dead process left queued/running (they become `interrupted`,
with an event).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from fleet.core.model import Job, JobState
from fleet.jobs.runner import Handler, JobRunner

if TYPE_CHECKING:
    from fleet.engine import Engine


class JobsAPI:
    def __init__(self, engine: "Engine", limits: dict[str, int] | None = None):
        self.engine = engine
        self.runner = JobRunner(engine, limits)
        self._ready_lock = asyncio.Lock()
        self._ready = False
        self._on_start: list[Callable[[], None]] = []

    def on_start(self, hook: Callable[[], None]) -> None:
        """Run `hook()` once, when the runner first starts (a build's temp sweep)."""
        self._on_start.append(hook)

    async def start(self) -> list[int]:
        """Recover jobs of dead processes (idempotent); returns the interrupted ids."""
        async with self._ready_lock:
            if self._ready:
                return []
            self._ready = True
            for hook in self._on_start:
                hook()
            return await self.runner.recover()

    async def close(self) -> None:
        await self.runner.close()

    # -- generic jobs -------------------------------------------------------------------

    def register(self, kind: str, handler: Handler, *, group: str | None = None,
                 retryable: bool = True) -> None:
        """Add a job kind: `async def handler(ctx, inputs) -> dict`."""
        self.runner.register(kind, handler, group=group, retryable=retryable)

    async def submit(self, kind: str, inputs: dict, *, claim: bool = True,
                     attach: Any = None) -> int:
        """Queue a job; with `claim`, run it here. `attach`: an object for this
        process's run of the job only (not stored; `ctx.attached` in the handler),
        e.g. exec's node objects and output callbacks."""
        await self.start()
        return await self.runner.submit(kind, inputs, claim=claim, attach=attach)

    async def list(self, states: Iterable[JobState | str] | None = None,
                   limit: int = 500) -> list[Job]:
        await self.start()
        if states is not None:
            states = [JobState(s) for s in states]
        return await self.engine.store.jobs.list(states, limit)

    async def get(self, job_id: int) -> Job:
        await self.start()
        return await self.runner.get(job_id)

    async def logs(self, job_id: int, after_seq: int = 0) -> list[tuple[int, float, str]]:
        await self.get(job_id)
        await self.runner.flush()
        return await self.engine.store.jobs.logs(job_id, after_seq)

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        await self.start()
        return await self.runner.wait(job_id, timeout)

    async def cancel(self, job_id: int) -> Job:
        await self.start()
        return await self.runner.cancel(job_id)

    async def retry(self, job_id: int, *, claim: bool = True) -> int:
        """A new job with the same inputs (`_retry_of` links it to the old one)."""
        await self.start()
        return await self.runner.retry(job_id, claim=claim)

    async def claim(self, job_id: int) -> bool:
        """Run an unclaimed queued job in this process."""
        await self.start()
        return await self.runner.claim(job_id)

    async def run_worker(self, poll: float = 0.5) -> None:
        """Claim and run unclaimed queued jobs until cancelled (for `serve`)."""
        await self.start()
        sweep = 0.0
        while True:
            if time.monotonic() - sweep > 10.0:  # builds of CLI processes that died
                sweep = time.monotonic()
                await self.runner.recover(again=True)
            for job_id in await self.engine.store.jobs.unclaimed():
                if self.runner.kinds.get((await self.runner.get(job_id)).kind):
                    await self.runner.claim(job_id)
            await asyncio.sleep(poll)

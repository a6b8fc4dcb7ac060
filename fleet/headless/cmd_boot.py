"""Headless commands of the boot area; merged into commands.HANDLERS.

Each handler is `async def handler(engine, args, out) -> int` (exit code).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

from fleet.errors import BadInput
from fleet.headless import records as rec

log = logging.getLogger("fleet.serve")


LIVENESS_SECONDS = 30


async def serve(engine, args, out) -> int:
    """Boot services until SIGINT/SIGTERM; every event as one JSON line on stdout.

    Exit 0 on SIGINT/SIGTERM (main cancels this task; the services stop in the
    `finally`), 3 when a port cannot be bound (EnvironmentProblem from
    start_services, printed by main as `fleet: ...`).

    A profile with a `demo:` section also gets its simulated site (machines that
    PXE boot against these services, nodes, a jump), started after the boot
    services and stopped before them (fleet.sim.api.start_demo).
    """
    if engine.read_only:
        raise BadInput("serve records what it sees: it cannot run with --read-only")
    _log_to_stderr()
    sub = engine.follow()  # live events from now on, ours and other processes'
    worker: asyncio.Task | None = None
    demo = None
    try:
        await engine.boot.start_services()
        if engine.profile.demo is not None:
            from fleet.sim.api import start_demo

            demo = await start_demo(engine)
        worker = _start_job_worker(engine)
        engine.access.start_liveness(interval=LIVENESS_SECONDS)  # stopped at engine close
        async for event in sub:
            out.record_line(rec.event(event))
    finally:
        sub.close()
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
        if demo is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(demo.stop())
        # Stop listening at once; a second signal during this must not leave
        # sockets open, so shield the stop from cancellation.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(engine.boot.stop_services())
    return 0


def _start_job_worker(engine) -> asyncio.Task | None:
    """The job runner beside the boot services: queued jobs nobody claimed
    (submitted by `fleet --headless build ... --no-wait` or the console) run here."""
    try:
        jobs = engine.jobs
    except Exception:  # the jobs layer failing to load must not stop the boot services
        log.exception("job runner not started")
        return None

    def done(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("job runner stopped: %s", task.exception())

    task = asyncio.ensure_future(jobs.run_worker())
    task.add_done_callback(done)
    return task


def _log_to_stderr() -> None:
    """Service logs go to stderr (stdout carries the JSON events); level from
    FLEET_LOG_LEVEL (default INFO; DEBUG shows every offer and ACK)."""
    level = os.environ.get("FLEET_LOG_LEVEL", "INFO").upper()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)


HANDLERS: dict = {"serve": serve}

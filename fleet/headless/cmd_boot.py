"""Headless commands of the boot area; merged into commands.HANDLERS.

Each handler is `async def handler(engine, args, out) -> int` (exit code).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from fleet import logsetup
from fleet import records as rec
from fleet.errors import BadInput
from fleet.headless.control.server import start_control
from fleet.sim.api import prepare_demo

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger("fleet.serve")


LIVENESS_SECONDS = 30


async def serve(engine: "Engine", args, out) -> int:
    """Boot services until SIGINT/SIGTERM; every event as one JSON line on stdout.

    While it serves, headless commands on this profile run in this process
    through its control socket (fleet.headless.control).

    Exit 0 on SIGINT/SIGTERM (main cancels this task; the services stop in the
    `finally`), 3 when a port cannot be bound (EnvironmentProblem from
    start_services, printed by main as `fleet: ...`).

    A profile with a `demo:` section also gets its simulated site (machines that
    PXE boot against these services, nodes, a jump), started after the boot
    services and stopped before them (Engine.start_site, fleet.sim.api).
    """
    if engine.read_only:
        raise BadInput("serve records what it sees: it cannot run with --read-only")
    logsetup.configure(engine.paths.log_file, stderr_level=logsetup.env_level())
    sub = engine.follow()  # live events from now on, ours and other processes'
    control = None
    try:
        await engine.start_site(demo=prepare_demo, liveness_interval=LIVENESS_SECONDS)
        if engine.remote is not None:  # the operator's side: hold every remote site's channel
            engine.remote.hold()
        # headless commands on this profile run here, on this engine's connections
        control = await start_control(engine)
        async for event in sub:
            out.record_line(rec.event(event))
    finally:
        sub.close()
        if control is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(control.close())
        # Stop listening at once (shielded: a second signal during this must
        # not leave sockets open); the engine closes the rest after this.
        with contextlib.suppress(asyncio.CancelledError):
            await engine.stop_site()
    return 0


HANDLERS: dict = {"serve": serve}

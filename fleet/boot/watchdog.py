"""The stall timer: machines that make no progress end up `stalled`.

Every `interval` seconds, each machine in leased, provisioning or wiping whose
`state_since` is older than the profile's `stall_after` gets
`Stall("no progress for 30m")` through `engine.advance` (one event each; the
lifecycle makes repeats no-ops). Off the hot path: it reads the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncio
import logging

from fleet.core import lifecycle as lc
from fleet.core.durations import format_duration
from fleet.core.model import MachineState
from fleet.errors import FleetError

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger(__name__)

WATCHED = (MachineState.LEASED, MachineState.PROVISIONING, MachineState.WIPING)


class StallWatchdog:
    def __init__(self, engine: "Engine", interval: float = 5.0):
        self.engine = engine
        self.interval = interval

    @property
    def stall_after(self) -> int:
        return self.engine.profile.stall_after

    async def check_once(self) -> list[str]:
        """Stall the machines overdue now; returns their MACs."""
        if self.engine.read_only:
            return []
        limit = self.stall_after
        now = self.engine.clock()
        reason = f"no progress for {format_duration(limit)}"
        stalled = []
        for state in WATCHED:
            for m in await self.engine.machines(state, everywhere=False):
                if now - m.state_since < limit:
                    continue
                try:
                    t = await self.engine.advance(m.mac, lc.Stall(reason))
                except FleetError as err:  # it moved on meanwhile
                    log.debug("not stalling %s: %s", m.mac, err)
                    continue
                if t.changed:
                    stalled.append(m.mac)
        return stalled

    async def run(self) -> None:
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stall watchdog")
            await asyncio.sleep(self.interval)

"""A real `fleet --headless agent` subprocess with the console's client on its
pipes, real events written into a site's store through the engine, and the
site's own rows as the agent would send them (to compare a replica with)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from fleet import records as rec
from fleet.engine import Engine
from fleet.sites.client import SiteClient
from fleet.sites.protocol import MAX_FRAME


class AgentChannel:
    """One agent process and a started SiteClient on its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, site: str):
        self.proc = proc

        async def write(data: bytes) -> None:
            proc.stdin.write(data)
            await proc.stdin.drain()

        self.client = SiteClient(proc.stdout.read, write, site=site).start()

    @classmethod
    async def start(cls, profile: Path, env: dict, site: str = "rack1") -> "AgentChannel":
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleet", "--headless", "--profile", str(profile), "agent",
            "--site", site, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, limit=2 * MAX_FRAME)
        return cls(proc, site)

    def kill(self) -> None:
        """kill -9: no goodbye on the channel."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def close(self) -> None:
        if self.proc.returncode is None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.kill()
            await self.proc.wait()
        await self.client.close()


def mac_of(i: int) -> str:
    return f"52:54:00:{i // 65536 % 256:02x}:{i // 256 % 256:02x}:{i % 256:02x}"


async def write_events(profile: Path, count: int) -> int:
    """At least `count` real lifecycle events in the profile's store: machines
    discovered, leased and released through the engine, in rounds of a third
    each. Returns the store's last event id."""
    async with await Engine.open(profile) as engine:
        start = await engine.last_event_id()
        machine = len(await engine.machines())  # new MACs: a known one is not discovered again
        while await engine.last_event_id() - start < count:
            want = count - (await engine.last_event_id() - start)
            batch = [mac_of(machine + i) for i in range(max(1, min(1000, -(-want // 3))))]
            machine += len(batch)
            for mac in batch:
                engine.record_sighting(mac, stage="firmware")
            await engine.flush_sightings()
            for mac in batch:
                await engine.lease(mac, "debian12")
            for mac in batch:
                await engine.release(mac)
        return await engine.last_event_id()


async def site_rows(profile: Path) -> dict:
    """The site's own store as the agent sends it: machines (without the field
    relative to when they were read), nodes and every event, in key order."""
    async with await Engine.open(profile, read_only=True) as engine:
        machines = sorted(await engine.machines(), key=lambda m: m.mac)
        nodes = sorted(await engine.nodes(), key=lambda n: n.name)
        events = await engine.store.events.since(0, 10**9)
    return {
        "machines": [{k: v for k, v in rec.machine(m).items()
                      if not k.startswith("_") and k != "seen_ago_s"} for m in machines],
        "nodes": [rec.node(n) for n in nodes],
        "events": [rec.event(e) for e in events],
    }

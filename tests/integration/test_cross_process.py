"""A write by one process shows up in another within a second."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

MAC = "ac:1f:6b:00:00:42"


async def test_a_lease_from_another_process_reaches_a_running_engine(engine, profile_path, xdg):
    engine.record_sighting(MAC, stage="firmware")
    await engine.flush_sightings()
    sub = engine.follow()
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "--headless", "--profile", str(profile_path),
        "lease", MAC, "--deployment", "debian12", "--hostname", "web42",
        env=xdg, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    committed = time.monotonic()

    async def first():
        async for event in sub:
            if event.kind == "machine.leased":
                return event

    event = await asyncio.wait_for(first(), 5)
    seen = time.monotonic()
    sub.close()
    assert event.subject == MAC and event.data["hostname"] == "web42"
    assert seen - committed < 1.0, f"took {seen - committed:.3f}s after the commit"
    # the in-memory machine view (what the DHCP hot path reads) followed as well
    assert engine.machine_states[MAC].value == "leased"
    assert seen - started < 10

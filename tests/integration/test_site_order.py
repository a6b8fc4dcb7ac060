"""`fleet --headless serve` and the console start and stop the parts of a site
in the same written order (Engine.start_site, SITE_STOP_ORDER, CLOSE_ORDER),
read from the `fleet.site` log lines each part writes as it starts or stops."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
import sys
import time

from fleet.engine import CLOSE_ORDER, START_ORDER
from fleet.profile import load_profile
from fleet.sim.profiles import free_ports, write_demo_profile

# the demo profile has no remote sites: nothing of them to stop
EXPECTED = [f"started {p}" for p in START_ORDER] + [f"stopped {p}" for p in CLOSE_ORDER
                                                    if p != "remote"]
SITE_LINE = re.compile(r"fleet\.site: ((?:started|stopped) \w+)")


def demo_profile(tmp_path):
    return write_demo_profile(tmp_path, machines=2, misbehave=False, install_seconds=2,
                              ports=free_ports(), subnet_octet=163,
                              options={"stagger_seconds": 1, "ipxe_size": 4096})


async def test_serve_starts_and_stops_its_parts_in_the_written_order(tmp_path, xdg):
    profile = demo_profile(tmp_path)
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "--headless", "--profile", str(profile), "serve",
        env=xdg, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while "started liveness" not in seen and time.monotonic() < deadline:
            line = await asyncio.wait_for(serve.stderr.readline(), 60)
            if not line:
                break
            seen += SITE_LINE.findall(line.decode())
        serve.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(serve.stderr.read(), 60)
        seen += SITE_LINE.findall(rest.decode())
        assert await asyncio.wait_for(serve.wait(), 30) == 0
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()
    assert seen == EXPECTED


async def test_the_console_starts_and_stops_its_parts_in_the_same_order(tmp_path, xdg, caplog):
    from fleet.tui.app import FleetApp

    profile = load_profile(demo_profile(tmp_path))
    caplog.set_level(logging.INFO, logger="fleet.site")
    app = FleetApp(profile, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                r.getMessage() == "started liveness" for r in caplog.records):
            await pilot.pause(0.1)
    seen = [r.getMessage() for r in caplog.records if r.name == "fleet.site"]
    assert seen == EXPECTED

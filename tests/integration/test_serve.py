"""`fleet --headless serve` as a process: JSON event lines, clean exits."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from support.boot_site import write_boot_site
from support.pxe_client import ClientSpec, boot, random_mac


async def _start_serve(site, env):
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "--headless", "--profile", str(site.path), "serve",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def _line_with(proc, kind: str, timeout: float = 15.0) -> dict:
    async def read():
        while True:
            line = await proc.stdout.readline()
            if not line:
                err = await proc.stderr.read()
                raise AssertionError(f"serve ended before {kind}: {err.decode()}")
            record = json.loads(line)  # every line is one JSON object
            if record["kind"] == kind:
                return record
    return await asyncio.wait_for(read(), timeout)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_prints_json_events_and_exits_0_on_signal(tmp_path, xdg, sig):
    site = write_boot_site(tmp_path, mode="direct")
    proc = await _start_serve(site, xdg)
    try:
        started = await _line_with(proc, "distributor.started")
        assert started["subject"] == "rack1"
        assert started["data"]["dhcp"] == site.dhcp and started["data"]["http"] == site.http
        assert set(started) >= {"id", "ts", "kind", "subject", "severity", "message", "data"}

        mac = random_mac()
        r = await boot(ClientSpec(mac, "ipxe-efi"), server=site.address, **site.ports)
        assert r.http_status == 200 and r.script.startswith("#!ipxe")
        found = await _line_with(proc, "machine.discovered")
        assert found["subject"] == mac
    finally:
        t0 = time.monotonic()
        proc.send_signal(sig)
        rc = await asyncio.wait_for(proc.wait(), 10)
        took = time.monotonic() - t0
    err = (await proc.stderr.read()).decode()
    assert rc == 0, err
    print(f"serve stopped in {took:.2f}s")
    assert took < 1.0, f"serve took {took:.2f}s to stop"
    assert "Traceback" not in err
    # the ports are free again
    for kind, port in ((socket.SOCK_DGRAM, site.dhcp), (socket.SOCK_DGRAM, site.pxe),
                       (socket.SOCK_DGRAM, site.tftp), (socket.SOCK_STREAM, site.http)):
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.close()


@pytest.mark.parametrize("taken, service", [("dhcp", "proxyDHCP"), ("http", "HTTP"),
                                            ("tftp", "TFTP")])
async def test_serve_exits_3_when_a_port_is_taken(tmp_path, xdg, taken, service):
    site = write_boot_site(tmp_path)
    port = getattr(site, taken)
    kind = socket.SOCK_STREAM if taken == "http" else socket.SOCK_DGRAM
    blocker = socket.socket(socket.AF_INET, kind)
    blocker.bind(("127.0.0.1", port))
    if kind == socket.SOCK_STREAM:
        blocker.listen()
    try:
        proc = await _start_serve(site, xdg)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        blocker.close()
    text = err.decode()
    assert proc.returncode == 3, text
    # service logs come first on stderr; the error is the last line
    assert text.splitlines()[-1].startswith("fleet: ") and "Traceback" not in text
    assert f"{service} cannot listen" in text and f"port {port} is in use" in text, text
    assert out == b"" or all(json.loads(line) for line in out.splitlines())


async def test_serve_exits_3_on_a_missing_interface(tmp_path, xdg):
    site = write_boot_site(tmp_path, interface="nosuchif0")
    proc = await _start_serve(site, xdg)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    text = err.decode()
    assert proc.returncode == 3, text
    assert "interface 'nosuchif0' does not exist" in text and "Traceback" not in text


async def test_stall_watchdog_stalls_machines_without_progress(tmp_path, xdg):
    """serve runs the stall timer: leased/provisioning/wiping machines older than
    stall_after become stalled, with an event; others are left alone."""
    from fleet.boot.watchdog import StallWatchdog
    from fleet.core.model import MachineState
    from fleet.engine import Engine

    site = write_boot_site(tmp_path, stall_after=60)
    now = [1_000_000.0]
    engine = await Engine.open(site.path, clock=lambda: now[0])
    try:
        a, b, c = random_mac(), random_mac(), random_mac()
        for mac in (a, b, c):
            engine.record_sighting(mac, stage="firmware")
        await engine.flush_sightings()
        await engine.lease(a, "debian12")
        await engine.lease(b, "debian12")
        now[0] += 30
        await engine.lease(b, "debian12")  # a no-op re-lease is no progress either
        dog = StallWatchdog(engine, interval=0.05)
        assert await dog.check_once() == []
        now[0] += 31  # a: 61 s in leased; b: 61 s; c: discovered (not watched)
        sub = engine.follow()
        assert sorted(await dog.check_once()) == sorted([a, b])
        m = await engine.machine(a)
        assert m.state is MachineState.STALLED and m.reason == "no progress for 1m"
        assert (await engine.machine(c)).state is MachineState.DISCOVERED
        event = await asyncio.wait_for(sub.__aiter__().__anext__(), 5)
        assert event.kind == "machine.stalled"
        sub.close()
        assert await dog.check_once() == []  # idempotent
    finally:
        await engine.close()


async def test_a_second_serve_on_the_same_ports_exits_3(tmp_path, xdg):
    """Two fleets answering the same clients would be worse than none: the second
    one must notice the first."""
    from fleet.engine import Engine

    site = write_boot_site(tmp_path)
    engine = await Engine.open(site.path)
    try:
        await engine.boot.start_services()
        proc = await _start_serve(site, xdg)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 3, err.decode()
        assert "is in use" in err.decode()
        # the first one still answers
        r = await boot(ClientSpec(random_mac(), "uefi"), server=site.address, **site.ports)
        assert r.tftp is not None and r.tftp.size > 0
    finally:
        await engine.close()

"""The demo site, end to end: `fleet --headless serve` with a demo profile runs
simulated machines that PXE boot for real against fleet's own services; leased
ones install, call home and come up as SSH nodes behind the demo's jump."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from fleet.sim.profiles import free_ports, write_demo_profile
from support.waiting import until as _until


async def _fleet(env, profile, *args, timeout: float = 60.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "--headless", "--profile", str(profile), *args,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def _json(env, profile, *args):
    rc, out, err = await _fleet(env, profile, "--format", "json", *args)
    assert rc == 0, err
    return json.loads(out)


@pytest.fixture
def demo_profile(tmp_path, xdg):
    return write_demo_profile(tmp_path, machines=6, misbehave=False, install_seconds=2,
                              ports=free_ports(), subnet_octet=161,
                              options={"stagger_seconds": 2, "ipxe_size": 16384})


async def test_headless_demo_lease_exec_shell_release(tmp_path, xdg, demo_profile):
    started = time.monotonic()
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "--headless", "--profile", str(demo_profile), "serve",
        env=xdg, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # discovery: every simulated machine PXE booted (firmware + iPXE) and is held
        async def all_held():
            ms = await _json(xdg, demo_profile, "machines")
            held = [m for m in ms if m["state"] == "discovered" and m.get("stage") == "ipxe"]
            return ms if len(held) == 6 else None

        machines = await _until("6 machines discovered via iPXE", all_held, 40)
        vendors = {m["vendor"] for m in machines}
        assert vendors <= {"Dell Inc.", "Hewlett Packard Enterprise",
                           "Super Micro Computer, Inc.", "Lenovo", "Intel Corporate"}, vendors
        assert all(m["arch"] not in (None, "unknown") for m in machines), machines
        print(f"discovered 6 in {time.monotonic() - started:.1f}s")

        # lease three
        macs = [m["mac"] for m in machines[:3]]
        for i, mac in enumerate(macs):
            rc, _, err = await _fleet(xdg, demo_profile, "lease", mac, "--deployment",
                                      "debian12" if i else "rocky9", "--hostname", f"demo{i}")
            assert rc == 0, err

        async def provisioned():
            nodes = await _json(xdg, demo_profile, "nodes")
            names = {n["name"] for n in nodes}
            return nodes if {"demo0", "demo1", "demo2"} <= names else None

        nodes = await _until("3 nodes registered", provisioned, 40)
        for n in nodes:
            assert n["route"] == "jump" and n["via"] == ["demo-jump"], n

        # exec through the jump (the OS comes up a moment after the call home)
        async def exec_ok():
            rc, out, err = await _fleet(xdg, demo_profile, "--format", "json", "exec",
                                        "demo0", "demo1", "demo2", "--", "hostname; uname -s; "
                                        "cat /etc/os-release; exit 3")
            if "unreachable" in out:
                return None
            return rc, json.loads(out)

        rc, report = await _until("exec through the jump", exec_ok, 30, every=1.0)
        assert rc == 1  # every node exited 3: "some targets failed"
        by_node = {r["node"]: r for r in report["results"]}
        assert set(by_node) == {"demo0", "demo1", "demo2"}
        for name, r in by_node.items():
            assert r["exit_status"] == 3 and r["error_kind"] == "command-failed", r
            assert r["via"] == "demo-jump"
            assert r["stdout"][0] == name and r["stdout"][1] == "Linux"
        assert any("Rocky Linux" in line for line in by_node["demo0"]["stdout"])
        assert any("Debian" in line for line in by_node["demo1"]["stdout"])

        # a PTY shell (in this process, on the same store), then a full-screen program
        from fleet.engine import Engine

        engine = await Engine.open(demo_profile)
        try:
            async with engine.access.session("demo1") as link:
                proc = await link.conn.create_process(term_type="xterm", term_size=(80, 24))
                out = await _read_until(proc, "# ")
                assert "root@demo1:~# " in out
                proc.stdin.write("echo hi there\n")
                out = await _read_until(proc, "# ")
                assert "hi there" in out
                proc.stdin.write("top\n")
                out = await _read_until(proc, "press q to quit")
                assert "\x1b[2J" in out
                proc.stdin.write("q")
                await _read_until(proc, "# ")
                proc.stdin.write("exit 7\n")
                await asyncio.wait_for(proc.wait_closed(), 10)
                assert proc.exit_status == 7
        finally:
            await engine.close()

        # release one with a wipe: it is power-cycled, wiped, and back in the pool
        rc, _, err = await _fleet(xdg, demo_profile, "release", macs[2], "--wipe")
        assert rc == 0, err

        async def back():
            ms = await _json(xdg, demo_profile, "machines")
            m = next(m for m in ms if m["mac"] == macs[2])
            return m if m["state"] == "discovered" else None

        await _until("the released machine back in the pool", back, 30)
        events = await _json(xdg, demo_profile, "events")
        kinds = [e["kind"] for e in events if e["subject"] == macs[2]]
        assert "machine.wiping" in kinds and "machine.wiped" in kinds, kinds
        print(f"whole demo flow in {time.monotonic() - started:.1f}s")
    finally:
        serve.terminate()
        rc = await asyncio.wait_for(serve.wait(), 15)
        err = (await serve.stderr.read()).decode()
    assert rc == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]


async def _read_until(proc, marker: str, timeout: float = 10.0) -> str:
    buf = ""

    async def go():
        nonlocal buf
        while marker not in buf:
            chunk = await proc.stdout.read(4096)
            if not chunk:
                raise AssertionError(f"EOF before {marker!r}: {buf!r}")
            buf += chunk
        return buf

    return await asyncio.wait_for(go(), timeout)


async def test_nodes_accept_only_the_jump(tmp_path, xdg):
    """A node's sshd refuses connections that do not come from the jump, so the
    route planner's jump is the only way in."""
    import asyncssh

    from fleet.sim.node import NodeOS, NodeServer

    client = asyncssh.generate_private_key("ssh-ed25519")
    node = NodeServer(NodeOS("n1", "debian12", asyncssh.generate_private_key("ssh-ed25519"),
                             [client.export_public_key().decode()]),
                      "127.162.1.1", allowed_peers=("127.162.0.2",))
    await node.start()
    try:
        with pytest.raises((OSError, asyncssh.Error)):
            async with asyncssh.connect("127.162.1.1", node.port, username="root",
                                        client_keys=[client], known_hosts=None,
                                        connect_timeout=5):
                pass
    finally:
        await node.stop()


async def test_demo_misbehaving_machines_show_up_honestly(tmp_path, xdg):
    """With misbehave on: slow firmware is seen (by the proxy) but never gets to
    iPXE, a stalled install stays provisioning, a node that goes unreachable
    fails exec as unreachable, and a reinstalled node whose sshd kept its old
    host key is refused as CHANGED."""
    from fleet.engine import Engine
    from fleet.sim.api import start_demo

    path = write_demo_profile(tmp_path, machines=8, misbehave=True, install_seconds=1,
                              ports=free_ports(), subnet_octet=163,
                              options={"stagger_seconds": 1, "ipxe_size": 4096,
                                       "quirk_every": 2, "unreachable_after": 3})
    engine = await Engine.open(path)
    try:
        demo = await start_demo(engine)
        quirks = demo.status()["quirks"]
        assert set(quirks.values()) == {"slow-firmware", "stall", "rekey", "unreachable"}
        by_kind = {v: k for k, v in quirks.items()}

        async def seen():
            ms = {m.mac: m for m in await engine.machines()}
            return ms if len(ms) == 8 else None

        ms = await _until("8 machines seen", seen, 30)
        assert ms[by_kind["slow-firmware"]].stage == "firmware"  # offers lost: no iPXE
        await engine.lease(by_kind["stall"], "debian12", hostname="stuck")
        await engine.lease(by_kind["unreachable"], "debian12", hostname="flaky")
        await engine.lease(by_kind["rekey"], "debian12", hostname="rekeyed")

        async def flaky_up():
            return any(n.name == "flaky" for n in await engine.nodes())

        await _until("flaky registered", flaky_up, 20)
        m = await engine.machine(by_kind["stall"])
        assert m.state.value in ("leased", "provisioning")

        async def unreachable():
            report = await engine.access.exec([await engine.node("flaky")], "true",
                                              timeout=5)
            return report.results[0].error_kind == "unreachable"

        await _until("flaky unreachable", unreachable, 25, every=1.0)
        m = await engine.machine(by_kind["stall"])
        assert m.state.value == "provisioning", m  # the template was fetched, then nothing

        async def exec_kind(name):
            report = await engine.access.exec([await engine.node(name)], "hostname",
                                              timeout=5)
            kind = report.results[0].error_kind
            return kind if kind != "unreachable" else None  # still booting

        assert await _until("rekeyed answers", lambda: exec_kind("rekeyed"), 20) == "ok"
        first = (await engine.node("rekeyed")).host_keys
        await engine.release(by_kind["rekey"])
        await _until("rekey back in the pool", lambda: _state_is(engine, by_kind["rekey"],
                                                                  "discovered"), 20)
        await engine.lease(by_kind["rekey"], "debian12", hostname="rekeyed")
        await _until("rekey reinstalled", lambda: _state_is(engine, by_kind["rekey"],
                                                            "provisioned"), 20)
        assert (await engine.node("rekeyed")).host_keys != first
        await engine.access.close()  # a new pool: the old connection was to the old OS
        assert await _until("refused", lambda: exec_kind("rekeyed"), 20) == "host-key"
    finally:
        await engine.close()


async def _state_is(engine, mac, state):
    return (await engine.machine(mac)).state.value == state

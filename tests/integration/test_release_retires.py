"""A release ends the machine's node, in every fleet process: the node leaves
`nodes`, its pinned host keys go, and pooled connections to it close. Also what
a release means for a machine holding no lease, and hostnames that belong to
one machine only.

The demo site provides the real parts: simulated machines that PXE boot,
install, call home and answer SSH behind the demo's jump."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fleet.engine import Engine
from fleet.errors import Conflict
from fleet.sim.api import start_demo
from fleet.sim.profiles import free_ports, write_demo_profile
from support.waiting import until


def fleet(env, profile, *args):
    return subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile",
                           str(profile), *args], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
async def demo(tmp_path, xdg):
    path = write_demo_profile(tmp_path, machines=3, misbehave=False, install_seconds=0.5,
                              ports=free_ports(), subnet_octet=241,
                              options={"stagger_seconds": 0.2, "ipxe_size": 4096})
    engine = await Engine.open(path)
    try:
        await start_demo(engine)

        async def discovered():
            ms = [m for m in await engine.machines() if m.stage == "ipxe"]
            return ms if len(ms) == 3 else None

        macs = sorted(m.mac for m in await until("3 machines at iPXE", discovered, 30))
        yield engine, path, macs
    finally:
        await engine.close()


async def provision(engine: Engine, mac: str, hostname: str):
    await engine.lease(mac, "debian12", hostname=hostname)

    async def answers():
        node = await engine.find_node(hostname)
        if node is None:
            return None
        report = await engine.access.exec([node], "hostname", timeout=5)
        return report.results[0] if report.results[0].error_kind == "ok" else None

    return await until(f"{hostname} answers over SSH", answers, 40)


async def test_release_from_another_process_retires_the_node_everywhere(demo, xdg):
    engine, profile, macs = demo
    await provision(engine, macs[0], "ret1")
    pool = engine.access.pool
    link = pool.cached("ret1")
    assert link is not None and not link.conn.is_closed()
    assert (await engine.node("ret1")).host_keys

    proc = fleet(xdg, profile, "--format", "json", "release", macs[0], "--wipe")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["retired"] == "ret1" and out["changed"] is True and out["state"] == "wiping"
    assert "node ret1 retired" in out["message"]

    # this process's pool followed the node.retired event: connection closed
    async def closed():
        return pool.cached("ret1") is None and link.conn.is_closed()

    await until("the pooled connection closed", closed, 5, every=0.1)
    assert await engine.find_node("ret1") is None
    listed = json.loads(fleet(xdg, profile, "--format", "json", "nodes").stdout)
    assert "ret1" not in {n["name"] for n in listed}
    pins = await engine.store.fetchall("SELECT * FROM host_keys WHERE node = 'ret1'")
    assert pins == []
    retired = [e for e in await engine.events(200) if e.kind == "node.retired"]
    assert [e.subject for e in retired] == ["ret1"] and retired[0].data["mac"] == macs[0]
    assert "ret1" not in {n for n, _ in pool.trust._loaded}

    # the wiped machine can be leased again under the name: one node, one address
    await until("wiped", lambda: _state(engine, macs[0], "discovered"), 30)
    await provision(engine, macs[0], "ret1")
    nodes = await engine.nodes()
    assert [n.name for n in nodes if n.mac == macs[0]] == ["ret1"]
    addresses = [n.address for n in nodes]
    assert len(addresses) == len(set(addresses))


async def _state(engine, mac, state):
    return (await engine.machine(mac)).state.value == state


async def test_a_hostname_belongs_to_one_machine(demo, xdg):
    engine, profile, macs = demo
    await engine.lease(macs[0], "debian12", hostname="web5")
    proc = fleet(xdg, profile, "lease", macs[1], "--deployment", "debian12", "--hostname", "web5")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"fleet: hostname web5 is in use: {macs[0]} holds it (leased to debian12); "
        "choose another name or release that machine")
    assert (await engine.machine(macs[1])).state.value == "discovered"
    # the holder itself may repeat its lease; once released, the name is free
    await engine.lease(macs[0], "debian12", hostname="web5")
    await engine.release(macs[0])
    await engine.lease(macs[1], "debian12", hostname="web5")


async def test_a_hostname_held_by_a_registered_node_is_refused(demo, xdg):
    engine, profile, macs = demo
    await provision(engine, macs[0], "web6")
    with pytest.raises(Conflict, match=f"hostname web6 is in use: {macs[0]} holds it"):
        await engine.lease(macs[1], "debian12", hostname="web6")
    # a node the machine left behind without a lease (a store from before
    # releases retired nodes) still holds the name, and releasing frees it
    await engine.store.conn.execute("UPDATE machines SET state='discovered', lease_id=NULL "
                                    "WHERE mac=?", (macs[0],))
    with pytest.raises(Conflict, match=f"node web6 .*registered by {macs[0]}"):
        await engine.lease(macs[1], "debian12", hostname="web6")
    outcome = await engine.release_outcome(macs[0])
    assert outcome.changed and outcome.retired == "web6"
    await engine.lease(macs[1], "debian12", hostname="web6")


async def test_releasing_a_machine_without_a_lease(engine, profile_path, xdg):
    mac, profile = "ac:1f:6b:00:00:06", profile_path
    engine.record_sighting(mac, stage="ipxe")
    await engine.flush_sightings()
    before = await engine.last_event_id()
    proc = fleet(xdg, profile, "release", mac)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{mac} holds no lease; nothing to release"
    assert await engine.last_event_id() == before  # nothing changed, nothing recorded

    # --wipe of an unleased machine is a deliberate wipe
    proc = fleet(xdg, profile, "release", mac, "--wipe")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{mac} held no lease; its next boot wipes it"
    assert (await engine.machine(mac)).state.value == "wiping"
    proc = fleet(xdg, profile, "release", mac, "--wipe")
    assert proc.stdout.strip() == f"{mac} is already waiting to be wiped; nothing changed"

    # a plain release of a machine waiting to be wiped cancels the wipe
    proc = fleet(xdg, profile, "--format", "json", "release", mac)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["message"] == f"{mac}: wipe cancelled; back in the pool" and out["changed"]
    assert out["state"] == "discovered" and out["retired"] is None
    kinds = [e.kind for e in await engine.events(10, mac)]
    assert kinds[-1] == "machine.wipe_cancelled"

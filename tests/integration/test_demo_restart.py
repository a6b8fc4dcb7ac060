"""A restarted demo brings its provisioned machines back: they boot from their
disks (kept under the data dir) into the same node with the same host key, and
fleet reaches them again without a new install or call-home."""

from __future__ import annotations

from pathlib import Path

from fleet.engine import Engine
from fleet.sim.api import start_demo
from fleet.sim.profiles import free_ports, write_demo_profile
from support.waiting import until


async def answers(engine: Engine, name: str):
    node = await engine.find_node(name)
    if node is None:
        return None
    r = (await engine.access.exec([node], "hostname", timeout=5)).results[0]
    return r if r.error_kind == "ok" else None


async def test_a_restarted_demo_boots_its_provisioned_machines_from_disk(tmp_path, xdg):
    path = write_demo_profile(tmp_path, machines=2, misbehave=False, install_seconds=0.5,
                              ports=free_ports(), subnet_octet=245,
                              options={"stagger_seconds": 0.2, "ipxe_size": 4096})
    engine = await Engine.open(path)
    try:
        await start_demo(engine)

        async def at_ipxe():
            ms = [m for m in await engine.machines() if m.stage == "ipxe"]
            return ms if len(ms) == 2 else None

        mac = sorted(m.mac for m in await until("machines at iPXE", at_ipxe, 30))[0]
        await engine.lease(mac, "debian12", hostname="keep1")
        first = await until("keep1 answers", lambda: answers(engine, "keep1"), 40)
        pins = (await engine.node("keep1")).host_keys
        from fleet.access.trust import pinned_keys

        listed = {(r["name"], r["kind"], r["source"]) for r in await pinned_keys(engine)}
        assert listed == {("keep1", "node", "callhome"), ("demo-jump", "jump", "demo")}
        registered = [e.id for e in await engine.events(500) if e.kind == "node.registered"]
    finally:
        await engine.close()  # the demo stops: every simulated machine powers off

    disk = Path(xdg["XDG_DATA_HOME"]) / "fleet" / "demo" / "disks" / "demo" / mac.replace(":", "")
    assert (disk / "os.json").is_file()
    assert disk.stat().st_mode & 0o777 == 0o700
    assert (disk / "host_key").stat().st_mode & 0o777 == 0o600

    engine = await Engine.open(path)
    try:
        restarted = await engine.last_event_id()
        await start_demo(engine)
        # the node is booting (not unreachable) while its machine powers on
        assert (await engine.node("keep1")).reachability.value == "booting"
        engine.access.start_liveness(interval=30.0)

        async def reachable():
            return (await engine.node("keep1")).reachability.value == "reachable"

        await until("liveness finds keep1 up", reachable, 20)
        since = [e for e in await engine.events(500) if e.id > restarted]
        kinds = [e.kind for e in since]
        assert "node.unreachable" not in kinds, kinds
        assert any(e.kind == "demo.disks" and "keep1" in e.message for e in since)
        up = next(e for e in since if e.kind == "node.reachable")
        assert "after it began booting" in up.message
        again = await until("keep1 answers after the restart",
                            lambda: answers(engine, "keep1"), 40)
        assert again.exit_status == first.exit_status == 0
        assert (await engine.machine(mac)).state.value == "provisioned"
        node = await engine.node("keep1")
        assert node.host_keys == pins  # same host key: nothing re-pinned
        assert [e.id for e in await engine.events(500)
                if e.kind == "node.registered"] == registered  # no second call-home
        # a wipe erases the disk: after it, the machine has nothing to boot
        await engine.release(mac, wipe=True)
        await until("wiped", lambda: _discovered(engine, mac), 30)
        assert not disk.exists()
    finally:
        await engine.close()


async def _discovered(engine, mac):
    return (await engine.machine(mac)).state.value == "discovered"


async def test_a_provisioned_machine_whose_disk_is_gone_is_named_with_the_fix(tmp_path, xdg):
    """A store from before the demo kept disks (or a deleted disk folder): the
    node cannot come back, and the demo says so plainly instead of leaving it
    silently unreachable."""
    import shutil

    path = write_demo_profile(tmp_path, machines=1, misbehave=False, install_seconds=0.5,
                              ports=free_ports(), subnet_octet=246,
                              options={"stagger_seconds": 0.1, "ipxe_size": 4096})
    engine = await Engine.open(path)
    try:
        await start_demo(engine)

        async def at_ipxe():
            ms = [m for m in await engine.machines() if m.stage == "ipxe"]
            return ms or None

        mac = (await until("machine at iPXE", at_ipxe, 30))[0].mac
        await engine.lease(mac, "debian12", hostname="lost1")
        await until("lost1 answers", lambda: answers(engine, "lost1"), 40)
    finally:
        await engine.close()
    shutil.rmtree(Path(xdg["XDG_DATA_HOME"]) / "fleet" / "demo" / "disks")

    engine = await Engine.open(path)
    try:
        restarted = await engine.last_event_id()
        await start_demo(engine)
        since = [e for e in await engine.events(500) if e.id > restarted]
        missing = [e for e in since if e.kind == "demo.disks_missing"]
        assert len(missing) == 1 and missing[0].severity.value == "warning"
        assert "lost1" in missing[0].message and "release" in missing[0].message
        assert not any(e.kind == "demo.disks" for e in since)
    finally:
        await engine.close()

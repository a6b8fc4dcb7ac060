"""A node that has called home is `booting` until it answers SSH: liveness
checks it within seconds and calls it unreachable only after the boot grace.

Real store and liveness loop; the demo site provides a machine that installs,
calls home, reboots into its OS and answers SSH behind the demo's jump."""

from __future__ import annotations

import asyncio
import time

from fleet.access.liveness import Liveness
from fleet.core.model import Node, Reachability
from fleet.engine import Engine
from fleet.sim.api import start_demo
from fleet.sim.profiles import free_ports, write_demo_profile


async def register(engine: Engine, name: str, registered_at: float) -> None:
    """A node as a call-home leaves it (this one never answers: rack2 has no route)."""
    async with engine.store.transaction() as tx:
        await engine.store.nodes.save(tx, Node(
            name=name, site="rack2", address="10.92.0.77", source="callhome",
            mac="ac:1f:6b:00:00:09", registered_at=registered_at))
        await engine.store.nodes.set_reachability(tx, name, Reachability.BOOTING,
                                                  registered_at)


async def test_a_silent_booting_node_stays_booting_until_the_grace(profile_path):
    now = [1000.0]
    engine = await Engine.open(profile_path, clock=lambda: now[0])
    try:
        await register(engine, "fresh", 1000.0)
        live = Liveness(engine, boot_grace=600.0)
        now[0] = 1001.0
        assert await live.booting_due() == []
        for at, due in ((1002.0, ["fresh"]), (1002.5, []), (1003.0, ["fresh"]),
                        (1013.0, ["fresh"]), (1020.0, []), (1028.0, ["fresh"])):
            now[0] = at
            assert await live.booting_due() == due, at
            if due:
                await live.check_once(due)
                assert (await engine.node("fresh")).reachability is Reachability.BOOTING
        kinds = [e.kind for e in await engine.events(100, "fresh")]
        assert kinds == []  # no warning while it boots
        now[0] = 1600.0  # the grace has passed
        assert await live.booting_due() == ["fresh"]
        await live.check_once(["fresh"])
        node = await engine.node("fresh")
        assert node.reachability is Reachability.UNREACHABLE
        events = await engine.events(100, "fresh")
        assert [e.kind for e in events] == ["node.unreachable"]
        assert "no answer in 10m since its call-home" in events[0].message
        # an exec failure does not end a boot either (only liveness does)
        await register(engine, "other", 1600.0)
        async with engine.store.transaction() as tx:
            await engine.store.nodes.set_reachability_many(
                tx, 1601.0, [("other", Reachability.UNREACHABLE, "no route")])
        assert (await engine.node("other")).reachability is Reachability.BOOTING
    finally:
        await engine.close()


async def test_a_new_demo_node_is_booting_then_reachable_within_seconds(tmp_path, xdg):
    path = write_demo_profile(tmp_path, machines=1, misbehave=False, install_seconds=0.5,
                              ports=free_ports(), subnet_octet=243,
                              options={"stagger_seconds": 0.2, "ipxe_size": 4096})
    engine = await Engine.open(path)
    try:
        await start_demo(engine)
        engine.access.start_liveness(interval=30.0)
        deadline = time.monotonic() + 30
        while not [m for m in await engine.machines() if m.stage == "ipxe"]:
            assert time.monotonic() < deadline, "the machine never reached iPXE"
            await asyncio.sleep(0.2)
        mac = (await engine.machines())[0].mac
        await engine.lease(mac, "debian12", hostname="boot1")
        while await engine.find_node("boot1") is None:
            assert time.monotonic() < deadline, "no call-home"
            await asyncio.sleep(0.05)
        registered = time.time()
        assert (await engine.node("boot1")).reachability is Reachability.BOOTING
        while (await engine.node("boot1")).reachability is not Reachability.REACHABLE:
            assert time.time() - registered < 15, "not reachable 15 s after its call-home"
            await asyncio.sleep(0.1)
        took = time.time() - registered
        events = await engine.events(100, "boot1")
        kinds = [e.kind for e in events]
        assert "node.unreachable" not in kinds, kinds
        reachable = next(e for e in events if e.kind == "node.reachable")
        assert "after its call-home" in reachable.message
        print(f"reachable {took:.1f}s after the call-home: {reachable.message}")
    finally:
        await engine.close()


async def test_an_unusable_operator_key_is_one_line_per_round_not_a_traceback(
        tmp_path, xdg, caplog):
    """A site host whose profile names the operator's key, which is not there
    (a path on the operator's machine): liveness says why, each round, in a line."""
    from support.profiles import write_profile

    (tmp_path / "not-a-key").mkdir()
    path = write_profile(tmp_path, overrides={
        "operator": {"ssh": {"identity": str(tmp_path / "not-a-key")}}})
    engine = await Engine.open(path)
    try:
        live = Liveness(engine, interval=0.2, tick=0.05)
        task = asyncio.ensure_future(live.run())
        await asyncio.sleep(0.7)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await engine.close()
    rounds = [r for r in caplog.records if r.name.startswith("fleet") and "liveness" in
              r.getMessage()]
    assert rounds, [r.getMessage() for r in caplog.records]
    assert all(r.exc_info is None for r in rounds), [r.getMessage() for r in rounds]
    assert "operator.ssh.identity" in rounds[0].getMessage()

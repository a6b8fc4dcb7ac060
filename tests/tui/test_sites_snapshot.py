"""The Sites view as a picture: rack1 and rack2 here, rack3 reached through jump gw and
away (its replica's last word at fixed times; the agent's port is closed, so
every try to reach it fails the same way), its machines drawn stale."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from fleet import records as rec
from fleet.core import lifecycle as lc
from fleet.core.arch import FirmwareArch
from fleet.engine import Engine
from fleet.sites.replica_store import ReplicaStore
from support.profiles import write_profile
from tui.conftest import settle
from tui.seed import T0, FixedClock, paths_in, seed

CLOSED_PORT = 1  # nothing listens there: the channel never opens
FAR = [("ac:1f:6b:00:00:42", "discovered"), ("ac:1f:6b:00:00:43", "leased")]


def seeded_two_sites(folder):
    """The seeded console store and profile (rack3 behind an agent), and its
    replica of rack3: heard from at T0-300, away since T0-240."""
    (folder / "known_hosts").write_text("")
    write_profile(folder, "t", overrides={
        "operator": {"ssh": {"known_hosts": [str(folder / "known_hosts")],
                             "connect_timeout": 2}},
        "jumps": [{"name": "gw", "address": "127.0.0.1", "port": CLOSED_PORT}],
        "sites": [{"name": "rack3", "subnets": ["10.93.0.0/24"],
                   "agent": {"host": "127.0.0.1", "port": CLOSED_PORT, "via": "gw",
                             "user": "fleet"}}]})

    async def go():
        engine = await Engine.open(folder / "t.yaml", paths=paths_in(folder),
                                   clock=FixedClock(T0 - 3600))
        try:
            await seed(engine)
        finally:
            await engine.close()
        store = await ReplicaStore.open(paths_in(folder).state_dir / "replica-t.db")
        try:
            heard = T0 - 300
            await store.heard("rack3", heard, version="0.1.0", last_event_id=len(FAR))
            machines, events = [], []
            for i, (mac, state) in enumerate(FAR, start=1):
                t = lc.discover(mac, heard - 600, arch=FirmwareArch.UEFI_X64,
                                nic_vendor="Super Micro", distributor="rack3", stage="ipxe")
                machine = t.machine
                if state == "leased":
                    machine = lc.apply(machine, lc.LeaseOp(1, "debian12", "far1"),
                                       heard - 400).machine
                machines.append(rec.machine(replace(machine, last_seen=heard - 30)))
                events.append({"id": i, "ts": rec.iso(heard - 600 + i),
                               "kind": "machine.discovered",
                               "subject": mac, "severity": "info",
                               "message": f"new machine {mac}", "data": {}})
            await store.apply_events("rack3", events, heard)
            await store.replace_rows("rack3", machines, [], len(FAR), heard)
            await store.lost("rack3", T0 - 240, "not yet tried")
        finally:
            await store.close()
    asyncio.run(go())
    return folder


def console(folder):
    from fleet.profile import load_profile
    from fleet.tui.app import FleetApp

    return FleetApp(load_profile(folder / "t.yaml"), paths=paths_in(folder),
                    clock=FixedClock(T0), blink=False)


def after_a_try(*keys: str):
    async def run_before(pilot):
        # the console tried rack3 once (the reason is that try's), and shows it
        app = pilot.app
        await settle(pilot, lambda: any("Connect call failed" in (r["reason"] or "")
                                        for r in app.site_records), tries=1000)
        await settle(pilot, lambda: "Connect call failed" in str(
            app.pane("sites").table.rows["rack3"].values[6]), tries=200)
        await settle(pilot, lambda: "ac:1f:6b:00:00:43" in app.pane("machines").table.rows)
        if keys:
            await pilot.press(*keys)
        await pilot.pause(0.2)
    return run_before


def test_sites_view(snap_compare, tmp_path):
    assert snap_compare(console(seeded_two_sites(tmp_path)), terminal_size=(160, 30),
                        run_before=after_a_try("6", "z"))


def test_dashboard_with_a_site_away(snap_compare, tmp_path):
    """The Sites pane on the dashboard; rack3's machines stale, and since when."""
    assert snap_compare(console(seeded_two_sites(tmp_path)), terminal_size=(160, 50),
                        run_before=after_a_try())


async def test_the_first_page_counts_the_remote_sites_rows(tmp_path):
    """The console's first screen (Engine.first_page) comes from the store and the
    replica at once, each read only as far as the page goes."""
    from fleet.sites.hub import SiteHub

    folder = await asyncio.to_thread(seeded_two_sites, tmp_path)
    engine = await Engine.open(folder / "t.yaml", paths=paths_in(folder), remote=SiteHub)
    try:
        machines, n_machines, nodes, n_nodes = await engine.first_page(7)
        assert (n_machines, n_nodes) == (6 + len(FAR), 3)
        macs = [m.mac for m in machines]
        assert macs == sorted(macs) and len(macs) == 7
        assert [m.distributor for m in machines if m.mac.startswith("ac:1f")] == ["rack3"]
    finally:
        await engine.close()

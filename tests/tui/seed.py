"""A deterministic fleet for console tests, snapshots, the bench and tmux checks:
a tmp profile, a store seeded with fixed machines/nodes/jobs/events, a fixed clock."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fleet.core import lifecycle as lc
from fleet.core.arch import FirmwareArch
from fleet.core.model import JobState
from fleet.engine import Engine
from fleet.oui import nic_vendor
from fleet.paths import Paths
from support.profiles import write_profile

T0 = 1_790_000_000.0  # 2026-09-21, a fixed "now" for snapshots

MACS = [
    ("52:54:00:12:34:01", FirmwareArch.UEFI_X64, "rack1"),
    ("52:54:00:12:34:02", FirmwareArch.BIOS, "rack1"),
    ("3c:ec:ef:00:aa:03", FirmwareArch.UEFI_X64, "rack1"),
    ("3c:ec:ef:00:aa:04", FirmwareArch.UEFI_ARM64, "rack2"),
    ("00:25:90:de:ad:05", FirmwareArch.UEFI_X64_HTTP, "rack1"),
    ("00:25:90:de:ad:06", FirmwareArch.BIOS, "rack2"),
]


class FixedClock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def paths_in(folder: Path) -> Paths:
    return Paths(config_dir=folder / "config" / "fleet", data_dir=folder / "data" / "fleet",
                 state_dir=folder / "state" / "fleet", cache_dir=folder / "cache" / "fleet")


async def seed_machines(engine: Engine, macs=MACS, t0: float = T0 - 3600) -> None:
    store = engine.store
    async with store.transaction() as tx:
        for i, (mac, arch, dist) in enumerate(macs):
            seen = t0 + i * 97
            t = lc.discover(mac, seen, arch=arch, nic_vendor=nic_vendor(mac) or "QEMU",
                            distributor=dist, stage="ipxe")
            machine = replace(t.machine, last_seen=seen + 60 * (i + 1))
            await store.machines.save(tx, machine)
            await store.events.append(tx, t.events)
            engine.machine_states[mac] = machine.state


async def seed(engine: Engine) -> None:
    """Six machines (2 leased, 1 provisioning, 1 failed), 3 nodes, 3 jobs, events."""
    clock = engine.clock
    await seed_machines(engine)
    clock.now = T0 - 1800
    await engine.lease(MACS[2][0], "debian12", "web7", "10.91.0.27")
    await engine.lease(MACS[3][0], "rocky9", "db3")
    await engine.lease(MACS[5][0], "debian12", "web9")
    clock.now = T0 - 1200
    await engine.advance(MACS[3][0], lc.InstallStarted())
    await engine.advance(MACS[5][0], lc.Fail("install script exited 1"))
    async with engine.store.transaction() as tx:
        j1 = await engine.store.jobs.create(tx, "ipxe", {"distributor": "rack1"}, T0 - 900)
        await engine.store.jobs.update(tx, j1, state=JobState.SUCCEEDED, progress=1.0,
                                       phase="done", started_at=T0 - 899,
                                       finished_at=T0 - 833)
        j2 = await engine.store.jobs.create(tx, "iso", {"label": "FLEET"}, T0 - 120)
        await engine.store.jobs.update(tx, j2, state=JobState.RUNNING, progress=0.62,
                                       phase="xorriso", started_at=T0 - 118)
        j3 = await engine.store.jobs.create(tx, "grub", {}, T0 - 60)
        await engine.store.jobs.update(tx, j3, state=JobState.FAILED, progress=0.3,
                                       phase="mkimage", started_at=T0 - 59,
                                       finished_at=T0 - 50, error="grub-mkimage missing")
    clock.now = T0


async def open_seeded(folder: Path, *, read_only: bool = False, seeded: bool = True,
                      name: str = "t", **open_options) -> Engine:
    """`open_options`: more of Engine.open's (e.g. a stand-in `builds` or `access`)."""
    profile = write_profile(folder, name)
    clock = FixedClock(T0 - 3600)
    engine = await Engine.open(profile, paths=paths_in(folder), clock=clock, **open_options)
    if seeded:
        try:
            await seed(engine)
        except BaseException:
            await engine.close()
            raise
    else:
        clock.now = T0
    if read_only:
        engine.read_only = True
    return engine

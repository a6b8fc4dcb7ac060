"""The simulated site: machines, the jump, and the demo's stand-in for power control.

`DemoSite(engine, site_name)` builds everything from the profile's `demo:`
section and the site's distributor, jump and subnets:

- machines get MACs with real server makers' OUIs (`vendors.py`), firmware
  kinds, serials and products from the seed, and addresses in the site's first
  subnet from `x.y.1.1` up (the `x.y.0.0/24` is left to the infrastructure:
  the jump lives there);
- the jump (`jump.py`) is the site's first jump, with a host key generated once
  under `keys_dir` and pinned in the store as the jump's key (the demo made it,
  so no trust-on-first-use is needed: every process sharing the store trusts it);
- the operator's identity is the profile's `operator.ssh.identity` (generated
  there, 0600, when missing);
- the iPXE binaries the distributor serves are small stand-ins written under
  the data dir (`demo/ipxe/`): the simulated firmware downloads them over TFTP
  but runs the behaviour in `machine.py` (a profile that sets
  `distributor.ipxe_dir` keeps its own);
- a stand-in wiper (`demo/wiper/`, recorded as a `wiper` artifact assigned to
  the distributor) so a machine released with a wipe has one to boot: the
  simulated machine does what the real wiper's /init does (machine.py);
- installed machines' disks (OS, host key) are kept under the data dir
  (`demo/disks/<profile>/`, `disks.py`): a restarted demo's provisioned
  machines boot from disk again, same node and host key;
- the demo follows fleet's events: a machine fleet releases is power-cycled
  (what an operator or a BMC would do), so it PXE boots into whatever fleet
  now says (wipe, or the hold loop).

`demo.options` (all optional): `stagger_seconds` (power-on spread; default
0.25 s per machine, 3..30 s), `ipxe_size` (bytes of each stand-in binary,
default 65536), `retry_seconds` (wait after "no bootable device", 10),
`unreachable_after` (seconds an `unreachable` node answers, 90), `quirk_every`
(one misbehaving machine in N, 6).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import random
import time
from pathlib import Path

import asyncssh

from fleet.access.trust import jump_pins, store_jump_pins
from fleet.access.keys import KeyStore, operator_key
from fleet.core.model import HostKey, MachineState, Severity
from fleet.errors import BadInput
from fleet.sim.disks import DiskShelf
from fleet.sim.jump import JumpServer
from fleet.sim.machine import QUIRKS, SimMachine
from fleet.sim.vendors import make_hardware

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger(__name__)

STAND_IN_BINARIES = ("undionly.kpxe", "ipxe.efi", "snponly.efi", "ipxe-arm64.efi")
JUMP_KEY_NAME = "demo-jump-host"


class DemoSite:
    def __init__(self, engine: "Engine", site_name: str | None = None):
        profile = engine.profile
        cfg = profile.demo
        if cfg is None:
            raise BadInput(f"profile {profile.name} has no demo: section")
        self.engine = engine
        self.cfg = cfg
        opts = dict(cfg.options)
        # only a site this process serves: one with an agent has its own (agent_site.py)
        sites = [s for s in profile.sites if s.distributor is not None and s.name in engine.here]
        if site_name is None:
            site_name = opts.get("site") or (sites[0].name if sites else None)
        if site_name is None:
            raise BadInput("the demo needs a site with a distributor")
        self.site_cfg = profile.site(site_name)
        self.site_name = site_name
        dist = self.site_cfg.distributor
        if not self.site_cfg.subnets or not self.site_cfg.jumps:
            raise BadInput(f"demo site {site_name} needs subnets and a jump")
        self.subnet = self.site_cfg.subnets[0]
        if not self.subnet.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
            raise BadInput(f"demo site {site_name}: subnet {self.subnet} is not loopback "
                           "(127.0.0.0/8); the demo only plays on the loopback")
        self.jump_cfg = profile.jump(self.site_cfg.jumps[0])
        self.jump_address = self.jump_cfg.address
        self.server = dist.address
        self.ports = {"dhcp": dist.ports.dhcp, "pxe": dist.ports.pxe,
                      "tftp": dist.ports.tftp, "http": dist.ports.http}
        self.install_seconds = float(cfg.install_seconds)
        n = int(cfg.machines)
        self.stagger = float(opts.get("stagger_seconds", min(30.0, max(3.0, n * 0.25))))
        self.ipxe_size = int(opts.get("ipxe_size", 65536))
        self.retry_seconds = float(opts.get("retry_seconds", 10.0))
        self.unreachable_after = float(opts.get("unreachable_after", 90.0))
        self.quirk_every = max(2, int(opts.get("quirk_every", 6)))
        self.rng = random.Random(cfg.seed)
        self.operator_public = ""
        self.jump: JumpServer | None = None
        # installed machines' disks, kept across restarts of the demo
        self.disks = DiskShelf(engine.paths.data_dir / "demo" / "disks" / profile.name)
        self.machines: list[SimMachine] = []
        self.by_mac: dict[str, SimMachine] = {}
        self.started_at = 0.0
        self._follow: asyncio.Task | None = None
        self._sub = None

    # -- preparing (before the boot services start, or after: files are looked up live)

    def prepare_files(self) -> Path | None:
        """Write the stand-in iPXE binaries and point the site's BootFiles at them."""
        if self.site_cfg.distributor.ipxe_dir is not None:
            return None
        folder = self.engine.paths.data_dir / "demo" / "ipxe"
        folder.mkdir(parents=True, exist_ok=True)
        for name in STAND_IN_BINARIES:
            path = folder / name
            head = (f"fleet demo: stand-in for iPXE {name}. The simulated firmware "
                    f"downloads it and runs fleet/sim/machine.py instead.\n").encode()
            data = (head * (self.ipxe_size // len(head) + 1))[:self.ipxe_size]
            if not path.is_file() or path.stat().st_size != len(data):
                path.write_bytes(data)
        self.engine.boot.files(self.site_name).ipxe_dir = folder
        return folder

    async def prepare_wiper(self) -> None:
        """Record the stand-in wiper as an artifact assigned to the distributor
        (once: the artifact id is the hash of its stand-in files)."""
        from fleet.boot import wipe
        from fleet.core.model import Artifact

        engine = self.engine
        if engine.read_only or await wipe.current_wiper(engine, self.site_name) is not None:
            return
        folder = engine.paths.data_dir / "demo" / "wiper"
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        for name in wipe.FILES:
            data = (f"fleet demo: stand-in for the wiper's {name}; the simulated machine "
                    f"runs fleet/sim/machine.py instead.\n").encode()
            (folder / name).write_bytes(data)
            digest.update(data)
        aid = digest.hexdigest()
        artifact = Artifact(id=aid, kind=wipe.KIND, name="wiper-demo", path=str(folder),
                            sha256=aid, size=0, created_at=time.time(), version="demo",
                            meta={"demo": True})
        async with engine.store.transaction() as tx:
            await engine.store.artifacts.save(tx, artifact)
            await engine.store.distributors.assign(tx, self.site_name, aid)

    async def operator_key(self) -> str:
        """fleet's operator public key: the profile's identity, else fleet's own
        pair under the data dir (generated once); the pool offers the same key."""
        return (await operator_key(self.engine)).public

    async def pin_jump_key(self) -> asyncssh.SSHKey:
        """The jump's host key (generated once under keys_dir), pinned in the store."""
        pair, _ = KeyStore(self.engine.paths.keys_dir).generate(JUMP_KEY_NAME,
                                                                comment="fleet-demo-jump")
        key = asyncssh.read_private_key(str(pair.private_path))
        kind, body = pair.public.split()[:2]
        engine, name = self.engine, self.jump_cfg.name
        if not any((p.key_type, p.key) == (kind, body) for p in await jump_pins(engine, name)):
            pin = HostKey(kind, body, pair.fingerprint, "demo", time.time())
            await store_jump_pins(engine, name, [pin], engine.event(
                "hostkey.pinned", name,
                f"demo: pinned the host key of the demo's own jump {name} "
                f"({self.jump_address}:{self.jump_cfg.port}): {pair.fingerprint}",
                jump=name, fingerprint=pair.fingerprint, source="demo"))
        return key

    def jump_networks(self) -> list[ipaddress.IPv4Network]:
        """Where the jump forwards to: the site's subnets, and the agent hosts of
        the sites reached through it (the demo's other sites' hosts)."""
        nets = list(self.site_cfg.subnets)
        for site in self.engine.profile.sites:
            if site.agent is not None and site.agent.via == self.jump_cfg.name:
                with contextlib.suppress(ValueError):
                    nets.append(ipaddress.IPv4Network(f"{site.agent.host}/32"))
        return nets

    def machine_address(self, i: int) -> str:
        base = int(self.subnet.network_address)
        addr = ipaddress.IPv4Address(base + (1 + i // 250) * 256 + 1 + i % 250)
        if addr not in self.subnet:
            raise BadInput(f"demo: {self.cfg.machines} machines do not fit in {self.subnet}")
        return str(addr)

    def build_machines(self) -> None:
        used: set[str] = set()
        n = int(self.cfg.machines)
        quirky = []
        if self.cfg.misbehave and n >= 2:
            count = max(1, n // self.quirk_every)
            quirky = self.rng.sample(range(n), min(n, count))
        quirks = {i: QUIRKS[k % len(QUIRKS)] for k, i in enumerate(sorted(quirky))}
        for i in range(n):
            hw = make_hardware(self.rng, i, used)
            at = self.stagger * i / max(1, n) + self.rng.uniform(0, 0.2)
            m = SimMachine(index=i, hw=hw, ip=self.machine_address(i), site=self,
                           quirk=quirks.get(i), power_on_at=at, disk=self.disks.load(hw.mac))
            if m.quirk == "rekey" and m.disk is not None:
                m.kept_key = m.disk.os.host_key  # the key that survives its reinstalls
            self.machines.append(m)
            self.by_mac[hw.mac] = m

    # -- running ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.prepare_files()
        await self.prepare_wiper()
        self.operator_public = await self.operator_key()
        host_key = await self.pin_jump_key()
        services = self.engine.boot.services.services(self.site_name)
        if services is not None:  # the ports actually bound (0 in a profile = any)
            self.ports.update({k: v for k, v in services.ports().items() if v})
        self.jump = JumpServer(self.jump_address, self.jump_cfg.port, host_key,
                               [self.operator_public], self.jump_networks())
        try:
            await self.jump.start()
        except OSError as err:
            from fleet.errors import EnvironmentProblem

            raise EnvironmentProblem(
                f"demo: the jump cannot listen on {self.jump_address}:{self.jump_cfg.port}: "
                f"{err.strerror or err}") from err
        self.build_machines()
        await self._boot_from_disks()
        self.started_at = time.monotonic()
        self._sub = self.engine.follow()
        self._follow = asyncio.ensure_future(self._follow_events(self._sub))
        for m in self.machines:
            m.task = asyncio.ensure_future(m.run())
            m.task.set_name(f"demo-machine-{m.index}")
        quirks = sorted({m.quirk for m in self.machines if m.quirk})
        message = (f"demo: {len(self.machines)} simulated machines powering on over "
                   f"{self.stagger:.0f}s in {self.subnet}; jump {self.jump_cfg.name} at "
                   f"{self.jump_address}:{self.jump_cfg.port}"
                   + (f"; misbehaving on purpose: {', '.join(quirks)}" if quirks else ""))
        log.info("%s", message)
        await self.engine.record(self.engine.event(
            "demo.started", self.site_name, message, machines=len(self.machines),
            subnet=str(self.subnet), jump=self.jump_cfg.name,
            quirks={m.mac: m.quirk for m in self.machines if m.quirk}))

    async def _boot_from_disks(self) -> None:
        """Provisioned machines with a disk power on into their OS again: their
        nodes are booting (liveness waits for them instead of calling them
        unreachable), and an event says so."""
        engine = self.engine
        states = engine.machine_states
        names, diskless = [], []
        now = engine.clock()
        node_of = {n.mac: n.name for n in await engine.store.nodes.list() if n.mac}
        async with engine.store.transaction() as tx:
            for m in self.machines:
                if states.get(m.mac) is not MachineState.PROVISIONED:
                    continue
                if m.disk is None:  # installed before the demo kept disks, or deleted
                    if m.mac in node_of:
                        diskless.append(node_of[m.mac])
                    continue
                node = await engine.store.nodes.get(m.disk.os.hostname)
                if node is None or node.mac != m.mac:
                    continue
                await engine.store.nodes.start_booting(tx, node.name, now)
                names.append(node.name)
            if names:
                await engine.store.events.append(tx, [engine.event(
                    "demo.disks", self.site_name,
                    f"demo: {len(names)} provisioned "
                    f"{'machine boots' if len(names) == 1 else 'machines boot'} from disk "
                    f"again: {', '.join(sorted(names))}", nodes=sorted(names))])
            if diskless:
                await engine.store.events.append(tx, [engine.event(
                    "demo.disks_missing", self.site_name,
                    f"demo: {len(diskless)} provisioned machines have no disk to boot "
                    f"from, so their nodes stay down: {', '.join(sorted(diskless))}; "
                    "release them (fleet --headless release MAC) to install them again",
                    severity=Severity.WARNING, nodes=sorted(diskless))])

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        tasks = [m.task for m in self.machines if m.task is not None]
        if self._follow is not None:
            tasks.append(self._follow)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._follow = None
        if self.jump is not None:
            await self.jump.stop()
            self.jump = None

    async def _follow_events(self, sub) -> None:
        async for event in sub:
            if event.kind in ("machine.released", "machine.wiping"):
                m = self.by_mac.get(event.subject)
                if m is not None:
                    log.info("demo: power-cycling %s (%s)", m.mac, event.kind)
                    m.request_reboot()

    # -- looking ------------------------------------------------------------------------------

    def status(self) -> dict:
        phases: dict[str, int] = {}
        for m in self.machines:
            key = m.phase.split(":")[0] if m.phase.startswith("install") else m.phase
            phases[key] = phases.get(key, 0) + 1
        return {"machines": len(self.machines), "phases": phases,
                "discovered": sum(1 for m in self.machines if m.discovered_at is not None),
                "nodes_up": sum(1 for m in self.machines if m.node is not None),
                "quirks": {m.mac: m.quirk for m in self.machines if m.quirk},
                "jump_forwards": self.jump.forwards if self.jump else 0}

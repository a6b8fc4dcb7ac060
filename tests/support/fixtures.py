"""pytest fixtures for the root testbed (loaded by tests/conftest.py).

Use them only from tests marked `@pytest.mark.root`.

- `testbed_guard` (session): takes the /run/fleet-testbed.lock flock, sweeps
  what dead test processes left, routes every test subnet `unreachable` in the
  root namespace, installs atexit/SIGTERM cleanup; `.keys` is the session's
  KeyStore (client key pair + cached host keys).
- `ssh_fleet_topology` (module): an `SshFleetTopology`: operator (root ns,
  10.90.0.1 on a root bridge) -> jumps gw1 10.90.0.2 / gw2 10.90.0.3
  (ip_forward=0) -> `nodes` bridge 10.91.0.0/24; jump `inner` 10.91.0.2 ->
  `nodes2` bridge 10.92.0.0/24. 10.91.0.230-249 and 10.92.0.230-249 are
  dropped by nftables.
- `ssh_fleet` (function): factory `ssh_fleet(nodes=N, nodes2=M, jumps=("gw1",),
  default_config=False) -> SshFleet` starting real sshds; all stopped after the test.
- `site_topology` (function): a `SiteTopology` for PXE: `site` ns with br0
  10.77.0.1/24 + fd77::1/64, `dhcp` ns running dnsmasq (ordinary DHCP) at
  10.77.0.2 on a veth into br0, `add_tap(name)` for QEMU, `add_client(name)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.dnsmasq import DNSMASQ, Dnsmasq, ordinary_dhcp, proxy_dhcp
from support.keys import KeyStore
from support.netns import (IP, JUMP_LINK, NFT, NODES, NODES2, SITE, SITE6, SYSCTL,
                           Topology, acquire_testbed_lock, cleanup_all,
                           install_cleanup_hooks, make_workdir, protect_subnets,
                           sweep_stale, unprotect_subnets)
from support.sshd import SSHD, UNSHARE, Sshd, SshdFarm

TOOLS = [IP, NFT, SYSCTL, SSHD, UNSHARE, DNSMASQ, "/usr/bin/ssh", "/usr/bin/ssh-keygen",
         "/usr/bin/busybox"]


@dataclass
class TestbedGuard:
    __test__ = False  # not a test class
    keys: KeyStore
    workdir: Path
    swept: list[str]


@pytest.fixture(scope="session")
def testbed_guard():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    missing = [t for t in TOOLS if not os.access(t, os.X_OK)]
    if missing:
        pytest.fail(f"testbed tools missing: {missing}")
    acquire_testbed_lock()
    install_cleanup_hooks()
    swept = sweep_stale()
    subnets = protect_subnets()
    workdir = make_workdir("session")
    try:
        yield TestbedGuard(KeyStore(workdir / "keys"), workdir, swept)
    finally:
        cleanup_all()
        unprotect_subnets(subnets)


# ------------------------------------------------------------------ SSH fleet

OPERATOR = "10.90.0.1"
JUMPS = {"gw1": ("10.90.0.2", "10.91.0.1"), "gw2": ("10.90.0.3", "10.91.0.3")}
INNER = ("10.91.0.2", "10.92.0.1")  # jump "inner": nodes bridge -> nodes2 bridge
DROPPED = "10.91.0.230-10.91.0.249"
DROPPED2 = "10.92.0.230-10.92.0.249"


class SshFleetTopology:
    """Namespaces and links of the SSH fleet (see module docstring); no sshds."""

    def __init__(self):
        t = self.topo = Topology("ssh", protect=(JUMP_LINK, NODES, NODES2))
        try:
            self.operator_bridge = t.add_bridge(None)
            t.add_addr(None, self.operator_bridge, f"{OPERATOR}/24")
            for ns in ("nodes", "nodes2"):
                t.add_ns(ns)
                t.add_bridge(ns, "br0")
            for name, (up, down) in JUMPS.items():
                t.add_ns(name)
                t.add_veth(None, None, name, "eth0", master_a=self.operator_bridge)
                t.add_addr(name, "eth0", f"{up}/24")
                t.add_veth(name, "eth1", "nodes", name, master_b="br0")
                t.add_addr(name, "eth1", f"{down}/24")
            t.add_ns("inner")
            t.add_veth("inner", "eth0", "nodes", "inner", master_b="br0")
            t.add_veth("inner", "eth1", "nodes2", "inner", master_b="br0")
            t.add_addr("inner", "eth0", f"{INNER[0]}/24")
            t.add_addr("inner", "eth1", f"{INNER[1]}/24")
            t.nft_drop("nodes", DROPPED)
            t.nft_drop("nodes2", DROPPED2)
        except BaseException:
            t.close()
            raise
        self.jump_addresses = {n: up for n, (up, _) in JUMPS.items()} | {"inner": INNER[0]}
        self._assigned: set[str] = set()

    def ns(self, name: str) -> str:
        return self.topo.ns(name)

    def assign(self, ns: str, addresses: list[str]) -> None:
        """Put node addresses (/24) on the ns's bridge (once each)."""
        new = [a for a in addresses if a not in self._assigned]
        if new:
            self.topo.add_addr(ns, "br0", *(f"{a}/24" for a in new))
            self._assigned.update(new)

    def close(self) -> None:
        self.topo.close()


class SshFleet:
    """Running sshds on an SshFleetTopology, with client-side helpers."""

    def __init__(self, fleet_topo: SshFleetTopology, keys: KeyStore):
        self.t = fleet_topo
        self.keys = keys
        self.farm = SshdFarm(fleet_topo.topo, keys)
        self.jumps: dict[str, Sshd] = {}
        self.nodes: list[Sshd] = []
        self.nodes2: list[Sshd] = []
        d = self.farm.dir
        self.known_hosts = d / "known_hosts"
        self.ssh_config = d / "ssh_config"
        self.client_key = keys.client_key
        self._write_client_files()

    def start(self, nodes: int = 0, *, nodes2: int = 0, jumps=("gw1",), first: int = 10,
              default_config: bool = False) -> "SshFleet":
        """Start jumps (if not running) and `nodes` sshds at 10.91.0.<first>..,
        `nodes2` at 10.92.0.<first>.. (reached through gw1/gw2 then inner)."""
        want = [j for j in jumps if j not in self.jumps]
        if nodes2 and "inner" not in self.jumps and "inner" not in want:
            want.append("inner")
        specs = [(j, j, self.t.jump_addresses[j]) for j in want]  # ns name = jump name
        for s in self.farm.start(specs, default_config=default_config):
            self.jumps[s.name] = s
        self.start_nodes([f"10.91.0.{first + i}" for i in range(nodes)],
                         default_config=default_config)
        self.start_nodes([f"10.92.0.{first + i}" for i in range(nodes2)],
                         default_config=default_config)
        return self

    def start_nodes(self, addresses: list[str], *, default_config: bool = False) -> list[Sshd]:
        """sshds at explicit addresses (10.91.0.x -> `nodeX`, 10.92.0.x -> `deepX`)."""
        out = []
        for prefix, ns, name, bucket in (("10.91.0.", "nodes", "node", self.nodes),
                                         ("10.92.0.", "nodes2", "deep", self.nodes2)):
            mine = [a for a in addresses if a.startswith(prefix)]
            if not mine:
                continue
            self.t.assign(ns, mine)
            started = self.farm.start([(ns, f"{name}{a.rsplit('.', 1)[1]}", a) for a in mine],
                                      default_config=default_config)
            bucket.extend(started)
            out += started
        self._write_client_files()
        return out

    def stop(self, *sshds: Sshd) -> None:
        """Stop sshds and their live sessions (a node or jump going down)."""
        self.farm.stop(*sshds)
        for s in sshds:
            self.jumps.pop(s.name, None)
            for bucket in (self.nodes, self.nodes2):
                if s in bucket:
                    bucket.remove(s)

    def close(self) -> None:
        self.farm.stop_all()
        for bucket in (self.jumps, self.nodes, self.nodes2):
            bucket.clear()

    # client side
    def _write_client_files(self) -> None:
        self.known_hosts.write_text(self.farm.known_hosts_text())
        self.ssh_config.write_text(
            f"User root\nIdentityFile {self.client_key}\nIdentitiesOnly yes\n"
            f"UserKnownHostsFile {self.known_hosts}\nGlobalKnownHostsFile /dev/null\n"
            "StrictHostKeyChecking yes\nBatchMode yes\nKexAlgorithms curve25519-sha256\n"
            "ConnectTimeout 10\nLogLevel ERROR\n")

    def openssh_argv(self, target: Sshd | str, *command: str,
                     via: tuple[str, ...] = ("gw1",), options: tuple[str, ...] = ()) -> list[str]:
        """`ssh -J` argv. `-F <our config>` instead of `-F none`: ssh passes only
        -F (not -i / -o) to the jump hops it spawns, so they need the file."""
        host = target.address if isinstance(target, Sshd) else target
        jumps = ",".join(f"root@{self.t.jump_addresses[j]}" for j in via)
        return ["/usr/bin/ssh", "-F", str(self.ssh_config), "-i", str(self.client_key),
                "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", *(["-J", jumps] if via else []),
                *options, f"root@{host}", *command]

    def asyncssh_known_hosts(self):
        import asyncssh
        return asyncssh.import_known_hosts(self.farm.known_hosts_text())

    def asyncssh_options(self) -> dict:
        """kwargs for asyncssh.connect: our key, strict known_hosts, no agent/config."""
        import asyncssh
        return dict(username="root", known_hosts=self.asyncssh_known_hosts(),
                    client_keys=[asyncssh.read_private_key(str(self.client_key))],
                    agent_path=None, config=None, connect_timeout=10)


@pytest.fixture(scope="module")
def ssh_fleet_topology(testbed_guard):
    t = SshFleetTopology()
    yield t
    t.close()


@pytest.fixture
def ssh_fleet(ssh_fleet_topology, testbed_guard):
    fleets: list[SshFleet] = []

    def start(nodes: int = 0, **kw) -> SshFleet:
        if not fleets:
            fleets.append(SshFleet(ssh_fleet_topology, testbed_guard.keys))
        return fleets[0].start(nodes, **kw)

    yield start
    for f in fleets:
        f.close()


# ------------------------------------------------------------------ PXE site

class SiteTopology:
    """The PXE site: `site` ns (br0 10.77.0.1/24, fd77::1/64; fleet binds here,
    QEMU runs here), `dhcp` ns with the site's ordinary dnsmasq at 10.77.0.2."""

    ADDRESS, ADDRESS6, DHCP_ADDRESS = "10.77.0.1", "fd77::1", "10.77.0.2"

    def __init__(self, *, dhcp: bool = True):
        t = self.topo = Topology("site", protect=(SITE, SITE6))
        try:
            self.site_ns = t.add_ns("site")
            t.add_bridge("site", "br0")
            t.add_addr("site", "br0", f"{self.ADDRESS}/24", f"{self.ADDRESS6}/64")
            self.dhcp_ns = t.add_ns("dhcp")
            t.add_veth("dhcp", "eth0", "site", "dhcp0", master_b="br0")
            t.add_addr("dhcp", "eth0", f"{self.DHCP_ADDRESS}/24", "fd77::2/64")
            self.dhcp: Dnsmasq = ordinary_dhcp(t, "dhcp")
            if dhcp:
                self.dhcp.start()
        except BaseException:
            t.close()
            raise
        self._clients = 0

    def add_tap(self, name: str = "tap0") -> str:
        """A tap on br0 in the site ns: `ip netns exec <site_ns> qemu ... ifname=<name>`."""
        return self.topo.add_tap("site", name, "br0")

    def add_client(self, name: str, mac: str | None = None, address: str | None = None) -> str:
        """A namespace with `eth0` on the site bridge (DHCP/PXE clients), optionally
        with a static `address` (CIDR); returns its name."""
        ns = self.topo.add_ns(name)
        self._clients += 1
        self.topo.add_veth(name, "eth0", "site", f"cl{self._clients}", master_b="br0",
                           mac_a=mac)
        if address:
            self.topo.add_addr(name, "eth0", address)
        return ns

    def start_proxy_dnsmasq(self, tftp_root: Path, **kw) -> Dnsmasq:
        """dnsmasq's own proxyDHCP + TFTP on br0 in the site ns (benchmark baseline)."""
        return proxy_dhcp(self.topo, "site", interface="br0", address=self.ADDRESS,
                          tftp_root=tftp_root, **kw).start()

    def run(self, ns, argv, **kw):
        return self.topo.run(ns, argv, **kw)

    def popen(self, ns, argv, **kw):
        return self.topo.popen(ns, argv, **kw)

    def close(self) -> None:
        self.topo.close()


@pytest.fixture
def site_topology(testbed_guard):
    site = SiteTopology()
    yield site
    site.close()


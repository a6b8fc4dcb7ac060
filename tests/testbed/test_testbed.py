"""Proof that the root testbed fixtures work: namespaces, real sshd behind a jump,
nftables-dropped nodes, dnsmasq DHCP, and cleanup (also after SIGTERM and for
stale leftovers of dead processes)."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import asyncssh
import pytest

from support.fixtures import SshFleetTopology
from support.sshd import SSHD
from support.netns import (GUARD_METRIC, IP, LOCK_INHERIT_ENV, Topology, list_netns,
                           pid_alive, sweep_stale)

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]


def route_lines(prefix: str) -> str:
    return subprocess.run([IP, "route", "show", prefix], capture_output=True,
                          text=True).stdout.strip()


def mine(tag_names) -> list[str]:
    return [n for n in list_netns() if n in set(tag_names)]


# ---------------------------------------------------------------- (e) cleanup
# First in the file: it builds its own SshFleetTopology, which must not overlap
# the module-scoped one (both put 10.90.0.1 in the root namespace).

def test_fleet_topology_teardown_leaves_nothing(testbed_guard):
    t = SshFleetTopology()
    from support.fixtures import SshFleet
    fleet = SshFleet(t, testbed_guard.keys).start(2)
    names = list(t.topo.namespaces.values())
    links = list(t.topo.root_links)
    pids = [s.proc.pid for s in [*fleet.jumps.values(), *fleet.nodes]]
    assert set(names) <= set(list_netns())
    assert "10.90.0.0/24 dev" in route_lines("10.90.0.0/24")
    fleet.close()
    t.close()
    assert mine(names) == []
    assert not [k for k in links if os.path.exists(f"/sys/class/net/{k}")]
    assert not [p for p in pids if pid_alive(p)]
    # the operator's connected route is gone; the session guard's stays
    assert route_lines("10.90.0.0/24") == f"unreachable 10.90.0.0/24 metric {GUARD_METRIC}"


def test_topology_close_removes_namespaces_processes_routes(testbed_guard):
    t = Topology("cl", protect=["10.93.0.0/24"])
    ns = t.add_ns("a")
    _, peer = t.add_veth(None, None, "a", "eth0")
    t.add_route(None, "10.93.0.128/25", dev=t.root_links[0])
    sleeper = t.popen("a", ["/bin/sleep", "300"])
    assert "unreachable 10.93.0.0/24" in route_lines("10.93.0.0/24")
    t.close()
    assert ns not in list_netns()
    assert route_lines("10.93.0.0/24") == "" and route_lines("10.93.0.128/25") == ""
    assert not pid_alive(sleeper.pid)
    assert not os.path.exists(f"/sys/class/net/{t.root_links[0]}")


def test_sigterm_cleans_up(testbed_guard, tmp_path):
    script = textwrap.dedent("""
        import sys, time
        from support.netns import Topology
        t = Topology("sig", protect=["10.94.0.0/24"])
        t.add_ns("a")
        t.add_veth(None, None, "a", "eth0")
        p = t.popen("a", ["/bin/sleep", "300"])
        print(t.namespaces["a"], t.root_links[0], p.pid, flush=True)
        time.sleep(60)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"), **{LOCK_INHERIT_ENV: "1"})
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             text=True, env=env)
    ns, link, sleeper = child.stdout.readline().split()
    assert ns in list_netns() and route_lines("10.94.0.0/24")
    child.send_signal(signal.SIGTERM)
    assert child.wait(10) == -signal.SIGTERM
    assert ns not in list_netns()
    assert not os.path.exists(f"/sys/class/net/{link}")
    assert route_lines("10.94.0.0/24") == ""
    assert not pid_alive(int(sleeper))


def test_stale_leftovers_of_dead_pid_are_swept(testbed_guard):
    dead = subprocess.Popen(["/bin/true"])
    dead.wait()
    ns, link = f"ft{dead.pid}-stale", f"ft{dead.pid}x0"
    subprocess.run([IP, "netns", "add", ns], check=True)
    orphan = subprocess.Popen([IP, "netns", "exec", ns, "/bin/sleep", "300"],
                              start_new_session=True)
    try:
        subprocess.run([IP, "link", "add", link, "type", "bridge"], check=True)
        removed = sweep_stale()
        assert ns in removed and link in removed
        assert ns not in list_netns()
        assert not os.path.exists(f"/sys/class/net/{link}")
        assert orphan.wait(5) == -signal.SIGKILL
    finally:
        if orphan.poll() is None:
            orphan.kill()
        subprocess.run([IP, "netns", "del", ns], capture_output=True)
        subprocess.run([IP, "link", "del", link], capture_output=True)


# ---------------------------------------------------------------- (a) through the jump

def test_operator_cannot_reach_nodes_directly(ssh_fleet):
    ssh_fleet(1)
    s = socket.socket()
    s.settimeout(3)
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        s.connect(("10.91.0.10", 22))
    assert e.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
    assert time.monotonic() - t0 < 0.5
    s.close()


def test_openssh_through_jump(ssh_fleet):
    fleet = ssh_fleet(1)
    argv = fleet.openssh_argv(fleet.nodes[0], "hostname")
    assert "-J" in argv and "StrictHostKeyChecking=yes" in argv
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "node10"


async def test_asyncssh_through_jump_with_known_hosts(ssh_fleet):
    fleet = ssh_fleet(1)
    opts = fleet.asyncssh_options()
    async with asyncssh.connect(fleet.jumps["gw1"].address, **opts) as jump:
        async with asyncssh.connect("10.91.0.10", tunnel=jump, **opts) as conn:
            r = await conn.run("hostname", check=True)
            assert r.stdout.strip() == "node10"
        # strict: a known_hosts without the node's key is refused
        only_jump = asyncssh.import_known_hosts(fleet.jumps["gw1"].known_hosts_line())
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await asyncssh.connect("10.91.0.10", tunnel=jump, **(opts | {"known_hosts": only_jump}))


async def test_two_hops_to_nodes2(ssh_fleet):
    fleet = ssh_fleet(0, nodes2=1)
    opts = fleet.asyncssh_options()
    async with asyncssh.connect("10.90.0.2", **opts) as gw1, \
            asyncssh.connect("10.91.0.2", tunnel=gw1, **opts) as inner, \
            asyncssh.connect("10.92.0.10", tunnel=inner, **opts) as deep:
        assert (await deep.run("hostname", check=True)).stdout.strip() == "deep10"
    cp = subprocess.run(fleet.openssh_argv("10.92.0.10", "hostname", via=("gw1", "inner")),
                        capture_output=True, text=True, timeout=30)
    assert cp.stdout.strip() == "deep10", cp.stderr


# ---------------------------------------------------------------- (b) many nodes

async def test_twenty_nodes_start_and_answer(ssh_fleet):
    t0 = time.monotonic()
    fleet = ssh_fleet(20)
    started = time.monotonic() - t0
    opts = fleet.asyncssh_options()
    async with asyncssh.connect("10.90.0.2", **opts) as jump:
        async def host(n):
            async with asyncssh.connect(n.address, tunnel=jump, **opts) as c:
                return (await c.run("hostname", check=True)).stdout.strip()
        names = await asyncio.gather(*(host(n) for n in fleet.nodes))
    total = time.monotonic() - t0
    assert names == [f"node{10 + i}" for i in range(20)]
    print(f"20 sshds started in {started:.2f}s, answered by {total:.2f}s")
    assert started < 10 and total < 20


def test_default_config_variant_keeps_openssh_limits(ssh_fleet):
    fleet = ssh_fleet(1)
    (plain,) = fleet.start_nodes(["10.91.0.100"], default_config=True)

    def effective(s):
        cp = subprocess.run([SSHD, "-T", "-f", str(s.conf)], capture_output=True, text=True)
        return dict(line.split(" ", 1) for line in cp.stdout.splitlines() if " " in line)

    assert effective(plain)["maxstartups"] == "10:30:100"
    assert effective(plain)["maxsessions"] == "10"
    assert effective(fleet.nodes[0])["maxstartups"] == "500:30:1000"
    assert effective(fleet.nodes[0])["maxsessions"] == "64"


# ---------------------------------------------------------------- (c) firewalled nodes

async def test_dropped_address_times_out_others_answer(ssh_fleet):
    fleet = ssh_fleet(1)
    (dropped,) = fleet.start_nodes(["10.91.0.230"])  # listening, but nftables drops
    opts = fleet.asyncssh_options() | {"connect_timeout": 1.5}
    async with asyncssh.connect("10.90.0.2", **opts) as jump:
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncssh.connect(dropped.address, tunnel=jump, **opts)
        assert time.monotonic() - t0 >= 1.4
        async with asyncssh.connect("10.91.0.10", tunnel=jump, **opts) as c:
            assert (await c.run("hostname", check=True)).stdout.strip() == "node10"
    assert dropped.alive()


# ---------------------------------------------------------------- (d) dnsmasq

def test_dnsmasq_leases_to_udhcpc(site_topology):
    site = site_topology
    client = site.add_client("c1", mac="52:54:00:77:00:99")
    cp = site.run(client, ["/usr/bin/busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n",
                           "-t", "5", "-T", "1", "-s", "/bin/true"], timeout=20)
    out = cp.stdout + cp.stderr
    assert "lease of 10.77.0.1" in out and "obtained" in out, out
    leases = site.dhcp.leases()
    assert [row["mac"] for row in leases] == ["52:54:00:77:00:99"]
    assert leases[0]["address"].startswith("10.77.0.1")
    # RA for fd77::/64 (what spares iPXE its IPv6 wait): the client autoconfigures
    for _ in range(60):
        v6 = site.run(client, [IP, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"])
        if "fd77::5054:ff:fe77:99/64" in v6.stdout:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"no SLAAC address from dnsmasq's RA: {v6.stdout}")


def test_tap_for_qemu_is_on_the_site_bridge(site_topology):
    tap = site_topology.add_tap("tap0")
    link = site_topology.run("site", [IP, "-o", "link", "show", tap]).stdout
    assert "master br0" in link


def test_proxy_dnsmasq_serves_tftp(site_topology, tmp_path):
    site = site_topology
    (tmp_path / "undionly.kpxe").write_bytes(b"fake-ipxe" * 100)
    proxy = site.start_proxy_dnsmasq(tmp_path)
    assert "proxy on subnet 10.77.0.1" in proxy.log_text()
    client = site.add_client("c2", address="10.77.0.50/24")
    dest = tmp_path / "got"
    cp = site.run(client, ["/usr/bin/busybox", "tftp", "-g", "-r", "undionly.kpxe",
                           "-l", str(dest), site.ADDRESS], timeout=20)
    assert cp.returncode == 0 and dest.read_bytes() == b"fake-ipxe" * 100

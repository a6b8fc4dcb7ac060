"""Two sites, each in its own namespace, and a console that reaches them only
through a jump: the whole lifecycle at both, then a partition of one site.

    console 10.90.0.1 --- 10.90.0.2 jump 10.91.0.1 --- 10.91.0.2 east (site host)
                                         10.92.0.1 --- 10.92.0.2 west (site host)

Each site host runs OpenSSH's sshd and its own `fleet --headless serve`: its
own store, boot services and simulated machines (the demo's, which PXE boot,
install and call home against that site's services inside its namespace).
The console side runs `fleet --headless serve` too, which holds a channel to
each site's agent (`fleet --headless agent` started over SSH through the
jump); the test drives it with headless commands in the console namespace.

The partition drops every packet between the jump and west (nftables) while a
machine at west installs: west finishes the install and registers the node on
its own, the console refuses a lease there with a dated reason, and after the
heal the console's replica holds exactly west's events, in order, and its
machines and nodes row for row.
"""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fleet.sim.profiles import write_demo_profile
from support.agent_sshd import ROOT, keygen, sshd_config
from support.netns import JUMP_LINK, NODES, NODES2, Topology, ns_argv
from support.partition import Partition
from support.profiles import isolated_env

pytestmark = pytest.mark.root

SITES = {"east": ("10.91.0.1", "10.91.0.2", NODES), "west": ("10.92.0.1", "10.92.0.2", NODES2)}
JUMP, CONSOLE = "10.90.0.2", "10.90.0.1"


def site_profile(folder: Path, name: str, octet: int) -> Path:
    """A site host's own profile: the demo's simulated machines, its site renamed."""
    folder.mkdir(exist_ok=True)
    path = write_demo_profile(folder, name=name, machines=3, install_seconds=8,
                              subnet_octet=octet, poll_seconds=1, seed=octet)
    data = yaml.safe_load(path.read_text())
    data["sites"][0]["name"] = name
    data["demo"]["misbehave"] = False
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fleet_argv(profile: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fleet", "--headless", "--profile", str(profile), *args]


@pytest.fixture
def two_sites(testbed_guard, tmp_path):
    topo = Topology("sites", protect=(JUMP_LINK, NODES, NODES2))
    keys = tmp_path / "keys"
    keys.mkdir()
    host_public, _ = keygen(keys / "host")
    operator_public, _ = keygen(keys / "operator")
    (keys / "authorized_keys").write_text(operator_public + "\n")
    known = keys / "known_hosts"
    known.write_text("".join(f"{a} {host_public}\n"
                             for a in (JUMP, SITES["east"][1], SITES["west"][1])))
    try:
        for ns in ("console", "jump", "east", "west"):
            topo.add_ns(ns)
        topo.add_veth("console", "eth0", "jump", "to-console")
        topo.add_addr("console", "eth0", f"{CONSOLE}/24")
        topo.add_addr("jump", "to-console", f"{JUMP}/24")
        sshds = [topo.popen("jump", ["/usr/sbin/sshd", "-D", "-f", str(sshd_config(keys, JUMP))])]
        envs, profiles, serves = {}, {}, {}
        for i, (name, (gw, host, _)) in enumerate(SITES.items()):
            topo.add_veth("jump", f"to-{name}", name, "eth0")
            topo.add_addr("jump", f"to-{name}", f"{gw}/24")
            topo.add_addr(name, "eth0", f"{host}/24")
            sshds.append(topo.popen(name, ["/usr/sbin/sshd", "-D", "-f",
                                           str(sshd_config(keys, host))]))
            envs[name] = isolated_env(tmp_path / name / "xdg")
            profiles[name] = site_profile(tmp_path / name, name, 150 + i)
            serves[name] = topo.popen(name, fleet_argv(profiles[name], "serve"), env=envs[name],
                                      cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=open(tmp_path / f"{name}-serve.log", "w"))
        console = console_profile(tmp_path, keys, known, envs, profiles)
        console_env = isolated_env(tmp_path / "console-xdg")
        held = topo.popen("console", fleet_argv(console, "serve"), env=console_env, cwd=ROOT,
                          stdout=subprocess.DEVNULL,
                          stderr=open(tmp_path / "console-serve.log", "w"))
        yield {"topo": topo, "console": console, "console_env": console_env, "envs": envs,
               "profiles": profiles, "serves": serves, "held": held, "tmp": tmp_path}
    finally:
        topo.close()


def console_profile(tmp_path: Path, keys: Path, known: Path, envs: dict, profiles: dict) -> Path:
    """Both sites reached through jump gw: each site's agent runs the site's own
    profile, in its XDG dirs (the store its serve writes)."""
    (tmp_path / "console-profile").mkdir()
    path = write_demo_profile(tmp_path / "console-profile", name="console", machines=1)
    data = yaml.safe_load(path.read_text())
    data.pop("demo")
    data["operator"]["ssh"] = {"identity": str(keys / "operator"), "known_hosts": [str(known)],
                               "user": "root", "connect_timeout": 3}
    data["jumps"] = [{"name": "gw", "address": JUMP}]
    data["sites"] = []
    for name, (_, host, subnet) in SITES.items():
        xdg = " ".join(f"{k}={shlex.quote(v)}" for k, v in envs[name].items()
                       if k.startswith("XDG_"))
        command = (f"cd {shlex.quote(str(ROOT))} && env {xdg} {shlex.quote(sys.executable)} "
                   f"-m fleet --headless --profile {shlex.quote(str(profiles[name]))} agent")
        data["sites"].append({"name": name, "subnets": [subnet], "jumps": ["gw"],
                              "agent": {"host": host, "via": "gw", "user": "root",
                                        "command": command}})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def console_cmd(sites: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(ns_argv(sites["topo"].ns("console"), fleet_argv(sites["console"], *args)),
                          env=sites["console_env"], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def site_cmd(sites: dict, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(ns_argv(sites["topo"].ns(name), fleet_argv(sites["profiles"][name], *args)),
                          env=sites["envs"][name], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def site_json(sites: dict, name: str, *args: str):
    done = site_cmd(sites, name, *args, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def replica_rows(sites: dict, site: str, sql: str) -> list:
    path = Path(sites["console_env"]["XDG_STATE_HOME"]) / "fleet" / "replica-console.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute(sql, (site,)).fetchall()


def wait(what: str, check, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def discovered(sites: dict, name: str) -> list[str]:
    return sorted(m["mac"] for m in site_json(sites, name, "machines")
                  if m["state"] == "discovered")


def console_machines(sites: dict) -> dict[str, dict]:
    done = console_cmd(sites, "machines", "--format", "json")
    assert done.returncode == 0, done.stderr
    return {m["mac"]: m for m in json.loads(done.stdout)}


# a new machine's iPXE boot at a site, on the site host (the demo's services
# answer on its loopback): prints the seconds to the hold script
PXE_BOOT = """
import asyncio, sys
from fleet.sim.pxe_client import ClientSpec, boot
async def main():
    r = await boot(ClientSpec(mac=sys.argv[1], kind="ipxe-bios"), dhcp_port=6767,
                   pxe_port=14011, tftp_port=6969, retries=2)
    assert r.script and r.script.startswith("#!ipxe"), r
    print(r.seconds)
asyncio.run(main())
"""


def pxe_boot(sites: dict, name: str, mac: str) -> float:
    done = subprocess.run(ns_argv(sites["topo"].ns(name), [sys.executable, "-c", PXE_BOOT, mac]),
                          env=sites["envs"][name], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return float(done.stdout)


def test_two_sites_through_a_jump_and_a_partition_of_one(two_sites):
    sites = two_sites
    macs = {n: wait(f"3 machines discovered at {n}", lambda n=n: (
        found if len(found := discovered(sites, n)) == 3 else None), 60) for n in SITES}

    # the console sees both sites' machines, each with its site
    def both_seen():
        m = console_machines(sites)
        return m if all(mac in m for n in SITES for mac in macs[n]) else None
    seen = wait("both sites' machines at the console", both_seen, 60)
    for name in SITES:
        assert {seen[mac]["distributor"] for mac in macs[name]} == {name}

    # lease -> install -> call home -> node, at both sites, from the console
    for name in SITES:
        done = console_cmd(sites, "lease", macs[name][0], "-d", "debian12", "--hostname",
                           f"{name}-web1")
        assert done.returncode == 0, done.stderr
    for name in SITES:
        wait(f"{name}-web1 registered at {name}", lambda n=name: any(
            x["name"] == f"{n}-web1" for x in site_json(sites, n, "nodes")), 90)
    wait("both nodes at the console", lambda: {"east-web1", "west-web1"} <= {
        x["name"] for x in json.loads(console_cmd(sites, "nodes", "--format", "json").stdout)},
         30)

    # west is cut off while a machine there installs
    boot_before = pxe_boot(sites, "west", "52:54:00:ee:00:01")
    installing = macs["west"][1]
    done = console_cmd(sites, "lease", installing, "-d", "debian12", "--hostname", "west-web2")
    assert done.returncode == 0, done.stderr
    cut = Partition(sites["topo"], "jump", "10.92.0.0/24")
    cut.cut()
    try:
        cut_at = time.time()
        refused = console_cmd(sites, "lease", macs["west"][2], "-d", "debian12")
        assert refused.returncode == 3, refused.stderr
        assert re.match(r"fleet: site west unreachable via gw since \d\d:\d\d:\d\d: ",
                        refused.stderr), refused.stderr
        assert len(refused.stderr.splitlines()) == 1
        # east is not affected
        east = console_cmd(sites, "lease", macs["east"][1], "-d", "debian12")
        assert east.returncode == 0, east.stderr
        # west discovers a new machine, as fast as before the cut
        boot_during = pxe_boot(sites, "west", "52:54:00:ee:00:02")
        assert "52:54:00:ee:00:02" in {m["mac"] for m in site_json(sites, "west", "machines")}
        assert boot_during < max(2 * boot_before, 0.5), (boot_before, boot_during)
        # west installs and registers on its own
        wait("west-web2 registered at west during the cut", lambda: any(
            x["name"] == "west-web2" for x in site_json(sites, "west", "nodes")), 90)
        assert time.time() - cut_at > 0
    finally:
        cut.heal()
    print(f"a new machine's boot to the hold script at west: {boot_before:.3f} s before the "
          f"cut, {boot_during:.3f} s during it")
    new = wait("the machine west found during the cut at the console",
               lambda: console_machines(sites).get("52:54:00:ee:00:02"), 30)
    assert new["distributor"] == "west"

    # after the heal, the held console catches up: every west event once, in order
    def caught_up():
        theirs = [(e["id"], e["kind"], e["subject"]) for e in
                  site_json(sites, "west", "events", "--limit", "100000")]
        ours = replica_rows(sites, "west",
                            "SELECT id, kind, subject FROM events WHERE site = ? ORDER BY id")
        return ours == [tuple(t) for t in sorted(theirs)] and ours
    healed = time.monotonic()
    ours = wait("the console's replica to hold every west event", caught_up, 30, every=0.25)
    print(f"caught up {len(ours)} west events {time.monotonic() - healed:.1f} s after the heal")
    assert len({e[0] for e in ours}) == len(ours)

    # rows: the console's view of west equals west's own store, row for row
    def same_rows():
        theirs = {m["mac"]: m["state"] for m in site_json(sites, "west", "machines")}
        ours = {mac: state for mac, state in replica_rows(
            sites, "west", "SELECT mac, state FROM machines WHERE site = ?")}
        return theirs == ours and ours
    wait("west's machines in the replica", same_rows, 15)
    theirs = sorted(x["name"] for x in site_json(sites, "west", "nodes"))
    ours = sorted(n for (n,) in replica_rows(sites, "west",
                                            "SELECT name FROM nodes WHERE site = ?"))
    assert ours == theirs

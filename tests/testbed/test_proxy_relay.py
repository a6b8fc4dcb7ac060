"""proxyDHCP through a real DHCP relay (root; network namespaces, dnsmasq's relay).

    cl (10.78.0.50) --A 10.78.0.0/24-- rtr (10.78.0.1 | 10.77.0.254) --B 10.77.0.0/24-- site (10.77.0.1)
     simulated PXE client               dnsmasq --dhcp-relay, ip_forward=1                fleet serve

The client broadcasts its DISCOVER on subnet A; dnsmasq relays it to fleet
(giaddr 10.78.0.1); fleet must answer by unicast to giaddr:67 (a tcpdump on
B's side shows what fleet sent), and the relay hands the proxy offer to the
client. Then the client's unicast REQUEST to fleet's port 4011 and its TFTP
fetch cross the router both ways, and fleet records the machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.boot_site import FAKE_BINARIES
from support.dnsmasq import Dnsmasq
from support.netns import SITE, Topology
from support.profiles import isolated_env, write_profile

pytestmark = pytest.mark.root

SUBNET_A = "10.78.0.0/24"  # the relayed client subnet (guarded unreachable in the root ns)
FLEET, ROUTER_B, ROUTER_A, CLIENT = "10.77.0.1", "10.77.0.254", "10.78.0.1", "10.78.0.50"
MAC = "52:54:00:78:00:50"

# Runs in the client namespace: one firmware boot (DISCOVER broadcast on A ->
# relayed proxy offer -> 4011 REQUEST to fleet -> TFTP of the file).
CLIENT_SCRIPT = r"""
import asyncio, json, sys
from fleet.sim.pxe_client import ClientSpec, boot

async def main():
    r = await boot(ClientSpec(sys.argv[1], "bios"), server=sys.argv[2], broadcast=True,
                   interface="eth0", ciaddr=sys.argv[3], collect=3.0, retries=1)
    offer = r.proxy_offer
    print(json.dumps({
        "offer": None if offer is None else {
            "giaddr": str(offer.giaddr), "server_id": str(offer.server_id),
            "vendor_class": offer.vendor_class, "yiaddr": str(offer.yiaddr)},
        "ack_file": None if r.ack is None else r.boot_file,
        "tftp": None if r.tftp is None else r.tftp.data.hex(),
    }))

asyncio.run(main())
"""


@pytest.fixture
def relay_lab(testbed_guard, tmp_path):
    t = Topology("relay", protect=(SITE, SUBNET_A))
    try:
        t.add_ns("site")
        t.add_ns("rtr", forward=True)
        t.add_ns("cl")
        t.add_veth("site", "eth0", "rtr", "ethb")
        t.add_veth("rtr", "etha", "cl", "eth0")
        t.add_addr("site", "eth0", f"{FLEET}/24")
        t.add_addr("rtr", "ethb", f"{ROUTER_B}/24")
        t.add_addr("rtr", "etha", f"{ROUTER_A}/24")
        t.add_addr("cl", "eth0", f"{CLIENT}/24")
        t.add_route("site", SUBNET_A, via=ROUTER_B)
        t.add_route("cl", "default", via=ROUTER_A)
        # dnsmasq as a relay only: no DNS, no address ranges.
        relay = Dnsmasq(t, "rtr", ["port=0", "interface=etha", "bind-interfaces",
                                   f"dhcp-relay={ROUTER_A},{FLEET}"],
                        ready="DHCP relay").start()
        yield t, relay
    finally:
        t.close()


def _serve(t: Topology, folder: Path):
    ipxe_dir = folder / "ipxe"
    ipxe_dir.mkdir()
    for name, data in FAKE_BINARIES.items():
        (ipxe_dir / name).write_bytes(data)
    profile = write_profile(folder, "relay", "proxy_relay", {
        "sites": [{"name": "lab", "distributor": {"address": FLEET, "ipxe_dir": str(ipxe_dir)}}]})
    env = isolated_env(folder)
    out, err = folder / "serve.jsonl", folder / "serve.err"
    proc = t.popen("site", [sys.executable, "-m", "fleet", "--headless", "--profile",
                            str(profile), "serve"], env=env, stdout=out.open("w"),
                   stderr=err.open("w"))
    deadline = time.monotonic() + 20
    while "distributor.started" not in out.read_text():
        assert proc.poll() is None, f"serve exited: {err.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"serve not started: {err.read_text()[-2000:]}"
        time.sleep(0.1)
    return proc, profile, env


def _capture(t: Topology, folder: Path) -> tuple[subprocess.Popen, Path]:
    """tcpdump on fleet's side of the router: every datagram from port 67."""
    path = folder / "b-side.txt"
    proc = t.popen("site", ["tcpdump", "-n", "-l", "--immediate-mode", "-i", "eth0",
                            "udp and src port 67"],
                   stdout=path.open("w"), stderr=subprocess.PIPE, text=True)
    seen = ""
    while "listening on" not in seen:  # printed once it captures
        line = proc.stderr.readline()
        assert line, f"tcpdump did not start: {seen}"
        seen += line
    return proc, path


def test_relayed_discover_and_4011_across_a_router(relay_lab, tmp_path):
    t, relay = relay_lab
    serve, profile, env = _serve(t, tmp_path)
    dump, dump_path = _capture(t, tmp_path)

    cp = t.run("cl", [sys.executable, "-c", CLIENT_SCRIPT, MAC, FLEET, CLIENT],
               check=False, timeout=60)
    assert cp.returncode == 0, cp.stderr
    got = json.loads(cp.stdout)
    time.sleep(0.3)  # let tcpdump write its last lines
    t.stop(dump)
    sent = dump_path.read_text()

    # What fleet put on the wire: the offer went by unicast to the relay's
    # giaddr on port 67, never as a broadcast on B.
    assert re.search(rf"{re.escape(FLEET)}\.67 > {re.escape(ROUTER_A)}\.67: ", sent), sent
    assert "255.255.255.255" not in sent, sent
    assert f"DHCP relay from {ROUTER_A} to {FLEET}" in relay.log_text()

    # The relay handed the proxy offer to the client on A.
    offer = got["offer"]
    assert offer is not None, f"no proxy offer through the relay; fleet sent:\n{sent}"
    assert offer == {"giaddr": ROUTER_A, "server_id": FLEET, "vendor_class": "PXEClient",
                     "yiaddr": "0.0.0.0"}
    # The unicast 4011 REQUEST crossed the router and was answered; then TFTP did.
    assert got["ack_file"] == "undionly.kpxe"
    assert bytes.fromhex(got["tftp"]) == FAKE_BINARIES["undionly.kpxe"]

    # fleet recorded the machine from the relayed DISCOVER.
    deadline = time.monotonic() + 10
    while True:
        rows = _machines(profile, env)
        found = [r for r in rows if r["mac"] == MAC]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert found, rows
    assert found[0]["arch"] in ("bios", "BIOS"), found[0]
    t.stop(serve)


def _machines(profile: Path, env: dict) -> list[dict]:
    cp = subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile", str(profile),
                         "machines", "--format", "json"], env=env, capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)

"""Real firmware PXE boots against fleet (root; QEMU under TCG, so slow and serial).

The site: `site` namespace with br0 10.77.0.1 where `fleet --headless serve`
runs (ports 67/4011/69/8080), the site's ordinary dnsmasq (addresses + RA only)
in the `dhcp` namespace, and QEMU on a tap in br0.

(a) SeaBIOS + the NIC's iPXE ROM: hold script -> discovered (BIOS) -> lease ->
    install script (provisioning) -> call-home -> provisioned node ->
    release --wipe -> waits for a wiper image (test_wipe_qemu.py has the wipe).
(b) OVMF with no NIC ROM: UEFI PXE -> proxy offer -> REQUEST on 4011 -> TFTP
    ipxe.efi -> iPXE -> HTTP script; recorded as x64 UEFI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.profiles import use_isolated_env
from support.qemu_lab import (ADDR, BIOS_MAC, HOLD_MARKER, TIMINGS, UEFI_MAC, QemuLab, bios_args,
                              callhome_token, host_key_line, uefi_args)

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def lab(site_topology, tmp_path, monkeypatch):
    use_isolated_env(monkeypatch, tmp_path)
    labs = []

    def make(mode: str) -> QemuLab:
        lab = QemuLab(site_topology, tmp_path, mode)
        site_topology.add_tap("tap0")
        lab.start_serve()
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        if lab.serve is not None and lab.serve.poll() is None:
            lab.stop_serve()


async def test_bios_ipxe_rom_full_lifecycle(lab):
    lab = lab("port4011")
    # 1. First boot: unknown machine -> hold script.
    took, serial = lab.qemu("bios-hold", bios_args(BIOS_MAC), HOLD_MARKER)
    lab.wait_event("machine.discovered", 10, BIOS_MAC)
    m = lab.machine(BIOS_MAC)
    assert m["state"] == "discovered" and m["arch"] == "bios", m
    assert m["distributor"] == "lab" and m["stage"] == "ipxe"

    # 2. Leased: the next boot fetches the install script and its kernel.
    lab.fleet("lease", BIOS_MAC, "--deployment", "tiny", "--hostname", "qbios")
    took, serial = lab.qemu("bios-install", bios_args(BIOS_MAC), "fleet: installing tiny as qbios")
    lab.wait_event("machine.provisioning", 10, BIOS_MAC)
    assert lab.machine(BIOS_MAC)["state"] == "provisioning"
    # iPXE fetched the (dummy) kernel from fleet's HTTP: it then fails to boot it
    assert f"http://{ADDR}:8080/files/linux" in serial

    # 3. The installed system calls home with its token -> a registered node.
    token = await callhome_token(lab.profile, BIOS_MAC)
    body = json.dumps({"token": token, "hostname": "qbios",
                       "host_keys": [host_key_line(lab.folder)]})
    cp = subprocess.run(["ip", "netns", "exec", lab.site.site_ns, "curl", "-sS", "-f",
                         "-H", "Content-Type: application/json", "--data", body,
                         f"http://{ADDR}:8080/api/callhome"],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr + cp.stdout
    assert json.loads(cp.stdout)["node"] == "qbios"
    lab.wait_event("machine.provisioned", 10, BIOS_MAC)
    nodes = json.loads(lab.fleet("nodes", "--format", "json").stdout)
    assert [n for n in nodes if n["name"] == "qbios" and n["mac"] == BIOS_MAC]

    # 4. Released with wipe: with no wiper image built, the next boot waits for one and
    # nothing is reported wiped (the wiper itself: tests/testbed/test_wipe_qemu.py).
    lab.fleet("release", BIOS_MAC, "--wipe")
    assert lab.machine(BIOS_MAC)["state"] == "wiping"
    took, serial = lab.qemu("bios-wipe", bios_args(BIOS_MAC), "waiting to be wiped: no wiper image")
    lab.wait_event("wipe.no_image", 10, BIOS_MAC)
    assert lab.machine(BIOS_MAC)["state"] == "wiping"

    assert lab.stop_serve() == 0
    print("QEMU BIOS timings (s):", {k: round(v, 1) for k, v in TIMINGS.items()})


async def test_bios_ipxe_rom_in_direct_mode(lab):
    """The same iPXE ROM against smee-style offers (option 43 {6: 8} + file)."""
    lab = lab("direct")
    took, serial = lab.qemu("bios-direct", bios_args(BIOS_MAC), HOLD_MARKER)
    lab.wait_event("machine.discovered", 10, BIOS_MAC)
    assert lab.machine(BIOS_MAC)["arch"] == "bios"
    log = lab.serve_err.read_text()
    assert f"OFFER {BIOS_MAC} (ipxe, bios) -> http://{ADDR}:8080/boot/{BIOS_MAC}.ipxe" in log
    assert lab.stop_serve() == 0


@pytest.mark.parametrize("mode", ["port4011", "direct"])
async def test_uefi_pxe_tftp_ipxe_then_http(lab, mode):
    """port4011: offer without option 43 -> REQUEST on 4011 -> ACK with ipxe.efi;
    direct: option 43 {6: 8} + the file in the offer, no 4011."""
    lab = lab(mode)
    name = f"uefi-{mode}"
    took, serial = lab.qemu(name, uefi_args(lab.folder, UEFI_MAC), HOLD_MARKER, timeout=120)
    lab.wait_event("machine.discovered", 10, UEFI_MAC)
    m = lab.machine(UEFI_MAC)
    assert m["arch"] == "uefi-x64" and m["state"] == "discovered", m
    # (no NIC ROM: the only iPXE in this machine is the ipxe.efi fleet sent)
    assert "iPXE" in serial
    log = lab.serve_err.read_text()
    firmware_ack = f"ACK {UEFI_MAC} (firmware, uefi-x64) -> ipxe.efi"
    firmware_offer = f"OFFER {UEFI_MAC} (firmware, uefi-x64) -> ipxe.efi"
    assert firmware_offer in log, log[-3000:]
    if mode == "port4011":
        assert firmware_ack in log, log[-3000:]
    else:
        assert firmware_ack not in log, log[-3000:]
    assert "sent ipxe.efi to 10.77.0." in log, log[-3000:]
    assert f"OFFER {UEFI_MAC} (ipxe, uefi-x64) -> http://{ADDR}:8080/boot/{UEFI_MAC}.ipxe" in log
    assert lab.stop_serve() == 0
    print(f"QEMU UEFI {mode}: {took:.1f}s to the hold script")


CLIENT = r"""
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from support.pxe_client import ClientSpec, boot
async def main():
    out = {}
    for kind in ("bios", "uefi", "ipxe-efi", "plain"):
        r = await boot(ClientSpec(sys.argv[3 + len(out)], kind), server=sys.argv[2],
                       broadcast=True, interface="eth0", ciaddr="10.77.0.50", collect=2.0)
        out[kind] = {"answered": r.answered, "file": r.boot_file,
                     "ordinary": [str(p.yiaddr) for p in r.offers if str(p.yiaddr) != "0.0.0.0"],
                     "tftp": r.tftp.size if r.tftp else None, "ack": r.ack is not None,
                     "status": r.http_status, "script": (r.script or "")[:40]}
    print(json.dumps(out))
asyncio.run(main())
"""


def test_python_pxe_client_over_real_broadcast(lab):
    """The PXE client's broadcast mode (for the demo and benchmarks) against serve
    in the site, next to the site's ordinary DHCP server: both answer a PXE
    DISCOVER, only dnsmasq answers a plain one."""
    lab = lab("port4011")
    ns = lab.site.add_client("pxecl", address="10.77.0.50/24")
    macs = ["52:54:00:77:01:01", "52:54:00:77:01:02", "52:54:00:77:01:03", "52:54:00:77:01:04"]
    tests_dir = str(Path(__file__).resolve().parents[1])
    cp = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, tests_dir,
                         ADDR, *macs], capture_output=True, text=True, timeout=90,
                        env=lab.env)
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert out["bios"]["answered"] and out["bios"]["ack"]
    assert out["bios"]["file"] == "undionly.kpxe" and out["bios"]["tftp"] > 10000
    assert out["uefi"]["file"] == "ipxe.efi" and out["uefi"]["tftp"] > 10000
    assert out["ipxe-efi"]["status"] == 200 and out["ipxe-efi"]["script"].startswith("#!ipxe")
    # a plain DHCP client: the site's dnsmasq offers an address, fleet stays silent
    assert not out["plain"]["answered"]
    assert out["plain"]["ordinary"] and out["plain"]["ordinary"][0].startswith("10.77.0.1")

"""`release --wipe` really wipes (root; QEMU under TCG).

SeaBIOS + the virtio NIC's iPXE ROM on the PXE site (fleet's `serve` on br0,
the site's dnsmasq handing out addresses only), with a 32 MiB virtio disk whose
first sector holds an MBR signature and a text marker and whose last MiB holds
another marker. The machine is leased and calls home (no real OS install), is
released with --wipe, and boots once: iPXE fetches fleet's wiper (built by
`fleet --headless build wiper` from a Debian kernel and busybox-static), whose
init zeroes the disk's first and last MiB, reports with its one-time token over
DHCP from the site's dnsmasq, and reboots into fleet's hold loop. After QEMU
is gone the image file is read back.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from support.wiper_root import WHY_MISSING, wiper_root
from support.qemu_lab import (ADDR, BIOS_MAC, HOLD_MARKER, QEMU, QemuLab, callhome_token,
                              host_key_line)

pytestmark = [pytest.mark.root, pytest.mark.slow]

DISK_SIZE = 32 << 20
MiB = 1 << 20
HEAD_MARKER = b"FLEET-TEST-MBR-MARKER"
TAIL_MARKER = b"FLEET-TEST-END-MARKER"


def _make_disk(path: Path) -> None:
    data = bytearray(DISK_SIZE)
    data[3:3 + len(HEAD_MARKER)] = HEAD_MARKER
    data[510:512] = b"\x55\xaa"
    data[MiB - 4096:MiB - 4096 + len(HEAD_MARKER)] = HEAD_MARKER  # end of the first MiB
    data[DISK_SIZE - MiB + 512:DISK_SIZE - MiB + 512 + len(TAIL_MARKER)] = TAIL_MARKER
    data[DISK_SIZE - 512:DISK_SIZE - 512 + len(TAIL_MARKER)] = TAIL_MARKER  # GPT backup
    data[4 * MiB:4 * MiB + len(HEAD_MARKER)] = HEAD_MARKER  # the middle is left alone
    path.write_bytes(bytes(data))


@pytest.fixture
def wipe_lab(site_topology, tmp_path, monkeypatch):
    from support.profiles import use_isolated_env

    root = wiper_root()
    if root is None:
        pytest.fail(f"the wiper needs a kernel: {WHY_MISSING}")
    use_isolated_env(monkeypatch, tmp_path)
    lab = QemuLab(site_topology, tmp_path, "port4011")
    lab.wiper_root = root
    site_topology.add_tap("tap0")
    lab.start_serve()
    yield lab
    if lab.serve.poll() is None:
        lab.stop_serve()


def _run_vm(lab: QemuLab, disk: Path, until: list[str], timeout: float) -> str:
    """Boot the VM; return its serial log once every marker in `until` showed, in order."""
    log = lab.folder / "wipe.serial"
    log.write_text("")
    argv = [QEMU, "-machine", "q35,accel=tcg", "-m", "512", "-nographic", "-monitor", "none",
            "-serial", f"file:{log}", "-boot", "order=n,reboot-timeout=0",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={BIOS_MAC}",
            "-drive", f"file={disk},format=raw,if=none,id=d0,cache=writethrough",
            "-device", "virtio-blk-pci,drive=d0"]
    proc = lab.site.popen(lab.site.site_ns, argv, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    started = time.monotonic()
    try:
        while True:
            text = log.read_text(errors="replace")
            pos = 0
            for marker in until:
                pos = text.find(marker, pos)
                if pos < 0:
                    break
            if pos >= 0:
                return text
            if proc.poll() is not None:
                raise AssertionError(f"QEMU exited {proc.returncode}: "
                                     f"{proc.stderr.read().decode(errors='replace')}\n"
                                     f"serial:\n{text[-3000:]}")
            if time.monotonic() - started > timeout:
                raise AssertionError(f"no {until} in {timeout}s\nserial:\n{text[-3000:]}\n"
                                     f"serve:\n{lab.serve_err.read_text()[-3000:]}")
            time.sleep(0.2)
    finally:
        lab.site.topo.stop(proc, grace=2.0)  # SIGTERM: QEMU closes the image cleanly
        proc.stderr.close()


async def test_release_wipe_boots_the_wiper_which_clears_the_disk(wipe_lab):
    lab = wipe_lab
    disk = lab.folder / "disk.raw"
    _make_disk(disk)
    built = lab.fleet("build", "wiper", "--wiper-root", str(lab.wiper_root),
                      "--distributor", "lab", "--format", "json")
    artifact = json.loads(built.stdout)
    assert artifact["kind"] == "wiper", artifact

    # known (as its hold loop would make it), leased, called home: a provisioned node
    cp = subprocess.run(["ip", "netns", "exec", lab.site.site_ns, "curl", "-sSf",
                         f"http://{ADDR}:8080/boot/{BIOS_MAC}.ipxe"],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0 and "waiting to be leased" in cp.stdout, cp.stderr
    lab.wait_event("machine.discovered", 10, BIOS_MAC)
    lab.fleet("lease", BIOS_MAC, "--deployment", "tiny", "--hostname", "qwipe")
    body = json.dumps({"token": await callhome_token(lab.profile, BIOS_MAC), "hostname": "qwipe",
                       "host_keys": [host_key_line(lab.folder)]})
    cp = subprocess.run(["ip", "netns", "exec", lab.site.site_ns, "curl", "-sSf",
                         "-H", "Content-Type: application/json", "--data", body,
                         f"http://{ADDR}:8080/api/callhome"],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    assert lab.machine(BIOS_MAC)["state"] == "provisioned"

    lab.fleet("release", BIOS_MAC, "--wipe")
    assert lab.machine(BIOS_MAC)["state"] == "wiping"
    started = time.monotonic()
    serial = _run_vm(lab, disk, ["fleet: wiping the disks", "vda: first and last MiB zeroed",
                                 "reported to fleet", HOLD_MARKER], timeout=150)
    took = time.monotonic() - started
    print(f"wipe boot: {took:.1f}s from power-on to the hold loop after the wipe")

    data = disk.read_bytes()
    assert len(data) == DISK_SIZE
    assert data[:MiB] == bytes(MiB), "the first MiB still holds data"
    assert data[-MiB:] == bytes(MiB), "the last MiB still holds data"
    assert HEAD_MARKER in data[MiB:-MiB]  # the middle was not touched
    assert f"/wiper/{artifact['id'][:16]}/vmlinuz" in serial

    wiped = lab.wait_event("machine.wiped", 10, BIOS_MAC)
    assert "(vda 32 MiB)" in wiped["message"] and "back in the pool" in wiped["message"]
    assert lab.machine(BIOS_MAC)["state"] == "discovered"
    assert "fleet.token=" not in lab.serve_err.read_text()  # tokens never reach the log
    assert lab.stop_serve() == 0

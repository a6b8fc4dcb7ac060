"""The ISO fleet builds boots under QEMU (TCG) and fetches its script.

Loopback only (no root): QEMU's user-mode network (`-netdev user`) reaches the host's
127.0.0.1 as 10.0.2.2, so a real aiohttp server on a 127.0.0.1 port plays the
distributor's HTTP service and the ISO chains `http://10.0.2.2:<port>/boot/${mac}.ipxe`.

- SeaBIOS (`-cdrom`, `-boot d`): isolinux -> ipxe.lkrn + the script as INITRD ->
  dhcp -> chain: the server sees `/boot/<mac>.ipxe` and the served script's marker
  reaches the serial console (`-vga none` makes SeaBIOS mirror text to serial).
- OVMF: El Torito EFI image -> GRUB -> chainloader ipxe.efi: iPXE starts (serial).
  GRUB cannot hand the script to ipxe.efi; the script comes from the DHCP offer,
  here slirp's `bootfile=` standing in for the distributor's proxy offer.
- OVMF on the PXE site (last test; root: namespaces): the same ISO against `fleet serve`'s real
  proxy offer beside a dnsmasq that hands out addresses only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path

import pytest
from aiohttp import web

from fleet.jobs.procs import pid_alive
from support.profiles import use_isolated_env
from support.qemu_lab import ADDR, QemuLab

pytestmark = pytest.mark.slow  # the first two need no root: QEMU's user-mode network

QEMU = "/usr/bin/qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class ScriptServer:
    """Serves `/boot/{name}`: a script echoing a marker, then `exit`."""

    def __init__(self, marker: str):
        self.marker = marker
        self.requests: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.requests.append(name)
        body = f"#!ipxe\necho {self.marker} ${{mac}} {name}\nexit\n"
        return web.Response(text=body, content_type="text/plain")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/boot/{name}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def serial_text(path: Path) -> str:
    if not path.exists():
        return ""
    return _ANSI.sub("", path.read_bytes().decode("latin-1")).replace("\r", "")


async def boot(argv: list[str], serial: Path, until: str, timeout: float) -> tuple[str, float]:
    """Run QEMU until `until` shows on the serial log; kill it by PID; return
    (serial text, seconds to `until`)."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    took = None
    try:
        while time.monotonic() - started < timeout:
            if until in serial_text(serial):
                took = time.monotonic() - started
                break
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.25)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        for _ in range(40):  # this VM reaps slowly: trust /proc, not kill -0
            if not pid_alive(proc.pid):
                break
            await asyncio.sleep(0.05)
        assert not pid_alive(proc.pid)
    text = serial_text(serial)
    assert took is not None, f"no {until!r} within {timeout}s; serial tail:\n{text[-2000:]}"
    return text, took


@pytest.fixture
async def served(engine):
    if not os.access(QEMU, os.X_OK):
        pytest.fail("qemu-system-x86_64 missing: apt-get install qemu-system-x86")
    server = ScriptServer("FLEET-MARKER-" + secrets.token_hex(4))
    await server.start()
    outcome = await engine.builds.build(
        "iso", label="QEMUBOOT", chain_url=f"http://10.0.2.2:{server.port}/boot/${{mac}}.ipxe")
    yield server, Path(outcome.artifact.path)
    await server.stop()


async def test_iso_boots_under_seabios_and_fetches_its_script(served, tmp_path):
    server, iso = served
    mac = "52:54:00:77:00:31"
    serial = tmp_path / "bios-serial.log"
    argv = [QEMU, "-machine", "q35,accel=tcg", "-m", "256", "-nographic", "-vga", "none",
            "-monitor", "none", "-serial", f"file:{serial}", "-no-reboot",
            "-boot", "order=d,reboot-timeout=0", "-cdrom", str(iso),
            "-netdev", "user,id=n0", "-device", f"virtio-net-pci,netdev=n0,mac={mac}"]
    text, took = await boot(argv, serial, f"{server.marker} {mac}", timeout=150)
    # the request named the machine (iPXE percent-encodes ${mac}; aiohttp decodes it)
    assert f"{mac}.ipxe" in server.requests
    assert f"http://10.0.2.2:{server.port}/boot/" in text  # iPXE's own progress line
    print(f"SeaBIOS: marker after {took:.1f}s")


async def test_iso_boots_under_ovmf_to_grub_and_ipxe(served, tmp_path):
    server, iso = served
    if not OVMF_CODE.exists():
        pytest.fail("OVMF missing: apt-get install ovmf")
    mac = "52:54:00:77:00:32"
    serial = tmp_path / "uefi-serial.log"
    vars_copy = tmp_path / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, vars_copy)
    bootfile = f"http://10.0.2.2:{server.port}/boot/uefi-offer.ipxe"
    argv = [QEMU, "-machine", "q35,accel=tcg", "-m", "256", "-nographic",
            "-monitor", "none", "-serial", f"file:{serial}", "-no-reboot",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            "-drive", f"file={iso},media=cdrom,if=none,id=cd0,readonly=on",
            "-device", "ide-cd,drive=cd0,bootindex=0",
            "-netdev", f"user,id=n0,bootfile={bootfile}",
            # no NIC option ROM: the iPXE that runs is the one GRUB chainloaded
            "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile="]
    text, took = await boot(argv, serial, f"{server.marker} {mac}", timeout=180)
    grub = text.index("fleet: chainloading iPXE from")
    ipxe = text.index("iPXE initialising devices")
    assert grub < ipxe < text.index(server.marker)
    assert "/fleet/ipxe.efi" in text[grub:ipxe]
    assert "uefi-offer.ipxe" in server.requests
    print(f"OVMF: GRUB -> iPXE -> script after {took:.1f}s")


# -- OVMF on the PXE site: the ISO's iPXE gets fleet's proxy offer ------------------------

@pytest.mark.root
async def test_iso_under_ovmf_reaches_fleets_http_through_the_proxy_offer(
        site_topology, tmp_path, monkeypatch):
    """The real path the slirp test above stands in for: `fleet --headless serve` on
    the site bridge (proxyDHCP + HTTP), the site's dnsmasq handing out addresses
    only, and the ISO fleet built booted by OVMF from `-cdrom` (no NIC ROM):
    GRUB -> ipxe.efi -> DHCP -> fleet's proxy offer names the HTTP script ->
    fleet's HTTP serves this machine its hold script."""
    if not OVMF_CODE.exists():
        pytest.fail("OVMF missing: apt-get install ovmf")
    use_isolated_env(monkeypatch, tmp_path)
    lab = QemuLab(site_topology, tmp_path, "port4011")
    site_topology.add_tap("tap0")
    lab.start_serve()
    try:
        built = lab.fleet("--format", "json", "build", "iso", "--label", "OVMFPROXY",
                          "--distributor", "lab")
        iso = json.loads(built.stdout)["path"]
        mac = "52:54:00:77:00:33"
        vars_copy = tmp_path / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        took, serial = lab.qemu("ovmf-iso", [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            "-drive", f"file={iso},media=cdrom,if=none,id=cd0,readonly=on",
            "-device", "ide-cd,drive=cd0,bootindex=0",
            # no NIC option ROM: the iPXE that runs is the ISO's ipxe.efi
            "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile="],
            "fleet: waiting to be leased", timeout=150)
        text = _ANSI.sub("", serial)
        assert text.index("fleet: chainloading iPXE from") < text.index("iPXE initialising")
        lab.wait_event("machine.discovered", 10, mac)
        log = lab.serve_err.read_text()
        # the offer came from fleet's proxy (not from the site's DHCP server) ...
        assert f"OFFER {mac} (ipxe, uefi-x64) -> http://{ADDR}:8080/boot/{mac}.ipxe" in log, \
            log[-3000:]
        # ... and fleet's HTTP served this machine its script
        m = lab.machine(mac)
        assert m["stage"] == "ipxe" and m["arch"] == "uefi-x64" and m["distributor"] == "lab", m
        assert lab.stop_serve() == 0
        print(f"OVMF ISO -> proxy offer -> fleet HTTP: {took:.1f}s")
    finally:
        if lab.serve is not None and lab.serve.poll() is None:
            lab.stop_serve()

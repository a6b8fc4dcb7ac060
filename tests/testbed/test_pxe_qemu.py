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
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.profiles import isolated_env, use_isolated_env

pytestmark = [pytest.mark.root, pytest.mark.slow]

QEMU = "/usr/bin/qemu-system-x86_64"
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
BIOS_MAC = "52:54:00:77:00:10"
UEFI_MAC = "52:54:00:77:00:20"
ADDR = "10.77.0.1"
HOLD_MARKER = "fleet: waiting to be leased"

PROFILE = """\
version: 1
name: qemu
store: ./qemu.db
sites:
  - name: lab
    subnets: [10.77.0.0/24]
    distributor:
      interface: br0
      address: {addr}
      ports: {{dhcp: 67, pxe: 4011, tftp: 69, http: 8080}}
      proxy_mode: {mode}
      poll_seconds: 2
      tftp_root: ./files
deployments:
  - name: tiny
    kind: preseed
    kernel: http://{addr}:8080/files/linux
    initrd: http://{addr}:8080/files/initrd.gz
    cmdline: "console=ttyS0 auto=true url={{{{ template_url }}}}"
"""

TIMINGS: dict[str, float] = {}


class Lab:
    def __init__(self, site, folder: Path, mode: str):
        self.site = site
        self.folder = folder
        self.env = isolated_env(folder)
        self.env["FLEET_LOG_LEVEL"] = "DEBUG"
        (folder / "files").mkdir()
        (folder / "files" / "linux").write_bytes(b"not a kernel\n" * 64)
        (folder / "files" / "initrd.gz").write_bytes(b"not an initrd\n" * 64)
        self.profile = folder / "qemu.yaml"
        self.profile.write_text(PROFILE.format(addr=ADDR, mode=mode))
        self.serve_out = folder / "serve.jsonl"
        self.serve_err = folder / "serve.err"
        self.serve = None

    def fleet(self, *args: str, ns: str | None = None, check: bool = True):
        argv = [sys.executable, "-m", "fleet", "--headless", "--profile", str(self.profile),
                *args]
        if ns:
            argv = ["ip", "netns", "exec", ns, *argv]
        cp = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        if check:
            assert cp.returncode == 0, f"{args}: {cp.stderr}"
        return cp

    def start_serve(self) -> None:
        argv = [sys.executable, "-m", "fleet", "--headless", "--profile", str(self.profile),
                "serve"]
        self.serve = self.site.popen(self.site.site_ns, argv, env=self.env,
                                     stdout=self.serve_out.open("w"),
                                     stderr=self.serve_err.open("w"))
        self.wait_event("distributor.started", 20)

    def stop_serve(self) -> int:
        self.serve.send_signal(signal.SIGTERM)
        rc = self.serve.wait(10)
        return rc

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.serve_out.read_text().splitlines() if line]

    def wait_event(self, kind: str, timeout: float, subject: str | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events():
                if e["kind"] == kind and (subject is None or e["subject"] == subject):
                    return e
            if self.serve.poll() is not None:
                raise AssertionError(f"serve exited {self.serve.returncode}: "
                                     f"{self.serve_err.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"no {kind} event in {timeout}s; saw "
                             f"{[e['kind'] for e in self.events()]}\n"
                             f"{self.serve_err.read_text()[-3000:]}")

    def machine(self, mac: str) -> dict:
        rows = json.loads(self.fleet("machines", "--format", "json").stdout)
        found = [r for r in rows if r["mac"] == mac]
        assert found, f"{mac} not among {[r['mac'] for r in rows]}"
        return found[0]

    def qemu(self, name: str, argv_tail: list[str], marker: str, timeout: float = 90,
             tap: str = "tap0") -> tuple[float, str]:
        """Run QEMU until `marker` shows on its serial console; kill it; return
        (seconds to the marker, serial log)."""
        log = self.folder / f"{name}.serial"
        log.write_text("")
        argv = [QEMU, "-machine", "q35,accel=tcg", "-m", "256", "-nographic",
                "-monitor", "none", "-serial", f"file:{log}", "-no-reboot",
                "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no", *argv_tail]
        started = time.monotonic()
        proc = self.site.popen(self.site.site_ns, argv, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
        try:
            while True:
                text = log.read_text(errors="replace")
                if marker in text:
                    took = time.monotonic() - started
                    TIMINGS[name] = took
                    return took, text
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace")
                    raise AssertionError(f"QEMU {name} exited {proc.returncode} before "
                                         f"{marker!r}: {err}\nserial:\n{text[-3000:]}")
                if time.monotonic() - started > timeout:
                    raise AssertionError(f"QEMU {name}: no {marker!r} in {timeout}s\n"
                                         f"serial:\n{text[-3000:]}\nserve:\n"
                                         f"{self.serve_err.read_text()[-3000:]}")
                time.sleep(0.2)
        finally:
            self.site.topo.stop(proc, grace=0.5)
            proc.stderr.close()


def _bios(mac: str) -> list[str]:
    return ["-boot", "order=n,reboot-timeout=0",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac}"]


def _uefi(folder: Path, mac: str) -> list[str]:
    vars_copy = folder / "OVMF_VARS.fd"
    shutil.copy(OVMF_VARS, vars_copy)
    return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1"]


def _host_key(folder: Path) -> str:
    key = folder / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True)
    return (folder / "hostkey.pub").read_text().strip()


async def _token(profile: Path, mac: str) -> str:
    from fleet.engine import Engine

    engine = await Engine.open(profile)
    try:
        return engine.callhome_token(await engine.machine(mac))
    finally:
        await engine.close()


@pytest.fixture
def lab(site_topology, tmp_path, monkeypatch):
    use_isolated_env(monkeypatch, tmp_path)
    labs = []

    def make(mode: str) -> Lab:
        lab = Lab(site_topology, tmp_path, mode)
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
    took, serial = lab.qemu("bios-hold", _bios(BIOS_MAC), HOLD_MARKER)
    lab.wait_event("machine.discovered", 10, BIOS_MAC)
    m = lab.machine(BIOS_MAC)
    assert m["state"] == "discovered" and m["arch"] == "bios", m
    assert m["distributor"] == "lab" and m["stage"] == "ipxe"

    # 2. Leased: the next boot fetches the install script and its kernel.
    lab.fleet("lease", BIOS_MAC, "--deployment", "tiny", "--hostname", "qbios")
    took, serial = lab.qemu("bios-install", _bios(BIOS_MAC), "fleet: installing tiny as qbios")
    lab.wait_event("machine.provisioning", 10, BIOS_MAC)
    assert lab.machine(BIOS_MAC)["state"] == "provisioning"
    # iPXE fetched the (dummy) kernel from fleet's HTTP: it then fails to boot it
    assert f"http://{ADDR}:8080/files/linux" in serial

    # 3. The installed system calls home with its token -> a registered node.
    token = await _token(lab.profile, BIOS_MAC)
    body = json.dumps({"token": token, "hostname": "qbios",
                       "host_keys": [_host_key(lab.folder)]})
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
    took, serial = lab.qemu("bios-wipe", _bios(BIOS_MAC), "waiting to be wiped: no wiper image")
    lab.wait_event("wipe.no_image", 10, BIOS_MAC)
    assert lab.machine(BIOS_MAC)["state"] == "wiping"

    assert lab.stop_serve() == 0
    print("QEMU BIOS timings (s):", {k: round(v, 1) for k, v in TIMINGS.items()})


async def test_bios_ipxe_rom_in_direct_mode(lab):
    """The same iPXE ROM against smee-style offers (option 43 {6: 8} + file)."""
    lab = lab("direct")
    took, serial = lab.qemu("bios-direct", _bios(BIOS_MAC), HOLD_MARKER)
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
    took, serial = lab.qemu(name, _uefi(lab.folder, UEFI_MAC), HOLD_MARKER, timeout=120)
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

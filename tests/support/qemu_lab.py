"""The QEMU lab of the root testbed: `fleet --headless serve` on the PXE site's
bridge (support.fixtures.SiteTopology) and QEMU guests (TCG) on a tap in it,
with the serial console as the guest's voice."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.profiles import isolated_env, merged, write_profile

QEMU = "/usr/bin/qemu-system-x86_64"
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
BIOS_MAC = "52:54:00:77:00:10"
UEFI_MAC = "52:54:00:77:00:20"
ADDR = "10.77.0.1"
HOLD_MARKER = "fleet: waiting to be leased"

TIMINGS: dict[str, float] = {}


class QemuLab:
    """`fleet --headless serve` in the site namespace (profiles/qemu.yaml in
    `mode`, `overrides` merged over it) and QEMU guests on its bridge."""

    def __init__(self, site, folder: Path, mode: str, overrides: dict | None = None):
        self.site = site
        self.folder = folder
        self.env = isolated_env(folder)
        self.env["FLEET_LOG_LEVEL"] = "DEBUG"
        (folder / "files").mkdir()
        (folder / "files" / "linux").write_bytes(b"not a kernel\n" * 64)
        (folder / "files" / "initrd.gz").write_bytes(b"not an initrd\n" * 64)
        self.profile = write_profile(folder, "qemu", "qemu", merged(
            {"sites": [{"name": "lab", "distributor": {"proxy_mode": mode}}]}, overrides or {}))
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


def bios_args(mac: str) -> list[str]:
    return ["-boot", "order=n,reboot-timeout=0",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac}"]


def uefi_args(folder: Path, mac: str) -> list[str]:
    vars_copy = folder / "OVMF_VARS.fd"
    shutil.copy(OVMF_VARS, vars_copy)
    return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1"]


def host_key_line(folder: Path) -> str:
    key = folder / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True)
    return (folder / "hostkey.pub").read_text().strip()


async def callhome_token(profile: Path, mac: str) -> str:
    from fleet.engine import Engine

    engine = await Engine.open(profile)
    try:
        return engine.callhome_token(await engine.machine(mac))
    finally:
        await engine.close()

"""dnsmasq in a testbed namespace: the site's ordinary DHCP server, or a
proxyDHCP + TFTP baseline to compare fleet's boot services against.

`ordinary_dhcp()` hands out addresses with no boot options (`port=0`: no DNS,
`no-ping` so offers are immediate, RA for fd77::/64 so iPXE does not wait ~16 s
on IPv6). `proxy_dhcp()` is dnsmasq's own proxy mode with `pxe-service` lines
and built-in TFTP. Config, leases, pid and log live in the topology's workdir;
the process is stopped with the topology (or `stop()`).
"""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path

from support.netns import TestbedError, Topology

DNSMASQ = "/usr/sbin/dnsmasq"
_seq = itertools.count()


class Dnsmasq:
    def __init__(self, topo: Topology, ns: str, conf_lines: list[str], *, ready: str):
        self.topo, self.ns = topo, topo.ns(ns)
        self.dir = topo.workdir / f"dnsmasq{next(_seq)}"
        self.dir.mkdir()
        self.conf = self.dir / "dnsmasq.conf"
        self.leases_file = self.dir / "leases"
        self.log = self.dir / "log"
        self.ready = ready
        self.conf.write_text("\n".join([
            *conf_lines,
            f"dhcp-leasefile={self.leases_file}",
            f"pid-file={self.dir / 'pid'}",
            f"log-facility={self.log}",
            "log-dhcp", "no-hosts", "no-resolv", "user=root", "group=root",
        ]) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "Dnsmasq":
        self.log.write_text("")
        self.proc = self.topo.popen(self.ns, [DNSMASQ, "--keep-in-foreground",
                                              f"--conf-file={self.conf}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while self.ready not in self.log_text():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                raise TestbedError(f"dnsmasq exited {self.proc.returncode}: {err} {self.log_text()}")
            if time.monotonic() > deadline:
                raise TestbedError(f"dnsmasq not ready after {timeout}s: {self.log_text()}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.topo.stop(self.proc)
            self.proc.stderr.close()
            self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def leases(self) -> list[dict[str, str]]:
        """Lease file rows: expiry, mac, address, hostname, client id."""
        if not self.leases_file.exists():
            return []
        keys = ("expiry", "mac", "address", "hostname", "client_id")
        return [dict(zip(keys, line.split())) for line in
                self.leases_file.read_text().splitlines() if line.strip()]


def ordinary_dhcp(topo: Topology, ns: str, *, interface: str = "eth0",
                  range4: str = "10.77.0.100,10.77.0.199,255.255.255.0,10m",
                  ra_prefix: str | None = "fd77::", extra: list[str] = ()) -> Dnsmasq:
    """The site's plain DHCP server (no boot options); call .start()."""
    lines = ["port=0", f"interface={interface}", "bind-interfaces",
             "dhcp-authoritative", "no-ping", f"dhcp-range={range4}"]
    if ra_prefix:
        lines += ["enable-ra", f"dhcp-range={ra_prefix},ra-only,64"]
    return Dnsmasq(topo, ns, [*lines, *extra], ready="DHCP, IP range")


def proxy_dhcp(topo: Topology, ns: str, *, interface: str = "br0",
               address: str = "10.77.0.1", tftp_root: Path,
               bios_file: str = "undionly.kpxe", efi_file: str = "ipxe.efi",
               ipxe_script: str | None = None, extra: list[str] = ()) -> Dnsmasq:
    """dnsmasq's own proxyDHCP + TFTP (the benchmark baseline); call .start().

    Firmware gets `bios_file`/`efi_file` over TFTP; iPXE (user class "iPXE")
    gets `ipxe_script` (a TFTP name or URL) when given.
    """
    lines = ["port=0", f"interface={interface}", "bind-interfaces",
             f"dhcp-range={address},proxy", "dhcp-userclass=set:ipxe,iPXE",
             f'pxe-service=tag:!ipxe,x86PC,"fleet baseline",{bios_file}',
             f'pxe-service=tag:!ipxe,X86-64_EFI,"fleet baseline",{efi_file}',
             f'pxe-service=tag:!ipxe,BC_EFI,"fleet baseline",{efi_file}',
             "enable-tftp", f"tftp-root={tftp_root}"]
    if ipxe_script:
        lines += [f'pxe-service=tag:ipxe,x86PC,"fleet baseline",{ipxe_script}',
                  f'pxe-service=tag:ipxe,X86-64_EFI,"fleet baseline",{ipxe_script}']
    return Dnsmasq(topo, ns, [*lines, *extra], ready="proxy on subnet")

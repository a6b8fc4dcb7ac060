"""A loopback boot site for tests: a profile whose distributor listens on
127.0.0.1 high ports, with small fake iPXE binaries and a TFTP root."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from support.profiles import write_profile

FAKE_BINARIES = {
    "undionly.kpxe": b"BIOS-IPXE" * 3000,  # ~27 KB: a few TFTP blocks
    "ipxe.efi": b"EFI-IPXE" * 5000,
    "snponly.efi": b"SNP" * 100,
}


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n ports free for both UDP and TCP right now (racy, but fine for tests)."""
    out: list[int] = []
    held = []
    while len(out) < n:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((host, 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind((host, port))
        except OSError:
            u.close()
            t.close()
            continue
        held += [u, t]
        out.append(port)
    for s in held:
        s.close()
    return out


@dataclass
class BootSite:
    path: Path
    folder: Path
    address: str
    dhcp: int
    pxe: int
    tftp: int
    http: int
    ipxe_dir: Path
    tftp_root: Path

    @property
    def ports(self) -> dict[str, int]:
        return {"dhcp_port": self.dhcp, "pxe_port": self.pxe, "tftp_port": self.tftp}


def write_boot_site(folder: Path, *, name: str = "boot", mode: str = "port4011",
                    delay: int = 0, address: str = "127.0.0.1", interface: str | None = None,
                    ports: tuple[int, int, int, int] | None = None, poll: int = 2,
                    stall_after: int = 1800, enabled: bool = True,
                    binaries: dict[str, bytes] = FAKE_BINARIES) -> BootSite:
    ipxe_dir = folder / "ipxe"
    tftp_root = folder / "tftp"
    ipxe_dir.mkdir(exist_ok=True)
    tftp_root.mkdir(exist_ok=True)
    for fname, data in binaries.items():
        (ipxe_dir / fname).write_bytes(data)
    (tftp_root / "hello.txt").write_text("hello from the tftp root\n")
    dhcp, pxe, tftp, http = ports or free_ports(4)
    distributor = {"address": address, **({"interface": interface} if interface else {}),
                   "ports": {"dhcp": dhcp, "pxe": pxe, "tftp": tftp, "http": http},
                   "proxy_mode": mode, "reply_delay_ms": delay, "poll_seconds": poll,
                   "ipxe_dir": str(ipxe_dir), "tftp_root": str(tftp_root), "enabled": enabled}
    path = write_profile(folder, name, "boot_site", {
        "stall_after": stall_after,
        "sites": [{"name": "rack1", "distributor": distributor}],
        "deployments": [{"name": "debian12", "kernel": f"http://{address}:{http}/files/linux",
                         "initrd": f"http://{address}:{http}/files/initrd.gz"}]})
    return BootSite(path, folder, address, dhcp, pxe, tftp, http, ipxe_dir, tftp_root)

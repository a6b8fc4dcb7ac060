"""Variants of the bundled demo profile (for tests and benchmarks that must not
collide with a demo a person is running: other ports, another /16, own keys).

    path = write_demo_profile(tmp, machines=3, misbehave=False, install_seconds=2,
                              subnet_octet=150, ports=free_ports())
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import yaml

from fleet.profile.locate import bundled_dir


def free_ports() -> dict[str, int]:
    """Four free ports on 127.0.0.1 (UDP dhcp/pxe/tftp, TCP http)."""
    out: dict[str, int] = {}
    socks = []
    try:
        for name, kind in (("dhcp", socket.SOCK_DGRAM), ("pxe", socket.SOCK_DGRAM),
                           ("tftp", socket.SOCK_DGRAM), ("http", socket.SOCK_STREAM)):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            out[name] = s.getsockname()[1]
    finally:
        for s in socks:
            s.close()
    return out


def write_demo_profile(folder: Path, *, name: str = "demo", machines: int = 3,
                       misbehave: bool = False, install_seconds: float = 2.0,
                       subnet_octet: int = 77, ports: dict[str, int] | None = None,
                       poll_seconds: int = 1, options: dict[str, Any] | None = None,
                       stall_after: int | None = None, seed: int = 1,
                       reply_delay_ms: int = 0) -> Path:
    """The bundled demo.yaml with these changes, written (with its templates) to folder."""
    folder = Path(folder)
    src = bundled_dir()
    data = yaml.safe_load((src / "demo.yaml").read_text())
    shutil.copytree(src / "templates", folder / "templates", dirs_exist_ok=True)
    data["name"] = name
    data["store"] = f"./{name}.db"
    if stall_after is not None:
        data["stall_after"] = stall_after
    net = f"127.{subnet_octet}"
    data["jumps"][0]["address"] = f"{net}.0.2"
    site = data["sites"][0]
    site["subnets"] = [f"{net}.0.0/16"]
    dist = site["distributor"]
    dist["poll_seconds"] = poll_seconds
    dist["reply_delay_ms"] = reply_delay_ms
    if ports:
        dist["ports"] = dict(ports)
        http = ports["http"]
        for d in data["deployments"]:
            for key in ("kernel", "initrd"):
                if d.get(key):
                    d[key] = d[key].replace(":8067/", f":{http}/")
    demo = data["demo"]
    demo.update(machines=machines, misbehave=misbehave, install_seconds=install_seconds,
                seed=seed)
    demo["options"] = {**demo.get("options", {}), **(options or {})}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path

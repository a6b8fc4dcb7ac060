"""Profiles derived from the bundled demo.

Variants for tests and benchmarks that must not collide with a demo a person is
running (other ports, another /16, own keys), with or without the demo's
second site (the one served by an agent behind the demo's jump):

    path = write_demo_profile(tmp, machines=3, misbehave=False, install_seconds=2,
                              subnet_octet=150, ports=free_ports())
    path = write_demo_profile(tmp, ..., second_site=free_ports())  # its site in 127.151/16

and the second site's own profile, which the demo writes at its start for the
site's `serve` and agent (`agent_site_profile`): that site alone, served here,
with the demo's operator key and deployments pointing at its own HTTP port.
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
                       reply_delay_ms: int = 0,
                       second_site: dict[str, int] | None = None) -> Path:
    """The bundled demo.yaml with these changes, written (with its templates) to
    folder. The second site (and its jump) only with `second_site`, its ports;
    its /16 is the one after the first's."""
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
    if second_site is None:
        data["jumps"] = data["jumps"][:1]
        data["sites"] = data["sites"][:1]
    else:
        _move_second_site(data, f"127.{subnet_octet + 1}", second_site)
    site = data["sites"][0]
    site["subnets"] = [f"{net}.0.0/16"]
    dist = site["distributor"]
    dist["poll_seconds"] = poll_seconds
    dist["reply_delay_ms"] = reply_delay_ms
    if ports:
        dist["ports"] = dict(ports)
        _point_deployments(data, ":8067/", f":{ports['http']}/")
    demo = data["demo"]
    demo.update(machines=machines, misbehave=misbehave, install_seconds=install_seconds,
                seed=seed)
    demo["options"] = {**demo.get("options", {}), **(options or {})}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _point_deployments(data: dict[str, Any], old: str, new: str) -> None:
    """Deployments' kernel and initrd URLs from one HTTP port to another."""
    for d in data["deployments"]:
        for key in ("kernel", "initrd"):
            if d.get(key):
                d[key] = d[key].replace(old, new)


def _move_second_site(data: dict[str, Any], net: str, ports: dict[str, int]) -> None:
    site, jump = data["sites"][1], data["jumps"][1]
    site["subnets"] = [f"{net}.0.0/16"]
    jump["address"] = f"{net}.0.2"
    site["agent"]["host"] = f"{net}.0.3"
    site["distributor"]["ports"] = dict(ports)


def agent_site_profile(data: dict[str, Any], site: str, *, folder: Path,
                       identity: Path) -> dict[str, Any]:
    """The profile of demo site `site` (one with an `agent:`) as its own host
    serves it, from the demo profile's data (`folder`: where that file is, for
    its templates): that site alone with no agent (its boot services run
    there), its jumps, the demo's operator key (`identity`: its nodes and
    jump take the key the console offers), the deployments' URLs on its own
    HTTP port, and the demo's `demo:` section with a seed of its own (other
    MACs than the first site's)."""
    sites = data["sites"]
    index = next(i for i, s in enumerate(sites) if s["name"] == site)
    own = {k: v for k, v in sites[index].items() if k != "agent"}
    first_http = sites[0]["distributor"]["ports"]["http"]
    out: dict[str, Any] = {"version": data["version"], "name": site}
    if "stall_after" in data:
        out["stall_after"] = data["stall_after"]
    ssh = dict(data.get("operator", {}).get("ssh", {}))
    ssh["identity"] = str(identity)
    out["operator"] = {**data.get("operator", {}), "ssh": ssh}
    out["jumps"] = [j for j in data.get("jumps", []) if j["name"] in own.get("jumps", [])]
    out["sites"] = [own]
    out["deployments"] = [dict(d) for d in data.get("deployments", [])]
    _point_deployments(out, f":{first_http}/", f":{own['distributor']['ports']['http']}/")
    for d in out["deployments"]:
        if d.get("template"):
            d["template"] = str((folder / d["template"]).resolve())
    demo = dict(data["demo"])
    demo["seed"] = int(demo.get("seed", 1)) + index
    out["demo"] = demo
    return out


def load_data(path: Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def write_profile_data(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path

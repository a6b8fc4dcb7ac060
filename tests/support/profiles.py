"""Small profiles written into a test's tmp dir, and an environment that keeps
fleet's XDG files inside it."""

from __future__ import annotations

import os
from pathlib import Path

BASIC = """\
version: 1
name: {name}
store: ./{name}.db
sites:
  - name: rack1
    subnets: [10.91.0.0/24]
    distributor:
      interface: br0
      address: 10.77.0.1
      ports: {{dhcp: 6767, pxe: 14011, tftp: 6969, http: 8067}}
  - name: rack2
    subnets: [10.92.0.0/24]
    distributor:
      address: 10.77.1.1
      enabled: false
deployments:
  - name: debian12
    kind: preseed
    kernel: http://10.77.0.1:8080/files/debian12/linux
    initrd: http://10.77.0.1:8080/files/debian12/initrd.gz
    cmdline: "auto=true priority=critical"
  - name: rocky9
    kind: kickstart
nodes:
  - name: web1
    site: rack1
    address: 10.91.0.11
    labels: {{role: web}}
  - name: db1
    site: rack1
    address: 10.91.0.12
    labels: {{role: db}}
  - name: edge1
    site: rack2
    address: 10.92.0.5
    public_ipv4: 203.0.113.10
    labels: {{role: web}}
"""


def write_profile(folder: Path, name: str = "t", text: str = BASIC) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text.format(name=name))
    return path


XDG_VARS = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME")


def use_isolated_env(monkeypatch, folder: Path) -> dict[str, str]:
    """Point this test's XDG dirs into `folder` (and forget FLEET_PROFILE);
    returns the environment for `fleet` subprocesses."""
    env = isolated_env(folder)
    for key in XDG_VARS:
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("FLEET_PROFILE", raising=False)
    return env


def isolated_env(folder: Path) -> dict[str, str]:
    """Environment for a `fleet` subprocess whose XDG dirs live under `folder`."""
    env = dict(os.environ)
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"),
                     ("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache")):
        env[var] = str(folder / sub)
    env.pop("FLEET_PROFILE", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env

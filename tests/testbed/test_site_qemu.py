"""Real firmware at a remote site: a QEMU guest (SeaBIOS and its NIC's iPXE ROM)
PXE boots against `fleet --headless serve` on the site's bridge, and a console
in another namespace, which reaches the site host only over SSH, sees it and
leases it through the site's agent; the guest's next boot installs.

    console 10.90.0.1 --- 10.90.0.2 site host (sshd, serve on br0 10.77.0.1) --- QEMU
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from support.agent_sshd import ROOT, keygen, sshd_config
from support.netns import ns_argv
from support.profiles import isolated_env
from support.qemu_lab import BIOS_MAC, HOLD_MARKER, QemuLab, bios_args

pytestmark = [pytest.mark.root, pytest.mark.slow]

CONSOLE, SITE_HOST = "10.90.0.1", "10.90.0.2"


def console_profile(lab: QemuLab, folder: Path, keys: Path) -> Path:
    """The site's profile as the console has it: `lab` reached through its agent."""
    data = yaml.safe_load(lab.profile.read_text())
    xdg = " ".join(f"{k}={shlex.quote(v)}" for k, v in lab.env.items() if k.startswith("XDG_"))
    command = (f"cd {shlex.quote(str(ROOT))} && env {xdg} {shlex.quote(sys.executable)} -m "
               f"fleet --headless --profile {shlex.quote(str(lab.profile))} agent")
    data["name"] = "console"
    data["store"] = "./console.db"
    data["operator"] = {"beachheads": [f"{SITE_HOST}/32"], "ssh": {
        "identity": str(keys / "operator"), "known_hosts": [str(keys / "known_hosts")],
        "user": "root", "connect_timeout": 5}}
    data["sites"][0]["agent"] = {"host": SITE_HOST, "user": "root", "command": command}
    folder.mkdir(exist_ok=True)
    path = folder / "console.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    for name in ("files", "templates"):
        if (lab.profile.parent / name).exists() and not (folder / name).exists():
            (folder / name).symlink_to(lab.profile.parent / name)
    return path


def test_a_real_bios_boot_at_a_remote_site_is_seen_and_leased_from_the_console(
        site_topology, tmp_path):
    topo = site_topology.topo
    keys = tmp_path / "keys"
    keys.mkdir()
    host_public, _ = keygen(keys / "host")
    operator_public, _ = keygen(keys / "operator")
    (keys / "authorized_keys").write_text(operator_public + "\n")
    (keys / "known_hosts").write_text(f"{SITE_HOST} {host_public}\n")
    console_ns = topo.add_ns("console")
    topo.add_veth("console", "eth0", "site", "to-console")
    topo.add_addr("console", "eth0", f"{CONSOLE}/24")
    topo.add_addr("site", "to-console", f"{SITE_HOST}/24")
    topo.popen("site", ["/usr/sbin/sshd", "-D", "-f", str(sshd_config(keys, SITE_HOST))])

    lab = QemuLab(site_topology, tmp_path / "site", "port4011")
    site_topology.add_tap("tap0")
    lab.start_serve()
    console = console_profile(lab, tmp_path / "console", keys)
    console_env = isolated_env(tmp_path / "console-xdg")

    def at_console(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(ns_argv(console_ns, [sys.executable, "-m", "fleet", "--headless",
                                                   "--profile", str(console), *args]),
                              env=console_env, cwd=ROOT, capture_output=True, text=True,
                              timeout=90)

    def machine_at_console() -> dict | None:
        done = at_console("machines", "--format", "json")
        assert done.returncode == 0, done.stderr
        return next((m for m in json.loads(done.stdout) if m["mac"] == BIOS_MAC), None)

    try:
        # the first boot: the site holds the machine; the console sees it there
        lab.qemu("site-bios-hold", bios_args(BIOS_MAC), HOLD_MARKER)
        lab.wait_event("machine.discovered", 10, BIOS_MAC)
        seen = machine_at_console()
        assert seen is not None and seen["state"] == "discovered", seen
        assert seen["distributor"] == "lab" and seen["arch"] == "bios"

        leased = at_console("lease", BIOS_MAC, "--deployment", "tiny", "--hostname", "qsite")
        assert leased.returncode == 0, leased.stderr
        assert lab.machine(BIOS_MAC)["state"] == "leased"  # at the site, in its own store
        lease_event = lab.wait_event("machine.leased", 10, BIOS_MAC)
        assert lease_event["data"]["by"]["user"] == "root"

        # its next boot installs, and the console sees it provisioning
        lab.qemu("site-bios-install", bios_args(BIOS_MAC), "fleet: installing tiny as qsite")
        lab.wait_event("machine.provisioning", 10, BIOS_MAC)
        deadline = time.monotonic() + 20
        while (m := machine_at_console())["state"] != "provisioning":
            assert time.monotonic() < deadline, m
            time.sleep(0.5)
    finally:
        lab.stop_serve()

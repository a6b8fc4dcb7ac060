"""The operator's iPXE menu run by real iPXE (root; QEMU under TCG).

SeaBIOS + the virtio NIC's iPXE ROM on the PXE site (fleet's `serve` on br0,
the site's dnsmasq handing out addresses only): the proxy offer points iPXE at
`/boot/<mac>.ipxe`, which for the leased machine is the deployment's menu; the
menu's `choose` times out to its default item, which chains a subscript that
fleet renders for this machine and records as fetched.
"""

from __future__ import annotations

import subprocess

import pytest

from support.profiles import use_isolated_env
from support.qemu_lab import ADDR, BIOS_MAC, QemuLab, bios_args

pytestmark = [pytest.mark.root, pytest.mark.slow]

MENU = """\
#!ipxe
menu fleet menu for {{ hostname }}
item hello Say hello
item install Install {{ deployment }}
choose --default hello --timeout 1500 target || goto hello
goto ${target}
:hello
chain --replace {{ sub_url }}/hello.ipxe
:install
chain --replace {{ sub_url }}/install.ipxe
"""
HELLO = "#!ipxe\necho FLEET-SUBSCRIPT {{ hostname }} {{ deployment }} {{ arch }}\nexit\n"


@pytest.fixture
def menu_lab(site_topology, tmp_path, monkeypatch):
    use_isolated_env(monkeypatch, tmp_path)
    (tmp_path / "menu.ipxe").write_text(MENU)
    (tmp_path / "hello.ipxe").write_text(HELLO)
    # the deployment `tiny` gets the menu
    lab = QemuLab(site_topology, tmp_path, "port4011", {"deployments": [
        {"name": "tiny", "ipxe": {"menu": "menu.ipxe", "subscripts": {"hello": "hello.ipxe"}}}]})
    site_topology.add_tap("tap0")
    lab.start_serve()
    yield lab
    if lab.serve.poll() is None:
        lab.stop_serve()


async def test_ipxe_runs_the_menu_and_chains_the_default_subscript(menu_lab):
    lab = menu_lab
    # make the machine known (as its hold loop would) and lease it
    cp = subprocess.run(["ip", "netns", "exec", lab.site.site_ns, "curl", "-sSf",
                         f"http://{ADDR}:8080/boot/{BIOS_MAC}.ipxe"],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0 and "waiting to be leased" in cp.stdout, cp.stderr
    lab.wait_event("machine.discovered", 10, BIOS_MAC)
    lab.fleet("lease", BIOS_MAC, "--deployment", "tiny", "--hostname", "qmenu")

    took, serial = lab.qemu("bios-menu", bios_args(BIOS_MAC), "FLEET-SUBSCRIPT qmenu tiny bios")
    event = lab.wait_event("boot.subscript", 10, BIOS_MAC)
    assert event["data"]["subscript"] == "hello"
    assert "fleet menu for qmenu" in serial  # iPXE drew the operator's menu
    # (iPXE percent-encodes the MAC's colons in its progress line)
    assert f"http://{ADDR}:8080/boot/{BIOS_MAC.replace(':', '%3A')}/sub/hello.ipxe... ok" in serial
    # the menu is not the install: the machine is still only leased
    assert lab.machine(BIOS_MAC)["state"] == "leased"
    assert lab.stop_serve() == 0
    print(f"QEMU BIOS menu -> subscript in {took:.1f}s")

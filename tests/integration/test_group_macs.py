"""Broadcast, multicast and all-zero MACs never become machines: the real HTTP
service answers /boot/<mac>.ipxe with 400 and the real proxyDHCP ignores their
DISCOVERs, while a unicast client (also a locally administered one) still boots."""

from __future__ import annotations

import pytest

from fleet.engine import Engine
from support.boot_lab import close_lab, open_lab
from support.boot_site import write_boot_site
from support.pxe_client import ClientSpec, boot, random_mac

GROUP_MACS = {
    "ff:ff:ff:ff:ff:ff": "broadcast",
    "00:00:00:00:00:00": "all-zero",
    "01:00:5e:00:00:fb": "multicast",   # IPv4 multicast (mDNS)
    "33:33:00:00:00:01": "multicast",   # IPv6 multicast
    "01:80:c2:00:00:00": "multicast",   # STP, another group address
    "03:00:00:00:00:01": "multicast",   # any odd first octet
}


def _spell(mac: str, how: str) -> str:
    if how == "dashes":
        return mac.replace(":", "-")
    if how == "bare":
        return mac.replace(":", "")
    return mac.upper()


@pytest.fixture
async def lab(tmp_path, xdg):
    lab = await open_lab(tmp_path)
    yield lab
    await close_lab(lab)


async def test_boot_script_refuses_group_and_zero_macs(lab):
    for mac, what in GROUP_MACS.items():
        for how in ("plain", "upper", "dashes", "bare"):
            text = _spell(mac, how) if how != "plain" else mac
            r = await lab.client.get(f"/boot/{text}.ipxe")
            assert r.status_code == 400 and what in r.text, (text, r.status_code, r.text)
        r = await lab.client.get(f"/boot/{mac}/sub/install.ipxe")
        assert r.status_code == 400 and what in r.text, (mac, r.text)
    # a real card, locally administered (QEMU's prefix) or not, is still a machine
    for mac in ("52:54:00:12:34:56", "02:00:00:00:00:01", "00:25:90:ab:cd:ef"):
        r = await lab.client.get(f"/boot/{mac}.ipxe")
        assert r.status_code == 200 and r.text.startswith("#!ipxe"), (mac, r.text)
    await lab.engine.flush_sightings()
    assert sorted(m.mac for m in await lab.engine.machines()) == [
        "00:25:90:ab:cd:ef", "02:00:00:00:00:01", "52:54:00:12:34:56"]


async def test_proxydhcp_ignores_group_and_zero_macs(tmp_path, xdg):
    site = write_boot_site(tmp_path)
    engine = await Engine.open(site.path)
    try:
        await engine.boot.start_services()
        kw = dict(server=site.address, **site.ports)
        for mac in GROUP_MACS:
            r = await boot(ClientSpec(mac, "bios"), collect=0.4, fetch=False, **kw)
            assert r.offers == [] and not r.answered, mac
        good = random_mac()
        r = await boot(ClientSpec(good, "bios"), fetch=False, **kw)
        assert r.answered
        stats = engine.boot.stats()["rack1"]["proxydhcp"]
        assert stats["malformed"] == len(GROUP_MACS), stats
        await engine.flush_sightings()
        assert [m.mac for m in await engine.machines()] == [good]
    finally:
        await engine.close()

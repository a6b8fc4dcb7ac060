"""The boot services on 127.0.0.1 high ports: proxyDHCP + TFTP + HTTP, driven
by the PXE client the way firmware, iPXE and UEFI HTTP Boot drive them."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import pytest

from fleet.boot.dhcp import DhcpPacket
from fleet.core.arch import FirmwareArch
from fleet.core.model import MachineState
from fleet.engine import Engine

from support.boot_site import FAKE_BINARIES, write_boot_site
from support.pxe_client import ClientSpec, boot, discover_packet, random_mac, request_packet


@pytest.fixture
async def site_factory(tmp_path, xdg):
    engines: list[Engine] = []

    async def start(**kw):
        site = write_boot_site(tmp_path, **kw)
        engine = await Engine.open(site.path)
        engines.append(engine)
        await engine.boot.start_services()
        return site, engine

    yield start
    for e in engines:
        await e.close()


def _kw(site):
    return dict(server=site.address, **site.ports)


@pytest.mark.parametrize("mode", ["port4011", "direct"])
async def test_each_client_kind_gets_its_answer(site_factory, mode):
    site, engine = await site_factory(mode=mode)
    macs = {}
    # Firmware: the iPXE binary for its arch, by TFTP.
    for kind, name in (("bios", "undionly.kpxe"), ("uefi", "ipxe.efi")):
        mac = macs[kind] = random_mac()
        r = await boot(ClientSpec(mac, kind), **_kw(site))
        assert r.boot_file == name, (kind, r)
        assert r.tftp.data == FAKE_BINARIES[name]
        # port4011: the file comes from the 4011 ACK; direct: from the offer.
        assert (r.ack is not None) == (mode == "port4011"), kind
        assert r.offer_after < 0.5
    # iPXE: the HTTP URL of its script, and the script itself.
    for kind in ("ipxe-bios", "ipxe-efi"):
        mac = macs[kind] = random_mac()
        r = await boot(ClientSpec(mac, kind), **_kw(site))
        assert r.boot_file == f"http://127.0.0.1:{site.http}/boot/{mac}.ipxe"
        assert r.ack is None
        assert r.http_status == 200 and r.script.startswith("#!ipxe"), r.script
    # UEFI HTTP Boot: the iPXE binary by HTTP, vendor class HTTPClient.
    mac = macs["http"] = random_mac()
    r = await boot(ClientSpec(mac, "http"), **_kw(site))
    assert r.boot_file == f"http://127.0.0.1:{site.http}/ipxe/ipxe.efi"
    assert r.proxy_offer.vendor_class == "HTTPClient"
    assert r.http_status == 200 and r.script.encode() == FAKE_BINARIES["ipxe.efi"]

    await engine.flush_sightings()
    seen = {m.mac: m for m in await engine.machines()}
    assert seen[macs["bios"]].arch is FirmwareArch.BIOS
    assert seen[macs["bios"]].stage == "firmware"
    assert seen[macs["uefi"]].arch is FirmwareArch.UEFI_X64
    assert seen[macs["ipxe-efi"]].stage == "ipxe"
    assert seen[macs["ipxe-efi"]].ipxe_version == "1.21.1"
    assert seen[macs["http"]].arch is FirmwareArch.UEFI_X64_HTTP
    assert all(m.distributor == "rack1" and m.state is MachineState.DISCOVERED
               for m in seen.values())
    stats = engine.boot.stats()["rack1"]["proxydhcp"]
    assert stats["malformed"] == 0 and stats["errors"] == 0


async def test_non_pxe_dhcp_clients_get_nothing(site_factory):
    site, engine = await site_factory()
    r = await boot(ClientSpec(random_mac(), "plain"), collect=0.6, **_kw(site))
    assert r.offers == [] and not r.answered
    r = await boot(ClientSpec(random_mac(), "bios", vendor_class="MSFT 5.0"), collect=0.6,
                   **_kw(site))
    assert r.offers == []
    assert engine.boot.stats()["rack1"]["proxydhcp"]["ignored"] == 2
    await engine.flush_sightings()
    assert await engine.machines() == []


async def _event(sub, kind, subject, timeout):
    async def first():
        async for e in sub:
            if e.kind == kind and e.subject == subject:
                return e
    return await asyncio.wait_for(first(), timeout)


async def test_distributor_off_and_on_from_another_process(site_factory, xdg):
    site, engine = await site_factory()
    spec = ClientSpec(random_mac(), "uefi")
    assert (await boot(spec, fetch=False, **_kw(site))).answered
    sub = engine.follow()

    def switch(word):
        return subprocess.run(
            [sys.executable, "-m", "fleet", "--headless", "--profile", str(site.path),
             "distributor", word, "rack1"], env=xdg, capture_output=True, text=True,
            timeout=30)

    cp = switch("off")
    assert cp.returncode == 0, cp.stderr
    t0 = time.monotonic()
    stopped = await _event(sub, "distributor.stopped", "rack1", 5)
    assert time.monotonic() - t0 < 1.0
    assert stopped.message
    r = await boot(spec, fetch=False, collect=0.6, **_kw(site))
    assert not r.answered and r.offers == []
    assert "rack1" not in engine.boot.stats()

    cp = switch("on")
    assert cp.returncode == 0, cp.stderr
    t0 = time.monotonic()
    await _event(sub, "distributor.started", "rack1", 5)
    assert time.monotonic() - t0 < 1.0
    r = await boot(spec, **_kw(site))
    assert r.answered and r.tftp.data == FAKE_BINARIES["ipxe.efi"]
    sub.close()


async def test_malformed_packets_are_counted_and_a_good_client_still_boots(site_factory):
    site, engine = await site_factory()
    spec = ClientSpec(random_mac(), "bios")
    good = discover_packet(spec).encode()
    garbage = [
        b"", b"\x00", b"\xff" * 50, good[:100], good[:239],  # too short
        good[:236] + b"\x00\x00\x00\x00" + good[240:],  # bad magic cookie
        good[:240] + b"\x35\x05\x01",  # option runs past the end
        bytes(range(256)) * 3,
    ]
    # Well-formed packets with a malformed option 93: a DISCOVER for port 67, a
    # REQUEST for 4011.
    bad_discover = DhcpPacket.parse(good)
    bad_discover.options[93] = b"\x00"
    bad_request = request_packet(spec, 9, "127.0.0.1", None)
    bad_request.options[93] = b"\x00\x00\x07"
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # sends empty datagrams too
    try:
        for data in garbage:
            raw.sendto(data, (site.address, site.dhcp))
            raw.sendto(data, (site.address, site.pxe))
        raw.sendto(bad_discover.encode(), (site.address, site.dhcp))
        raw.sendto(bad_request.encode(), (site.address, site.pxe))
        r = await boot(spec, **_kw(site))
        raw.settimeout(0.2)
        with pytest.raises(TimeoutError):
            raw.recvfrom(2048)  # nothing answered the garbage
    finally:
        raw.close()
    assert r.tftp.data == FAKE_BINARIES["undionly.kpxe"]
    stats = engine.boot.stats()["rack1"]["proxydhcp"]
    assert stats["malformed"] == 2 * len(garbage) + 2
    assert stats["errors"] == 0
    assert stats["offers"] == 1 and stats["acks"] == 1


async def test_reply_delay_is_honoured(site_factory):
    site, engine = await site_factory(delay=400, mode="direct")
    r = await boot(ClientSpec(random_mac(), "uefi"), fetch=False, collect=2.0, **_kw(site))
    assert r.answered
    assert 0.38 <= r.offer_after < 1.5, r.offer_after


async def test_delay_does_not_block_other_clients(site_factory):
    site, engine = await site_factory(delay=500, mode="direct")
    started = time.monotonic()
    results = await asyncio.gather(*[
        boot(ClientSpec(random_mac(), "bios"), fetch=False, collect=3.0, **_kw(site))
        for _ in range(20)])
    took = time.monotonic() - started
    assert all(r.answered for r in results)
    assert took < 2.0, f"20 delayed replies took {took:.2f}s: the delay blocks"


async def test_reply_never_waits_for_the_database(site_factory):
    """The store held busy by a long transaction: offers, ACKs and TFTP still
    go out at once; the sighting lands once the store is free."""
    site, engine = await site_factory()
    held = asyncio.Event()
    release = asyncio.Event()

    async def hog():
        async with engine.store.transaction() as tx:
            await tx.execute("UPDATE meta SET value = value WHERE 0")
            held.set()
            await release.wait()

    hog_task = asyncio.create_task(hog())
    await held.wait()
    mac = random_mac()
    try:
        r = await asyncio.wait_for(boot(ClientSpec(mac, "bios"), **_kw(site)), 5)
        assert r.answered and r.offer_after < 0.5
        assert r.tftp.data == FAKE_BINARIES["undionly.kpxe"]
        assert not hog_task.done()  # the store was busy the whole time
        assert mac not in engine.machine_states
    finally:
        release.set()
        await hog_task
    await engine.flush_sightings()
    assert (await engine.machine(mac)).arch is FirmwareArch.BIOS


async def test_tftp_refusals_become_events(site_factory):
    from support.tftp_client import TftpError, tftp_get

    site, engine = await site_factory()
    sub = engine.follow()
    with pytest.raises(TftpError) as err:
        await tftp_get(site.address, site.tftp, "../../etc/passwd")
    assert err.value.code == 2
    ev = await _event(sub, "tftp.refused", "rack1", 3)
    assert ev.severity.value == "warning" and "'..'" in ev.message
    ok = await tftp_get(site.address, site.tftp, "hello.txt")
    assert ok.data == b"hello from the tftp root\n"
    sub.close()


async def test_switching_on_with_a_taken_port_is_a_failed_event_not_a_crash(site_factory):
    site, engine = await site_factory()
    sub = engine.follow()
    await engine.switch_distributor("rack1", False)
    await _event(sub, "distributor.stopped", "rack1", 5)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind((site.address, site.tftp))
    try:
        await engine.switch_distributor("rack1", True)
        failed = await _event(sub, "distributor.failed", "rack1", 5)
        assert failed.severity.value == "error"
        assert f"TFTP cannot listen on 127.0.0.1:{site.tftp}" in failed.message
        assert "rack1" not in engine.boot.stats()
    finally:
        blocker.close()
    # nothing half-started is left holding the other ports: off and on again works
    await engine.switch_distributor("rack1", False)
    await engine.switch_distributor("rack1", True)
    await _event(sub, "distributor.started", "rack1", 5)
    r = await boot(ClientSpec(random_mac(), "bios"), **_kw(site))
    assert r.tftp.data == FAKE_BINARIES["undionly.kpxe"]
    sub.close()

"""ProxyDhcpServer on its own thread (loopback, no root): replies while the
event loop is blocked, sightings handed to the loop's thread, a clean stop,
and the cached binary choice noticing a removed file."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from fleet.boot.dhcp import DhcpPacket, MessageType
from fleet.boot.files import BootFiles
from fleet.boot.proxydhcp import ProxyDhcpServer, _CachedBinaries
from fleet.core.arch import FirmwareArch
from fleet.core.config import DistributorConfig, Ports, Profile, SiteConfig

from support.boot_site import free_ports
from support.pxe_client import ClientSpec, discover_packet, random_mac, request_packet


def _server(tmp_path, sightings: list, **kw) -> ProxyDhcpServer:
    ipxe = tmp_path / "ipxe"
    ipxe.mkdir(exist_ok=True)
    for name in ("undionly.kpxe", "ipxe.efi"):
        (ipxe / name).write_bytes(b"x" * 100)
    dhcp, pxe = free_ports(2)
    cfg = DistributorConfig(interface=None, address="127.0.0.1",
                            ports=Ports(dhcp=dhcp, pxe=pxe, tftp=69, http=8080),
                            ipxe_dir=ipxe, **kw)
    profile = Profile(version=1, name="t", path=tmp_path / "t.yaml",
                      sites=(SiteConfig(name="rack1", distributor=cfg),))
    files = BootFiles(profile, "rack1", system_dirs=())

    def on_sighting(mac, **facts):
        sightings.append((mac, facts, threading.get_ident()))

    return ProxyDhcpServer(cfg, files, site="rack1", on_sighting=on_sighting)


def _ask(port: int, packet: DhcpPacket, timeout: float = 2.0) -> DhcpPacket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.bind(("127.0.0.1", 0))
        s.sendto(packet.encode(), ("127.0.0.1", port))
        return DhcpPacket.parse(s.recvfrom(2048)[0])
    finally:
        s.close()


async def test_answers_while_the_loop_is_blocked_and_hands_sightings_to_the_loop(tmp_path):
    sightings: list = []
    server = _server(tmp_path, sightings)
    await server.start()
    try:
        mac = random_mac()
        # Blocking calls on the loop (as if it were busy with a TFTP storm): the
        # offer and the 4011 ACK still come, from the serving thread.
        offer = _ask(server.dhcp_port, discover_packet(ClientSpec(mac, "uefi")))
        assert offer.message_type == MessageType.OFFER and offer.mac == mac
        ack = _ask(server.pxe_port, request_packet(ClientSpec(mac, "uefi"), 5, "127.0.0.1"))
        assert ack.message_type == MessageType.ACK and ack.file == b"ipxe.efi"
        assert sightings == []  # nothing ran on the loop yet: it was blocked
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(sightings) == 2:
                break
        assert [s[0] for s in sightings] == [mac, mac]
        assert {s[2] for s in sightings} == {threading.get_ident()}  # the loop's thread
        assert sightings[0][1]["arch"] is FirmwareArch.UEFI_X64
        assert sightings[0][1]["distributor"] == "rack1"
        assert server.stats["offers"] == 1 and server.stats["acks"] == 1
    finally:
        await server.stop()


async def test_stop_ends_the_thread_and_frees_the_ports(tmp_path):
    server = _server(tmp_path, [], reply_delay_ms=5000)
    await server.start()
    assert server.running
    threads = {t.name for t in threading.enumerate()}
    assert "proxydhcp-rack1" in threads
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(discover_packet(ClientSpec(random_mac(), "bios")).encode(),
             ("127.0.0.1", server.dhcp_port))  # a delayed reply pending at stop
    s.close()
    time.sleep(0.1)
    t0 = time.monotonic()
    await server.stop()
    assert time.monotonic() - t0 < 1.0
    assert not server.running
    assert "proxydhcp-rack1" not in {t.name for t in threading.enumerate()}
    for port in (server.dhcp_port, server.pxe_port):
        again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        again.bind(("127.0.0.1", port))  # closed: bindable again
        again.close()
    assert server.stats["offers"] == 0  # the pending delayed reply was dropped


async def test_a_failing_sighting_callback_does_not_stop_the_replies(tmp_path):
    server = _server(tmp_path, [])

    def broken(mac, **facts):
        raise RuntimeError("store gone")

    server.on_sighting = broken
    await server.start()
    try:
        for _ in range(3):
            offer = await asyncio.to_thread(
                _ask, server.dhcp_port, discover_packet(ClientSpec(random_mac(), "uefi")))
            assert offer.message_type == MessageType.OFFER
            await asyncio.sleep(0.02)
        assert server.stats["offers"] == 3 and server.stats["errors"] == 0
    finally:
        await server.stop()


def test_cached_binary_choice_notices_a_removed_file(tmp_path):
    server = _server(tmp_path, [])
    cache = _CachedBinaries(server.files, ttl=0.2)
    assert cache.ipxe_binary_for(FirmwareArch.BIOS) == "undionly.kpxe"
    (tmp_path / "ipxe" / "undionly.kpxe").unlink()
    assert cache.ipxe_binary_for(FirmwareArch.BIOS) == "undionly.kpxe"  # within the ttl
    time.sleep(0.25)
    assert cache.ipxe_binary_for(FirmwareArch.BIOS) is None


@pytest.fixture(autouse=True)
def _no_leaked_threads():
    yield
    assert not [t for t in threading.enumerate() if t.name.startswith("proxydhcp-")]

"""Hostile input while machines boot (loopback, no root needed): garbage and
truncated DHCP/TFTP packets, path traversal over TFTP and HTTP. Every boot
still succeeds, nothing leaks, nothing crashes."""

from __future__ import annotations

import asyncio
import os
import random
import socket

import pytest

from fleet.boot.tftp_packets import encode_ack, encode_data, encode_rrq, encode_wrq
from fleet.engine import Engine

from support.boot_site import FAKE_BINARIES, write_boot_site
from support.pxe_client import ClientSpec, boot, discover_packet, random_mac
from support.tftp_client import RawClient

SECRET = b"TOP-SECRET-DO-NOT-SERVE"


@pytest.fixture
async def hostile_site(tmp_path, xdg):
    site = write_boot_site(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    os.symlink(outside / "secret.txt", site.tftp_root / "link-out")
    os.symlink(outside, site.tftp_root / "dir-out")
    engine = await Engine.open(site.path)
    await engine.boot.start_services()
    yield site, engine
    await engine.close()


def _garbage_dhcp(rng: random.Random) -> list[bytes]:
    good = discover_packet(ClientSpec(random_mac(), "bios")).encode()
    out = [b"", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600)))]
    cut = rng.randrange(0, len(good))
    out.append(good[:cut])  # truncated
    flipped = bytearray(good)
    for _ in range(8):
        flipped[rng.randrange(240, len(good))] = rng.randrange(256)
    out.append(bytes(flipped))  # options scrambled
    return out


def _garbage_tftp(rng: random.Random) -> list[bytes]:
    return [
        b"", b"\x00", b"\x00\x01", b"\x00\x01foo", b"\x00\x01foo\x00",  # truncated RRQs
        encode_rrq("undionly.kpxe", "octet", [("blksize", "99999999")]),
        encode_rrq("undionly.kpxe", "mail"),
        encode_wrq("evil.bin"),
        encode_ack(7), encode_data(1, b"x"),  # stray session packets at the listener
        b"\x00\x09" + os.urandom(30),  # unknown opcode
        b"\x00\x01" + b"A" * 2000 + b"\x00octet\x00",  # very long name
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 700))),
    ]


TRAVERSAL = [
    "../secret.txt", "../outside/secret.txt", "../../../../etc/passwd",
    "..\\outside\\secret.txt", "/../outside/secret.txt", "hello.txt/../../outside/secret.txt",
    "link-out", "dir-out/secret.txt", "./../outside/secret.txt", "/etc/passwd",
    "a\x01b", "%2e%2e/outside/secret.txt",
]

HTTP_TRAVERSAL = [
    "/files/../outside/secret.txt", "/files/%2e%2e/outside/secret.txt",
    "/files/..%2foutside%2fsecret.txt", "/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/files/link-out", "/files/dir-out/secret.txt", "/files//etc/passwd",
    "/files/..\\outside\\secret.txt", "/files/%00secret", "/ipxe/..%2f..%2fetc%2fpasswd",
    "/ipxe/../outside/secret.txt", "/ipxe/%2e%2e", "/boot/..%2f..%2fetc%2fpasswd.ipxe",
    "/templates/../../etc/passwd", "/api/wiped/..%2f..",
]


async def _raw_http(host: str, port: int, target: str) -> tuple[int, bytes]:
    """A request line sent as written (no client-side path normalisation)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                     .encode("latin-1"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data


async def test_boots_succeed_under_garbage(hostile_site):
    site, engine = hostile_site
    rng = random.Random(1234)
    stop = asyncio.Event()
    sent = {"dhcp": 0, "tftp": 0}

    async def flood():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            while not stop.is_set():
                for data in _garbage_dhcp(rng):
                    for port in (site.dhcp, site.pxe):
                        s.sendto(data, (site.address, port))
                        sent["dhcp"] += 1
                for data in _garbage_tftp(rng):
                    s.sendto(data, (site.address, site.tftp))
                    sent["tftp"] += 1
                await asyncio.sleep(0.005)
        finally:
            s.close()

    flooder = asyncio.create_task(flood())
    await asyncio.sleep(0.3)  # the flood is on before the first client starts
    try:
        kinds = ["bios", "uefi", "ipxe-bios", "ipxe-efi", "http"] * 2
        results = await asyncio.gather(*[
            boot(ClientSpec(random_mac(), k), server=site.address, collect=2.0, retries=2,
                 **site.ports) for k in kinds])
    finally:
        stop.set()
        await flooder
    for kind, r in zip(kinds, results):
        assert r.answered, kind
        if kind == "bios":
            assert r.tftp.data == FAKE_BINARIES["undionly.kpxe"]
        elif kind == "uefi":
            assert r.tftp.data == FAKE_BINARIES["ipxe.efi"]
        elif kind == "http":
            assert r.script.encode() == FAKE_BINARIES["ipxe.efi"]
        else:
            assert r.http_status == 200 and r.script.startswith("#!ipxe")
    stats = engine.boot.stats()["rack1"]
    assert sent["dhcp"] > 100 and stats["proxydhcp"]["malformed"] > 50
    assert stats["proxydhcp"]["errors"] == 0
    assert stats["tftp"]["done"] >= 4
    # still serving after the flood
    r = await boot(ClientSpec(random_mac(), "bios"), server=site.address, **site.ports)
    assert r.tftp.data == FAKE_BINARIES["undionly.kpxe"]


async def test_tftp_path_traversal_is_refused(hostile_site):
    site, engine = hostile_site
    async with await RawClient.open() as client:
        for name in TRAVERSAL:
            client.send(encode_rrq(name.encode("latin-1")), (site.address, site.tftp))
            reply = await client.recv(3)
            assert reply.data[:2] == b"\x00\x05", (name, reply.data)  # ERROR
            code = int.from_bytes(reply.data[2:4], "big")
            assert code in (1, 2), (name, code)
        assert all(SECRET not in r.data and b"root:" not in r.data for r in client.received)
    # the legitimate file next to them is served
    from support.tftp_client import tftp_get
    ok = await tftp_get(site.address, site.tftp, "hello.txt")
    assert ok.data == b"hello from the tftp root\n"
    assert engine.boot.stats()["rack1"]["tftp"]["refused"] >= len(TRAVERSAL)


async def test_http_path_traversal_is_refused(hostile_site):
    site, engine = hostile_site
    for target in HTTP_TRAVERSAL:
        status, data = await _raw_http(site.address, site.http, target)
        assert status in (400, 403, 404), (target, status, data[:200])
        assert SECRET not in data and b"root:x:" not in data, target
    status, data = await _raw_http(site.address, site.http, "/files/hello.txt")
    assert status == 200 and data.endswith(b"hello from the tftp root\n")
    # and a boot still works
    r = await boot(ClientSpec(random_mac(), "ipxe-efi"), server=site.address, **site.ports)
    assert r.http_status == 200 and r.script.startswith("#!ipxe")

"""A host flooding TFTP RRQs it never acknowledges holds a few slots for a few
seconds, not every slot for minutes: other clients keep downloading meanwhile.
Against the real boot services (the caps fleet ships) and the TftpServer."""

from __future__ import annotations

import asyncio
import socket
import time

from fleet.boot.services import TFTP_SESSIONS, TFTP_SESSIONS_PER_CLIENT
from fleet.boot.tftp import TftpServer
from fleet.boot.tftp_packets import encode_ack, encode_rrq
from fleet.engine import Engine
from support.boot_site import FAKE_BINARIES, write_boot_site
from support.tftp_client import RawClient, tftp_get

FLOODER = "127.0.0.1"
OTHERS = ("127.0.0.2", "127.0.0.3")


def flood(port: int, count: int) -> list[socket.socket]:
    """`count` RRQs from `count` source ports of one address; nothing is ever
    acknowledged (the sockets are returned open, so no ICMP ends a session)."""
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((FLOODER, 0))
        s.setblocking(False)
        s.sendto(encode_rrq("undionly.kpxe", "octet", {"timeout": "255"}), (FLOODER, port))
        socks.append(s)
    return socks


async def test_a_flood_of_unacknowledged_rrqs_leaves_room_for_others(tmp_path, xdg):
    site = write_boot_site(tmp_path)
    engine = await Engine.open(site.path)
    socks: list[socket.socket] = []
    try:
        await engine.boot.start_services()
        tftp = engine.boot.services.services("rack1").tftp
        # another machine is mid-download when the flood starts
        first = asyncio.ensure_future(tftp_get(site.address, site.tftp, "undionly.kpxe",
                                               blksize=512, local_host=OTHERS[0]))
        socks = flood(site.tftp, TFTP_SESSIONS + 76)  # 1,100: more than every slot
        await asyncio.sleep(0.5)
        assert tftp.active_sessions <= TFTP_SESSIONS_PER_CLIENT + 1, tftp.active_sessions
        t0 = time.monotonic()
        later = await tftp_get(site.address, site.tftp, "undionly.kpxe", tsize=True,
                               local_host=OTHERS[1], retries=1)
        print(f"a new client during the flood: {time.monotonic() - t0:.2f}s")
        assert later.data == FAKE_BINARIES["undionly.kpxe"]
        assert (await first).data == FAKE_BINARIES["undionly.kpxe"]
        # the flooder's sessions end within seconds, though it asked for timeout=255
        deadline = time.monotonic() + tftp.unacked_seconds + 3
        while tftp.active_sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert tftp.active_sessions == 0
        assert tftp.stats["refused"] >= TFTP_SESSIONS + 76 - TFTP_SESSIONS_PER_CLIENT
    finally:
        for s in socks:
            s.close()
        await engine.close()


async def test_an_acknowledged_session_gone_silent_ends_after_idle_seconds(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"x" * 5000)
    srv = TftpServer(root=tmp_path, host="127.0.0.1", port=0, idle_seconds=2.0)
    await srv.start()
    try:
        async with await RawClient.open() as c:
            c.send(encode_rrq("f.bin", "octet", {"timeout": "255", "blksize": "512"}),
                   ("127.0.0.1", srv.port))
            oack, tid = await c.recv_packet()
            c.send(encode_ack(0), tid)  # then silence, with a 255 s timeout asked
            t0 = time.monotonic()
            while srv.active_sessions and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.1)
            took = time.monotonic() - t0
        assert srv.active_sessions == 0 and 1.5 < took < 4, took
    finally:
        await srv.stop()


async def test_per_client_cap_refuses_only_that_client(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"y" * 3000)
    srv = TftpServer(root=tmp_path, host="0.0.0.0", port=0, max_per_client=3)
    await srv.start()
    socks = []
    try:
        socks = flood_to(srv.port, "f.bin", 5)
        await asyncio.sleep(0.3)
        assert srv.active_sessions == 3
        got = await tftp_get("127.0.0.1", srv.port, "f.bin", local_host=OTHERS[0])
        assert got.data == b"y" * 3000
    finally:
        for s in socks:
            s.close()
        await srv.stop()


def flood_to(port: int, name: str, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((FLOODER, 0))
        s.sendto(encode_rrq(name, "octet"), ("127.0.0.1", port))
        socks.append(s)
    return socks

"""A small asyncio TFTP client: the demo's simulated machines, tests and benchmarks use it.

- :func:`tftp_get` downloads a file: RFC 1350 lockstep, RFC 2347 options
  (blksize, tsize, timeout, windowsize, or any raw extras), RFC 7440 windows
  (ACK every ``windowsize`` blocks; on a gap, ACK the last block received in
  order, once). It is a callback-driven state machine, so it is cheap enough
  to measure a server with.
- :class:`RawClient` sends arbitrary bytes and records what comes back, for
  protocol-level tests (duplicate ACKs, lost ACKs, malformed packets).
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fleet.boot.tftp_packets import (
    Opcode,
    Packet,
    encode_ack,
    encode_error,
    encode_rrq,
    parse_packet,
)

_HDR = struct.Struct("!HH")


class TftpError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"TFTP error {code}: {message}")
        self.code = code
        self.message = message


class TftpTimeout(Exception):
    pass


@dataclass
class TransferResult:
    data: bytes | None
    size: int
    sha256: str
    oack: dict[str, str] | None
    seconds: float
    data_packets: int
    duplicate_packets: int
    acks_sent: int
    server_tid: tuple[str, int] | None
    blksize: int
    windowsize: int

    @property
    def mib_per_s(self) -> float:
        return self.size / (1024 * 1024) / self.seconds if self.seconds > 0 else float("inf")


class _GetProtocol(asyncio.DatagramProtocol):
    def __init__(self, request: bytes, server: tuple[str, int], wanted_options: bool,
                 retransmit_timeout: float, retries: int,
                 sink: Callable[[bytes], None] | None, keep_data: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.request = request
        self.server = server
        self.wanted_options = wanted_options
        self.retransmit_timeout = retransmit_timeout
        self.retries = retries
        self.sink = sink
        self.keep = bytearray() if keep_data else None
        self.hash = hashlib.sha256()
        self.size = 0
        self.done: asyncio.Future = self.loop.create_future()
        self.transport: asyncio.DatagramTransport | None = None
        self.tid: tuple[str, int] | None = None
        self.oack: dict[str, str] | None = None
        self.blksize = 512
        self.window = 1
        self.expected = 1  # absolute block number expected next
        self.in_window = 0
        self.gap_acked_for = -1
        self.last_sent = request
        self.last_dest = server
        self.data_packets = 0
        self.duplicates = 0
        self.acks = 0
        self.deadline = 0.0
        self.tries = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send(self.request, self.server)
        self.deadline = self.loop.time() + self.retransmit_timeout
        self.timer = self.loop.call_at(self.deadline, self._on_timer)

    def _send(self, pkt: bytes, dest) -> None:
        self.last_sent, self.last_dest = pkt, dest
        self.transport.sendto(pkt, dest)  # type: ignore[union-attr]

    def _ack(self, block: int) -> None:
        self.acks += 1
        self._send(encode_ack(block), self.tid)

    def _finish(self, exc: BaseException | None = None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)

    def _on_timer(self) -> None:
        if self.done.done():
            return
        now = self.loop.time()
        if now < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._on_timer)
            return
        self.tries += 1
        if self.tries > self.retries:
            self._finish(TftpTimeout(f"no answer after {self.retries} retries"))
            return
        self.transport.sendto(self.last_sent, self.last_dest)  # type: ignore[union-attr]
        self.gap_acked_for = -1
        self.in_window = 0
        self.deadline = now + self.retransmit_timeout
        self.timer = self.loop.call_at(self.deadline, self._on_timer)

    def error_received(self, exc) -> None:
        self._finish(exc)

    def datagram_received(self, data: bytes, addr) -> None:
        if self.done.done():
            return
        addr = (addr[0], addr[1])
        if self.tid is None:
            self.tid = addr
        elif addr != self.tid:
            self.transport.sendto(encode_error(5, "unknown transfer ID"), addr)  # type: ignore[union-attr]
            return
        if len(data) >= 4 and data[0] == 0 and data[1] == Opcode.DATA:
            self._on_data(_HDR.unpack_from(data)[1], memoryview(data)[4:])
            return
        try:
            pkt = parse_packet(data)
        except Exception:
            return
        name = type(pkt).__name__
        if name == "OAck":
            if self.oack is None and self.expected == 1:
                self.oack = {k.lower(): v for k, v in pkt.options}  # type: ignore[union-attr]
                self.blksize = int(self.oack.get("blksize", 512))
                self.window = int(self.oack.get("windowsize", 1))
                self._progress()
            self._ack(0)
        elif name == "Error":
            self._finish(TftpError(pkt.code, pkt.message))  # type: ignore[union-attr]

    def _progress(self) -> None:
        self.tries = 0
        self.deadline = self.loop.time() + self.retransmit_timeout

    def _on_data(self, n: int, payload: memoryview) -> None:
        self.data_packets += 1
        expected = self.expected
        if n != expected & 0xFFFF:
            self.duplicates += 1
            last_good = expected - 1
            if self.gap_acked_for != last_good:
                self.gap_acked_for = last_good
                self.in_window = 0
                self._ack(last_good)
            return
        self.expected = expected + 1
        self.gap_acked_for = -1
        self._progress()
        if payload:
            self.size += len(payload)
            self.hash.update(payload)
            if self.keep is not None:
                self.keep += payload
            if self.sink is not None:
                self.sink(bytes(payload))
        if len(payload) < self.blksize:
            self._ack(expected)
            self._finish()
            return
        self.in_window += 1
        if self.in_window >= self.window:
            self.in_window = 0
            self._ack(expected)


async def tftp_get(
    host: str,
    port: int,
    filename: str | bytes,
    *,
    blksize: int | None = None,
    tsize: bool = False,
    timeout_option: int | None = None,
    windowsize: int | None = None,
    extra_options: list[tuple[str, str]] | None = None,
    mode: str = "octet",
    retransmit_timeout: float = 1.0,
    retries: int = 5,
    keep_data: bool = True,
    sink: Callable[[bytes], None] | None = None,
    local_host: str | None = None,
) -> TransferResult:
    """Download ``filename``; raise :class:`TftpError` or :class:`TftpTimeout`."""
    options: list[tuple[str, str]] = []
    if blksize is not None:
        options.append(("blksize", str(blksize)))
    if tsize:
        options.append(("tsize", "0"))
    if timeout_option is not None:
        options.append(("timeout", str(timeout_option)))
    if windowsize is not None:
        options.append(("windowsize", str(windowsize)))
    options += extra_options or []
    request = encode_rrq(filename, mode, options)
    loop = asyncio.get_running_loop()
    server = (host, port)
    proto = _GetProtocol(request, server, bool(options), retransmit_timeout, retries,
                         sink, keep_data)
    started = time.perf_counter()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: proto, local_addr=(local_host or host, 0))
    try:
        await proto.done
    finally:
        transport.close()
    seconds = time.perf_counter() - started
    return TransferResult(
        data=bytes(proto.keep) if proto.keep is not None else None,
        size=proto.size,
        sha256=proto.hash.hexdigest(),
        oack=proto.oack,
        seconds=seconds,
        data_packets=proto.data_packets,
        duplicate_packets=proto.duplicates,
        acks_sent=proto.acks,
        server_tid=proto.tid,
        blksize=proto.blksize,
        windowsize=proto.window,
    )


@dataclass
class Received:
    data: bytes
    addr: tuple[str, int]
    at: float

    @property
    def packet(self) -> Packet:
        return parse_packet(self.data)


class _RawProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Received] = asyncio.Queue()
        self.log: list[Received] = []
        self.errors: list[BaseException] = []

    def datagram_received(self, data, addr) -> None:
        item = Received(data, (addr[0], addr[1]), time.monotonic())
        self.log.append(item)
        self.queue.put_nowait(item)

    def error_received(self, exc) -> None:
        self.errors.append(exc)


@dataclass
class RawClient:
    """A UDP socket that sends whatever it is told and keeps what arrives."""

    transport: asyncio.DatagramTransport
    protocol: _RawProtocol
    sent: list[bytes] = field(default_factory=list)

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> "RawClient":
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_RawProtocol, local_addr=(host, 0))
        return cls(transport, protocol)

    @property
    def address(self) -> tuple[str, int]:
        return self.transport.get_extra_info("sockname")[:2]

    @property
    def received(self) -> list[Received]:
        return self.protocol.log

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append(data)
        self.transport.sendto(data, addr)

    async def recv(self, timeout: float = 2.0) -> Received:
        async with asyncio.timeout(timeout):
            return await self.protocol.queue.get()

    async def recv_packet(self, timeout: float = 2.0) -> tuple[Packet, tuple[str, int]]:
        item = await self.recv(timeout)
        return item.packet, item.addr

    async def drain(self, seconds: float) -> list[Received]:
        """Everything that arrives within ``seconds``."""
        out: list[Received] = []
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return out
            try:
                async with asyncio.timeout(left):
                    out.append(await self.protocol.queue.get())
            except (asyncio.TimeoutError, TimeoutError):
                return out

    def close(self) -> None:
        self.transport.close()

    async def __aenter__(self) -> "RawClient":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

"""A small asyncio PXE client: what firmware, iPXE and UEFI HTTP Boot send.

Used by the boot-service tests, the demo's simulated machines and the
many-clients benchmark, so it is parametric and has no test-framework imports.

    spec = ClientSpec(mac="52:54:00:00:00:01", kind="bios")
    result = await boot(spec, server="127.0.0.1", dhcp_port=6767, pxe_port=14011,
                        tftp_port=6969)
    result.boot_file, result.tftp.size, result.script

Kinds (`KINDS`): `bios` (a PXE ROM), `uefi` (x64 UEFI PXE), `arm64` (ARM64
UEFI PXE), `ipxe-bios` / `ipxe-efi` / `ipxe-arm64` (iPXE: option 175 + user
class `iPXE`),
`http` (x64 UEFI HTTP Boot: vendor class `HTTPClient`, arch 16), and `plain`
(an ordinary DHCP client: no PXE options).

The flow `boot()` follows is the firmware's: DISCOVER to the DHCP port and
collect offers; take the proxy offer (yiaddr 0); when it names no file (a
PXE menu, or port4011 mode) send a REQUEST to the PXE port (4011) and take
the file from the ACK; fetch a TFTP name over TFTP, an http:// URL over HTTP.
Sockets are unicast to `server` (loopback tests); `broadcast=True` with
`bind=("0.0.0.0", 68)` and `interface=` sends real broadcasts in a namespace.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from fleet.boot.dhcp import DhcpError, DhcpPacket, MessageType, Opt
from fleet.boot.dhcp_options import (
    IpxeSub,
    PxeSub,
    decode_pxe_boot_menu,
    encode_client_arches,
    encode_client_guid,
    encode_pxe_boot_item,
    encode_pxe_options,
)

from fleet.sim.tftp_client import TransferResult, tftp_get


@dataclass(frozen=True)
class Kind:
    arch: int | None  # option 93 code; None: not sent
    vendor_class: str | None  # option 60; None: not sent
    ipxe: bool = False  # option 175 + user class iPXE


KINDS: dict[str, Kind] = {
    "bios": Kind(0, "PXEClient:Arch:00000:UNDI:002001"),
    "uefi": Kind(7, "PXEClient:Arch:00007:UNDI:003016"),
    "uefi-bc": Kind(9, "PXEClient:Arch:00009:UNDI:003016"),
    "arm64": Kind(11, "PXEClient:Arch:00011:UNDI:003016"),
    "uefi-x86": Kind(6, "PXEClient:Arch:00006:UNDI:003016"),
    "ipxe-bios": Kind(0, "PXEClient:Arch:00000:UNDI:002001", ipxe=True),
    "ipxe-efi": Kind(7, "PXEClient:Arch:00007:UNDI:003016", ipxe=True),
    "ipxe-arm64": Kind(11, "PXEClient:Arch:00011:UNDI:003016", ipxe=True),
    "http": Kind(16, "HTTPClient:Arch:00016:UNDI:003001"),
    "plain": Kind(None, None),
}

_xids = itertools.count(random.randrange(1 << 24) << 4)


def new_xid() -> int:
    return next(_xids) & 0xFFFFFFFF


@dataclass
class ClientSpec:
    mac: str
    kind: str = "bios"
    guid: uuid.UUID | None = None
    ipxe_version: tuple[int, int, int] = (1, 21, 1)
    ipxe_bus: tuple[int, int, int] = (1, 0x1AF4, 0x1000)  # PCI virtio-net
    vendor_class: str | None = None  # overrides the kind's option 60
    extra_options: dict[int, bytes] = field(default_factory=dict)

    @property
    def info(self) -> Kind:
        return KINDS[self.kind]

    @property
    def chaddr(self) -> bytes:
        return bytes.fromhex(self.mac.replace(":", "").replace("-", ""))


def _options(spec: ClientSpec, mtype: MessageType) -> dict[int, bytes]:
    k = spec.info
    opts: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes((mtype,))}
    opts[Opt.MAX_MESSAGE_SIZE] = (1472).to_bytes(2, "big")
    opts[Opt.PARAMETER_REQUEST_LIST] = bytes([1, 3, 6, 12, 15, 43, 60, 66, 67, 97, 128, 175])
    vendor = spec.vendor_class or k.vendor_class
    if k.arch is not None:
        opts[Opt.CLIENT_ARCH] = encode_client_arches([k.arch])
        opts[Opt.CLIENT_NDI] = bytes((1, 3, 16))
        opts[Opt.CLIENT_GUID] = encode_client_guid(spec.guid)
    if vendor is not None:
        opts[Opt.VENDOR_CLASS] = vendor.encode()
    if k.ipxe:
        opts[Opt.USER_CLASS] = b"iPXE"  # iPXE's plain-string form
        opts[Opt.IPXE_ENCAP] = _ipxe_subs(spec)
    opts.update(spec.extra_options)
    return opts


def _ipxe_subs(spec: ClientSpec) -> bytes:
    bus_type, ven, dev = spec.ipxe_bus
    subs = {IpxeSub.BUS_ID: bytes((bus_type,)) + ven.to_bytes(2, "big") + dev.to_bytes(2, "big"),
            IpxeSub.VERSION: bytes(spec.ipxe_version), 0x13: b"\x01", 0x15: b"\x01"}
    if spec.kind in ("ipxe-efi", "ipxe-arm64"):
        subs[0x24] = b"\x01"
    return encode_pxe_options(subs)


def discover_packet(spec: ClientSpec, xid: int | None = None, *,
                    giaddr: str = "0.0.0.0") -> DhcpPacket:
    return DhcpPacket(xid=new_xid() if xid is None else xid, flags=0x8000, chaddr=spec.chaddr,
                      giaddr=giaddr, options=_options(spec, MessageType.DISCOVER))


def request_packet(spec: ClientSpec, xid: int, ciaddr: str,
                   boot_item: int | None = None) -> DhcpPacket:
    """The port-4011 REQUEST: ciaddr set; option 43/71 when answering a menu."""
    opts = _options(spec, MessageType.REQUEST)
    if boot_item is not None:
        opts[Opt.VENDOR_SPECIFIC] = encode_pxe_options(
            {PxeSub.BOOT_ITEM: encode_pxe_boot_item(boot_item, 0)})
    return DhcpPacket(xid=xid, chaddr=spec.chaddr, ciaddr=ciaddr, options=opts)


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc) -> None:
        pass


class DhcpSocket:
    """One UDP socket sending client packets and collecting replies by xid."""

    def __init__(self, transport, proto: _Collector):
        self.transport = transport
        self.proto = proto
        self.malformed = 0

    @classmethod
    async def open(cls, bind: tuple[str, int] = ("127.0.0.1", 0), *,
                   interface: str | None = None) -> "DhcpSocket":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if interface:
            sock.setsockopt(socket.SOL_SOCKET, 25, interface.encode() + b"\0")
        sock.bind(bind)
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(_Collector, sock=sock)
        return cls(transport, proto)

    @property
    def address(self) -> tuple[str, int]:
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, packet: DhcpPacket | bytes, dest: tuple[str, int]) -> None:
        data = packet if isinstance(packet, (bytes, bytearray)) else packet.encode()
        self.transport.sendto(bytes(data), dest)

    async def collect(self, xid: int, seconds: float, *, first: bool = False,
                      want=None) -> list[tuple[DhcpPacket, tuple[str, int], float]]:
        """Replies with `xid` arriving within `seconds` (with their arrival time);
        `first=True` returns at the first one `want(packet)` accepts."""
        out = []
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while True:
            left = end - loop.time()
            if left <= 0:
                return out
            try:
                async with asyncio.timeout(left):
                    data, addr = await self.proto.queue.get()
            except (asyncio.TimeoutError, TimeoutError):
                return out
            try:
                pkt = DhcpPacket.parse(data)
            except DhcpError:
                self.malformed += 1
                continue
            if pkt.xid != xid or pkt.op != 2:
                continue
            out.append((pkt, (addr[0], addr[1]), time.monotonic()))
            if first and (want is None or want(pkt)):
                return out

    def close(self) -> None:
        self.transport.close()

    async def __aenter__(self) -> "DhcpSocket":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()


def is_proxy_offer(pkt: DhcpPacket) -> bool:
    return (pkt.message_type == MessageType.OFFER and pkt.yiaddr == IPv4Address(0)
            and Opt.VENDOR_CLASS in pkt.options)


def boot_file_of(pkt: DhcpPacket) -> str | None:
    """Option 67, else the `file` field; None when neither names anything."""
    name = pkt.bootfile_name
    if name:
        return name.rstrip("\x00")
    return pkt.file.decode(errors="replace") or None


def menu_item_of(pkt: DhcpPacket) -> int | None:
    """The first boot menu item type in option 43 (sub-option 9), if any."""
    subs = pkt.pxe_options or {}
    raw = subs.get(PxeSub.BOOT_MENU)
    if not raw:
        return None
    items = [i for i in decode_pxe_boot_menu(raw) if i.type != 0]
    return items[0].type if items else None


@dataclass
class BootResult:
    spec: ClientSpec
    offers: list[DhcpPacket] = field(default_factory=list)
    proxy_offer: DhcpPacket | None = None
    ack: DhcpPacket | None = None
    boot_file: str | None = None
    tftp: TransferResult | None = None
    http_status: int | None = None
    script: str | None = None
    offer_after: float | None = None  # seconds from DISCOVER to the proxy offer
    seconds: float = 0.0

    @property
    def answered(self) -> bool:
        return self.proxy_offer is not None


async def boot(spec: ClientSpec, *, server: str = "127.0.0.1", dhcp_port: int = 67,
               pxe_port: int = 4011, tftp_port: int = 69, ciaddr: str | None = None,
               bind: tuple[str, int] | None = None, interface: str | None = None,
               broadcast: bool = False, collect: float = 1.0, fetch: bool = True,
               retries: int = 0, http_client=None) -> BootResult:
    """One boot attempt (see the module docstring). `collect`: how long to wait
    for the proxy offer; `retries`: DISCOVERs resent that many times (firmware
    does at 4, 8, 16 s). `ciaddr`: the address the client "got" from the real
    DHCP server, used for the 4011 REQUEST (default: the bound address)."""
    started = time.monotonic()
    result = BootResult(spec)
    bind = bind or (("0.0.0.0", 68) if broadcast else ("127.0.0.1", 0))
    sock = await DhcpSocket.open(bind, interface=interface)
    try:
        xid = new_xid()
        dest = ("255.255.255.255", dhcp_port) if broadcast else (server, dhcp_port)
        for _attempt in range(retries + 1):
            sent = time.monotonic()
            sock.send(discover_packet(spec, xid), dest)
            got = await sock.collect(xid, collect, first=True, want=is_proxy_offer)
            result.offers += [p for p, _, _ in got]
            proxy = [(p, t) for p, _, t in got if is_proxy_offer(p)]
            if proxy:
                result.proxy_offer = proxy[0][0]
                result.offer_after = proxy[0][1] - sent
                break
        offer = result.proxy_offer
        if offer is None:
            return result
        file = boot_file_of(offer)
        if file is None or menu_item_of(offer) is not None:
            item = menu_item_of(offer)
            me = ciaddr or (sock.address[0] if sock.address[0] != "0.0.0.0" else None)
            if me is None:
                raise ValueError("a 4011 REQUEST needs ciaddr= (the client's address)")
            target = (str(offer.server_id or offer.siaddr) if not server else server, pxe_port)
            rxid = new_xid()
            sock.send(request_packet(spec, rxid, me, item), target)
            got = await sock.collect(rxid, max(collect, 1.0), first=True)
            acks = [p for p, _, _ in got if p.message_type == MessageType.ACK]
            if not acks:
                return result
            result.ack = acks[0]
            file = boot_file_of(acks[0])
        result.boot_file = file
        if not fetch or file is None:
            return result
        if file.startswith("http://") or file.startswith("https://"):
            result.http_status, result.script = await http_get(file, http_client)
        else:
            siaddr = str((result.ack or offer).siaddr)
            host = server if server else siaddr
            local = sock.address[0]
            if local == "0.0.0.0":
                local = ciaddr or "0.0.0.0"
            result.tftp = await tftp_get(host, tftp_port, file, blksize=1432, tsize=True,
                                         local_host=local)
        return result
    finally:
        sock.close()
        result.seconds = time.monotonic() - started


async def http_get(url: str, client=None) -> tuple[int, str]:
    import httpx

    if client is not None:
        r = await client.get(url)
        return r.status_code, r.text
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as c:
        r = await c.get(url)
        return r.status_code, r.text


def random_mac(prefix: str = "52:54:00") -> str:
    return prefix + ":" + ":".join(f"{b:02x}" for b in os.urandom(3))

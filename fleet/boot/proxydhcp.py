"""proxyDHCP: answer PXE and HTTP-boot clients with boot data, never addresses.

The site's own DHCP server hands out addresses; this server answers the same
DISCOVER (UDP 67) with a proxy OFFER (`yiaddr` 0) that says what to boot, and
answers REQUESTs on UDP 4011 with an ACK naming the file. See
../shared/notes/boot-facts.md for the facts behind each rule.

Who gets what (`decide`, pure):

- only clients whose option 60 starts with one of `vendor_classes` and that
  send option 93 (client arch); everyone else gets nothing;
- a UEFI HTTP Boot client (vendor class `HTTPClient`) gets
  `http://<addr>:<http>/ipxe/<binary>` with vendor class `HTTPClient`;
- an iPXE client (option 175, or user class `iPXE`) gets its script URL
  `http://<addr>:<http>/boot/<mac>.ipxe`;
- any other PXE client gets the iPXE binary for its firmware over TFTP
  (`BootFiles.ipxe_binary_for`; no binary for the arch: no answer).

Two offer strategies (`proxy_mode`):

- `direct` (as Tinkerbell smee): option 43 `{6: 0x08}` + option 54 + siaddr +
  the file in the OFFER; the client needs no port 4011.
- `port4011` (as dnsmasq/pixiecore): a BIOS firmware client gets a one-item
  PXE menu (option 43 sub-options 6, 8, 9, 10) pointing at this server and no
  file; other clients get an offer without option 43 (UEFI then sends its
  REQUEST to port 4011). The iPXE script URL and the HTTP Boot URL are in the
  offer in both modes, because iPXE may take the proxy offer as it is.

Port 4011 is served in both modes (iPXE sends a ProxyDHCPREQUEST there after
its normal DHCP exchange whenever it saw a proxy offer).

The hot path never awaits anything and runs on a thread of its own (see
`ProxyDhcpServer`): a datagram is parsed, decided from memory (the profile and
the iPXE binary choice, cached for 2 s), answered (now, or after
`reply_delay_ms`), and only then reported through the synchronous
`on_sighting` callback, called on the event loop with a batch at a time (the
engine batches those writes too). Malformed packets are dropped with a logged
reason and counted in `stats`.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import heapq
import ipaddress
import logging
import select
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from types import MappingProxyType
from typing import Any, Callable

from fleet.boot.dhcp import BOOTREQUEST, DhcpError, DhcpPacket, MessageType
from fleet.boot.dhcp_replies import build_proxy_ack, build_proxy_offer
from fleet.boot.dhcp_options import PxeMenuItem, pxe_menu
from fleet.boot.files import BootFiles
from fleet.boot.macs import why_not_a_machine
from fleet.core.arch import FirmwareArch
from fleet.core.config import DistributorConfig

log = logging.getLogger(__name__)

DHCP_SERVER_PORT = 67
DHCP_CLIENT_PORT = 68
BROADCAST = "255.255.255.255"

#: The PXE menu item type fleet offers BIOS clients in port4011 mode (0x8000+
#: is the vendor range; 0 would mean "boot from local disk").
MENU_ITEM_TYPE = 0x8000
MENU_ITEM = PxeMenuItem(MENU_ITEM_TYPE, "fleet network boot")

_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
#: Receive buffer of the DHCP and PXE sockets: a rack powering on sends
#: hundreds of DISCOVERs at once, and the default (~208 KiB, ~100 datagrams)
#: dropped hundreds of them in the 500-client bench while TFTP kept the loop busy.
RCVBUF = 4 * 1024 * 1024
_RECV_SIZE = 4096  # DHCP messages are at most 576 bytes unless option 57 says more
_BATCH = 64  # datagrams read per socket per wake-up of the serving thread
#: The interpreter's GIL switch interval once a proxy runs (process-wide, never
#: raised again). A datagram wakes the serving thread, which then waits for
#: the GIL while the event loop runs TFTP, up to the interval (default 5 ms),
#: and again after each recvfrom/sendto, which drop the GIL. In the 500-client
#: bench (2 loaded cores) the firmware-burst offer p99 was 70 ms at 5 ms,
#: 13-20 ms at 0.5 ms, 4-8 ms at 0.1 ms. The serving thread is idle between
#: bursts, so the extra switching costs the loop next to nothing.
SWITCH_INTERVAL = 0.0001
_SIOCGIFADDR = 0x8915

Sighting = Callable[..., None]


# ---------------------------------------------------------------- decisions


class ClientKind:
    FIRMWARE = "firmware"  # a PXE ROM / UEFI PXE: gets the iPXE binary over TFTP
    IPXE = "ipxe"  # iPXE: gets the HTTP URL of its script
    HTTP_BOOT = "http-boot"  # UEFI HTTP Boot: gets the iPXE binary over HTTP


@dataclass(frozen=True)
class Answer:
    """What one client is told. `boot_file` is a TFTP name or an http:// URL."""

    kind: str  # ClientKind
    mac: str
    arch: FirmwareArch
    boot_file: str
    vendor_class: str  # "PXEClient" or "HTTPClient": option 60 of the reply
    menu: bool = False  # port4011 BIOS offer: PXE menu, no file

    @property
    def stage(self) -> str:
        return "ipxe" if self.kind == ClientKind.IPXE else "firmware"


@dataclass(frozen=True)
class Ignore:
    """Not answered, and why (`malformed` ones are counted separately)."""

    reason: str
    malformed: bool = False


def classify(packet: DhcpPacket, vendor_classes: tuple[str, ...]) -> str | Ignore:
    """The client kind of a PXE/HTTP-boot request, or why it is not ours.
    Raises DhcpError when an option it reads is malformed."""
    vendor = packet.vendor_class
    if vendor is None:
        return Ignore("no vendor class (option 60): not a PXE client")
    if not any(vendor.startswith(v) for v in vendor_classes):
        return Ignore(f"vendor class {vendor[:40]!r} is not one we answer")
    if packet.client_arches is None:
        return Ignore("no client arch (option 93): not a PXE client")
    if vendor.startswith("HTTPClient"):
        return ClientKind.HTTP_BOOT
    if packet.is_ipxe:
        return ClientKind.IPXE
    return ClientKind.FIRMWARE


def script_url(address: str, http_port: int, mac: str) -> str:
    return f"http://{address}:{http_port}/boot/{mac}.ipxe"


def binary_url(address: str, http_port: int, name: str) -> str:
    return f"http://{address}:{http_port}/ipxe/{name}"


def decide(packet: DhcpPacket, cfg: DistributorConfig, files: BootFiles, *,
           http_port: int | None = None, menu_allowed: bool = True) -> Answer | Ignore:
    """What to tell the client that sent `packet` (a DISCOVER, or a 4011 REQUEST
    with `menu_allowed=False`). Pure apart from stat()s of boot files."""
    if packet.op != BOOTREQUEST:
        return Ignore("not a BOOTREQUEST", malformed=True)
    mac = packet.mac
    if mac is None:
        return Ignore(f"not Ethernet (htype {packet.htype}, hlen {packet.hlen})")
    refused = why_not_a_machine(mac)
    if refused is not None:
        return Ignore(refused, malformed=True)
    try:
        kind = classify(packet, tuple(cfg.vendor_classes))
        if isinstance(kind, Ignore):
            return kind
        arch = packet.arch or FirmwareArch.UNKNOWN
    except DhcpError as err:
        return Ignore(f"malformed option: {err}", malformed=True)
    port = http_port if http_port is not None else cfg.ports.http
    if kind == ClientKind.HTTP_BOOT:
        binary = files.http_boot_binary_for(arch)
        if binary is None:
            return Ignore(f"no iPXE binary for HTTP boot on {arch.label}")
        return Answer(kind, mac, arch, binary_url(cfg.address, port, binary), "HTTPClient")
    if kind == ClientKind.IPXE:
        return Answer(kind, mac, arch, script_url(cfg.address, port, mac), "PXEClient")
    binary = files.ipxe_binary_for(arch)
    if binary is None:
        return Ignore(f"no iPXE binary for {arch.label} firmware")
    menu = (menu_allowed and cfg.proxy_mode == "port4011" and arch is FirmwareArch.BIOS)
    return Answer(kind, mac, arch, binary, "PXEClient", menu=menu)


@functools.lru_cache(maxsize=64)
def _server_ip(address: str) -> IPv4Address:
    return IPv4Address(address)


@functools.lru_cache(maxsize=64)
def _menu(address: str) -> Mapping[int, bytes]:
    """The one-item PXE menu pointing at `address` (read-only: shared by every offer)."""
    return MappingProxyType(pxe_menu([MENU_ITEM], server_ip=address, timeout=0))


def build_offer(request: DhcpPacket, answer: Answer, cfg: DistributorConfig) -> DhcpPacket:
    """The proxy OFFER for `answer`, in the distributor's proxy mode."""
    addr = _server_ip(cfg.address)
    if answer.menu:
        return build_proxy_offer(
            request, addr, None, vendor_class=answer.vendor_class,
            pxe_options=_menu(cfg.address), with_discovery_control=False)
    if cfg.proxy_mode == "direct":
        direct = answer.kind != ClientKind.HTTP_BOOT
        return build_proxy_offer(request, addr, answer.boot_file,
                                 vendor_class=answer.vendor_class,
                                 with_discovery_control=direct)
    # port4011: no option 43. Firmware comes to 4011 for its file; iPXE and HTTP
    # Boot clients can use the URL in the offer as it is.
    file = None if answer.kind == ClientKind.FIRMWARE else answer.boot_file
    return build_proxy_offer(request, addr, file, vendor_class=answer.vendor_class,
                             with_discovery_control=False)


def build_ack(request: DhcpPacket, answer: Answer, cfg: DistributorConfig) -> DhcpPacket:
    """The port-4011 ACK naming the file (echoing the client's boot item)."""
    return build_proxy_ack(request, _server_ip(cfg.address), answer.boot_file,
                           vendor_class=answer.vendor_class)


def reply_target(request: DhcpPacket, source: tuple[str, int], server_port: int
                 ) -> tuple[str, int]:
    """Where the reply to a port-67 request goes.

    On the standard port: a relayed request (giaddr set) goes back to the relay
    at giaddr:67; a client that has an address (ciaddr) gets a unicast to
    ciaddr:68; otherwise a broadcast to 255.255.255.255:68 (a proxy hands out
    no address it could unicast to). On any other port (tests, simulations)
    the reply goes back to where the request came from.
    """
    if server_port != DHCP_SERVER_PORT:
        return source
    zero = IPv4Address(0)
    if request.giaddr != zero:
        return (str(request.giaddr), DHCP_SERVER_PORT)
    if request.ciaddr != zero:
        return (str(request.ciaddr), DHCP_CLIENT_PORT)
    return (BROADCAST, DHCP_CLIENT_PORT)


def sighting_facts(packet: DhcpPacket, answer: Answer) -> dict[str, Any]:
    """What the request told us about the machine (for engine.record_sighting)."""
    facts: dict[str, Any] = {"stage": answer.stage, "arch": answer.arch,
                             "vendor_class": packet.vendor_class}
    try:
        guid = packet.client_guid
        facts["uuid"] = str(guid) if guid else None
    except DhcpError:
        pass
    if answer.kind == ClientKind.IPXE:
        try:
            version = packet.ipxe_version
            facts["ipxe_version"] = ".".join(map(str, version)) if version else None
        except DhcpError:
            pass
        try:
            bus = packet.ipxe_bus_id
            if bus is not None:
                kind = {1: "PCI", 2: "ISAPnP", 3: "EISA", 4: "MCA", 5: "ISA", 6: "TAP",
                        7: "EFI"}.get(bus.bus_type, str(bus.bus_type))
                facts["ipxe_busid"] = f"{kind}:{bus.vendor:04x}:{bus.device:04x}"
        except DhcpError:
            pass
    ip = None
    if packet.ciaddr != IPv4Address(0):
        ip = str(packet.ciaddr)
    else:
        raw = packet.options.get(50)
        if raw is not None and len(raw) == 4:
            ip = str(IPv4Address(raw))
    facts["last_ip"] = ip
    return facts


# ---------------------------------------------------------------- sockets


def interface_for_address(address: str) -> str | None:
    """The name of the interface holding IPv4 `address` (this namespace), or None."""
    try:
        want = socket.inet_aton(address)
    except OSError:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _index, name in socket.if_nameindex():
            try:
                req = struct.pack("256s", name.encode()[:15])
                res = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, req)
            except OSError:
                continue
            if res[20:24] == want:
                return name
    return None


def open_udp_socket(address: str, port: int, interface: str | None) -> socket.socket:
    """A non-blocking UDP socket for a DHCP-style service.

    With an interface: bound to 0.0.0.0:port and to the device
    (SO_BINDTODEVICE), so broadcasts arriving there are received and replies
    leave through it. Without one (loopback tests): bound to address:port.
    OSError (EADDRINUSE, EACCES, ENODEV) propagates.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        # No SO_REUSEADDR: with it a second server (another `fleet serve`, a
        # dnsmasq) could bind the same port silently and both would answer.
        # Sockets bound to different devices do not conflict without it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:  # past net.core.rmem_max when allowed (root / CAP_NET_ADMIN)
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        if interface:
            sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, interface.encode() + b"\0")
            sock.bind(("0.0.0.0", port))
        else:
            sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _CachedBinaries:
    """`BootFiles`' binary choices, remembered for `ttl` seconds.

    Every offer asks which iPXE binary an arch gets, which is a few stat()s;
    a burst of DISCOVERs asks the same question hundreds of times a second.
    A binary dropped in (or removed) is noticed within `ttl`."""

    def __init__(self, files: BootFiles, ttl: float = 2.0):
        self.files = files
        self.ttl = ttl
        self._memo: dict[tuple[str, FirmwareArch], tuple[float, str | None]] = {}

    def _get(self, which: str, arch: FirmwareArch, lookup) -> str | None:
        now = time.monotonic()
        hit = self._memo.get((which, arch))
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        value = lookup(arch)
        self._memo[(which, arch)] = (now, value)
        return value

    def ipxe_binary_for(self, arch: FirmwareArch) -> str | None:
        return self._get("pxe", arch, self.files.ipxe_binary_for)

    def http_boot_binary_for(self, arch: FirmwareArch) -> str | None:
        return self._get("http", arch, self.files.http_boot_binary_for)


class ProxyDhcpServer:
    """The proxyDHCP service of one distributor: UDP `ports.dhcp` and `ports.pxe`.

    Both sockets are served by a thread of their own (`_serve`), not by the
    event loop: the loop also runs hundreds of TFTP sessions during a rack's
    power-on, and an offer queued behind a loop iteration of those waited tens
    of milliseconds (500-client bench, 2 loaded cores: offer p99 207 ms on the
    loop, 9-15 ms on the thread, dnsmasq 7-8 ms in the same runs). The thread
    only reads memory (the config, the cached binary choice, BootFiles'
    in-memory index) and the sockets; sightings go to `on_sighting` on the
    event loop, a batch at a time (`loop.call_soon_threadsafe`). What is left
    of the tail: the serving thread needs the GIL, and on overloaded cores the
    loop's thread can be descheduled while it holds it.
    """

    def __init__(self, cfg: DistributorConfig, files: BootFiles, *, site: str,
                 on_sighting: Sighting | None = None, http_port: int | None = None,
                 interface: str | None = None, bind_interface: bool | None = None):
        self.cfg = cfg
        self.files = files
        self.site = site
        self.on_sighting = on_sighting
        self.http_port = http_port if http_port is not None else cfg.ports.http
        loopback = ipaddress.ip_address(cfg.address).is_loopback
        self.interface = interface or cfg.interface
        if self.interface is None and not loopback:
            # Broadcasts only reach a socket bound to the wildcard: find the
            # device that holds the address and bind to it.
            self.interface = interface_for_address(cfg.address)
        # Loopback tests bind the address; real sites bind the device.
        if bind_interface is None:
            bind_interface = bool(self.interface) and not loopback
        self.bind_interface = bind_interface
        self.enabled = True  # a quick off switch; services close the sockets too
        self._binaries = _CachedBinaries(files)
        self._dhcp: socket.socket | None = None
        self._pxe: socket.socket | None = None
        self._dhcp_port = cfg.ports.dhcp
        self._pxe_port = cfg.ports.pxe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._stopping = False
        # Thread-only state: delayed replies (a heap by due time) and the
        # sightings of the current batch.
        self._pending: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._sightings: list[tuple[DhcpPacket, Answer]] = []
        self._log_window = 0.0
        self._log_count = 0
        self._log_suppressed = 0
        self.stats = {"received": 0, "offers": 0, "acks": 0, "ignored": 0, "malformed": 0,
                      "errors": 0}

    @property
    def dhcp_port(self) -> int:
        return self._dhcp_port

    @property
    def pxe_port(self) -> int:
        return self._pxe_port

    @property
    def running(self) -> bool:
        return self._thread is not None

    async def start(self) -> None:
        """Bind both ports and start serving. OSError propagates with
        `.service`/`.port` attributes naming what failed."""
        if self._thread is not None:
            raise RuntimeError("proxyDHCP already started")
        device = self.interface if self.bind_interface else None
        opened: list[socket.socket] = []
        try:
            for which, port in (("dhcp", self.cfg.ports.dhcp), ("pxe", self.cfg.ports.pxe)):
                try:
                    sock = open_udp_socket(self.cfg.address, port, device)
                except OSError as err:
                    err.service = "proxyDHCP" if which == "dhcp" else "PXE (4011)"
                    err.port = port
                    err.interface = device
                    raise
                opened.append(sock)
        except BaseException:
            for sock in opened:
                sock.close()
            raise
        self._dhcp, self._pxe = opened
        self._dhcp_port = self._dhcp.getsockname()[1]
        self._pxe_port = self._pxe.getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._wake = socket.socketpair()
        for s in self._wake:
            s.setblocking(False)
        self._stopping = False
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._thread = threading.Thread(target=self._serve, name=f"proxydhcp-{self.site}",
                                        daemon=True)
        self._thread.start()
        log.info("proxydhcp %s listening on %s ports %d and %d (%s mode)", self.site,
                 device or self.cfg.address, self._dhcp_port, self._pxe_port,
                 self.cfg.proxy_mode)

    async def stop(self) -> None:
        """Stop the thread (pending delayed replies are dropped), close the sockets."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping = True
            try:
                self._wake[1].send(b"x")  # type: ignore[index]
            except OSError:
                pass
            thread.join(5.0)  # it wakes at once and finishes its batch (milliseconds)
            if thread.is_alive():
                log.warning("proxydhcp %s: serving thread did not stop", self.site)
        for sock in (self._dhcp, self._pxe, *(self._wake or ())):
            if sock is not None:
                sock.close()
        self._dhcp = self._pxe = None
        self._wake = None
        self._pending.clear()
        self._sightings.clear()

    # -- the serving thread: no awaits, nothing but memory and the sockets ------------

    def _serve(self) -> None:
        dhcp, pxe, wake = self._dhcp, self._pxe, self._wake[0]  # type: ignore[index]
        with selectors.DefaultSelector() as sel:
            sel.register(dhcp, selectors.EVENT_READ, False)
            sel.register(pxe, selectors.EVENT_READ, True)
            sel.register(wake, selectors.EVENT_READ, None)
            while not self._stopping:
                try:
                    timeout = None
                    if self._pending:
                        timeout = max(0.0, self._pending[0][0] - time.monotonic())
                    for key, _events in sel.select(timeout):
                        if key.data is None:
                            _drain_wake(wake)
                        else:
                            self._drain(key.fileobj, key.data)
                    self._send_due()
                    self._hand_over_sightings()
                except Exception:  # the thread must outlive any one bad moment
                    self.stats["errors"] += 1
                    log.exception("proxydhcp %s: unexpected error in the serving thread",
                                  self.site)
                    time.sleep(0.01)

    def _drain(self, sock: socket.socket, on_pxe_port: bool) -> None:
        # Up to _BATCH datagrams per wake-up: a burst of DISCOVERs is answered
        # in one go instead of one select() per datagram.
        for _ in range(_BATCH):
            try:
                data, addr = sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # e.g. an ICMP error queued on the socket
                log.debug("proxydhcp %s: receive: %s", self.site, err)
                continue
            try:
                self._on_datagram(sock, on_pxe_port, data, (addr[0], addr[1]))
            except Exception:  # one datagram must never take the server down
                self.stats["errors"] += 1
                log.exception("proxydhcp: unexpected error on a datagram from %s", addr)

    def _send_due(self) -> None:
        now = time.monotonic()
        while self._pending and self._pending[0][0] <= now:
            _due, _seq, send = heapq.heappop(self._pending)
            send()

    def _hand_over_sightings(self) -> None:
        if not self._sightings or self.on_sighting is None:
            self._sightings.clear()
            return
        batch, self._sightings = self._sightings, []
        try:
            self._loop.call_soon_threadsafe(self._deliver, batch)  # type: ignore[union-attr]
        except RuntimeError:  # the loop is closed: nobody is left to record them
            pass

    def _deliver(self, batch: list[tuple[DhcpPacket, Answer]]) -> None:
        """On the event loop: report a batch of sightings."""
        for packet, answer in batch:
            try:
                self.on_sighting(answer.mac, distributor=self.site,  # type: ignore[misc]
                                 interface=self.interface, **sighting_facts(packet, answer))
            except Exception:
                log.exception("proxydhcp: recording a sighting failed")

    def _drop(self, reason: str, source, *, malformed: bool) -> None:
        self.stats["malformed" if malformed else "ignored"] += 1
        if malformed:
            # At most a few lines a second: a flood of garbage must not flood the log.
            now = time.monotonic()
            if now - self._log_window >= 1.0:
                if self._log_suppressed:
                    log.info("proxydhcp %s: %d more malformed packets not logged", self.site,
                             self._log_suppressed)
                self._log_window, self._log_count, self._log_suppressed = now, 0, 0
            if self._log_count < 5:
                self._log_count += 1
                log.info("proxydhcp %s: dropped a packet from %s:%s: %s", self.site,
                         source[0], source[1], reason)
            else:
                self._log_suppressed += 1
        else:
            log.debug("proxydhcp %s: not answering %s:%s: %s", self.site,
                      source[0], source[1], reason)

    def _on_datagram(self, sock: socket.socket, on_pxe_port: bool, data: bytes,
                     source: tuple[str, int]) -> None:
        self.stats["received"] += 1
        if not self.enabled:
            return
        try:
            packet = DhcpPacket.parse(data)
            mtype = packet.message_type
        except DhcpError as err:
            self._drop(str(err), source, malformed=True)
            return
        if on_pxe_port:
            if mtype not in (MessageType.REQUEST, MessageType.INFORM):
                self._drop(f"{_name(mtype)} on port {self._pxe_port}", source, malformed=False)
                return
        elif mtype is not MessageType.DISCOVER:
            self._drop(f"{_name(mtype)} (a proxy answers DISCOVERs only)", source,
                       malformed=False)
            return
        answer = decide(packet, self.cfg, self._binaries,  # type: ignore[arg-type]
                        http_port=self.http_port, menu_allowed=not on_pxe_port)
        if isinstance(answer, Ignore):
            self._drop(answer.reason, source, malformed=answer.malformed)
            return
        try:
            if on_pxe_port:
                reply = build_ack(packet, answer, self.cfg)
                target = source  # the client has an address by now
            else:
                reply = build_offer(packet, answer, self.cfg)
                target = reply_target(packet, source, self._dhcp_port)
            wire = reply.encode(max_size=_max_size(packet))
        except DhcpError as err:
            self._drop(f"cannot build a reply: {err}", source, malformed=True)
            return
        delay = self.cfg.reply_delay_ms / 1000.0
        if delay > 0:
            self._seq += 1
            heapq.heappush(self._pending, (
                time.monotonic() + delay, self._seq,
                functools.partial(self._send, sock, wire, target, packet, answer, on_pxe_port)))
        else:
            self._send(sock, wire, target, packet, answer, on_pxe_port)

    def _send(self, sock: socket.socket, wire: bytes, target, packet: DhcpPacket,
              answer: Answer, ack: bool) -> None:
        if self._stopping or not self.enabled:
            return
        try:
            _sendto(sock, wire, target)
        except OSError as err:
            self.stats["errors"] += 1
            log.warning("proxydhcp %s: could not send to %s: %s", self.site, target, err)
            return
        self.stats["acks" if ack else "offers"] += 1
        log.debug("proxydhcp %s: %s %s (%s, %s) -> %s", self.site,
                  "ACK" if ack else "OFFER", answer.mac, answer.kind, answer.arch.value,
                  answer.boot_file)
        if self.on_sighting is not None:
            self._sightings.append((packet, answer))  # read on the loop, off this path


def _sendto(sock: socket.socket, wire: bytes, target) -> None:
    """sendto on a non-blocking socket; when its buffer is full (a burst of
    replies), wait up to 50 ms for room once, then give up (the client retries)."""
    try:
        sock.sendto(wire, target)
    except BlockingIOError:
        select.select([], [sock], [], 0.05)
        sock.sendto(wire, target)


def _drain_wake(sock: socket.socket) -> None:
    try:
        while sock.recv(512):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _max_size(packet: DhcpPacket) -> int:
    try:
        size = packet.max_message_size
    except DhcpError:
        size = None
    return max(576, size or 576)


def _name(mtype) -> str:
    return mtype.name if isinstance(mtype, MessageType) else f"message type {mtype}"


def describe_os_error(err: OSError, *, service: str, address: str, port: int,
                      interface: str | None, site: str) -> str:
    """An operator's sentence for a failed bind."""
    where = f"{address}:{port}" if not interface else f"{interface} port {port}"
    if err.errno == errno.EADDRINUSE:
        return (f"distributor {site}: {service} cannot listen on {where}: port {port} is "
                f"in use (another DHCP/TFTP/HTTP server, or another fleet serve?)")
    if err.errno in (errno.EACCES, errno.EPERM):
        return (f"distributor {site}: {service} cannot listen on {where}: permission "
                f"denied; ports below 1024 need root or CAP_NET_BIND_SERVICE"
                + (", and binding to an interface needs CAP_NET_RAW" if interface else ""))
    if err.errno == errno.ENODEV:
        return (f"distributor {site}: {service}: interface {interface!r} does not exist "
                f"on this host (check sites[].distributor.interface)")
    if err.errno == errno.EADDRNOTAVAIL:
        return (f"distributor {site}: {service}: address {address} is not on this host "
                f"(check sites[].distributor.address)")
    return f"distributor {site}: {service} cannot listen on {where}: {err.strerror or err}"

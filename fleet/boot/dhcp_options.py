"""DHCPv4 option values: codes, the TLV walker, and typed decoders/encoders.

The packet codec (`fleet.boot.dhcp`) keeps options as raw bytes; this module
turns those bytes into values and back. Every decoder raises `DhcpError`, and
nothing else, on malformed input: it is fed attacker-controlled bytes straight
off the wire (the fuzz test in tests/unit/test_dhcp_fuzz.py holds it to that).

Encapsulated options (43 PXE, 82 relay agent, 175 iPXE) use the same
code/length/value layout as the packet's own options. RFC 3396 concatenation
(one code appearing several times is one value, in order) is applied at both
levels.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address
from typing import NamedTuple


class DhcpError(ValueError):
    """A malformed DHCP packet or option value; `str()` is a short reason."""


class Opt(IntEnum):
    """DHCP option codes fleet reads or writes (RFC 2132 and later)."""

    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    HOST_NAME = 12
    VENDOR_SPECIFIC = 43  # PXE: encapsulated sub-options (PxeSub)
    REQUESTED_IP = 50
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_REQUEST_LIST = 55
    MAX_MESSAGE_SIZE = 57
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    TFTP_SERVER_NAME = 66
    BOOTFILE_NAME = 67
    USER_CLASS = 77
    RELAY_AGENT_INFO = 82
    CLIENT_ARCH = 93
    CLIENT_NDI = 94
    CLIENT_GUID = 97
    IPXE_ENCAP = 175
    END = 255


class MessageType(IntEnum):
    """Option 53 values (RFC 2132 section 9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class PxeSub(IntEnum):
    """Option 43 sub-options for PXE clients (PXE spec 2.1, section 2.4)."""

    MTFTP_IP = 1
    MTFTP_CPORT = 2
    MTFTP_SPORT = 3
    MTFTP_TMOUT = 4
    MTFTP_DELAY = 5
    DISCOVERY_CONTROL = 6
    DISCOVERY_MCAST_ADDR = 7
    BOOT_SERVERS = 8
    BOOT_MENU = 9
    MENU_PROMPT = 10
    BOOT_ITEM = 71


# PXE_DISCOVERY_CONTROL bits.
PXE_DISABLE_BROADCAST = 0x01
PXE_DISABLE_MULTICAST = 0x02
PXE_ONLY_LISTED_SERVERS = 0x04
PXE_BOOT_FILE_NO_PROMPT = 0x08  # "boot the file in the offer, no menu, no discovery"


class IpxeSub(IntEnum):
    """Option 175 (iPXE, "Etherboot") sub-options, from iPXE's dhcp.h."""

    PRIORITY = 0x01
    NO_PXEDHCP = 0xB0
    BUS_ID = 0xB1
    VERSION = 0xEB


class IpxeFeature(IntEnum):
    """Option 175 feature sub-options (0x10-0x7f), from iPXE's features.h.

    A build announces a feature by sending the sub-option (value: a version
    byte, normally 1).
    """

    PXE_EXT = 0x10
    ISCSI = 0x11
    AOE = 0x12
    HTTP = 0x13
    HTTPS = 0x14
    TFTP = 0x15
    FTP = 0x16
    DNS = 0x17
    BZIMAGE = 0x18
    MULTIBOOT = 0x19
    SLAM = 0x1A
    SRP = 0x1B
    NBI = 0x20
    PXE = 0x21
    ELF = 0x22
    COMBOOT = 0x23
    EFI = 0x24
    FCOE = 0x25
    VLAN = 0x26
    MENU = 0x27
    SDI = 0x28
    NFS = 0x29


# ---------------------------------------------------------------- TLV walking


def iter_tlv(data: bytes, *, pad_end: bool = True, what: str = "option") -> Iterator[tuple[int, bytes]]:
    """Yield (code, value) for each code/length/value record in `data`.

    With `pad_end`, code 0 is a one-byte pad and code 255 stops the walk
    (DHCP options, PXE and iPXE sub-options). Without it every code is a
    plain TLV (relay agent sub-options, RFC 3046). A record whose length
    runs past the data raises DhcpError.
    """
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if pad_end:
            if code == 0:
                i += 1
                continue
            if code == 255:
                return
        if i + 1 >= n:
            raise DhcpError(f"truncated {what} {code}: no length byte")
        end = i + 2 + data[i + 1]
        if end > n:
            raise DhcpError(f"truncated {what} {code}: length {data[i + 1]} runs past the end")
        yield code, data[i + 2 : end]
        i = end


def merge_tlv(records: Iterable[tuple[int, bytes]]) -> dict[int, bytes]:
    """RFC 3396: instances of one code are concatenated, in order of appearance."""
    out: dict[int, bytes] = {}
    for code, value in records:
        prev = out.get(code)
        out[code] = value if prev is None else prev + value
    return out


def parse_suboptions(data: bytes, *, pad_end: bool = True, what: str = "sub-option") -> dict[int, bytes]:
    """Encapsulated options as an ordered `code -> value` dict (concatenated)."""
    return merge_tlv(iter_tlv(data, pad_end=pad_end, what=what))


def tlv_fragments(code: int, value: bytes) -> list[bytes]:
    """One option as wire records, split into <=255-byte pieces (RFC 3396)."""
    if len(value) <= 255:  # the usual case, on every reply's hot path
        return [bytes((code, len(value))) + value]
    return [bytes((code, len(chunk))) + chunk for chunk in (value[i : i + 255] for i in range(0, len(value), 255))]


def encode_suboptions(subs: Mapping[int, bytes], *, pad_end: bool = True) -> bytes:
    """The inverse of parse_suboptions. With `pad_end`, an End (255) closes the
    list, as PXE clients expect in option 43, and codes 0/255 are refused."""
    parts: list[bytes] = []
    for code, value in subs.items():
        if not 0 <= code <= 255:
            raise DhcpError(f"sub-option code {code} out of range")
        if pad_end and code in (0, 255):
            raise DhcpError(f"sub-option code {code} is reserved for pad/end")
        parts.extend(tlv_fragments(code, bytes(value)))
    if pad_end:
        parts.append(b"\xff")
    return b"".join(parts)


# ------------------------------------------------------------- scalar values


def _need_len(value: bytes, n: int, what: str) -> None:
    if len(value) != n:
        raise DhcpError(f"{what}: length {len(value)}, expected {n}")


def decode_message_type(value: bytes) -> MessageType:
    _need_len(value, 1, "option 53")
    try:
        return MessageType(value[0])
    except ValueError:
        raise DhcpError(f"option 53: unknown message type {value[0]}") from None


def decode_ipv4(value: bytes, what: str = "address") -> IPv4Address:
    _need_len(value, 4, what)
    return IPv4Address(bytes(value))


def decode_u16(value: bytes, what: str = "value") -> int:
    _need_len(value, 2, what)
    return int.from_bytes(value, "big")


def decode_text(value: bytes) -> str:
    """NVT ASCII per RFC 2132; trailing NULs dropped (receivers MUST accept
    them); undecodable bytes replaced, never an error."""
    return bytes(value).rstrip(b"\x00").decode("utf-8", errors="replace")


# --------------------------------------------------------- option 77 user class


def decode_user_class(value: bytes) -> list[str]:
    """Option 77 as a list of strings, accepting both forms seen on the wire.

    RFC 3004 packs instances as `len data len data ...`; iPXE (and Windows)
    send one plain string such as `iPXE`. The heuristic: the bytes are read as
    RFC 3004 when they split exactly into length-prefixed instances (each
    length >= 1) AND they cannot be a plain text string, i.e. the first byte
    is a control character (< 0x20) or some byte is outside printable ASCII.
    Anything else is one plain string. Known miss: a single RFC 3004 instance
    of 32+ printable characters reads as plain text with its length byte in
    front. Never raises.
    """
    data = bytes(value)
    if not data:
        return []
    items: list[str] = []
    i = 0
    exact = True
    while i < len(data):
        n = data[i]
        if n == 0 or i + 1 + n > len(data):
            exact = False
            break
        items.append(data[i + 1 : i + 1 + n].decode("utf-8", errors="replace"))
        i += 1 + n
    printable = all(0x20 <= b < 0x7F for b in data)
    if exact and (data[0] < 0x20 or not printable):
        return items
    return [decode_text(data)]


def encode_user_class(classes: Sequence[str], *, rfc3004: bool = True) -> bytes:
    """RFC 3004 instances, or (rfc3004=False, one class) iPXE's plain string."""
    raw = [c.encode() for c in classes]
    if not rfc3004:
        if len(raw) != 1:
            raise DhcpError("a plain user class carries exactly one string")
        return raw[0]
    for r in raw:
        if not 1 <= len(r) <= 255:
            raise DhcpError("user class instance must be 1..255 bytes")
    return b"".join(bytes((len(r),)) + r for r in raw)


# ------------------------------------------------ options 93, 94, 97 (RFC 4578)


class ClientNdi(NamedTuple):
    """Option 94: network interface type (1 = UNDI) and UNDI version."""

    type: int
    major: int
    minor: int


def decode_client_arches(value: bytes) -> tuple[int, ...]:
    """Option 93: one or more big-endian 16-bit architecture codes."""
    if not value or len(value) % 2:
        raise DhcpError(f"option 93: length {len(value)} is not a positive multiple of 2")
    return tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2))


def encode_client_arches(codes: Sequence[int]) -> bytes:
    if not codes:
        raise DhcpError("option 93 needs at least one arch code")
    try:
        return b"".join(int(c).to_bytes(2, "big") for c in codes)
    except OverflowError:
        raise DhcpError("arch code out of 16-bit range") from None


def decode_client_ndi(value: bytes) -> ClientNdi:
    _need_len(value, 3, "option 94")
    return ClientNdi(value[0], value[1], value[2])


def decode_client_guid(value: bytes) -> uuid.UUID | None:
    """Option 97: type 0 + 16-byte GUID. All zeros (ROMs without SMBIOS
    data send that) gives None.

    The 16 bytes are taken in wire order (`uuid.UUID(bytes=...)`); firmware
    disagree on whether the first three SMBIOS fields are byte-swapped, so
    compare with `${uuid}` from iPXE with that in mind.
    """
    _need_len(value, 17, "option 97")
    if value[0] != 0:
        raise DhcpError(f"option 97: machine id type {value[0]}, expected 0 (GUID)")
    guid = bytes(value[1:])
    if guid == bytes(16):
        return None
    return uuid.UUID(bytes=guid)


def encode_client_guid(guid: uuid.UUID | None) -> bytes:
    return b"\x00" + (guid.bytes if guid is not None else bytes(16))


# ------------------------------------------------------ option 82 relay agent


def decode_relay_agent_info(value: bytes) -> dict[int, bytes]:
    """Option 82 sub-options (1 circuit id, 2 remote id, ...). Plain TLVs:
    no pad or end codes in RFC 3046."""
    return parse_suboptions(value, pad_end=False, what="option 82 sub-option")


# ------------------------------------------------------------ option 43 PXE


@dataclass(frozen=True)
class PxeMenuItem:
    """One PXE boot menu entry. Type 0 means "boot from local disk"."""

    type: int
    description: str


class PxeBootItem(NamedTuple):
    """Sub-option 71: the menu item type the client picked, and the layer."""

    type: int
    layer: int


def decode_pxe_options(value: bytes) -> dict[int, bytes]:
    return parse_suboptions(value, pad_end=True, what="option 43 sub-option")


def encode_pxe_options(subs: Mapping[int, bytes]) -> bytes:
    return encode_suboptions(subs, pad_end=True)


def pxe_discovery_control(bits: int = PXE_BOOT_FILE_NO_PROMPT) -> dict[int, bytes]:
    """`{6: b'\\x08'}`: boot the offered file without menu or discovery."""
    if not 0 <= bits <= 255:
        raise DhcpError("discovery control is one byte")
    return {PxeSub.DISCOVERY_CONTROL: bytes((bits,))}


def pxe_menu(
    items: Sequence[PxeMenuItem],
    *,
    server_ip: IPv4Address | str | None = None,
    prompt: str = "PXE",
    timeout: int = 0,
    discovery_control: int = PXE_DISABLE_BROADCAST | PXE_DISABLE_MULTICAST,
) -> dict[int, bytes]:
    """Option 43 sub-options for a PXE boot menu: 6, 8, 9, 10.

    Every item of type != 0 is served by `server_ip` (sub-option 8), so the
    client unicasts its port-4011 REQUEST there; type 0 (local boot) needs no
    server. `timeout` is seconds before the first item is taken (255: wait for
    a key). The default discovery control (no broadcast, no multicast) is what
    dnsmasq sends with a menu.
    """
    if not items:
        raise DhcpError("a PXE menu needs at least one item")
    if not 0 <= timeout <= 255:
        raise DhcpError("menu timeout is one byte")
    menu = bytearray()
    servers = bytearray()
    addr = IPv4Address(server_ip) if server_ip is not None else None
    for item in items:
        desc = item.description.encode()
        if not 0 <= item.type <= 0xFFFF or len(desc) > 255:
            raise DhcpError("menu item type is 16 bits, description at most 255 bytes")
        menu += item.type.to_bytes(2, "big") + bytes((len(desc),)) + desc
        if addr is not None and item.type != 0:
            servers += item.type.to_bytes(2, "big") + b"\x01" + addr.packed
    subs: dict[int, bytes] = dict(pxe_discovery_control(discovery_control))
    if servers:
        subs[PxeSub.BOOT_SERVERS] = bytes(servers)
    subs[PxeSub.BOOT_MENU] = bytes(menu)
    subs[PxeSub.MENU_PROMPT] = bytes((timeout,)) + prompt.encode()
    return subs


def decode_pxe_boot_servers(value: bytes) -> list[tuple[int, list[IPv4Address]]]:
    """Sub-option 8: [(type, [addresses])]."""
    out = []
    i = 0
    while i < len(value):
        if i + 3 > len(value):
            raise DhcpError("option 43/8: truncated boot server entry")
        typ = int.from_bytes(value[i : i + 2], "big")
        count = value[i + 2]
        end = i + 3 + 4 * count
        if end > len(value):
            raise DhcpError("option 43/8: address list runs past the end")
        out.append((typ, [IPv4Address(bytes(value[j : j + 4])) for j in range(i + 3, end, 4)]))
        i = end
    return out


def decode_pxe_boot_menu(value: bytes) -> list[PxeMenuItem]:
    """Sub-option 9: [PxeMenuItem]."""
    out = []
    i = 0
    while i < len(value):
        if i + 3 > len(value):
            raise DhcpError("option 43/9: truncated menu entry")
        end = i + 3 + value[i + 2]
        if end > len(value):
            raise DhcpError("option 43/9: description runs past the end")
        desc = bytes(value[i + 3 : end]).decode("utf-8", errors="replace")
        out.append(PxeMenuItem(int.from_bytes(value[i : i + 2], "big"), desc))
        i = end
    return out


def decode_pxe_menu_prompt(value: bytes) -> tuple[int, str]:
    """Sub-option 10: (timeout seconds, prompt text)."""
    if not value:
        raise DhcpError("option 43/10: empty menu prompt")
    return value[0], decode_text(value[1:])


def decode_pxe_boot_item(value: bytes) -> PxeBootItem:
    _need_len(value, 4, "option 43/71")
    return PxeBootItem(int.from_bytes(value[0:2], "big"), int.from_bytes(value[2:4], "big"))


def encode_pxe_boot_item(item_type: int, layer: int = 0) -> bytes:
    if not (0 <= item_type <= 0xFFFF and 0 <= layer <= 0xFFFF):
        raise DhcpError("boot item type and layer are 16 bits")
    return item_type.to_bytes(2, "big") + layer.to_bytes(2, "big")


# ----------------------------------------------------------- option 175 iPXE


class IpxeBusId(NamedTuple):
    """Sub-option 0xb1: bus type (1 PCI, ...), vendor and device ids."""

    bus_type: int
    vendor: int
    device: int


def decode_ipxe_options(value: bytes) -> dict[int, bytes]:
    return parse_suboptions(value, pad_end=True, what="option 175 sub-option")


def decode_ipxe_version(value: bytes) -> tuple[int, int, int]:
    _need_len(value, 3, "option 175/0xeb")
    return value[0], value[1], value[2]


def decode_ipxe_bus_id(value: bytes) -> IpxeBusId:
    _need_len(value, 5, "option 175/0xb1")
    return IpxeBusId(value[0], int.from_bytes(value[1:3], "big"), int.from_bytes(value[3:5], "big"))

"""DHCPv4/BOOTP packet codec for the proxyDHCP service: pure, no I/O.

Why hand-written: fleet needs a small codec that does no I/O (so the asyncio
server, the simulator and the tests share it), that handles what PXE and iPXE
clients actually send (option overload, RFC 3396 split options, encapsulated
options 43/175, iPXE's non-RFC-3004 user class, option 97 GUIDs), and whose
parse raises exactly one exception type for any byte string, proven by a
100k-packet fuzz test. What exists on PyPI (checked 2026-11) did not fit:
scapy is a large packet-manipulation tool, not a codec library, and its DHCP
layer does not read option overload (secdev/scapy#4343) and has RFC 3396 only
in an open pull request (#4950); pydhcplib (0.6.2, 2014) and dhcppython
(0.1.4, 2021) are unmaintained; pydhcp (active) is a DHCP server framework
whose documentation does not cover PXE/iPXE options, and pulling in a server
framework to use its parser is a runtime dependency we would still have to
extend and fuzz ourselves. About 1,000 lines here, in `dhcp_options` (option
values) and in `dhcp_replies` (reply builders) is the smaller risk.

Model: `DhcpPacket` holds the fixed BOOTP header and `options`, an ordered
`code -> raw bytes` dict. Decoding option values lives in `dhcp_options`; the
properties here are thin typed views (None when the option is absent,
DhcpError when it is present but malformed).

Parsing rules:
- at least 240 bytes (236-byte header + magic cookie 99.130.83.99), hlen <= 16;
- options end at End (255) or at the end of the data; pads skipped; a record
  running past the data is an error;
- one code seen several times is one option, concatenated in order: options
  field, then `file`, then `sname` (RFC 3396);
- option 52 (overload, value 1 file / 2 sname / 3 both) makes those fields
  hold options; each overloaded field must close its options with End, else
  the overload points at something that is not options. After parsing, an
  overloaded field reads as empty and option 52 is not kept in `options`:
  `encode` decides overload by itself.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from fleet.core.arch import FirmwareArch, arch_from_codes

from .dhcp_options import (
    ClientNdi,
    DhcpError,
    IpxeBusId,
    IpxeFeature,
    IpxeSub,
    MessageType,
    Opt,
    PxeBootItem,
    PxeSub,
    decode_client_arches,
    decode_client_guid,
    decode_client_ndi,
    decode_ipv4,
    decode_ipxe_bus_id,
    decode_ipxe_options,
    decode_ipxe_version,
    decode_message_type,
    decode_pxe_boot_item,
    decode_pxe_options,
    decode_relay_agent_info,
    decode_text,
    decode_u16,
    decode_user_class,
    iter_tlv,
    merge_tlv,
    tlv_fragments,
)

__all__ = [
    "BOOTREPLY",
    "BOOTREQUEST",
    "DhcpError",
    "DhcpPacket",
    "MAGIC_COOKIE",
    "MessageType",
    "Opt",
]

BOOTREQUEST = 1
BOOTREPLY = 2
MAGIC_COOKIE = b"\x63\x82\x53\x63"
FLAG_BROADCAST = 0x8000
HEADER_LEN = 236
MIN_LEN = HEADER_LEN + 4  # header + cookie
BOOTP_MIN_LEN = 300  # RFC 951: 64-byte vend area
SNAME_LEN = 64
FILE_LEN = 128

_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_ZERO = IPv4Address(0)
_OVERLOAD_FILE = 1
_OVERLOAD_SNAME = 2


def _cstring(raw: bytes) -> bytes:
    nul = raw.find(b"\x00")
    return raw if nul < 0 else raw[:nul]


@dataclass
class DhcpPacket:
    op: int = BOOTREQUEST
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = _ZERO
    yiaddr: IPv4Address = _ZERO
    siaddr: IPv4Address = _ZERO
    giaddr: IPv4Address = _ZERO
    chaddr: bytes = bytes(16)
    sname: bytes = b""
    file: bytes = b""
    options: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accept the convenient forms (str addresses, a 6-byte chaddr, str
        # names, any mapping); parse() passes the canonical ones already.
        for name in ("ciaddr", "yiaddr", "siaddr", "giaddr"):
            value = getattr(self, name)
            if not isinstance(value, IPv4Address):
                setattr(self, name, IPv4Address(value))
        if len(self.chaddr) != 16:
            if len(self.chaddr) > 16:
                raise DhcpError("chaddr is at most 16 bytes")
            self.chaddr = bytes(self.chaddr).ljust(16, b"\x00")
        if isinstance(self.sname, str):
            self.sname = self.sname.encode()
        if isinstance(self.file, str):
            self.file = self.file.encode()
        if type(self.options) is not dict:
            self.options = dict(self.options)

    # ------------------------------------------------------------ wire format

    @classmethod
    def parse(cls, data: bytes) -> DhcpPacket:
        """Decode one UDP payload. Raises DhcpError, and only that, when the
        bytes are not a well-formed DHCP packet."""
        if not isinstance(data, bytes):
            try:
                data = bytes(data)
            except (TypeError, ValueError):
                raise DhcpError("not a byte string") from None
        if len(data) < MIN_LEN:
            raise DhcpError(f"too short: {len(data)} bytes, need {MIN_LEN}")
        op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, sname, file = _HEADER.unpack_from(data)
        if hlen > 16:
            raise DhcpError(f"bad hlen {hlen}: chaddr holds 16 bytes")
        if data[HEADER_LEN:MIN_LEN] != MAGIC_COOKIE:
            raise DhcpError("bad magic cookie")
        records = list(iter_tlv(data[MIN_LEN:], what="option"))
        overload = b"".join(v for c, v in records if c == Opt.OVERLOAD)
        if any(c == Opt.OVERLOAD for c, _ in records):
            if len(overload) != 1:
                raise DhcpError(f"bad option overload: length {len(overload)}, expected 1")
            if overload[0] not in (1, 2, 3):
                raise DhcpError(f"bad option overload value {overload[0]}")
            records = [(c, v) for c, v in records if c != Opt.OVERLOAD]
            if overload[0] & _OVERLOAD_FILE:
                records += cls._overloaded(file, "file")
                file = b""
            if overload[0] & _OVERLOAD_SNAME:
                records += cls._overloaded(sname, "sname")
                sname = b""
        return cls(
            op, htype, hlen, hops, xid, secs, flags,
            IPv4Address(ci), IPv4Address(yi), IPv4Address(si), IPv4Address(gi),
            chaddr, _cstring(sname), _cstring(file), merge_tlv(records),
        )  # fmt: skip

    @staticmethod
    def _overloaded(raw: bytes, name: str) -> list[tuple[int, bytes]]:
        records = []
        ended = False
        i = 0
        # Walk like iter_tlv but note whether End was seen.
        while i < len(raw):
            code = raw[i]
            if code == 0:
                i += 1
                continue
            if code == 255:
                ended = True
                break
            if i + 1 >= len(raw) or i + 2 + raw[i + 1] > len(raw):
                raise DhcpError(f"truncated option {code} in overloaded {name} field")
            if code == Opt.OVERLOAD:
                raise DhcpError(f"option overload inside the overloaded {name} field")
            records.append((code, raw[i + 2 : i + 2 + raw[i + 1]]))
            i += 2 + raw[i + 1]
        if not ended:
            raise DhcpError(f"overload points at the {name} field, which holds no options (no End)")
        return records

    def encode(self, *, max_size: int | None = None) -> bytes:
        """The UDP payload, padded to the 300-byte BOOTP minimum.

        Options longer than 255 bytes are split (RFC 3396). When `max_size`
        (the client's option 57, or 576) is given and the options do not fit,
        they continue in `file` and then `sname` if those are empty, with
        option 52 saying so; DhcpError if they still do not fit.
        """
        try:
            header = _HEADER.pack(
                self.op, self.htype, self.hlen, self.hops, self.xid, self.secs, self.flags,
                self.ciaddr.packed, self.yiaddr.packed, self.siaddr.packed, self.giaddr.packed,
                self.chaddr, self.sname, self.file,
            )  # fmt: skip
        except (struct.error, AttributeError, TypeError) as exc:
            raise DhcpError(f"header field out of range: {exc}") from None
        if len(self.chaddr) > 16 or len(self.sname) > SNAME_LEN or len(self.file) > FILE_LEN:
            raise DhcpError("chaddr, sname or file too long")
        fragments: list[tuple[int, bytes]] = []
        for code, value in self.options.items():
            if code in (Opt.PAD, Opt.END, Opt.OVERLOAD) or not 0 <= code <= 255:
                raise DhcpError(f"option code {code} cannot be set directly")
            fragments.append((code, bytes(value)))
        body = b"".join(f for code, value in fragments for f in tlv_fragments(code, value)) + b"\xff"
        if max_size is None or MIN_LEN + len(body) <= max_size:
            return (header + MAGIC_COOKIE + body).ljust(BOOTP_MIN_LEN, b"\x00")
        return self._encode_overloaded(header, fragments, max_size)

    def _encode_overloaded(self, header: bytes, options: list[tuple[int, bytes]], max_size: int) -> bytes:
        # Areas in RFC 3396 order; each keeps one byte for its End.
        areas: list[tuple[str, int]] = [("options", max_size - MIN_LEN - 3 - 1)]
        if not self.file:
            areas.append(("file", FILE_LEN - 1))
        if not self.sname:
            areas.append(("sname", SNAME_LEN - 1))
        if areas[0][1] < 0 or len(areas) == 1:
            raise DhcpError(f"options do not fit in {max_size} bytes")
        out: dict[str, bytearray] = {name: bytearray() for name, _ in areas}
        area = 0
        for code, value in options:
            pos = 0
            while True:
                name, cap = areas[area]
                room = cap - len(out[name]) - 2
                if room < (1 if value else 0):
                    area += 1
                    if area == len(areas):
                        raise DhcpError(f"options do not fit in {max_size} bytes, even overloaded")
                    continue
                chunk = value[pos : pos + min(room, 255)]
                out[name] += bytes((code, len(chunk))) + chunk
                pos += len(chunk)
                if pos >= len(value):
                    break
        used = (_OVERLOAD_FILE if out.get("file") else 0) | (_OVERLOAD_SNAME if out.get("sname") else 0)
        main = bytes((Opt.OVERLOAD, 1, used)) + out["options"] + b"\xff"
        file = bytes(out["file"]) + b"\xff" if used & _OVERLOAD_FILE else self.file
        sname = bytes(out["sname"]) + b"\xff" if used & _OVERLOAD_SNAME else self.sname
        fixed = header[: HEADER_LEN - FILE_LEN - SNAME_LEN]
        header = fixed + sname.ljust(SNAME_LEN, b"\x00") + file.ljust(FILE_LEN, b"\x00")
        return (header + MAGIC_COOKIE + main).ljust(BOOTP_MIN_LEN, b"\x00")

    # --------------------------------------------------------------- identity

    @property
    def mac(self) -> str | None:
        """`aa:bb:cc:dd:ee:ff` for Ethernet (htype 1, hlen 6), else None."""
        if self.htype != 1 or self.hlen != 6:
            return None
        return self.chaddr[:6].hex(":")

    @property
    def is_relayed(self) -> bool:
        return self.giaddr != _ZERO

    # ------------------------------------------------------- typed accessors
    # None when absent; DhcpError when present but malformed.

    def _get(self, code: int) -> bytes | None:
        return self.options.get(code)

    @property
    def message_type(self) -> MessageType | None:
        v = self._get(Opt.MESSAGE_TYPE)
        return None if v is None else decode_message_type(v)

    @property
    def server_id(self) -> IPv4Address | None:
        v = self._get(Opt.SERVER_ID)
        return None if v is None else decode_ipv4(v, "option 54")

    @property
    def parameter_request_list(self) -> tuple[int, ...] | None:
        v = self._get(Opt.PARAMETER_REQUEST_LIST)
        return None if v is None else tuple(v)

    @property
    def max_message_size(self) -> int | None:
        v = self._get(Opt.MAX_MESSAGE_SIZE)
        return None if v is None else decode_u16(v, "option 57")

    @property
    def vendor_class(self) -> str | None:
        v = self._get(Opt.VENDOR_CLASS)
        return None if v is None else decode_text(v)

    @property
    def client_id(self) -> bytes | None:
        return self._get(Opt.CLIENT_ID)

    @property
    def bootfile_name(self) -> str | None:
        """Option 67 as text (the `file` field is `self.file`)."""
        v = self._get(Opt.BOOTFILE_NAME)
        return None if v is None else decode_text(v)

    @property
    def user_class(self) -> list[str] | None:
        """Option 77; see `dhcp_options.decode_user_class` for the heuristic."""
        v = self._get(Opt.USER_CLASS)
        return None if v is None else decode_user_class(v)

    @property
    def relay_agent_info(self) -> dict[int, bytes] | None:
        v = self._get(Opt.RELAY_AGENT_INFO)
        return None if v is None else decode_relay_agent_info(v)

    @property
    def client_arches(self) -> tuple[int, ...] | None:
        v = self._get(Opt.CLIENT_ARCH)
        return None if v is None else decode_client_arches(v)

    @property
    def arch(self) -> FirmwareArch | None:
        """The first known option 93 code; None when the client sent none."""
        codes = self.client_arches
        return None if codes is None else arch_from_codes(codes)

    @property
    def client_ndi(self) -> ClientNdi | None:
        v = self._get(Opt.CLIENT_NDI)
        return None if v is None else decode_client_ndi(v)

    @property
    def client_guid(self) -> uuid.UUID | None:
        """Option 97; None when absent or all zeros."""
        v = self._get(Opt.CLIENT_GUID)
        return None if v is None else decode_client_guid(v)

    @property
    def pxe_options(self) -> dict[int, bytes] | None:
        """Option 43 as PXE sub-options (only meaningful for PXE clients)."""
        v = self._get(Opt.VENDOR_SPECIFIC)
        return None if v is None else decode_pxe_options(v)

    @property
    def pxe_boot_item(self) -> PxeBootItem | None:
        """Option 43 sub-option 71: the menu item a port-4011 REQUEST asks for."""
        subs = self.pxe_options
        v = None if subs is None else subs.get(PxeSub.BOOT_ITEM)
        return None if v is None else decode_pxe_boot_item(v)

    @property
    def ipxe_options(self) -> dict[int, bytes] | None:
        v = self._get(Opt.IPXE_ENCAP)
        return None if v is None else decode_ipxe_options(v)

    @property
    def is_ipxe(self) -> bool:
        """iPXE sends option 175 and user class `iPXE`; either is enough."""
        if Opt.IPXE_ENCAP in self.options:
            return True
        return "iPXE" in (self.user_class or ())

    @property
    def ipxe_version(self) -> tuple[int, int, int] | None:
        v = (self.ipxe_options or {}).get(IpxeSub.VERSION)
        return None if v is None else decode_ipxe_version(v)

    @property
    def ipxe_bus_id(self) -> IpxeBusId | None:
        v = (self.ipxe_options or {}).get(IpxeSub.BUS_ID)
        return None if v is None else decode_ipxe_bus_id(v)

    @property
    def ipxe_features(self) -> frozenset[int]:
        """Feature sub-options (0x10-0x7f) of option 175; compare with IpxeFeature."""
        return frozenset(c for c in (self.ipxe_options or {}) if 0x10 <= c <= 0x7F)

    def ipxe_supports(self, feature: IpxeFeature | int) -> bool:
        return int(feature) in self.ipxe_features

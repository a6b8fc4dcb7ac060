"""DHCP codec: golden packets, error reasons, builders, round-trip properties.

The golden packets (hand-assembled from what the clients are known to send
(iPXE's dhcp.c, EDK2's PxeBcDhcp4/HttpBootDhcp4, an Intel BIOS ROM behind a
relay), one option per line) are in support/dhcp_golden.py; test_dhcp_fuzz.py
mutates them.
"""

from __future__ import annotations

import os
import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fleet.boot.dhcp import (
    BOOTREPLY,
    DhcpError,
    DhcpPacket,
    MessageType,
    Opt,
)
from fleet.boot.dhcp_options import (
    ClientNdi,
    IpxeBusId,
    IpxeFeature,
    PxeBootItem,
    PxeMenuItem,
    decode_pxe_boot_menu,
    decode_pxe_boot_servers,
    decode_pxe_menu_prompt,
    decode_user_class,
    encode_suboptions,
    encode_user_class,
    parse_suboptions,
    pxe_discovery_control,
    pxe_menu,
)
from fleet.boot.dhcp_replies import build_proxy_ack, build_proxy_offer
from fleet.core.arch import FirmwareArch
from support.dhcp_golden import (
    ACCESSORS,
    COOKIE,
    GOLDEN,
    GUID,
    IPXE_BIOS_DISCOVER,
    OVERLOADED_DISCOVER,
    OVMF_PXE_DISCOVER,
    OVMF_PXE_REQUEST_4011,
    RELAYED_BIOS_DISCOVER,
    UEFI_HTTP_DISCOVER,
    H,
    bootp,
)


def all_accessors(p: DhcpPacket) -> dict[str, object]:
    return {name: getattr(p, name) for name in ACCESSORS}


# ------------------------------------------------------------------ golden


def test_ipxe_bios_discover():
    p = DhcpPacket.parse(IPXE_BIOS_DISCOVER)
    assert (p.op, p.htype, p.hlen, p.xid, p.secs, p.flags) == (1, 1, 6, 0x1A2B3C4D, 4, 0x8000)
    assert p.mac == "52:54:00:12:34:56"
    assert p.message_type is MessageType.DISCOVER
    assert p.max_message_size == 1472
    assert p.client_arches == (0,) and p.arch is FirmwareArch.BIOS
    assert p.client_ndi == ClientNdi(1, 2, 1)
    assert p.vendor_class == "PXEClient:Arch:00000:UNDI:002001"
    assert p.user_class == ["iPXE"]
    assert p.is_ipxe
    assert p.ipxe_version == (1, 0, 0)
    assert p.ipxe_bus_id == IpxeBusId(1, 0x1AF4, 0x1000)
    assert p.ipxe_supports(IpxeFeature.HTTP) and not p.ipxe_supports(IpxeFeature.EFI)
    assert IpxeFeature.HTTP in p.ipxe_features and 0xEB not in p.ipxe_features
    assert p.parameter_request_list[:4] == (1, 3, 6, 7) and 175 in p.parameter_request_list
    assert p.client_id == H("01 52 54 00 12 34 56")
    assert p.client_guid == GUID
    assert p.server_id is None and p.relay_agent_info is None and p.pxe_options is None
    assert list(p.options) == [53, 57, 93, 94, 60, 77, 55, 175, 61, 97]


def test_ovmf_pxe_discover():
    p = DhcpPacket.parse(OVMF_PXE_DISCOVER)
    assert p.mac == "52:54:00:ab:cd:ef"
    assert p.arch is FirmwareArch.UEFI_X64
    assert p.client_ndi == ClientNdi(1, 3, 0)
    assert p.client_guid == GUID
    assert not p.is_ipxe and p.user_class is None and p.ipxe_version is None
    assert p.ipxe_features == frozenset()


def test_ovmf_request_4011():
    p = DhcpPacket.parse(OVMF_PXE_REQUEST_4011)
    assert p.message_type is MessageType.REQUEST
    assert p.ciaddr == IPv4Address("10.77.0.50")
    assert p.pxe_options == {71: H("00 00 00 00")}
    assert p.pxe_boot_item == PxeBootItem(0, 0)


def test_uefi_http_discover():
    p = DhcpPacket.parse(UEFI_HTTP_DISCOVER)
    assert p.vendor_class.startswith("HTTPClient")
    assert p.arch is FirmwareArch.UEFI_X64_HTTP and p.arch.is_http_boot
    assert p.client_guid is None  # all-zero GUID


def test_relayed_discover():
    p = DhcpPacket.parse(RELAYED_BIOS_DISCOVER)
    assert p.hops == 1 and p.is_relayed
    assert p.giaddr == IPv4Address("10.91.0.1")
    assert p.relay_agent_info == {1: b"Gi1/0/7", 2: H("00 1b 21 0a 0b 0c")}
    assert p.arch is FirmwareArch.BIOS
    assert Opt.CLIENT_GUID not in p.options and p.client_guid is None


def test_overloaded_discover():
    p = DhcpPacket.parse(OVERLOADED_DISCOVER)
    assert p.vendor_class == "PXEClient"  # concatenated across options and file
    assert p.arch is FirmwareArch.UEFI_X64
    assert p.client_guid == GUID
    assert p.user_class == ["iPXE"] and p.is_ipxe
    assert p.file == b"" and p.sname == b""  # they held options, not names
    assert Opt.OVERLOAD not in p.options
    assert list(p.options) == [53, 60, 93, 97, 77]


@pytest.mark.parametrize("name", [n for n in GOLDEN if n != "overloaded_discover"])
def test_golden_encode_is_byte_exact(name):
    raw = GOLDEN[name]
    assert DhcpPacket.parse(raw).encode() == raw.ljust(300, b"\x00")


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_round_trip_and_accessors(name):
    p = DhcpPacket.parse(GOLDEN[name])
    assert DhcpPacket.parse(p.encode()) == p
    all_accessors(p)  # none raises on a well-formed packet


# ------------------------------------------------------------------ parse errors

BASE = OVMF_PXE_DISCOVER


def _with_options(raw_options: bytes, **kw) -> bytes:
    return bootp(xid=1, mac="52:54:00:00:00:01", options=[raw_options], **kw)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "too short"),
        (BASE[:239], "too short"),
        (BASE[:236] + b"\x63\x82\x53\x64" + BASE[240:], "bad magic cookie"),
        (BASE[:2] + b"\x11" + BASE[3:], "bad hlen"),
        (_with_options(H("35 01 01 3c")), "no length byte"),
        (_with_options(H("35 01 01 3c 20 50 58")), "runs past the end"),
        (_with_options(H("34 01 04 ff")), "bad option overload"),
        (_with_options(H("34 01 00 ff")), "bad option overload"),
        (_with_options(H("34 02 01 01 ff")), "bad option overload"),
        (_with_options(H("34 01 01 34 01 02 ff")), "bad option overload"),  # concatenated: 2 bytes
        (_with_options(H("34 01 01 ff")), "holds no options"),  # file is all pads
        (_with_options(H("34 01 02 ff"), sname=b"pxe-server"), "truncated option"),
        (_with_options(H("34 01 01 ff"), file=H("34 01 02 ff")), "inside the overloaded"),
        (_with_options(H("34 01 01 ff"), file=bytes(125) + H("3c 05 50")), "truncated option 60 in overloaded file"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_parse_errors(data, reason):
    with pytest.raises(DhcpError, match=reason):
        DhcpPacket.parse(data)


def test_parse_accepts_missing_end_and_pads():
    p = DhcpPacket.parse(_with_options(H("00 00 35 01 01 00 3c 03 50 58 45")))
    assert p.options == {53: b"\x01", 60: b"PXE"}


def test_parse_ignores_bytes_after_end():
    p = DhcpPacket.parse(_with_options(H("35 01 01 ff 3c 77 junk".replace("junk", "de ad"))))
    assert p.options == {53: b"\x01"}


def test_parse_concatenates_repeated_options():
    p = DhcpPacket.parse(_with_options(H("3c 03 50 58 45 35 01 01 3c 06 43 6c 69 65 6e 74 ff")))
    assert p.options == {60: b"PXEClient", 53: b"\x01"}
    assert list(p.options) == [60, 53]


def test_parse_accepts_bytearray_and_memoryview():
    assert DhcpPacket.parse(bytearray(BASE)) == DhcpPacket.parse(memoryview(BASE)) == DhcpPacket.parse(BASE)


def test_parse_rejects_non_bytes_with_dhcp_error():
    with pytest.raises(DhcpError):
        DhcpPacket.parse("not bytes")  # type: ignore[arg-type]


def test_sname_and_file_are_c_strings():
    p = DhcpPacket.parse(_with_options(H("ff"), sname=b"srv\x00junk", file=b"pxelinux.0"))
    assert p.sname == b"srv" and p.file == b"pxelinux.0"


def test_mac_only_for_ethernet():
    p = DhcpPacket.parse(BASE)
    p.hlen = 8
    assert p.mac is None
    p.hlen, p.htype = 6, 6
    assert p.mac is None


# ------------------------------------------------------------------ accessors


@pytest.mark.parametrize(
    "code, value, accessor",
    [
        (53, b"\x01\x01", "message_type"),
        (53, b"\x09", "message_type"),
        (54, b"\x0a\x00\x00", "server_id"),
        (57, b"\x05", "max_message_size"),
        (93, b"\x00", "client_arches"),
        (93, b"", "arch"),
        (94, b"\x01\x02", "client_ndi"),
        (97, bytes(16), "client_guid"),
        (97, b"\x01" + bytes(16), "client_guid"),
        (82, b"\x01\x05abc", "relay_agent_info"),
        (43, b"\x47\x04\x00", "pxe_options"),
        (43, b"\x47\x03\x00\x00\x00\xff", "pxe_boot_item"),
        (175, b"\xeb\x02\x01\x00", "ipxe_version"),
        (175, b"\xb1\x03\x01\x1a\xf4", "ipxe_bus_id"),
        (175, b"\x13", "ipxe_features"),
    ],
)
def test_malformed_option_values_raise_dhcp_error(code, value, accessor):
    p = DhcpPacket(options={53: b"\x01", code: value})
    with pytest.raises(DhcpError):
        getattr(p, accessor)


def test_absent_options_are_none():
    p = DhcpPacket()
    for name in ACCESSORS:
        if name in ("is_relayed", "is_ipxe"):
            assert getattr(p, name) is False
        elif name == "ipxe_features":
            assert p.ipxe_features == frozenset()
        elif name == "mac":
            assert p.mac == "00:00:00:00:00:00"
        else:
            assert getattr(p, name) is None, name


@pytest.mark.parametrize(
    "codes, arch",
    [
        ((7,), FirmwareArch.UEFI_X64),
        ((9,), FirmwareArch.UEFI_X64),
        ((11,), FirmwareArch.UEFI_ARM64),
        ((99, 7), FirmwareArch.UEFI_X64),
        ((0xFFFF,), FirmwareArch.UNKNOWN),
    ],
)
def test_arch(codes, arch):
    p = DhcpPacket(options={93: b"".join(c.to_bytes(2, "big") for c in codes)})
    assert p.client_arches == codes and p.arch is arch


# user class (option 77): both forms


def test_user_class_plain_ipxe():
    assert decode_user_class(b"iPXE") == ["iPXE"]
    assert decode_user_class(b"fleet\x00") == ["fleet"]


def test_user_class_rfc3004():
    assert decode_user_class(b"\x04iPXE\x05fleet") == ["iPXE", "fleet"]
    assert decode_user_class(encode_user_class(["a", "bb"])) == ["a", "bb"]


def test_user_class_printable_text_that_happens_to_split_is_plain():
    text = b"!" + b"x" * 32  # '!' == 0x21 == 33 - 1: splits exactly, but it is text
    assert decode_user_class(text) == [text.decode()]


def test_user_class_known_miss_long_single_rfc3004_instance():
    # Documented limit: one RFC 3004 instance of 32+ printable bytes reads as
    # plain text with the length byte in front.
    data = encode_user_class(["y" * 40])
    assert decode_user_class(data) == ["(" + "y" * 40]


def test_user_class_non_text_that_splits_is_rfc3004():
    assert decode_user_class(b"\x40" + "é".encode() * 32 + b"\x01z") == ["é" * 32, "z"]


def test_user_class_garbage_never_raises():
    assert decode_user_class(b"\x05ab") == ["\x05ab"]
    assert decode_user_class(b"") == []
    assert decode_user_class(b"\xff\xfe") == ["\ufffd\ufffd"]


def test_is_ipxe_from_user_class_alone():
    assert DhcpPacket(options={77: b"iPXE"}).is_ipxe
    assert DhcpPacket(options={77: b"\x04iPXE"}).is_ipxe
    assert not DhcpPacket(options={77: b"fleet"}).is_ipxe
    assert DhcpPacket(options={175: b""}).is_ipxe


# ------------------------------------------------------------------ encode


def test_encode_pads_to_bootp_minimum():
    raw = DhcpPacket(options={53: b"\x01"}).encode()
    assert len(raw) == 300
    assert raw[236:244] == COOKIE + H("35 01 01 ff")


def test_encode_splits_long_options():
    value = bytes(range(256)) * 2  # 512 bytes
    raw = DhcpPacket(options={43: value, 53: b"\x02"}).encode()
    assert raw[240:242] == H("2b ff") and raw[240 + 257 : 240 + 259] == H("2b ff")
    assert raw[240 + 514 : 240 + 516] == H("2b 02")
    assert DhcpPacket.parse(raw).options == {43: value, 53: b"\x02"}


def test_encode_zero_length_option():
    p = DhcpPacket(options={80: b"", 53: b"\x01"})
    assert DhcpPacket.parse(p.encode()) == p


def test_encode_overloads_to_fit_max_size():
    p = DhcpPacket(options={53: b"\x05", 60: b"x" * 200, 43: b"y" * 200, 67: b"z" * 50})
    raw = p.encode(max_size=576)
    assert len(raw) <= 576
    assert raw[240:243] == H("34 01 03")
    assert DhcpPacket.parse(raw) == p


def test_encode_overload_uses_only_free_fields():
    p = DhcpPacket(file=b"ipxe.efi", options={53: b"\x05", 60: b"x" * 350})
    raw = p.encode(max_size=576)
    assert raw[240:243] == H("34 01 02")
    assert DhcpPacket.parse(raw) == p
    with pytest.raises(DhcpError, match="do not fit"):
        DhcpPacket(file=b"a", sname=b"b", options={60: b"x" * 400}).encode(max_size=576)
    with pytest.raises(DhcpError, match="do not fit"):
        DhcpPacket(options={60: b"x" * 600}).encode(max_size=576)


def test_encode_without_need_does_not_overload():
    p = DhcpPacket(options={53: b"\x01"})
    assert p.encode(max_size=576) == p.encode()


@pytest.mark.parametrize("code", [0, 52, 255, 256, -1])
def test_encode_refuses_reserved_codes(code):
    with pytest.raises(DhcpError):
        DhcpPacket(options={code: b"\x01"}).encode()


@pytest.mark.parametrize(
    "kw",
    [{"op": 256}, {"xid": 2**32}, {"secs": -1}, {"sname": b"s" * 65}, {"file": b"f" * 129}],
)
def test_encode_refuses_out_of_range_fields(kw):
    with pytest.raises(DhcpError):
        DhcpPacket(**kw).encode()


def test_constructor_conveniences():
    p = DhcpPacket(ciaddr="10.0.0.1", chaddr=bytes.fromhex("525400000001"), file="x.efi", sname="s")
    assert p.ciaddr == IPv4Address("10.0.0.1") and len(p.chaddr) == 16
    assert p.file == b"x.efi" and p.sname == b"s"
    with pytest.raises(DhcpError):
        DhcpPacket(chaddr=bytes(17))


# ------------------------------------------------------------------ sub-options


def test_suboptions_pad_end_and_concatenation():
    assert parse_suboptions(H("00 06 01 08 47 02 00 00 47 02 00 01 ff 09 09")) == {6: b"\x08", 71: H("00 00 00 01")}
    assert encode_suboptions({6: b"\x08"}) == H("06 01 08 ff")
    assert pxe_discovery_control() == {6: b"\x08"}
    with pytest.raises(DhcpError):
        encode_suboptions({255: b""})


def test_relay_suboptions_have_no_pad_or_end():
    p = DhcpPacket(options={82: H("00 01 61 ff 02 62 63")})
    assert p.relay_agent_info == {0: b"a", 255: b"bc"}


def test_pxe_menu():
    subs = pxe_menu(
        [PxeMenuItem(0, "Boot from local disk"), PxeMenuItem(0x8000, "fleet")],
        server_ip="10.77.0.1", prompt="Press F8", timeout=5,
    )  # fmt: skip
    assert subs[6] == b"\x03"
    assert decode_pxe_boot_servers(subs[8]) == [(0x8000, [IPv4Address("10.77.0.1")])]
    assert decode_pxe_boot_menu(subs[9]) == [PxeMenuItem(0, "Boot from local disk"), PxeMenuItem(0x8000, "fleet")]
    assert decode_pxe_menu_prompt(subs[10]) == (5, "Press F8")
    with pytest.raises(DhcpError):
        pxe_menu([])


# ------------------------------------------------------------------ builders

SERVER = IPv4Address("10.77.0.1")


def _reencode(p: DhcpPacket) -> DhcpPacket:
    return DhcpPacket.parse(p.encode())


def test_proxy_offer_for_bios_pxe_behind_relay():
    req = DhcpPacket.parse(RELAYED_BIOS_DISCOVER)
    offer = _reencode(build_proxy_offer(req, SERVER, "undionly.kpxe"))
    assert offer.op == BOOTREPLY and offer.message_type is MessageType.OFFER
    assert (offer.xid, offer.chaddr, offer.flags, offer.htype, offer.hlen) == (
        req.xid, req.chaddr, req.flags, req.htype, req.hlen,
    )  # fmt: skip
    assert offer.yiaddr == IPv4Address(0) and offer.ciaddr == IPv4Address(0)
    assert offer.giaddr == IPv4Address("10.91.0.1")
    assert offer.siaddr == SERVER and offer.server_id == SERVER
    assert offer.vendor_class == "PXEClient"
    assert Opt.CLIENT_GUID not in offer.options  # the client sent none
    assert offer.pxe_options == {6: b"\x08"}
    assert offer.file == b"undionly.kpxe"
    assert offer.options[67] == b"undionly.kpxe\x00" and offer.bootfile_name == "undionly.kpxe"
    assert list(offer.options) == [53, 54, 60, 43, 67]


def test_proxy_offer_for_ipxe_echoes_guid_and_gives_url():
    req = DhcpPacket.parse(IPXE_BIOS_DISCOVER)
    url = "http://10.77.0.1:8080/boot/52:54:00:12:34:56.ipxe"
    offer = _reencode(build_proxy_offer(req, "10.77.0.1", url, tftp_server="10.77.0.2", bootfile_nul=False))
    assert offer.options[97] == req.options[97] and offer.client_guid == GUID
    assert offer.file == url.encode() and offer.options[67] == url.encode()
    assert offer.siaddr == IPv4Address("10.77.0.2") and offer.server_id == SERVER
    assert offer.flags == 0x8000


def test_proxy_offer_for_http_boot():
    req = DhcpPacket.parse(UEFI_HTTP_DISCOVER)
    url = "http://10.77.0.1:8080/files/" + "a" * 120 + "/ipxe.efi"
    offer = _reencode(build_proxy_offer(req, SERVER, url, with_discovery_control=False))
    assert offer.vendor_class == "HTTPClient"
    assert offer.options[97] == b"\x00" * 17  # echoed as sent, zeros too
    assert offer.file == b""  # too long for the field
    assert offer.bootfile_name == url
    assert Opt.VENDOR_SPECIFIC not in offer.options


def test_proxy_offer_with_menu_and_no_file():
    req = DhcpPacket.parse(RELAYED_BIOS_DISCOVER)
    menu = pxe_menu([PxeMenuItem(0x8000, "fleet")], server_ip=SERVER)
    offer = _reencode(build_proxy_offer(req, SERVER, None, pxe_options=menu))
    assert offer.file == b"" and Opt.BOOTFILE_NAME not in offer.options
    assert offer.pxe_options == menu  # pxe_options override the default {6: 8}


def test_proxy_offer_vendor_class_and_extra_options():
    req = DhcpPacket.parse(OVMF_PXE_DISCOVER)
    offer = build_proxy_offer(req, SERVER, "x", vendor_class="PXEClient:custom", extra_options={66: b"10.77.0.1"})
    assert offer.vendor_class == "PXEClient:custom" and offer.options[66] == b"10.77.0.1"


def test_proxy_offer_refuses_option_43_over_255():
    req = DhcpPacket.parse(OVMF_PXE_DISCOVER)
    with pytest.raises(DhcpError, match="option 43"):
        build_proxy_offer(req, SERVER, "x", pxe_options={9: b"m" * 250, 10: b"\x00p"})


def test_proxy_ack_for_ovmf_4011_request():
    req = DhcpPacket.parse(OVMF_PXE_REQUEST_4011)
    ack = _reencode(build_proxy_ack(req, SERVER, "ipxe.efi"))
    assert ack.message_type is MessageType.ACK
    assert ack.ciaddr == IPv4Address("10.77.0.50") and ack.yiaddr == IPv4Address(0)
    assert ack.xid == req.xid and ack.chaddr == req.chaddr
    assert ack.pxe_options == {71: H("00 00 00 00")}  # boot item echoed, no discovery control
    assert ack.pxe_boot_item == PxeBootItem(0, 0)
    assert ack.client_guid == GUID
    assert ack.file == b"ipxe.efi" and ack.siaddr == SERVER


def test_proxy_ack_without_boot_item_has_no_option_43():
    req = DhcpPacket.parse(OVMF_PXE_DISCOVER)
    req.options[53] = b"\x03"
    ack = build_proxy_ack(req, SERVER, "ipxe.efi")
    assert Opt.VENDOR_SPECIFIC not in ack.options


# ------------------------------------------------------------------ properties

_ip = st.integers(0, 2**32 - 1).map(IPv4Address)
_cstr = st.binary(max_size=64).map(lambda b: b.replace(b"\x00", b"x"))
_options = st.dictionaries(
    st.integers(1, 254).filter(lambda c: c != 52),
    st.binary(max_size=600),
    max_size=8,
)


@st.composite
def packets(draw, *, free_fields: bool = False):
    return DhcpPacket(
        op=draw(st.integers(0, 255)),
        htype=draw(st.integers(0, 255)),
        hlen=draw(st.integers(0, 16)),
        hops=draw(st.integers(0, 255)),
        xid=draw(st.integers(0, 2**32 - 1)),
        secs=draw(st.integers(0, 0xFFFF)),
        flags=draw(st.integers(0, 0xFFFF)),
        ciaddr=draw(_ip),
        yiaddr=draw(_ip),
        siaddr=draw(_ip),
        giaddr=draw(_ip),
        chaddr=draw(st.binary(min_size=16, max_size=16)),
        sname=b"" if free_fields else draw(_cstr),
        file=b"" if free_fields else draw(st.binary(max_size=128).map(lambda b: b.replace(b"\x00", b"x"))),
        options=draw(_options),
    )


# FLEET_DHCP_EXAMPLES raises the example count for a longer hunt.
PROPS = settings(
    max_examples=int(os.environ.get("FLEET_DHCP_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPS
@given(packets())
def test_prop_parse_encode_round_trip(p):
    raw = p.encode()
    assert len(raw) >= 300
    assert DhcpPacket.parse(raw) == p


@PROPS
@given(packets(free_fields=True), st.integers(300, 1500))
def test_prop_overloaded_round_trip(p, max_size):
    try:
        raw = p.encode(max_size=max_size)
    except DhcpError:
        assume(False)
    assert len(raw) <= max(max_size, 300)
    assert DhcpPacket.parse(raw) == p


@st.composite
def wire_packets(draw):
    """Byte strings shaped like DHCP: a sane header, then option records,
    some of them repeated or split, pads, maybe an End and trailing junk."""
    header = struct.pack(
        "!BBBBIHH16s16s",
        draw(st.integers(0, 255)), 1, draw(st.integers(0, 16)), 0, draw(st.integers(0, 2**32 - 1)), 0, 0,
        draw(st.binary(min_size=16, max_size=16)), draw(st.binary(min_size=16, max_size=16)),
    )  # fmt: skip
    sname = draw(st.binary(max_size=64))
    file = draw(st.binary(max_size=128))
    records = draw(
        st.lists(
            st.one_of(
                st.just(b"\x00"),
                st.tuples(st.integers(1, 254), st.binary(max_size=40)).map(lambda t: bytes((t[0], len(t[1]))) + t[1]),
                st.just(H("34 01 01")),
            ),
            max_size=12,
        )
    )
    tail = draw(st.one_of(st.just(b""), st.just(b"\xff"), st.binary(max_size=20).map(lambda b: b"\xff" + b)))
    return header + sname.ljust(64, b"\x00") + file.ljust(128, b"\x00") + COOKIE + b"".join(records) + tail


@PROPS
@given(wire_packets())
def test_prop_encode_parse_is_stable(raw):
    try:
        p = DhcpPacket.parse(raw)
    except DhcpError:
        assume(False)
    once = p.encode()
    assert DhcpPacket.parse(once) == p
    assert DhcpPacket.parse(once).encode() == once


@PROPS
@given(st.dictionaries(st.integers(1, 254), st.binary(max_size=700), max_size=6))
def test_prop_suboption_split_and_concatenate(subs):
    raw = encode_suboptions(subs)
    assert all(len(v) <= 255 for _, v in _walk(raw))
    assert parse_suboptions(raw) == subs


@PROPS
@given(st.lists(st.binary(max_size=600), min_size=1, max_size=5))
def test_prop_repeated_option_instances_concatenate(pieces):
    # One option written as several instances, interleaved with another.
    body = b"".join(bytes((60, len(c))) + c + H("35 01 01") for c in (p[:255] for p in pieces))
    p = DhcpPacket.parse(_with_options(body + b"\xff"))
    assert p.options[60] == b"".join(c[:255] for c in pieces)
    assert p.options[53] == b"\x01" * len(pieces)


@PROPS
@given(st.lists(st.text(min_size=1, max_size=10).filter(lambda s: len(s.encode()) < 32), min_size=1, max_size=5))
def test_prop_user_class_rfc3004_round_trip(classes):
    assert decode_user_class(encode_user_class(classes)) == classes


def _walk(raw: bytes):
    i = 0
    while i < len(raw) and raw[i] != 255:
        yield raw[i], raw[i + 2 : i + 2 + raw[i + 1]]
        i += 2 + raw[i + 1]

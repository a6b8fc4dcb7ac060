"""TFTP codec and file-name policy: pure functions, no sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.boot.tftp import Refused, netascii_encode, sanitize_filename
from fleet.boot.tftp_packets import (
    MAX_OPTIONS,
    Ack,
    Data,
    Error,
    ErrorCode,
    OAck,
    Opcode,
    PacketError,
    Request,
    encode_ack,
    encode_data,
    encode_error,
    encode_oack,
    encode_rrq,
    encode_wrq,
    parse_packet,
)


def test_rrq_round_trip_keeps_option_order_and_spelling():
    raw = encode_rrq("pxelinux.0", "octet", [("BlkSize", "1468"), ("tsize", "0")])
    assert raw == b"\x00\x01pxelinux.0\x00octet\x00BlkSize\x001468\x00tsize\x000\x00"
    pkt = parse_packet(raw)
    assert pkt == Request(Opcode.RRQ, b"pxelinux.0", "octet", (("BlkSize", "1468"), ("tsize", "0")))
    assert pkt.option_map()["blksize"] == ("BlkSize", "1468")


def test_mode_is_lowercased():
    assert parse_packet(encode_rrq("f", "OCTET")).mode == "octet"


def test_wrq():
    pkt = parse_packet(encode_wrq("f"))
    assert isinstance(pkt, Request) and pkt.opcode is Opcode.WRQ


def test_data_ack_error_oack_round_trip():
    assert parse_packet(encode_data(7, b"abc")) == Data(7, b"abc")
    assert parse_packet(encode_data(65536, b"")) == Data(0, b"")  # rolls over
    assert parse_packet(encode_ack(65535)) == Ack(65535)
    assert parse_packet(encode_error(ErrorCode.FILE_NOT_FOUND, "file not found")) == Error(1, "file not found")
    assert parse_packet(encode_oack({"blksize": 1468, "tsize": 10})) == OAck((("blksize", "1468"), ("tsize", "10")))


def test_error_message_without_terminator_is_tolerated():
    assert parse_packet(b"\x00\x05\x00\x08abort") == Error(8, "abort")


def test_duplicate_option_first_wins_case_insensitively():
    pkt = parse_packet(encode_rrq("f", "octet", [("blksize", "1000"), ("BLKSIZE", "9")]))
    assert pkt.options == (("blksize", "1000"),)


def test_dangling_and_unterminated_options_are_dropped():
    assert parse_packet(b"\x00\x01f\x00octet\x00blksize\x00").options == ()
    assert parse_packet(b"\x00\x01f\x00octet\x00blksize\x001468").options == ()
    assert parse_packet(b"\x00\x01f\x00octet\x00tsize\x000\x00blksize\x00").options == (("tsize", "0"),)


def test_non_ascii_option_is_skipped_not_fatal():
    raw = b"\x00\x01f\x00octet\x00bl\xffk\x001\x00tsize\x000\x00"
    assert parse_packet(raw).options == (("tsize", "0"),)


def test_option_list_is_capped():
    opts = [(f"x{i}", "1") for i in range(MAX_OPTIONS + 50)]
    pkt = parse_packet(encode_rrq("f", "octet", opts))
    assert len(pkt.options) == MAX_OPTIONS and pkt.truncated_options


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00",
        b"\x00\x01",
        b"\x00\x01file",
        b"\x00\x01file\x00octet",
        b"\x00\x01\x00octet\x00",
        b"\x00\x01file\x00\x00",
        b"\x00\x01file\x00oct\xe9t\x00",
        b"\x00\x63junk",
        b"\xff\xff",
        b"\x00\x00",
        b"\x00\x03\x00",
        b"\x00\x04\x00",
        b"\x00\x05\x00",
    ],
)
def test_malformed_packets_raise_packet_error(raw):
    with pytest.raises(PacketError):
        parse_packet(raw)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_parser_raises_only_packet_error(raw):
    try:
        parse_packet(raw)
    except PacketError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**20), st.binary(max_size=64))
def test_data_block_number_wraps(block, payload):
    raw = encode_data(block, payload)
    assert struct.unpack("!HH", raw[:4]) == (3, block % 65536)
    assert parse_packet(raw) == Data(block % 65536, payload)


# -- file-name policy ---------------------------------------------------------

@pytest.mark.parametrize(
    "raw, expected",
    [
        ("pxelinux.0", "pxelinux.0"),
        ("/pxelinux.0", "pxelinux.0"),
        ("//boot//./ipxe.efi", "boot/ipxe.efi"),
        ("boot\\x86\\wdsnbp.com", "boot/x86/wdsnbp.com"),
        ("é.efi", "é.efi"),
    ],
)
def test_sanitize_accepts(raw, expected):
    assert sanitize_filename(raw.encode()) == expected


@pytest.mark.parametrize(
    "raw, code",
    [
        (b"../etc/passwd", 2),
        (b"/../../etc/passwd", 2),
        (b"a/../../x", 2),
        (b"a/../b", 2),  # any '..' is refused, even one that stays inside
        (b"..\\..\\x", 2),
        (b"foo\x00bar", 2),
        (b"a\x01b", 2),
        (b"a\x7fb", 2),
        (b"\xff\xfe", 2),
        (b"a" * 256, 2),
        (b"/", 1),
        (b"./", 1),
    ],
)
def test_sanitize_refuses(raw, code):
    with pytest.raises(Refused) as info:
        sanitize_filename(raw)
    assert info.value.code == code


def test_sanitize_allows_255_bytes():
    assert sanitize_filename(b"a" * 255) == "a" * 255


def test_netascii_encoding():
    assert netascii_encode(b"a\nb\r\nc\rd") == b"a\r\nb\r\0\r\nc\r\0d"

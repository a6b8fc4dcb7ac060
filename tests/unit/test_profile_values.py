"""Value parsers in fleet.profile.values (shared with the rest of fleet)."""

from __future__ import annotations

import ipaddress

import pytest

from fleet.profile.values import (
    check_name,
    format_mac,
    parse_host,
    parse_ipv4_network,
    parse_mac,
)


@pytest.mark.parametrize(
    "text",
    ["aa:bb:cc:dd:ee:ff", "AA:BB:CC:DD:EE:FF", "aa-bb-cc-dd-ee-ff", "aabb.ccdd.eeff", "AABBCCDDEEFF", " aa:bb:cc:dd:ee:ff "],
)
def test_parse_mac_forms(text: str) -> None:
    assert parse_mac(text) == "aa:bb:cc:dd:ee:ff"


@pytest.mark.parametrize(
    "text",
    ["", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "aa:bb-cc:dd:ee:ff", "gg:bb:cc:dd:ee:ff", "a:b:c:d:e:f", "aabb.ccdd", "aa:bb:cc:dd:ee:f"],
)
def test_parse_mac_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a MAC address"):
        parse_mac(text)


def test_parse_mac_allows_multicast_and_local() -> None:
    assert parse_mac("01:00:5E:00:00:01") == "01:00:5e:00:00:01"
    assert parse_mac("02-00-00-00-00-01") == "02:00:00:00:00:01"


def test_format_mac() -> None:
    assert format_mac(bytes.fromhex("525400abcdef")) == "52:54:00:ab:cd:ef"
    with pytest.raises(ValueError):
        format_mac(b"\x00" * 5)


def test_parse_ipv4_network() -> None:
    assert parse_ipv4_network("10.0.0.0/8") == ipaddress.IPv4Network("10.0.0.0/8")
    assert parse_ipv4_network("10.1.2.3") == ipaddress.IPv4Network("10.1.2.3/32")
    with pytest.raises(ValueError, match=r"has host bits set \(did you mean 10.1.2.0/24\?\)"):
        parse_ipv4_network("10.1.2.3/24")
    with pytest.raises(ValueError, match="'fe80::' is not an IPv4 address"):
        parse_ipv4_network("fe80::/64")
    with pytest.raises(ValueError, match="not an IPv4 address or network"):
        parse_ipv4_network("rack1")


def test_parse_host() -> None:
    assert parse_host("10.0.0.1") == "10.0.0.1"
    assert parse_host("2001:DB8::1") == "2001:db8::1"
    assert parse_host("gw1.example.net") == "gw1.example.net"
    for bad in ("10.0.0.256", "2001:db8::g", "under_score.example", "-x.example"):
        with pytest.raises(ValueError):
            parse_host(bad)


def test_check_name() -> None:
    assert check_name("web-1.a_b") == "web-1.a_b"
    with pytest.raises(ValueError, match=r"\('/', ' '\)|\(' ', '/'\)"):
        check_name("a b/c")

"""Value parsers shared by the profile validator and the rest of fleet.

Each parser takes a string and returns the normalised value, or raises
`ValueError` with a message fit to show a user (no exception class names,
no Python reprs beyond quoting the input).
"""

from __future__ import annotations

import ipaddress
import re

from fleet.core.values import DOCUMENTATION4, is_public_ipv4  # one rule, in core
from fleet.core.values import parse_mac  # noqa: F401  (one MAC parser, in core)

__all__ = [
    "NAME_RE",
    "check_name",
    "format_mac",
    "is_private_ipv4",
    "parse_host",
    "parse_ipv4",
    "parse_ipv4_network",
    "parse_ipv6",
    "parse_mac",
]

#: Names of profiles, jumps, sites, deployments and nodes.
NAME_RE = re.compile(r"[A-Za-z0-9._-]+")

_HEX = "0123456789abcdef"
_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_name(value: str) -> str:
    """A name of letters, digits, '.', '_' and '-' (it ends up in file names and hostnames)."""
    if not value:
        raise ValueError("name is empty")
    if not NAME_RE.fullmatch(value):
        bad = sorted({c for c in value if not NAME_RE.fullmatch(c)})
        shown = ", ".join(repr(c) for c in bad)
        raise ValueError(f"name {value!r} has characters other than A-Z a-z 0-9 . _ - ({shown})")
    return value


def format_mac(raw: bytes) -> str:
    """Six bytes (e.g. a DHCP chaddr) as ``aa:bb:cc:dd:ee:ff``."""
    if len(raw) != 6:
        raise ValueError(f"a MAC address has 6 bytes, got {len(raw)}")
    return ":".join(f"{b:02x}" for b in raw)


def parse_ipv4(value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value.strip())
    except (ipaddress.AddressValueError, ValueError, AttributeError):
        raise ValueError(f"not an IPv4 address: {value!r}") from None


def parse_ipv6(value: str) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(value.strip())
    except (ipaddress.AddressValueError, ValueError, AttributeError):
        raise ValueError(f"not an IPv6 address: {value!r}") from None


def parse_ipv4_network(value: str) -> ipaddress.IPv4Network:
    """``10.1.0.0/24`` or a bare address (which becomes a /32).

    Host bits set (``10.1.0.1/24``) is an error that names the network meant.
    """
    s = value.strip()
    try:
        return ipaddress.IPv4Network(s, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            loose = ipaddress.IPv4Network(s, strict=False)
            raise ValueError(f"{s} has host bits set (did you mean {loose}?)") from None
    except Exception:  # noqa: BLE001 - ipaddress raises a few kinds
        pass
    if "/" in s:
        addr, _, plen = s.partition("/")
        try:
            ipaddress.IPv4Address(addr)
        except ValueError:
            raise ValueError(f"not an IPv4 network: {value!r} ({addr!r} is not an IPv4 address)") from None
        raise ValueError(f"not an IPv4 network: {value!r} (bad prefix length {plen!r}; expected 0..32)")
    raise ValueError(f"not an IPv4 address or network: {value!r}")


def parse_host(value: str) -> str:
    """An IPv4 address, an IPv6 address or a DNS host name; returned normalised."""
    s = value.strip()
    if not s:
        raise ValueError("address is empty")
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", s):
        raise ValueError(f"not an IPv4 address: {value!r}")
    if ":" in s:
        raise ValueError(f"not an IPv6 address: {value!r}")
    name = s[:-1] if s.endswith(".") else s
    if len(name) > 253 or not all(_HOSTNAME_LABEL.fullmatch(p) for p in name.split(".")):
        raise ValueError(f"not an IP address or host name: {value!r}")
    return s


def is_private_ipv4(addr: ipaddress.IPv4Address) -> bool:
    """Private in fleet's sense: any unicast address that is not public (RFC 1918,
    CGNAT, loopback, link-local, benchmarking and other non-routed space), plus
    the documentation ranges (usable on either side in examples)."""
    if addr.is_multicast:
        return False
    return not is_public_ipv4(addr) or any(addr in n for n in DOCUMENTATION4)



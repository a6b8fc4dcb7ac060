"""Checks for the values operators type: MAC addresses, hostnames, addresses.

Hostnames end up inside iPXE scripts, kickstarts and shell lines, so only
RFC 1123 names pass: nothing that could start a new script line or a quote.
"""

from __future__ import annotations

import ipaddress
import re

_HEX = re.compile(r"^[0-9a-f]{12}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)


def parse_mac(text: str) -> str:
    """'AA-BB-CC-DD-EE-FF', 'aabb.ccdd.eeff', 'aa:bb:cc:dd:ee:ff' -> 'aa:bb:cc:dd:ee:ff'."""
    if not isinstance(text, str):
        raise ValueError(f"not a MAC address: {text!r}")
    raw = text.strip().lower()
    if re.fullmatch(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}", raw):
        digits = raw.replace(":", "").replace("-", "")
    elif re.fullmatch(r"[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}", raw):
        digits = raw.replace(".", "")
    elif _HEX.match(raw):
        digits = raw
    else:
        raise ValueError(f"not a MAC address: {text!r} (write aa:bb:cc:dd:ee:ff)")
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def check_hostname(text: str) -> str:
    """An RFC 1123 host name (labels of letters, digits and '-'), lower-cased."""
    name = text.strip().lower().rstrip(".")
    if not name or len(name) > 253 or not all(_LABEL.match(p) for p in name.split(".")):
        raise ValueError(
            f"not a valid hostname: {text!r} (letters, digits and '-' in dot-separated "
            f"labels of at most 63 characters)")
    return name


def check_ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except (ipaddress.AddressValueError, AttributeError) as err:
        raise ValueError(f"not an IPv4 address: {text!r}") from err


# IANA IPv4 Special-Purpose Address Registry: the blocks marked "Globally
# Reachable: False" (192.0.0.0/24 as a whole: its two anycast exceptions are no
# node's address). Listed as well as asked of `ipaddress`, whose answers vary
# by Python version (3.11 misses most of 192.0.0.0/24).
_NOT_GLOBAL4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "240.0.0.0/4", "255.255.255.255/32"))
# Documentation ranges (RFC 5737): not reachable either, but counted as public so
# example profiles read naturally.
DOCUMENTATION4 = tuple(ipaddress.IPv4Network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))


def is_public_ipv4(value: "str | ipaddress.IPv4Address | None") -> bool:
    """The one rule for "public IPv4" (route planner and profile checks): a
    globally reachable unicast address, or a documentation address. Anything
    that is not an IPv4 address (None, a name, IPv6) is not public."""
    if isinstance(value, ipaddress.IPv4Address):
        addr = value
    else:
        try:
            addr = ipaddress.IPv4Address(str(value).strip()) if value else None
        except ValueError:
            return False
        if addr is None:
            return False
    if any(addr in n for n in DOCUMENTATION4):
        return True
    if addr.is_multicast or not addr.is_global:
        return False
    return not any(addr in n for n in _NOT_GLOBAL4)

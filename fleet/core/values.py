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

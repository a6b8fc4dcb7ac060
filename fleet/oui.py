"""NIC vendor from a MAC's OUI, read from the IEEE registry netaddr ships (offline)."""

from __future__ import annotations

from functools import lru_cache

import netaddr


@lru_cache(maxsize=4096)
def nic_vendor(mac: str) -> str | None:
    """'Dell Inc.' for 00:14:22:..; None for unknown or locally administered OUIs
    (QEMU's 52:54:00 has no registry entry)."""
    try:
        return netaddr.EUI(mac).oui.registration().org.strip() or None
    except (netaddr.NotRegisteredError, netaddr.AddrFormatError, IndexError, ValueError):
        return None

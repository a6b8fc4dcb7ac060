"""NIC vendor from a MAC's OUI, read from the IEEE registry netaddr ships (offline).

netaddr is imported on the first lookup, not with this module: the engine
imports this module, and commands that never look up a vendor (exec, shell)
should not pay its ~25 ms."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4096)
def nic_vendor(mac: str) -> str | None:
    """'Dell Inc.' for 00:14:22:..; None for unknown or locally administered OUIs
    (QEMU's 52:54:00 has no registry entry)."""
    import netaddr

    try:
        return netaddr.EUI(mac).oui.registration().org.strip() or None
    except (netaddr.NotRegisteredError, netaddr.AddrFormatError, IndexError, ValueError):
        return None

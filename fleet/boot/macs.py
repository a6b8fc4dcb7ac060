"""Which MAC addresses can be a machine: the one rule the boot services apply
to every MAC a client sends them (DHCP's chaddr, the MAC in /boot/<mac>.ipxe).

A network card has a unicast address. A group address (the I/G bit, the low
bit of the first octet: broadcast ff:ff:ff:ff:ff:ff, IPv4 multicast 01:00:5e:..,
IPv6 multicast 33:33:..) or the all-zero address is a forged or broken client;
registering it as a machine would make a bogus row that every later hostile
request touches. Locally administered unicast addresses (QEMU's 52:54:00:..)
are real cards and stay welcome.
"""

from __future__ import annotations

from fleet.core.values import parse_mac


def why_not_a_machine(mac: str) -> str | None:
    """None for a unicast MAC (as parse_mac writes it), else why it is refused."""
    first = int(mac[:2], 16)
    if mac == "ff:ff:ff:ff:ff:ff":
        return f"{mac} is the broadcast address, not a network card's"
    if first & 1:
        return f"{mac} is a multicast (group) address, not a network card's"
    if mac == "00:00:00:00:00:00":
        return f"{mac} is the all-zero address, not a network card's"
    return None


def machine_mac(text: str) -> str:
    """`text` as a normalised unicast MAC; ValueError when it is not one."""
    mac = parse_mac(text)
    why = why_not_a_machine(mac)
    if why is not None:
        raise ValueError(why)
    return mac

"""The route planner: how fleet reaches a node, and why. Pure: no I/O.

The rules, in order (first match wins):

1. **direct-public-ipv4**: the node has a public IPv4 address (its
   `public_ipv4`, or an `address` that is itself public). "Public" is
   `fleet.core.values.is_public_ipv4`, shared with the profile checks: globally
   reachable unicast per the IANA special-purpose registry (so not RFC 1918,
   CGNAT, loopback, link-local, 0/8, 192.0.0/24, 198.18/15 benchmarking,
   multicast or reserved); the documentation ranges (192.0.2/24,
   198.51.100/24, 203.0.113/24) count as public so examples read naturally.
2. **direct-ipv6**: the node has an IPv6 address and the operator can route to
   it. A global node address needs a global operator address. A ULA node
   address (fc00::/7) needs the operator to hold a ULA address too: a ULA is
   only reachable inside the private network that uses it, and a global
   address says nothing about being inside that network (we don't guess).
   Link-local and loopback node addresses are never used. What the operator
   holds comes from /proc/net/if_inet6 (`operator_ipv6()`), excluding ::1 and
   fe80::/10.
3. **direct-beachhead**: the node's private IPv4 is covered by one of the
   operator's `beachheads` (VPN, same LAN).
4. **jump**: the node's site declares jumps; each jump gives a chain (its `via`
   jumps, outermost first, ending with it). The first chain is the one to use;
   the others are the failover alternatives, in the site's preference order.
   A node without a `site` belongs to the first site whose subnets contain its
   address.
5. **unreachable**: none of the above; the reason says what was missing.
   fleet never tries an address it has no route to (no long SSH timeouts).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Union

from fleet.core.values import is_public_ipv4

if TYPE_CHECKING:
    from fleet.core.model import Node
    from fleet.profile import Profile


class RouteKind(str, Enum):
    DIRECT_PUBLIC_IPV4 = "direct-public-ipv4"
    DIRECT_IPV6 = "direct-ipv6"
    DIRECT_BEACHHEAD = "direct-beachhead"
    JUMP = "jump"
    UNREACHABLE = "unreachable"

    @property
    def direct(self) -> bool:
        return self in (RouteKind.DIRECT_PUBLIC_IPV4, RouteKind.DIRECT_IPV6,
                        RouteKind.DIRECT_BEACHHEAD)


@dataclass(frozen=True)
class OperatorIPv6:
    """Which kinds of routable IPv6 address the operator's host holds."""

    global_: bool = False
    ula: bool = False

    @property
    def any(self) -> bool:
        return self.global_ or self.ula

    def reaches(self, addr: ipaddress.IPv6Address) -> bool:
        if _is_ula(addr):
            return self.ula
        if _usable_global6(addr):
            return self.global_
        return False


V6Arg = Union[bool, OperatorIPv6]


@dataclass(frozen=True)
class Route:
    node: str
    kind: RouteKind
    target: str | None  # the address fleet connects to (None when unreachable)
    port: int = 22
    chain: tuple[str, ...] = ()  # jump names, outermost first ("gw1", "inner")
    alternatives: tuple[tuple[str, ...], ...] = ()  # failover chains, in order
    reason: str = ""

    @property
    def chains(self) -> tuple[tuple[str, ...], ...]:
        """Every chain to try, preferred first (empty for direct routes)."""
        return ((self.chain,) + self.alternatives) if self.chain else ()

    @property
    def reachable(self) -> bool:
        return self.kind is not RouteKind.UNREACHABLE

    @property
    def via(self) -> str:
        """`gw1 > inner` (then `gw2`): the chain as people read it."""
        if not self.chain:
            return ""
        text = " > ".join(self.chain)
        if self.alternatives:
            text += " (then " + ", ".join(" > ".join(c) for c in self.alternatives) + ")"
        return text


# -- address classification -------------------------------------------------------

_ULA = ipaddress.IPv6Network("fc00::/7")
_LINK_LOCAL6 = ipaddress.IPv6Network("fe80::/10")


def _v4(text: str | None) -> ipaddress.IPv4Address | None:
    if not text:
        return None
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def _v6(text: str | None) -> ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        return ipaddress.IPv6Address(text.split("%", 1)[0])
    except ValueError:
        return None


def _is_ula(addr: ipaddress.IPv6Address) -> bool:
    return addr in _ULA


def _usable_global6(addr: ipaddress.IPv6Address) -> bool:
    return not (addr.is_loopback or addr in _LINK_LOCAL6 or addr.is_unspecified
                or addr.is_multicast or addr in _ULA or addr.ipv4_mapped is not None)


def classify_operator_ipv6(addresses: list[str]) -> OperatorIPv6:
    glob = ula = False
    for text in addresses:
        addr = _v6(text)
        if addr is None:
            continue
        if _is_ula(addr):
            ula = True
        elif _usable_global6(addr):
            glob = True
    return OperatorIPv6(glob, ula)


def operator_ipv6(path: Path = Path("/proc/net/if_inet6")) -> OperatorIPv6:
    """What routable IPv6 the operator's host holds (::1 and fe80::/10 excluded)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return OperatorIPv6()
    addresses = []
    for line in lines:
        parts = line.split()
        if not parts or len(parts[0]) != 32:
            continue
        hexa = parts[0]
        addresses.append(":".join(hexa[i:i + 4] for i in range(0, 32, 4)))
    return classify_operator_ipv6(addresses)


# -- the planner --------------------------------------------------------------------

def _operator6(arg: V6Arg) -> OperatorIPv6:
    if isinstance(arg, OperatorIPv6):
        return arg
    # a plain bool: "the operator has a routable (global) IPv6"; ULA needs the object
    return OperatorIPv6(global_=bool(arg), ula=False)


def site_of(node: "Node", profile: "Profile"):
    """The node's site config: by name, else the first site whose subnets hold its address."""
    if node.site:
        for s in profile.sites:
            if s.name == node.site:
                return s
        return None
    addr = _v4(node.address)
    if addr is None:
        return None
    for s in profile.sites:
        if any(addr in net for net in s.subnets):
            return s
    return None


def plan(node: "Node", profile: "Profile", operator_has_routable_ipv6: V6Arg) -> Route:
    """How to reach `node` (see the module docstring for the rules)."""
    v6op = _operator6(operator_has_routable_ipv6)
    port = node.port or 22

    def route(kind: RouteKind, target: str | None, reason: str, chain=(), alts=()) -> Route:
        return Route(node.name, kind, target, port, tuple(chain), tuple(alts), reason)

    # 1. public IPv4
    for candidate in (node.public_ipv4, node.address):
        if is_public_ipv4(candidate):
            return route(RouteKind.DIRECT_PUBLIC_IPV4, candidate, f"public IPv4 {candidate}")

    # 2. IPv6
    missing: list[str] = ["no public IPv4"]
    v6 = _v6(node.ipv6)
    if v6 is not None and v6op.reaches(v6):
        kind_word = "ULA" if _is_ula(v6) else "global"
        mine = "a ULA" if _is_ula(v6) else "a global"
        return route(RouteKind.DIRECT_IPV6, str(v6),
                     f"{kind_word} IPv6 {v6}, and the operator has {mine} IPv6 address")
    if v6 is None:
        missing.append("no usable IPv6" if not node.ipv6 else f"bad IPv6 {node.ipv6!r}")
    elif _is_ula(v6):
        missing.append(f"IPv6 {v6} is ULA and the operator has no ULA address")
    elif not _usable_global6(v6):
        missing.append(f"IPv6 {v6} is not routable")
    else:
        missing.append(f"IPv6 {v6} but the operator has no routable IPv6")

    # 3. beachheads
    addr = _v4(node.address)
    if addr is None:
        what = "no private IPv4" if not node.address else f"address {node.address!r} is not IPv4"
        return route(RouteKind.UNREACHABLE, None, ", ".join(missing + [what]))
    for net in profile.operator.beachheads:
        if addr in net:
            return route(RouteKind.DIRECT_BEACHHEAD, str(addr),
                         f"private {addr} covered by beachhead {net}")

    # 4. the site's jumps
    site = site_of(node, profile)
    if site is None:
        where = (f"its site {node.site!r} is not in the profile" if node.site
                 else "no site's subnets hold it")
        return route(RouteKind.UNREACHABLE, None,
                     ", ".join(missing) + f", {addr} is private, and {where}")
    chains = []
    for name in site.jumps:
        try:
            chains.append(tuple(j.name for j in profile.jump_chain(name)))
        except (KeyError, ValueError):
            continue  # the profile validator reports these; skip a broken one
    if not chains:
        return route(RouteKind.UNREACHABLE, None,
                     ", ".join(missing) + f", {addr} is private, and site {site.name} "
                                          "declares no jumps")
    names = [c[-1] for c in chains]
    reason = f"private {addr} via site {site.name}'s jumps {names[0]}"
    if len(chains[0]) > 1:
        reason += f" (through {' > '.join(chains[0][:-1])})"
    if len(names) > 1:
        reason += f" (then {', '.join(names[1:])})"
    return route(RouteKind.JUMP, str(addr), reason, chains[0], chains[1:])


__all__ = ["OperatorIPv6", "Route", "RouteKind", "classify_operator_ipv6", "is_public_ipv4",
           "operator_ipv6", "plan", "site_of"]

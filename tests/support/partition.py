"""Network partitions between testbed namespaces, with nftables.

`Partition(topo, "console", "siteb")` drops every packet between two namespaces
of a `Topology` (either may be None, the root namespace); `Partition(topo,
"gw1", "10.91.0.0/24")` drops every packet between a namespace and an address
or prefix, including what that namespace forwards. Packets are dropped, not
refused, so a connect times out and an established TCP connection stalls and
resumes after the heal, as on a cut cable.

    with Partition(topo, "console", "siteb"):   # cut on enter, healed on exit
        ...
    p = Partition(topo, "a", "b"); p.cut(); p.heal()   # or by hand; both idempotent

Each partition is its own nftables table (`inet fleet_part_<pid>_<n>`) in each
namespace it touches, at raw priority so it wins over any other rule; healing
deletes the table. A namespace's addresses are read when the cut is made.
Tables left by a crash vanish with their namespaces (Topology.close); those in
the root namespace are removed at exit, or by `sweep_stale_tables()` when their
process is gone.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import json
import os
import re

from support.netns import NFT, Topology, ip, pid_alive, sh, ns_argv

TABLE_PREFIX = "fleet_part_"
TABLE_RE = re.compile(rf"^{TABLE_PREFIX}(\d+)_\d+$")
HOOKS = ("input", "output", "forward")

_seq = itertools.count()
_active: list["Partition"] = []
_atexit_installed = False


def addresses_of(ns: str | None) -> list[str]:
    """The global-scope addresses of a namespace (real name; None = root)."""
    out = json.loads(ip(ns, "-j", "addr", "show").stdout or "[]")
    return [a["local"] for link in out for a in link.get("addr_info", [])
            if a.get("scope") == "global"]


def _rules(table: str, peers: list[str]) -> str:
    nets = [ipaddress.ip_network(p, strict=False) for p in peers]
    lines = []
    for fam, ver in (("ip", 4), ("ip6", 6)):
        group = ", ".join(str(n) for n in nets if n.version == ver)
        if group:
            lines += [f"{fam} saddr {{ {group} }} drop", f"{fam} daddr {{ {group} }} drop"]
    chains = "".join(
        f"  chain {hook} {{\n    type filter hook {hook} priority raw; policy accept;\n"
        + "".join(f"    {r}\n" for r in lines) + "  }\n" for hook in HOOKS)
    # add + delete + define: replaces a leftover table of the same name atomically
    return (f"add table inet {table}\ndelete table inet {table}\n"
            f"table inet {table} {{\n{chains}}}\n")


def tables(ns: str | None) -> list[str]:
    """Partition tables present in a namespace (real name; None = root)."""
    cp = sh(ns_argv(ns, [NFT, "list", "tables"]))
    names = [line.split()[-1] for line in cp.stdout.splitlines() if line.startswith("table")]
    return [n for n in names if n.startswith(TABLE_PREFIX)]


def _delete(ns: str | None, table: str) -> None:
    if table in tables(ns):
        sh(ns_argv(ns, [NFT, "delete", "table", "inet", table]))


def sweep_stale_tables() -> list[str]:
    """Delete root-namespace partition tables whose process is gone."""
    gone = [t for t in tables(None)
            if (m := TABLE_RE.match(t)) and int(m[1]) != os.getpid() and not pid_alive(int(m[1]))]
    for t in gone:
        _delete(None, t)
    return gone


def heal_all() -> None:
    """Heal every partition this process still holds (atexit)."""
    for p in list(reversed(_active)):
        p.heal()


class Partition:
    def __init__(self, topo: Topology, ns: str | None, other: str | None):
        """Drop traffic between namespace `ns` and `other`: a namespace of topo (or
        None, the root namespace) or an address/prefix such as 10.91.0.7 or fd77::/64."""
        self.topo = topo
        self.ns = ns
        self.other = other
        self.other_is_ns = other is None or topo.ns(other) in _netns_names()
        if not self.other_is_ns:
            ipaddress.ip_network(other, strict=False)  # a clear error for a typo
        self.table = f"{TABLE_PREFIX}{os.getpid()}_{next(_seq)}"
        self.installed: list[str | None] = []  # real namespace names holding the table

    @property
    def is_cut(self) -> bool:
        return bool(self.installed)

    def cut(self) -> "Partition":
        if self.is_cut:
            return self
        _install_atexit()
        a = self.topo.ns(self.ns)
        sides = [(a, addresses_of(self.topo.ns(self.other)) if self.other_is_ns
                  else [self.other])]
        if self.other_is_ns:
            sides.append((self.topo.ns(self.other), addresses_of(a)))
        _active.append(self)
        for ns, peers in sides:
            if not peers:
                raise ValueError(f"partition {self.ns!r}/{self.other!r}: no addresses to drop")
            self.installed.append(ns)
            sh(ns_argv(ns, [NFT, "-f", "-"]), input=_rules(self.table, peers))
        return self

    def heal(self) -> None:
        while self.installed:
            ns = self.installed[-1]
            if ns is None or ns in _netns_names():  # a deleted namespace took its table
                _delete(ns, self.table)
            self.installed.pop()
        if self in _active:
            _active.remove(self)

    def __enter__(self) -> "Partition":
        return self.cut()

    def __exit__(self, *exc) -> None:
        self.heal()


def _netns_names() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def _install_atexit() -> None:
    global _atexit_installed
    if not _atexit_installed:
        atexit.register(heal_all)
        _atexit_installed = True

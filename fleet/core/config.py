"""The static half of the domain model: sites (with their distributor's
settings), jumps with their `via` chains, deployments, declared nodes and the
operator's SSH settings, as a profile (format version 1) declares them.

These are plain values: no I/O, no validation (`fleet.profile` parses and
validates YAML into them).
Collections are tuples; label and option mappings are `FrozenDict`s, so every
object here is immutable and hashable.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, TypeVar

HostKeys = Literal["strict", "accept-new"]
ProxyMode = Literal["port4011", "direct"]
HoldMode = Literal["poll", "reboot"]
DeploymentKind = Literal["preseed", "kickstart", "cloud-init", "script"]

K = TypeVar("K")
V = TypeVar("V")


class FrozenDict(Mapping[K, V]):
    """An immutable, hashable mapping (for labels and demo options)."""

    __slots__ = ("_d", "_h")

    def __init__(self, *args: Any, **kwargs: Any):
        self._d: dict[K, V] = dict(*args, **kwargs)
        self._h: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._d[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        if self._h is None:
            self._h = hash(frozenset(self._d.items()))
        return self._h

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._d) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenDict({self._d!r})"


def freeze(value: Any) -> Any:
    """Dicts -> FrozenDict, lists -> tuples, recursively."""
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def _default_known_hosts() -> tuple[Path, ...]:
    return (Path("~/.ssh/known_hosts").expanduser(),)


@dataclass(frozen=True)
class SshSettings:
    user: str = "root"
    identity: Path | None = None
    known_hosts: tuple[Path, ...] = field(default_factory=_default_known_hosts)
    host_keys: HostKeys = "strict"
    connect_timeout: float = 5.0


@dataclass(frozen=True)
class OperatorConfig:
    ssh: SshSettings = field(default_factory=SshSettings)
    # Private IPv4 space the operator reaches directly; a bare address is a /32.
    beachheads: tuple[ipaddress.IPv4Network, ...] = ()


@dataclass(frozen=True)
class JumpConfig:
    name: str
    address: str
    port: int = 22
    user: str = "root"  # the loader fills in operator.ssh.user when not given
    via: str | None = None


@dataclass(frozen=True)
class Ports:
    dhcp: int = 67
    pxe: int = 4011
    tftp: int = 69
    http: int = 8080


@dataclass(frozen=True)
class IpxeMenu:
    """An iPXE mainscript (a menu) and the subscripts it chains, as templates
    rendered per machine (fleet.boot.menus); key `ipxe` of a deployment or of a
    site's distributor."""

    menu: Path
    # subscript name -> template, served at /boot/<mac>/sub/<name>.ipxe
    subscripts: Mapping[str, Path] = field(default_factory=FrozenDict)


@dataclass(frozen=True)
class DistributorConfig:
    interface: str | None
    address: str
    ports: Ports = field(default_factory=Ports)
    enabled: bool = True
    # direct: option 43 {6: 8} + option 54 + siaddr in the proxy offer;
    # port4011: BIOS clients get the menu, everyone may come to port 4011.
    proxy_mode: ProxyMode = "port4011"
    reply_delay_ms: int = 0
    vendor_classes: tuple[str, ...] = ("PXEClient", "HTTPClient")
    hold: HoldMode = "poll"
    poll_seconds: int = 10
    tftp_root: Path | None = None
    ipxe_dir: Path | None = None
    ipxe: IpxeMenu | None = None  # the menu of installing machines whose deployment has none


#: what the console runs on a site's agent host (`--site NAME` is added)
AGENT_COMMAND = "fleet --headless agent"


@dataclass(frozen=True)
class AgentConfig:
    """Where a remote site's boot services run: a host reached like a node
    (through jump `via`, else by the route planner's rules), where the console
    runs `command --site NAME` over SSH."""

    host: str
    via: str | None = None
    user: str | None = None  # default: operator.ssh.user
    port: int = 22
    command: str = AGENT_COMMAND


def agent_host_name(site: str) -> str:
    """The name a site's agent host is known by to the pool and the host-key pins."""
    return f"{site}.agent"


@dataclass(frozen=True)
class SiteConfig:
    name: str
    subnets: tuple[ipaddress.IPv4Network, ...] = ()
    jumps: tuple[str, ...] = ()
    distributor: DistributorConfig | None = None
    agent: AgentConfig | None = None  # None: the boot services run on this host


@dataclass(frozen=True)
class DeploymentConfig:
    name: str
    kind: DeploymentKind
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str = ""
    template: Path | None = None
    authorized_keys: tuple[str, ...] = ()
    post_boot: tuple[Path, ...] = ()
    ipxe: IpxeMenu | None = None  # served instead of the built-in install script


@dataclass(frozen=True)
class NodeConfig:
    name: str
    site: str | None = None
    address: str | None = None  # private IPv4
    public_ipv4: str | None = None
    ipv6: str | None = None
    port: int = 22
    user: str | None = None
    labels: Mapping[str, str] = field(default_factory=FrozenDict)


@dataclass(frozen=True)
class DemoConfig:
    machines: int = 24
    misbehave: bool = True
    install_seconds: float = 20.0
    seed: int = 1
    options: Mapping[str, Any] = field(default_factory=FrozenDict)


@dataclass(frozen=True)
class Profile:
    version: int
    name: str
    path: Path
    store: Path | None = None
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    jumps: tuple[JumpConfig, ...] = ()
    sites: tuple[SiteConfig, ...] = ()
    deployments: tuple[DeploymentConfig, ...] = ()
    nodes: tuple[NodeConfig, ...] = ()
    demo: DemoConfig | None = None
    # A machine with no progress for this many seconds is `stalled` (key `stall_after`).
    stall_after: int = 1800
    # Dotted key path -> line in the file, for pointing at the profile later
    # ("port in use: lab.yaml:14"). Not part of equality.
    lines: Mapping[str, int] = field(default_factory=FrozenDict, compare=False, repr=False)

    def jump(self, name: str) -> JumpConfig:
        return _by_name(self.jumps, name, "jump")

    def site(self, name: str) -> SiteConfig:
        return _by_name(self.sites, name, "site")

    def deployment(self, name: str) -> DeploymentConfig:
        return _by_name(self.deployments, name, "deployment")

    def node(self, name: str) -> NodeConfig:
        return _by_name(self.nodes, name, "node")

    def jump_chain(self, name: str) -> tuple[JumpConfig, ...]:
        """The jumps to go through to reach jump `name`, outermost first, ending with it.

        ``inner`` via ``gw1`` gives ``(gw1, inner)``.
        """
        chain: list[JumpConfig] = []
        seen: set[str] = set()
        current: str | None = name
        while current is not None:
            if current in seen:
                raise ValueError(f"jump chain cycle at {current!r}")
            seen.add(current)
            jump = self.jump(current)
            chain.append(jump)
            current = jump.via
        return tuple(reversed(chain))

    def line_of(self, key: str) -> int | None:
        """The line of dotted key `key` (``sites[0].distributor.ports.http``), if it was in the file."""
        return self.lines.get(key)


def _by_name(items: tuple[Any, ...], name: str, what: str) -> Any:
    for item in items:
        if item.name == name:
            return item
    raise KeyError(f"no {what} named {name!r}")

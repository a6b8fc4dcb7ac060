"""Profile format version 1: the key tables and the checks across sections.

To add a key: add one `Field(...)` to the table below, a field to the
dataclass in `fleet/core/config.py`, and a line to profiles/lab.example.yaml.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path
from typing import Any

from . import values
from .errors import ProfileError, ProfileIssue
from fleet.core.config import (
    AGENT_COMMAND,
    AgentConfig,
    DemoConfig,
    DeploymentConfig,
    DistributorConfig,
    FrozenDict,
    IpxeMenu,
    JumpConfig,
    NodeConfig,
    OperatorConfig,
    Ports,
    Profile,
    SiteConfig,
    SshSettings,
)
from .spec import (
    INVALID,
    AnyMap,
    Bool,
    Ctx,
    Enum,
    Field,
    Host,
    Int,
    Invalid,
    IPv4Net,
    IPv6,
    ListOf,
    Name,
    Named,
    Number,
    PathV,
    Port,
    Raw,
    Ref,
    Schema,
    Str,
    StrMap,
    Text,
    convert,
    describe,
    suggest,
)
from .yamlpos import Y, compose_text
from fleet.core.templates import (BUILTIN_SUBSCRIPTS, MAX_TEMPLATE_BYTES, SUBSCRIPT_NAME,
                                  check_menu)

SUPPORTED_VERSIONS = (1,)

# --------------------------------------------------------------------------- leaf checks


def _check_user(s: str) -> None:
    if any(c.isspace() for c in s) or "@" in s or ":" in s:
        raise ValueError(f"not a user name: {s!r}")


def _check_interface(s: str) -> None:
    if len(s) > 15 or "/" in s or any(c.isspace() for c in s) or s in (".", ".."):
        raise ValueError(f"not a network interface name: {s!r} (at most 15 characters, no '/' or spaces)")


_KEY_TYPE = re.compile(r"(ssh-(rsa|dss|ed25519|ed448)|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+)(-cert-v01@openssh\.com)?")


def _check_authorized_key(s: str) -> None:
    parts = s.split()
    # authorized_keys lines may start with options; the key type is then later.
    for i, part in enumerate(parts):
        if _KEY_TYPE.fullmatch(part):
            if i + 1 < len(parts) and re.fullmatch(r"AAAA[A-Za-z0-9+/]+=*", parts[i + 1]):
                return
            break
    raise ValueError(f"not an SSH public key line: {s[:40]!r}{'...' if len(s) > 40 else ''}")


def _private_ipv4(s: str) -> str:
    addr = values.parse_ipv4(s)
    if not values.is_private_ipv4(addr):
        raise ValueError(f"{addr} is not a private IPv4 address (put public addresses in public_ipv4)")
    return str(addr)


def _public_ipv4(s: str) -> str:
    addr = values.parse_ipv4(s)
    if not values.is_public_ipv4(addr):
        raise ValueError(f"{addr} is not a public IPv4 address (put private addresses in address)")
    return str(addr)


def _ipv4_interface_address(s: str) -> str:
    addr = values.parse_ipv4(s)
    if addr.is_unspecified or addr.is_multicast or addr == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{addr} cannot be a distributor address (it is where machines are pointed)")
    return str(addr)


PrivateIPv4 = Raw(_private_ipv4, "a private IPv4 address")
PublicIPv4 = Raw(_public_ipv4, "a public IPv4 address")
BindIPv4 = Raw(_ipv4_interface_address, "an IPv4 address")
User = Str(check=_check_user, what="a user name")

# --------------------------------------------------------------------------- intra-mapping checks


def _check_ports(ctx: Ctx, ports: Ports, y: Y, path: str) -> None:
    # DHCP, proxyDHCP and TFTP all listen on UDP: they need distinct ports.
    seen: dict[int, str] = {}
    for key in ("dhcp", "pxe", "tftp"):
        port = getattr(ports, key)
        if port in seen:
            line = y.key_lines.get(key, y.at)
            ctx.error(line, f"{path}.{key}", f"UDP port {port} is also the {seen[port]} port")
        else:
            seen[port] = key


def _check_node(ctx: Ctx, node: NodeConfig, y: Y, path: str) -> None:
    if node.address is None and node.public_ipv4 is None and node.ipv6 is None:
        ctx.error(y.at, path, f"node {node.name!r} needs at least one of address, public_ipv4, ipv6")


def _subscripts(ctx: Ctx, y: Y, path: str) -> Any:
    """`name: path` pairs; names as in `{{ sub_url }}/<name>.ipxe`."""
    if y.kind != "map":
        raise Invalid(f"expected a mapping of subscript names to template paths, got {describe(y)}")
    out: dict[str, Path] = {}
    bad = False
    for name, sub in y.value.items():
        p = f"{path}.{name}"
        line = y.key_lines.get(name, sub.at)
        if not isinstance(name, str) or not SUBSCRIPT_NAME.fullmatch(name):
            ctx.error(line, p, f"subscript name {name!r}: 1-64 of A-Z a-z 0-9 _ -")
            bad = True
        elif name in BUILTIN_SUBSCRIPTS:
            ctx.error(line, p, f"{name!r} is a built-in subscript ({', '.join(BUILTIN_SUBSCRIPTS)})")
            bad = True
        value = convert(PathV(must_exist="file"), ctx, sub, p)
        if value is INVALID:
            bad = True
        else:
            out[name] = value
    return INVALID if bad else FrozenDict(out)


def _check_ipxe_menu(ctx: Ctx, menu: IpxeMenu, y: Y, path: str) -> None:
    """Read the menu and subscript templates now: a mistake is a FILE:LINE of the
    template at load time, not a failed boot later."""
    for key, file in [("menu", menu.menu), *((f"subscripts.{n}", f) for n, f in menu.subscripts.items())]:
        try:
            raw = file.read_bytes()[: MAX_TEMPLATE_BYTES + 1]
            if len(raw) > MAX_TEMPLATE_BYTES:
                raise ValueError(f"larger than {MAX_TEMPLATE_BYTES} bytes")
            text = raw.decode("utf-8")
        except (OSError, ValueError) as err:
            ctx.error(y.at, f"{path}.{key}", f"cannot read {file}: {err}")
            continue
        for line, message in check_menu(text, menu.subscripts):
            ctx.issues.append(ProfileIssue(str(file), line, f"{path}.{key}", message))


# --------------------------------------------------------------------------- the tables

SSH = Schema(
    (
        Field("user", User, default="root"),
        Field("identity", PathV(), default=None),
        Field("known_hosts", ListOf(PathV(), what="a list of paths")),
        Field("host_keys", Enum("strict", "accept-new"), default="strict"),
        Field("connect_timeout", Number(positive=True, what="a number of seconds"), default=5.0),
    ),
    make=SshSettings,
    what="a mapping (user, identity, known_hosts, host_keys, connect_timeout)",
)

OPERATOR = Schema(
    (
        Field("ssh", SSH, factory=SshSettings),
        Field("beachheads", ListOf(IPv4Net, what="a list of IPv4 addresses or networks", unique=True), default=()),
    ),
    make=OperatorConfig,
    what="a mapping (ssh, beachheads)",
)

JUMP = Schema(
    (
        Field("name", Name, required=True),
        Field("address", Host, required=True),
        Field("port", Port, default=22),
        Field("user", User, default=None),  # filled from operator.ssh.user
        Field("via", Ref("jumps", "jump"), default=None),
    ),
    make=JumpConfig,
    what="a jump (a mapping with name, address, ...)",
)

PORTS = Schema(
    (
        Field("dhcp", Port, default=67),
        Field("pxe", Port, default=4011),
        Field("tftp", Port, default=69),
        Field("http", Port, default=8080),
    ),
    make=Ports,
    what="a mapping (dhcp, pxe, tftp, http)",
    check=_check_ports,
)

IPXE_MENU = Schema(
    (
        Field("menu", PathV(must_exist="file"), required=True),
        Field("subscripts", _subscripts, factory=FrozenDict),
    ),
    make=IpxeMenu,
    what="a mapping (menu, subscripts)",
    check=_check_ipxe_menu,
)

DISTRIBUTOR = Schema(
    (
        Field("interface", Str(check=_check_interface, what="an interface name"), default=None),
        Field("address", BindIPv4, required=True),
        Field("ports", PORTS, factory=Ports),
        Field("enabled", Bool(), default=True),
        Field("proxy_mode", Enum("port4011", "direct"), default="port4011"),
        Field("reply_delay_ms", Int(min=0, max=10_000, what="milliseconds (an integer)"), default=0),
        Field("vendor_classes", ListOf(Str(), what="a list of strings", unique=True), default=("PXEClient", "HTTPClient")),
        Field("hold", Enum("poll", "reboot"), default="poll"),
        Field("poll_seconds", Int(min=1, max=3600, what="seconds (an integer)"), default=10),
        Field("tftp_root", PathV(), default=None),
        Field("ipxe_dir", PathV(), default=None),
        Field("ipxe", IPXE_MENU, default=None),
    ),
    make=DistributorConfig,
    what="a mapping (interface, address, ports, ...)",
)

AGENT = Schema(
    (
        Field("host", Host, required=True),
        Field("via", Ref("jumps", "jump"), default=None),
        Field("user", User, default=None),
        Field("port", Port, default=22),
        Field("command", Str(what="a command line"), default=AGENT_COMMAND),
    ),
    make=AgentConfig,
    what="a mapping (host, via, user, port, command)",
)

SITE = Schema(
    (
        Field("name", Name, required=True),
        Field("subnets", ListOf(IPv4Net, what="a list of IPv4 networks", unique=True), default=()),
        Field("jumps", ListOf(Ref("jumps", "jump"), what="a list of jump names", unique=True), default=()),
        Field("distributor", DISTRIBUTOR, default=None),
        Field("agent", AGENT, default=None),  # absent: the boot services run on this host
    ),
    make=SiteConfig,
    what="a site (a mapping with name, subnets, ...)",
)

DEPLOYMENT = Schema(
    (
        Field("name", Name, required=True),
        Field("kind", Enum("preseed", "kickstart", "cloud-init", "script"), required=True),
        Field("kernel", Str(what="a URL or path"), default=None),
        Field("initrd", Str(what="a URL or path"), default=None),
        Field("cmdline", Text(), default=""),
        Field("template", PathV(must_exist="file"), default=None),
        Field("authorized_keys", ListOf(Str(check=_check_authorized_key, what="an SSH public key"), what="a list of SSH public keys"), default=()),
        Field("post_boot", ListOf(PathV(must_exist="file"), what="a list of script paths"), default=()),
        Field("ipxe", IPXE_MENU, default=None),
    ),
    make=DeploymentConfig,
    what="a deployment (a mapping with name, kind, ...)",
)

NODE = Schema(
    (
        Field("name", Name, required=True),
        Field("site", Ref("sites", "site"), default=None),
        Field("address", PrivateIPv4, default=None),
        Field("public_ipv4", PublicIPv4, default=None),
        Field("ipv6", IPv6, default=None),
        Field("port", Port, default=22),
        Field("user", User, default=None),
        Field("labels", StrMap(key=Name, what="a mapping of label names to strings"), factory=FrozenDict),
    ),
    make=NodeConfig,
    what="a node (a mapping with name, site, address, ...)",
    check=_check_node,
)

DEMO = Schema(
    (
        Field("machines", Int(min=0, max=100_000, what="a number of machines"), default=24),
        Field("misbehave", Bool(), default=True),
        Field("install_seconds", Number(positive=True, what="a number of seconds"), default=20.0),
        Field("seed", Int(), default=1),
        Field("options", AnyMap(), factory=FrozenDict),  # free-form: the demo reads what it knows
    ),
    make=DemoConfig,
    what="a mapping (machines, misbehave, install_seconds, seed, options)",
)


def _version(ctx: Ctx, y: Y, path: str) -> Any:
    v = Int(what="the integer 1")(ctx, y, path)
    if v not in SUPPORTED_VERSIONS:
        raise Invalid(f"unsupported profile version {v} (this fleet reads version 1)")
    return v


PROFILE = Schema(
    (
        Field("version", _version, required=True),
        Field("name", Name),  # default: the file's name without .yaml
        Field("store", PathV(), default=None),
        Field("stall_after", Int(min=1, what="a number of seconds"), default=1800),
        Field("operator", OPERATOR, factory=OperatorConfig),
        Field("jumps", Named("jumps", JUMP, what="jump"), default=()),
        Field("sites", Named("sites", SITE, what="site"), default=()),
        Field("deployments", Named("deployments", DEPLOYMENT, what="deployment"), default=()),
        Field("nodes", Named("nodes", NODE, what="node"), default=()),
        Field("demo", DEMO, default=None),
    ),
    what="a mapping of profile keys (version, name, sites, ...)",
)

_KIND_WORD = {"jumps": "jump", "sites": "site", "deployments": "deployment", "nodes": "node"}


# --------------------------------------------------------------------------- checks across sections


def _check_refs(ctx: Ctx) -> None:
    for kind, name, line, path in ctx.refs:
        defined = ctx.defined.get(kind, {})
        if name in defined:
            continue
        word = _KIND_WORD.get(kind, kind)
        hint = suggest(name, defined)
        if hint:
            more = f" (did you mean {hint!r}?)"
        elif defined:
            more = f" (defined {kind}: {', '.join(defined)})"
        else:
            more = f" (no {kind} are defined)"
        ctx.error(line, path, f"unknown {word} {name!r}{more}")


def _check_via_cycles(ctx: Ctx, jumps_y: Y | None) -> None:
    if jumps_y is None or jumps_y.kind != "seq":
        return
    via: dict[str, tuple[str, int, str]] = {}
    for i, item in enumerate(jumps_y.value):
        if item.kind != "map":
            continue
        n, v = item.value.get("name"), item.value.get("via")
        if n is None or v is None or not isinstance(n.value, str) or not isinstance(v.value, str):
            continue
        via.setdefault(n.value, (v.value, v.at, f"jumps[{i}].via"))
    reported: set[str] = set()
    for start in via:  # file order
        path: list[str] = []
        cur: str | None = start
        while cur is not None and cur in via and cur not in path and cur not in reported:
            path.append(cur)
            cur = via[cur][0]
        if cur is not None and cur in path:
            cycle = path[path.index(cur) :]
            reported.update(cycle)
            first = cycle[0]
            _, line, key = via[first]
            ctx.error(line, key, "jump chain loops: " + " -> ".join(cycle + [first]))
        reported.update(path)


def _site_subnets(sites_y: Y | None) -> dict[str, tuple[ipaddress.IPv4Network, ...]]:
    """Site name -> subnets, read straight from the YAML so that a site with an
    unrelated error still has its nodes checked. Sites whose subnets do not all
    parse are left out (their own errors say why)."""
    out: dict[str, tuple[ipaddress.IPv4Network, ...]] = {}
    if sites_y is None or sites_y.kind != "seq":
        return out
    for item in sites_y.value:
        if item.kind != "map":
            continue
        name, subnets = item.value.get("name"), item.value.get("subnets")
        if name is None or not isinstance(name.value, str) or name.value in out:
            continue
        if subnets is None or subnets.kind != "seq":
            continue
        nets = []
        for sub in subnets.value:
            try:
                if sub.kind != "scalar" or not isinstance(sub.value, str):
                    raise ValueError
                nets.append(values.parse_ipv4_network(sub.value))
            except ValueError:
                break
        else:
            out[name.value] = tuple(nets)
    return out


def _check_nodes_in_sites(ctx: Ctx, nodes_y: Y | None, sites_y: Y | None) -> None:
    if nodes_y is None or nodes_y.kind != "seq":
        return
    subnets = _site_subnets(sites_y)
    for i, item in enumerate(nodes_y.value):
        if item.kind != "map":
            continue
        site, address = item.value.get("site"), item.value.get("address")
        if site is None or address is None or not subnets.get(site.value):
            continue
        try:
            addr = values.parse_ipv4(address.value if isinstance(address.value, str) else address.raw)
        except ValueError:
            continue  # reported by the field itself
        if not values.is_private_ipv4(addr):
            continue  # likewise
        nets = subnets[site.value]
        if not any(addr in net for net in nets):
            shown = ", ".join(str(n) for n in nets)
            ctx.error(address.at, f"nodes[{i}].address", f"{addr} is outside the subnets of site {site.value!r} ({shown})")


# --------------------------------------------------------------------------- entry


def _default_name(path: Path) -> str:
    stem = path.name
    for suffix in (".yaml", ".yml"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._-]", "-", stem) or "profile"


def parse_profile(text: str, path: Path | str, *, file: str | None = None) -> Profile:
    """Validate profile text as if read from `path` (relative paths resolve
    against its folder). `file` is how the file is named in messages
    (default: `path` as given). Raises ProfileError with every issue found."""
    path = Path(path)
    file = str(path) if file is None else file
    abspath = Path(path).expanduser().absolute()
    tree, issues = compose_text(text, file)
    if tree is None:
        if not issues:
            issues = [ProfileIssue(file, 1, "", "the profile is empty (expected a mapping with version: 1, name, ...)")]
        raise ProfileError(issues)
    ctx = Ctx(file=file, base=abspath.parent, issues=list(issues))
    if tree.kind != "map":
        ctx.error(tree.line, "", f"the profile must be a mapping of keys (version: 1, name: ...), got {describe(tree)}")
        raise ProfileError(_sorted(ctx.issues))

    # Another format version means other keys: say only that.
    version_y = tree.value.get("version")
    if version_y is not None and not version_y.is_null:
        n = len(ctx.issues)
        if convert(_version, ctx, version_y, "version") is INVALID and len(ctx.issues) > n:
            raise ProfileError(_sorted(ctx.issues))
        ctx.lines.clear()

    vals, _ok = PROFILE.values(ctx, tree, "")

    _check_refs(ctx)
    _check_via_cycles(ctx, tree.value.get("jumps"))
    _check_nodes_in_sites(ctx, tree.value.get("nodes"), tree.value.get("sites"))

    if ctx.issues:
        raise ProfileError(_sorted(ctx.issues))

    operator: OperatorConfig = vals["operator"]
    jumps = tuple(
        j if j.user is not None else dataclasses.replace(j, user=operator.ssh.user) for j in vals["jumps"]
    )
    return Profile(
        version=vals["version"],
        name=vals.get("name") or _default_name(path),
        path=abspath,
        store=vals["store"],
        operator=operator,
        jumps=jumps,
        sites=vals["sites"],
        deployments=vals["deployments"],
        nodes=vals["nodes"],
        demo=vals["demo"],
        stall_after=vals["stall_after"],
        lines=FrozenDict(ctx.lines),
    )


def _sorted(issues: list[ProfileIssue]) -> list[ProfileIssue]:
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: i.line)


__all__ = ["PROFILE", "SUPPORTED_VERSIONS", "parse_profile"]

"""Host-key trust: who fleet believes it is talking to.

One `Trust` per connection pool holds one parsed known_hosts object
(`TrustedHosts`, an asyncssh `SSHKnownHosts`) made of:

- the profile's `operator.ssh.known_hosts` files (plain lines, hashed lines,
  `@cert-authority` and `@revoked` markers all work; missing files are skipped);
- the keys pinned in the store for each node, as lines keyed by the **node's
  name** (a node with pinned keys is matched by them alone: a known_hosts line
  for its address cannot override a pin) (fleet connects with `host_key_alias=<node name>`, so trust follows
  the node's identity, not a recyclable address);
- keys accepted for jumps under accept-new, keyed by the jump's name.

Lines in the known_hosts files are usually keyed by address or DNS name. A
tunnelled connection has no peer address asyncssh could match them against,
so `TrustedHosts.match` also looks up each subject's addresses (registered
with `alias()`), and merges what it finds with what the name matches.

asyncssh calls `FleetClient.validate_host_public_key` only when the presented
key matched nothing. Then:

- a key is **changed** when the subject has a pinned key of the presented type,
  or the known_hosts files list a key of that type for it: always refused,
  with a message naming the subject, its address and both SHA256 fingerprints
  (event `hostkey.mismatch`);
- otherwise it is **unknown**: refused under `host_keys: strict`; under
  `accept-new` it is accepted when the subject has no pinned key at all, then
  pinned (nodes: store `host_keys`, source "accept-new"; jumps: the store's
  meta table) with event `hostkey.accepted`. A read-only engine cannot pin, so
  it refuses unknown keys even under accept-new.

The verdict is kept on the client object; the pool turns a refusal into a
`HostKeyRefused` error with that message (asyncssh's own message is generic).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import asyncssh

from fleet.core.config import agent_host_name
from fleet.core.model import Event, HostKey, Severity

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger(__name__)

JUMP_META = "jump_host_keys:"  # + jump name -> "type base64 fingerprint" lines
#: + site name -> its agent host's pinned keys, lines as JUMP_META's (a host that
#: made the key itself, like the demo, pins it here; others come from known_hosts)
AGENT_META = "agent_host_keys:"


class HostKeyRefused(Exception):
    """A host key fleet will not trust. `changed` tells a mismatch from an unknown key."""

    def __init__(self, message: str, *, changed: bool):
        super().__init__(message)
        self.changed = changed


@dataclass
class Subject:
    """What a connection is meant to reach: a node or a jump."""

    kind: str  # "node" | "jump"
    name: str
    address: str
    port: int = 22
    addresses: tuple[str, ...] = ()  # every address known_hosts lines may use
    pinned: tuple[HostKey, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


def _merge(a: tuple, b: tuple) -> tuple:
    return tuple(list(x) + [v for v in y if v not in x] for x, y in zip(a, b))


def _empty(result: tuple) -> bool:
    return not any(result[i] for i in (0, 1, 3, 5))


class TrustedHosts(asyncssh.SSHKnownHosts):
    """known_hosts that also matches a name's addresses (see module docstring)."""

    def __init__(self, text: str = ""):
        super().__init__(text)
        self.text = text  # the known_hosts files' lines, to rebuild from
        self._aliases: dict[str, tuple[str, ...]] = {}

    def alias(self, name: str, addresses: Iterable[str]) -> None:
        self._aliases[name] = tuple(a for a in addresses if a)

    def match(self, host, addr, port):
        result = super().match(host, addr, port)
        for a in self._aliases.get(host, ()):
            result = _merge(result, super().match(a, a, port))
        return result


def key_record(key: asyncssh.SSHKey, source: str, when: float) -> HostKey:
    kind, body = key.export_public_key("openssh").decode().split()[:2]
    return HostKey(key_type=kind, key=body, fingerprint=key.get_fingerprint("sha256"),
                   source=source, added_at=when)


def fingerprint_of(line: str) -> str:
    try:
        return asyncssh.import_public_key(line).get_fingerprint("sha256")
    except (asyncssh.KeyImportError, ValueError):
        return "?"


class Trust:
    def __init__(self, engine: "Engine", known: TrustedHosts, policy: str):
        self.engine = engine
        self.known = known
        self.policy = policy  # "strict" | "accept-new"
        self._loaded: set[tuple[str, str]] = set()  # (name, "type body")
        self._jump_pins: dict[str, tuple[HostKey, ...]] = {}

    @classmethod
    async def load(cls, engine: "Engine") -> "Trust":
        ssh = engine.profile.operator.ssh
        text = []
        for path in ssh.known_hosts:
            p = Path(path).expanduser()
            try:
                text.append(p.read_text())
            except FileNotFoundError:
                continue
            except OSError as err:
                log.warning("cannot read known_hosts %s: %s", p, err)
        trust = cls(engine, TrustedHosts("\n".join(text)), ssh.host_keys)
        for node in await engine.store.nodes.list():
            trust.add_pins(node.name, node.host_keys)
        for jump in engine.profile.jumps:
            pins = await jump_pins(engine, jump.name)
            trust._jump_pins[jump.name] = pins
            trust.add_pins(jump.name, pins)
        for site in engine.profile.sites:
            if site.agent is not None:
                trust.add_pins(agent_host_name(site.name), await agent_pins(engine, site.name))
        return trust

    def add_pins(self, name: str, keys: Iterable[HostKey]) -> None:
        lines = []
        for k in keys:
            if (name, k.openssh) not in self._loaded:
                self._loaded.add((name, k.openssh))
                lines.append(f"{name} {k.openssh}")
        if lines:
            self.known.load("\n".join(lines))

    def forget(self, name: str) -> None:
        """Stop trusting the keys pinned for `name` (its pins were dropped from
        the store). asyncssh cannot unload lines, so the known hosts are rebuilt
        from the known_hosts files and the remaining pins."""
        self._loaded = {(n, line) for n, line in self._loaded if n != name}
        self._jump_pins.pop(name, None)
        fresh = TrustedHosts(self.known.text)
        for other, addresses in self.known._aliases.items():
            if other != name:
                fresh.alias(other, addresses)
        if self._loaded:
            fresh.load("\n".join(f"{n} {line}" for n, line in sorted(self._loaded)))
        self.known = fresh

    async def reload_pins(self, name: str) -> None:
        """Read again what the store pins for jump or agent host `name`: another
        process (the demo starting its jump, a `trust` command) may have pinned
        it since this process loaded its trust; the next attempt then knows it."""
        eng = self.engine
        if any(j.name == name for j in eng.profile.jumps):
            pins = await jump_pins(eng, name)
            self._jump_pins[name] = pins
            self.add_pins(name, pins)
            return
        for site in eng.profile.sites:
            if site.agent is not None and agent_host_name(site.name) == name:
                self.add_pins(name, await agent_pins(eng, site.name))

    def subject_for_node(self, node, address: str, port: int) -> Subject:
        self.add_pins(node.name, node.host_keys)  # a node may have registered since
        addrs = tuple(a for a in (address, node.address, node.public_ipv4, node.ipv6) if a)
        # pinned keys are authoritative: known_hosts lines for its addresses don't count
        self.known.alias(node.name, () if node.host_keys else dict.fromkeys(addrs))
        return Subject("node", node.name, address, port, addrs, tuple(node.host_keys))

    def subject_for_jump(self, jump) -> Subject:
        pins = self._jump_pins.get(jump.name, ())
        self.known.alias(jump.name, () if pins else (jump.address,))
        return Subject("jump", jump.name, jump.address, jump.port, (jump.address,), pins)

    # -- after a connection attempt (async: store writes and events) ----------------

    async def settle(self, client: "FleetClient") -> None:
        """Pin what was accepted and record what was refused (once per attempt)."""
        verdict, client.verdict = client.verdict, None
        if verdict is None:
            return
        kind, payload = verdict
        s = client.subject
        eng = self.engine
        if kind == "accepted":
            key: HostKey = payload
            if s.kind == "node":
                async with eng.store.transaction() as tx:
                    await eng.store.nodes.pin_keys(tx, s.name, [key])
                    await eng.store.events.append(tx, [eng.event(
                        "hostkey.accepted", s.name,
                        f"accepted and pinned new host key {key.fingerprint} for node "
                        f"{s.name} ({s.address}) under host_keys: accept-new",
                        severity=Severity.WARNING, node=s.name, address=s.address,
                        key_type=key.key_type, fingerprint=key.fingerprint)])
            else:
                pins = self._jump_pins.get(s.name, ()) + (key,)
                self._jump_pins[s.name] = pins
                await store_jump_pins(eng, s.name, pins, eng.event(
                    "hostkey.accepted", s.name,
                    f"accepted and pinned new host key {key.fingerprint} for jump "
                    f"{s.name} ({s.address}) under host_keys: accept-new",
                    severity=Severity.WARNING, jump=s.name, address=s.address,
                    key_type=key.key_type, fingerprint=key.fingerprint))
        elif kind == "unknown":
            await self.reload_pins(s.name)
        elif kind == "mismatch" and not eng.read_only:
            err: HostKeyRefused = payload
            await eng.record(eng.event(
                "hostkey.mismatch", s.name, str(err), severity=Severity.ERROR,
                **{s.kind: s.name}, address=s.address, old=client.old_fingerprints,
                new=client.new_fingerprint))


#: events after which no fleet process may keep trusting (or using a connection
#: made under) the subject's pinned keys
FORGETTING_EVENTS = ("node.retired", "hostkey.forgotten")


async def pinned_keys(engine: "Engine") -> list[dict]:
    """Every pinned host key: nodes' (from call-home or accept-new) and jumps'."""
    rows = []
    for node in await engine.store.nodes.list():
        for k in node.host_keys:
            rows.append(_pin_row("node", node.name, k))
    for jump in engine.profile.jumps:
        for k in await jump_pins(engine, jump.name):
            rows.append(_pin_row("jump", jump.name, k))
    for site in engine.profile.sites:
        if site.agent is not None:
            for k in await agent_pins(engine, site.name):
                rows.append(_pin_row("agent", agent_host_name(site.name), k))
    return rows


def _pin_row(kind: str, name: str, k: HostKey) -> dict:
    return {"name": name, "kind": kind, "key_type": k.key_type, "fingerprint": k.fingerprint,
            "source": k.source, "added_at": k.added_at}


async def forget_pins(engine: "Engine", name: str) -> list[HostKey]:
    """Drop the host keys pinned for node, jump or agent host `name` (the next connection
    trusts known_hosts, or pins anew under accept-new or at call-home), with a
    `hostkey.forgotten` event; every fleet process's pool follows it. Returns
    what was dropped (nothing: no event)."""
    from fleet.errors import ReadOnly, UnknownTarget

    if engine.read_only:
        raise ReadOnly("cannot forget host keys: fleet was started with --read-only")
    node = await engine.store.nodes.get(name)
    jump = next((j for j in engine.profile.jumps if j.name == name), None)
    site = next((s.name for s in engine.profile.sites
                 if s.agent is not None and agent_host_name(s.name) == name), None)
    if node is None and jump is None and site is None:
        raise UnknownTarget(f"unknown node or jump {name!r}")
    if node is not None:
        kind, keys = "node", tuple(node.host_keys)
    elif jump is not None:
        kind, keys = "jump", await jump_pins(engine, name)
    else:
        kind, keys = "agent", await agent_pins(engine, site)
    if not keys:
        return []
    event = engine.event(
        "hostkey.forgotten", name,
        f"forgot {len(keys)} pinned host key{'s' if len(keys) != 1 else ''} of {kind} {name}: "
        + ", ".join(f"{k.key_type} {k.fingerprint}" for k in keys),
        severity=Severity.WARNING, **{kind: name},
        fingerprints=[k.fingerprint for k in keys])
    async with engine.store.transaction() as tx:
        if node is not None:
            await engine.store.nodes.unpin(tx, name)
        else:
            await engine.store.meta.set(tx, (JUMP_META + name) if jump is not None
                                        else (AGENT_META + site), "")
        await engine.store.events.append(tx, [event])
    return list(keys)


async def store_jump_pins(engine: "Engine", name: str, pins: Iterable[HostKey], event: Event) -> None:
    """Pin `pins` as jump `name`'s host keys (the store's one place for them), with
    the event that says why, in one transaction."""
    async with engine.store.transaction() as tx:
        await engine.store.meta.set(tx, JUMP_META + name, _pin_lines(pins))
        await engine.store.events.append(tx, [event])


async def jump_pins(engine: "Engine", name: str) -> tuple[HostKey, ...]:
    return await _pins(engine, JUMP_META + name)


async def store_agent_pins(engine: "Engine", site: str, pins: Iterable[HostKey],
                           event: Event) -> None:
    """Pin `pins` as the keys of site `site`'s agent host, with the event that says why."""
    async with engine.store.transaction() as tx:
        await engine.store.meta.set(tx, AGENT_META + site, _pin_lines(pins))
        await engine.store.events.append(tx, [event])


async def agent_pins(engine: "Engine", site: str) -> tuple[HostKey, ...]:
    return await _pins(engine, AGENT_META + site)


def _pin_lines(pins: Iterable[HostKey]) -> str:
    return "\n".join(f"{k.key_type} {k.key} {k.fingerprint} {k.added_at} {k.source}"
                     for k in pins)


async def _pins(engine: "Engine", meta_key: str) -> tuple[HostKey, ...]:
    raw = await engine.store.meta.get(meta_key)
    return tuple(_parse_pin(line) for line in (raw or "").splitlines() if line.strip())


def _parse_pin(line: str) -> HostKey:
    parts = line.split()
    kind, body = parts[0], parts[1]
    fp = parts[2] if len(parts) > 2 else fingerprint_of(f"{kind} {body}")
    added = float(parts[3]) if len(parts) > 3 else 0.0
    source = parts[4] if len(parts) > 4 else "accept-new"  # older lines name none
    return HostKey(kind, body, fp, source, added)


class FleetClient(asyncssh.SSHClient):
    """The asyncssh client for one connection attempt: trust, and loss notice."""

    def __init__(self, trust: Trust, subject: Subject,
                 on_lost: Callable[[Exception | None], None] | None = None):
        self.trust = trust
        self.subject = subject
        self.on_lost = on_lost
        self.verdict: tuple[str, object] | None = None
        self.refusal: HostKeyRefused | None = None
        self.old_fingerprints: list[str] = []
        self.new_fingerprint: str | None = None

    def validate_host_public_key(self, host, addr, port, key) -> bool:
        s = self.subject
        kind = key.get_algorithm()
        new_fp = key.get_fingerprint("sha256")
        self.new_fingerprint = new_fp
        old = [k.fingerprint for k in s.pinned if k.key_type == kind]
        listed = [k for k in self.trust.known.match(s.name, "", s.port if s.port != 22 else None)[0]
                  if k.get_algorithm() == kind]
        old += [k.get_fingerprint("sha256") for k in listed
                if k.get_fingerprint("sha256") not in old]
        where = f"{s.label} ({s.address}{'' if s.port == 22 else f':{s.port}'})"
        if old:
            self.old_fingerprints = old
            self.refusal = HostKeyRefused(
                f"host key CHANGED for {where}: expected {', '.join(old)}, got {new_fp} "
                f"({kind}); refusing to connect. If {s.name} was reinstalled, forget its old "
                f"key (fleet --headless trust forget {s.name}); otherwise someone may be "
                "intercepting the connection",
                changed=True)
            self.verdict = ("mismatch", self.refusal)
            return False
        if (self.trust.policy == "accept-new" and not s.pinned
                and not self.trust.engine.read_only):
            record = key_record(key, "accept-new", time.time())
            self.trust.add_pins(s.name, [record])
            self.verdict = ("accepted", record)
            return True
        why = ("host_keys is strict" if self.trust.policy == "strict" else
               "it has other pinned keys" if s.pinned else "the store is read-only")
        self.refusal = HostKeyRefused(
            f"unknown host key for {where}: {new_fp} ({kind}) is neither pinned nor in "
            f"known_hosts, and {why}; add it to known_hosts (or let the node call home)",
            changed=False)
        self.verdict = ("unknown", self.refusal)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_lost is not None:
            self.on_lost(exc)


__all__ = ["FleetClient", "HostKeyRefused", "Subject", "Trust", "TrustedHosts", "key_record"]

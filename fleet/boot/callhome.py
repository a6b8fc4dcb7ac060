"""Call-home, template and wipe tokens: what an installing machine proves and reports.

`register_callhome` is the whole of a call-home: it checks the payload, the
token and the machine, and then, in one transaction, moves the machine to
`provisioned` (the lifecycle's `CallHome`, with its "provisioned ... in" event),
registers the node and pins its SSH host keys, with `node.registered` and
`node.keys_pinned` events. Anything wrong raises a typed error after writing a
rejection event; nothing else is written then.

Token rules (see fleet.tokens for the format):
- call-home: purpose "callhome", for the machine's *current, active* lease, in
  state leased/provisioning/stalled, never used before (`token_used_at`).
- template: purpose "template", for the machine's current active lease, in
  state leased/provisioning/stalled.
- wipe (fleet.boot.wipe): purpose "wipe", numbered with the second the machine entered
  `wiping`, valid while it still is in that state.

Events never contain a token: a rejection names the lease id the token
claimed, the reason and the peer address. Their subject is the claimed
lease's MAC when that lease exists, otherwise the peer address.

The node's address is the lease's address when the operator gave one, else
the address the call-home came from (the installed system's DHCP address on
the site network; behind NAT or a proxy that would be the wrong address, so
give leases an address there). The address the node reports is kept in the
`node.registered` event only.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncssh

from fleet.core import lifecycle as lc
from fleet.core.model import Event, HostKey, Lease, Machine, MachineState, Node, Severity
from fleet.core.values import check_hostname, check_ipv4
from fleet.tokens import CALLHOME, TEMPLATE, TokenSigner
from fleet.access.trust import key_record

if TYPE_CHECKING:
    from fleet.engine import Engine

S = MachineState

INSTALL_STATES = frozenset({S.LEASED, S.PROVISIONING, S.STALLED})
MAX_HOST_KEYS = 16
MAX_KEY_LINE = 16 * 1024
TOKEN_RE = re.compile(r"[a-z0-9.]{1,100}")
PAYLOAD_FIELDS = {"token", "hostname", "address", "host_keys"}
HOST_KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-ed448", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
})


class CallhomeError(Exception):
    """A call-home, template or wipe request fleet refuses. `status` is the HTTP answer."""

    status = 400

    def __init__(self, reason: str, *, lease_id: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.lease_id = lease_id


class InvalidRequest(CallhomeError):
    """Malformed: not JSON, wrong fields, bad host keys (400)."""

    status = 400


class Rejected(CallhomeError):
    """Well-formed but not allowed: bad, used or ended token, wrong state (403)."""

    status = 403


class Conflict(CallhomeError):
    """Allowed, but registering would take another machine's node name (409)."""

    status = 409


@dataclass(frozen=True)
class Payload:
    token: str
    hostname: str
    address: str | None
    host_keys: tuple[HostKey, ...]


# -- payload ---------------------------------------------------------------------------

def parse_payload(payload: Any, now: float = 0.0) -> Payload:
    """Check a call-home body strictly; raises InvalidRequest with what is wrong."""
    if not isinstance(payload, dict):
        raise InvalidRequest("the body must be a JSON object")
    extra = set(payload) - PAYLOAD_FIELDS
    missing = {"token", "hostname", "host_keys"} - set(payload)
    if missing:
        raise InvalidRequest(f"missing fields: {', '.join(sorted(missing))}")
    if extra:
        names = ", ".join(sorted(str(k)[:40] for k in extra))
        raise InvalidRequest(f"unknown fields: {names}")
    token = payload["token"]
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise InvalidRequest("token must be a string of [a-z0-9.]")
    hostname = payload["hostname"]
    if not isinstance(hostname, str):
        raise InvalidRequest("hostname must be a string")
    try:
        hostname = check_hostname(hostname)
    except ValueError as err:
        raise InvalidRequest(str(err)) from None
    address = payload.get("address")
    if address in (None, ""):
        address = None
    elif not isinstance(address, str):
        raise InvalidRequest("address must be a string")
    else:
        try:
            address = check_ipv4(address)
        except ValueError as err:
            raise InvalidRequest(str(err)) from None
    keys = payload["host_keys"]
    if not isinstance(keys, list) or not keys:
        raise InvalidRequest("host_keys must be a non-empty list of SSH public key lines")
    if len(keys) > MAX_HOST_KEYS:
        raise InvalidRequest(f"host_keys: at most {MAX_HOST_KEYS} keys")
    parsed: dict[str, HostKey] = {}
    for i, line in enumerate(keys, 1):
        key = parse_host_key(line, i, now)
        old = parsed.get(key.key_type)
        if old is not None and old.key != key.key:
            raise InvalidRequest(f"host_keys: two different {key.key_type} keys")
        parsed[key.key_type] = key
    return Payload(token, hostname, address, tuple(parsed.values()))


def parse_host_key(line: Any, index: int = 1, now: float = 0.0) -> HostKey:
    """`"ssh-ed25519 AAAA... comment"` -> HostKey with its SHA256 fingerprint."""
    if not isinstance(line, str) or not line.strip():
        raise InvalidRequest(f"host key {index} must be a non-empty string")
    if len(line) > MAX_KEY_LINE or not line.isascii():
        raise InvalidRequest(f"host key {index} is too long or not ASCII")
    parts = line.split()
    if len(parts) < 2:
        raise InvalidRequest(f"host key {index} is not '<type> <base64> [comment]'")
    key_type, body = parts[0], parts[1]
    if key_type not in HOST_KEY_TYPES:
        raise InvalidRequest(f"host key {index}: unsupported key type {key_type[:40]!r}")
    try:
        key = asyncssh.import_public_key(f"{key_type} {body}")
    except (asyncssh.KeyImportError, ValueError, TypeError) as err:
        raise InvalidRequest(f"host key {index} is not a valid {key_type} key: {err}") from None
    if key.get_algorithm() != key_type:
        raise InvalidRequest(f"host key {index}: the body is a {key.get_algorithm()} key, "
                             f"not {key_type}")
    return key_record(key, "callhome", now)


# -- rejections ------------------------------------------------------------------------

class RejectionLimiter:
    """At most `burst` rejection events per peer per `window` seconds; more are only
    logged, so a scanner cannot flood the event log."""

    def __init__(self, burst: int = 30, window: float = 60.0):
        self.burst = burst
        self.window = window
        self._seen: dict[str, list[float]] = {}

    def allow(self, peer: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if len(self._seen) > 10_000:
            self._seen.clear()
        times = [t for t in self._seen.get(peer, []) if now - t < self.window]
        allowed = len(times) < self.burst
        if allowed:
            times.append(now)
        self._seen[peer] = times
        return allowed


async def record_rejection(engine: "Engine", kind: str, err: CallhomeError, peer: str,
                           subject: str | None = None, *, what: str,
                           limiter: RejectionLimiter | None = None) -> None:
    if limiter is not None and not limiter.allow(peer):
        return
    claimed = f" (claimed lease {err.lease_id})" if err.lease_id is not None else ""
    data: dict[str, Any] = {"reason": err.reason, "peer": peer, "status": err.status}
    if err.lease_id is not None:
        data["lease_id"] = err.lease_id
    event = engine.event(kind, subject or peer, f"{what} from {peer} refused{claimed}: "
                                                f"{err.reason}",
                         severity=Severity.WARNING, **data)
    await engine.record(event)


async def subject_of(engine: "Engine", lease_id: int | None) -> str | None:
    if lease_id is None:
        return None
    lease = await engine.store.leases.get(lease_id)
    return lease.mac if lease is not None and lease.deployment else None


# -- tokens ----------------------------------------------------------------------------

async def _lease_for(engine: "Engine", token: str, purpose: str) -> tuple[Lease, Machine]:
    """The active lease and its machine a token is for, or Rejected."""
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise Rejected("malformed token")
    lease_id = TokenSigner.lease_id_of(token)
    if lease_id is None:
        raise Rejected("malformed token")
    lease = await engine.store.leases.get(lease_id)
    if lease is None or not lease.deployment:
        raise Rejected("no such lease", lease_id=lease_id)
    if not engine.tokens.verify(token, lease.id, lease.mac, purpose):
        raise Rejected("token does not match its lease", lease_id=lease_id)
    if not lease.active:
        raise Rejected("the lease has ended", lease_id=lease_id)
    machine = await engine.store.machines.get(lease.mac)
    if machine is None or machine.lease is None or machine.lease.id != lease.id:
        raise Rejected("the lease is not the machine's current lease", lease_id=lease_id)
    return lease, machine


async def machine_for_template(engine: "Engine", token: str) -> Machine:
    """The machine whose installer may fetch its template with `token` (else Rejected)."""
    lease, machine = await _lease_for(engine, token, TEMPLATE)
    if machine.state not in INSTALL_STATES:
        raise Rejected(f"the machine is {machine.state.value}", lease_id=lease.id)
    return machine


def template_token(engine: "Engine", machine: Machine) -> str:
    if machine.lease is None:
        raise ValueError(f"{machine.mac} has no lease")
    return engine.tokens.issue(machine.lease.id, machine.mac, TEMPLATE)


# -- call-home -------------------------------------------------------------------------

async def register_callhome(engine: "Engine", payload: dict, peer: str, *, site: str | None = None,
                            limiter: RejectionLimiter | None = None) -> Node:
    """Apply a call-home: the machine becomes provisioned and a registered node with
    pinned host keys, in one transaction. Raises InvalidRequest or Rejected (after
    recording a `callhome.invalid` / `callhome.rejected` event)."""
    try:
        body = parse_payload(payload, engine.clock())
    except InvalidRequest as err:
        await record_rejection(engine, "callhome.invalid", err, peer, what="call-home",
                               limiter=limiter)
        raise
    try:
        return await _register(engine, body, peer, site)
    except CallhomeError as err:
        subject = await subject_of(engine, err.lease_id)
        await record_rejection(engine, "callhome.rejected", err, peer, subject,
                               what="call-home", limiter=limiter)
        raise


async def _register(engine: "Engine", body: Payload, peer: str, site: str | None) -> Node:
    store = engine.store
    async with store.transaction() as tx:
        now = engine.clock()
        lease, machine = await _lease_for(engine, body.token, CALLHOME)
        if lease.token_used_at is not None or machine.state is S.PROVISIONED:
            raise Rejected("the token was already used", lease_id=lease.id)
        if machine.state not in INSTALL_STATES:
            raise Rejected(f"the machine is {machine.state.value}", lease_id=lease.id)
        try:
            transition = lc.apply(machine, lc.CallHome(), now)
        except lc.IllegalTransition as err:
            raise Rejected(str(err), lease_id=lease.id) from None
        name = lease.hostname
        address = lease.address or _peer_ipv4(peer)
        old = await store.nodes.get(name)
        if old is not None and old.source == "callhome" and old.mac and old.mac != machine.mac:
            other = await store.machines.get(old.mac)
            if (other is not None and other.state is S.PROVISIONED and other.lease is not None
                    and other.lease.hostname == name):
                raise Conflict(f"node {name} belongs to provisioned machine {other.mac}; "
                               f"release it or lease this machine under another name",
                               lease_id=lease.id)
        node = Node(name=name, site=site or machine.distributor, address=address,
                    labels={"deployment": lease.deployment}, source="callhome", mac=machine.mac,
                    registered_at=now)
        keys = tuple(HostKey(k.key_type, k.key, k.fingerprint, "callhome", now)
                     for k in body.host_keys)
        await store.machines.save(tx, transition.machine)
        await store.nodes.save(tx, node)
        # booting until it answers SSH (liveness checks it within seconds)
        await store.nodes.start_booting(tx, name, now)
        await store.nodes.pin_keys(tx, name, keys, replace_all=True)
        replaced = f"; replaces the {old.source} node of that name" if old else ""
        where = f" at {address}" if address else ""
        fingerprints = [k.fingerprint for k in keys]
        events: list[Event] = list(transition.events)
        events.append(engine.event(
            "node.registered", name,
            f"{name} registered by call-home ({machine.mac}{where}, {lease.deployment})"
            f"{replaced}",
            mac=machine.mac, address=address, site=node.site, deployment=lease.deployment,
            lease_id=lease.id, peer=peer, reported_address=body.address,
            reported_hostname=body.hostname, replaced=old.source if old else None))
        events.append(engine.event(
            "node.keys_pinned", name,
            f"{len(keys)} host key{'s' if len(keys) != 1 else ''} pinned for {name}: "
            + ", ".join(f"{k.key_type} {k.fingerprint}" for k in keys),
            fingerprints=fingerprints, key_types=[k.key_type for k in keys], source="callhome"))
        await store.events.append(tx, events)
    return await store.nodes.get(name)


def _peer_ipv4(peer: str) -> str | None:
    text = peer[7:] if peer.startswith("::ffff:") else peer
    try:
        return check_ipv4(text)
    except ValueError:
        return None

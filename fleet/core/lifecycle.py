"""The machine lifecycle as an explicit state machine.

    discovered -> leased -> provisioning -> provisioned
    release:  any leased/failed/stalled state -> discovered, or -> wiping -> discovered
              (a discovered machine: no change, or a deliberate wipe; a plain
              release of a machine waiting to be wiped cancels the wipe)
    failed (with a reason), stalled (no progress in time)

`apply(machine, op, now)` is pure: it returns the new machine and the events the
change produced, or raises IllegalTransition with a message fit for an operator.
Every operation is idempotent: firmware asks the same question several times per
boot and scripts retry, so repeating an operation that already took effect
returns the machine unchanged and no events.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fleet.core.durations import format_duration
from fleet.core.model import Event, Lease, Machine, MachineState, Severity

S = MachineState


class IllegalTransition(ValueError):
    """The operation makes no sense in the machine's current state."""


@dataclass(frozen=True)
class LeaseOp:
    lease_id: int
    deployment: str
    hostname: str
    address: str | None = None


@dataclass(frozen=True)
class InstallStarted:
    """The machine fetched its install script."""


@dataclass(frozen=True)
class CallHome:
    """The installed machine called home with its lease's token (checked by the caller)."""


@dataclass(frozen=True)
class Release:
    wipe: bool = False


@dataclass(frozen=True)
class WipeDone:
    """The wiper reported the disks clear (`detail`: what it cleared, for the event)."""

    detail: str = ""
    disks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fail:
    reason: str


@dataclass(frozen=True)
class Stall:
    reason: str


Operation = LeaseOp | InstallStarted | CallHome | Release | WipeDone | Fail | Stall


@dataclass(frozen=True)
class Transition:
    machine: Machine
    events: tuple[Event, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.events)


@dataclass(frozen=True)
class Released:
    """What a release did, for whoever asked: the machine as it is now, whether
    anything changed, one line to show, and the node it retired (its name; None
    when the machine had no registered node)."""

    machine: Machine
    changed: bool
    message: str
    retired: str | None = None


def discover(mac: str, now: float, **facts) -> Transition:
    """A machine seen for the first time."""
    machine = Machine(mac=mac, state=S.DISCOVERED, state_since=now,
                      first_seen=now, last_seen=now, **facts)
    vendor = f" ({machine.nic_vendor})" if machine.nic_vendor else ""
    return Transition(machine, (
        _event("machine.discovered", machine, now,
               f"new machine {mac}{vendor}, {machine.arch.label}",
               arch=machine.arch.value, stage=machine.stage),
    ))


def apply(machine: Machine, op: Operation, now: float) -> Transition:
    handler = _HANDLERS[type(op)]
    return handler(machine, op, now)


def _lease(m: Machine, op: LeaseOp, now: float) -> Transition:
    if m.state in (S.LEASED, S.PROVISIONING, S.PROVISIONED) and m.lease is not None:
        same = (m.lease.deployment, m.lease.hostname, m.lease.address) == (
            op.deployment, op.hostname, op.address)
        if same:
            return Transition(m)
        raise IllegalTransition(
            f"{m.mac} is already leased to {m.lease.deployment} as {m.lease.hostname} "
            f"({m.state.value}); release it first")
    if m.state is not S.DISCOVERED:
        raise IllegalTransition(
            f"{m.mac} is {m.state.value}; only a discovered machine can be leased "
            f"(release it first)")
    lease = Lease(id=op.lease_id, mac=m.mac, deployment=op.deployment,
                  hostname=op.hostname, address=op.address, created_at=now)
    new = replace(m, state=S.LEASED, state_since=now, reason=None, lease=lease)
    where = f" at {op.address}" if op.address else ""
    return Transition(new, (
        _event("machine.leased", new, now,
               f"{m.mac} leased to {op.deployment} as {op.hostname}{where}",
               deployment=op.deployment, hostname=op.hostname, address=op.address,
               lease_id=op.lease_id),
    ))


def _install_started(m: Machine, op: InstallStarted, now: float) -> Transition:
    if m.state in (S.PROVISIONING, S.PROVISIONED):
        return Transition(m)
    if m.state not in (S.LEASED, S.STALLED) or m.lease is None:
        raise IllegalTransition(f"{m.mac} is {m.state.value}; it has no install to start")
    lease = replace(m.lease, install_started_at=m.lease.install_started_at or now)
    new = replace(m, state=S.PROVISIONING, state_since=now, reason=None, lease=lease)
    waited = format_duration(now - m.lease.created_at)
    return Transition(new, (
        _event("machine.provisioning", new, now,
               f"{m.lease.hostname} ({m.mac}) started installing {lease.deployment}, "
               f"{waited} after its lease",
               deployment=lease.deployment, hostname=lease.hostname,
               since_lease=now - m.lease.created_at),
    ))


def _call_home(m: Machine, op: CallHome, now: float) -> Transition:
    if m.state is S.PROVISIONED:
        return Transition(m)
    if m.state not in (S.LEASED, S.PROVISIONING, S.STALLED) or m.lease is None:
        raise IllegalTransition(f"{m.mac} is {m.state.value}; a call-home is not expected")
    started = m.lease.install_started_at or m.lease.created_at
    lease = replace(m.lease, completed_at=now, token_used_at=now)
    new = replace(m, state=S.PROVISIONED, state_since=now, reason=None, lease=lease)
    took = now - started
    return Transition(new, (
        _event("machine.provisioned", new, now,
               f"{lease.hostname} ({m.mac}) provisioned {lease.deployment} in "
               f"{format_duration(took)}",
               deployment=lease.deployment, hostname=lease.hostname, duration=took),
    ))


def _release(m: Machine, op: Release, now: float) -> Transition:
    """Without a lease there is nothing to release (no change), except that
    `wipe` asks for a deliberate wipe, and a plain release of a machine waiting
    to be wiped cancels the wipe."""
    if op.wipe and m.state is S.WIPING:
        return Transition(m)
    if not op.wipe and m.state is S.DISCOVERED:
        return Transition(m)
    lease = m.lease
    target = S.WIPING if op.wipe else S.DISCOVERED
    new = replace(m, state=target, state_since=now, reason=None, lease=None)
    common = dict(wipe=op.wipe, previous=m.state.value,
                  lease_id=lease.id if lease else None,
                  hostname=lease.hostname if lease else None)
    if m.state is S.WIPING:
        return Transition(new, (
            _event("machine.wipe_cancelled", new, now,
                   f"{m.mac}: wipe cancelled; back in the pool", **common),))
    held = ""
    if lease is not None:
        held = f" after {format_duration(now - lease.created_at)} as {lease.hostname}"
    if op.wipe and lease is None:
        text = f"{m.mac} held no lease; its next boot wipes it"
    else:
        then = "; its next boot wipes it" if op.wipe else "; back in the pool"
        text = f"{m.mac} released{held}{then}"
    return Transition(new, (
        _event("machine.wiping" if op.wipe else "machine.released", new, now, text, **common),
    ))


def _wipe_done(m: Machine, op: WipeDone, now: float) -> Transition:
    if m.state is S.DISCOVERED:
        return Transition(m)
    if m.state is not S.WIPING:
        raise IllegalTransition(f"{m.mac} is {m.state.value}; it was not being wiped")
    new = replace(m, state=S.DISCOVERED, state_since=now)
    detail = f" ({op.detail})" if op.detail else ""
    return Transition(new, (
        _event("machine.wiped", new, now,
               f"{m.mac} wiped in {format_duration(now - m.state_since)}{detail}; "
               f"back in the pool",
               duration=now - m.state_since, disks=list(op.disks) or None),
    ))


def _fail(m: Machine, op: Fail, now: float) -> Transition:
    if m.state is S.FAILED and m.reason == op.reason:
        return Transition(m)
    if m.state not in (S.LEASED, S.PROVISIONING, S.WIPING, S.STALLED, S.FAILED):
        raise IllegalTransition(f"{m.mac} is {m.state.value}; nothing is in progress to fail")
    new = replace(m, state=S.FAILED, state_since=now, reason=op.reason)
    return Transition(new, (
        _event("machine.failed", new, now, f"{m.mac} failed: {op.reason}",
               severity=Severity.ERROR, reason=op.reason, previous=m.state.value),
    ))


def _stall(m: Machine, op: Stall, now: float) -> Transition:
    if m.state is S.STALLED:
        return Transition(m)
    if m.state not in (S.LEASED, S.PROVISIONING, S.WIPING):
        raise IllegalTransition(f"{m.mac} is {m.state.value}; nothing is in progress to stall")
    new = replace(m, state=S.STALLED, state_since=now, reason=op.reason)
    return Transition(new, (
        _event("machine.stalled", new, now, f"{m.mac} stalled: {op.reason}",
               severity=Severity.WARNING, reason=op.reason, previous=m.state.value),
    ))


_HANDLERS = {
    LeaseOp: _lease,
    InstallStarted: _install_started,
    CallHome: _call_home,
    Release: _release,
    WipeDone: _wipe_done,
    Fail: _fail,
    Stall: _stall,
}


def _event(kind: str, m: Machine, now: float, message: str, *,
           severity: Severity = Severity.INFO, **data) -> Event:
    data = {k: v for k, v in data.items() if v is not None}
    data["state"] = m.state.value
    return Event(kind=kind, subject=m.mac, message=message, ts=now,
                 severity=severity, data=data)


def is_consistent(m: Machine) -> bool:
    """The invariant every reachable machine satisfies."""
    if m.state in (S.LEASED, S.PROVISIONING, S.PROVISIONED):
        return m.lease is not None and m.lease.active
    if m.state in (S.DISCOVERED, S.WIPING):
        return m.lease is None
    if m.state in (S.FAILED, S.STALLED):
        return m.reason is not None
    return False

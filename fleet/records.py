"""Domain objects as flat records with stable field names (the JSON contract),
and the time formatting they use. Both faces print them: the headless CLI as
tables and JSON, the console in its panes and details."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from fleet.core.durations import format_duration
from fleet.core.model import (Distributor, Event, FirmwareArch, HostKey, Job, Lease, Machine,
                              MachineState, Node, Reachability)


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds (the JSON form), None for no time."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def from_iso(text: str | None) -> float | None:
    """The time `iso` wrote (None stays None)."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def clock(ts: float | None) -> str:
    """10:42:07 today, else 2026-12-05 10:42:07 (local time): when a site was
    last heard from, when it went away."""
    if ts is None:
        return "?"
    moment = datetime.fromtimestamp(ts)
    return moment.strftime("%H:%M:%S" if moment.date() == datetime.now().date()
                           else "%Y-%m-%d %H:%M:%S")


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    return format_duration((now or time.time()) - ts) + " ago"


def local(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def machine(m: Machine, now: float | None = None) -> dict[str, Any]:
    now = now or time.time()
    lease = m.lease
    return {
        "mac": m.mac,
        "state": m.state.value,
        "vendor": m.nic_vendor,
        "arch": m.arch.value,
        "arch_label": m.arch.label,
        "first_seen": iso(m.first_seen),
        "last_seen": iso(m.last_seen),
        "seen_ago_s": round(now - m.last_seen, 3),
        "state_since": iso(m.state_since),
        "distributor": m.distributor,
        "interface": m.interface,
        "uuid": m.uuid,
        "vendor_class": m.vendor_class,
        "stage": m.stage,
        "ipxe_version": m.ipxe_version,
        "last_ip": m.last_ip,
        "reason": m.reason,
        "deployment": lease.deployment if lease else None,
        "hostname": lease.hostname if lease else None,
        "address": lease.address if lease else None,
        "lease_id": lease.id if lease else None,
        "info": dict(m.info),
        # table-only helpers
        "_first": local(m.first_seen),
        "_since": ago(m.last_seen, now),
    }


def machine_from(record: dict[str, Any]) -> Machine:
    """The machine a `machine` record describes (a remote site's, as its agent
    sent it). What records leave out stays at its default: the lease's times."""
    lease = None
    if record.get("lease_id") is not None:
        lease = Lease(id=record["lease_id"], mac=record["mac"],
                      deployment=record["deployment"], hostname=record["hostname"],
                      address=record.get("address"), created_at=0.0)
    return Machine(
        mac=record["mac"], state=MachineState(record["state"]),
        state_since=from_iso(record.get("state_since")) or 0.0,
        first_seen=from_iso(record.get("first_seen")) or 0.0,
        last_seen=from_iso(record.get("last_seen")) or 0.0, uuid=record.get("uuid"),
        arch=_arch(record.get("arch")), vendor_class=record.get("vendor_class"),
        nic_vendor=record.get("vendor"), ipxe_version=record.get("ipxe_version"),
        distributor=record.get("distributor"), interface=record.get("interface"),
        last_ip=record.get("last_ip"), stage=record.get("stage"), reason=record.get("reason"),
        info=dict(record.get("info") or {}), lease=lease)


def _arch(value: str | None) -> FirmwareArch:
    try:
        return FirmwareArch(value)
    except ValueError:
        return FirmwareArch.UNKNOWN


MACHINE_COLUMNS = [("mac", "mac address"), ("vendor", "hardware vendor"),
                   ("arch_label", "arch"), ("state", "state"), ("_first", "time seen"),
                   ("_since", "time since"), ("distributor", "distributor"),
                   ("deployment", "deployment"), ("hostname", "hostname")]


def node(n: Node) -> dict[str, Any]:
    return {
        "name": n.name,
        "site": n.site,
        "address": n.address,
        "public_ipv4": n.public_ipv4,
        "ipv6": n.ipv6,
        "port": n.port,
        "user": n.user,
        "labels": dict(n.labels),
        "source": n.source,
        "mac": n.mac,
        "registered_at": iso(n.registered_at),
        "reachability": n.reachability.value,
        "last_seen": iso(n.last_seen),
        "last_error": n.last_error,
        "host_keys": [k.fingerprint for k in n.host_keys],
        # the pinned keys themselves (public): a console reaching a remote site's
        # node checks it against them as the site does
        "host_public_keys": [k.openssh for k in n.host_keys],
    }


def node_from(record: dict[str, Any]) -> Node:
    """The node a `node` record describes (a remote site's), with the host keys
    the site pinned for it."""
    try:
        reachability = Reachability(record.get("reachability"))
    except ValueError:
        reachability = Reachability.UNKNOWN
    return Node(
        name=record["name"], site=record.get("site"), address=record.get("address"),
        public_ipv4=record.get("public_ipv4"), ipv6=record.get("ipv6"),
        port=record.get("port") or 22, user=record.get("user"),
        labels=dict(record.get("labels") or {}), source=record.get("source") or "callhome",
        mac=record.get("mac"), registered_at=from_iso(record.get("registered_at")),
        reachability=reachability, last_seen=from_iso(record.get("last_seen")),
        last_error=record.get("last_error"), host_keys=_host_keys(record))


def _host_keys(record: dict[str, Any]) -> tuple[HostKey, ...]:
    keys = record.get("host_public_keys") or []
    prints = record.get("host_keys") or []
    out = []
    for text, fingerprint in zip(keys, prints):
        key_type, _, body = str(text).partition(" ")
        if key_type and body:
            out.append(HostKey(key_type, body.strip(), str(fingerprint), "site"))
    return tuple(out)


NODE_COLUMNS = [("name", "name"), ("site", "site"), ("address", "address"),
                ("public_ipv4", "public ipv4"), ("ipv6", "ipv6"),
                ("reachability", "reachable"), ("source", "source"), ("labels", "labels")]


def event(e: Event) -> dict[str, Any]:
    return {"id": e.id, "ts": iso(e.ts), "kind": e.kind, "subject": e.subject,
            "severity": e.severity.value, "message": e.message, "data": dict(e.data)}


def distributor_from(record: dict[str, Any]) -> Distributor:
    """The distributor a `distributor` record describes (a remote site's)."""
    return Distributor(name=record["name"], site=record.get("site") or record["name"],
                       address=record.get("address") or "", interface=record.get("interface"),
                       enabled=bool(record.get("enabled")),
                       artifacts=tuple(record.get("artifacts") or ()))


def event_line(e: Event) -> str:
    return f"{local(e.ts)}  {e.severity.value:<7}  {e.kind:<22}  {e.message}"


def distributor(d: Distributor, machines_seen: int = 0) -> dict[str, Any]:
    return {"name": d.name, "site": d.site, "address": d.address, "interface": d.interface,
            "enabled": d.enabled, "artifacts": list(d.artifacts),
            "machines_seen": machines_seen}


DISTRIBUTOR_COLUMNS = [("name", "name"), ("site", "site"), ("interface", "interface"),
                       ("address", "address"), ("enabled", "on"),
                       ("machines_seen", "machines seen"), ("artifacts", "artifacts")]


def job(j: Job, now: float | None = None) -> dict[str, Any]:
    now = now or time.time()
    end = j.finished_at or now
    duration = end - j.started_at if j.started_at else None
    return {"id": j.id, "kind": j.kind, "state": j.state.value, "progress": j.progress,
            "phase": j.phase, "inputs": dict(j.inputs), "created_at": iso(j.created_at),
            "started_at": iso(j.started_at), "finished_at": iso(j.finished_at),
            "duration_s": round(duration, 3) if duration is not None else None,
            "result": j.result, "error": j.error,
            "_progress": f"{int(j.progress * 100)}%",
            "_duration": format_duration(duration) if duration is not None else "-"}


JOB_COLUMNS = [("id", "id"), ("kind", "kind"), ("state", "state"), ("_progress", "progress"),
               ("phase", "phase"), ("_duration", "duration"), ("error", "error")]

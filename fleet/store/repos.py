"""Repositories: the only place that knows the SQL for each entity.

Methods that write take the connection of an open transaction (`tx`), so a
caller composes several writes into one atomic change:

    async with store.transaction() as tx:
        await store.machines.save(tx, machine)
        await store.events.append(tx, events)
"""

from __future__ import annotations

import json
from enum import Enum
from typing import TYPE_CHECKING, Any, Iterable

from fleet.core.arch import FirmwareArch
from fleet.core.model import (Artifact, Event, HostKey, Job, JobState, Lease, Machine,
                              MachineState, Node, Reachability, Severity)
from fleet.store.on_behalf import appended, stamped

if TYPE_CHECKING:
    import aiosqlite

    from fleet.store.db import Store


class _Repo:
    def __init__(self, store: "Store"):
        self.store = store


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# -- machines and leases -------------------------------------------------------

_MACHINE_COLUMNS = ("mac", "state", "state_since", "first_seen", "last_seen", "uuid",
                    "arch", "vendor_class", "nic_vendor", "ipxe_version", "ipxe_busid",
                    "distributor", "interface", "last_ip", "stage", "reason", "info",
                    "lease_id")

_MACHINE_SELECT = (
    "SELECT m.*, l.id AS l_id, l.deployment AS l_deployment, l.hostname AS l_hostname, "
    "l.address AS l_address, l.created_at AS l_created_at, "
    "l.install_started_at AS l_install_started_at, l.completed_at AS l_completed_at, "
    "l.ended_at AS l_ended_at, l.token_used_at AS l_token_used_at "
    "FROM machines m LEFT JOIN leases l ON l.id = m.lease_id")


def _lease_from(row, prefix: str = "") -> Lease:
    return Lease(id=row[prefix + "id"], mac=row["mac"], deployment=row[prefix + "deployment"],
                 hostname=row[prefix + "hostname"], address=row[prefix + "address"],
                 created_at=row[prefix + "created_at"],
                 install_started_at=row[prefix + "install_started_at"],
                 completed_at=row[prefix + "completed_at"], ended_at=row[prefix + "ended_at"],
                 token_used_at=row[prefix + "token_used_at"])


_STATES = {s.value: s for s in MachineState}  # dict lookups: Enum() is slow at 10k rows
_ARCHES = {a.value: a for a in FirmwareArch}


def _json_map(text: str) -> dict:
    return {} if text == "{}" else json.loads(text)


def _machine_from(row) -> Machine:
    lease = _lease_from(row, "l_") if row["l_id"] is not None else None
    return Machine(
        mac=row["mac"], state=_STATES[row["state"]], state_since=row["state_since"],
        first_seen=row["first_seen"], last_seen=row["last_seen"], uuid=row["uuid"],
        arch=_ARCHES[row["arch"]], vendor_class=row["vendor_class"],
        nic_vendor=row["nic_vendor"], ipxe_version=row["ipxe_version"],
        ipxe_busid=row["ipxe_busid"], distributor=row["distributor"],
        interface=row["interface"], last_ip=row["last_ip"], stage=row["stage"],
        reason=row["reason"], info=_json_map(row["info"]), lease=lease)


class MachineRepo(_Repo):
    async def get(self, mac: str) -> Machine | None:
        row = await self.store.fetchone(_MACHINE_SELECT + " WHERE m.mac = ?", (mac,))
        return _machine_from(row) if row else None

    async def list(self, state: MachineState | None = None) -> list[Machine]:
        if state is None:
            rows = await self.store.fetchall(_MACHINE_SELECT + " ORDER BY m.first_seen, m.mac")
        else:
            rows = await self.store.fetchall(
                _MACHINE_SELECT + " WHERE m.state = ? ORDER BY m.first_seen, m.mac",
                (state.value,))
        return [_machine_from(r) for r in rows]

    async def count(self) -> int:
        return (await self.store.fetchone("SELECT count(*) FROM machines"))[0]

    async def first(self, limit: int) -> list[Machine]:
        """The first `limit` machines by MAC (a console's first screen)."""
        rows = await self.store.fetchall(_MACHINE_SELECT + " ORDER BY m.mac LIMIT ?", (limit,))
        return [_machine_from(r) for r in rows]

    async def states(self) -> dict[str, MachineState]:
        """MAC -> state for every machine: what the boot hot path's view needs."""
        rows = await self.store.fetchall("SELECT mac, state FROM machines")
        return {r[0]: _STATES[r[1]] for r in rows}

    async def save(self, tx: "aiosqlite.Connection", m: Machine) -> None:
        """Insert or replace the machine and its current lease."""
        if m.lease is not None:
            await self.store.leases.save(tx, m.lease)
        values = (m.mac, m.state.value, m.state_since, m.first_seen, m.last_seen, m.uuid,
                  m.arch.value, m.vendor_class, m.nic_vendor, m.ipxe_version, m.ipxe_busid,
                  m.distributor, m.interface, m.last_ip, m.stage, m.reason, _json(dict(m.info)),
                  m.lease.id if m.lease else None)
        placeholders = ",".join("?" * len(_MACHINE_COLUMNS))
        await tx.execute(
            f"INSERT OR REPLACE INTO machines ({','.join(_MACHINE_COLUMNS)}) "
            f"VALUES ({placeholders})", values)

    async def touch(self, tx: "aiosqlite.Connection",
                    sightings: Iterable[tuple[str, float, dict[str, Any]]]) -> None:
        """Record later sightings of known machines: last_seen and what they said."""
        for mac, ts, facts in sightings:
            sets = ["last_seen = max(last_seen, ?)"]
            params: list[Any] = [ts]
            for column in ("uuid", "vendor_class", "ipxe_version", "ipxe_busid",
                           "distributor", "interface", "last_ip", "stage", "arch"):
                value = facts.get(column)
                if value is not None:
                    sets.append(f"{column} = ?")
                    params.append(value.value if isinstance(value, Enum) else value)
            if facts.get("info"):
                sets.append("info = json_patch(info, ?)")
                params.append(_json(facts["info"]))
            params.append(mac)
            await tx.execute(f"UPDATE machines SET {', '.join(sets)} WHERE mac = ?", params)


class LeaseRepo(_Repo):
    async def new_id(self, tx: "aiosqlite.Connection", mac: str, created_at: float) -> int:
        """Reserve a lease id inside the caller's transaction."""
        cur = await tx.execute(
            "INSERT INTO leases (mac, deployment, hostname, created_at) VALUES (?, '', '', ?)",
            (mac, created_at))
        return cur.lastrowid

    async def save(self, tx: "aiosqlite.Connection", lease: Lease) -> None:
        await tx.execute(
            "INSERT OR REPLACE INTO leases (id, mac, deployment, hostname, address, created_at, "
            "install_started_at, completed_at, ended_at, token_used_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (lease.id, lease.mac, lease.deployment, lease.hostname, lease.address,
             lease.created_at, lease.install_started_at, lease.completed_at, lease.ended_at,
             lease.token_used_at))

    async def end(self, tx: "aiosqlite.Connection", lease_id: int, ended_at: float) -> None:
        await tx.execute("UPDATE leases SET ended_at = ? WHERE id = ? AND ended_at IS NULL",
                         (ended_at, lease_id))

    async def holder(self, tx: "aiosqlite.Connection", hostname: str,
                     other_than: str) -> tuple[str, str] | None:
        """(mac, deployment) of another machine whose current lease uses `hostname`."""
        rows = await tx.execute_fetchall(
            "SELECT m.mac, l.deployment FROM machines m JOIN leases l ON l.id = m.lease_id "
            "WHERE l.hostname = ? AND m.mac != ? ORDER BY m.mac LIMIT 1", (hostname, other_than))
        return (rows[0][0], rows[0][1]) if rows else None

    async def get(self, lease_id: int) -> Lease | None:
        row = await self.store.fetchone("SELECT * FROM leases WHERE id = ?", (lease_id,))
        return _lease_from(row) if row else None

    async def history(self, mac: str) -> list[Lease]:
        rows = await self.store.fetchall(
            "SELECT * FROM leases WHERE mac = ? AND deployment != '' ORDER BY id", (mac,))
        return [_lease_from(r) for r in rows]


# -- nodes ---------------------------------------------------------------------

class NodeRepo(_Repo):
    async def get(self, name: str) -> Node | None:
        row = await self.store.fetchone("SELECT * FROM nodes WHERE name = ?", (name,))
        if row is None:
            return None
        keys = await self._keys([name])
        return _node_from(row, keys.get(name, ()))

    async def list(self) -> list[Node]:
        rows = await self.store.fetchall("SELECT * FROM nodes ORDER BY name")
        keys = await self._keys(None)
        return [_node_from(r, keys.get(r["name"], ())) for r in rows]

    async def first(self, limit: int) -> list[Node]:
        """The first `limit` nodes by name (a console's first screen)."""
        rows = await self.store.fetchall("SELECT * FROM nodes ORDER BY name LIMIT ?", (limit,))
        found = await self.store.fetchall(
            "SELECT * FROM host_keys WHERE node IN (SELECT name FROM nodes ORDER BY name "
            "LIMIT ?) ORDER BY node, key_type", (limit,))
        keys: dict[str, list[HostKey]] = {}
        for r in found:
            keys.setdefault(r["node"], []).append(HostKey(
                key_type=r["key_type"], key=r["key"], fingerprint=r["fingerprint"],
                source=r["source"], added_at=r["added_at"]))
        return [_node_from(r, tuple(keys.get(r["name"], ()))) for r in rows]

    async def count(self) -> int:
        return (await self.store.fetchone("SELECT count(*) FROM nodes"))[0]

    async def sources(self) -> dict[str, str]:
        """name -> source ("profile", "callhome"...) without loading every node."""
        rows = await self.store.fetchall("SELECT name, source FROM nodes")
        return {r[0]: r[1] for r in rows}

    async def _keys(self, names: list[str] | None) -> dict[str, tuple[HostKey, ...]]:
        if names is None:
            rows = await self.store.fetchall("SELECT * FROM host_keys ORDER BY node, key_type")
        else:
            rows = await self.store.fetchall(
                "SELECT * FROM host_keys WHERE node = ? ORDER BY key_type", (names[0],))
        out: dict[str, list[HostKey]] = {}
        for r in rows:
            out.setdefault(r["node"], []).append(HostKey(
                key_type=r["key_type"], key=r["key"], fingerprint=r["fingerprint"],
                source=r["source"], added_at=r["added_at"]))
        return {k: tuple(v) for k, v in out.items()}

    async def save(self, tx: "aiosqlite.Connection", node: Node) -> None:
        """Insert or update a node's facts; pinned keys are saved by `pin_keys`."""
        await tx.execute(
            "INSERT INTO nodes (name, site, address, public_ipv4, ipv6, port, user, labels, "
            "source, mac, registered_at, reachability, last_seen, last_error) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
            "site=excluded.site, address=excluded.address, public_ipv4=excluded.public_ipv4, "
            "ipv6=excluded.ipv6, port=excluded.port, user=excluded.user, labels=excluded.labels, "
            "source=excluded.source, mac=excluded.mac, registered_at=excluded.registered_at",
            (node.name, node.site, node.address, node.public_ipv4, node.ipv6, node.port,
             node.user, _json(dict(node.labels)), node.source, node.mac, node.registered_at,
             node.reachability.value, node.last_seen, node.last_error))

    async def pin_keys(self, tx: "aiosqlite.Connection", name: str,
                       keys: Iterable[HostKey], *, replace_all: bool = False) -> None:
        if replace_all:
            await tx.execute("DELETE FROM host_keys WHERE node = ?", (name,))
        for k in keys:
            await tx.execute(
                "INSERT OR REPLACE INTO host_keys (node, key_type, key, fingerprint, source, "
                "added_at) VALUES (?,?,?,?,?,?)",
                (name, k.key_type, k.key, k.fingerprint, k.source, k.added_at))

    async def set_reachability(self, tx: "aiosqlite.Connection", name: str,
                               reachability: Reachability, when: float,
                               error: str | None = None) -> None:
        if reachability is Reachability.REACHABLE:
            await tx.execute("UPDATE nodes SET reachability=?, last_seen=?, last_error=NULL "
                             "WHERE name=?", (reachability.value, when, name))
        elif reachability is Reachability.BOOTING:
            # a node already booting keeps the time it began
            await tx.execute(
                "UPDATE nodes SET booting_since = CASE WHEN reachability = 'booting' AND "
                "booting_since IS NOT NULL THEN booting_since ELSE ? END, reachability=?, "
                "last_error=? WHERE name=?", (when, reachability.value, error, name))
        else:
            await tx.execute("UPDATE nodes SET reachability=?, last_error=? WHERE name=?",
                             (reachability.value, error, name))

    async def start_booting(self, tx: "aiosqlite.Connection", name: str, when: float) -> None:
        """The node began booting at `when` (it called home, or powered on)."""
        await tx.execute("UPDATE nodes SET reachability='booting', booting_since=?, "
                         "last_error=NULL WHERE name=?", (when, name))

    async def set_reachability_many(self, tx: "aiosqlite.Connection", when: float,
                                    rows: Iterable[tuple[str, Reachability, str | None]]
                                    ) -> None:
        """(name, reachability, error) for many nodes in two executemany calls."""
        rows = list(rows)
        up = [(Reachability.REACHABLE.value, when, n) for n, r, _ in rows
              if r is Reachability.REACHABLE]
        down = [(r.value, e, n) for n, r, e in rows if r is not Reachability.REACHABLE]
        if up:
            await tx.executemany("UPDATE nodes SET reachability=?, last_seen=?, "
                                 "last_error=NULL WHERE name=?", up)
        if down:
            # a booting node stays booting: only liveness ends its boot grace
            await tx.executemany("UPDATE nodes SET reachability=?, last_error=? WHERE name=? "
                                 "AND reachability != 'booting'", down)

    async def delete(self, tx: "aiosqlite.Connection", name: str) -> None:
        await tx.execute("DELETE FROM nodes WHERE name = ?", (name,))

    async def booting(self) -> list[tuple[str, float]]:
        """(name, when it began booting) of the nodes that have not answered SSH
        since they called home or powered on."""
        rows = await self.store.fetchall(
            "SELECT name, COALESCE(booting_since, registered_at) FROM nodes "
            "WHERE reachability = 'booting'")
        return [(r[0], r[1] or 0.0) for r in rows]

    async def registered_by(self, tx: "aiosqlite.Connection", mac: str) -> list[str]:
        """The names of the nodes a machine registered by calling home."""
        rows = await tx.execute_fetchall(
            "SELECT name FROM nodes WHERE source = 'callhome' AND mac = ? ORDER BY name", (mac,))
        return [r[0] for r in rows]

    async def holder_of(self, tx: "aiosqlite.Connection", name: str) -> tuple[str, str | None] | None:
        """(source, mac) of the node called `name`, or None."""
        rows = await tx.execute_fetchall("SELECT source, mac FROM nodes WHERE name = ?", (name,))
        return (rows[0][0], rows[0][1]) if rows else None

    async def unpin(self, tx: "aiosqlite.Connection", name: str) -> int:
        """Drop every pinned host key of a node; how many there were."""
        cur = await tx.execute("DELETE FROM host_keys WHERE node = ?", (name,))
        return cur.rowcount


def _node_from(row, keys: tuple[HostKey, ...]) -> Node:
    return Node(name=row["name"], site=row["site"], address=row["address"],
                public_ipv4=row["public_ipv4"], ipv6=row["ipv6"], port=row["port"],
                user=row["user"], labels=_json_map(row["labels"]), source=row["source"],
                mac=row["mac"], registered_at=row["registered_at"], host_keys=keys,
                reachability=Reachability(row["reachability"]), last_seen=row["last_seen"],
                last_error=row["last_error"], booting_since=row["booting_since"])


# -- events --------------------------------------------------------------------

def _event_from(row) -> Event:
    return Event(id=row["id"], ts=row["ts"], kind=row["kind"], subject=row["subject"],
                 severity=Severity(row["severity"]), message=row["message"],
                 data=json.loads(row["data"]))


class EventRepo(_Repo):
    async def append(self, tx: "aiosqlite.Connection", events: Iterable[Event]) -> list[int]:
        events = stamped(list(events))
        ids = []
        for e in events:
            cur = await tx.execute(
                "INSERT INTO events (ts, kind, subject, severity, message, data) "
                "VALUES (?,?,?,?,?,?)",
                (e.ts, e.kind, e.subject, e.severity.value, e.message, _json(dict(e.data))))
            ids.append(cur.lastrowid)
        await appended(tx, events, ids)
        return ids

    async def append_many(self, tx: "aiosqlite.Connection", events: Iterable[Event]) -> None:
        """Like append, in one executemany (one thread hop for 1000 events); no ids."""
        events = stamped(list(events))
        await tx.executemany(
            "INSERT INTO events (ts, kind, subject, severity, message, data) "
            "VALUES (?,?,?,?,?,?)",
            [(e.ts, e.kind, e.subject, e.severity.value, e.message, _json(dict(e.data)))
             for e in events])
        await appended(tx, events)

    async def since(self, after_id: int, limit: int = 1000) -> list[Event]:
        rows = await self.store.fetchall(
            "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
        return [_event_from(r) for r in rows]

    async def latest(self, limit: int = 100, subject: str | None = None) -> list[Event]:
        if subject is None:
            rows = await self.store.fetchall(
                "SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = await self.store.fetchall(
                "SELECT * FROM events WHERE subject = ? ORDER BY id DESC LIMIT ?",
                (subject, limit))
        return [_event_from(r) for r in reversed(rows)]

    async def max_id(self) -> int:
        row = await self.store.fetchone("SELECT coalesce(max(id), 0) FROM events")
        return row[0]


# -- jobs, artifacts, distributors, meta ---------------------------------------

def _job_from(row) -> Job:
    return Job(id=row["id"], kind=row["kind"], state=JobState(row["state"]),
               inputs=json.loads(row["inputs"]), created_at=row["created_at"],
               progress=row["progress"], phase=row["phase"], started_at=row["started_at"],
               finished_at=row["finished_at"],
               result=json.loads(row["result"]) if row["result"] else None,
               error=row["error"])


class JobRepo(_Repo):
    async def create(self, tx: "aiosqlite.Connection", kind: str, inputs: dict,
                     created_at: float) -> int:
        cur = await tx.execute(
            "INSERT INTO jobs (kind, state, inputs, created_at) VALUES (?, 'queued', ?, ?)",
            (kind, _json(inputs), created_at))
        return cur.lastrowid

    async def update(self, tx: "aiosqlite.Connection", job_id: int, **fields: Any) -> None:
        allowed = {"state", "progress", "phase", "started_at", "finished_at", "result",
                   "error", "owner_pid"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown job fields: {sorted(bad)}")
        values = []
        for key, value in fields.items():
            if key == "result" and value is not None:
                value = _json(value)
            elif isinstance(value, JobState):
                value = value.value
            values.append(value)
        sets = ", ".join(f"{k} = ?" for k in fields)
        await tx.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values, job_id))

    async def get(self, job_id: int) -> Job | None:
        row = await self.store.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job_from(row) if row else None

    async def list(self, states: Iterable[JobState] | None = None, limit: int = 500) -> list[Job]:
        if states is None:
            rows = await self.store.fetchall(
                "SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            names = [s.value for s in states]
            rows = await self.store.fetchall(
                f"SELECT * FROM jobs WHERE state IN ({','.join('?' * len(names))}) "
                "ORDER BY id DESC LIMIT ?", (*names, limit))
        return [_job_from(r) for r in rows]

    async def unfinished(self) -> list[tuple[int, str, JobState, int | None, float]]:
        """(id, kind, state, owner pid, created_at) of every queued or running job."""
        rows = await self.store.fetchall(
            "SELECT id, kind, state, owner_pid, created_at FROM jobs "
            "WHERE state IN ('queued', 'running')")
        return [(r["id"], r["kind"], JobState(r["state"]), r["owner_pid"], r["created_at"])
                for r in rows]

    async def unclaimed(self) -> list[int]:
        """Queued jobs no process has taken yet, oldest first."""
        rows = await self.store.fetchall(
            "SELECT id FROM jobs WHERE state = 'queued' AND owner_pid IS NULL ORDER BY id")
        return [r["id"] for r in rows]

    async def claim(self, tx: "aiosqlite.Connection", job_id: int, pid: int) -> bool:
        """Take an unclaimed queued job for process `pid`; False if someone else did."""
        cur = await tx.execute(
            "UPDATE jobs SET owner_pid = ? WHERE id = ? AND state = 'queued' "
            "AND owner_pid IS NULL", (pid, job_id))
        return cur.rowcount == 1

    async def state_in(self, tx: "aiosqlite.Connection", job_id: int) -> JobState | None:
        """A job's state as seen inside the caller's transaction."""
        rows = await tx.execute_fetchall("SELECT state FROM jobs WHERE id = ?", (job_id,))
        return JobState(rows[0][0]) if rows else None

    async def states(self, job_ids: list[int]) -> dict[int, JobState]:
        rows = await self.store.fetchall(
            f"SELECT id, state FROM jobs WHERE id IN ({','.join('?' * len(job_ids))})",
            job_ids)
        return {r["id"]: JobState(r["state"]) for r in rows}

    async def counts(self) -> dict[tuple[str, str], int]:
        """How many jobs there are of each (kind, state)."""
        rows = await self.store.fetchall(
            "SELECT kind, state, COUNT(*) AS n FROM jobs GROUP BY kind, state")
        return {(r["kind"], r["state"]): r["n"] for r in rows}

    async def log(self, tx: "aiosqlite.Connection", job_id: int, ts: float, line: str) -> None:
        await tx.execute(
            "INSERT INTO job_logs (job, seq, ts, line) VALUES "
            "(?, (SELECT coalesce(max(seq), 0) + 1 FROM job_logs WHERE job = ?), ?, ?)",
            (job_id, job_id, ts, line))

    async def log_many(self, tx: "aiosqlite.Connection",
                       rows: Iterable[tuple[int, float, str]]) -> None:
        """Several (job, ts, line) log lines in one executemany, in order."""
        await tx.executemany(
            "INSERT INTO job_logs (job, seq, ts, line) VALUES "
            "(?, (SELECT coalesce(max(seq), 0) + 1 FROM job_logs WHERE job = ?), ?, ?)",
            [(job_id, job_id, ts, line) for job_id, ts, line in rows])

    async def logs(self, job_id: int, after_seq: int = 0) -> list[tuple[int, float, str]]:
        rows = await self.store.fetchall(
            "SELECT seq, ts, line FROM job_logs WHERE job = ? AND seq > ? ORDER BY seq",
            (job_id, after_seq))
        return [(r["seq"], r["ts"], r["line"]) for r in rows]


def _artifact_from(row) -> Artifact:
    return Artifact(id=row["id"], kind=row["kind"], name=row["name"], path=row["path"],
                    sha256=row["sha256"], size=row["size"], version=row["version"],
                    created_at=row["created_at"], meta=json.loads(row["meta"]))


class ArtifactRepo(_Repo):
    async def save(self, tx: "aiosqlite.Connection", a: Artifact) -> None:
        await tx.execute(
            "INSERT OR REPLACE INTO artifacts (id, kind, name, path, sha256, size, version, "
            "created_at, meta) VALUES (?,?,?,?,?,?,?,?,?)",
            (a.id, a.kind, a.name, a.path, a.sha256, a.size, a.version, a.created_at,
             _json(dict(a.meta))))

    async def get(self, artifact_id: str) -> Artifact | None:
        row = await self.store.fetchone("SELECT * FROM artifacts WHERE id = ?", (artifact_id,))
        return _artifact_from(row) if row else None

    async def list(self) -> list[Artifact]:
        rows = await self.store.fetchall("SELECT * FROM artifacts ORDER BY created_at DESC")
        return [_artifact_from(r) for r in rows]


class DistributorRepo(_Repo):
    async def enabled(self) -> dict[str, bool]:
        rows = await self.store.fetchall("SELECT name, enabled FROM distributors")
        return {r["name"]: bool(r["enabled"]) for r in rows}

    async def set_enabled(self, tx: "aiosqlite.Connection", name: str, enabled: bool,
                          when: float) -> None:
        await tx.execute(
            "INSERT INTO distributors (name, enabled, updated_at) VALUES (?,?,?) "
            "ON CONFLICT(name) DO UPDATE SET enabled=excluded.enabled, "
            "updated_at=excluded.updated_at", (name, int(enabled), when))

    async def artifacts(self, name: str) -> list[str]:
        rows = await self.store.fetchall(
            "SELECT artifact FROM distributor_artifacts WHERE distributor = ? ORDER BY artifact",
            (name,))
        return [r["artifact"] for r in rows]

    async def assign(self, tx: "aiosqlite.Connection", name: str, artifact_id: str) -> None:
        await tx.execute("INSERT OR IGNORE INTO distributor_artifacts VALUES (?, ?)",
                         (name, artifact_id))


class MetaRepo(_Repo):
    async def get(self, key: str) -> str | None:
        row = await self.store.fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return row["value"] if row else None

    async def set(self, tx: "aiosqlite.Connection", key: str, value: str) -> None:
        await tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

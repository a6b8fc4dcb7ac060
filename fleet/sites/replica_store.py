"""The console's replica file: what it last learnt from every site, in its own
SQLite file (one per console, WAL), so a console that starts while a site is
away still shows that site, marked with the time it was last heard from.

    sites     site PK, store_id, cursor, site_last_event, rows_as_of, last_heard,
              connected, since, error, version
    events    (site, id) PK, the event as the agent sends it
    machines  (site, mac) PK, state, the machine record as `--format json` prints it
    nodes     (site, name) PK, the node record likewise
    jobs      (site, id) PK, state, the site's recent jobs likewise

`cursor` is the id of the last event copied; it moves in the same transaction
as the events it covers, and an event is keyed by its site-local id, so a
kill at any moment neither loses an event nor counts one twice. Machines,
nodes and jobs are whole snapshots, replaced per site in one transaction;
`rows_as_of` is the site's last event id when the snapshot was read (the rows
show at least every change up to it).

Pure aiosqlite: no engine, no site store (it must open on a laptop that has
never run a site).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

import aiosqlite

from fleet.errors import EnvironmentProblem
from fleet.sqlbegin import begin

BUSY_TIMEOUT_MS = 10_000

SCHEMA = [
    # 1
    """
    CREATE TABLE sites (
        site TEXT PRIMARY KEY,
        store_id TEXT,
        cursor INTEGER NOT NULL DEFAULT 0,
        site_last_event INTEGER NOT NULL DEFAULT 0,
        rows_as_of INTEGER NOT NULL DEFAULT 0,
        last_heard REAL,
        connected INTEGER NOT NULL DEFAULT 0,
        since REAL,
        error TEXT,
        version TEXT
    );
    CREATE TABLE events (
        site TEXT NOT NULL REFERENCES sites(site) ON DELETE CASCADE,
        id INTEGER NOT NULL,
        ts TEXT, kind TEXT NOT NULL, subject TEXT NOT NULL, severity TEXT NOT NULL,
        message TEXT NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (site, id)
    ) WITHOUT ROWID;
    CREATE INDEX events_subject ON events(site, subject, id);
    CREATE TABLE machines (
        site TEXT NOT NULL REFERENCES sites(site) ON DELETE CASCADE,
        mac TEXT NOT NULL, state TEXT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (site, mac)
    ) WITHOUT ROWID;
    CREATE TABLE nodes (
        site TEXT NOT NULL REFERENCES sites(site) ON DELETE CASCADE,
        name TEXT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (site, name)
    ) WITHOUT ROWID;
    """,
    # 2
    """
    CREATE TABLE jobs (
        site TEXT NOT NULL REFERENCES sites(site) ON DELETE CASCADE,
        id INTEGER NOT NULL, state TEXT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (site, id)
    ) WITHOUT ROWID;
    """,
]

#: a machine record's field that is relative to when it was made, not a fact
RELATIVE_FIELDS = ("seen_ago_s",)


@dataclass(frozen=True)
class SiteRow:
    site: str
    store_id: str | None
    cursor: int
    site_last_event: int  # the site's last event id when last heard (lag = this - cursor)
    rows_as_of: int
    last_heard: float | None
    connected: bool
    since: float | None  # when `connected` last changed
    error: str | None  # why the site is away
    version: str | None  # the agent's fleet version


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _event_row(site: str, e: dict[str, Any]) -> tuple:
    return (site, e["id"], e.get("ts"), e["kind"], e["subject"], e["severity"],
            e["message"], _json(e.get("data") or {}))


def _event_from(row) -> dict[str, Any]:
    return {"id": row["id"], "ts": row["ts"], "kind": row["kind"], "subject": row["subject"],
            "severity": row["severity"], "message": row["message"],
            "data": json.loads(row["data"])}


def _site_from(row) -> SiteRow:
    return SiteRow(site=row["site"], store_id=row["store_id"], cursor=row["cursor"],
                   site_last_event=row["site_last_event"], rows_as_of=row["rows_as_of"], last_heard=row["last_heard"],
                   connected=bool(row["connected"]), since=row["since"], error=row["error"],
                   version=row["version"])


def machine_fact(record: dict[str, Any]) -> dict[str, Any]:
    """A machine record without its fields relative to the moment it was made."""
    return {k: v for k, v in record.items() if k not in RELATIVE_FIELDS}


class ReplicaStore:
    def __init__(self, path: Path, conn: aiosqlite.Connection):
        self.path = path
        self.conn = conn
        self._lock = asyncio.Lock()  # one transaction at a time on the one connection
        self._written = asyncio.Event()  # set at each commit: `written` wakes a reader
        self._reading: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"replica-reading-{id(self)}", default=False)

    @classmethod
    async def open(cls, path: Path | str) -> "ReplicaStore":
        """Open (creating if needed) the replica at `path`. Every site starts
        disconnected: no channel belongs to this process yet."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise EnvironmentProblem(f"cannot open the replica {path}: {path.parent} is not "
                                     "a folder") from None
        except OSError as err:
            raise EnvironmentProblem(f"cannot open the replica {path}: cannot create "
                                     f"{path.parent}: {err.strerror}") from err
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise EnvironmentProblem(f"cannot open the replica {path}: {err}") from err
        conn.row_factory = aiosqlite.Row
        replica = cls(path, conn)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
            async with replica.transaction() as tx:
                version = (await (await tx.execute("PRAGMA user_version")).fetchone())[0]
                if version > len(SCHEMA):
                    raise EnvironmentProblem(
                        f"the replica {path} has schema version {version}, newer than this "
                        f"fleet knows ({len(SCHEMA)}); upgrade fleet or remove the file")
                for number, script in enumerate(SCHEMA[version:], start=version + 1):
                    for statement in (s.strip() for s in script.split(";")):
                        if statement:
                            await tx.execute(statement)
                    await tx.execute(f"PRAGMA user_version = {number}")
                await tx.execute("UPDATE sites SET connected = 0, since = NULL "
                                 "WHERE connected = 1")
        except sqlite3.Error as err:  # not a database, or not one this module made
            await conn.close()
            raise EnvironmentProblem(f"cannot use the replica {path}: {err}") from err
        except BaseException:
            await conn.close()
            raise
        return replica

    async def close(self) -> None:
        await self.conn.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            try:
                await begin(self.conn)
                try:
                    yield self.conn
                    await self.conn.execute("COMMIT")
                    self._written.set()
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        await self.conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as err:
                raise EnvironmentProblem(f"cannot write the replica {self.path}: {err}; "
                                         "it keeps what it had") from err

    async def written(self) -> None:
        """Until this process commits a write (one reader: it clears the mark;
        another process's writes do not wake it)."""
        await self._written.wait()
        self._written.clear()

    async def _rows(self, sql: str, params: tuple = ()) -> list:
        if self._reading.get():
            return list(await self.conn.execute_fetchall(sql, params))
        # under the lock: a read never sees half of this connection's open transaction
        async with self._lock:
            return list(await self.conn.execute_fetchall(sql, params))

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator["ReplicaStore"]:
        """The reads of this task inside see one moment of the file (one read
        transaction), e.g. a site's row, machines and events that agree."""
        async with self._lock:
            await begin(self.conn, "BEGIN")
            token = self._reading.set(True)
            try:
                yield self
            finally:
                self._reading.reset(token)
                await self.conn.execute("COMMIT")

    # -- per site state ---------------------------------------------------------------

    async def site(self, site: str) -> SiteRow | None:
        rows = await self._rows("SELECT * FROM sites WHERE site = ?", (site,))
        return _site_from(rows[0]) if rows else None

    async def sites(self) -> list[SiteRow]:
        return [_site_from(r) for r in await self._rows("SELECT * FROM sites ORDER BY site")]

    async def heard(self, site: str, now: float, *, version: str | None = None,
                    last_event_id: int | None = None) -> SiteRow:
        """The site answered: connected from now (if it was not), no error."""
        async with self.transaction() as tx:
            await tx.execute("INSERT OR IGNORE INTO sites (site) VALUES (?)", (site,))
            await tx.execute(
                "UPDATE sites SET last_heard = ?, error = NULL, "
                "since = CASE connected WHEN 1 THEN since ELSE ? END, connected = 1, "
                "version = coalesce(?, version), "
                "site_last_event = coalesce(?, site_last_event) WHERE site = ?",
                (now, now, version, last_event_id, site))
        row = await self.site(site)
        assert row is not None
        return row

    async def start_over(self, site: str, store_id: str | None) -> None:
        """Forget everything of `site` and replicate it again from event 0."""
        async with self.transaction() as tx:
            await tx.execute("INSERT OR IGNORE INTO sites (site) VALUES (?)", (site,))
            await self._empty(tx, site, store_id)

    @staticmethod
    async def _empty(tx: aiosqlite.Connection, site: str, store_id: str | None) -> None:
        for table in ("events", "machines", "nodes", "jobs"):
            await tx.execute(f"DELETE FROM {table} WHERE site = ?", (site,))
        await tx.execute("UPDATE sites SET store_id = ?, cursor = 0, site_last_event = 0, "
                         "rows_as_of = 0 "
                         "WHERE site = ?", (store_id, site))

    async def lost(self, site: str, now: float, error: str) -> None:
        """The site's channel ended: keep what is known, say since when and why."""
        async with self.transaction() as tx:
            await tx.execute("INSERT OR IGNORE INTO sites (site) VALUES (?)", (site,))
            await tx.execute(
                "UPDATE sites SET error = ?, "
                "since = CASE connected WHEN 0 THEN coalesce(since, ?) ELSE ? END, "
                "connected = 0 WHERE site = ?", (error, now, now, site))

    # -- events ---------------------------------------------------------------------

    async def apply_events(self, site: str, events: Iterable[dict[str, Any]],
                           now: float) -> int:
        """Copy events (in id order) and move the cursor past them, in one
        transaction; an event already here is skipped. Returns the cursor."""
        rows = [_event_row(site, e) for e in events]
        async with self.transaction() as tx:
            if rows:
                await tx.executemany(
                    "INSERT OR IGNORE INTO events (site, id, ts, kind, subject, severity, "
                    "message, data) VALUES (?,?,?,?,?,?,?,?)", rows)
                await tx.execute("UPDATE sites SET cursor = max(cursor, ?), "
                                 "site_last_event = max(site_last_event, ?) WHERE site = ?",
                                 (rows[-1][1], rows[-1][1], site))
            await tx.execute("UPDATE sites SET last_heard = ? WHERE site = ?", (now, site))
            cursor = await (await tx.execute("SELECT cursor FROM sites WHERE site = ?",
                                             (site,))).fetchone()
        return cursor[0]

    async def event(self, site: str, event_id: int) -> dict[str, Any] | None:
        rows = await self._rows("SELECT * FROM events WHERE site = ? AND id = ?",
                                (site, event_id))
        return _event_from(rows[0]) if rows else None

    async def events(self, site: str, after: int = 0, limit: int = 1000
                     ) -> list[dict[str, Any]]:
        """Events after id `after`, oldest first."""
        rows = await self._rows("SELECT * FROM events WHERE site = ? AND id > ? ORDER BY id "
                                "LIMIT ?", (site, after, limit))
        return [_event_from(r) for r in rows]

    async def latest_events(self, site: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The last `limit` events, oldest first."""
        rows = await self._rows("SELECT * FROM events WHERE site = ? ORDER BY id DESC LIMIT ?",
                                (site, limit))
        return [_event_from(r) for r in reversed(rows)]

    async def count_events(self, site: str) -> int:
        rows = await self._rows("SELECT count(*) FROM events WHERE site = ?", (site,))
        return rows[0][0]

    # -- machines and nodes -----------------------------------------------------------

    async def replace_rows(self, site: str, machines: list[dict[str, Any]],
                           nodes: list[dict[str, Any]], as_of: int, now: float,
                           jobs: list[dict[str, Any]] | None = None) -> None:
        """The site's machines, nodes and jobs are these now (a whole snapshot;
        `jobs` None: an agent that sends none, the jobs known stay)."""
        async with self.transaction() as tx:
            await tx.execute("DELETE FROM machines WHERE site = ?", (site,))
            await tx.execute("DELETE FROM nodes WHERE site = ?", (site,))
            if jobs is not None:
                await tx.execute("DELETE FROM jobs WHERE site = ?", (site,))
                await tx.executemany(
                    "INSERT INTO jobs (site, id, state, record) VALUES (?,?,?,?)",
                    [(site, j["id"], j["state"], _json(j)) for j in jobs])
            await tx.executemany(
                "INSERT INTO machines (site, mac, state, record) VALUES (?,?,?,?)",
                [(site, m["mac"], m["state"], _json(machine_fact(m))) for m in machines])
            await tx.executemany("INSERT INTO nodes (site, name, record) VALUES (?,?,?)",
                                 [(site, n["name"], _json(n)) for n in nodes])
            await tx.execute("UPDATE sites SET rows_as_of = ?, last_heard = ? WHERE site = ?",
                             (as_of, now, site))

    async def machines(self, site: str) -> list[dict[str, Any]]:
        rows = await self._rows("SELECT record FROM machines WHERE site = ? ORDER BY mac",
                                (site,))
        return [json.loads(r[0]) for r in rows]

    async def machine(self, site: str, mac: str) -> dict[str, Any] | None:
        rows = await self._rows("SELECT record FROM machines WHERE site = ? AND mac = ?",
                                (site, mac))
        return json.loads(rows[0][0]) if rows else None

    async def first_rows(self, site: str, limit: int
                         ) -> tuple[list[dict[str, Any]], int, list[dict[str, Any]], int]:
        """The site's first `limit` machines (by MAC) and nodes (by name), and how
        many there are: a console's first screen, before the whole lists."""
        async with self.reading() as view:
            machines = await view._rows("SELECT record FROM machines WHERE site = ? "
                                        "ORDER BY mac LIMIT ?", (site, limit))
            nodes = await view._rows("SELECT record FROM nodes WHERE site = ? "
                                     "ORDER BY name LIMIT ?", (site, limit))
            counts = await view._rows(
                "SELECT (SELECT count(*) FROM machines WHERE site = ?), "
                "(SELECT count(*) FROM nodes WHERE site = ?)", (site, site))
        return ([json.loads(r[0]) for r in machines], counts[0][0],
                [json.loads(r[0]) for r in nodes], counts[0][1])

    async def jobs(self, site: str) -> list[dict[str, Any]]:
        """The site's recent jobs as last snapshotted, newest first."""
        rows = await self._rows("SELECT record FROM jobs WHERE site = ? ORDER BY id DESC",
                                (site,))
        return [json.loads(r[0]) for r in rows]

    async def nodes(self, site: str) -> list[dict[str, Any]]:
        rows = await self._rows("SELECT record FROM nodes WHERE site = ? ORDER BY name",
                                (site,))
        return [json.loads(r[0]) for r in rows]

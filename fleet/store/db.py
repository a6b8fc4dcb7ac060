"""The SQLite store: one file per profile, WAL, versioned migrations.

One aiosqlite connection per process does the writing; `transaction()` wraps
each multi-row change in BEGIN IMMEDIATE ... COMMIT so another process never
sees half of it and a crash never leaves half of it. Several processes may
share the file (the console and a script): WAL lets readers run beside the
writer and `busy_timeout` makes writers queue instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path
from typing import AsyncIterator

import aiosqlite

from fleet.errors import EnvironmentProblem
from fleet.store.migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 10_000


class Store:
    def __init__(self, path: Path, conn: aiosqlite.Connection):
        self.path = path
        self.conn = conn
        self._lock = asyncio.Lock()
        self._after_commit: list = []
        from fleet.store import repos  # repos import Store for typing only

        self.machines = repos.MachineRepo(self)
        self.leases = repos.LeaseRepo(self)
        self.nodes = repos.NodeRepo(self)
        self.events = repos.EventRepo(self)
        self.jobs = repos.JobRepo(self)
        self.artifacts = repos.ArtifactRepo(self)
        self.distributors = repos.DistributorRepo(self)
        self.meta = repos.MetaRepo(self)

    @classmethod
    async def open(cls, path: Path | str, *, read_only: bool = False) -> "Store":
        path = Path(path)
        try:
            if not read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(
                f"file:{path}?mode={'ro' if read_only else 'rwc'}", uri=True,
                isolation_level=None)  # we issue BEGIN/COMMIT ourselves
        except (OSError, sqlite3.Error) as err:
            raise EnvironmentProblem(f"cannot open the store {path}: {err}") from err
        if not read_only:
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
        conn.row_factory = aiosqlite.Row
        store = cls(path, conn)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA foreign_keys = ON")
            if not read_only:
                await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute("PRAGMA synchronous = NORMAL")
                await store._migrate()
        except sqlite3.Error as err:
            await conn.close()
            raise EnvironmentProblem(f"cannot use the store {path}: {err}") from err
        return store

    async def close(self) -> None:
        await self.conn.close()

    async def schema_version(self) -> int:
        async with self.conn.execute("PRAGMA user_version") as cur:
            return (await cur.fetchone())[0]

    async def _migrate(self) -> None:
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                version = await self.schema_version()
                if version > len(MIGRATIONS):
                    raise EnvironmentProblem(
                        f"the store {self.path} has schema version {version}, newer than "
                        f"this fleet knows ({len(MIGRATIONS)}); upgrade fleet")
                for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                    for statement in _statements(script):
                        await self.conn.execute(statement)
                    await self.conn.execute(f"PRAGMA user_version = {number}")
                await self.conn.execute("COMMIT")
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """All statements inside commit together or not at all."""
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            await self.conn.execute("COMMIT")
        for callback in list(self._after_commit):
            callback()

    def on_commit(self, callback) -> None:
        """Call `callback()` after each of this process's commits (the feed uses it)."""
        self._after_commit.append(callback)

    # One thread call per query: a cursor left open between `execute` and
    # `fetchall` holds a read snapshot, and a BEGIN IMMEDIATE issued after
    # another process committed in that gap fails at once ("database is
    # locked") instead of waiting out busy_timeout.
    async def fetchall(self, sql: str, params=()) -> list[aiosqlite.Row]:
        return list(await self.conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params=()) -> aiosqlite.Row | None:
        rows = await self.conn.execute_fetchall(sql, params)
        return rows[0] if rows else None


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]

"""The SQLite store: one file per profile, WAL, versioned migrations.

One aiosqlite connection per process does the writing; `transaction()` wraps
each multi-row change in BEGIN IMMEDIATE ... COMMIT so another process never
sees half of it and a crash never leaves half of it. Several processes may
share the file (the console and a script): WAL lets readers run beside the
writer and `busy_timeout` makes writers queue instead of failing. Opening
(creating the file, switching it to WAL, migrating) is the one step SQLite does
not queue, so processes take turns at it under a flock on the store's folder.
A full disk or an unwritable file is an EnvironmentProblem naming the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path
from typing import AsyncIterator

import aiosqlite

from fleet.errors import EnvironmentProblem
from fleet.sqlbegin import begin
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
        """Open (creating and migrating if needed) the store at `path`. Raises
        EnvironmentProblem with the path and the reason when it cannot."""
        path = Path(path)
        if read_only:
            return await cls._connect(path, read_only=True)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise EnvironmentProblem(
                f"cannot create the store's folder {path.parent}: {_reason(err)}") from err
        # Creating, switching to WAL and migrating take locks SQLite does not wait
        # for (a second process gets "database is locked" at once), so processes
        # opening a store take turns, holding a lock on its folder.
        async with _OpenLock(path):
            fresh = not path.exists()
            try:
                return await cls._connect(path, read_only=False)
            except BaseException:
                if fresh:  # leave nothing half-made behind (no 0-byte store)
                    for leftover in (path, *_sidecars(path)):
                        with contextlib.suppress(OSError):
                            leftover.unlink()
                raise

    @classmethod
    async def _connect(cls, path: Path, *, read_only: bool) -> "Store":
        try:
            conn = await aiosqlite.connect(
                f"file:{path}?mode={'ro' if read_only else 'rwc'}", uri=True,
                isolation_level=None)  # we issue BEGIN/COMMIT ourselves
        except (OSError, sqlite3.Error) as err:
            raise EnvironmentProblem(f"cannot open the store {path}: {_why(path, err)}") from err
        conn.row_factory = aiosqlite.Row
        store = cls(path, conn)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA foreign_keys = ON")
            if not read_only:
                await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute("PRAGMA synchronous = NORMAL")
                await store._migrate()
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o600)
        except sqlite3.Error as err:
            await conn.close()
            raise EnvironmentProblem(f"cannot use the store {path}: {_why(path, err)}") from err
        except BaseException:
            await conn.close()
            raise
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
        """All statements inside commit together or not at all. A full disk or an
        unwritable file is an EnvironmentProblem; the store keeps what it had."""
        async with self._lock:
            try:
                await begin(self.conn)
                try:
                    yield self.conn
                    await self.conn.execute("COMMIT")
                except BaseException:
                    # SQLite may have rolled back already (a full disk does)
                    with contextlib.suppress(sqlite3.Error):
                        await self.conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as err:
                if not _environmental(err):
                    raise
                raise EnvironmentProblem(
                    f"cannot write the store {self.path}: {_why(self.path, err)}; "
                    "nothing was changed") from err
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


class _OpenLock:
    """An exclusive flock on the store's folder while a process opens the store:
    nothing is left behind (a lock file would be), and the store file itself
    cannot carry it: closing any descriptor of the database file drops SQLite's
    own POSIX locks on it in this process."""

    def __init__(self, path: Path):
        self.folder = path.parent
        self._fd: int | None = None

    async def __aenter__(self) -> "_OpenLock":
        try:
            self._fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise EnvironmentProblem(
                f"cannot open the store's folder {self.folder}: {_reason(err)}") from err
        try:
            # waiting happens in a thread: the event loop keeps serving meanwhile
            await asyncio.to_thread(fcntl.flock, self._fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self._fd)  # closing drops the lock if the thread took it
            self._fd = None
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


#: SQLite result codes that mean the disk or the file, not the statement
_ENVIRONMENT_CODES = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY,
                      sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM}


def _environmental(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _ENVIRONMENT_CODES


def _sidecars(path: Path) -> tuple[Path, ...]:
    return tuple(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def _why(path: Path, err: Exception) -> str:
    """SQLite's message, plus what is wrong on disk when SQLite does not say
    ("unable to open database file" names neither the file nor the cause)."""
    text = str(err)
    if "unable to open" not in text and "readonly" not in text:
        return text
    folder = path.parent
    if not folder.is_dir():
        return f"{text}: the folder {folder} does not exist"
    with contextlib.suppress(OSError):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{text}: {folder} is on a read-only file system"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"{text}: no permission to read and write {path}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{text}: no permission to write in {folder}"
    if path.is_dir():
        return f"{text}: {path} is a folder"
    return text


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]

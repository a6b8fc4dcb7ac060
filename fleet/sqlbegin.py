"""BEGIN on an aiosqlite connection that a cancel cannot leave half-done.

aiosqlite runs each statement in its own thread: a task cancelled while its
BEGIN waits (for another process's write lock) stops waiting, but the BEGIN
still completes in that thread, and the connection stays inside a transaction
(the next BEGIN fails: "cannot start a transaction within a transaction").
Both fleet's stores (the site's and the console's replica) begin here."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def begin(conn: Any, sql: str = "BEGIN IMMEDIATE") -> None:
    """`sql` on `conn`; after a cancel, the BEGIN is waited for and rolled back."""
    started = asyncio.ensure_future(conn.execute(sql))
    try:
        await asyncio.shield(started)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await started
            await conn.execute("ROLLBACK")
        raise

"""Idempotency keys: the first result of each command that carried a key.

A command's key is written in the same transaction as the change it made, so
either both are in the store or neither is: a retry after a lost reply finds
the key and gets the first result, and two attempts racing with one key cannot
both act (the second insert finds the key and its transaction rolls back).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiosqlite

    from fleet.store.db import Store


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class KeptResult:
    key: str
    op: str
    request: dict[str, Any]  # the command's arguments, to spot a key reused for another
    result: Any
    by: dict[str, Any]
    created_at: float


class KeyTaken(Exception):
    """The key was written by another attempt first (its transaction rolls back)."""


class CommandKeys:
    def __init__(self, store: "Store"):
        self.store = store

    async def get(self, key: str) -> KeptResult | None:
        row = await self.store.fetchone("SELECT * FROM command_keys WHERE key = ?", (key,))
        if row is None:
            return None
        return KeptResult(key=row["key"], op=row["op"], request=json.loads(row["request"]),
                          result=json.loads(row["result"]), by=json.loads(row["by"]),
                          created_at=row["created_at"])

    async def keep(self, tx: "aiosqlite.Connection", key: str, op: str,
                   request: dict[str, Any], result: Any, by: dict[str, Any],
                   now: float) -> None:
        """Write the key inside the caller's transaction; KeyTaken if it is there."""
        cur = await tx.execute(
            "INSERT INTO command_keys (key, op, request, result, by, created_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(key) DO NOTHING",
            (key, op, _json(request), _json(result), _json(by), now))
        if cur.rowcount != 1:
            raise KeyTaken(key)

    async def settle(self, key: str, result: Any) -> None:
        """Replace a kept key's result with the command's final one (a command
        whose first write kept the key before its result was known)."""
        async with self.store.transaction() as tx:
            await tx.execute("UPDATE command_keys SET result = ? WHERE key = ?",
                             (_json(result), key))

    async def forget_before(self, when: float) -> int:
        """Drop keys older than `when` (a retry comes within minutes, not months)."""
        async with self.store.transaction() as tx:
            cur = await tx.execute("DELETE FROM command_keys WHERE created_at < ?", (when,))
            return cur.rowcount

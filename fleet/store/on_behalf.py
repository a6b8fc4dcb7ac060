"""Who a command's writes are for, seen from the store: inside
`on_behalf(by, first)`, every event this task appends carries `by` in its data,
and the first transaction that appends any runs `first(tx, events)` before it
commits (the site agent keeps a command's idempotency key there, so the key and
the change commit together, whichever facade made the change).

The lifecycle commands have their own hook (Engine.acting); this one serves the
commands whose writes live in other facades (distributor switch, job cancel and
retry, builds). A task started inside the block inherits it, so the block's end
closes it: nothing written after the command returned is stamped.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator

from fleet.core.model import Event

if TYPE_CHECKING:
    import aiosqlite

First = Callable[["aiosqlite.Connection", list[Event]], Awaitable[None]]


@dataclass(eq=False)
class OnBehalf:
    by: dict[str, Any]
    first: First | None = None
    open: bool = True  # False once the block is over
    used: bool = False  # whether `first` ran


_current: ContextVar[OnBehalf | None] = ContextVar("fleet_on_behalf", default=None)


@contextlib.contextmanager
def on_behalf(by: dict[str, Any], first: First | None = None) -> Iterator[OnBehalf]:
    acting = OnBehalf(dict(by), first)
    token = _current.set(acting)
    try:
        yield acting
    finally:
        acting.open = False
        _current.reset(token)


def stamped(events: list[Event]) -> list[Event]:
    """The events with `by` in their data when inside an open block."""
    acting = _current.get()
    if acting is None or not acting.open or not acting.by:
        return events
    return [replace(e, data={**e.data, "by": dict(acting.by)}) for e in events]


async def appended(tx: "aiosqlite.Connection", events: list[Event],
                   ids: list[int] | None = None) -> None:
    """Called by the event repo inside the transaction that appended `events`
    (with their new `ids` when it has them)."""
    acting = _current.get()
    if acting is None or not acting.open or acting.first is None or acting.used or not events:
        return
    acting.used = True
    if ids is not None:
        events = [replace(e, id=i) for e, i in zip(events, ids)]
    await acting.first(tx, events)

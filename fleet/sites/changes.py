"""What changed in the console's replica since the last look, site by site.

The replica is written by the held channels (fleet.sites.replica) in the same
process, but nothing there tells a reader when: a console looks at the small
`sites` table every fraction of a second and compares each site's row with the
one it saw last. Only a site whose row moved costs more: its new events (the
cursor moved), and a re-read of its machines and nodes when its snapshot was
replaced (`rows_as_of`), its store started over, or it came or went (the rows
turn stale or fresh).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from fleet import records as rec
from fleet.core.model import Event, Severity
from fleet.sites.replica_store import ReplicaStore, SiteRow

#: events read per site per look (a catch-up of thousands arrives over a few looks)
EVENTS_PER_LOOK = 1000


@dataclass
class SiteChange:
    site: str
    row: SiteRow | None
    rows: bool = False  # its machines and nodes must be read again
    events: list[Event] = field(default_factory=list)  # new, oldest first


class SiteWatch:
    def __init__(self, store: ReplicaStore, sites: Iterable[str]):
        self.store = store
        self.sites = list(sites)
        self._seen: dict[str, SiteRow | None] = {}
        self._last_event: dict[str, int] = {}

    async def start(self, events: int = 200) -> dict[str, list[Event]]:
        """Take the replica as it is now as seen; each site's last `events`."""
        rows = {r.site: r for r in await self.store.sites()}
        out = {}
        for site in self.sites:
            self._seen[site] = rows.get(site)
            recent = await self.store.latest_events(site, events)
            self._last_event[site] = recent[-1]["id"] if recent else 0
            out[site] = [event_of(e) for e in recent]
        return out

    async def poll(self) -> list[SiteChange]:
        """The sites whose row differs from the last look, with what is new."""
        rows = {r.site: r for r in await self.store.sites()}
        changes = []
        for site in self.sites:
            row, before = rows.get(site), self._seen.get(site)
            behind = row is not None and row.cursor != self._last_event.get(site, 0)
            if row == before and not behind:
                continue
            self._seen[site] = row
            change = SiteChange(site, row, rows=_rows_moved(before, row))
            if behind:
                change.events = await self._new_events(site, row)
            changes.append(change)
        return changes

    async def _new_events(self, site: str, row: SiteRow) -> list[Event]:
        after = self._last_event.get(site, 0)
        if row.cursor < after:  # the site was replicated again from event 0
            after = 0
        found = await self.store.events(site, after=after, limit=EVENTS_PER_LOOK)
        self._last_event[site] = found[-1]["id"] if found else row.cursor
        return [event_of(e) for e in found]


def _rows_moved(before: SiteRow | None, now: SiteRow | None) -> bool:
    if before is None or now is None:
        return before is not now
    return ((before.rows_as_of, before.store_id, before.connected)
            != (now.rows_as_of, now.store_id, now.connected))


def event_of(record: dict[str, Any]) -> Event:
    """An event as the replica holds it (the agent's record) as the model's Event."""
    try:
        severity = Severity(record["severity"])
    except ValueError:
        severity = Severity.INFO
    return Event(kind=record["kind"], subject=record["subject"], message=record["message"],
                 ts=rec.from_iso(record.get("ts")) or 0.0, severity=severity,
                 data=record.get("data") or {}, id=record["id"])
